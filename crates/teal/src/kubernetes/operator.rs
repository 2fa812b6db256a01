//! `teal operator`: reconciles `ModelDeployment` resources with the same rollout state
//! machine and gates `teal serve` uses.
//!
//! Each reconcile does at most one step: it looks at the world for the phase the rollout
//! stands in (is the candidate's Deployment ready? what do the gates say? is a check due?),
//! steps the pure state machine with that event, writes the new state into the resource's
//! status (with the resource version it read, so a stale writer gets a 409 and retries), and
//! only then acts: Kubernetes Events for the transition, the Service selector in `service`
//! mode, scaling a colour to zero. Gateways in `gateway` mode follow `status.route`, which
//! the status write itself publishes. A restarted operator resumes from the status.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use teal_core::config::{BackendConfig, RemoteConfig, SlotConfig};
use teal_core::gates::{self, Verdict};
use teal_core::rollout::{Check, Effect, Event, Phase, Rollout, Window};
use teal_core::routing::WHOLE;

use super::crd::{
    Colour, Condition, GateLine, GateReportSummary, ModelDeployment, ModelDeploymentStatus,
    RouteStatus, SwitchMode, TransitionStatus,
};
use crate::backends::{Backend, UpstreamModel};
use crate::control::validation::{self, Row};
use crate::routing::Slot;

/// The finalizer the operator puts on each resource it manages.
pub const FINALIZER: &str = "teal.dev/cleanup";
/// Who writes the objects (server-side apply's field manager).
pub const MANAGER: &str = "teal-operator";
/// The annotation that approves a waiting switch or a manual canary step, naming the
/// candidate version: `kubectl annotate mdep digits teal.dev/promote=v2`.
pub const PROMOTE: &str = "teal.dev/promote";
/// The annotation that rolls the candidate back (or aborts it before the switch), naming
/// its version.
pub const ROLLBACK: &str = "teal.dev/rollback";

/// Why a reconcile did not finish; the controller retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("someone else changed {0} first; reading it again")]
    Conflict(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// How the operator reaches a Service's pods (in the cluster, by its DNS name).
pub type ServiceUrl = Arc<dyn Fn(&str, &str, i32) -> String + Send + Sync>;
/// Milliseconds since the epoch; a parameter so tests drive time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// Who publishes the Events (the operator and its replica).
    pub reporter: Reporter,
    pub service_url: ServiceUrl,
    pub clock: Clock,
    /// How long gates and checks wait for a Service's pods to answer ready.
    pub connect_wait: Duration,
    /// Per resource (by uid): whether this process already re-applied its route, and when
    /// the last rollback check ran.
    memory: Mutex<HashMap<String, Memory>>,
}

#[derive(Default, Clone)]
struct Memory {
    resumed: bool,
    last_check_ms: i64,
}

impl Context {
    pub fn new(client: Client, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Context {
            reporter,
            client,
            service_url: Arc::new(|namespace, service, port| {
                format!("http://{service}.{namespace}.svc:{port}")
            }),
            clock: Arc::new(now_ms),
            connect_wait: Duration::from_secs(10),
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn memory(&self, uid: &str) -> Memory {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    fn remember(&self, uid: &str, change: impl FnOnce(&mut Memory)) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        change(memory.entry(uid.to_string()).or_default());
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rfc3339(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Runs the controller until `stop` resolves: watches the resources and the Deployments and
/// Services they own.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (resources, deployments, services) = match &namespace {
        Some(ns) => (
            Api::<ModelDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client, ns),
        ),
        None => (
            Api::<ModelDeployment>::all(client.clone()),
            Api::<Deployment>::all(client.clone()),
            Api::<Service>::all(client),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=teal");
    Controller::new(resources, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(services, owned)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "reconcile did not finish");
            }
        })
        .await;
}

/// Retries soon after a conflict, later after other errors.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, _ctx: Arc<Context>) -> Action {
    match error {
        Error::Conflict(_) => Action::requeue(Duration::from_secs(1)),
        _ => {
            tracing::warn!(resource = %md.name_any(), error = %error, "reconcile failed; retrying in 5 s");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// One reconcile of one resource.
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
        ctx.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
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
    match rollout {
        Some(rollout) if !rollout.phase.is_terminal() => drive(md, ctx, status, rollout).await,
        _ => match status.active_colour {
            None => first_deploy(md, ctx, status).await,
            Some(active) => idle(md, ctx, status, active).await,
        },
    }
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
    let route = teal_core::rollout::Route {
        active: colour.into(),
        weight: 0,
        shadow: 0,
    };
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
    status: ModelDeploymentStatus,
    active: Colour,
) -> Result<Action, Error> {
    let live_version = status.active_version.clone().unwrap_or_default();
    let idle = active.other();
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
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
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
        (None, None) => observe(md, ctx, &rollout, now, &mut report).await?,
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

/// How long until the phase's timer or next check.
fn poll_interval(rollout: &Rollout, now: i64) -> Duration {
    let check = Duration::from_millis(rollout.settings.rules.check_interval_ms);
    match rollout.deadline_ms() {
        Some(at) if at > now => check.min(Duration::from_millis((at - now) as u64)),
        Some(_) => Duration::from_millis(200),
        None => Duration::from_secs(2).min(check),
    }
}

/// The event the phase waits for, if it has happened.
async fn observe(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
    now: i64,
    report: &mut Option<GateReportSummary>,
) -> Result<Option<Event>, Error> {
    let candidate: Colour = rollout.new_slot().into();
    let event = match &rollout.phase {
        Phase::Deploying => match apply_deployment(md, ctx, candidate, md.spec.replicas).await {
            Ok(()) => Event::Deployed,
            // The API refused the object itself (an invalid template): no retry helps.
            Err(Error::Api(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
                Event::DeployFailed {
                    reason: format!("the Deployment was refused: {}", e.message),
                }
            }
            Err(e) => return Err(e),
        },
        Phase::WarmingUp => match readiness(md, ctx, candidate).await? {
            Readiness::Ready => Event::Ready,
            Readiness::Failed(reason) => Event::NotReady { reason },
            Readiness::Waiting(why) => {
                let timeout = md.spec.ready_timeout_seconds as i64 * 1000;
                if now - rollout.since_ms >= timeout {
                    Event::NotReady {
                        reason: format!(
                            "not ready within {} s: {why}",
                            md.spec.ready_timeout_seconds
                        ),
                    }
                } else {
                    return Ok(None);
                }
            }
        },
        Phase::Validating | Phase::CanaryGates { .. } => {
            if let (
                Phase::Validating,
                teal_core::rollout::Strategy::ShadowThenSwitch { window_ms, .. },
            ) = (&rollout.phase, &rollout.settings.strategy)
                && now < rollout.since_ms + *window_ms as i64
            {
                // Gateways mirror live traffic to the candidate for the window first.
                return Ok(None);
            }
            let summary = run_gates(md, ctx, rollout).await?;
            let event = Event::Gates {
                verdict: summary.verdict.parse().unwrap_or(Verdict::Inconclusive),
                summary: gate_sentence(&summary),
            };
            *report = Some(summary);
            event
        }
        Phase::AwaitingApproval => return Ok(None),
        Phase::Switching => Event::Switched,
        Phase::TearingDown => {
            scale(md, ctx, rollout.old.into(), 0).await?;
            Event::TornDown
        }
        Phase::RemovingCandidate { .. } => {
            scale(md, ctx, candidate, 0).await?;
            Event::CandidateRemoved
        }
        Phase::SwitchDelay { .. } | Phase::Canary { .. } | Phase::Observing | Phase::Promoted => {
            let id = uid(md);
            let interval = rollout.settings.rules.check_interval_ms as i64;
            let due = now - ctx.memory(&id).last_check_ms >= interval;
            let check = if due {
                ctx.remember(&id, |m| m.last_check_ms = now);
                Some(check(md, ctx, rollout).await?)
            } else {
                None
            };
            match (check, rollout.deadline_ms()) {
                (None, Some(at)) if now < at => return Ok(None),
                (None, None) => return Ok(None),
                (check, _) => Event::Tick { check },
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// The spec names another version for the candidate's colour before the switch: this
/// rollout is aborted, and the next one takes the new version.
fn superseded(md: &ModelDeployment, rollout: &Rollout) -> Option<Event> {
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
fn operator_command(md: &ModelDeployment, rollout: &Rollout) -> Option<(&'static str, Event)> {
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
async fn consume(md: &ModelDeployment, ctx: &Context, annotation: &str) -> Result<(), Error> {
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

enum Readiness {
    Ready,
    Waiting(String),
    Failed(String),
}

/// Whether a colour's Deployment has rolled out all its pods, ready.
async fn readiness(
    md: &ModelDeployment,
    ctx: &Context,
    colour: Colour,
) -> Result<Readiness, Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let name = deployment_name(md, colour);
    let Some(deployment) = api.get_opt(&name).await? else {
        return Ok(Readiness::Waiting(format!(
            "Deployment {name} does not exist yet"
        )));
    };
    let want = md.spec.replicas;
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = deployment.status else {
        return Ok(Readiness::Waiting(format!(
            "Deployment {name} has no status yet"
        )));
    };
    for c in status.conditions.iter().flatten() {
        if c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(Readiness::Failed(format!(
                "Deployment {name} exceeded its progress deadline: {}",
                c.message.clone().unwrap_or_default()
            )));
        }
    }
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) >= generation && ready >= want && updated >= want {
        Ok(Readiness::Ready)
    } else {
        Ok(Readiness::Waiting(format!(
            "Deployment {name} has {ready} of {want} pods ready"
        )))
    }
}

/// Connects to a colour's Service as an upstream slot (readiness, metadata, inference).
async fn colour_slot(
    md: &ModelDeployment,
    ctx: &Context,
    colour: Colour,
    version: &str,
) -> Result<Arc<Slot>, String> {
    let url = (ctx.service_url)(&namespace(md), &colour_service(md, colour), md.spec.port);
    let remote: RemoteConfig =
        serde_json::from_value(json!({ "urls": [url], "timeout_ms": 10000 }))
            .map_err(|e| e.to_string())?;
    let model = UpstreamModel::connect(&md.spec.model, &remote.urls, &remote, ctx.connect_wait)
        .await
        .map_err(|e| format!("{} ({}): {e}", colour.name(), url))?;
    let config = SlotConfig {
        version: version.to_string(),
        backend: BackendConfig::Upstream(remote),
        card: BTreeMap::new(),
    };
    Ok(Arc::new(Slot::new(
        colour.into(),
        config,
        Backend::Upstream(model),
        None,
    )))
}

/// The holdout rows from the ConfigMap the spec names, if it names one.
async fn holdout(md: &ModelDeployment, ctx: &Context) -> Result<Result<Vec<Row>, String>, Error> {
    let Some(key) = &md.spec.validation.holdout else {
        return Ok(Ok(Vec::new()));
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let name = format!("ConfigMap {} key {}", key.config_map, key.key);
    let Some(map) = api.get_opt(&key.config_map).await? else {
        return Ok(Err(format!("{name}: the ConfigMap does not exist")));
    };
    let Some(text) = map.data.as_ref().and_then(|d| d.get(&key.key)) else {
        return Ok(Err(format!("{name}: the ConfigMap has no such key")));
    };
    let csv = key.key.to_ascii_lowercase().ends_with(".csv");
    Ok(validation::parse_holdout(text, csv, &name).map_err(|e| e.to_string()))
}

/// Runs the gates on the candidate against the live colour: health, schema, and with a
/// holdout agreement, drift, latency, errors and accuracy.
async fn run_gates(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
) -> Result<GateReportSummary, Error> {
    let live_colour: Colour = rollout.old.into();
    let candidate_colour: Colour = rollout.new_slot().into();
    let summary = |gates: Vec<gates::GateResult>, samples: usize| {
        let verdict = Verdict::combine(gates.iter().map(|g| g.verdict));
        GateReportSummary {
            verdict: verdict.as_str().into(),
            candidate_version: rollout.version.clone(),
            samples: samples as u64,
            gates: gates
                .into_iter()
                .map(|g| GateLine {
                    gate: g.gate.to_string(),
                    verdict: g.verdict.as_str().into(),
                    reason: g.reason,
                })
                .collect(),
        }
    };
    let refused = |gate: gates::Gate, reason: String| {
        summary(
            vec![gates::GateResult {
                gate,
                verdict: Verdict::Fail,
                value: None,
                threshold: String::new(),
                samples: 0,
                reason,
                evidence: json!({}),
            }],
            0,
        )
    };
    let rows = match holdout(md, ctx).await? {
        Ok(rows) => rows,
        Err(reason) => return Ok(refused(gates::Gate::Holdout, reason)),
    };
    let old_version = rollout.old_version.clone().unwrap_or_default();
    let candidate = match colour_slot(md, ctx, candidate_colour, &rollout.version).await {
        Ok(slot) => slot,
        Err(reason) => return Ok(summary(vec![with_reason(gates::health(false), reason)], 0)),
    };
    let live = match colour_slot(md, ctx, live_colour, &old_version).await {
        Ok(slot) => slot,
        Err(reason) => {
            return Ok(refused(
                gates::Gate::Live,
                format!("the live colour does not answer: {reason}"),
            ));
        }
    };
    let config = md.spec.gates();
    let observations = validation::compare(&live, &candidate, &rows, &config, None, &|_| {}).await;
    let mut results = vec![
        gates::health(candidate.backend.ready()),
        gates::schema(live.backend.signature(), candidate.backend.signature()),
    ];
    if !rows.is_empty() {
        results.extend(gates::judge(&observations, &config));
    }
    Ok(summary(results, observations.len()))
}

fn with_reason(mut gate: gates::GateResult, reason: String) -> gates::GateResult {
    gate.reason = reason;
    gate
}

fn gate_sentence(report: &GateReportSummary) -> String {
    let lines: Vec<String> = report
        .gates
        .iter()
        .map(|g| format!("{} {}", g.gate, g.verdict))
        .collect();
    format!("{} ({})", report.verdict, lines.join(", "))
}

/// One rollback check: the candidate's readiness, and a few holdout rows sent to both
/// colours for latency and errors.
async fn check(md: &ModelDeployment, ctx: &Context, rollout: &Rollout) -> Result<Check, Error> {
    let candidate: Colour = rollout.new_slot().into();
    let (new_ready, exited) = match readiness(md, ctx, candidate).await? {
        Readiness::Ready => (true, None),
        Readiness::Waiting(_) => (false, None),
        Readiness::Failed(reason) => (false, Some(reason)),
    };
    let mut check = Check {
        new_ready,
        new_exited: exited,
        ..Check::default()
    };
    let probes = md.spec.rollback.probe_requests.unwrap_or(20) as usize;
    if probes == 0 || !new_ready || md.spec.validation.holdout.is_none() {
        return Ok(check);
    }
    let rows = holdout(md, ctx).await?.unwrap_or_default();
    if rows.is_empty() {
        return Ok(check);
    }
    let old_version = rollout.old_version.clone().unwrap_or_default();
    let (Ok(new), Ok(old)) = (
        colour_slot(md, ctx, candidate, &rollout.version).await,
        colour_slot(md, ctx, candidate.other(), &old_version).await,
    ) else {
        return Ok(check);
    };
    let rows: Vec<Row> = rows.iter().cycle().take(probes).cloned().collect();
    let config = teal_core::gates::GateConfig {
        warmup: 0,
        ..md.spec.gates()
    };
    let observations = validation::compare(&old, &new, &rows, &config, None, &|_| {}).await;
    let window = |answers: Vec<&gates::Answer>| {
        let mut latencies: Vec<f64> = answers.iter().map(|a| a.latency_ms).collect();
        latencies.sort_by(f64::total_cmp);
        let p95 = latencies
            .get(((latencies.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
            .copied();
        Window {
            requests: answers.len() as u64,
            errors: answers.iter().filter(|a| !a.ok).count() as u64,
            p95_ms: p95,
        }
    };
    check.old = window(observations.iter().map(|o| &o.live).collect());
    check.new = window(observations.iter().map(|o| &o.candidate).collect());
    Ok(check)
}

/// Folds a step into the status: phase, route, candidate, transition, outcome.
fn step_status(
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

fn set_route(status: &mut ModelDeploymentStatus, route: teal_core::rollout::Route) {
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

fn set_condition(
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
                let kind = match t.to.as_str() {
                    "rolled_back" | "failed" | "aborted" => EventType::Warning,
                    _ => EventType::Normal,
                };
                let note = format!("{} -> {}: {}", t.from, t.to, t.cause);
                publish(ctx, md, kind, &reason_name(&t.to), &note).await;
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

async fn publish(ctx: &Context, md: &ModelDeployment, kind: EventType, reason: &str, note: &str) {
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
async fn write_status(
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

pub fn namespace(md: &ModelDeployment) -> String {
    md.namespace().unwrap_or_else(|| "default".into())
}

fn uid(md: &ModelDeployment) -> String {
    md.uid().unwrap_or_else(|| md.name_any())
}

pub fn deployment_name(md: &ModelDeployment, colour: Colour) -> String {
    format!("{}-{}", md.name_any(), colour.name())
}

/// The Service that always selects one colour's pods (gates, checks and gateways use it).
pub fn colour_service(md: &ModelDeployment, colour: Colour) -> String {
    format!("{}-{}", md.name_any(), colour.name())
}

pub fn active_service(md: &ModelDeployment) -> String {
    md.spec
        .active_service
        .clone()
        .unwrap_or_else(|| md.name_any())
}

fn labels(md: &ModelDeployment, colour: Colour) -> serde_json::Value {
    json!({
        "app.kubernetes.io/name": "teal-model",
        "app.kubernetes.io/instance": md.name_any(),
        "app.kubernetes.io/managed-by": "teal",
        "teal.dev/model-deployment": md.name_any(),
        "teal.dev/colour": colour.name(),
    })
}

fn selector(md: &ModelDeployment, colour: Colour) -> serde_json::Value {
    json!({ "teal.dev/model-deployment": md.name_any(), "teal.dev/colour": colour.name() })
}

fn owner(md: &ModelDeployment) -> serde_json::Value {
    json!([md.controller_owner_ref(&())])
}

/// The Deployment of one colour, as the operator applies it.
pub fn deployment(md: &ModelDeployment, colour: Colour, replicas: i32) -> serde_json::Value {
    let spec = md.spec.colour(colour);
    let template = spec
        .and_then(|c| c.template.clone())
        .or_else(|| md.spec.template.clone())
        .unwrap_or_default();
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    let version = spec.map(|c| c.version.clone()).unwrap_or_default();
    let mut pod_labels = labels(md, colour);
    pod_labels["teal.dev/version"] = json!(version);
    if let Some(existing) = template["metadata"]["labels"].as_object() {
        for (k, v) in existing {
            pod_labels
                .as_object_mut()
                .map(|l| l.entry(k.clone()).or_insert(v.clone()));
        }
    }
    template["metadata"]["labels"] = pod_labels;
    if let Some(image) = spec.and_then(|c| c.image.clone()) {
        match template["spec"]["containers"].as_array_mut() {
            Some(containers) if !containers.is_empty() => containers[0]["image"] = json!(image),
            _ => {
                template["spec"]["containers"] = json!([{
                    "name": "model-server",
                    "image": image,
                    "ports": [{ "name": "http", "containerPort": md.spec.port }],
                    "readinessProbe": {
                        "httpGet": { "path": format!("/v2/models/{}/ready", md.spec.model), "port": md.spec.port },
                        "periodSeconds": 2
                    }
                }])
            }
        }
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(md, colour),
            "namespace": namespace(md),
            "labels": labels(md, colour),
            "annotations": { "teal.dev/version": version },
            "ownerReferences": owner(md),
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": selector(md, colour) },
            "template": template,
        }
    })
}

/// A Service selecting one colour's pods, as the operator applies it.
pub fn service(md: &ModelDeployment, name: &str, colour: Colour, role: &str) -> serde_json::Value {
    let mut labels = labels(md, colour);
    labels["teal.dev/role"] = json!(role);
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace(md),
            "labels": labels,
            "ownerReferences": owner(md),
        },
        "spec": {
            "selector": selector(md, colour),
            "ports": [{ "name": "http", "port": md.spec.port, "targetPort": md.spec.port }],
        }
    })
}

async fn apply_deployment(
    md: &ModelDeployment,
    ctx: &Context,
    colour: Colour,
    replicas: i32,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let name = deployment_name(md, colour);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(deployment(md, colour, replicas)),
    )
    .await?;
    Ok(())
}

async fn scale(
    md: &ModelDeployment,
    ctx: &Context,
    colour: Colour,
    replicas: i32,
) -> Result<(), Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let patch = json!({ "spec": { "replicas": replicas } });
    match api
        .patch(
            &deployment_name(md, colour),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Already gone is as good as scaled to zero.
        Err(kube::Error::Api(e)) if e.code == 404 && replicas == 0 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The colour Services (stable selectors), and in `service` mode the active Service on the
/// live colour and the preview Service on the candidate (or the live colour between
/// rollouts).
async fn apply_services(
    md: &ModelDeployment,
    ctx: &Context,
    live: Colour,
    candidate: Option<Colour>,
    colours: bool,
) -> Result<(), Error> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace(md));
    let params = PatchParams::apply(MANAGER).force();
    let mut wanted = Vec::new();
    if md.spec.switch_mode == SwitchMode::Service {
        wanted.push(service(md, &active_service(md), live, "active"));
        if let Some(preview) = &md.spec.preview_service {
            wanted.push(service(md, preview, candidate.unwrap_or(live), "preview"));
        }
    }
    for colour in [Colour::Blue, Colour::Green]
        .into_iter()
        .filter(|_| colours)
    {
        wanted.push(service(md, &colour_service(md, colour), colour, "colour"));
    }
    for object in wanted {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api.patch(&name, &params, &Patch::Apply(object)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn event_reasons_are_pascal_case() {
        assert_eq!(reason_name("rolled_back"), "RolledBack");
        assert_eq!(reason_name("awaiting_approval"), "AwaitingApproval");
        assert_eq!(reason_name("canary"), "Canary");
    }
}
