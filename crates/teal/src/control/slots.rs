//! Bringing slots up and down: loading a version into a slot at start-up, deploying a new
//! version into the standby slot while the live one serves, and tearing a standby slot down
//! after the requests in flight on it have finished.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use teal_core::config::{BackendConfig, BatchingConfig, CacheConfig, SlotConfig};
use teal_core::routing::Color;

use crate::backends::cache::PredictionCache;
use crate::backends::fetch::Fetcher;
use crate::backends::{Backend, LoadError, OnnxModel, OnnxRuntime, ProcessModel, UpstreamModel};
use crate::routing::{ChangeError, ModelRoutes, RouteError, Routes, Slot};
use crate::state::store::StoreError;

/// Loads one version into a slot of `color`. Nothing is published: the caller places it.
pub async fn load(
    model: &str,
    color: Color,
    slot: &SlotConfig,
    onnxruntime: Option<&Path>,
    cache: &CacheConfig,
    batching: Option<&BatchingConfig>,
    fetcher: &Fetcher,
) -> Result<Slot, LoadError> {
    let mut provenance = None;
    let backend = match &slot.backend {
        BackendConfig::Onnx {
            path,
            source,
            sha256,
            reference,
            workers,
            intra_op_threads,
            inter_op_threads,
            optimization,
        } => {
            let library = onnxruntime.map(Path::to_path_buf);
            let path = match source {
                Some(source) => {
                    let (file, fetched) = fetcher
                        .fetch(source, sha256.as_deref())
                        .await
                        .map_err(LoadError::Source)?;
                    tracing::info!(model, version = %slot.version, source, resolved = %fetched.resolved, sha256 = %fetched.sha256, "model file fetched");
                    provenance = Some(fetched);
                    file
                }
                None => path.clone(),
            };
            let execution = crate::backends::onnx::Execution {
                workers: *workers,
                intra_op_threads: *intra_op_threads,
                inter_op_threads: *inter_op_threads,
                optimization: *optimization,
            };
            let batching = batching.map(crate::backends::onnx::Batching::from_config);
            let rows = reference.clone();
            let onnx = tokio::task::spawn_blocking(move || {
                let runtime = OnnxRuntime::load(library.as_deref())?;
                OnnxModel::load(&runtime, &path, execution, batching, rows.as_deref())
            })
            .await
            .map_err(|e| LoadError::Runtime(format!("loading crashed: {e}")))??;
            if let Some(reference) = reference {
                let rows = onnx.check_reference(reference).await?;
                tracing::info!(model, slot = %color, version = %slot.version, rows, "reference outputs reproduced");
            }
            Backend::Onnx(onnx)
        }
        BackendConfig::Upstream(remote) => {
            let wait = Duration::from_millis(remote.ready_timeout_ms);
            Backend::Upstream(UpstreamModel::connect(model, &remote.urls, remote, wait).await?)
        }
        BackendConfig::Process(remote) => {
            // A registry version the command serves: the alias read now, and the command
            // given the version's number, so it serves what the slot records.
            let serves = match &remote.source {
                Some(source) => {
                    let found = fetcher
                        .registry_provenance(source)
                        .await
                        .map_err(LoadError::Source)?;
                    tracing::info!(model, version = %slot.version, source, resolved = %found.resolved, "registry version resolved for the command");
                    let serves = crate::backends::process::Serves {
                        source: found.resolved.clone(),
                        tracking_uri: fetcher.tracking_uri().map(str::to_string),
                    };
                    provenance = Some(found);
                    Some(serves)
                }
                None => None,
            };
            Backend::Process(ProcessModel::start(model, &slot.version, remote, serves).await?)
        }
    };
    tracing::info!(model, slot = %color, version = %slot.version, kind = backend.kind(), "slot loaded");
    let cache = cache
        .enabled
        .then(|| PredictionCache::new(&slot.version, cache));
    // A registry alias is kept as the version it resolved to, with the file's digest: the
    // state file then remembers `models:/NAME/7`, not `@champion`, so a restart loads the same
    // file, and an alias that moved meanwhile reaches traffic only through a rollout (the
    // watch's), never by a restart. A URL or an object is kept with its digest.
    let mut kept = slot.clone();
    match (&provenance, &mut kept.backend) {
        (Some(fetched), BackendConfig::Onnx { source, sha256, .. }) => {
            if fetched.registry_version.is_some() {
                *source = Some(fetched.resolved.clone());
            }
            *sha256 = Some(fetched.sha256.clone());
        }
        (Some(found), BackendConfig::Process(remote)) => {
            remote.source = Some(found.resolved.clone());
        }
        _ => {}
    }
    let mut loaded = Slot::new(color, kept, backend, cache);
    loaded.provenance = provenance;
    Ok(loaded)
}

/// Why a slot that runs a command is refused, and how to allow it: one sentence, used by the
/// API's 403, the rollout's refusal and the start-up log alike.
pub const COMMANDS_ARE_THE_OPERATORS: &str = "runs a command (kind = \"process\"), and commands come only from teal's config file: to deploy them through the API, set allow_commands = true in its [server] table";

/// A slot or a rollout the state file remembers that teal did not start again, and why:
/// logged at start-up and shown in `/api/v1/status` until the next start.
#[derive(Clone, Debug, Serialize)]
pub struct NotStarted {
    pub model: String,
    pub version: String,
    /// The slot it held, for a remembered slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<Color>,
    /// The rollout's id, for an unfinished rollout's candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<i64>,
    pub reason: String,
}

/// Why a deploy or a teardown was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A slot that runs a command, from the API, while `server.allow_commands` is off.
    #[error("version {0} {COMMANDS_ARE_THE_OPERATORS}")]
    CommandsNotAllowed(String),
    #[error("a deploy or teardown of model '{0}' is already in progress: wait for it to finish")]
    Busy(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "version {version} could not be loaded into the {color} slot; the live slot keeps serving: {source}"
    )]
    Load {
        version: String,
        color: Color,
        source: LoadError,
    },
    /// The change could not be recorded in the state file, so it was not made.
    #[error("the change was not made: {0}")]
    Unrecorded(StoreError),
}

/// The record of a hand-made slot change, written before the change is published (see
/// `Routes::place_recorded`): it is given the model's routing as it will be published and
/// the change's audit detail, and blocks on the state file.
pub type Record = Box<dyn FnOnce(&ModelRoutes, serde_json::Value) -> Result<(), StoreError> + Send>;

/// What a deploy did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DeployOutcome {
    pub model: String,
    pub version: String,
    pub slot: Color,
    pub kind: String,
    pub replaced: Option<String>,
    pub load_ms: u64,
    /// Where the model file came from, when the slot names a source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::backends::fetch::Provenance>,
}

/// What a teardown did.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TeardownOutcome {
    pub model: String,
    pub version: String,
    pub slot: Color,
    /// Requests that were in flight on the slot when it was taken out of routing.
    pub in_flight_at_start: usize,
    /// Requests still in flight when the drain window closed (0 when all finished).
    pub abandoned: usize,
    pub drain_ms: u64,
}

/// Deploys and teardowns, one at a time per model.
pub struct SlotManager {
    pub routes: Arc<Routes>,
    onnxruntime: Option<std::path::PathBuf>,
    fetcher: Arc<Fetcher>,
    drain: Duration,
    busy: Mutex<HashSet<String>>,
    /// `server.allow_commands`: whether a deploy may start a slot that runs a command.
    allow_commands: bool,
}

/// Marks a model busy until dropped.
struct Busy<'a> {
    manager: &'a SlotManager,
    model: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.manager
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.model);
    }
}

impl SlotManager {
    pub fn new(
        routes: Arc<Routes>,
        onnxruntime: Option<std::path::PathBuf>,
        fetcher: Arc<Fetcher>,
        drain: Duration,
    ) -> SlotManager {
        SlotManager {
            routes,
            onnxruntime,
            fetcher,
            drain,
            busy: Mutex::new(HashSet::new()),
            allow_commands: false,
        }
    }

    /// Lets deploys start slots that run a command (`server.allow_commands`); off by default.
    pub fn allowing_commands(mut self, allow: bool) -> SlotManager {
        self.allow_commands = allow;
        self
    }

    /// Refuses a slot that runs a command unless commands are allowed. Every deploy passes
    /// here, whether the API asked for it or a rollout (perhaps resumed after a restart) did.
    pub fn permits(&self, config: &SlotConfig) -> Result<(), SlotError> {
        if config.runs_command() && !self.allow_commands {
            return Err(SlotError::CommandsNotAllowed(config.version.clone()));
        }
        Ok(())
    }

    fn claim(&self, model: &str) -> Result<Busy<'_>, SlotError> {
        if !self
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.to_string())
        {
            return Err(SlotError::Busy(model.to_string()));
        }
        Ok(Busy {
            manager: self,
            model: model.to_string(),
        })
    }

    /// Loads `config` into the standby slot of `model` while the live slot keeps serving.
    /// The standby's previous version, if any, is drained and stopped once the new one is in.
    /// With `record`, the new slot is published only once the record is written; when it
    /// cannot be, the loaded version is stopped and nothing changes.
    pub async fn deploy(
        &self,
        model: &str,
        config: &SlotConfig,
        record: Option<Record>,
    ) -> Result<DeployOutcome, SlotError> {
        let _busy = self.claim(model)?;
        config
            .validate()
            .map_err(|(field, reason)| SlotError::Invalid(format!("{field}: {reason}")))?;
        self.permits(config)?;
        let routes = self
            .routes
            .load()
            .models
            .get(model)
            .cloned()
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        let color = routes.table.candidate();
        if let Some(live) = routes.live()
            && live.version == config.version
        {
            return Err(SlotError::Invalid(format!(
                "version {} is already live in the {} slot of '{model}': give the new version its own name",
                config.version, live.color
            )));
        }
        let started = Instant::now();
        tracing::info!(model, version = %config.version, slot = %color, "deploying");
        let slot = load(
            model,
            color,
            config,
            self.onnxruntime.as_deref(),
            &routes.cache,
            routes.batching.as_ref(),
            &self.fetcher,
        )
        .await
        .map_err(|source| SlotError::Load {
            version: config.version.clone(),
            color,
            source,
        })?;
        let mut outcome = DeployOutcome {
            model: model.to_string(),
            version: config.version.clone(),
            slot: color,
            kind: slot.backend.kind().to_string(),
            replaced: None,
            load_ms: started.elapsed().as_millis() as u64,
            provenance: slot.provenance.clone(),
        };
        let slot = Arc::new(slot);
        let replaced = match record {
            None => self.routes.place(model, slot)?,
            Some(record) => {
                let (routes, name, placed) = (self.routes.clone(), model.to_string(), slot.clone());
                let mut detail = outcome.clone();
                let placing = tokio::task::spawn_blocking(move || {
                    routes.place_recorded(&name, placed, |next, replaced| {
                        detail.replaced = replaced.as_ref().map(|s| s.version.clone());
                        record(next, serde_json::to_value(&detail).unwrap_or_default())
                    })
                })
                .await;
                match placing {
                    Ok(Ok(replaced)) => replaced,
                    refused => {
                        // Never published: the loaded version is stopped, nothing changed.
                        slot.backend.stop().await;
                        return Err(match refused {
                            Ok(Err(ChangeError::Route(e))) => SlotError::Route(e),
                            Ok(Err(ChangeError::Record(e))) => SlotError::Unrecorded(e),
                            Err(e) => SlotError::Invalid(format!("the deploy task failed: {e}")),
                            Ok(Ok(_)) => unreachable!("handled above"),
                        });
                    }
                }
            }
        };
        outcome.replaced = replaced.as_ref().map(|s| s.version.clone());
        if let Some(old) = replaced {
            self.drain_and_stop(model, old).await;
        }
        if outcome.provenance.is_some() {
            let in_use = self
                .routes
                .load()
                .models
                .values()
                .flat_map(|m| {
                    m.slots()
                        .filter_map(|s| s.provenance.as_ref().map(|p| p.sha256.clone()))
                        .collect::<Vec<_>>()
                })
                .collect();
            self.fetcher.prune(in_use).await;
        }
        tracing::info!(model, version = %config.version, slot = %color, "deployed");
        Ok(outcome)
    }

    /// Takes the standby slot `color` out of routing, waits for its requests in flight
    /// (bounded by the drain window), then stops its backend. With `record`, the slot leaves
    /// routing only once the record (detail: the model, the version and the slot) is written.
    pub async fn teardown(
        &self,
        model: &str,
        color: Option<Color>,
        record: Option<Record>,
    ) -> Result<TeardownOutcome, SlotError> {
        let _busy = self.claim(model)?;
        let color = match color {
            Some(c) => c,
            None => {
                let snapshot = self.routes.load();
                let routes = snapshot
                    .models
                    .get(model)
                    .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
                routes.table.candidate()
            }
        };
        let slot = match record {
            None => self.routes.remove(model, color)?,
            Some(record) => {
                let (routes, name) = (self.routes.clone(), model.to_string());
                let removing = tokio::task::spawn_blocking(move || {
                    routes.remove_recorded(&name, color, |next, removed| {
                        let detail = serde_json::json!({
                            "model": name,
                            "version": removed.version,
                            "slot": removed.color,
                        });
                        record(next, detail)
                    })
                })
                .await;
                match removing {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(ChangeError::Route(e))) => return Err(SlotError::Route(e)),
                    Ok(Err(ChangeError::Record(e))) => return Err(SlotError::Unrecorded(e)),
                    Err(e) => {
                        return Err(SlotError::Invalid(format!("the teardown task failed: {e}")));
                    }
                }
            }
        };
        Ok(self.drain_and_stop(model, slot).await)
    }

    async fn drain_and_stop(&self, model: &str, slot: Arc<Slot>) -> TeardownOutcome {
        let started = Instant::now();
        let in_flight_at_start = slot.in_flight();
        tracing::info!(model, version = %slot.version, slot = %slot.color, in_flight = in_flight_at_start, "draining");
        while slot.in_flight() > 0 && started.elapsed() < self.drain {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let abandoned = slot.in_flight();
        if abandoned > 0 {
            tracing::warn!(model, version = %slot.version, abandoned, "drain window closed with requests still in flight");
        }
        slot.backend.stop().await;
        tracing::info!(model, version = %slot.version, slot = %slot.color, "torn down");
        TeardownOutcome {
            model: model.to_string(),
            version: slot.version.clone(),
            slot: slot.color,
            in_flight_at_start,
            abandoned,
            drain_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Stops every slot's backend (at shutdown, after the listeners have drained).
    pub async fn stop_all(&self) {
        let snapshot = self.routes.load();
        for routes in snapshot.models.values() {
            for slot in routes.slots.iter().flatten() {
                slot.backend.stop().await;
            }
        }
    }
}
