//! The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, as KServe
//! publishes it and `tritonclient.grpc` calls it, on its own listener (`server.grpc_listen`).
//!
//! A `ModelInfer` call becomes the V2 REST request it stands for, in the binary tensor
//! extension's layout (a JSON head naming each input's `binary_data_size`, then the raw
//! elements), and goes through [`serve_request`] as a REST request does: the same route
//! table, slot choice (switch, canary weight, sticky session, slot header), admission,
//! mirroring, failover, metrics and request log. Every input and output travels as raw bytes,
//! so nothing is written as JSON numbers on the way. The answer's outputs come back in
//! `raw_output_contents`, as Triton answers, and its headers (`x-teal-version`, `x-teal-slot`,
//! `x-request-id`, ...) as response metadata. A REST error becomes the gRPC status for its
//! HTTP status, with the same message.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use teal_core::protocol::{self, Datatype};
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status};

use super::answer::Answer;
use super::body::Payload;
use super::pick::{find_model, find_version, pick};
use super::request::{Endpoint, Entry, serve_request};
use super::{Gateway, GatewayError, names};

/// The messages and the service trait generated from `proto/inference.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::model_infer_request::InferInputTensor;

/// The gRPC service over the data plane's shared state.
pub struct Grpc {
    gateway: Arc<Gateway>,
}

impl Grpc {
    /// The service, ready for a tonic server, taking messages up to the data plane's body
    /// limit (`server.max_body_bytes`); a larger one is refused before it is decoded.
    pub fn service(gateway: Arc<Gateway>) -> GrpcInferenceServiceServer<Grpc> {
        let limit = gateway.max_body_bytes;
        GrpcInferenceServiceServer::new(Grpc { gateway })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let snapshot = self.gateway.routes.load();
        let ready = snapshot.models.values().all(|m| m.live().is_some());
        Ok(Response::new(pb::ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        // An unknown model or version is not ready (false, as Triton answers), not an error.
        let request = request.into_inner();
        let name = model_name(&request.name)?;
        let ready =
            find_model(&self.gateway, name).is_ok_and(|routes| match request.version.as_str() {
                "" => routes.live().is_some(),
                version => find_version(&routes, version).is_ok(),
            });
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "teal".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: super::metadata::EXTENSIONS
                .iter()
                .map(|e| e.to_string())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let routes = find_model(&self.gateway, model_name(&request.name)?).map_err(status)?;
        let slot = match request.version.as_str() {
            "" => pick(&routes, None, &HeaderMap::new()),
            version => find_version(&routes, version),
        }
        .map_err(status)?;
        let metadata = routes.metadata(&slot);
        let tensors = |specs: Vec<protocol::TensorSpec>| {
            specs
                .into_iter()
                .map(|spec| pb::model_metadata_response::TensorMetadata {
                    name: spec.name,
                    datatype: spec.datatype.as_str().into(),
                    shape: spec.shape,
                })
                .collect()
        };
        Ok(Response::new(pb::ModelMetadataResponse {
            name: metadata.name,
            versions: metadata.versions,
            platform: metadata.platform,
            inputs: tensors(metadata.inputs),
            outputs: tensors(metadata.outputs),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let snapshot = self.gateway.routes.load();
        let models: Vec<_> = match request.name.as_str() {
            "" => snapshot.models.values().cloned().collect(),
            name => vec![find_model(&self.gateway, name).map_err(status)?],
        };
        let mut model_stats = Vec::new();
        for routes in &models {
            let slots: Vec<_> = match request.version.as_str() {
                "" => routes.slots().cloned().collect(),
                version => vec![find_version(routes, version).map_err(status)?],
            };
            model_stats.extend(slots.iter().map(|slot| {
                // As the REST extension answers (`metadata::version_stats`).
                let t = slot.stats.totals();
                let duration = |count, ns| Some(pb::StatisticDuration { count, ns });
                let calls = slot.backend.calls();
                let (inferences, executions) =
                    calls.as_ref().map_or((t.ok, t.ok), |c| (c.rows, c.calls));
                pb::ModelStatistics {
                    name: routes.name.clone(),
                    version: slot.version.clone(),
                    last_inference: t.last_ms,
                    inference_count: inferences,
                    execution_count: executions,
                    inference_stats: Some(pb::InferStatistics {
                        success: duration(t.ok, t.ok_ns),
                        fail: duration(t.failed, t.failed_ns),
                        queue: calls
                            .as_ref()
                            .and_then(|c| duration(c.requests, c.queue_ns)),
                        compute_infer: calls
                            .as_ref()
                            .and_then(|c| duration(c.requests, c.compute_ns)),
                        ..Default::default()
                    }),
                    batch_stats: calls
                        .iter()
                        .flat_map(|c| &c.by_rows)
                        .map(|(rows, n, ns)| pb::InferBatchStatistics {
                            batch_size: *rows as u64,
                            compute_input: duration(*n, 0),
                            compute_infer: duration(*n, *ns),
                            compute_output: duration(*n, 0),
                        })
                        .collect(),
                }
            }));
        }
        Ok(Response::new(pb::ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        if !request.get_ref().repository_name.is_empty() {
            return Err(Status::not_found(
                "teal has one model repository, its own: leave repository_name empty",
            ));
        }
        let snapshot = self.gateway.routes.load();
        let models = snapshot
            .models
            .values()
            .flat_map(|routes| {
                routes
                    .slots()
                    .map(|slot| pb::repository_index_response::ModelIndex {
                        name: routes.name.clone(),
                        version: slot.version.clone(),
                        state: "READY".into(),
                        reason: String::new(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let model = model_name(&request.model_name)?.to_string();
        let version = Some(request.model_version.as_str()).filter(|v| !v.is_empty());
        let (body, json_len) = rest_request(&request).map_err(invalid)?;
        drop(request.raw_input_contents);
        let mut headers = metadata.into_headers();
        // The request is now a V2 REST body in the binary extension's layout.
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(names::JSON_LENGTH.clone(), HeaderValue::from(json_len));
        let answer = serve_request(
            &self.gateway,
            &model,
            version,
            Endpoint::GrpcInfer,
            &headers,
            Payload::Whole(body.into()),
            Entry::Unchecked,
        )
        .await;
        let metadata = answer_metadata(&answer);
        if answer.status != StatusCode::OK {
            let message = serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
            return Err(Status::with_metadata(
                code_for(answer.status),
                message,
                metadata,
            ));
        }
        let response = grpc_response(&answer.body, answer.json_len).map_err(|e| {
            Status::with_metadata(
                Code::Internal,
                format!("the model's answer could not be read: {e}"),
                metadata.clone(),
            )
        })?;
        let mut response = Response::new(response);
        *response.metadata_mut() = metadata;
        Ok(response)
    }
}

/// A model name as a request gives it: one is needed.
fn model_name(name: &str) -> Result<&str, Status> {
    match name {
        "" => Err(Status::invalid_argument(
            "the request names no model: set the model name",
        )),
        name => Ok(name),
    }
}

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// A data-plane error as a gRPC status, with the message REST answers with.
fn status(error: GatewayError) -> Status {
    Status::new(code_for(error.status()), error.public_message())
}

/// The gRPC status code for an HTTP status the REST path would answer with.
fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 405 | 411 | 415 | 422 => Code::InvalidArgument,
        404 => Code::NotFound,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        408 | 504 => Code::DeadlineExceeded,
        409 => Code::FailedPrecondition,
        413 | 429 => Code::ResourceExhausted,
        501 => Code::Unimplemented,
        // teal's 502 is a model that failed on this request: a retry would fail again.
        503 => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The answer's headers as response metadata: which version and slot answered, the request
/// id, the route table's generation, a failover, `retry-after`.
fn answer_metadata(answer: &Answer) -> MetadataMap {
    let mut headers = HeaderMap::with_capacity(8);
    answer.for_each_header(|name, value| {
        if *name != names::JSON_LENGTH
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            headers.insert(HeaderName::clone(name), value);
        }
    });
    MetadataMap::from_headers(headers)
}

/// The V2 REST request a `ModelInfer` call stands for: a JSON head, then every input's
/// elements as raw little-endian bytes (BYTES elements each after a 4-byte length), in the
/// binary tensor extension's layout; and the head's length. Every output is asked for in
/// binary form. What the REST decoder checks (names, datatypes, shapes, sizes against the
/// model's signature) it checks here too, with the same messages.
fn rest_request(request: &pb::ModelInferRequest) -> Result<(Vec<u8>, usize), String> {
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(format!(
            "raw_input_contents has {} entries for {} inputs: give one per input, in the order of inputs",
            raw.len(),
            request.inputs.len()
        ));
    }
    if let Some(output) = request
        .outputs
        .iter()
        .find(|o| o.parameters.contains_key("classification"))
    {
        return Err(format!(
            "output '{}' asks for the classification extension, which teal does not serve: ask for the output itself and take its top classes",
            output.name
        ));
    }
    // First each input's size, so the head can be written before the elements and the
    // body is made once, at its size.
    let mut sizes = Vec::with_capacity(request.inputs.len());
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (i, input) in request.inputs.iter().enumerate() {
        if let Some(dim) = input.shape.iter().find(|d| **d < 0) {
            return Err(format!(
                "input '{}' has the dimension {dim} in its shape: dimensions are 0 or more",
                input.name
            ));
        }
        let size = match raw.get(i) {
            Some(bytes) => {
                if input.contents.is_some() {
                    return Err(format!(
                        "input '{}' has contents while the request uses raw_input_contents: give every input one way",
                        input.name
                    ));
                }
                bytes.len()
            }
            None => typed_size(input)?,
        };
        sizes.push(size);
        inputs.push(serde_json::json!({
            "name": input.name,
            "shape": input.shape,
            "datatype": input.datatype,
            "parameters": { "binary_data_size": size },
        }));
    }
    let mut head = serde_json::json!({
        "inputs": inputs,
        "parameters": { "binary_data_output": true },
    });
    if !request.id.is_empty() {
        head["id"] = request.id.clone().into();
    }
    if !request.outputs.is_empty() {
        head["outputs"] = request
            .outputs
            .iter()
            .map(|o| serde_json::json!({ "name": o.name, "parameters": { "binary_data": true } }))
            .collect();
    }
    let head = serde_json::to_vec(&head).map_err(|e| e.to_string())?;
    let json_len = head.len();
    let mut body = Vec::with_capacity(json_len + sizes.iter().sum::<usize>());
    body.extend_from_slice(&head);
    for (i, input) in request.inputs.iter().enumerate() {
        match raw.get(i) {
            Some(bytes) => body.extend_from_slice(bytes),
            None => typed_contents(input, &mut body)?,
        }
    }
    Ok((body, json_len))
}

/// The size of an input's typed contents as raw bytes, after the checks
/// [`typed_contents`] makes before it writes them.
fn typed_size(input: &InferInputTensor) -> Result<usize, String> {
    let (datatype, contents) = typed_parts(input)?;
    Ok(match datatype.element_size() {
        Some(size) => typed_count(datatype, contents) * size,
        None => contents.bytes_contents.iter().map(|e| 4 + e.len()).sum(),
    })
}

/// How many elements the field that `datatype` uses holds.
fn typed_count(datatype: Datatype, contents: &pb::InferTensorContents) -> usize {
    match datatype {
        Datatype::Bool => contents.bool_contents.len(),
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => contents.int_contents.len(),
        Datatype::Int64 => contents.int64_contents.len(),
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => contents.uint_contents.len(),
        Datatype::Uint64 => contents.uint64_contents.len(),
        Datatype::Fp32 => contents.fp32_contents.len(),
        Datatype::Fp64 => contents.fp64_contents.len(),
        Datatype::Bytes => contents.bytes_contents.len(),
        Datatype::Fp16 | Datatype::Bf16 => 0,
    }
}

/// An input's datatype and typed contents, checked: a datatype the protocol has, elements in
/// the field that datatype uses and no other, as many as its shape holds.
fn typed_parts(input: &InferInputTensor) -> Result<(Datatype, &pb::InferTensorContents), String> {
    static EMPTY: pb::InferTensorContents = pb::InferTensorContents {
        bool_contents: Vec::new(),
        int_contents: Vec::new(),
        int64_contents: Vec::new(),
        uint_contents: Vec::new(),
        uint64_contents: Vec::new(),
        fp32_contents: Vec::new(),
        fp64_contents: Vec::new(),
        bytes_contents: Vec::new(),
    };
    let name = &input.name;
    let contents = input.contents.as_ref().unwrap_or(&EMPTY);
    let Some(datatype) = Datatype::parse(&input.datatype) else {
        return Err(format!(
            "input '{name}' has the datatype '{}', which the protocol does not have",
            input.datatype
        ));
    };
    let elements = input
        .shape
        .iter()
        .try_fold(1u128, |n, d| n.checked_mul(*d as u128))
        .ok_or_else(|| {
            format!(
                "input '{name}' has a shape of too many elements: {:?}",
                input.shape
            )
        })?;
    let field = match datatype {
        Datatype::Bool => "bool_contents",
        Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => "int_contents",
        Datatype::Int64 => "int64_contents",
        Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => "uint_contents",
        Datatype::Uint64 => "uint64_contents",
        Datatype::Fp32 => "fp32_contents",
        Datatype::Fp64 => "fp64_contents",
        Datatype::Bytes => "bytes_contents",
        Datatype::Fp16 | Datatype::Bf16 => {
            return Err(format!(
                "input '{name}' is {datatype}, which has no typed contents: send it in raw_input_contents"
            ));
        }
    };
    let given = [
        ("bool_contents", contents.bool_contents.len()),
        ("int_contents", contents.int_contents.len()),
        ("int64_contents", contents.int64_contents.len()),
        ("uint_contents", contents.uint_contents.len()),
        ("uint64_contents", contents.uint64_contents.len()),
        ("fp32_contents", contents.fp32_contents.len()),
        ("fp64_contents", contents.fp64_contents.len()),
        ("bytes_contents", contents.bytes_contents.len()),
    ];
    if let Some((other, _)) = given.iter().find(|(f, n)| *n > 0 && *f != field) {
        return Err(format!(
            "input '{name}' is {datatype} and has its elements in {other}: {datatype} elements go in {field}"
        ));
    }
    let count = given.iter().find(|(f, _)| *f == field).map_or(0, |g| g.1);
    if count as u128 != elements {
        return Err(format!(
            "input '{name}' has {count} elements in {field}, and its shape {:?} holds {elements}",
            input.shape
        ));
    }
    Ok((datatype, contents))
}

/// Writes an input's typed contents as raw bytes, from the field its datatype uses, after
/// [`typed_parts`]' checks; narrow integers are checked against their range.
fn typed_contents(input: &InferInputTensor, out: &mut Vec<u8>) -> Result<(), String> {
    let name = &input.name;
    let (datatype, contents) = typed_parts(input)?;
    fn narrow<T: TryFrom<V>, V: Copy + std::fmt::Display>(
        name: &str,
        datatype: Datatype,
        values: &[V],
        mut put: impl FnMut(T),
    ) -> Result<(), String> {
        for (index, v) in values.iter().enumerate() {
            match T::try_from(*v) {
                Ok(x) => put(x),
                Err(_) => {
                    return Err(format!(
                        "input '{name}': element {index} ({v}) is not a valid {datatype} value"
                    ));
                }
            }
        }
        Ok(())
    }
    match datatype {
        Datatype::Bool => out.extend(contents.bool_contents.iter().map(|b| u8::from(*b))),
        Datatype::Int8 => narrow(name, datatype, &contents.int_contents, |x: i8| {
            out.extend_from_slice(&x.to_le_bytes())
        })?,
        Datatype::Int16 => narrow(name, datatype, &contents.int_contents, |x: i16| {
            out.extend_from_slice(&x.to_le_bytes())
        })?,
        Datatype::Int32 => {
            (contents.int_contents.iter()).for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
        Datatype::Int64 => {
            (contents.int64_contents.iter()).for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
        Datatype::Uint8 => narrow(name, datatype, &contents.uint_contents, |x: u8| out.push(x))?,
        Datatype::Uint16 => narrow(name, datatype, &contents.uint_contents, |x: u16| {
            out.extend_from_slice(&x.to_le_bytes())
        })?,
        Datatype::Uint32 => {
            (contents.uint_contents.iter()).for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
        Datatype::Uint64 => {
            (contents.uint64_contents.iter()).for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
        Datatype::Fp32 => {
            (contents.fp32_contents.iter()).for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
        Datatype::Fp64 => {
            (contents.fp64_contents.iter()).for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
        Datatype::Bytes => {
            for element in &contents.bytes_contents {
                let len = u32::try_from(element.len())
                    .map_err(|_| format!("input '{name}' has an element of 4 GiB or more"))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(element);
            }
        }
        Datatype::Fp16 | Datatype::Bf16 => unreachable!("refused above"),
    }
    Ok(())
}

/// The gRPC answer for a V2 REST answer (binary outputs after a JSON head, or plain JSON
/// from a model server that ignored the request for binary): every output's elements in
/// `raw_output_contents`.
fn grpc_response(body: &[u8], json_len: Option<usize>) -> Result<pb::ModelInferResponse, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        model_name: String,
        #[serde(default)]
        model_version: String,
        #[serde(default)]
        id: Option<String>,
    }
    let head_bytes = &body[..json_len.unwrap_or(body.len()).min(body.len())];
    let head: Head = serde_json::from_slice(head_bytes).map_err(|e| e.to_string())?;
    let outputs = protocol::decode_response(body, json_len).map_err(|e| e.to_string())?;
    let mut response = pb::ModelInferResponse {
        model_name: head.model_name,
        model_version: head.model_version,
        id: head.id.unwrap_or_default(),
        ..Default::default()
    };
    for output in outputs {
        let mut raw = Vec::new();
        output.data.write_le_bytes(&mut raw);
        response
            .outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: output.name,
                datatype: output.data.datatype().as_str().into(),
                shape: output.shape.iter().map(|d| *d as i64).collect(),
                ..Default::default()
            });
        response.raw_output_contents.push(raw);
    }
    Ok(response)
}

/// The most calls one HTTP/2 connection may have open at once (a client asking for more
/// waits for a stream, as HTTP/2 says).
const MAX_STREAMS: u32 = 256;

/// Serves the gRPC service on `listener` until `stop` turns true, then lets calls in flight
/// finish. HTTP/2, one connection carrying many calls; TCP_NODELAY, as the data plane.
///
/// Guarded as the REST listener is: at most `max_connections` open connections (one more is
/// closed at once, and the rest are served); a connection that sends nothing within the
/// header timeout is closed without taking a place in the server; a call ends after the
/// header, body and write timeouts plus the longest model deadline, however slowly its
/// message arrives.
pub fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    timeouts: super::Timeouts,
    max_connections: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let call_timeout = {
        let snapshot = gateway.routes.load();
        let longest = snapshot
            .models
            .values()
            .map(|m| m.admission.limits().timeout_ms)
            .max()
            .unwrap_or(0);
        timeouts.header + timeouts.body + timeouts.write + std::time::Duration::from_millis(longest)
    };
    let incoming = accept_within_limits(listener, timeouts.header, max_connections, stop.clone());
    tokio::spawn(async move {
        let stopped = async move {
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        let limit = gateway.max_body_bytes;
        let served = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            // Calls at once on one connection; each model's admission bounds the work.
            .max_concurrent_streams(Some(MAX_STREAMS))
            .timeout(call_timeout)
            .layer(tower::util::MapResponseLayer::new(
                move |response: axum::http::Response<tonic::body::Body>| {
                    too_large_is_resource_exhausted(response, limit)
                },
            ))
            .add_service(Grpc::service(gateway))
            .serve_with_incoming_shutdown(incoming, stopped)
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the gRPC listener stopped");
        }
    })
}

/// The connections tonic serves: accepted while fewer than `max_connections` are open (one
/// more is closed at once), and handed over only once they have sent something within
/// `first_byte` (a connection that sends nothing is closed then, without holding up others).
fn accept_within_limits(
    listener: tokio::net::TcpListener,
    first_byte: std::time::Duration,
    max_connections: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> impl futures::Stream<Item = Result<Counted, std::io::Error>> {
    let places = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (ready, arrived) = tokio::sync::mpsc::channel::<Counted>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.changed() => break,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: pause rather than spin.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                tracing::debug!("gRPC connection refused: the connection limit is reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let ready = ready.clone();
            tokio::spawn(async move {
                // `peek` waits for a byte without taking it (`readable` may wake early).
                let mut byte = [0u8; 1];
                if let Ok(Ok(1..)) = tokio::time::timeout(first_byte, stream.peek(&mut byte)).await
                {
                    let _ = ready
                        .send(Counted {
                            stream,
                            _place: place,
                        })
                        .await;
                }
            });
        }
    });
    futures::stream::unfold(arrived, |mut arrived| async move {
        let connection = arrived.recv().await?;
        Some((Ok(connection), arrived))
    })
}

/// A gRPC connection holding its place among the listener's open connections until it
/// closes.
struct Counted {
    stream: tokio::net::TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A message over the size limit is refused by tonic, before it is decoded, as
/// OUT_OF_RANGE; gRPC's own servers (and so Triton) answer RESOURCE_EXHAUSTED, which is what
/// clients handle: the status is rewritten, with a message that names the setting.
fn too_large_is_resource_exhausted(
    mut response: axum::http::Response<tonic::body::Body>,
    limit: usize,
) -> axum::http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers.get("grpc-message").is_some_and(|m| {
            // Percent-encoded, as gRPC sends messages.
            let text = String::from_utf8_lossy(m.as_bytes()).replace("%20", " ");
            text.contains("decoded message length too large")
        });
    if too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        let message = format!(
            "the request message is larger than {limit} bytes, the largest teal accepts (server.max_body_bytes): send fewer rows per request"
        );
        if let Ok(value) = HeaderValue::try_from(message) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn typed_and_raw_contents_become_the_same_rest_request() {
        let mut typed = input("x", "FP32", &[1, 2]);
        typed.contents = Some(pb::InferTensorContents {
            fp32_contents: vec![1.5, -2.0],
            ..Default::default()
        });
        let request = pb::ModelInferRequest {
            model_name: "m".into(),
            id: "r1".into(),
            inputs: vec![typed],
            ..Default::default()
        };
        let (typed_body, typed_len) = rest_request(&request).unwrap();
        let raw_request = pb::ModelInferRequest {
            model_name: "m".into(),
            id: "r1".into(),
            inputs: vec![input("x", "FP32", &[1, 2])],
            raw_input_contents: vec![[1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()],
            ..Default::default()
        };
        let (raw_body, raw_len) = rest_request(&raw_request).unwrap();
        assert_eq!((typed_body.clone(), typed_len), (raw_body, raw_len));
        let head: serde_json::Value = serde_json::from_slice(&typed_body[..typed_len]).unwrap();
        assert_eq!(head["id"], "r1");
        assert_eq!(head["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(head["parameters"]["binary_data_output"], true);
        assert_eq!(typed_body.len(), typed_len + 8);
    }

    #[test]
    fn contents_that_do_not_fit_are_refused_with_the_input_named() {
        let cases: Vec<(InferInputTensor, &str)> = vec![
            (
                InferInputTensor {
                    contents: Some(pb::InferTensorContents {
                        fp64_contents: vec![1.0],
                        ..Default::default()
                    }),
                    ..input("x", "FP32", &[1])
                },
                "go in fp32_contents",
            ),
            (
                InferInputTensor {
                    contents: Some(pb::InferTensorContents {
                        fp32_contents: vec![1.0],
                        ..Default::default()
                    }),
                    ..input("x", "FP32", &[1, 2])
                },
                "holds 2",
            ),
            (
                InferInputTensor {
                    contents: Some(pb::InferTensorContents {
                        int_contents: vec![300],
                        ..Default::default()
                    }),
                    ..input("x", "INT8", &[1])
                },
                "not a valid INT8",
            ),
            (input("x", "FP16", &[1]), "raw_input_contents"),
            (input("x", "FLOAT", &[1]), "does not have"),
            (input("x", "FP32", &[-1]), "dimension -1"),
        ];
        for (tensor, want) in cases {
            let request = pb::ModelInferRequest {
                inputs: vec![tensor],
                ..Default::default()
            };
            let error = rest_request(&request).unwrap_err();
            assert!(error.contains("'x'") && error.contains(want), "{error}");
        }
        let request = pb::ModelInferRequest {
            inputs: vec![input("x", "FP32", &[1]), input("y", "FP32", &[1])],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert!(
            rest_request(&request)
                .unwrap_err()
                .contains("1 entries for 2 inputs")
        );
    }

    #[test]
    fn http_statuses_map_to_the_grpc_codes_clients_expect() {
        assert_eq!(code_for(StatusCode::BAD_REQUEST), Code::InvalidArgument);
        assert_eq!(code_for(StatusCode::NOT_FOUND), Code::NotFound);
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code_for(StatusCode::PAYLOAD_TOO_LARGE),
            Code::ResourceExhausted
        );
        assert_eq!(code_for(StatusCode::INTERNAL_SERVER_ERROR), Code::Internal);
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), Code::Internal);
    }

    #[test]
    fn binary_and_json_answers_both_come_back_raw() {
        let json = br#"{"model_name":"m","model_version":"v1","id":"r","outputs":[{"name":"y","datatype":"INT64","shape":[2],"data":[3,4]}]}"#;
        let response = grpc_response(json, None).unwrap();
        assert_eq!(response.model_version, "v1");
        assert_eq!(response.id, "r");
        assert_eq!(response.outputs[0].shape, vec![2]);
        assert_eq!(
            response.raw_output_contents[0],
            [3i64.to_le_bytes(), 4i64.to_le_bytes()].concat()
        );
        let head = br#"{"model_name":"m","model_version":"v1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&2.5f32.to_le_bytes());
        let response = grpc_response(&body, Some(head.len())).unwrap();
        assert_eq!(response.raw_output_contents[0], 2.5f32.to_le_bytes());
        assert_eq!(response.outputs[0].datatype, "FP32");
    }
}
