//! A model server teal fronts (`kind = "upstream"`) or starts itself (`kind = "process"`):
//! where it is, how teal speaks to it, and how long teal waits for it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// How teal speaks to a model server: V2 servers pass tensors through, and JSON ones let a
/// plain web app serve behind teal without learning V2.
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

/// How requests are spread over replicas, chosen per slot because servers differ in how
/// evenly they answer.
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
/// Both kinds share one set of settings, because once running they are fronted alike.
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
    /// `process`: a version in an MLflow model registry that the command serves, of any
    /// flavour (`models:/NAME@ALIAS` or `models:/NAME/VERSION`): `{source}` in the command and
    /// in `env` is that version (an alias resolved to its number when the slot loads, and
    /// kept so), and the command gets `MLFLOW_TRACKING_URI`. Like
    /// `MLSERVER_MODEL_URI={source}` with MLServer's MLflow runtime.
    #[serde(default)]
    pub source: Option<String>,
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

/// The longest any timeout or grace period may be: longer is a typo, and waiting on it would
/// hold a deploy (or a shutdown) for good.
const MAX_WAIT_MS: u64 = 86_400_000;

impl RemoteConfig {
    pub(super) fn validate_common(&self) -> Result<(), (String, String)> {
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
        // Each goes into a request line: a CR or LF there would end it early.
        for (field, value) in [
            ("model", self.model.as_deref()),
            ("predict_path", Some(self.predict_path.as_str())),
            ("ready_path", self.ready_path.as_deref()),
        ] {
            if let Some(value) = value
                && value.bytes().any(|b| b <= b' ' || b == 0x7f)
            {
                return Err((
                    field.into(),
                    format!(
                        "{value:?} holds a space or control character: it goes into a request line as it is; percent-encode it"
                    ),
                ));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{BackendConfig, Config};

    use super::*;

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
            (
                "balance = \"round_robin\"",
                "model = \"m\\r\\nx: y\"",
                "model[0].blue.model",
            ),
            (
                "protocol = \"json\"",
                "protocol = \"json\"\npredict_path = \"/predict now\"",
                "model[0].green.predict_path",
            ),
            (
                "protocol = \"json\"",
                "protocol = \"json\"\nready_path = \"/health\\n\"",
                "model[0].green.ready_path",
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
}
