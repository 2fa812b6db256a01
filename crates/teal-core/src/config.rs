//! teal's configuration file (TOML), parsed and validated as plain data.
//!
//! `Config::parse` reads the text, `Config::validate` checks what the types cannot, and
//! the binary's `load(path)` is a thin wrapper that reads the file and resolves relative
//! paths against the file's folder.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::routing::Color;

/// Default data-plane address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin address (admin API, metrics, dashboard).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
/// Default largest request body, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, limits and where state lives.
    #[serde(default)]
    pub server: ServerConfig,
    /// The models teal serves, each with a blue and an optional green slot.
    #[serde(default, rename = "model")]
    pub models: Vec<ModelConfig>,
}

/// Listeners, limits and where state lives.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Data-plane address: the V2 and simple JSON endpoints. Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Admin address: admin API, metrics and dashboard. Keep it off public interfaces.
    #[serde(default = "default_admin")]
    pub admin: String,
    /// Largest request body accepted; larger ones get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Folder for teal's state: the state file (teal.db), the admin token and address files.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Record every request (id, time, model, version, slot, status, latency) in the state
    /// file, in batches off the request path.
    #[serde(default = "yes")]
    pub request_log: bool,
    /// How long a teardown waits for requests in flight on the slot to finish.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle before its next request; then teal closes it. Slow clients
    /// cannot hold connections open forever.
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// The largest the state file may grow, in bytes (unset: as large as the disk allows).
    /// When it is full, as when the disk is, teal keeps serving: it stops recording requests
    /// (counted as dropped), refuses to start rollouts (507) and says so in `teal status`.
    #[serde(default)]
    pub state_max_bytes: Option<u64>,
    /// Path of `libonnxruntime.so`; when unset teal looks at `ORT_DYLIB_PATH`, then at the
    /// `onnxruntime` Python package.
    #[serde(default)]
    pub onnxruntime: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin: default_admin(),
            max_body_bytes: default_max_body(),
            state_dir: default_state_dir(),
            drain_ms: default_drain_ms(),
            header_timeout_ms: default_header_timeout_ms(),
            state_max_bytes: None,
            request_log: true,
            onnxruntime: None,
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
fn default_state_dir() -> PathBuf {
    PathBuf::from(".teal")
}

/// One model: the name clients call, and its slots.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients call, as in `/v2/models/{name}/infer`.
    pub name: String,
    /// The slot serving traffic at start-up.
    #[serde(default = "default_live")]
    pub live: Color,
    /// The output the simple JSON endpoint answers with; the model's first output when unset.
    #[serde(default)]
    pub prediction_output: Option<String>,
    /// Whether callers may pick a slot with the `x-teal-slot` header.
    #[serde(default = "yes")]
    pub header_override: bool,
    /// A request header (like `x-user-id`) whose value keeps a session on one slot during a
    /// canary: the session moves only when the weight passes its bucket.
    #[serde(default)]
    pub sticky_header: Option<String>,
    /// A cookie that does the same, for browsers.
    #[serde(default)]
    pub sticky_cookie: Option<String>,
    /// The prediction cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Gate thresholds for validating a candidate.
    #[serde(default)]
    pub gates: crate::gates::GateConfig,
    /// Share of live requests kept in memory (up to `capture_limit`) to replay against the
    /// next candidate, from 0.0 (none) to 1.0 (all).
    #[serde(default)]
    pub capture_rate: f64,
    /// How many captured requests are kept, newest first.
    #[serde(default = "default_capture_limit")]
    pub capture_limit: usize,
    /// How new versions are rolled out: strategy, approval, bake, keep-warm window and
    /// the automatic rollback rules.
    #[serde(default)]
    pub rollout: crate::rollout::RolloutSettings,
    /// The blue slot.
    pub blue: Option<SlotConfig>,
    /// The green slot.
    pub green: Option<SlotConfig>,
}

fn default_capture_limit() -> usize {
    10_000
}

fn default_live() -> Color {
    Color::Blue
}
fn yes() -> bool {
    true
}

impl ModelConfig {
    pub fn slot(&self, color: Color) -> Option<&SlotConfig> {
        match color {
            Color::Blue => self.blue.as_ref(),
            Color::Green => self.green.as_ref(),
        }
    }
}

/// One version of a model in one slot. Unknown keys are refused by [`BackendConfig`],
/// which receives every key this struct does not name.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
pub struct SlotConfig {
    /// The version's name, reported in `x-teal-version` and reachable at `/versions/{version}/`.
    pub version: String,
    /// How the version runs.
    #[serde(flatten)]
    pub backend: BackendConfig,
    /// Model-card fields (notes, owner, training data, ...), served with the model metadata.
    #[serde(default)]
    pub card: BTreeMap<String, String>,
}

impl SlotConfig {
    /// Checks one slot; the error names the field (relative to the slot) and the reason.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: &str, reason: &str| Err((field.to_string(), reason.to_string()));
        if !valid_name(&self.version) {
            return Err((
                "version".into(),
                format!(
                    "'{}' is not a valid version name: use letters, digits, '-', '_' and '.'",
                    self.version
                ),
            ));
        }
        match &self.backend {
            BackendConfig::Onnx { workers, .. } if *workers == 0 || *workers > 64 => {
                err("workers", "must be between 1 and 64")
            }
            BackendConfig::Onnx { .. } => Ok(()),
            BackendConfig::Upstream(remote) => {
                if remote.urls.is_empty() {
                    return err(
                        "urls",
                        "an upstream slot needs at least one replica URL, like [\"http://127.0.0.1:8081\"]",
                    );
                }
                if remote.command.is_some() {
                    return err(
                        "command",
                        "an upstream slot fronts running servers; use kind = \"process\" for teal to start one",
                    );
                }
                for url in &remote.urls {
                    if !(url.starts_with("http://") && url.len() > 7) {
                        return Err(("urls".into(), format!("'{url}' is not an http:// URL")));
                    }
                }
                remote.validate_common()
            }
            BackendConfig::Process(remote) => {
                match &remote.command {
                    None => {
                        return err(
                            "command",
                            "a process slot needs the command that starts the server",
                        );
                    }
                    Some(c) if c.trim().is_empty() => return err("command", "is empty"),
                    Some(_) => {}
                }
                if !remote.urls.is_empty() {
                    return err(
                        "urls",
                        "a process slot serves on the port teal gives it ({port}); leave urls out",
                    );
                }
                remote.validate_common()
            }
        }
    }
}

/// The longest any timeout or grace period may be: longer is a typo, and waiting on it would
/// hold a deploy (or a shutdown) for good.
const MAX_WAIT_MS: u64 = 86_400_000;

impl RemoteConfig {
    fn validate_common(&self) -> Result<(), (String, String)> {
        for (field, value) in [
            ("timeout_ms", self.timeout_ms),
            ("health_interval_ms", self.health_interval_ms),
            ("ready_timeout_ms", self.ready_timeout_ms),
        ] {
            if value == 0 {
                return Err((field.into(), "must be more than 0".into()));
            }
            if value > MAX_WAIT_MS {
                return Err((
                    field.into(),
                    format!("must be at most {MAX_WAIT_MS} (one day), not {value}"),
                ));
            }
        }
        for (field, value) in [
            ("eject_ms", self.eject_ms),
            ("stop_grace_ms", self.stop_grace_ms),
        ] {
            if value > MAX_WAIT_MS {
                return Err((
                    field.into(),
                    format!("must be at most {MAX_WAIT_MS} (one day), not {value}"),
                ));
            }
        }
        if !self.predict_path.starts_with('/')
            || self
                .ready_path
                .as_ref()
                .is_some_and(|p| !p.starts_with('/'))
        {
            return Err(("predict_path".into(), "paths start with '/'".into()));
        }
        Ok(())
    }
}

/// How a version runs.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// In-process on ONNX Runtime.
    Onnx {
        /// The `.onnx` file.
        path: PathBuf,
        /// Reference outputs (`reference.json`, as `models/make_models.py` writes them): the
        /// version must reproduce them before it may take traffic.
        #[serde(default)]
        reference: Option<PathBuf>,
        /// Inferences that may run at once; each has its own session and thread.
        #[serde(default = "default_workers")]
        workers: usize,
    },
    /// Replicas of a model server that already runs (MLServer, Triton, a Flask app, ...).
    Upstream(RemoteConfig),
    /// A model server teal starts, supervises and stops itself, then fronts like an upstream.
    Process(RemoteConfig),
}

/// How teal speaks to a model server.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WireProtocol {
    /// Open Inference Protocol V2 REST.
    #[default]
    V2,
    /// Simple JSON: POST `predict_path` with `{"features": [[...]]}`, answered with
    /// `{"prediction": ...}` or `{"predictions": [...]}` (the classic Flask pattern).
    Json,
}

/// How requests are spread over replicas.
#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The replica with the fewest requests in flight (ties go round the ring).
    #[default]
    LeastOutstanding,
    /// Each replica in turn.
    RoundRobin,
}

/// A model server: replicas teal fronts (`upstream`) or a command teal starts (`process`).
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `upstream`: base URLs of the replicas, like `http://10.0.0.5:8080`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// `process`: the command teal starts (run by `sh -c`). Placeholders: `{port}` (a free
    /// port teal picked; the server must listen on it), `{model}`, `{version}`.
    #[serde(default)]
    pub command: Option<String>,
    /// `process`: the folder the command runs in (default: the config file's folder).
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// `process`: extra environment variables for the command (placeholders work here too).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `v2` (default) or `json`.
    #[serde(default)]
    pub protocol: WireProtocol,
    /// The model's name on the server, when it is not teal's name for it (V2).
    #[serde(default)]
    pub model: Option<String>,
    /// The simple JSON protocol's inference path.
    #[serde(default = "default_predict_path")]
    pub predict_path: String,
    /// The readiness path; default `/v2/models/{model}/ready` (V2) or `/health` (JSON).
    #[serde(default)]
    pub ready_path: Option<String>,
    /// `least_outstanding` (default) or `round_robin`.
    #[serde(default)]
    pub balance: Balance,
    /// How long one inference may take before it fails.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How often each replica's readiness is checked.
    #[serde(default = "default_health_interval_ms")]
    pub health_interval_ms: u64,
    /// Consecutive failed requests after which a replica is ejected.
    #[serde(default = "default_eject_after")]
    pub eject_after_failures: u32,
    /// How long an ejected replica stays out before a passing readiness check re-admits it.
    #[serde(default = "default_eject_ms")]
    pub eject_ms: u64,
    /// `process`: how long the server may take to become ready.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// `process`: how long after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// Declared inputs, for servers whose metadata publishes none (teal then validates).
    #[serde(default)]
    pub inputs: Option<Vec<crate::protocol::TensorSpec>>,
    /// Declared outputs, likewise.
    #[serde(default)]
    pub outputs: Option<Vec<crate::protocol::TensorSpec>>,
}

impl RemoteConfig {
    /// The readiness path for this protocol, for the model the server knows as `server_model`.
    pub fn ready_path(&self, server_model: &str) -> String {
        match (&self.ready_path, self.protocol) {
            (Some(path), _) => path.clone(),
            (None, WireProtocol::V2) => format!("/v2/models/{server_model}/ready"),
            (None, WireProtocol::Json) => "/health".to_string(),
        }
    }
}

fn default_predict_path() -> String {
    "/predict".to_string()
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_health_interval_ms() -> u64 {
    2_000
}
fn default_eject_after() -> u32 {
    5
}
fn default_eject_ms() -> u64 {
    10_000
}
fn default_ready_timeout_ms() -> u64 {
    60_000
}
fn default_stop_grace_ms() -> u64 {
    10_000
}

/// A versioned prediction cache, off by default.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether identical inputs are answered from memory.
    #[serde(default)]
    pub enabled: bool,
    /// Entries kept per slot; the oldest go first.
    #[serde(default = "default_cache_entries")]
    pub max_entries: usize,
    /// How long an answer may be reused.
    #[serde(default = "default_cache_ttl_ms")]
    pub ttl_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            max_entries: default_cache_entries(),
            ttl_ms: default_cache_ttl_ms(),
        }
    }
}

fn default_cache_entries() -> usize {
    10_000
}
fn default_cache_ttl_ms() -> u64 {
    60_000
}

fn default_workers() -> usize {
    2
}

/// A configuration that cannot be used, with the field and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Overrides from the environment, read through a trait so tests pass a map.
pub trait Environment {
    fn get(&self, name: &str) -> Option<String>;
}

impl Environment for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// Whether a model name is safe in a URL path and a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let field = e.span().map_or_else(
                || "file".to_string(),
                |span| {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                },
            );
            ConfigError::new(field, message)
        })
    }

    /// Applies `TEAL_LISTEN`, `TEAL_ADMIN_LISTEN`, `TEAL_STATE_DIR` and `TEAL_REQUEST_LOG`
    /// (`0` or `false` turns the request log off).
    pub fn apply_environment(&mut self, env: &dyn Environment) {
        if let Some(flag) = env.get("TEAL_REQUEST_LOG") {
            self.server.request_log = !matches!(flag.trim(), "0" | "false" | "off" | "no");
        }
        if let Some(listen) = env.get("TEAL_LISTEN") {
            self.server.listen = listen;
        }
        if let Some(admin) = env.get("TEAL_ADMIN_LISTEN") {
            self.server.admin = admin;
        }
        if let Some(dir) = env.get("TEAL_STATE_DIR") {
            self.server.state_dir = PathBuf::from(dir);
        }
    }

    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.server.state_dir);
        if let Some(lib) = self.server.onnxruntime.as_mut() {
            resolve(lib);
        }
        for model in &mut self.models {
            if let Some(crate::rollout::Evidence::Holdout(path)) = model.rollout.evidence.as_mut() {
                resolve(path);
            }
            for slot in [model.blue.as_mut(), model.green.as_mut()]
                .into_iter()
                .flatten()
            {
                match &mut slot.backend {
                    BackendConfig::Onnx {
                        path, reference, ..
                    } => {
                        resolve(path);
                        if let Some(r) = reference.as_mut() {
                            resolve(r);
                        }
                    }
                    BackendConfig::Upstream(_) => {}
                    BackendConfig::Process(remote) => {
                        let dir = remote.workdir.get_or_insert_with(|| base.to_path_buf());
                        resolve(dir);
                    }
                }
            }
        }
    }

    /// Checks what the types cannot: addresses, names, limits, the live slot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check(true)
    }

    /// As [`Config::validate`], allowing no models: a gateway that learns its models from
    /// a Kubernetes cluster may start with none.
    pub fn validate_allowing_no_models(&self) -> Result<(), ConfigError> {
        self.check(false)
    }

    fn check(&self, need_models: bool) -> Result<(), ConfigError> {
        for (field, value) in [
            ("server.listen", &self.server.listen),
            ("server.admin", &self.server.admin),
        ] {
            value.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    field,
                    format!(
                        "'{value}' is not an address: write it as IP:PORT, like 127.0.0.1:8080"
                    ),
                )
            })?;
        }
        if self.server.listen == self.server.admin && !self.server.listen.ends_with(":0") {
            return Err(ConfigError::new(
                "server.admin",
                "the admin API needs its own address: it must not share the data plane's",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be more than 0",
            ));
        }
        if need_models && self.models.is_empty() {
            return Err(ConfigError::new(
                "model",
                "no models: add a [[model]] table with a name and a blue slot",
            ));
        }
        let mut names = HashSet::new();
        for (i, model) in self.models.iter().enumerate() {
            let at = format!("model[{i}]");
            if !valid_name(&model.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!(
                        "'{}' is not a valid model name: use letters, digits, '-', '_' and '.'",
                        model.name
                    ),
                ));
            }
            if !names.insert(model.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("model '{}' is configured twice", model.name),
                ));
            }
            if model.slot(model.live).is_none() {
                return Err(ConfigError::new(
                    format!("{at}.live"),
                    format!(
                        "model '{}' is live on {} but has no [model.{}] slot",
                        model.name, model.live, model.live
                    ),
                ));
            }
            for color in [Color::Blue, Color::Green] {
                let Some(slot) = model.slot(color) else {
                    continue;
                };
                let field = format!("{at}.{color}");
                slot.validate()
                    .map_err(|(f, reason)| ConfigError::new(format!("{field}.{f}"), reason))?;
            }
            if !(0.0..=1.0).contains(&model.capture_rate) {
                return Err(ConfigError::new(
                    format!("{at}.capture_rate"),
                    "must be between 0.0 and 1.0",
                ));
            }
            let gates = &model.gates;
            for (field, value) in [
                ("agreement", gates.agreement),
                ("max_error_rate", gates.max_error_rate),
                ("latency_alpha", gates.latency_alpha),
            ] {
                if !(0.0..=1.0).contains(&value) {
                    return Err(ConfigError::new(
                        format!("{at}.gates.{field}"),
                        "must be between 0.0 and 1.0",
                    ));
                }
            }
            if gates.max_latency_ratio < 1.0 {
                return Err(ConfigError::new(
                    format!("{at}.gates.max_latency_ratio"),
                    "must be at least 1.0",
                ));
            }
            model
                .rollout
                .validate()
                .map_err(|(f, reason)| ConfigError::new(format!("{at}.rollout.{f}"), reason))?;
            if model.cache.enabled && model.cache.max_entries == 0 {
                return Err(ConfigError::new(
                    format!("{at}.cache.max_entries"),
                    "must be more than 0 when the cache is on",
                ));
            }
            if let (Some(blue), Some(green)) = (&model.blue, &model.green)
                && blue.version == green.version
            {
                return Err(ConfigError::new(
                    format!("{at}.green.version"),
                    format!(
                        "blue and green both hold version '{}': give each slot its own version",
                        blue.version
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        admin = "127.0.0.1:0"

        [[model]]
        name = "digits"

        [model.blue]
        version = "v1"
        kind = "onnx"
        path = "digits/v1/model.onnx"
        card = { owner = "ml-team" }

        [model.green]
        version = "v2"
        kind = "onnx"
        path = "/models/v2.onnx"
        workers = 4
    "#;

    #[test]
    fn parses_the_example_with_defaults() {
        let config = Config::parse(EXAMPLE).unwrap();
        config.validate().unwrap();
        let model = &config.models[0];
        assert_eq!(model.live, Color::Blue);
        assert!(model.header_override);
        assert_eq!(config.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(model.blue.as_ref().unwrap().card["owner"], "ml-team");
        assert!(matches!(
            model.green.as_ref().unwrap().backend,
            BackendConfig::Onnx { workers: 4, .. }
        ));
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let mut config = Config::parse(EXAMPLE).unwrap();
        config.resolve_paths(Path::new("/etc/teal"));
        let BackendConfig::Onnx { path, .. } = &config.models[0].blue.as_ref().unwrap().backend
        else {
            panic!("onnx")
        };
        assert_eq!(path, Path::new("/etc/teal/digits/v1/model.onnx"));
        let BackendConfig::Onnx { path, .. } = &config.models[0].green.as_ref().unwrap().backend
        else {
            panic!("onnx")
        };
        assert_eq!(path, Path::new("/models/v2.onnx"));
        assert_eq!(config.server.state_dir, Path::new("/etc/teal/.teal"));
    }

    #[test]
    fn environment_overrides_listeners() {
        let mut config = Config::parse(EXAMPLE).unwrap();
        let env = BTreeMap::from([("TEAL_LISTEN".to_string(), "0.0.0.0:80".to_string())]);
        config.apply_environment(&env);
        assert_eq!(config.server.listen, "0.0.0.0:80");
        assert_eq!(config.server.admin, "127.0.0.1:0");
    }

    #[test]
    fn refuses_bad_configs_with_the_field_and_reason() {
        let cases = [
            (
                EXAMPLE.replace("name = \"digits\"", "name = \"../etc\""),
                "model[0].name",
            ),
            (
                EXAMPLE.replace("version = \"v2\"", "version = \"v1\""),
                "model[0].green.version",
            ),
            (
                EXAMPLE.replace("listen = \"127.0.0.1:0\"", "listen = \"localhost\""),
                "server.listen",
            ),
            (
                EXAMPLE.replace("workers = 4", "workers = 0"),
                "model[0].green.workers",
            ),
            (EXAMPLE.replace("[model.blue]", "[model.red]"), "line"),
            (
                EXAMPLE.replace(
                    "kind = \"onnx\"\n        path = \"/models",
                    "kind = \"tensorflow\"\n        path = \"/models",
                ),
                "line",
            ),
            ("[server]\n".to_string(), "model"),
        ];
        for (text, field) in cases {
            let err = Config::parse(&text)
                .and_then(|c| c.validate().map(|_| c))
                .expect_err(field);
            assert!(
                err.field.starts_with(field),
                "expected field {field}, got {err}"
            );
        }
    }

    #[test]
    fn live_slot_must_exist() {
        let text = EXAMPLE.replace("name = \"digits\"", "name = \"digits\"\nlive = \"green\"");
        let text = text.replace("[model.green]", "[model.unused]");
        assert!(Config::parse(&text).is_err());
        let without_green: String = EXAMPLE
            .split("[model.green]")
            .next()
            .unwrap()
            .replace("name = \"digits\"", "name = \"digits\"\nlive = \"green\"");
        let err = Config::parse(&without_green)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "model[0].live");
    }

    #[test]
    fn upstream_and_process_slots_parse_with_defaults_and_refuse_mixups() {
        let text = r#"
            [[model]]
            name = "m"
            [model.blue]
            version = "a"
            kind = "upstream"
            urls = ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
            balance = "round_robin"
            [model.green]
            version = "b"
            kind = "process"
            command = "mlserver start . --http_port {port}"
            protocol = "json"
        "#;
        let mut config = Config::parse(text).unwrap();
        config.validate().unwrap();
        config.resolve_paths(Path::new("/srv"));
        let BackendConfig::Upstream(up) = &config.models[0].blue.as_ref().unwrap().backend else {
            panic!()
        };
        assert_eq!(up.urls.len(), 2);
        assert_eq!(up.balance, Balance::RoundRobin);
        assert_eq!(up.ready_path("m"), "/v2/models/m/ready");
        let BackendConfig::Process(p) = &config.models[0].green.as_ref().unwrap().backend else {
            panic!()
        };
        assert_eq!(p.workdir.as_deref(), Some(Path::new("/srv")));
        assert_eq!(p.ready_path("m"), "/health");
        assert_eq!(p.timeout_ms, 30_000);

        for (from, to, field) in [
            (
                "urls = [\"http://127.0.0.1:8001\", \"http://127.0.0.1:8002\"]",
                "urls = []",
                "model[0].blue.urls",
            ),
            (
                "urls = [\"http://127.0.0.1:8001\", \"http://127.0.0.1:8002\"]",
                "urls = [\"ftp://x\"]",
                "model[0].blue.urls",
            ),
            (
                "command = \"mlserver start . --http_port {port}\"",
                "workdir = \"/tmp\"",
                "model[0].green.command",
            ),
        ] {
            let err = Config::parse(&text.replace(from, to))
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(err.field, field);
        }
        assert!(
            Config::parse(&text.replace("balance", "balancing")).is_err(),
            "typos are refused"
        );
    }

    #[test]
    fn model_names_are_path_safe() {
        for ok in ["digits", "fraud-v2", "a_b.c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
