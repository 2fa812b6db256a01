//! One slot of a model (`[model.blue]`, `[model.green]`): the version it holds and how
//! that version runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{RemoteConfig, valid_name};

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
    /// Whether the slot runs a command on teal's host (`kind = "process"`): such slots are
    /// the operator's to name, in the config file, unless `server.allow_commands` is on.
    pub fn runs_command(&self) -> bool {
        matches!(self.backend, BackendConfig::Process(_))
    }

    /// Checks one slot; the error names the field (relative to the slot) and the reason. The
    /// gateway checks a slot sent to deploy through this too, before it loads anything.
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
            BackendConfig::Onnx {
                intra_op_threads, ..
            } if *intra_op_threads == 0 || *intra_op_threads > 64 => {
                err("intra_op_threads", "must be between 1 and 64")
            }
            BackendConfig::Onnx {
                inter_op_threads, ..
            } if *inter_op_threads == 0 || *inter_op_threads > 64 => {
                err("inter_op_threads", "must be between 1 and 64")
            }
            BackendConfig::Onnx {
                path,
                source,
                sha256,
                ..
            } => {
                match (path.as_os_str().is_empty(), source) {
                    (true, None) => return err("path", "an onnx slot needs a path (or a source)"),
                    (false, Some(_)) => {
                        return err("source", "give either a path or a source, not both");
                    }
                    (_, Some(source)) => {
                        crate::source::Source::parse(source)
                            .map_err(|e| ("source".to_string(), e))?;
                    }
                    (false, None) => {}
                }
                if let Some(pin) = sha256 {
                    if source.is_none() {
                        return err("sha256", "pins the file of a source: set source too");
                    }
                    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return err("sha256", "must be 64 hexadecimal digits");
                    }
                }
                Ok(())
            }
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
                if remote.source.is_some() {
                    return err(
                        "source",
                        "an upstream slot fronts running servers; a source is for an onnx slot (its file) or a process slot (its command serves it)",
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
                let names_source = remote
                    .command
                    .iter()
                    .chain(remote.env.values())
                    .any(|t| t.contains("{source}"));
                match &remote.source {
                    Some(source) => {
                        match crate::source::Source::parse(source)
                            .map_err(|e| ("source".to_string(), e))?
                        {
                            crate::source::Source::Registry { .. } => {}
                            _ => {
                                return err(
                                    "source",
                                    "a process slot's source is a registry version (models:/NAME@ALIAS or models:/NAME/VERSION) that its command serves as {source}; a file from s3:// or a URL goes to an onnx slot",
                                );
                            }
                        }
                        if !names_source {
                            return err(
                                "command",
                                "names no {source}: put it where the server takes the model, like MLSERVER_MODEL_URI = \"{source}\" in env",
                            );
                        }
                    }
                    None if names_source => {
                        return err(
                            "command",
                            "uses {source}, but the slot has no source: set source = \"models:/NAME/VERSION\"",
                        );
                    }
                    None => {}
                }
                remote.validate_common()
            }
        }
    }
}

/// How a version runs. The `kind` key picks the variant, so one slot table says everything
/// about the version and its siblings stay independent.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// In-process on ONNX Runtime.
    Onnx {
        /// The `.onnx` file (or `source`).
        #[serde(default)]
        path: PathBuf,
        /// Where to fetch the `.onnx` file from instead of `path`: a version in an MLflow
        /// model registry (`models:/NAME@ALIAS` or `models:/NAME/VERSION`, its ONNX flavour)
        /// an object in an S3-compatible store (`s3://BUCKET/KEY`, credentials from the usual
        /// `AWS_*` variables) or a URL (`https://...`; `http://` too). Downloads are checked and
        /// kept by digest in the state folder.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// The SHA-256 (hex) the file from `source` must have: anything else is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// Reference outputs (`reference.json`, as `models/make_models.py` writes them): the
        /// version must reproduce them before it may take traffic.
        #[serde(default)]
        reference: Option<PathBuf>,
        /// Inferences that may run at once; each has its own session and thread (Triton's
        /// instances).
        #[serde(default = "default_workers")]
        workers: usize,
        /// Threads one inference may use inside ONNX Runtime to split an operator's work
        /// (intra-op). 1 (the default) suits small models and small machines, where the
        /// workers already keep the cores busy; more helps a heavy model on a large machine.
        #[serde(default = "one_thread")]
        intra_op_threads: usize,
        /// Threads that may run independent branches of the graph at once (inter-op).
        #[serde(default = "one_thread")]
        inter_op_threads: usize,
        /// How far ONNX Runtime rewrites the graph before running it: "disable", "basic",
        /// "extended" or "all" (the default).
        #[serde(default)]
        optimization: Optimization,
    },
    /// Replicas of a model server that already runs (MLServer, Triton, a Flask app, ...).
    Upstream(RemoteConfig),
    /// A model server teal starts, supervises and stops itself, then fronts like an upstream.
    Process(RemoteConfig),
}

fn default_workers() -> usize {
    2
}

fn one_thread() -> usize {
    1
}

/// ONNX Runtime's graph optimisation levels.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Optimization {
    /// Run the graph as exported.
    Disable,
    /// Constant folding and redundant nodes removed.
    Basic,
    /// Also node fusions.
    Extended,
    /// Also layout changes: the fastest, and the level teal always used.
    #[default]
    All,
}

impl<'de> Deserialize<'de> for Optimization {
    /// Read by hand so that a wrong level names the field: the slot's table is read through
    /// its `kind` tag, which loses the field's name and line in serde's own message.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let level = String::deserialize(deserializer)?;
        Ok(match level.as_str() {
            "disable" => Optimization::Disable,
            "basic" => Optimization::Basic,
            "extended" => Optimization::Extended,
            "all" => Optimization::All,
            other => {
                return Err(serde::de::Error::custom(format!(
                    "optimization = '{other}' is not a graph optimisation level: use disable, basic, extended or all"
                )));
            }
        })
    }
}
