//! Following a registry alias (`spec.watch`), as `[model.source] watch` does on one machine:
//! when the alias moves to another version than the live one, that version is written into
//! the idle colour (the live colour's pods, `source: models:/NAME/N`) and rolled out; when it
//! moves back to the version being replaced during that rollout, the rollout is aborted
//! (before the switch) or rolled back (after it). A version whose rollout failed is not tried
//! again until the alias names another. The rollout's gates and rules still decide whether a
//! version stays.
//!
//! The operator reads the alias itself, every `watchIntervalSeconds`, from `spec.mlflowUri`
//! (with `MLFLOW_TRACKING_TOKEN` from its own environment); the pods fetch the file by its
//! version number, so every pod of a colour runs the same file.

use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, TestOperation};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;
use teal_core::rollout::{Event, Rollout};

use super::events::publish;
use super::objects::{namespace, uid};
use super::{Context, Error};
use crate::backends::fetch::Fetcher;
use crate::control::watch::version_name;
use crate::kubernetes::crd::{Colour, ColourSpec, ModelDeployment, ModelDeploymentStatus};

/// What the alias names now.
pub(super) struct Named {
    /// The registered model (`fraud`).
    registered: String,
    /// The version number (`8`).
    number: String,
    /// The version's name in teal (`fraud-8`).
    pub version: String,
}

/// Reads the watched alias when its interval has passed since the last reading. Not
/// watched, not due, or unreadable: `None` (an unreadable alias is said once in a Warning
/// Event, until the reason changes; the live version keeps serving).
pub(super) async fn read(md: &ModelDeployment, ctx: &Context) -> Option<Named> {
    let (registered, alias) = md.spec.watched()?;
    let mlflow = md.spec.mlflow_uri.as_deref()?;
    let id = uid(md);
    let now = (ctx.clock)();
    if ctx.memory(&id).alias_next_ms > now {
        return None;
    }
    let interval = md.spec.watch_interval_seconds.saturating_mul(1000) as i64;
    ctx.remember(&id, |m| m.alias_next_ms = now.saturating_add(interval));
    let watch = format!("models:/{registered}@{alias}");
    match Fetcher::resolver(mlflow).resolve(&watch).await {
        Ok(number) => {
            if ctx.memory(&id).alias_error.is_some() {
                ctx.remember(&id, |m| m.alias_error = None);
                tracing::info!(resource = %md.name_any(), %watch, "the registry answers again");
            }
            Some(Named {
                version: version_name(&registered, &number),
                registered,
                number,
            })
        }
        Err(reason) => {
            if ctx.memory(&id).alias_error.as_ref() != Some(&reason) {
                ctx.remember(&id, |m| m.alias_error = Some(reason.clone()));
                let live = md
                    .status
                    .as_ref()
                    .and_then(|s| s.active_version.clone())
                    .unwrap_or_default();
                let note = format!("{watch} cannot be read: {reason}; {live} keeps serving");
                publish(ctx, md, EventType::Warning, "AliasUnreadable", &note).await;
            }
            None
        }
    }
}

/// How soon an idle resource is looked at again: its watch interval, when it watches an
/// alias (no change to the resource announces that the alias moved), else `otherwise`.
pub(super) fn requeue(md: &ModelDeployment, otherwise: Duration) -> Duration {
    match md.spec.watched() {
        Some(_) => otherwise.min(Duration::from_secs(md.spec.watch_interval_seconds.max(1))),
        None => otherwise,
    }
}

/// The alias names `named`, another version than the live one and than it last named: the
/// idle colour becomes that version (the live colour's pods with the registry version's
/// file), written whole and guarded by the resource version read. Returns the resource as
/// written, for the rollout to start from.
pub(super) async fn write_idle_colour(
    md: &ModelDeployment,
    ctx: &Context,
    active: Colour,
    live: &ColourSpec,
    named: &Named,
) -> Result<ModelDeployment, Error> {
    let mut colour = live.clone();
    colour.version = named.version.clone();
    colour.source = Some(format!("models:/{}/{}", named.registered, named.number));
    colour.sha256 = None;
    let colour = serde_json::to_value(&colour).map_err(|e| Error::Encode(e.to_string()))?;
    let patch = json_patch::Patch(vec![
        PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["metadata", "resourceVersion"]),
            value: json!(md.resource_version()),
        }),
        PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["spec", active.other().name()]),
            value: colour,
        }),
    ]);
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    match api
        .patch(
            &md.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(written) => Ok(written),
        // The test failed (the resource changed since it was read): read it again.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => Err(Error::Conflict(
            format!("ModelDeployment {}", md.name_any()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// During a rollout the watch asked for: the alias moved back to the version it replaces.
/// The event that stops it, if so.
pub(super) async fn moved_back(
    md: &ModelDeployment,
    ctx: &Context,
    status: &ModelDeploymentStatus,
    rollout: &Rollout,
) -> Option<Event> {
    // Only a rollout the alias asked for: one someone started by naming a version is theirs.
    if status.alias_version.as_ref() != Some(&rollout.version) {
        return None;
    }
    let named = read(md, ctx).await?;
    if rollout.old_version.as_ref() != Some(&named.version) {
        return None;
    }
    let actor = format!("watch {}", md.spec.watch.as_deref().unwrap_or_default());
    let event = if rollout.phase.after_switch() {
        Event::Rollback { actor }
    } else {
        Event::Abort { actor }
    };
    rollout.accepts(&event).is_ok().then_some(event)
}
