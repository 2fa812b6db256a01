//! The reconcile loop. Each reconcile of a resource does at most one step: it finds the
//! event the rollout's phase waits for (a command, or what `observe` sees), steps the pure
//! state machine, writes the new state into the status guarded by the resource version,
//! and only then acts, so a failed action is retried from a state already written.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use teal_core::rollout::{Effect, Rollout};

use super::alias;
use super::commands::{consume, operator_command, superseded};
use super::events::{publish, record};
use super::objects::{apply_deployment, apply_services, uid};
use super::observe::observe;
use super::status::{set_condition, set_route, step_status, write_status};
use super::{Context, Error, FINALIZER, MANAGER};
use crate::kubernetes::crd::{Colour, ModelDeployment, ModelDeploymentStatus, SwitchMode};

/// One reconcile of one resource: the controller calls it for every change it watches and
/// every requeue. The finalizer makes a deletion pass through `cleanup` first.
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = md.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ModelDeployment> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, md, |event| async {
        match event {
            Finalized::Apply(md) => apply(&md, &ctx).await,
            Finalized::Cleanup(md) => cleanup(&md, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The resource is being deleted: forget its rollout and say so. Its Deployments and
/// Services go with it (they are owned by it).
async fn cleanup(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    if let Some(uid) = md.uid() {
        ctx.forget(&uid);
    }
    let phase = md.status.as_ref().map_or("", |s| s.phase.as_str());
    let note = match phase {
        "" | "stable" | "invalid" | "torn_down" | "rolled_back" | "failed" | "aborted" => {
            "deleted: its Deployments and Services are removed with it".to_string()
        }
        phase => format!(
            "deleted while its rollout was {phase}: the rollout stops; its Deployments and Services are removed with it"
        ),
    };
    publish(ctx, md, EventType::Normal, "Deleted", &note).await;
    Ok(Action::await_change())
}

/// The resource as it should be: invalid, new, between rollouts, or in one.
async fn apply(md: &ModelDeployment, ctx: &Context) -> Result<Action, Error> {
    let status = md.status.clone().unwrap_or_default();
    if let Some(problem) = md.spec.problem() {
        if status.phase != "invalid" || status.message.as_deref() != Some(problem.as_str()) {
            let mut next = status.clone();
            next.phase = "invalid".into();
            next.message = Some(problem.clone());
            next.observed_generation = md.metadata.generation;
            set_condition(
                &mut next,
                ctx,
                "Progressing",
                "False",
                "InvalidSpec",
                &problem,
            );
            write_status(md, ctx, &next).await?;
            publish(ctx, md, EventType::Warning, "InvalidSpec", &problem).await;
        }
        return Ok(Action::await_change());
    }
    let rollout: Option<Rollout> = status
        .rollout
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let reported = status.clone();
    let outcome = match rollout {
        Some(rollout) if !rollout.phase.is_terminal() => drive(md, ctx, status, rollout).await,
        _ => match status.active_colour {
            None => first_deploy(md, ctx, status).await,
            Some(active) => idle(md, ctx, status, active).await,
        },
    };
    match outcome {
        Err(Error::NotOurs(problem)) => not_ours(md, ctx, reported, &problem).await,
        other => other,
    }
}

/// An object the resource names belongs to someone else: nothing was written to it. The
/// status says which and what to do (once, with a Warning event), and the resource is looked
/// at again in a minute, since the object going away is not a change the operator watches.
/// The route is applied again on the next reconcile, so a switch that could not move an
/// active Service is not forgotten.
async fn not_ours(
    md: &ModelDeployment,
    ctx: &Context,
    status: ModelDeploymentStatus,
    problem: &str,
) -> Result<Action, Error> {
    ctx.remember(&uid(md), |m| m.resumed = false);
    if status.message.as_deref() != Some(problem) {
        let mut next = status;
        next.message = Some(problem.to_string());
        set_condition(
            &mut next,
            ctx,
            "Progressing",
            "False",
            "ObjectNotOwned",
            problem,
        );
        write_status(md, ctx, &next).await?;
        publish(ctx, md, EventType::Warning, "ObjectNotOwned", problem).await;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// A new resource: its first colour goes live as soon as it exists, with nothing to
/// compare it against.
async fn first_deploy(
    md: &ModelDeployment,
    ctx: &Context,
    status: ModelDeploymentStatus,
) -> Result<Action, Error> {
    let colour = if md.spec.blue.is_some() {
        Colour::Blue
    } else {
        Colour::Green
    };
    let version = md
        .spec
        .colour(colour)
        .map(|c| c.version.clone())
        .unwrap_or_default();
    let mut next = status;
    next.phase = "stable".into();
    next.message = None;
    next.observed_generation = md.metadata.generation;
    next.active_colour = Some(colour);
    next.active_version = Some(version.clone());
    next.versions.insert(colour.name().into(), version.clone());
    let route = teal_core::rollout::Route::all_on(colour.into());
    set_route(&mut next, route);
    // The objects first: applying them again is harmless, so a failed status write only
    // means they are applied again on the next reconcile, never that they are skipped.
    apply_deployment(md, ctx, colour, md.spec.replicas).await?;
    apply_services(md, ctx, colour, None, true).await?;
    write_status(md, ctx, &next).await?;
    publish(
        ctx,
        md,
        EventType::Normal,
        "Deployed",
        &format!("version {version} deployed as {}, live", colour.name()),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// No rollout in progress: start one when the idle colour names a new version.
async fn idle(
    md: &ModelDeployment,
    ctx: &Context,
    mut status: ModelDeploymentStatus,
    active: Colour,
) -> Result<Action, Error> {
    let live_version = status.active_version.clone().unwrap_or_default();
    let idle = active.other();
    // The watched alias names a version it did not name before, and not the live one: that
    // version goes into the idle colour and is rolled out. (Back on the live version, it is
    // only noted, so that naming the other again rolls it out again.)
    let noted = status.alias_version.clone();
    if let Some(named) = alias::read(md, ctx).await {
        if named.version == live_version {
            status.alias_version = Some(named.version);
        } else if noted.as_ref() != Some(&named.version)
            && let Some(live) = md.spec.colour(active)
        {
            let written = alias::write_idle_colour(md, ctx, active, live, &named).await?;
            let note = format!(
                "{} names {}: written into spec.{}, rolling it out",
                md.spec.watch.as_deref().unwrap_or_default(),
                named.version,
                idle.name()
            );
            publish(ctx, &written, EventType::Normal, "AliasMoved", &note).await;
            status.alias_version = Some(named.version.clone());
            return start(&written, ctx, status, active, live_version, named.version).await;
        }
    }
    let candidate = md.spec.colour(idle).map(|c| c.version.clone());
    let changed_live = md
        .spec
        .colour(active)
        .is_some_and(|c| c.version != live_version);
    let last = status.versions.get(idle.name()).cloned();
    let wanted = candidate.filter(|v| *v != live_version && Some(v) != last.as_ref());
    let Some(version) = wanted else {
        if !changed_live && md.spec.colour(active).is_some() {
            // The live colour as the spec says: a changed replica count, or a Deployment
            // someone edited or deleted, is put right.
            apply_deployment(md, ctx, active, md.spec.replicas).await?;
        }
        let message = changed_live.then(|| {
            format!(
                "spec.{} names a new version, but {} is live with {live_version}: a new version goes into the idle colour, spec.{}",
                active.name(),
                active.name(),
                idle.name()
            )
        });
        if status.message != message
            || status.alias_version != noted
            || status.observed_generation != md.metadata.generation
            || status.phase.is_empty()
            || status.phase == "invalid"
        {
            let mut next = status;
            if next.phase.is_empty() || next.phase == "invalid" {
                next.phase = "stable".into();
            }
            next.message = message.clone();
            next.observed_generation = md.metadata.generation;
            write_status(md, ctx, &next).await?;
            if let Some(message) = message {
                publish(ctx, md, EventType::Warning, "LiveColourChanged", &message).await;
            }
        }
        return Ok(Action::requeue(alias::requeue(
            md,
            Duration::from_secs(300),
        )));
    };
    start(md, ctx, status, active, live_version, version).await
}

/// Starts the rollout of `version` into the idle colour.
async fn start(
    md: &ModelDeployment,
    ctx: &Context,
    status: ModelDeploymentStatus,
    active: Colour,
    live_version: String,
    version: String,
) -> Result<Action, Error> {
    let idle = active.other();
    let now = (ctx.clock)();
    let id = md.metadata.generation.unwrap_or(1);
    let (rollout, effects) = Rollout::start(
        id,
        &md.spec.model,
        &version,
        active.into(),
        Some(live_version),
        md.spec.settings(),
        MANAGER,
        now,
    );
    let mut next = status;
    next.message = None;
    next.versions.insert(idle.name().into(), version.clone());
    next.observed_generation = md.metadata.generation;
    next.last_gate_report = None;
    step_status(&mut next, ctx, &rollout, &effects);
    write_status(md, ctx, &next).await?;
    ctx.remember(&uid(md), |m| m.resumed = true);
    perform(md, ctx, &rollout, &effects, false).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// A rollout in progress: find the event its phase waits for, step, persist, act.
async fn drive(
    md: &ModelDeployment,
    ctx: &Context,
    status: ModelDeploymentStatus,
    rollout: Rollout,
) -> Result<Action, Error> {
    let id = uid(md);
    if !ctx.memory(&id).resumed {
        // A restarted operator (or a new leader) first re-applies what the phase owes:
        // the route, always (every effect is idempotent).
        perform(md, ctx, &rollout, &[Effect::Route(rollout.route)], true).await?;
        ctx.remember(&id, |m| m.resumed = true);
    }
    let now = (ctx.clock)();
    let mut report = None;
    // A superseding version wins; an annotation is read (and later removed) only otherwise.
    let superseding = superseded(md, &rollout);
    let command = superseding
        .is_none()
        .then(|| operator_command(md, &rollout))
        .flatten();
    let observed = match (superseding, &command) {
        (Some(event), _) => Some(event),
        (None, Some((_, event))) => Some(event.clone()),
        (None, None) => match alias::moved_back(md, ctx, &status, &rollout).await {
            Some(event) => Some(event),
            None => observe(md, ctx, &rollout, now, &mut report).await?,
        },
    };
    let Some(event) = observed else {
        return Ok(Action::requeue(poll_interval(&rollout, now)));
    };
    let before = rollout.clone();
    let (next_rollout, effects) = rollout.step(event, now);
    if next_rollout == before && effects.is_empty() {
        return Ok(Action::requeue(poll_interval(&before, now)));
    }
    let mut next = status;
    if let Some(report) = report {
        next.last_gate_report = Some(report);
    }
    step_status(&mut next, ctx, &next_rollout, &effects);
    write_status(md, ctx, &next).await?;
    perform(md, ctx, &next_rollout, &effects, false).await?;
    if let Some((annotation, _)) = command {
        // Done: the annotation is removed, so it cannot act again on a later rollout.
        consume(md, ctx, annotation).await?;
    }
    // A transition is followed up at once; a check that only counted is followed by the next.
    Ok(Action::requeue(if effects.is_empty() {
        poll_interval(&next_rollout, now)
    } else {
        Duration::from_millis(200)
    }))
}

/// How long until the phase's timer or next check. Changes to the resource and to the
/// Deployments and Services it owns start a reconcile sooner: the controller watches them.
fn poll_interval(rollout: &Rollout, now: i64) -> Duration {
    let check = Duration::from_millis(rollout.settings.rules.check_interval_ms);
    match rollout.deadline_ms() {
        Some(at) if at > now => check.min(Duration::from_millis((at - now) as u64)),
        Some(_) => Duration::from_millis(200),
        None => Duration::from_secs(2).min(check),
    }
}

/// Sends the notifications a transition calls for, each in its own task: a slow receiver
/// never holds a reconcile.
fn notify(ctx: &Context, rollout: &Rollout, t: &teal_core::rollout::Transition) {
    let Some(event) = teal_core::rollout::HookEvent::of_phase(&t.to) else {
        return;
    };
    for hook in rollout.settings.hooks_on(event) {
        let (checks, hook) = (ctx.checks.clone(), hook.clone());
        let body = crate::control::checks::payload(rollout, event, &t.cause);
        let model = rollout.model.clone();
        tokio::spawn(async move {
            if let Err(reason) = checks.deliver(&hook, event, &body).await {
                tracing::warn!(model, hook = %hook.name, event = event.as_str(), %reason, "webhook notification not delivered");
            }
        });
    }
}

/// Performs a step's effects, after its state is written.
async fn perform(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
    effects: &[Effect],
    resume: bool,
) -> Result<(), Error> {
    for effect in effects {
        match effect {
            Effect::Record(t) => {
                record(ctx, md, t).await;
                notify(ctx, rollout, t);
            }
            Effect::Route(route) => {
                if md.spec.switch_mode == SwitchMode::Service {
                    let candidate =
                        (!rollout.phase.is_terminal()).then(|| rollout.new_slot().into());
                    apply_services(md, ctx, route.active.into(), candidate, resume).await?;
                }
            }
            // The phases that follow do this work when they are reconciled.
            Effect::Deploy | Effect::WarmUp | Effect::RunGates => {}
            Effect::TearDownOld | Effect::RemoveCandidate => {}
        }
    }
    Ok(())
}
