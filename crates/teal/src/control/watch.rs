//! Following a registry alias (`[model.source] watch`): when the alias moves to another
//! version than the live one, that version is rolled out with the model's rollout settings;
//! when it moves back to the version being replaced during the rollout, the rollout is
//! aborted (before the switch) or rolled back (after it). The alias moving is the deploy; the rollout's gates and rules
//! still decide whether the version stays.

use std::sync::Arc;
use std::time::Duration;

use teal_core::config::{BackendConfig, SlotConfig, WatchConfig};
use teal_core::rollout::Event;
use teal_core::source::Source;
use tokio::sync::watch;

use super::rollout::Rollouts;
use crate::backends::fetch::Fetcher;
use crate::routing::Routes;

/// The version name teal gives a registry version: the registered model's name and the
/// version number (`fraud-7`), with anything a version name cannot hold made a '-'.
pub fn version_name(registered: &str, version: &str) -> String {
    format!("{registered}-{version}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Follows `config.watch` for `model` until `stop` says teal is stopping.
pub fn spawn(
    model: String,
    config: WatchConfig,
    routes: Arc<Routes>,
    rollouts: Arc<Rollouts>,
    fetcher: Arc<Fetcher>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(Source::Registry { name, .. }) = Source::parse(&config.watch) else {
            return;
        };
        let actor = format!("watch {}", config.watch);
        let mut follower = Follower {
            model,
            registered: name,
            actor,
            attempted: None,
            failing: None,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(config.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            follower
                .check(&config.watch, &routes, &rollouts, &fetcher)
                .await;
        }
    })
}

struct Follower {
    model: String,
    registered: String,
    actor: String,
    /// The version last rolled out because of the alias: not started again while the alias
    /// stays on it (a rollout that failed is not retried until the alias moves).
    attempted: Option<String>,
    /// The last error reading the registry, logged once until it changes.
    failing: Option<String>,
}

impl Follower {
    async fn check(
        &mut self,
        alias: &str,
        routes: &Routes,
        rollouts: &Arc<Rollouts>,
        fetcher: &Fetcher,
    ) {
        let number = match fetcher.resolve(alias).await {
            Ok(number) => {
                if self.failing.take().is_some() {
                    tracing::info!(model = %self.model, alias, "the registry answers again");
                }
                number
            }
            Err(e) => {
                if self.failing.as_ref() != Some(&e) {
                    tracing::warn!(model = %self.model, alias, error = %e, "cannot read the alias; the live version keeps serving");
                    self.failing = Some(e);
                }
                return;
            }
        };
        let wanted = version_name(&self.registered, &number);
        if let Some(running) = rollouts.active(&self.model) {
            // The alias moved back to the version the rollout replaces: the rollout is
            // stopped. (Moved on to yet another version, the rollout ends first, and that
            // version is rolled out after it.)
            // Only a rollout the alias asked for (this watch started it, or, after a restart,
            // it carries the name the watch gives): an operator's own rollout of the model
            // is theirs.
            let back = running.old_version.as_ref() == Some(&wanted);
            let ours = self.attempted.as_ref() == Some(&running.version)
                || running
                    .version
                    .starts_with(&version_name(&self.registered, ""));
            if running.version != wanted && back && ours {
                // The alias moved away from the version being rolled out.
                let event = if running.phase.after_switch() {
                    Event::Rollback {
                        actor: self.actor.clone(),
                    }
                } else {
                    Event::Abort {
                        actor: self.actor.clone(),
                    }
                };
                tracing::info!(model = %self.model, alias, from = %running.version, to = %wanted, "the alias moved during the rollout; stopping it");
                if let Err(e) = rollouts.command(&self.model, event).await {
                    tracing::warn!(model = %self.model, error = %e, "could not stop the rollout the alias moved away from");
                }
            }
            return;
        }
        let snapshot = routes.load();
        let Some(current) = snapshot.models.get(&self.model) else {
            return;
        };
        let Some(live) = current.live() else {
            return;
        };
        if live.version == wanted {
            self.attempted = Some(wanted);
            return;
        }
        if self.attempted.as_ref() == Some(&wanted) {
            return;
        }
        // The new version runs as the live one does; only where it comes from changes.
        let mut candidate: SlotConfig = live.config.clone();
        candidate.version = wanted.clone();
        candidate.backend = match candidate.backend {
            BackendConfig::Onnx {
                workers,
                intra_op_threads,
                inter_op_threads,
                optimization,
                ..
            } => BackendConfig::Onnx {
                path: Default::default(),
                source: Some(format!("models:/{}/{number}", self.registered)),
                sha256: None,
                reference: None,
                workers,
                intra_op_threads,
                inter_op_threads,
                optimization,
            },
            // A command that serves a registry version (its `{source}`): the same command,
            // given the new version. It starts only where the config file allows commands.
            BackendConfig::Process(mut remote) if remote.source.is_some() => {
                remote.source = Some(format!("models:/{}/{number}", self.registered));
                BackendConfig::Process(remote)
            }
            _ => {
                tracing::warn!(model = %self.model, "the live slot neither runs in process nor serves a registry source ({{source}} in a process slot's command); a registry version cannot replace it");
                self.attempted = Some(wanted);
                return;
            }
        };
        tracing::info!(model = %self.model, alias, version = %wanted, "the alias moved; rolling the version out");
        let started = rollouts
            .start(
                &self.model,
                candidate,
                rollouts.settings(&self.model),
                &self.actor,
            )
            .await;
        match started {
            // Started: not started again while the alias stays (a failed rollout is not
            // retried until the alias moves). Not started: tried again at the next poll.
            Ok(_) => self.attempted = Some(wanted),
            Err(e) => {
                tracing::warn!(model = %self.model, version = %wanted, error = %e, "the rollout the alias asked for did not start; trying again at the next poll");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_versions_get_version_names() {
        assert_eq!(version_name("fraud", "7"), "fraud-7");
        assert_eq!(version_name("my model/x", "12"), "my-model-x-12");
    }
}
