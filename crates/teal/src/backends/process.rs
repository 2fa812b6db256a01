//! A model server teal starts itself: it picks a port, runs the command in its own process
//! group, logs what the server prints, waits for readiness, and fronts it like an upstream.
//! Stopping sends SIGTERM to the whole group, then SIGKILL after a grace period, so a server
//! that forks workers (MLServer does) leaves nothing behind. The command starts with a clean
//! environment ([`PASSED_ENVIRONMENT`], the slot's `env`, `TEAL_PORT`): teal's secrets are
//! not the model server's.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use teal_core::config::RemoteConfig;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use super::LoadError;
use super::upstream::UpstreamModel;

/// How many of the server's last output lines an error message quotes.
const TAIL_LINES: usize = 20;

/// What a slot's command gets of teal's own environment: the basics a shell and an
/// interpreter need to start (finding programs, a home folder, the locale, the time zone, a
/// temporary folder), none of them secrets. Everything else, `TEAL_ADMIN_TOKEN` and
/// `TEAL_FEEDBACK_TOKEN` among it, stays with teal; the slot's `env` names what else the
/// server needs.
pub const PASSED_ENVIRONMENT: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// A supervised server process.
pub struct ProcessModel {
    pub upstream: UpstreamModel,
    pid: u32,
    port: u16,
    command: String,
    exited: watch::Receiver<Option<String>>,
    grace: Duration,
}

/// The process as the admin API reports it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ProcessStatus {
    pub pid: u32,
    pub port: u16,
    pub command: String,
    pub running: bool,
    pub exit: Option<String>,
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn signal_group(pid: u32, signal: Signal) {
    // The child leads its own group (process_group(0)), so its id is the group's id. Never
    // 0 or 1: killpg would then reach teal's own group, or every process.
    if pid > 1 {
        let _ = killpg(Pid::from_raw(pid as i32), signal);
    }
}

/// The registry version a command serves (a process slot's `source`).
pub struct Serves {
    /// `models:/NAME/N`, what `{source}` becomes.
    pub source: String,
    /// The tracking server, given to the command as `MLFLOW_TRACKING_URI`.
    pub tracking_uri: Option<String>,
}

impl ProcessModel {
    /// Starts the command and waits until the server is ready, or fails with its last output.
    pub async fn start(
        model: &str,
        version: &str,
        settings: &RemoteConfig,
        serves: Option<Serves>,
    ) -> Result<ProcessModel, LoadError> {
        let template = settings.command.clone().unwrap_or_default();
        let port =
            free_port().map_err(|e| LoadError::Runtime(format!("cannot find a free port: {e}")))?;
        let source = serves
            .as_ref()
            .map(|s| s.source.as_str())
            .unwrap_or_default();
        let fill = |text: &str| {
            text.replace("{port}", &port.to_string())
                .replace("{model}", model)
                .replace("{version}", version)
                .replace("{source}", source)
        };
        // Where the command reads the registry: the tracking URI only, never a credential
        // (a token reaches a command only when the slot's env names it).
        let tracking = serves
            .as_ref()
            .and_then(|s| s.tracking_uri.clone())
            .map(|uri| ("MLFLOW_TRACKING_URI", uri));
        let command = fill(&template);
        let mut builder = tokio::process::Command::new("sh");
        builder
            .arg("-c")
            .arg(format!("exec {command}"))
            .env_clear()
            .envs(
                PASSED_ENVIRONMENT
                    .iter()
                    .filter_map(|name| std::env::var_os(name).map(|value| (name, value))),
            )
            .envs(tracking)
            .envs(settings.env.iter().map(|(k, v)| (k, fill(v))))
            .env("TEAL_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &settings.workdir {
            builder.current_dir(dir);
        }
        let mut child = builder
            .spawn()
            .map_err(|e| LoadError::Runtime(format!("cannot start `{command}`: {e}")))?;
        let pid = child.id().unwrap_or_default();
        tracing::info!(model, version, pid, port, %command, "slot process started");

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        for (stream, name) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                "stdout",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                "stderr",
            ),
        ] {
            let Some(stream) = stream else { continue };
            let (tail, model, version) = (tail.clone(), model.to_string(), version.to_string());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(target: "teal::slot_process", model, version, stream = name, "{line}");
                    let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let (exit_tx, exit_rx) = watch::channel(None);
        let (model_name, version_name) = (model.to_string(), version.to_string());
        tokio::spawn(async move {
            let status = child.wait().await;
            // Workers the server forked go with it, now, while the group id is still theirs
            // (a group id is only reused once the whole group is gone).
            signal_group(pid, Signal::SIGKILL);
            let text = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(model = model_name, version = version_name, pid, status = %text, "slot process exited");
            let _ = exit_tx.send(Some(text));
        });

        let url = format!("http://127.0.0.1:{port}");
        let wait = Duration::from_millis(settings.ready_timeout_ms);
        let mut exited = exit_rx.clone();
        let connect = UpstreamModel::connect(model, std::slice::from_ref(&url), settings, wait);
        let outcome = tokio::select! {
            result = connect => result.map_err(|e| e.to_string()),
            status = exited.wait_for(Option::is_some) => {
                let status = status.map(|s| s.clone().unwrap_or_default()).unwrap_or_default();
                Err(format!("`{command}` exited ({status}) before it was ready"))
            }
        };
        match outcome {
            Ok(upstream) => Ok(ProcessModel {
                upstream,
                pid,
                port,
                command,
                exited: exit_rx,
                grace: Duration::from_millis(settings.stop_grace_ms),
            }),
            Err(reason) => {
                // Still starting (readiness timed out): stop it. If it exited, the watcher
                // already cleaned up its group.
                if exit_rx.borrow().is_none() {
                    signal_group(pid, Signal::SIGKILL);
                }
                let output: Vec<String> = tail
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .cloned()
                    .collect();
                let output = if output.is_empty() {
                    "(nothing)".to_string()
                } else {
                    output.join("\n  ")
                };
                Err(LoadError::Runtime(format!(
                    "{reason}; its last output:\n  {output}"
                )))
            }
        }
    }

    /// Resident memory (MiB) and CPU time (seconds) of the server's process group, from /proc.
    pub fn usage(&self) -> Option<(f64, f64)> {
        if !self.running() {
            return None;
        }
        let ticks = 100.0; // USER_HZ on Linux
        let (mut rss_kb, mut cpu_ticks) = (0u64, 0u64);
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command name: state is 0, pgrp is 2, utime 11, stime 12.
            let fields: Vec<&str> = stat
                .rsplit(") ")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if fields.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(self.pid) {
                continue;
            }
            cpu_ticks += fields
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            cpu_ticks += fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            rss_kb += status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some((rss_kb as f64 / 1024.0, cpu_ticks as f64 / ticks))
    }

    pub fn running(&self) -> bool {
        self.exited.borrow().is_none()
    }

    pub fn status(&self) -> ProcessStatus {
        ProcessStatus {
            pid: self.pid,
            port: self.port,
            command: self.command.clone(),
            running: self.running(),
            exit: self.exited.borrow().clone(),
        }
    }

    /// SIGTERM to the process group, SIGKILL after the grace period; returns once it exited.
    pub async fn stop(&self) {
        if !self.running() {
            return;
        }
        signal_group(self.pid, Signal::SIGTERM);
        let mut exited = self.exited.clone();
        if tokio::time::timeout(self.grace, exited.wait_for(Option::is_some))
            .await
            .is_err()
        {
            tracing::warn!(pid = self.pid, grace = ?self.grace, "slot process ignored SIGTERM; sending SIGKILL");
            signal_group(self.pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(Option::is_some))
                .await;
        }
        // The exit watcher killed what was left of the group as soon as the server exited.
    }
}

impl Drop for ProcessModel {
    fn drop(&mut self) {
        // Whatever path dropped the slot, its processes go too. Once the server has exited
        // its group was already killed, and its id may belong to someone else by now.
        if self.running() {
            signal_group(self.pid, Signal::SIGKILL);
        }
    }
}
