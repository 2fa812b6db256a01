//! The `[server]` table: listeners, limits and where state lives.

use std::path::PathBuf;

use serde::Deserialize;

use super::yes;

/// Default data-plane address: loopback, so a first run exposes nothing until the operator
/// chooses an interface.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin address (admin API, metrics, dashboard): loopback, and apart from the data
/// plane, because the admin API can replace models. Port 8090, not 9090: that one is
/// Prometheus's own, often on the same host or pod network.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8090";
/// Default largest request body, in bytes: room for a batch of images, small enough that a
/// runaway client cannot exhaust memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Listeners, limits and where state lives: what one teal process needs, shared by all its
/// models.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Data-plane address: the V2 and simple JSON endpoints. Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin address: admin API, metrics and dashboard. Keep it off public interfaces: the
    /// admin token changes what every model answers.
    #[serde(default = "default_admin")]
    pub admin: String,
    /// An address for `/metrics` alone (read-only, no token), for a scraper that must reach
    /// teal from outside the host or pod while the admin API stays on loopback. Unset: the
    /// metrics are on the admin listener only.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// An address for the Open Inference Protocol over gRPC (`inference.GRPCInferenceService`,
    /// as `tritonclient.grpc` and KServe's gRPC clients call it), routed like the REST
    /// endpoints. Unset: no gRPC listener.
    #[serde(default)]
    pub grpc_listen: Option<String>,
    /// Whether slots that run a command (`kind = "process"`) may come from the admin API, and
    /// from the state file at start-up. Off: only the config file's process slots run; a
    /// deploy or rollout of one through the API is refused (403), and one remembered in the
    /// state file that the config file does not hold is not started again.
    #[serde(default)]
    pub allow_commands: bool,
    /// A secret that feedback (`POST /v2/models/{m}/feedback`) must carry in the
    /// `x-teal-feedback-token` header; unset, feedback needs none. Without it, anyone who can
    /// reach the data plane can label requests, and labels feed the accuracy rule.
    #[serde(default)]
    pub feedback_token: Option<String>,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Folder for teal's state: the state file (teal.db), the audit key (audit.key), the admin
    /// token and address files.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Record every request (id, time, model, version, slot, status, latency) in the state
    /// file, in batches off the request path.
    #[serde(default = "yes")]
    pub request_log: bool,
    /// The most request-log rows kept (and feedback labels, apart); older ones are pruned in
    /// the background, a few thousand at a time. A row takes about 150 bytes of the state
    /// file, so the default keeps the log near 150 MB. Feedback and `teal audit --request`
    /// reach only the rows kept.
    #[serde(default = "default_request_log_max_rows")]
    pub request_log_max_rows: u64,
    /// How long request-log rows (and feedback labels) are kept, in ms; older ones are
    /// pruned in the background.
    #[serde(default = "default_request_log_max_age_ms")]
    pub request_log_max_age_ms: u64,
    /// How long a teardown waits for requests in flight on the slot to finish.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle before its next request; then teal closes it. Slow clients
    /// cannot hold connections open forever.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's whole body, from the end of its head;
    /// then teal answers 408 and closes the connection. A client that declares a large body
    /// and sends it a byte at a time cannot hold a connection for ever.
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// How long writing an answer (or closing the connection) may take before teal gives up
    /// on the connection: a client that stops reading cannot hold it for ever.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Data-plane connections open at once; one more is answered 503 with `Retry-After` and
    /// closed, while the open ones keep being served. Unset: the open-file limit less an
    /// eighth of it (at least 256), kept for model files, the state file and upstream
    /// connections.
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Bytes of captured requests (for replay) waiting to be written to the state file; a
    /// capture that would pass it is dropped and counted, never waited for.
    #[serde(default = "default_capture_queue_bytes")]
    pub capture_queue_bytes: usize,
    /// The largest the state file may grow, in bytes (unset: as large as the disk allows).
    /// When it is full, as when the disk is, teal keeps serving: it stops recording requests
    /// (counted as dropped), refuses to start rollouts and hand-made changes (507, routing
    /// unchanged) and says so in `teal status`.
    #[serde(default)]
    pub state_max_bytes: Option<u64>,
    /// Path of `libonnxruntime.so`; when unset teal looks at `ORT_DYLIB_PATH`, then at the
    /// `onnxruntime` Python package in the environment teal is installed in, the checkout's
    /// `.venv`, and the environment of the `python3` on the PATH.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
    /// The MLflow tracking server that `models:/` sources name (unset: `MLFLOW_TRACKING_URI`).
    #[serde(default)]
    pub mlflow_uri: Option<String>,
    /// The largest model file a source may download, in bytes.
    #[serde(default = "default_max_download_bytes")]
    pub max_download_bytes: u64,
    /// Model files kept in `state_dir/artifacts` from sources. Past it, the least recently
    /// used files that no loaded version uses are deleted after each deploy (such a file is
    /// fetched again if a version needs it later).
    #[serde(default = "default_artifact_cache_files")]
    pub artifact_cache_files: usize,
    /// ... and at most this many bytes of them, with the same rule (files a loaded version
    /// uses stay, whatever their size).
    #[serde(default = "default_artifact_cache_bytes")]
    pub artifact_cache_bytes: u64,
    /// The Prometheus server `[[model.rollout.analysis]]` queries are sent to, like
    /// `http://127.0.0.1:9090` (its HTTP API, `/api/v1/query`).
    #[serde(default)]
    pub prometheus_url: Option<String>,
}

fn default_artifact_cache_files() -> usize {
    16
}

fn default_artifact_cache_bytes() -> u64 {
    10 << 30
}

fn default_max_download_bytes() -> u64 {
    2 << 30
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin: default_admin(),
            metrics_listen: None,
            grpc_listen: None,
            allow_commands: false,
            feedback_token: None,
            max_body_bytes: default_max_body(),
            state_dir: default_state_dir(),
            drain_ms: default_drain_ms(),
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            write_timeout_ms: default_write_timeout_ms(),
            max_connections: None,
            capture_queue_bytes: default_capture_queue_bytes(),
            state_max_bytes: None,
            request_log: true,
            request_log_max_rows: default_request_log_max_rows(),
            request_log_max_age_ms: default_request_log_max_age_ms(),
            onnxruntime: None,
            mlflow_uri: None,
            max_download_bytes: default_max_download_bytes(),
            artifact_cache_files: default_artifact_cache_files(),
            artifact_cache_bytes: default_artifact_cache_bytes(),
            prometheus_url: None,
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_admin() -> String {
    DEFAULT_ADMIN.to_string()
}
fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_drain_ms() -> u64 {
    10_000
}
fn default_header_timeout_ms() -> u64 {
    30_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_write_timeout_ms() -> u64 {
    30_000
}
fn default_capture_queue_bytes() -> usize {
    32 * 1024 * 1024
}
/// Default most request-log rows kept: about 150 MB of the state file.
pub const DEFAULT_REQUEST_LOG_MAX_ROWS: u64 = 1_000_000;
/// Default age past which request-log rows are pruned: seven days.
pub const DEFAULT_REQUEST_LOG_MAX_AGE_MS: u64 = 7 * 86_400_000;
fn default_request_log_max_rows() -> u64 {
    DEFAULT_REQUEST_LOG_MAX_ROWS
}
fn default_request_log_max_age_ms() -> u64 {
    DEFAULT_REQUEST_LOG_MAX_AGE_MS
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(".teal")
}
