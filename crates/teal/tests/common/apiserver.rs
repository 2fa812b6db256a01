//! A mocked Kubernetes API server for the operator and gateway tests: the `tower-test`
//! pattern kube-rs uses. Nothing here pretends to be a cluster beyond answering the requests
//! a test expects, one by one, and checking each (method, path, query, body).

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use teal::kubernetes::crd::ModelDeployment;

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client that talks to the mock, and the mock's handle.
pub fn mock_api() -> (kube::Client, Api) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), Api { handle })
}

/// One request the client made.
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
    respond: tower_test::mock::SendResponse<Response<Body>>,
}

impl Seen {
    pub fn answer(self, status: u16, body: &Value) {
        self.answer_bytes(status, serde_json::to_vec(body).unwrap());
    }

    /// Answers with a body as given (a watch's newline-separated events).
    pub fn answer_bytes(self, status: u16, body: Vec<u8>) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        self.respond.send_response(response);
    }

    /// Answers with the request's own body (what a create or an apply returns).
    pub fn echo(self) -> Value {
        let body = self.body.clone();
        self.answer(200, &body);
        body
    }

    /// A Kubernetes error Status with `code`.
    pub fn fail(self, code: u16, reason: &str, message: &str) {
        self.answer(
            code,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}),
        );
    }
}

pub struct Api {
    handle: Handle,
}

impl Api {
    /// The next request; fails the test if none comes within 20 s.
    pub async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(20), self.next_untimed())
            .await
            .expect("the client made a request within 20 s")
            .expect("the client is still there")
    }

    /// The next request, however long it takes; `None` once the client is gone. For a
    /// server that answers watches, which clients renew as long as they run.
    pub async fn next_untimed(&mut self) -> Option<Seen> {
        let (request, respond) = self.handle.next_request().await?;
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        Some(Seen {
            method,
            path,
            query,
            content_type,
            body,
            respond,
        })
    }

    /// The next request, which must be `method path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Seen {
        let seen = self.next().await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            (method, path),
            "expected {method} {path}, the client sent {} {}?{} with {}",
            seen.method,
            seen.path,
            seen.query,
            seen.body
        );
        seen
    }

    /// The next write, which must be `method path`. Before it, the operator reads each
    /// Deployment or Service it is about to write, to write only objects it made: those reads
    /// are answered 404 (absent, so teal's to create), as an empty namespace would.
    pub async fn expect_write(&mut self, method: &str, path: &str) -> Seen {
        loop {
            let seen = self.next().await;
            if ownership_read(&seen) {
                seen.fail(404, "NotFound", "not found");
                continue;
            }
            assert_eq!(
                (seen.method.as_str(), seen.path.as_str()),
                (method, path),
                "expected {method} {path}, the client sent {} {}?{} with {}",
                seen.method,
                seen.path,
                seen.query,
                seen.body
            );
            return seen;
        }
    }

    /// An event about the resource: checks its type and reason, and answers it.
    pub async fn expect_event(&mut self, kind: &str, reason: &str) -> Value {
        let seen = self
            .expect("POST", "/apis/events.k8s.io/v1/namespaces/default/events")
            .await;
        assert_eq!(seen.body["type"], kind, "event {}", seen.body);
        assert_eq!(seen.body["reason"], reason, "event {}", seen.body);
        assert_eq!(seen.body["regarding"]["kind"], "ModelDeployment");
        assert_eq!(seen.body["regarding"]["name"], "digits");
        seen.echo()
    }

    /// Asserts the client sends nothing more for `wait`.
    pub async fn silent(&mut self, wait: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(wait, self.handle.next_request()).await
        {
            panic!(
                "expected no more requests, the client sent {} {}",
                request.method(),
                request.uri()
            );
        }
    }
}

/// A read of one Deployment or Service (not a list, not a watch): what the operator does
/// before it writes one.
pub fn ownership_read(seen: &Seen) -> bool {
    let object = |collection: &str| {
        seen.path
            .split_once(collection)
            .is_some_and(|(_, name)| !name.is_empty() && !name.contains('/'))
    };
    seen.method == "GET"
        && !seen.query.contains("watch=true")
        && (object("/deployments/") || object("/services/"))
}

pub const RESOURCE: &str = "/apis/teal.dev/v1alpha1/namespaces/default/modeldeployments/digits";
pub const STATUS: &str =
    "/apis/teal.dev/v1alpha1/namespaces/default/modeldeployments/digits/status";

/// A resource named `digits` in `default`, with the finalizer, `spec` and `status`.
pub fn resource(spec: Value, status: Option<Value>, version: u64) -> ModelDeployment {
    let mut object = json!({
        "apiVersion": "teal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": "digits",
            "namespace": "default",
            "uid": "5e1f0c2a-0000-4000-8000-000000000001",
            "generation": 1,
            "resourceVersion": version.to_string(),
            "finalizers": ["teal.dev/cleanup"],
        },
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).expect("a valid resource")
}

/// A Deployment's status with `ready` of `want` pods ready.
pub fn deployment(name: &str, want: i32, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "generation": 1},
        "spec": {"replicas": want, "selector": {"matchLabels": {}}, "template": {}},
        "status": {"observedGeneration": 1, "replicas": want, "updatedReplicas": want, "readyReplicas": ready},
    })
}
