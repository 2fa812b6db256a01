//! teal's configuration file (TOML), parsed and validated as plain data.
//!
//! `Config::parse` reads the text, `Config::validate` checks what the types cannot, and
//! the binary's `load(path)` is a thin wrapper that reads the file and resolves relative
//! paths against the file's folder.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::routing::Color;

mod environment;
mod model;
mod remote;
mod server;
mod slot;

pub use environment::Environment;
pub use model::{BatchingConfig, CacheConfig, LimitsConfig, ModelConfig, WatchConfig};
pub use remote::{Balance, RemoteConfig, WireProtocol};
pub use server::{DEFAULT_ADMIN, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, ServerConfig};
pub use slot::{BackendConfig, Optimization, SlotConfig};

/// The whole configuration: one value, parsed and checked before anything starts, so a
/// mistake stops teal at start-up instead of surfacing mid-rollout.
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

/// serde's default for switches that are on unless the file turns them off.
fn yes() -> bool {
    true
}

/// A configuration that cannot be used, with the field and the reason: the binary adds the
/// file's name, so the message points at the one place to fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// Where the mistake is: a dotted path like `model[0].green.workers`, or `line N` when
    /// the text itself does not parse.
    pub field: String,
    /// What is wrong and, where it helps, what to write instead.
    pub reason: String,
}

impl ConfigError {
    /// A mistake in `field`, with what is wrong.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Whether a model or version name is safe in a URL path and a file name: names become
/// both, so one holding `/` or starting with `.` could reach outside its folder.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// Parses TOML text without touching the file system, so tests and the fuzz target call
    /// it directly. A syntax or type error names the line; [`Config::validate`] checks the rest.
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
                        if !path.as_os_str().is_empty() {
                            resolve(path);
                        }
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
        if let Some(metrics) = &self.server.metrics_listen {
            metrics.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "server.metrics_listen",
                    format!(
                        "'{metrics}' is not an address: write it as IP:PORT, like 0.0.0.0:8091"
                    ),
                )
            })?;
            if !metrics.ends_with(":0")
                && (metrics == &self.server.listen || metrics == &self.server.admin)
            {
                return Err(ConfigError::new(
                    "server.metrics_listen",
                    "the metrics listener needs its own address: it must not share the data plane's or the admin API's",
                ));
            }
        }
        if self.server.artifact_cache_files < 2 {
            return Err(ConfigError::new(
                "server.artifact_cache_files",
                "must be at least 2: a live version's file and a candidate's",
            ));
        }
        if self.server.artifact_cache_bytes == 0 {
            return Err(ConfigError::new(
                "server.artifact_cache_bytes",
                "must be more than 0 (files a loaded version uses are kept whatever their size)",
            ));
        }
        if let Some(url) = &self.server.prometheus_url
            && !crate::rollout::http_url(url)
        {
            return Err(ConfigError::new(
                "server.prometheus_url",
                format!(
                    "'{url}' is not an http:// or https:// URL, like \"http://127.0.0.1:9090\""
                ),
            ));
        }
        if let Some(grpc) = &self.server.grpc_listen {
            grpc.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "server.grpc_listen",
                    format!("'{grpc}' is not an address: write it as IP:PORT, like 0.0.0.0:8081"),
                )
            })?;
            let taken = [
                Some(&self.server.listen),
                Some(&self.server.admin),
                self.server.metrics_listen.as_ref(),
            ];
            if !grpc.ends_with(":0") && taken.contains(&Some(grpc)) {
                return Err(ConfigError::new(
                    "server.grpc_listen",
                    "the gRPC listener needs its own address: it must not share the data plane's, the admin API's or the metrics listener's",
                ));
            }
        }
        if let Some(token) = &self.server.feedback_token
            && (token.trim().is_empty() || token.trim() != token || token.len() > 512)
        {
            return Err(ConfigError::new(
                "server.feedback_token",
                "must be 1 to 512 characters without surrounding spaces; leave it out to take feedback without one",
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::new(
                "server.max_body_bytes",
                "must be more than 0",
            ));
        }
        for (field, value) in [
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.write_timeout_ms", self.server.write_timeout_ms),
        ] {
            if value == 0 || value > 3_600_000 {
                return Err(ConfigError::new(
                    field,
                    "must be between 1 and 3600000 (an hour)",
                ));
            }
        }
        if self.server.max_connections == Some(0) {
            return Err(ConfigError::new(
                "server.max_connections",
                "must be more than 0; leave it out for the default",
            ));
        }
        if self.server.capture_queue_bytes == 0 {
            return Err(ConfigError::new(
                "server.capture_queue_bytes",
                "must be more than 0; set capture_rate = 0.0 to capture nothing",
            ));
        }
        if self.server.request_log_max_rows == 0 || self.server.request_log_max_rows > 1 << 40 {
            return Err(ConfigError::new(
                "server.request_log_max_rows",
                "must be between 1 and 1099511627776; set request_log = false to keep no log",
            ));
        }
        // Ten years: far past any retention, and far from overflowing a time in ms.
        const LONGEST_AGE_MS: u64 = 3650 * 86_400_000;
        if self.server.request_log_max_age_ms < 1_000
            || self.server.request_log_max_age_ms > LONGEST_AGE_MS
        {
            return Err(ConfigError::new(
                "server.request_log_max_age_ms",
                format!("must be between 1000 (a second) and {LONGEST_AGE_MS} (ten years)"),
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
            if model.name == "stats" {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    "'stats' is a path of its own under /v2/models (the statistics extension's, as on Triton): give the model another name",
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
            model
                .gates
                .validate()
                .map_err(|(f, reason)| ConfigError::new(format!("{at}.gates.{f}"), reason))?;
            model
                .limits
                .validate()
                .map_err(|(f, reason)| ConfigError::new(format!("{at}.limits.{f}"), reason))?;
            if let Some(source) = &model.source {
                source
                    .validate()
                    .map_err(|(f, reason)| ConfigError::new(format!("{at}.source.{f}"), reason))?;
            }
            if let Some(batching) = &model.batching {
                batching.validate().map_err(|(f, reason)| {
                    ConfigError::new(format!("{at}.batching.{f}"), reason)
                })?;
            }
            model
                .rollout
                .validate()
                .map_err(|(f, reason)| ConfigError::new(format!("{at}.rollout.{f}"), reason))?;
            if !model.rollout.analysis.is_empty() && self.server.prometheus_url.is_none() {
                return Err(ConfigError::new(
                    format!("{at}.rollout.analysis"),
                    "analyses query Prometheus: set server.prometheus_url, like \"http://127.0.0.1:9090\"",
                ));
            }
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

    pub(super) const EXAMPLE: &str = r#"
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
    fn gate_thresholds_out_of_range_are_refused_with_the_field_named() {
        let cases = [
            ("agreement = 1.5", "model[0].gates.agreement"),
            ("latency_alpha = 0.7", "model[0].gates.latency_alpha"),
            ("alpha = 0.0", "model[0].gates.alpha"),
            (
                "max_latency_ratio = 0.8",
                "model[0].gates.max_latency_ratio",
            ),
            (
                "min_latency_delta_ms = -1.0",
                "model[0].gates.min_latency_delta_ms",
            ),
            ("max_class_drift = 2.0", "model[0].gates.max_class_drift"),
            ("max_score_loss = -0.1", "model[0].gates.max_score_loss"),
            ("max_pairs = 10", "model[0].gates.max_pairs"),
            ("min_samples = 0", "model[0].gates.min_samples"),
        ];
        for (line, field) in cases {
            let text = EXAMPLE.replace(
                "[model.blue]",
                &format!("[model.gates]\n{line}\n[model.blue]"),
            );
            let err = Config::parse(&text)
                .and_then(|c| c.validate().map(|_| c))
                .expect_err(field);
            assert_eq!(err.field, field, "{line}: {err}");
        }
    }

    #[test]
    fn limits_out_of_range_are_refused_with_the_field_named() {
        let model = |line: &str| {
            EXAMPLE.replace(
                "[model.blue]",
                &format!("[model.limits]\n{line}\n[model.blue]"),
            )
        };
        let server = |line: &str| EXAMPLE.replace("[server]", &format!("[server]\n{line}"));
        let cases = [
            (model("max_in_flight = 0"), "model[0].limits.max_in_flight"),
            (model("max_queued = 2000000"), "model[0].limits.max_queued"),
            (model("timeout_ms = 0"), "model[0].limits.timeout_ms"),
            (server("body_timeout_ms = 0"), "server.body_timeout_ms"),
            (server("write_timeout_ms = 0"), "server.write_timeout_ms"),
            (server("header_timeout_ms = 0"), "server.header_timeout_ms"),
            (server("max_connections = 0"), "server.max_connections"),
            (
                server("metrics_listen = \"0.0.0.0\""),
                "server.metrics_listen",
            ),
            (server("feedback_token = \"\""), "server.feedback_token"),
            (
                server("request_log_max_rows = 0"),
                "server.request_log_max_rows",
            ),
            (
                server("request_log_max_age_ms = 999"),
                "server.request_log_max_age_ms",
            ),
            (
                server("request_log_max_age_ms = 18446744073709551615"),
                "server.request_log_max_age_ms",
            ),
            (
                server("capture_queue_bytes = 0"),
                "server.capture_queue_bytes",
            ),
        ];
        for (text, field) in cases {
            let err = Config::parse(&text)
                .and_then(|c| c.validate().map(|_| c))
                .expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        let fine = model("max_in_flight = 4\nmax_queued = 0\ntimeout_ms = 250");
        let config = Config::parse(&fine).unwrap();
        config.validate().unwrap();
        assert_eq!(config.models[0].limits.max_queued, Some(0));
    }

    #[test]
    fn unset_limits_follow_the_models_workers_and_set_ones_are_kept() {
        let bounds = |text: &str| {
            let config = Config::parse(text).unwrap();
            let model = &config.models[0];
            let limits = model.limits.for_model(model);
            (limits.running(), limits.queued())
        };
        // Both slots in process, the green with 4 workers: 32 places, 16 queued, as behind a
        // model server.
        assert_eq!(bounds(EXAMPLE), (32, 16));
        let set = EXAMPLE.replace(
            "[model.blue]",
            "[model.limits]\nmax_in_flight = 3\nmax_queued = 0\n[model.blue]",
        );
        assert_eq!(bounds(&set), (3, 0));
        // Many workers: two places each.
        let many = EXAMPLE.replace("workers = 4", "workers = 64");
        assert_eq!(bounds(&many), (128, 16));
        // A model with a model server in either slot: 32 and 16.
        let mixed = EXAMPLE.replace(
            "kind = \"onnx\"\n        path = \"/models/v2.onnx\"\n        workers = 4",
            "kind = \"upstream\"\n        urls = [\"http://127.0.0.1:9\"]",
        );
        assert_ne!(mixed, EXAMPLE);
        assert_eq!(bounds(&mixed), (32, 16));
        let server = "[[model]]\nname = \"m\"\n[model.blue]\nversion = \"v1\"\nkind = \"upstream\"\nurls = [\"http://127.0.0.1:9\"]\n";
        assert_eq!(bounds(server), (32, 16));
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
    fn model_names_are_path_safe() {
        for ok in ["digits", "fraud-v2", "a_b.c"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
