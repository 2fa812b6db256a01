//! The resource's status: the rollout's whole state (so any replica resumes it), the route
//! gateways follow, the last transition and gate report, and the `Progressing` condition.
//! A step is folded into it as a pure change; the write carries the resource version that
//! was read, so two writers never both win.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use teal_core::rollout::{Effect, Phase, Rollout};
use teal_core::routing::WHOLE;

use super::objects::namespace;
use super::{Context, Error};
use crate::kubernetes::crd::{
    Colour, Condition, ModelDeployment, ModelDeploymentStatus, RouteStatus, TransitionStatus,
};

/// The status fields that may be absent (the optional ones).
const CLEARABLE: [&str; 10] = [
    "observedGeneration",
    "activeColour",
    "activeVersion",
    "candidateColour",
    "candidateVersion",
    "route",
    "lastTransition",
    "lastGateReport",
    "message",
    "rollout",
];

/// Writes the status, guarded by the resource version that was read: a 409 means the
/// resource changed since, and the reconcile starts over.
pub(super) async fn write_status(
    md: &ModelDeployment,
    ctx: &Context,
    status: &ModelDeploymentStatus,
) -> Result<(), Error> {
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    // A merge patch leaves out what it does not name: a field the status no longer has is
    // written as null, so it is removed rather than kept.
    let mut written = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(fields) = written.as_object_mut() {
        for key in CLEARABLE {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = json!({
        "metadata": { "resourceVersion": md.resource_version() },
        "status": written,
    });
    match api
        .patch_status(
            &md.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Conflict(format!(
            "ModelDeployment {}",
            md.name_any()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A time as Kubernetes writes it in a status.
fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Folds a step into the status: phase, route, candidate, transition, outcome.
pub(super) fn step_status(
    status: &mut ModelDeploymentStatus,
    ctx: &Context,
    rollout: &Rollout,
    effects: &[Effect],
) {
    let now = (ctx.clock)();
    status.phase = rollout.phase.name().into();
    status.rollout = serde_json::to_value(rollout).ok();
    status.candidate_colour = Some(rollout.new_slot().into());
    status.candidate_version = Some(rollout.version.clone());
    set_route(status, rollout.route);
    let active: Colour = rollout.route.active.into();
    status.active_colour = Some(active);
    status.active_version = if active == Colour::from(rollout.old) {
        rollout.old_version.clone()
    } else {
        Some(rollout.version.clone())
    };
    for effect in effects {
        if let Effect::Record(t) = effect {
            status.last_transition = Some(TransitionStatus {
                from: t.from.clone(),
                to: t.to.clone(),
                cause: t.cause.clone(),
                actor: t.actor.clone(),
                time: rfc3339(now),
            });
        }
    }
    let phase = &rollout.phase;
    let (progressing, reason) = match phase {
        Phase::TornDown => ("False", "RolloutComplete"),
        Phase::RolledBack => ("False", "RolledBack"),
        Phase::Failed => ("False", "GatesFailed"),
        Phase::Aborted => ("False", "Aborted"),
        _ => ("True", "RolloutInProgress"),
    };
    let message = rollout
        .outcome
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| format!("{} of version {}", phase.name(), rollout.version));
    set_condition(status, ctx, "Progressing", progressing, reason, &message);
    if phase.is_terminal() {
        status.candidate_colour = None;
        status.candidate_version = None;
    }
}

/// Writes a route as gateways read it: the live colour and the shares in percent.
pub(super) fn set_route(status: &mut ModelDeploymentStatus, route: teal_core::rollout::Route) {
    let percent = |bp: u32| f64::from(bp) * 100.0 / f64::from(WHOLE);
    let active: Colour = route.active.into();
    status.route = Some(RouteStatus {
        active,
        candidate_percent: percent(route.weight),
        shadow_percent: percent(route.shadow),
    });
    status.weights = BTreeMap::from([
        (active.name().to_string(), 100.0 - percent(route.weight)),
        (active.other().name().to_string(), percent(route.weight)),
    ]);
}

/// Sets a condition, moving its transition time only when its value changes.
pub(super) fn set_condition(
    status: &mut ModelDeploymentStatus,
    ctx: &Context,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let now = rfc3339((ctx.clock)());
    match status.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = now;
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => status.conditions.push(Condition {
            type_: type_.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::crd::GateReportSummary;

    /// Every optional status field is cleared by a status write when it is gone: a merge
    /// patch would otherwise keep the old value (a candidate after its rollout ended).
    #[test]
    fn every_optional_status_field_can_be_cleared() {
        let full = ModelDeploymentStatus {
            observed_generation: Some(1),
            active_colour: Some(Colour::Blue),
            active_version: Some("v1".into()),
            candidate_colour: Some(Colour::Green),
            candidate_version: Some("v2".into()),
            route: Some(RouteStatus {
                active: Colour::Blue,
                candidate_percent: 0.0,
                shadow_percent: 0.0,
            }),
            last_transition: Some(TransitionStatus {
                from: "a".into(),
                to: "b".into(),
                cause: "c".into(),
                actor: "d".into(),
                time: "e".into(),
            }),
            last_gate_report: Some(GateReportSummary {
                verdict: "pass".into(),
                candidate_version: "v2".into(),
                samples: 1,
                gates: Vec::new(),
            }),
            message: Some("m".into()),
            rollout: Some(json!({})),
            ..ModelDeploymentStatus::default()
        };
        let full = serde_json::to_value(full).unwrap();
        let empty = serde_json::to_value(ModelDeploymentStatus::default()).unwrap();
        let optional: Vec<&String> = full
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !empty.as_object().unwrap().contains_key(*k))
            .collect();
        let mut clearable: Vec<&str> = CLEARABLE.to_vec();
        clearable.sort();
        assert_eq!(optional, clearable);
    }
}
