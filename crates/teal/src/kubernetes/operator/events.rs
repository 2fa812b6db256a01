//! Kubernetes Events: what `kubectl describe` shows people about a resource's rollouts. An
//! Event that cannot be published is logged and never fails a reconcile: the status, not
//! the Events, is the record a restarted operator resumes from.

use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Resource, ResourceExt};
use teal_core::rollout::Transition;

use super::Context;
use crate::kubernetes::crd::ModelDeployment;

/// Publishes one Event about the resource.
pub(super) async fn publish(
    ctx: &Context,
    md: &ModelDeployment,
    kind: EventType,
    reason: &str,
    note: &str,
) {
    let event = KubeEvent {
        type_: kind,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    // A recorder of its own for each Event: a shared one folds Events with the same reason
    // into one series and keeps the first's note, and every transition must say its own.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, &md.object_ref(&())).await {
        tracing::warn!(resource = %md.name_any(), reason, error = %e, "could not publish a Kubernetes event");
    }
}

/// Publishes a rollout's transition, as a warning when it ends the rollout badly.
pub(super) async fn record(ctx: &Context, md: &ModelDeployment, t: &Transition) {
    let kind = match t.to.as_str() {
        "rolled_back" | "failed" | "aborted" => EventType::Warning,
        _ => EventType::Normal,
    };
    let note = format!("{} -> {}: {}", t.from, t.to, t.cause);
    publish(ctx, md, kind, &reason_name(&t.to), &note).await;
}

/// `rolled_back` → `RolledBack`, the form Kubernetes Events use for reasons.
fn reason_name(phase: &str) -> String {
    phase
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_reasons_are_pascal_case() {
        assert_eq!(reason_name("rolled_back"), "RolledBack");
        assert_eq!(reason_name("awaiting_approval"), "AwaitingApproval");
        assert_eq!(reason_name("canary"), "Canary");
    }
}
