//! What people ask of a rollout in progress, besides the gates: a new version named in the
//! spec supersedes it, and an annotation naming the candidate's version approves it or rolls
//! it back. An annotation acts once and is then removed.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use teal_core::rollout::{Event, Phase, Rollout};

use super::objects::namespace;
use super::{Context, Error, PROMOTE, ROLLBACK};
use crate::kubernetes::crd::{Colour, ModelDeployment};

/// The spec names another version for the candidate's colour before the switch: this
/// rollout is aborted, and the next one takes the new version.
pub(super) fn superseded(md: &ModelDeployment, rollout: &Rollout) -> Option<Event> {
    let candidate: Colour = rollout.new_slot().into();
    let named = md.spec.colour(candidate).map(|c| c.version.as_str());
    if named == Some(rollout.version.as_str()) {
        return None;
    }
    let abort = Event::Abort {
        actor: format!(
            "spec.{} (now {})",
            candidate.name(),
            named.unwrap_or("removed")
        ),
    };
    rollout.accepts(&abort).is_ok().then_some(abort)
}

/// An approval or rollback written as an annotation naming the candidate's version, with
/// the annotation it came from.
pub(super) fn operator_command(
    md: &ModelDeployment,
    rollout: &Rollout,
) -> Option<(&'static str, Event)> {
    let annotations = md.annotations();
    let actor = "kubectl annotate".to_string();
    if annotations.get(ROLLBACK) == Some(&rollout.version) {
        let event = Event::Rollback {
            actor: actor.clone(),
        };
        if rollout.accepts(&event).is_ok() {
            return Some((ROLLBACK, event));
        }
        let abort = Event::Abort { actor };
        return rollout.accepts(&abort).is_ok().then_some((ROLLBACK, abort));
    }
    let manual_wait = match &rollout.phase {
        Phase::AwaitingApproval => true,
        Phase::Canary { step } => match &rollout.settings.strategy {
            teal_core::rollout::Strategy::Canary { steps } => {
                steps.get(*step).is_some_and(|s| s.pause_ms.is_none())
            }
            _ => false,
        },
        _ => false,
    };
    (manual_wait && annotations.get(PROMOTE) == Some(&rollout.version))
        .then_some((PROMOTE, Event::Promote { actor }))
}

/// Removes an annotation the operator acted on.
pub(super) async fn consume(
    md: &ModelDeployment,
    ctx: &Context,
    annotation: &str,
) -> Result<(), Error> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let patch = json!({ "metadata": { "annotations": { annotation: null } } });
    api.patch(
        &md.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
