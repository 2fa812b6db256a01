//! The rollout driver: runs one task per model with a rollout under way, feeding the pure
//! state machine ([`teal_core::rollout`]) its events and performing the effects it returns.
//!
//! Order of work for every event: step the machine, persist the new state together with the
//! audit events of its transitions (one SQLite transaction), then act. A restart reads the
//! unfinished rollouts and re-issues what their phase still owes ([`Rollout::resume`]);
//! every effect is idempotent, so nothing happens twice and the live slot never changes on
//! a restart.
//!
//! Longer than most files (about 750 lines): one driver performing every effect the state
//! machine names, each a few lines; the decisions themselves are in `teal_core::rollout`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teal_core::config::SlotConfig;
use teal_core::gates::Verdict;
use teal_core::rollout::{
    Check, Effect, Event, HookEvent, Measurement, Phase, Placeholders, Refused, Rollout,
    RolloutSettings, Stage, Strategy,
};
use teal_core::routing::Color;
use tokio::sync::{mpsc, oneshot};

use crate::control::checks::{CandidateDoor, Checks, Said, payload, placeholders, run_smoke};
use crate::control::slots::{NotStarted, SlotError, SlotManager};
use crate::control::validation::{Source, Validator};
use crate::metrics::{Metrics, ModelLabels};
use crate::routing::{Routes, StatsSnapshot};
use crate::state::store::{ModelState, NewEvent, Store};

/// Why a rollout command was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error(
        "model '{model}' has rollout {id} in progress ({phase}): promote, abort or roll it back first"
    )]
    InProgress {
        model: String,
        id: i64,
        phase: String,
    },
    #[error("model '{0}' has no rollout in progress: start one with teal deploy")]
    NoRollout(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Invalid(String),
    /// The candidate runs a command while `server.allow_commands` is off.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Store(String),
    #[error(
        "{0}: free space on the state folder's disk (or raise server.state_max_bytes), then retry"
    )]
    Unwritable(String),
}

/// Wall-clock milliseconds that advance with `tokio::time`, so tests can pause time.
#[derive(Clone, Copy)]
struct Clock {
    wall_ms: i64,
    at: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            wall_ms: crate::state::store::now_ms(),
            at: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.wall_ms + self.at.elapsed().as_millis() as i64
    }
}

type Reply = oneshot::Sender<Result<Rollout, RolloutError>>;

/// A running driver: where its commands go, and its latest state.
struct Driver {
    commands: mpsc::Sender<(Event, Reply)>,
    state: Arc<Mutex<Rollout>>,
}

/// Every model's rollouts.
pub struct Rollouts {
    routes: Arc<Routes>,
    slots: Arc<SlotManager>,
    validator: Arc<Validator>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    settings: BTreeMap<String, RolloutSettings>,
    drivers: Mutex<BTreeMap<String, Driver>>,
    clock: Clock,
    /// Fault injection for the crash tests: phases after whose persisting teal kills itself
    /// (SIGKILL) before acting, from `TEAL_FAULT_KILL_AFTER_PHASE` (comma-separated names).
    kill_after: Vec<String>,
    /// Prometheus and webhooks, for the operator's own checks.
    checks: std::sync::OnceLock<Arc<Checks>>,
    /// Where a smoke test reaches the candidate alone.
    door: std::sync::OnceLock<Arc<dyn CandidateDoor>>,
}

impl Rollouts {
    pub fn new(
        routes: Arc<Routes>,
        slots: Arc<SlotManager>,
        validator: Arc<Validator>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        settings: BTreeMap<String, RolloutSettings>,
    ) -> Rollouts {
        Rollouts {
            routes,
            slots,
            validator,
            store,
            metrics,
            settings,
            drivers: Mutex::new(BTreeMap::new()),
            clock: Clock::new(),
            kill_after: std::env::var("TEAL_FAULT_KILL_AFTER_PHASE")
                .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
                .unwrap_or_default(),
            checks: std::sync::OnceLock::new(),
            door: std::sync::OnceLock::new(),
        }
    }

    /// Gives the driver what the operator's checks need: the Prometheus and webhook client,
    /// and the listener smoke tests reach the candidate on. Set once, at start-up.
    pub fn equip(&self, checks: Checks, door: Arc<dyn CandidateDoor>) {
        let _ = self.checks.set(Arc::new(checks));
        let _ = self.door.set(door);
    }

    fn checks(&self) -> Arc<Checks> {
        self.checks
            .get_or_init(|| Arc::new(Checks::new(None)))
            .clone()
    }

    /// A model's rollout settings from the config file.
    pub fn settings(&self, model: &str) -> RolloutSettings {
        self.settings.get(model).cloned().unwrap_or_default()
    }

    /// The model's rollout in progress, if one is.
    pub fn active(&self, model: &str) -> Option<Rollout> {
        let drivers = self.drivers.lock().unwrap_or_else(|p| p.into_inner());
        let driver = drivers.get(model)?;
        let state = driver
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (!state.phase.is_terminal()).then_some(state)
    }

    /// Starts a rollout of `candidate` onto the standby slot of `model`.
    pub async fn start(
        self: &Arc<Self>,
        model: &str,
        candidate: SlotConfig,
        settings: RolloutSettings,
        actor: &str,
    ) -> Result<Rollout, RolloutError> {
        candidate
            .validate()
            .map_err(|(f, reason)| RolloutError::Invalid(format!("{f}: {reason}")))?;
        self.slots
            .permits(&candidate)
            .map_err(|e| RolloutError::Forbidden(e.to_string()))?;
        // Queries, webhooks and smoke tests are the config file's, whoever asks.
        let settings = settings.with_checks_of(&self.settings(model));
        settings
            .validate()
            .map_err(|(f, reason)| RolloutError::Invalid(format!("{f}: {reason}")))?;
        let snapshot = self.routes.load();
        let routes = snapshot
            .models
            .get(model)
            .ok_or_else(|| RolloutError::UnknownModel(model.to_string()))?;
        if let Some(live) = routes.live()
            && live.version == candidate.version
        {
            return Err(RolloutError::Invalid(format!(
                "version {} is already live in the {} slot of '{model}': give the new version its own name",
                candidate.version, live.color
            )));
        }
        if let Some(running) = self.active(model) {
            return Err(RolloutError::InProgress {
                model: model.to_string(),
                id: running.id,
                phase: running.phase.name().to_string(),
            });
        }
        let old = routes.table.active;
        let old_version = routes.live().map(|s| s.version.clone());
        let config = serde_json::to_value(&candidate).unwrap_or_default();
        let (m, v) = (model.to_string(), candidate.version.clone());
        let id = self
            .blocking(move |store| store.new_rollout(&m, &v, &config))
            .await?;
        let (rollout, effects) = Rollout::start(
            id,
            model,
            &candidate.version,
            old,
            old_version,
            settings,
            actor,
            self.clock.now_ms(),
        );
        self.persist(&rollout, &effects).await?;
        self.spawn(rollout.clone(), candidate, effects);
        Ok(rollout)
    }

    /// Resumes every unfinished rollout in the state file (at start-up), and returns those
    /// it may not resume: a candidate that runs a command while commands are not allowed is
    /// left as it is (resumed by a start that allows them), never started.
    pub async fn resume_all(self: &Arc<Self>) -> Result<Vec<NotStarted>, RolloutError> {
        let unfinished = self.blocking(|store| store.unfinished_rollouts()).await?;
        let mut held = Vec::new();
        for (mut rollout, candidate) in unfinished {
            // The operator's checks come from the config file as it is now, never from the
            // state file.
            rollout.settings = rollout
                .settings
                .clone()
                .with_checks_of(&self.settings(&rollout.model));
            let Ok(candidate) = serde_json::from_value::<SlotConfig>(candidate) else {
                tracing::error!(model = %rollout.model, id = rollout.id, "cannot read the candidate of an unfinished rollout; left as it is");
                continue;
            };
            if !self.routes.load().models.contains_key(&rollout.model) {
                tracing::warn!(model = %rollout.model, id = rollout.id, "unfinished rollout of a model no longer configured; left as it is");
                continue;
            }
            if let Err(refused) = self.slots.permits(&candidate) {
                tracing::error!(model = %rollout.model, id = rollout.id, version = %candidate.version, reason = %refused,
                    "unfinished rollout not resumed: its candidate runs a command; left as it is");
                held.push(NotStarted {
                    model: rollout.model.clone(),
                    version: candidate.version.clone(),
                    slot: None,
                    rollout: Some(rollout.id),
                    reason: refused.to_string(),
                });
                continue;
            }
            tracing::info!(model = %rollout.model, id = rollout.id, phase = rollout.phase.name(), "resuming rollout");
            let effects = rollout.resume();
            self.spawn(rollout, candidate, effects);
        }
        Ok(held)
    }

    /// Sends an operator's command to the model's rollout and returns its state after it.
    pub async fn command(&self, model: &str, event: Event) -> Result<Rollout, RolloutError> {
        let (commands, state) = {
            let drivers = self.drivers.lock().unwrap_or_else(|p| p.into_inner());
            let driver = drivers
                .get(model)
                .ok_or_else(|| RolloutError::NoRollout(model.to_string()))?;
            (driver.commands.clone(), driver.state.clone())
        };
        let current = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if current.phase.is_terminal() {
            return Err(RolloutError::NoRollout(model.to_string()));
        }
        current.accepts(&event)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send((event, reply))
            .await
            .map_err(|_| RolloutError::NoRollout(model.to_string()))?;
        answer
            .await
            .map_err(|_| RolloutError::NoRollout(model.to_string()))?
    }

    fn spawn(self: &Arc<Self>, rollout: Rollout, candidate: SlotConfig, effects: Vec<Effect>) {
        let (commands, inbox) = mpsc::channel(16);
        let state = Arc::new(Mutex::new(rollout.clone()));
        self.metrics.set_phase(&rollout.model, rollout.phase.name());
        self.drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                rollout.model.clone(),
                Driver {
                    commands,
                    state: state.clone(),
                },
            );
        let this = self.clone();
        tokio::spawn(async move { this.drive(rollout, candidate, effects, inbox, state).await });
    }

    /// Records where a candidate's model file came from, as an audit event of its own
    /// (`fetched`): the rollout's phase events say what happened, this says what was run.
    async fn record_fetched(
        &self,
        model: &str,
        version: &str,
        provenance: crate::backends::fetch::Provenance,
    ) {
        let detail = serde_json::json!({ "version": version, "provenance": provenance });
        self.record(model, "fetched", detail).await;
    }

    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Store) -> Result<T, crate::state::store::StoreError> + Send + 'static,
    ) -> Result<T, RolloutError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| RolloutError::Store(format!("the state file task failed: {e}")))?
            .map_err(|e| {
                if e.unwritable() {
                    RolloutError::Unwritable(e.to_string())
                } else {
                    RolloutError::Store(e.to_string())
                }
            })
    }

    /// Writes the state and the audit events of its transitions, in one transaction.
    async fn persist(&self, rollout: &Rollout, effects: &[Effect]) -> Result<(), RolloutError> {
        let live = rollout.route.active;
        let live_version = if live == rollout.old {
            rollout.old_version.clone()
        } else {
            Some(rollout.version.clone())
        };
        let events: Vec<NewEvent> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Record(t) => Some(NewEvent {
                    model: rollout.model.clone(),
                    kind: "rollout".into(),
                    actor: t.actor.clone(),
                    live_slot: Some(live.to_string()),
                    live_version: live_version.clone(),
                    detail: serde_json::json!({
                        "rollout": rollout.id,
                        "version": rollout.version,
                        "from": t.from,
                        "to": t.to,
                        "cause": t.cause,
                    }),
                }),
                _ => None,
            })
            .collect();
        for e in &events {
            tracing::info!(model = %e.model, rollout = rollout.id, version = %rollout.version, from = %e.detail["from"].as_str().unwrap_or(""), to = %e.detail["to"].as_str().unwrap_or(""), cause = %e.detail["cause"].as_str().unwrap_or(""), actor = %e.actor, "rollout transition");
        }
        let state = rollout.clone();
        self.blocking(move |store| store.save_rollout(&state, events))
            .await?;
        if self.kill_after.iter().any(|p| p == rollout.phase.name()) {
            // The worst moment to die: the new phase is on disk, nothing of it done yet.
            tracing::warn!(
                phase = rollout.phase.name(),
                "TEAL_FAULT_KILL_AFTER_PHASE: killing teal"
            );
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
        Ok(())
    }

    async fn drive(
        self: Arc<Self>,
        mut state: Rollout,
        candidate: SlotConfig,
        effects: Vec<Effect>,
        mut inbox: mpsc::Receiver<(Event, Reply)>,
        shared: Arc<Mutex<Rollout>>,
    ) {
        let (done, mut finished) = mpsc::channel::<Event>(8);
        let mut meter = Meter::default();
        self.perform(&state, &candidate, effects, &done).await;
        let interval = Duration::from_millis(state.settings.rules.check_interval_ms);
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        while !state.phase.is_terminal() {
            let (event, reply) = tokio::select! {
                Some((event, reply)) = inbox.recv() => (event, Some(reply)),
                Some(event) = finished.recv() => (event, None),
                _ = ticks.tick() => {
                    let check = self.measure(&state, &mut meter).await;
                    (Event::Tick { check: Some(Box::new(check)) }, None)
                }
            };
            let before = state.clone();
            let (next, effects) = state.clone().step(event, self.clock.now_ms());
            if next != before {
                // Persist before acting; if the state cannot be written, do not act on it.
                if let Err(e) = self.persist(&next, &effects).await {
                    tracing::error!(model = %state.model, rollout = state.id, error = %e, "cannot persist the rollout; holding it in {}", before.phase.name());
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e));
                    }
                    continue;
                }
                self.notify(&next, &effects);
                if next.phase != before.phase {
                    self.metrics.set_phase(&next.model, next.phase.name());
                    if next.phase == teal_core::rollout::Phase::RolledBack {
                        self.metrics
                            .rollbacks
                            .get_or_create(&ModelLabels {
                                model: next.model.clone(),
                            })
                            .inc();
                    }
                }
            }
            state = next;
            *shared.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(state.clone()));
            }
            self.perform(&state, &candidate, effects, &done).await;
        }
        if meter.pairs.is_some() {
            self.validator.baselines.close(&state.model);
        }
        tracing::info!(model = %state.model, rollout = state.id, phase = state.phase.name(), outcome = %state.outcome.as_ref().map(ToString::to_string).unwrap_or_default(), "rollout ended");
    }

    /// Measures both slots since the last check.
    async fn measure(&self, state: &Rollout, meter: &mut Meter) -> Check {
        let snapshot = self.routes.load();
        let routes = snapshot.models.get(&state.model);
        let slot = |color: Color, version: Option<&str>| {
            routes
                .and_then(|r| r.slot(color))
                .filter(|s| Some(s.version.as_str()) == version)
                .cloned()
        };
        let old = slot(state.old, state.old_version.as_deref());
        let new = slot(state.new_slot(), Some(&state.version));
        let window = |slot: &Option<Arc<crate::routing::Slot>>,
                      last: &mut Option<StatsSnapshot>| {
            let Some(slot) = slot else {
                *last = None;
                return teal_core::rollout::Window::default();
            };
            let now = slot.stats.snapshot();
            let delta = match last {
                Some(before) => now.since(before),
                None => StatsSnapshot::default(),
            };
            *last = Some(now);
            delta.window(state.latency_limit_ms())
        };
        let old_window = window(&old, &mut meter.old);
        let new_window = window(&new, &mut meter.new);
        // The concurrent baseline: listening only while the candidate is watched.
        let watched = matches!(
            state.phase,
            Phase::Canary { .. } | Phase::CanaryGates { .. } | Phase::Observing
        );
        let baselines = &self.validator.baselines;
        let mut pairs = Vec::new();
        match (&mut meter.pairs, watched && state.route.baseline > 0) {
            (None, true) => {
                let floor = state.settings.rules.min_requests as usize;
                meter.pairs = Some(baselines.open_with_floor(&state.model, PAIRS_PER_CHECK, floor));
            }
            (Some(receiver), true) => {
                let old_is_live = state.route.active == state.old;
                while let Ok(o) = receiver.try_recv() {
                    pairs.push(pair(&o, old_is_live));
                }
                baselines.took(&state.model);
            }
            (Some(_), false) => {
                baselines.close(&state.model);
                meter.pairs = None;
            }
            (None, false) => {}
        }
        let accuracy = match state.settings.rules.min_accuracy {
            Some(_) => {
                let (model, version, since) =
                    (state.model.clone(), state.version.clone(), state.started_ms);
                self.blocking(move |store| store.accuracy(&model, since))
                    .await
                    .ok()
                    .and_then(|rows| {
                        rows.into_iter()
                            .find(|(v, _, _)| *v == version)
                            .map(|(_, acc, n)| (acc, n))
                    })
            }
            None => None,
        };
        Check {
            pairs,
            old: old_window,
            new: new_window,
            new_ready: new.as_ref().is_some_and(|s| s.backend.ready()),
            new_exited: new.and_then(|s| s.backend.process()).and_then(|p| p.exit),
            accuracy,
            analyses: self.analyses(state, meter).await,
        }
    }

    /// Starts the measurements of this phase's analyses that are due, each in its own task
    /// so a slow Prometheus never holds the driver, and returns those that finished since
    /// the last check (in this phase) and records them in the audit trail.
    async fn analyses(&self, state: &Rollout, meter: &mut Meter) -> Vec<Measurement> {
        let mut finished = Vec::new();
        while let Ok((since, m)) = meter.analysed.1.try_recv() {
            meter.measuring.remove(&m.name);
            if since == state.since_ms {
                finished.push(m);
            }
        }
        let Some(stage) = state.watched_stage() else {
            return finished;
        };
        // A new phase (a canary step, the bake) measures its analyses from its start.
        if meter.phase_since != state.since_ms {
            meter.phase_since = state.since_ms;
            meter.next_at.clear();
        }
        let now = tokio::time::Instant::now();
        for analysis in state.settings.analyses_at(stage) {
            let due = meter
                .next_at
                .get(&analysis.name)
                .is_none_or(|at| *at <= now);
            if !due || meter.measuring.contains(&analysis.name) {
                continue;
            }
            meter.measuring.insert(analysis.name.clone());
            meter.next_at.insert(
                analysis.name.clone(),
                now + Duration::from_millis(analysis.interval_ms),
            );
            let (checks, analysis, tx) =
                (self.checks(), analysis.clone(), meter.analysed.0.clone());
            let (vars, since) = (placeholders(state), state.since_ms);
            let vars: Vec<(&'static str, String)> = vars.values;
            tokio::spawn(async move {
                let m = checks
                    .measure(&analysis, &Placeholders { values: vars })
                    .await;
                let _ = tx.send((since, m)).await;
            });
        }
        for m in &finished {
            self.record_analysis(state, stage, m).await;
        }
        finished
    }

    /// An analysis's measurement as an audit event of its own (`analysis`).
    async fn record_analysis(&self, state: &Rollout, stage: Stage, m: &Measurement) {
        let query = state
            .settings
            .analysis
            .iter()
            .find(|a| a.name == m.name)
            .map(|a| placeholders(state).render(&a.query, teal_core::rollout::promql_string));
        let detail = serde_json::json!({
            "rollout": state.id,
            "version": state.version,
            "stage": stage,
            "analysis": m.name,
            "query": query,
            "verdict": m.verdict,
            "values": m.values.iter().map(|v| if v.is_finite() { serde_json::json!(v) } else { serde_json::json!(v.to_string()) }).collect::<Vec<_>>(),
            "detail": m.detail,
        });
        self.record(&state.model, "analysis", detail).await;
    }

    /// Appends an audit event of the rollout's own (`kind`), with the live slot as it is.
    async fn record(&self, model: &str, kind: &str, detail: serde_json::Value) {
        let live = self
            .routes
            .load()
            .models
            .get(model)
            .and_then(|m| m.live().map(|s| (s.color.to_string(), s.version.clone())));
        let event = NewEvent {
            model: model.to_string(),
            kind: kind.into(),
            actor: "rollout".into(),
            live_slot: live.as_ref().map(|l| l.0.clone()),
            live_version: live.map(|l| l.1),
            detail,
        };
        if let Err(e) = self.blocking(move |store| store.append(event)).await {
            tracing::warn!(model, kind, error = %e, "could not record a rollout check in the audit trail");
        }
    }

    /// A webhook's call as an audit event of its own (`webhook`): delivered (what it
    /// answered) or not (why).
    async fn record_hook(
        &self,
        model: &str,
        rollout: i64,
        hook: &str,
        event: HookEvent,
        result: &Result<String, String>,
    ) {
        let detail = serde_json::json!({
            "rollout": rollout,
            "hook": hook,
            "event": event.as_str(),
            "delivered": result.is_ok(),
            "result": match result { Ok(r) | Err(r) => r },
        });
        self.record(model, "webhook", detail).await;
    }

    /// Sends the notifications the transitions call for (canary steps, the release, a
    /// rollback, an abort, a failure), each in its own task: a slow receiver never holds
    /// the rollout.
    fn notify(self: &Arc<Self>, state: &Rollout, effects: &[Effect]) {
        for effect in effects {
            let Effect::Record(t) = effect else { continue };
            let Some(event) = HookEvent::of_phase(&t.to) else {
                continue;
            };
            for hook in state.settings.hooks_on(event) {
                let (this, hook) = (self.clone(), hook.clone());
                let payload = payload(state, event, &t.cause);
                let (model, id) = (state.model.clone(), state.id);
                tokio::spawn(async move {
                    let sent = this.checks().deliver(&hook, event, &payload).await;
                    let sent = sent.map(|status| format!("answered {status}"));
                    if let Err(why) = &sent {
                        tracing::warn!(model, hook = %hook.name, event = event.as_str(), reason = %why, "webhook notification not taken");
                    }
                    this.record_hook(&model, id, &hook.name, event, &sent).await;
                });
            }
        }
    }

    /// Calls the `pre_rollout` webhooks; the first that does not answer 2xx stops the
    /// rollout before anything is deployed.
    async fn pre_rollout(&self, state: &Rollout) -> Option<Event> {
        let event = HookEvent::PreRollout;
        for hook in state.settings.hooks_on(event) {
            let payload = payload(state, event, "rollout starting");
            let sent = self.checks().deliver(hook, event, &payload).await;
            let sent = sent.map(|status| format!("answered {status}"));
            self.record_hook(&state.model, state.id, &hook.name, event, &sent)
                .await;
            if let Err(reason) = sent {
                return Some(Event::HookRefused {
                    hook: hook.name.clone(),
                    reason,
                });
            }
        }
        None
    }

    /// The operator's checks at the gates, after teal's own passed (or were inconclusive):
    /// the smoke tests and the confirm-promotion hooks before the first switch, and the
    /// analyses with `at` "gates" wherever the gates run. Returns the combined verdict and
    /// what each said, for the summary.
    async fn own_checks(
        self: &Arc<Self>,
        state: &Rollout,
        verdict: Verdict,
        gates: &str,
    ) -> (Verdict, Vec<String>) {
        let mut said = Said {
            worst: verdict,
            lines: Vec::new(),
        };
        let first = state.phase == Phase::Validating;
        if first && !state.settings.smoke_test.is_empty() {
            match self.smoke_tests(state).await {
                Ok(results) => {
                    for r in results {
                        let v = if r.passed {
                            Verdict::Pass
                        } else {
                            Verdict::Fail
                        };
                        let last = r
                            .output
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("");
                        said.add(
                            v,
                            format!(
                                "smoke test {} {} ({}{})",
                                r.name,
                                v.as_str(),
                                r.status,
                                if last.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {last}")
                                }
                            ),
                        );
                    }
                }
                Err(reason) => said.add(
                    Verdict::Inconclusive,
                    format!("smoke tests could not run: {reason}"),
                ),
            }
        }
        if said.worst == Verdict::Fail {
            return (said.worst, said.lines);
        }
        let analyses: Vec<_> = state.settings.analyses_at(Stage::Gates).cloned().collect();
        let vars = placeholders(state);
        let runs = analyses.iter().map(|a| self.gate_analysis(state, a, &vars));
        for m in futures::future::join_all(runs).await {
            said.add(
                m.verdict,
                format!("analysis {} {} ({})", m.name, m.verdict.as_str(), m.detail),
            );
        }
        // The switch is confirmed last, and only for a candidate that passed everything.
        if first && said.worst == Verdict::Pass {
            for hook in state.settings.hooks_on(HookEvent::PreSwitch) {
                let mut report = vec![gates.to_string()];
                report.extend(said.lines.iter().cloned());
                let payload = payload(state, HookEvent::PreSwitch, &report.join("; "));
                let (this, model, id) = (self.clone(), state.model.clone(), state.id);
                let wanted = move || {
                    this.active(&model)
                        .is_some_and(|r| r.id == id && r.phase == Phase::Validating)
                };
                let answer = self.checks().confirm(hook, &payload, wanted).await;
                let result = answer.clone().map(|()| "answered 200".to_string());
                self.record_hook(
                    &state.model,
                    state.id,
                    &hook.name,
                    HookEvent::PreSwitch,
                    &result,
                )
                .await;
                match answer {
                    Ok(()) => said.add(Verdict::Pass, format!("switch confirmed by {}", hook.name)),
                    Err(reason) => {
                        said.add(Verdict::Inconclusive,
                            format!("confirm hook {} {reason}: teal promote switches without it, teal abort stops", hook.name)
                        );
                        break;
                    }
                }
            }
        }
        (said.worst, said.lines)
    }

    /// An analysis at the gates (`Checks::gate_analysis`), each measurement recorded.
    async fn gate_analysis(
        &self,
        state: &Rollout,
        analysis: &teal_core::rollout::Analysis,
        vars: &Placeholders<'_>,
    ) -> Measurement {
        let (last, all) = self.checks().gate_analysis(analysis, vars).await;
        for m in &all {
            self.record_analysis(state, Stage::Gates, m).await;
        }
        last
    }

    /// Runs the smoke tests, one after another, against a listener where the candidate alone
    /// answers; each result is an audit event (`smoke_test`) with its output.
    async fn smoke_tests(
        &self,
        state: &Rollout,
    ) -> Result<Vec<crate::control::checks::SmokeOutcome>, String> {
        let door = self
            .door
            .get()
            .ok_or("this teal has no listener for the candidate")?;
        let open = door.open(&state.model, state.new_slot()).await?;
        let mut vars = placeholders(state);
        vars.values.retain(|(k, _)| *k != "slot");
        vars.values.push(("candidate_url", open.url.clone()));
        let mut results = Vec::new();
        for test in &state.settings.smoke_test {
            tracing::info!(model = %state.model, version = %state.version, test = %test.name, "smoke test starting");
            let r = run_smoke(test, &vars).await;
            tracing::info!(model = %state.model, version = %state.version, test = %r.name, passed = r.passed, status = %r.status, ms = r.duration_ms, "smoke test ended");
            self.record(
                &state.model,
                "smoke_test",
                serde_json::json!({
                    "rollout": state.id,
                    "version": state.version,
                    "test": r.name,
                    "passed": r.passed,
                    "status": r.status,
                    "duration_ms": r.duration_ms,
                    "output": r.output,
                }),
            )
            .await;
            let failed = !r.passed;
            results.push(r);
            if failed {
                break;
            }
        }
        drop(open);
        Ok(results)
    }

    /// Performs effects in order; long ones run in the background and report back.
    async fn perform(
        self: &Arc<Self>,
        state: &Rollout,
        candidate: &SlotConfig,
        effects: Vec<Effect>,
        done: &mpsc::Sender<Event>,
    ) {
        for effect in effects {
            let model = state.model.clone();
            let this = self.clone();
            let done = done.clone();
            match effect {
                Effect::Record(_) => {}
                Effect::Route(route) => {
                    let before = self
                        .routes
                        .load()
                        .models
                        .get(&model)
                        .map(|m| m.table.active);
                    match self.routes.apply(&model, route) {
                        Ok(true) => {
                            tracing::info!(model, active = %route.active, weight_bp = route.weight, shadow_bp = route.shadow, "route published");
                            if before != Some(route.active) {
                                self.metrics
                                    .switches
                                    .get_or_create(&ModelLabels {
                                        model: model.clone(),
                                    })
                                    .inc();
                            }
                            remember(&self.routes, &self.store, &model).await;
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(model, error = %e, "cannot publish the rollout's route")
                        }
                    }
                    if state.phase == teal_core::rollout::Phase::Switching {
                        let _ = done.send(Event::Switched).await;
                    }
                }
                Effect::Deploy => {
                    let (candidate, version, color) =
                        (candidate.clone(), state.version.clone(), state.new_slot());
                    let state_now = state.clone();
                    tokio::spawn(async move {
                        let already = this
                            .routes
                            .load()
                            .models
                            .get(&model)
                            .and_then(|m| m.slot(color).map(|s| s.version == version))
                            .unwrap_or(false);
                        let refused = match already {
                            true => None,
                            false => this.pre_rollout(&state_now).await,
                        };
                        let event = if already {
                            Event::Deployed
                        } else if let Some(refused) = refused {
                            refused
                        } else {
                            match this.slots.deploy(&model, &candidate, None).await {
                                Ok(outcome) => {
                                    remember(&this.routes, &this.store, &model).await;
                                    if let Some(provenance) = outcome.provenance {
                                        this.record_fetched(&model, &version, provenance).await;
                                    }
                                    Event::Deployed
                                }
                                Err(e) => Event::DeployFailed {
                                    reason: e.to_string(),
                                },
                            }
                        };
                        let _ = done.send(event).await;
                    });
                }
                Effect::WarmUp => {
                    let (color, version) = (state.new_slot(), state.version.clone());
                    let wait = warm_up_deadline(candidate);
                    tokio::spawn(async move {
                        let deadline = tokio::time::Instant::now() + wait;
                        let event = loop {
                            let ready = this
                                .routes
                                .load()
                                .models
                                .get(&model)
                                .and_then(|m| m.slot(color).cloned())
                                .filter(|s| s.version == version)
                                .map(|s| s.backend.ready());
                            match ready {
                                Some(true) => break Event::Ready,
                                None => {
                                    break Event::NotReady {
                                        reason: format!("no {color} slot holds {version}"),
                                    };
                                }
                                Some(false) if tokio::time::Instant::now() >= deadline => {
                                    break Event::NotReady {
                                        reason: format!("not ready within {} s", wait.as_secs()),
                                    };
                                }
                                Some(false) => tokio::time::sleep(Duration::from_millis(100)).await,
                            }
                        };
                        let _ = done.send(event).await;
                    });
                }
                Effect::RunGates => {
                    let state = state.clone();
                    tokio::spawn(async move {
                        let event = this.run_gates(&state).await;
                        let _ = done.send(event).await;
                    });
                }
                Effect::TearDownOld | Effect::RemoveCandidate => {
                    let (color, event) = match effect {
                        Effect::TearDownOld => (state.old, Event::TornDown),
                        _ => (state.new_slot(), Event::CandidateRemoved),
                    };
                    tokio::spawn(async move {
                        loop {
                            match this.slots.teardown(&model, Some(color), None).await {
                                Ok(_) => {
                                    remember(&this.routes, &this.store, &model).await;
                                    break;
                                }
                                // Already gone: done.
                                Err(SlotError::Route(_)) => break,
                                Err(e) => {
                                    tracing::warn!(model, error = %e, "teardown must wait");
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            }
                        }
                        let _ = done.send(event).await;
                    });
                }
            }
        }
    }

    /// Runs teal's gates, then the operator's own checks, and reports the combined verdict.
    async fn run_gates(self: &Arc<Self>, state: &Rollout) -> Event {
        let Event::Gates { verdict, summary } = self.run_own_gates(state).await else {
            unreachable!("run_own_gates answers with the gates' verdict")
        };
        if verdict == Verdict::Fail {
            return Event::Gates { verdict, summary };
        }
        let (verdict, said) = self.own_checks(state, verdict, &summary).await;
        let summary = match said.is_empty() {
            true => summary,
            false => format!("{summary}; {}", said.join("; ")),
        };
        Event::Gates { verdict, summary }
    }

    /// Validates the candidate with the rollout's evidence and reports the verdict.
    async fn run_own_gates(self: &Arc<Self>, state: &Rollout) -> Event {
        let source = match (&state.settings.strategy, &state.settings.evidence) {
            (Strategy::ShadowThenSwitch { window_ms, .. }, _) => Source::Shadow {
                samples: 100_000,
                window_ms: *window_ms,
            },
            (_, Some(teal_core::rollout::Evidence::Holdout(path))) => {
                Source::Holdout { path: path.clone() }
            }
            (_, Some(teal_core::rollout::Evidence::Replay(n))) => Source::Replay { samples: *n },
            (_, Some(teal_core::rollout::Evidence::Shadow(n))) => Source::Shadow {
                samples: *n,
                window_ms: 60_000,
            },
            (_, None) => {
                return Event::Gates {
                    verdict: teal_core::gates::Verdict::Pass,
                    summary: "no evidence configured; health only".into(),
                };
            }
        };
        let id = loop {
            match self
                .validator
                .start_for_rollout(&state.model, source.clone())
            {
                Ok(id) => break id,
                // A validation someone started by hand: wait for it to end.
                Err(crate::control::validation::ValidationError::Busy(_)) => {
                    self.validator.idle(&state.model).await
                }
                Err(e) => {
                    return Event::Gates {
                        verdict: teal_core::gates::Verdict::Inconclusive,
                        summary: format!("validation could not run: {e}"),
                    };
                }
            }
        };
        let Some(status) = self.validator.finished(id).await else {
            return Event::Gates {
                verdict: teal_core::gates::Verdict::Inconclusive,
                summary: "validation was forgotten".into(),
            };
        };
        match (status.report, status.error) {
            (Some(report), _) => {
                let mut summary = report
                    .gates
                    .iter()
                    .map(|g| format!("{} {}", g.gate, g.verdict.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ");
                // Say why each gate that did not pass did not, so the outcome explains itself.
                for g in report
                    .gates
                    .iter()
                    .filter(|g| g.verdict != teal_core::gates::Verdict::Pass)
                {
                    summary.push_str(&format!("; {}: {}", g.gate, g.reason));
                }
                Event::Gates {
                    verdict: report.verdict,
                    summary: format!(
                        "{} samples from {}: {summary}",
                        report.samples, report.source
                    ),
                }
            }
            (None, Some(error)) => Event::Gates {
                verdict: teal_core::gates::Verdict::Inconclusive,
                summary: format!("validation failed to run: {error}"),
            },
            (None, None) => Event::Gates {
                verdict: teal_core::gates::Verdict::Inconclusive,
                summary: "validation ended without a report".into(),
            },
        }
    }
}

/// The candidate's readiness deadline: its own for process and upstream slots, else 30 s.
fn warm_up_deadline(candidate: &SlotConfig) -> Duration {
    match &candidate.backend {
        teal_core::config::BackendConfig::Upstream(r)
        | teal_core::config::BackendConfig::Process(r) => {
            Duration::from_millis(r.ready_timeout_ms.max(1_000))
        }
        teal_core::config::BackendConfig::Onnx { .. } => Duration::from_secs(30),
    }
}

/// The last snapshot of each slot's counts, to measure intervals.
#[derive(Default)]
struct Meter {
    old: Option<StatsSnapshot>,
    new: Option<StatsSnapshot>,
    /// The concurrent baseline's pairs, while the candidate is watched.
    pairs: Option<mpsc::Receiver<teal_core::gates::Observation>>,
    /// Analyses' measurements as they finish, with the start of the phase they were taken in.
    analysed: Analysed,
    /// Analyses being measured.
    measuring: std::collections::HashSet<String>,
    /// When each analysis is next due, in the phase that began at `phase_since`.
    next_at: std::collections::HashMap<String, tokio::time::Instant>,
    phase_since: i64,
}

/// The channel measurements come back on.
struct Analysed(
    mpsc::Sender<(i64, Measurement)>,
    mpsc::Receiver<(i64, Measurement)>,
);

impl Default for Analysed {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(64);
        Analysed(tx, rx)
    }
}

/// Pairs kept between two checks; more are dropped (a check needs far fewer).
const PAIRS_PER_CHECK: usize = 4096;

/// A concurrent-baseline pair as the rules read it. The gateway sends each pair as (the
/// active slot's answer, the other slot's): `old_is_live` says which of them is the old
/// version.
fn pair(o: &teal_core::gates::Observation, old_is_live: bool) -> teal_core::rollout::Pair {
    if old_is_live {
        teal_core::rollout::Pair::of(&o.live, &o.candidate)
    } else {
        teal_core::rollout::Pair::of(&o.candidate, &o.live)
    }
}

/// What the state file remembers of a model: what each slot runs and how traffic is split.
fn model_state(m: &crate::routing::ModelRoutes) -> ModelState {
    ModelState {
        model: m.name.clone(),
        active: m.table.active.to_string(),
        weight: m.table.candidate_weight,
        shadow: m.table.shadow,
        slots: m
            .slots
            .iter()
            .flatten()
            .map(|s| {
                (
                    s.color.to_string(),
                    serde_json::to_value(&s.config).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// Writes a model's slots and route to the state file, so a restart brings them back.
pub async fn remember(routes: &Routes, store: &Arc<Store>, model: &str) {
    let snapshot = routes.load();
    let Some(m) = snapshot.models.get(model) else {
        return;
    };
    let state = model_state(m);
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.save_model_state(&state)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(model = %model, error = %e, "cannot remember the model's slots")
        }
        Err(e) => tracing::error!(model = %model, error = %e, "state writer crashed"),
    }
}

/// The record of a hand-made routing change, for the `Routes::*_recorded` writers: the
/// model's slots and route as they are about to be published, with the change's audit event
/// (`kind`, by `actor`, the live slot after it, `detail` read from the outcome), in one
/// transaction. It blocks on the state file, under the routing's writer lock: run the writer
/// off the async runtime.
pub fn record_change<T>(
    store: &Store,
    kind: &str,
    actor: String,
    detail: impl FnOnce(&T) -> serde_json::Value,
) -> impl FnOnce(&crate::routing::ModelRoutes, &T) -> Result<(), crate::state::store::StoreError> {
    move |next, outcome| {
        let live = next.live();
        let event = NewEvent {
            model: next.name.clone(),
            kind: kind.to_string(),
            actor,
            live_slot: live.map(|s| s.color.to_string()),
            live_version: live.map(|s| s.version.clone()),
            detail: detail(outcome),
        };
        store
            .save_model_change(&model_state(next), event)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drivers_clock_follows_tokio_time_so_windows_can_be_tested_without_waiting() {
        let clock = Clock::new();
        let start = clock.now_ms();
        // A seven-day keep-warm window passes in no real time.
        tokio::time::advance(Duration::from_secs(7 * 86_400)).await;
        assert_eq!(clock.now_ms() - start, 7 * 86_400_000);
        let mut ticks = tokio::time::interval(Duration::from_millis(250));
        ticks.tick().await;
        let before = clock.now_ms();
        for _ in 0..4 {
            ticks.tick().await;
        }
        assert_eq!(clock.now_ms() - before, 1_000);
    }
}
