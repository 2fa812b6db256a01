//! In-process models on ONNX Runtime, loaded at run time from `libonnxruntime`.
//!
//! Each model has a few worker threads, each owning one session (an ONNX Runtime session
//! runs one inference at a time). The async side hands a job over a channel and awaits a
//! oneshot reply, so inference never blocks the runtime's threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};
use teal_core::protocol::{Datatype, ProtocolError, Signature, Tensor, TensorData, TensorSpec};
use tokio::sync::oneshot;

use super::{BackendError, LoadError, python_env};

/// The ONNX Runtime release teal is built against.
pub const ONNXRUNTIME_VERSION: &str = "1.31.1";

/// The loaded ONNX Runtime library. It is process-wide: the library can be loaded once.
#[derive(Clone)]
pub struct OnnxRuntime {
    environment: ort::environment::Environment,
    pub library: PathBuf,
}

static RUNTIME: OnceLock<Result<OnnxRuntime, String>> = OnceLock::new();

fn install_hint() -> String {
    format!(
        "in a checkout of teal run `scripts/setup`, which installs onnxruntime=={ONNXRUNTIME_VERSION} into its .venv; \
         where teal was installed with pip, `pip install onnxruntime=={ONNXRUNTIME_VERSION}` into that same environment; \
         or set ORT_DYLIB_PATH to a libonnxruntime.so.{ONNXRUNTIME_VERSION}, or server.onnxruntime in the config"
    )
}

/// Where the library is: the configured path, then `ORT_DYLIB_PATH`, then the `onnxruntime`
/// package in teal's own Python environments ([`python_env::search_order`]), then in the
/// environment of the `python3` first on the PATH (found without importing it).
pub fn locate_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = configured {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    search(&python_env::search_order(), "python3")
}

/// The library in the environments at `prefixes`, then in the environment of `python`.
fn search(prefixes: &[PathBuf], python: &str) -> Result<PathBuf, String> {
    let mut looked = Vec::new();
    for prefix in prefixes {
        for packages in python_env::package_dirs(prefix) {
            if let Some(library) = library_in_package(&packages.join("onnxruntime")) {
                return Ok(library);
            }
        }
        looked.push(prefix.display().to_string());
    }
    let probe = std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('onnxruntime'); print(s.submodule_search_locations[0] if s else '')",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(output) = probe {
        let package = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !package.is_empty()
            && let Some(library) = library_in_package(Path::new(&package))
        {
            return Ok(library);
        }
    }
    looked.push(format!("the environment of {python} on the PATH"));
    Err(format!(
        "ONNX Runtime library not found (looked in {}): {}",
        looked.join(", "),
        install_hint()
    ))
}

/// The library in an `onnxruntime` package folder: this release's, else the newest there.
fn library_in_package(package: &Path) -> Option<PathBuf> {
    let capi = package.join("capi");
    let exact = capi.join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"));
    if exact.is_file() {
        return Some(exact);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&capi)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop()
}

impl OnnxRuntime {
    /// Loads the library once per process; later calls return the same runtime (or error).
    pub fn load(configured: Option<&Path>) -> Result<OnnxRuntime, LoadError> {
        RUNTIME
            .get_or_init(|| {
                let library = locate_library(configured)?;
                if !library.exists() {
                    return Err(format!("ONNX Runtime library {} does not exist: {}", library.display(), install_hint()));
                }
                let loaded = std::panic::catch_unwind(|| ort::init_from(&library)).map_err(|_| {
                    format!("loading ONNX Runtime from {} crashed: {}", library.display(), install_hint())
                })?;
                let builder = loaded.map_err(|e| {
                    format!("cannot load ONNX Runtime from {}: {e}; {}", library.display(), install_hint())
                })?;
                let environment = builder.with_name("teal").build().map_err(|e| {
                    format!(
                        "ONNX Runtime at {} did not start ({e}); teal needs version {ONNXRUNTIME_VERSION}: {}",
                        library.display(),
                        install_hint()
                    )
                })?;
                tracing::info!(library = %library.display(), "ONNX Runtime loaded");
                Ok(OnnxRuntime { environment, library })
            })
            .clone()
            .map_err(LoadError::Runtime)
    }
}

struct Job {
    inputs: Vec<Tensor>,
    /// When the caller stops waiting, and the model's deadline in milliseconds: a job still
    /// queued then is not run.
    deadline: Option<(Instant, u64)>,
    /// The outputs, and how long the session took to compute them (the service time, apart
    /// from the time the job waited in the queue).
    reply: oneshot::Sender<(Result<Vec<Tensor>, BackendError>, Duration)>,
}

/// A model served in-process.
pub struct OnnxModel {
    signature: Signature,
    /// Dropping the model closes the channel; each worker ends once its queue is answered.
    jobs: crossbeam_channel::Sender<Job>,
}

fn datatype_of(ty: TensorElementType) -> Option<Datatype> {
    Some(match ty {
        TensorElementType::Float32 => Datatype::Fp32,
        TensorElementType::Float64 => Datatype::Fp64,
        TensorElementType::Float16 => Datatype::Fp16,
        TensorElementType::Bfloat16 => Datatype::Bf16,
        TensorElementType::Int8 => Datatype::Int8,
        TensorElementType::Int16 => Datatype::Int16,
        TensorElementType::Int32 => Datatype::Int32,
        TensorElementType::Int64 => Datatype::Int64,
        TensorElementType::Uint8 => Datatype::Uint8,
        TensorElementType::Uint16 => Datatype::Uint16,
        TensorElementType::Uint32 => Datatype::Uint32,
        TensorElementType::Uint64 => Datatype::Uint64,
        TensorElementType::Bool => Datatype::Bool,
        TensorElementType::String => Datatype::Bytes,
        _ => return None,
    })
}

/// Why teal cannot serve a tensor of this type, and how to export it so that it can.
fn unsupported_advice(dtype: &ValueType) -> String {
    match dtype {
        ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
            "a sequence of maps, which is scikit-learn's ZipMap: export the classifier with ZipMap off \
             (skl2onnx: `to_onnx(model, X, options={'zipmap': False})`), so its probabilities are one \
             FP32 [rows, classes] tensor"
                .to_string()
        }
        ValueType::Tensor { ty, .. } => format!(
            "a tensor of {ty:?}, which the V2 protocol has no datatype for: cast it in the export"
        ),
        other => format!(
            "{other:?}, which teal does not serve (tensors of the V2 datatypes: numbers, BOOL, strings)"
        ),
    }
}

/// The tensor spec of an input or output, or why teal cannot serve it.
fn port_spec(name: &str, dtype: &ValueType) -> Result<TensorSpec, String> {
    match dtype {
        ValueType::Tensor { ty, shape, .. } if datatype_of(*ty).is_some() => Ok(TensorSpec {
            name: name.to_string(),
            datatype: datatype_of(*ty).unwrap_or(Datatype::Fp32),
            shape: shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect(),
        }),
        other => Err(unsupported_advice(other)),
    }
}

fn spec_of(name: &str, dtype: &ValueType, path: &Path) -> Result<TensorSpec, LoadError> {
    port_spec(name, dtype).map_err(|advice| LoadError::Model {
        path: path.display().to_string(),
        reason: format!("'{name}' is {advice}"),
    })
}

/// An input or output of a model file as `teal init` reports it: its spec, or why teal
/// cannot serve it and how to export it so that it can.
pub struct Port {
    pub name: String,
    pub spec: Result<TensorSpec, String>,
}

/// Opens `path` in one session and lists its inputs and outputs without refusing any, so
/// that every problem of an export can be reported at once.
pub fn inspect(runtime: &OnnxRuntime, path: &Path) -> Result<(Vec<Port>, Vec<Port>), LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::Model {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let session = session(runtime, &bytes, path, Execution::default())?;
    let ports = |outlets: &[ort::value::Outlet]| {
        outlets
            .iter()
            .map(|o| Port {
                name: o.name().to_string(),
                spec: port_spec(o.name(), o.dtype()),
            })
            .collect::<Vec<_>>()
    };
    Ok((ports(session.inputs()), ports(session.outputs())))
}

/// How an in-process model runs: its sessions (workers) and each session's ONNX Runtime
/// settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Execution {
    pub workers: usize,
    pub intra_op_threads: usize,
    pub inter_op_threads: usize,
    pub optimization: teal_core::config::Optimization,
}

impl Default for Execution {
    /// One session with one thread and every graph optimisation, as `teal init` checks a
    /// model.
    fn default() -> Execution {
        Execution {
            workers: 1,
            intra_op_threads: 1,
            inter_op_threads: 1,
            optimization: teal_core::config::Optimization::All,
        }
    }
}

fn session(
    runtime: &OnnxRuntime,
    bytes: &[u8],
    path: &Path,
    execution: Execution,
) -> Result<Session, LoadError> {
    use teal_core::config::Optimization;
    let failed = |e: ort::Error| LoadError::Model {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let level = match execution.optimization {
        Optimization::Disable => GraphOptimizationLevel::Disable,
        Optimization::Basic => GraphOptimizationLevel::Level1,
        Optimization::Extended => GraphOptimizationLevel::Level2,
        Optimization::All => GraphOptimizationLevel::Level3,
    };
    Session::builder(&runtime.environment)
        .map_err(failed)?
        .with_optimization_level(level)
        .map_err(|e| failed(e.into()))?
        .with_intra_threads(execution.intra_op_threads)
        .map_err(|e| failed(e.into()))?
        .with_inter_threads(execution.inter_op_threads)
        .map_err(|e| failed(e.into()))?
        // Inter-op threads only run branches at once in parallel execution.
        .with_parallel_execution(execution.inter_op_threads > 1)
        .map_err(|e| failed(e.into()))?
        .commit_from_memory(bytes)
        .map_err(failed)
}

fn to_value(tensor: Tensor) -> ort::Result<DynValue> {
    let shape = tensor.shape;
    let bits16 = |v: Vec<u16>| v.into_iter();
    Ok(match tensor.data {
        TensorData::Fp32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Fp16(v) => {
            let v: Vec<half::f16> = bits16(v).map(half::f16::from_bits).collect();
            OrtTensor::from_array((shape, v))?.into_dyn()
        }
        TensorData::Bf16(v) => {
            let v: Vec<half::bf16> = bits16(v).map(half::bf16::from_bits).collect();
            OrtTensor::from_array((shape, v))?.into_dyn()
        }
        TensorData::Int8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bool(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bytes(v) => {
            // ONNX strings are UTF-8; the caller's bytes were checked to be (`check_text`).
            let v: Vec<String> = v
                .into_iter()
                .map(|b| {
                    String::from_utf8(b)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                })
                .collect();
            OrtTensor::from_string_array((shape, v.as_slice()))?.into_dyn()
        }
    })
}

/// A BYTES input an ONNX model takes must be text: ONNX string tensors hold UTF-8. Called
/// before the request is run, so the caller gets a 400 naming the element.
pub fn check_text(inputs: &[Tensor]) -> Result<(), ProtocolError> {
    for input in inputs {
        if let TensorData::Bytes(elements) = &input.data
            && let Some(index) = elements
                .iter()
                .position(|e| std::str::from_utf8(e).is_err())
        {
            return Err(ProtocolError::Unsupported(format!(
                "input '{}': element {index} is not UTF-8 text, which the model's string input holds: send text",
                input.name
            )));
        }
    }
    Ok(())
}

fn from_value(spec: &TensorSpec, value: &DynValue) -> ort::Result<Tensor> {
    fn parts<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((
            shape.iter().map(|d| (*d).max(0) as usize).collect(),
            data.to_vec(),
        ))
    }
    let (shape, data) = match spec.datatype {
        Datatype::Fp32 => parts::<f32>(value).map(|(s, d)| (s, TensorData::Fp32(d)))?,
        Datatype::Fp64 => parts::<f64>(value).map(|(s, d)| (s, TensorData::Fp64(d)))?,
        Datatype::Fp16 => parts::<half::f16>(value).map(|(s, d)| {
            (
                s,
                TensorData::Fp16(d.into_iter().map(half::f16::to_bits).collect()),
            )
        })?,
        Datatype::Bf16 => parts::<half::bf16>(value).map(|(s, d)| {
            (
                s,
                TensorData::Bf16(d.into_iter().map(half::bf16::to_bits).collect()),
            )
        })?,
        Datatype::Int8 => parts::<i8>(value).map(|(s, d)| (s, TensorData::Int8(d)))?,
        Datatype::Int16 => parts::<i16>(value).map(|(s, d)| (s, TensorData::Int16(d)))?,
        Datatype::Int32 => parts::<i32>(value).map(|(s, d)| (s, TensorData::Int32(d)))?,
        Datatype::Int64 => parts::<i64>(value).map(|(s, d)| (s, TensorData::Int64(d)))?,
        Datatype::Uint8 => parts::<u8>(value).map(|(s, d)| (s, TensorData::Uint8(d)))?,
        Datatype::Uint16 => parts::<u16>(value).map(|(s, d)| (s, TensorData::Uint16(d)))?,
        Datatype::Uint32 => parts::<u32>(value).map(|(s, d)| (s, TensorData::Uint32(d)))?,
        Datatype::Uint64 => parts::<u64>(value).map(|(s, d)| (s, TensorData::Uint64(d)))?,
        Datatype::Bool => parts::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d)))?,
        Datatype::Bytes => {
            let (shape, data) = value.try_extract_strings()?;
            (
                shape.iter().map(|d| (*d).max(0) as usize).collect(),
                TensorData::Bytes(data.into_iter().map(String::into_bytes).collect()),
            )
        }
    };
    Ok(Tensor {
        name: spec.name.clone(),
        shape,
        data,
    })
}

fn run(
    session: &mut Session,
    outputs: &[TensorSpec],
    inputs: Vec<Tensor>,
) -> Result<Vec<Tensor>, BackendError> {
    let failed = |e: ort::Error| BackendError::Inference(e.to_string());
    let values: Vec<(String, DynValue)> = inputs
        .into_iter()
        .map(|t| Ok((t.name.clone(), to_value(t)?)))
        .collect::<ort::Result<_>>()
        .map_err(failed)?;
    let results = session.run(values).map_err(failed)?;
    outputs
        .iter()
        .map(|spec| {
            let value = results.get(&spec.name).ok_or_else(|| {
                BackendError::Inference(format!(
                    "output '{}' is missing from the model's results",
                    spec.name
                ))
            })?;
            from_value(spec, value).map_err(failed)
        })
        .collect()
}

impl OnnxModel {
    /// Loads `path` into `execution.workers` sessions, each on its own thread.
    pub fn load(
        runtime: &OnnxRuntime,
        path: &Path,
        execution: Execution,
    ) -> Result<OnnxModel, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Model {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let workers = execution.workers;
        let first = session(runtime, &bytes, path, execution)?;
        let signature = Signature {
            inputs: first
                .inputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype(), path))
                .collect::<Result<_, _>>()?,
            outputs: first
                .outputs()
                .iter()
                .map(|o| spec_of(o.name(), o.dtype(), path))
                .collect::<Result<_, _>>()?,
        };
        let mut sessions = vec![first];
        for _ in 1..workers.max(1) {
            sessions.push(session(runtime, &bytes, path, execution)?);
        }
        let (sender, receiver) = crossbeam_channel::unbounded::<Job>();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        for (i, mut session) in sessions.into_iter().enumerate() {
            let receiver = receiver.clone();
            let outputs = signature.outputs.clone();
            std::thread::Builder::new()
                .name(format!("onnx-{name}-{i}"))
                .spawn(move || {
                    for job in receiver {
                        // Work nobody waits for any more (the client went away, or its
                        // deadline passed while the job was queued) is not run.
                        if job.reply.is_closed() {
                            continue;
                        }
                        let started = Instant::now();
                        if let Some((deadline, ms)) = job.deadline
                            && started >= deadline
                        {
                            let late = Err(BackendError::Deadline { ms });
                            let _ = job.reply.send((late, Duration::ZERO));
                            continue;
                        }
                        let result = run(&mut session, &outputs, job.inputs);
                        // The caller may have gone away (client disconnected); that is fine.
                        let _ = job.reply.send((result, started.elapsed()));
                    }
                })
                .map_err(|e| LoadError::Model {
                    path: path.display().to_string(),
                    reason: format!("cannot start a worker thread: {e}"),
                })?;
        }
        Ok(OnnxModel {
            signature,
            jobs: sender,
        })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        self.infer_timed(inputs).await.0
    }

    /// Runs one inference and says how long the session itself took, without the time the
    /// job waited for a free worker: the validation compares versions on that service time,
    /// so a queue that one slot happened to meet does not read as a slower model.
    pub async fn infer_timed(
        &self,
        inputs: Vec<Tensor>,
    ) -> (Result<Vec<Tensor>, BackendError>, Option<Duration>) {
        self.infer_until(inputs, None).await
    }

    /// As [`OnnxModel::infer_timed`], for a caller that stops waiting at `deadline`: a job
    /// still queued then is dropped without running.
    pub async fn infer_until(
        &self,
        inputs: Vec<Tensor>,
        deadline: Option<(tokio::time::Instant, u64)>,
    ) -> (Result<Vec<Tensor>, BackendError>, Option<Duration>) {
        let (reply, answer) = oneshot::channel();
        let deadline = deadline.map(|(at, ms)| (at.into_std(), ms));
        if self
            .jobs
            .send(Job {
                inputs,
                deadline,
                reply,
            })
            .is_err()
        {
            return (Err(BackendError::Unavailable), None);
        }
        match answer.await {
            Ok((result, service)) => (result, Some(service)),
            Err(_) => (Err(BackendError::Unavailable), None),
        }
    }

    /// Runs the reference inputs shipped with a version and compares the outputs: a model
    /// that loads and runs can still be wrong, so it must reproduce them before taking traffic.
    /// Integer outputs must match exactly; float outputs within 1e-5 (relative, at least absolute).
    pub async fn check_reference(&self, path: &Path) -> Result<usize, LoadError> {
        let failed = |reason: String| LoadError::Reference {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let reference: ReferenceFile = serde_json::from_str(&text)
            .map_err(|e| failed(format!("not a reference file: {e}")))?;
        let mut inputs = Vec::new();
        let mut rows = 0;
        for spec in &self.signature.inputs {
            let value = reference
                .inputs
                .get(&spec.name)
                .ok_or_else(|| failed(format!("has no input '{}'", spec.name)))?;
            let input = decode_nested(spec, value)
                .map_err(|e| failed(format!("input '{}': {e}", spec.name)))?;
            rows = input.shape.first().copied().unwrap_or(0);
            inputs.push(input);
        }
        let outputs = self
            .infer(inputs)
            .await
            .map_err(|e| failed(e.to_string()))?;
        for output in &outputs {
            let Some(expected) = reference.outputs.get(&output.name) else {
                continue;
            };
            let mut flat = Vec::new();
            flatten(expected, &mut flat);
            if flat.len() != output.data.len() {
                return Err(failed(format!(
                    "output '{}' has {} values, the reference {}",
                    output.name,
                    output.data.len(),
                    flat.len()
                )));
            }
            for (i, want) in flat.iter().enumerate() {
                let got = output.data.json_value(i).as_f64().unwrap_or(f64::NAN);
                let exact = matches!(
                    output.data,
                    TensorData::Int32(_) | TensorData::Int64(_) | TensorData::Bool(_)
                );
                let tolerance = if exact {
                    0.0
                } else {
                    1e-5 * want.abs().max(1.0)
                };
                if (got - want).abs() > tolerance || got.is_nan() != want.is_nan() {
                    return Err(failed(format!(
                        "output '{}' differs from the reference at element {i}: got {got}, expected {want}; the runtime or the model file is not the one the reference was made with",
                        output.name
                    )));
                }
            }
        }
        Ok(rows)
    }
}

#[derive(serde::Deserialize)]
struct ReferenceFile {
    inputs: BTreeMap<String, serde_json::Value>,
    outputs: BTreeMap<String, serde_json::Value>,
}

/// One input given as nested lists (as a reference file holds it), decoded and checked
/// against its spec as the same tensor in a V2 request would be.
pub fn decode_nested(
    spec: &TensorSpec,
    value: &serde_json::Value,
) -> Result<Tensor, teal_core::protocol::ProtocolError> {
    let body = serde_json::json!({"inputs": [{"name": spec.name, "shape": shape_of(value), "datatype": spec.datatype, "data": value}]});
    let single = Signature {
        inputs: vec![spec.clone()],
        outputs: vec![],
    };
    let mut request = teal_core::protocol::InferRequest::decode(
        body.to_string().as_bytes(),
        None,
        Some(&single),
    )?;
    Ok(request.inputs.remove(0))
}

fn shape_of(value: &serde_json::Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut current = value;
    while let serde_json::Value::Array(items) = current {
        shape.push(items.len());
        match items.first() {
            Some(first) => current = first,
            None => break,
        }
    }
    shape
}

fn flatten(value: &serde_json::Value, out: &mut Vec<f64>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        serde_json::Value::Bool(b) => out.push(f64::from(u8::from(*b))),
        other => out.push(other.as_f64().unwrap_or(f64::NAN)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "teal-onnx-{what}-{}-{:x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_library_is_taken_from_the_first_environment_that_has_it() {
        let (empty, venv) = (temp("empty"), temp("venv"));
        std::fs::create_dir_all(empty.join("lib/python3.11/site-packages")).unwrap();
        let capi = venv.join("lib/python3.12/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        for name in [
            "libonnxruntime.so.1.30.0".to_string(),
            format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"),
            "libonnxruntime_providers_shared.so".to_string(),
        ] {
            std::fs::write(capi.join(name), b"").unwrap();
        }
        let found = search(&[empty, venv], "/nonexistent/python3").unwrap();
        assert_eq!(
            found,
            capi.join(format!("libonnxruntime.so.{ONNXRUNTIME_VERSION}"))
        );
    }

    #[test]
    fn without_the_library_anywhere_the_error_says_where_it_looked_and_what_to_install() {
        let empty = temp("nothing");
        let error = search(std::slice::from_ref(&empty), "/nonexistent/python3").unwrap_err();
        assert!(error.contains(&empty.display().to_string()), "{error}");
        assert!(error.contains("/nonexistent/python3"), "{error}");
        assert!(error.contains("scripts/setup"), "{error}");
        assert!(
            error.contains(&format!("pip install onnxruntime=={ONNXRUNTIME_VERSION}")),
            "{error}"
        );
        assert!(error.contains("ORT_DYLIB_PATH"), "{error}");
    }
}
