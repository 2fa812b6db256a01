//! The world as a phase needs to see it: whether the candidate's Deployment is ready, what
//! the gates say when run from the operator against the colours' Services, and the rollback
//! checks while the candidate is live. Each answer becomes the event the rollout is stepped
//! with; no answer yet means the phase keeps waiting.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use serde_json::json;
use teal_core::config::{BackendConfig, RemoteConfig, SlotConfig};
use teal_core::gates::{self, Verdict};
use teal_core::rollout::{Check, Event, HookEvent, Phase, Rollout, Stage, Window};

use super::objects::{apply_deployment, colour_service, deployment_name, namespace, scale, uid};
use super::{Context, Error};
use crate::backends::{Backend, UpstreamModel};
use crate::control::checks::{payload, placeholders, show_ms};
use crate::control::validation::{self, Row};
use crate::kubernetes::crd::{Colour, GateLine, GateReportSummary, ModelDeployment};
use crate::routing::Slot;

/// The event the phase waits for, if it has happened. Gate reports are handed back in
/// `report`, for the status.
pub(super) async fn observe(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
    now: i64,
    report: &mut Option<GateReportSummary>,
) -> Result<Option<Event>, Error> {
    let candidate: Colour = rollout.new_slot().into();
    let event = match &rollout.phase {
        Phase::Deploying => match pre_rollout(md, ctx, rollout).await {
            Some(refused) => refused,
            None => match apply_deployment(md, ctx, candidate, md.spec.replicas).await {
                Ok(()) => Event::Deployed,
                // The API refused the object itself (an invalid template): no retry helps.
                Err(Error::Api(kube::Error::Api(e))) if e.code == 422 || e.code == 400 => {
                    Event::DeployFailed {
                        reason: format!("the Deployment was refused: {}", e.message),
                    }
                }
                Err(e) => return Err(e),
            },
        },
        Phase::WarmingUp => match readiness(md, ctx, candidate).await? {
            Readiness::Ready => Event::Ready,
            Readiness::Failed(reason) => Event::NotReady { reason },
            Readiness::Waiting(why) => {
                let timeout = md
                    .spec
                    .ready_timeout_seconds
                    .min(crate::kubernetes::crd::MAX_SECONDS) as i64
                    * 1000;
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
            if let Some(held) = confirm_step(md, ctx, rollout, now, report).await {
                return Ok(held);
            }
            let mut summary = run_gates(md, ctx, rollout).await?;
            if summary.verdict != Verdict::Fail.as_str() {
                gate_analyses(md, ctx, rollout, &mut summary).await;
            }
            let confirming = rollout
                .settings
                .hooks_on(HookEvent::PreSwitch)
                .next()
                .is_some();
            if rollout.phase == Phase::Validating
                && confirming
                && summary.verdict == Verdict::Pass.as_str()
            {
                // The switch waits for the confirm hooks: asked now, then every reconcile
                // their interval allows, until a 200 or their timeout.
                let held = Confirm {
                    rollout: (rollout.id, rollout.version.clone(), rollout.since_ms),
                    sentence: gate_sentence(&summary),
                    report: summary,
                    started_ms: now,
                    next_ask_ms: now,
                };
                ctx.remember(&uid(md), |m| m.confirm = Some(held));
                return Ok(confirm_step(md, ctx, rollout, now, report).await.flatten());
            }
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
                (check, _) => Event::Tick {
                    check: check.map(Box::new),
                },
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

/// Gates that passed, held until the `pre_switch` webhooks answer 200.
#[derive(Clone)]
pub(super) struct Confirm {
    /// The rollout's id, version, and when its validating phase began.
    rollout: (i64, String, i64),
    report: GateReportSummary,
    sentence: String,
    started_ms: i64,
    next_ask_ms: i64,
}

/// Asks the `pre_switch` webhooks of a rollout whose gates passed, when an ask is due:
/// `None` when no switch is held for this rollout (run the gates), `Some(None)` while it
/// waits, and `Some(Some(event))` once every hook answered 200 (a pass) or one's confirm
/// timeout ran out (inconclusive: the rollout then waits for approval).
async fn confirm_step(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
    now: i64,
    report: &mut Option<GateReportSummary>,
) -> Option<Option<Event>> {
    let id = uid(md);
    let key = (rollout.id, rollout.version.clone(), rollout.since_ms);
    let held = ctx.memory(&id).confirm.filter(|c| c.rollout == key)?;
    if now < held.next_ask_ms {
        return Some(None);
    }
    let body = payload(rollout, HookEvent::PreSwitch, &held.sentence);
    let mut confirmed = Vec::new();
    for hook in rollout.settings.hooks_on(HookEvent::PreSwitch) {
        let last = match ctx.checks.deliver(hook, HookEvent::PreSwitch, &body).await {
            Ok(200) => {
                confirmed.push(hook.name.clone());
                continue;
            }
            Ok(status) => format!("answered {status}"),
            Err(reason) => reason,
        };
        if now - held.started_ms >= hook.confirm_timeout_ms as i64 {
            ctx.remember(&id, |m| m.confirm = None);
            *report = Some(held.report.clone());
            return Some(Some(Event::Gates {
                verdict: Verdict::Inconclusive,
                summary: format!(
                    "{}; confirm hook {} did not answer 200 within {} ({last}): approve with teal.dev/promote={}, or roll back",
                    held.sentence,
                    hook.name,
                    show_ms(hook.confirm_timeout_ms),
                    rollout.version
                ),
            }));
        }
        let next = now + hook.confirm_interval_ms as i64;
        ctx.remember(&id, |m| {
            if let Some(c) = &mut m.confirm {
                c.next_ask_ms = next;
            }
        });
        return Some(None);
    }
    ctx.remember(&id, |m| m.confirm = None);
    *report = Some(held.report.clone());
    Some(Some(Event::Gates {
        verdict: Verdict::Pass,
        summary: format!(
            "{}; switch confirmed by {}",
            held.sentence,
            confirmed.join(", ")
        ),
    }))
}

/// Calls the `pre_rollout` webhooks once per rollout; the first that does not answer 2xx
/// stops it before anything is deployed.
async fn pre_rollout(md: &ModelDeployment, ctx: &Context, rollout: &Rollout) -> Option<Event> {
    let id = uid(md);
    let key = (rollout.id, rollout.version.clone());
    if ctx.memory(&id).pre_rollout_done.as_ref() == Some(&key) {
        return None;
    }
    let body = payload(rollout, HookEvent::PreRollout, "rollout starting");
    for hook in rollout.settings.hooks_on(HookEvent::PreRollout) {
        if let Err(reason) = ctx.checks.deliver(hook, HookEvent::PreRollout, &body).await {
            return Some(Event::HookRefused {
                hook: hook.name.clone(),
                reason,
            });
        }
    }
    ctx.remember(&id, |m| m.pre_rollout_done = Some(key));
    None
}

/// The analyses of the gates, each measured until it passes or fails its `consecutive` in a
/// row, as lines of the gate report, which then takes the worst verdict.
async fn gate_analyses(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
    summary: &mut GateReportSummary,
) {
    let checks = ctx
        .checks
        .with_prometheus(md.spec.prometheus_url.as_deref());
    let vars = placeholders(rollout);
    let runs = rollout
        .settings
        .analyses_at(Stage::Gates)
        .map(|a| checks.gate_analysis(a, &vars));
    for (m, _) in futures::future::join_all(runs).await {
        summary.gates.push(GateLine {
            gate: format!("analysis {}", m.name),
            verdict: m.verdict.as_str().into(),
            reason: m.detail,
        });
    }
    summary.verdict = Verdict::combine(
        summary
            .gates
            .iter()
            .map(|g| g.verdict.parse().unwrap_or(Verdict::Inconclusive)),
    )
    .as_str()
    .into();
}

/// The analyses of the watched phase that are due, measured now.
async fn watched_analyses(
    md: &ModelDeployment,
    ctx: &Context,
    rollout: &Rollout,
) -> Vec<teal_core::rollout::Measurement> {
    let Some(stage) = rollout.watched_stage() else {
        return Vec::new();
    };
    let id = uid(md);
    let now = (ctx.clock)();
    let checks = ctx
        .checks
        .with_prometheus(md.spec.prometheus_url.as_deref());
    let vars = placeholders(rollout);
    let mut measured = Vec::new();
    for analysis in rollout.settings.analyses_at(stage) {
        let key = format!("{}@{}", analysis.name, rollout.since_ms);
        if ctx
            .memory(&id)
            .analysis_next_ms
            .get(&key)
            .is_some_and(|at| now < *at)
        {
            continue;
        }
        ctx.remember(&id, |m| {
            m.analysis_next_ms
                .retain(|k, _| k.ends_with(&format!("@{}", rollout.since_ms)));
            m.analysis_next_ms
                .insert(key, now + analysis.interval_ms as i64);
        });
        measured.push(checks.measure(analysis, &vars).await);
    }
    measured
}

/// Where a colour's Deployment stands.
enum Readiness {
    /// Every wanted pod is updated and ready.
    Ready,
    /// Not yet, and why not.
    Waiting(String),
    /// It will not get there: Kubernetes gave up on its rollout.
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

/// A gate result with the reason that explains it best.
fn with_reason(mut gate: gates::GateResult, reason: String) -> gates::GateResult {
    gate.reason = reason;
    gate
}

/// The gate report in one line, for the transition's cause.
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
        analyses: watched_analyses(md, ctx, rollout).await,
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
            ..Window::default()
        }
    };
    check.old = window(observations.iter().map(|o| &o.live).collect());
    check.new = window(observations.iter().map(|o| &o.candidate).collect());
    // Each probe went to both colours at once: the rules' concurrent baseline.
    check.pairs = observations
        .iter()
        .map(|o| teal_core::rollout::Pair::of(&o.live, &o.candidate))
        .collect();
    Ok(check)
}
