//! `teal deploy` and the verbs that drive a rollout (promote, abort), and following one
//! as it moves through its phases.

use super::*;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["onnx", "from", "upstream", "command"])))]
pub struct DeployArgs {
    /// The model to deploy to.
    pub model: String,
    /// The new version's name.
    #[arg(long)]
    pub version: String,
    /// An ONNX file, served in-process.
    #[arg(long, value_name = "PATH")]
    pub onnx: Option<PathBuf>,
    /// An ONNX model fetched by teal, served in-process: a version in the MLflow registry
    /// (models:/NAME@ALIAS or models:/NAME/VERSION, on server.mlflow_uri) or an https:// URL.
    #[arg(long, value_name = "URI")]
    pub from: Option<String>,
    /// With --from: the SHA-256 (hex) the fetched file must have.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// With --onnx or --from: reference outputs the version must reproduce before it may
    /// serve.
    #[arg(long, value_name = "PATH")]
    pub reference: Option<PathBuf>,
    /// Base URLs of running model-server replicas (repeat or comma-separate).
    #[arg(long, value_name = "URL", num_args = 1.., value_delimiter = ',')]
    pub upstream: Vec<String>,
    /// A command that starts a model server on {port}; teal runs and supervises it.
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,
    /// How teal speaks to an upstream or process: v2 or json.
    #[arg(long, default_value = "v2", value_parser = ["v2", "json"])]
    pub protocol: String,
    /// How long the version may take to become ready, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub ready_timeout: u64,
    /// A model-card field, KEY=VALUE (repeat for more).
    #[arg(long, value_name = "KEY=VALUE")]
    pub card: Vec<String>,
    /// Only load the version into the standby slot; no rollout.
    #[arg(long)]
    pub standby_only: bool,
    /// How the version reaches traffic.
    #[arg(long, value_parser = ["blue-green", "canary", "shadow-then-switch"])]
    pub strategy: Option<String>,
    /// Canary steps as PERCENT:PAUSE, comma-separated; PAUSE is a duration (30s, 5m) or
    /// `manual` (wait for teal promote); add `:gates` to validate at the end of a step.
    /// Example: 10:1m,50:manual,90:30s:gates
    #[arg(long, value_name = "STEPS")]
    pub steps: Option<String>,
    /// With shadow-then-switch: how long to mirror, e.g. 2m.
    #[arg(long, value_name = "DURATION")]
    pub shadow_window: Option<String>,
    /// Wait for teal promote before switching, even when the gates pass.
    #[arg(long)]
    pub manual: bool,
    /// Wait this long after the gates pass before switching, e.g. 30s.
    #[arg(long, value_name = "DURATION")]
    pub switch_delay: Option<String>,
    /// How long to watch the new version with the rollback rules armed, e.g. 10m.
    #[arg(long, value_name = "DURATION")]
    pub observe: Option<String>,
    /// How long the old version stays loaded after the bake, e.g. 7d or 0s.
    #[arg(long, value_name = "DURATION")]
    pub keep_warm: Option<String>,
    /// Validate on this labelled holdout file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["replay", "no_evidence"])]
    pub holdout: Option<PathBuf>,
    /// Validate on the newest N requests captured from live traffic.
    #[arg(long, value_name = "N", conflicts_with = "no_evidence")]
    pub replay: Option<usize>,
    /// Check only health before switching.
    #[arg(long)]
    pub no_evidence: bool,
    /// Stop the new version too when the rollout is aborted or fails.
    #[arg(long)]
    pub remove_on_abort: bool,
    /// When the bake or a canary step ends without enough traffic to judge: extend (lengthen
    /// it, then wait), wait (for teal promote), or promote (go on regardless).
    #[arg(long, value_parser = ["extend", "wait", "promote"])]
    pub on_inconclusive: Option<String>,
    /// Let requests the new version fails reach the client, rather than having the warm old
    /// version answer them while the new one is watched.
    #[arg(long)]
    pub no_failover: bool,
    /// Share of requests, 0 to 1, sent to both versions at once while the new one is watched,
    /// for the rules to compare them at the same moment (default 0.05).
    #[arg(long, value_name = "SHARE")]
    pub baseline_share: Option<f64>,
    /// Follow the rollout until it ends or waits for an operator.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl DeployArgs {
    /// The slot description the admin API takes: the same fields as a config slot.
    pub(crate) fn slot_config(&self) -> anyhow::Result<serde_json::Value> {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut card = serde_json::Map::new();
        for pair in &self.card {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--card {pair}: write it as KEY=VALUE"))?;
            card.insert(k.to_string(), v.into());
        }
        if self.reference.is_some() && self.onnx.is_none() && self.from.is_none() {
            anyhow::bail!(
                "--reference goes with --onnx or --from: a model server checks its own answers"
            );
        }
        if self.sha256.is_some() && self.from.is_none() {
            anyhow::bail!("--sha256 pins the file of --from: give --from too");
        }
        let mut slot = serde_json::json!({ "version": self.version, "card": card });
        let ready_timeout_ms = self.ready_timeout * 1000;
        if self.onnx.is_some() || self.from.is_some() {
            slot["kind"] = "onnx".into();
            if let Some(path) = &self.onnx {
                slot["path"] = absolute(path).display().to_string().into();
            }
            if let Some(source) = &self.from {
                slot["source"] = source.clone().into();
            }
            if let Some(pin) = &self.sha256 {
                slot["sha256"] = pin.clone().into();
            }
            if let Some(reference) = &self.reference {
                slot["reference"] = absolute(reference).display().to_string().into();
            }
        } else if let Some(command) = &self.command {
            slot["kind"] = "process".into();
            slot["command"] = command.clone().into();
            slot["workdir"] = std::env::current_dir()?.display().to_string().into();
            slot["protocol"] = self.protocol.clone().into();
            slot["ready_timeout_ms"] = ready_timeout_ms.into();
        } else {
            slot["kind"] = "upstream".into();
            slot["urls"] = self.upstream.clone().into();
            slot["protocol"] = self.protocol.clone().into();
            slot["ready_timeout_ms"] = ready_timeout_ms.into();
        }
        Ok(slot)
    }

    /// The settings this rollout overrides, as the admin API takes them.
    pub(crate) fn settings(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        use teal_core::rollout::parse_duration;
        let duration = |flag: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
        };
        let mut out = serde_json::Map::new();
        let strategy = self
            .strategy
            .as_deref()
            .or(match (&self.steps, &self.shadow_window) {
                (Some(_), _) => Some("canary"),
                (None, Some(_)) => Some("shadow-then-switch"),
                _ => None,
            });
        match strategy {
            Some("blue-green") => {
                out.insert(
                    "strategy".into(),
                    serde_json::json!({ "kind": "blue_green" }),
                );
            }
            Some("canary") => {
                let text = self.steps.as_deref().unwrap_or("10:1m,50:1m");
                let mut steps = Vec::new();
                for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let mut fields = part.split(':');
                    let percent: f64 = fields
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('%')
                        .parse()
                        .with_context(|| {
                            format!("--steps {part}: start each step with a percent, like 10:1m")
                        })?;
                    let pause = match fields.next() {
                        None | Some("manual") => None,
                        Some(d) => Some(duration("steps", d)?),
                    };
                    let gates = match fields.next() {
                        None => false,
                        Some("gates") => true,
                        Some(other) => bail!(
                            "--steps {part}: '{other}' is not known; only 'gates' may follow the pause"
                        ),
                    };
                    steps.push(serde_json::json!({ "percent": percent, "pause_ms": pause, "gates": gates }));
                }
                out.insert(
                    "strategy".into(),
                    serde_json::json!({ "kind": "canary", "steps": steps }),
                );
            }
            Some(_) => {
                let window = match &self.shadow_window {
                    Some(w) => duration("shadow-window", w)?,
                    None => 60_000,
                };
                out.insert(
                    "strategy".into(),
                    serde_json::json!({ "kind": "shadow_then_switch", "window_ms": window, "percent": 100.0 }),
                );
            }
            None => {}
        }
        if self.manual {
            out.insert("auto_switch".into(), false.into());
        }
        for (flag, key, value) in [
            ("switch-delay", "switch_delay_ms", &self.switch_delay),
            ("observe", "observe_ms", &self.observe),
            ("keep-warm", "keep_warm_ms", &self.keep_warm),
        ] {
            if let Some(text) = value {
                out.insert(key.into(), duration(flag, text)?.into());
            }
        }
        if let Some(path) = &self.holdout {
            out.insert(
                "evidence".into(),
                serde_json::json!({ "holdout": std::path::absolute(path)? }),
            );
        } else if let Some(n) = self.replay {
            out.insert("evidence".into(), serde_json::json!({ "replay": n }));
        } else if self.no_evidence {
            out.insert("evidence".into(), serde_json::Value::Null);
        }
        if self.remove_on_abort {
            out.insert("abort_removes_green".into(), true.into());
        }
        if let Some(choice) = &self.on_inconclusive {
            out.insert("on_inconclusive".into(), choice.as_str().into());
        }
        if self.no_failover {
            out.insert("failover".into(), false.into());
        }
        if let Some(share) = self.baseline_share {
            if !(0.0..=1.0).contains(&share) {
                bail!("--baseline-share {share}: give a share between 0 and 1, like 0.05");
            }
            out.insert(
                "rules".into(),
                serde_json::json!({ "baseline_share": share }),
            );
        }
        Ok(out)
    }
}

pub(crate) async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let slot = args.slot_config()?;
    if !args.standby_only {
        let settings = args.settings()?;
        let client = args.admin.client()?;
        let answer = call(
            &client,
            &format!("/api/v1/models/{}/rollouts", args.model),
            Some(serde_json::json!({ "candidate": slot, "settings": settings })),
        )
        .await?;
        if !args.watch {
            print_rollout(&answer, args.admin.json)?;
            if !args.admin.json {
                println!("follow it with: teal status {} --watch", args.model);
            }
            return Ok(());
        }
        return follow_rollout(&args.model, &args.admin).await;
    }
    let client = args
        .admin
        .client()?
        .with_timeout(Duration::from_secs(args.ready_timeout + 60));
    if !args.admin.json {
        eprintln!(
            "deploying {} {} into the standby slot; waiting for it to load and pass its checks",
            args.model, args.version
        );
    }
    let answer = call(
        &client,
        &format!("/api/v1/models/{}/deploy", args.model),
        Some(slot),
    )
    .await?;
    if args.admin.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let outcome: crate::control::slots::DeployOutcome = serde_json::from_value(answer)?;
    let replaced = outcome
        .replaced
        .map(|v| format!(", replacing {v}"))
        .unwrap_or_default();
    println!(
        "{}: {} ({}) is ready in the {} slot after {} ms{replaced}",
        outcome.model, outcome.version, outcome.kind, outcome.slot, outcome.load_ms
    );
    println!(
        "make it live with: teal switch {} --to {}",
        outcome.model, outcome.slot
    );
    Ok(())
}

pub(crate) async fn rollout_verb(model: &str, verb: &str, admin: AdminArgs) -> anyhow::Result<()> {
    let client = admin.client()?;
    let answer = call(
        &client,
        &format!("/api/v1/models/{model}/{verb}"),
        Some(serde_json::json!({})),
    )
    .await?;
    print_rollout(&answer, admin.json)
}

/// Follows a rollout until it ends or waits for an operator, one line per phase change.
pub(crate) async fn follow_rollout(model: &str, admin: &AdminArgs) -> anyhow::Result<()> {
    let client = admin.client()?;
    let mut last = String::new();
    loop {
        let answer = call(&client, &format!("/api/v1/models/{model}/rollout"), None).await?;
        let view: crate::routing::RolloutView = serde_json::from_value(answer.clone())?;
        if view.phase_name != last {
            last = view.phase_name.clone();
            if admin.json {
                println!("{}", serde_json::to_string(&answer)?);
            } else {
                print!("{}", render_rollout(&view));
            }
        }
        if view.terminal || view.phase_name == "awaiting_approval" || view.phase_name == "promoted"
        {
            return match view.phase_name.as_str() {
                "failed" | "rolled_back" | "aborted" => bail!(
                    "rollout #{} ended {}: {}",
                    view.rollout.id,
                    view.phase_name.replace('_', " "),
                    view.rollout
                        .outcome
                        .map(|o| o.to_string())
                        .unwrap_or_default()
                ),
                _ => Ok(()),
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
