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

/// How a version runs. The `kind` key picks the variant, so one slot table says everything
/// about the version and its siblings stay independent.
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

fn default_workers() -> usize {
    2
}
