//! The command line: `teal serve` runs the server; the other verbs talk to its admin API.

pub mod client;
pub mod demo;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use teal_core::protocol::TensorSpec;
use teal_core::routing::Color;

use crate::cli::client::HttpClient;
use crate::routing::{ModelStatus, SwitchOutcome};
use crate::server;
use crate::state::token;

/// teal serves machine-learning models and replaces them safely.
///
/// Each model has two slots, blue and green. One is live; the other holds the next (or the
/// previous) version, loaded and warm. A switch moves every new request to the other slot in
/// one atomic step, and a rollback moves it back just as fast.
#[derive(Parser, Debug)]
#[command(name = "teal", version)]
#[command(
    after_help = "Start here:\n  teal demo                                  run teal on its bundled models and watch a switch\n  teal serve --config examples/teal.toml     serve the example models\n  teal status                                what is live, in another terminal"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text for people, or one JSON object per line for log collectors.
    #[arg(long, global = true, env = "TEAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Append log lines to this file instead of standard error.
    #[arg(long, global = true, env = "TEAL_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// How log lines are written. Levels come from `TEAL_LOG` (like `info` or `teal=debug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the configured models: the data plane on --listen, the admin API on --admin.
    Serve(ServeArgs),
    /// Show each model's slots, versions, which one is live, and any rollout in progress.
    Status {
        /// Only this model.
        model: Option<String>,
        /// Redraw every second (phase, weights, rule checks) until interrupted.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approve the rollout's switch, skip a canary pause, end the bake early, or end the
    /// keep-warm window (which tears the old version down).
    Promote {
        /// The model.
        model: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop the rollout before its switch: all traffic stays on the live version.
    Abort {
        /// The model.
        model: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Mirror a share of MODEL's live requests to the standby slot; 0 ends it. Mirrored
    /// copies never change or delay the live answer.
    Shadow {
        /// The model.
        model: String,
        /// Percent of live requests to copy, 0 to 100.
        #[arg(long, value_name = "PERCENT")]
        percent: f64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send every new request of MODEL to one slot, in one atomic step.
    Switch {
        /// The model to switch.
        model: String,
        /// The slot to make live.
        #[arg(long, value_name = "blue|green")]
        to: Color,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List MODEL's events: start-ups, deploys, validations, switches, rollbacks, teardowns.
    History {
        /// The model.
        model: String,
        /// The newest this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Answer which version served: `teal audit MODEL --at TIME` or `--request ID`;
    /// `teal audit verify` checks the hash chain of the audit log for tampering.
    Audit {
        /// A model, or `verify`.
        target: String,
        /// A time (2026-11-22T01:02:03Z, or epoch milliseconds): the live version then.
        #[arg(long, value_name = "TIME", conflicts_with = "request")]
        at: Option<String>,
        /// A request id (x-request-id): the version and slot that served it.
        #[arg(long, value_name = "ID")]
        request: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Send a share of MODEL's new requests to the standby slot (a canary); 0 ends it.
    ///
    /// With `sticky_header` or `sticky_cookie` set on the model, a session stays on one slot
    /// while the weight holds, and moves only when the weight passes it.
    Canary {
        /// The model.
        model: String,
        /// Percent of new requests for the standby slot, 0 to 100 (0.01 steps).
        #[arg(long, value_name = "PERCENT")]
        weight: f64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Switch MODEL back to the slot that was live before its last switch.
    Rollback {
        /// The model to roll back.
        model: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Roll out a new version of MODEL: load it into the standby slot while the live one
    /// serves, warm it up, validate it, switch (at once, in canary steps, or after a shadow
    /// window), watch it with the rollback rules armed, and tear the old version down after
    /// the keep-warm window. Settings come from the model's [model.rollout] config; the
    /// flags override them for this rollout.
    ///
    /// With --standby-only it only loads the version into the standby slot; then
    /// `teal switch` makes it live.
    Deploy(DeployArgs),
    /// Take a standby slot of MODEL out of routing, let its requests in flight finish, and
    /// stop it (a process slot's server gets SIGTERM, then SIGKILL after its grace period).
    Teardown {
        /// The model.
        model: String,
        /// The slot to tear down; default the standby. The live slot cannot be torn down.
        #[arg(long, value_name = "blue|green")]
        slot: Option<Color>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Prove the standby slot (the candidate) on evidence before it takes traffic: run the
    /// gates and print a report (gate, value, threshold, verdict, evidence).
    ///
    /// Exit status: 0 pass, 3 fail, 4 inconclusive (too little evidence), 1 could not run.
    Validate(ValidateArgs),
    /// Start teal on the bundled example models, send traffic, switch to green and back,
    /// and print what happened.
    Demo(crate::cli::demo::DemoArgs),
    /// Run the Kubernetes operator: reconcile ModelDeployment resources (Deployments per
    /// colour, gates, switch, observation, rollback, teardown). Only the replica holding the
    /// leader Lease acts.
    Operator(OperatorArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (TOML); see examples/teal.toml.
    #[arg(
        long,
        short,
        value_name = "FILE",
        required_unless_present = "kubernetes"
    )]
    pub config: Option<PathBuf>,
    /// Also serve the ModelDeployment resources in `gateway` switch mode: follow their
    /// status and their colours' endpoints, and route per request (in a cluster).
    #[arg(long)]
    pub kubernetes: bool,
    /// With --kubernetes: only this namespace's resources (default: all the gateway may read).
    #[arg(long, value_name = "NAMESPACE", requires = "kubernetes")]
    pub namespace: Option<String>,
    /// Data-plane address, overriding server.listen (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin address, overriding server.admin.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Threads serving requests (default: one per core). 1 runs one event loop on one thread,
    /// as one nginx worker does: the shortest tail when teal shares a small machine with its
    /// model servers.
    #[arg(long, value_name = "N", env = "TEAL_THREADS", value_parser = thread_count)]
    pub threads: Option<usize>,
}

fn thread_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("give the number of threads, 1 or more".to_string()),
    }
}

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Print the CustomResourceDefinition (YAML) and exit, as deploy/kubernetes/crd.yaml holds it.
    #[arg(long)]
    pub print_crd: bool,
    /// Only this namespace's resources (default: every namespace).
    #[arg(long, value_name = "NAMESPACE", env = "TEAL_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where the leader Lease lives (the operator's own namespace).
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "TEAL_NAMESPACE",
        default_value = "teal-system"
    )]
    pub lease_namespace: String,
    /// The leader Lease's name.
    #[arg(long, default_value = "teal-operator")]
    pub lease_name: String,
    /// This replica's name in the Lease and in Events (the pod's name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a lease lasts without renewal before another replica may take it.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub lease_seconds: u64,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["onnx", "upstream", "command"])))]
pub struct DeployArgs {
    /// The model to deploy to.
    pub model: String,
    /// The new version's name.
    #[arg(long)]
    pub version: String,
    /// An ONNX file, served in-process.
    #[arg(long, value_name = "PATH")]
    pub onnx: Option<PathBuf>,
    /// With --onnx: reference outputs the version must reproduce before it may serve.
    #[arg(long, value_name = "PATH", requires = "onnx")]
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
    /// Follow the rollout until it ends or waits for an operator.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

impl DeployArgs {
    /// The slot description the admin API takes: the same fields as a config slot.
    fn slot_config(&self) -> anyhow::Result<serde_json::Value> {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut card = serde_json::Map::new();
        for pair in &self.card {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--card {pair}: write it as KEY=VALUE"))?;
            card.insert(k.to_string(), v.into());
        }
        let mut slot = serde_json::json!({ "version": self.version, "card": card });
        let ready_timeout_ms = self.ready_timeout * 1000;
        if let Some(path) = &self.onnx {
            slot["kind"] = "onnx".into();
            slot["path"] = absolute(path).display().to_string().into();
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
    fn settings(&self) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
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
        Ok(out)
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("evidence").required(true).args(["holdout", "shadow", "replay"])))]
pub struct ValidateArgs {
    /// The model whose candidate to validate.
    pub model: String,
    /// A labelled file: JSON lines {"features": [...], "label": n}, or CSV with the label last.
    #[arg(long, value_name = "FILE")]
    pub holdout: Option<PathBuf>,
    /// Mirror live traffic to the candidate until N comparisons (or the window ends).
    #[arg(long, value_name = "N")]
    pub shadow: Option<usize>,
    /// Replay the newest N requests captured from live traffic (see capture_rate).
    #[arg(long, value_name = "N")]
    pub replay: Option<usize>,
    /// With --shadow: how long to wait for live traffic, in seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub window: u64,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The admin API's URL. Default: the address teal wrote in the state folder, else http://127.0.0.1:9090.
    #[arg(long, env = "TEAL_ADMIN_URL", value_name = "URL")]
    pub admin_url: Option<String>,
    /// teal's state folder, where it keeps the admin token and address.
    #[arg(
        long,
        env = "TEAL_STATE_DIR",
        default_value = ".teal",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl AdminArgs {
    /// A client for the admin API, with the token from `TEAL_ADMIN_TOKEN` or the state folder.
    fn client(&self) -> anyhow::Result<HttpClient> {
        let url = match &self.admin_url {
            Some(url) => url.clone(),
            None => std::fs::read_to_string(self.state_dir.join(token::ADMIN_URL_FILE))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| format!("http://{}", teal_core::config::DEFAULT_ADMIN)),
        };
        let token = match std::env::var("TEAL_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            Some(token) => token.trim().to_string(),
            None => read_token(&self.state_dir)?,
        };
        let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        Ok(HttpClient::new(&url)
            .with_token(Some(token))
            .with_header("x-teal-actor", &format!("{user}@{host}")))
    }
}

fn read_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = token::token_path(state_dir);
    std::fs::read_to_string(&path).map(|t| t.trim().to_string()).with_context(|| {
        format!(
            "no admin token: set TEAL_ADMIN_TOKEN, or point --state-dir at the folder where teal serve keeps its state ({} not readable)",
            path.display()
        )
    })
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Status {
            model,
            watch,
            admin,
        } => match watch {
            true => watch_status(model, admin).await,
            false => status(model, admin).await,
        },
        Command::Promote { model, admin } => rollout_verb(&model, "promote", admin).await,
        Command::Abort { model, admin } => rollout_verb(&model, "abort", admin).await,
        Command::Shadow {
            model,
            percent,
            admin,
        } => {
            let client = admin.client()?;
            let answer = call(
                &client,
                &format!("/api/v1/models/{model}/shadow"),
                Some(serde_json::json!({ "percent": percent })),
            )
            .await?;
            if admin.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!(
                    "{model}: mirroring {}% of live requests to the standby slot",
                    answer["percent"]
                );
            }
            Ok(())
        }
        Command::Switch { model, to, admin } => {
            let client = admin.client()?;
            let answer = call(
                &client,
                &format!("/api/v1/models/{model}/switch"),
                Some(serde_json::json!({ "to": to })),
            )
            .await?;
            print_switch(&answer, admin.json, "switched")
        }
        Command::Rollback { model, admin } => {
            let client = admin.client()?;
            let answer = call(
                &client,
                &format!("/api/v1/models/{model}/rollback"),
                Some(serde_json::json!({})),
            )
            .await?;
            if answer.get("phase_name").is_some() {
                return print_rollout(&answer, admin.json);
            }
            print_switch(&answer, admin.json, "rolled back")
        }
        Command::Deploy(args) => deploy(args).await,
        Command::History {
            model,
            limit,
            admin,
        } => {
            let client = admin.client()?;
            let answer = call(
                &client,
                &format!("/api/v1/models/{model}/history?limit={limit}"),
                None,
            )
            .await?;
            if admin.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(());
            }
            let rollouts = call(&client, &format!("/api/v1/models/{model}/rollouts"), None).await?;
            let rollouts: Vec<crate::routing::RolloutView> =
                serde_json::from_value(rollouts["rollouts"].clone())?;
            if !rollouts.is_empty() {
                println!("ROLLOUTS");
                for r in &rollouts {
                    println!(
                        "  #{:<4} {}  {:<10} {:<19} {:<18} {}",
                        r.rollout.id,
                        crate::state::store::format_time(r.rollout.started_ms),
                        r.rollout.version,
                        r.strategy,
                        r.phase_name,
                        r.rollout
                            .outcome
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    );
                }
                println!("\nEVENTS");
            }
            let events: Vec<crate::state::store::Event> =
                serde_json::from_value(answer["events"].clone())?;
            if events.is_empty() {
                println!("{model}: no events yet");
            }
            for e in events {
                let live = match (&e.live_slot, &e.live_version) {
                    (Some(slot), Some(version)) => format!("live {version} ({slot})"),
                    _ => String::new(),
                };
                println!(
                    "{}  #{:<5} {:<12} {:<28} {live}  {}",
                    e.at, e.id, e.kind, e.actor, e.detail
                );
            }
            Ok(())
        }
        Command::Audit {
            target,
            at,
            request,
            admin,
        } => audit(target, at, request, admin).await,
        Command::Canary {
            model,
            weight,
            admin,
        } => {
            let client = admin.client()?;
            let answer = call(
                &client,
                &format!("/api/v1/models/{model}/canary"),
                Some(serde_json::json!({ "percent": weight })),
            )
            .await?;
            if admin.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!(
                    "{model}: {}% of new requests go to {} (route generation {})",
                    answer["percent"],
                    answer["candidate"].as_str().unwrap_or("?"),
                    answer["generation"]
                );
            }
            Ok(())
        }
        Command::Teardown { model, slot, admin } => {
            let client = admin.client()?.with_timeout(Duration::from_secs(120));
            let body = match slot {
                Some(slot) => serde_json::json!({ "slot": slot }),
                None => serde_json::json!({}),
            };
            if !admin.json {
                eprintln!(
                    "tearing down the standby slot of {model}: draining requests in flight, then stopping it"
                );
            }
            let answer = call(
                &client,
                &format!("/api/v1/models/{model}/teardown"),
                Some(body),
            )
            .await?;
            if admin.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let outcome: crate::control::slots::TeardownOutcome =
                    serde_json::from_value(answer)?;
                println!(
                    "{}: tore down {} ({}) after {} ms; {} requests were in flight, {} did not finish",
                    outcome.model,
                    outcome.slot,
                    outcome.version,
                    outcome.drain_ms,
                    outcome.in_flight_at_start,
                    outcome.abandoned
                );
            }
            Ok(())
        }
        Command::Validate(args) => validate(args).await,
        Command::Demo(args) => crate::cli::demo::run(args).await,
        Command::Operator(args) => operator(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, source) = match &args.config {
        Some(path) => (server::load_config(path)?, path.display().to_string()),
        None => (
            teal_core::config::Config::parse(
                "[server]\nlisten = \"0.0.0.0:8080\"\nadmin = \"0.0.0.0:9090\"\n",
            )?,
            "the built-in gateway settings".to_string(),
        ),
    };
    config.apply_environment(&ProcessEnvironment);
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin {
        config.server.admin = admin;
    }
    let checked = match args.kubernetes {
        true => config.validate_allowing_no_models(),
        false => config.validate(),
    };
    checked.map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let token = std::env::var("TEAL_ADMIN_TOKEN").ok();
    // The cluster first: a gateway that cannot reach it should not start serving nothing.
    let cluster = match args.kubernetes {
        true => Some(kube::Client::try_default().await.context(
            "cannot reach the Kubernetes API: run in a pod with a service account, or set KUBECONFIG",
        )?),
        false => None,
    };
    let running = server::start(&config, token).await?;
    let follower = cluster.map(|client| {
        tokio::spawn(crate::kubernetes::gateway::follow(
            client,
            args.namespace.clone(),
            running.routes.clone(),
        ))
    });
    // One plain line on stdout for people and scripts; logs go to stderr.
    println!(
        "teal ready: data plane {} admin {} (token in {})",
        running.data_url(),
        running.admin_url(),
        token::token_path(&running.state_dir).display()
    );
    wait_for_signal().await;
    tracing::info!("stopping: finishing requests in flight");
    if let Some(follower) = follower {
        follower.abort();
    }
    running.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    use crate::kubernetes::{leader, operator};
    if args.print_crd {
        print!("{}", crate::kubernetes::crd_yaml());
        return Ok(());
    }
    let client = kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API: run in a pod with a service account, or set KUBECONFIG",
    )?;
    let identity = args
        .identity
        .unwrap_or_else(|| format!("teal-operator-{}", std::process::id()));
    let candidate = leader::Candidate {
        identity: identity.clone(),
        lease_name: args.lease_name,
        namespace: args.lease_namespace,
        duration: Duration::from_secs(args.lease_seconds.max(3)),
    };
    tracing::info!(identity = %identity, lease = %candidate.lease_name, "waiting to lead");
    tokio::select! {
        _ = candidate.acquire(&client) => {}
        _ = wait_for_signal() => return Ok(()),
    }
    let ctx = std::sync::Arc::new(operator::Context::new(client.clone(), Some(identity)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(operator::run(ctx, args.namespace, async move {
        let _ = stopped.await;
    }));
    let outcome = tokio::select! {
        lost = candidate.keep(&client) => Err(anyhow::anyhow!("stopped leading: {lost}")),
        _ = wait_for_signal() => Ok(()),
    };
    let _ = stop.send(());
    let _ = controller.await;
    outcome
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let term = async {
        match terminate.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The process environment, for config overrides.
pub struct ProcessEnvironment;

impl teal_core::config::Environment for ProcessEnvironment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

async fn call(
    client: &HttpClient,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let answer = match body {
        Some(body) => client.post_json(path, &body).await,
        None => client.get(path).await,
    }
    .map_err(|e| anyhow::anyhow!("{e}: is `teal serve` running? (admin URL from --admin-url, TEAL_ADMIN_URL or the state folder)"))?;
    if !(200..300).contains(&answer.status) {
        bail!("{} (HTTP {})", answer.error_message(), answer.status);
    }
    Ok(answer.json())
}

async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
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

/// Exit statuses of `teal validate`.
pub const EXIT_FAIL: u8 = 3;
pub const EXIT_INCONCLUSIVE: u8 = 4;

/// What `teal validate` ended with, for the exit status.
#[derive(Debug, thiserror::Error)]
#[error("validation verdict: {}", .0.as_str())]
pub struct ValidationVerdict(pub teal_core::gates::Verdict);

async fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let client = args.admin.client()?;
    let body = match (&args.holdout, args.shadow, args.replay) {
        (Some(path), _, _) => serde_json::json!({ "holdout": std::path::absolute(path)? }),
        (_, Some(n), _) => serde_json::json!({ "shadow": n, "window_ms": args.window * 1000 }),
        (_, _, Some(n)) => serde_json::json!({ "replay": n }),
        _ => bail!("choose the evidence: --holdout FILE, --shadow N or --replay N"),
    };
    let started = call(
        &client,
        &format!("/api/v1/models/{}/validate", args.model),
        Some(body),
    )
    .await?;
    let id = started["id"]
        .as_u64()
        .context("the admin API did not return a validation id")?;
    let terminal = std::io::stderr().is_terminal() && !args.admin.json;
    let status = loop {
        let status: crate::control::validation::JobStatus = serde_json::from_value(
            call(&client, &format!("/api/v1/validations/{id}"), None).await?,
        )?;
        if terminal {
            let width = 30;
            let filled = if status.total == 0 {
                0
            } else {
                status.done * width / status.total.max(1)
            };
            eprint!(
                "\r  [{}{}] {}/{} samples",
                "#".repeat(filled.min(width)),
                ".".repeat(width - filled.min(width)),
                status.done,
                status.total
            );
            let _ = std::io::stderr().flush();
        }
        if status.state != "running" {
            if terminal {
                eprintln!();
            }
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let report = match (status.report, status.error) {
        (Some(report), _) => report,
        (None, error) => bail!(
            "the validation failed to run: {}",
            error.unwrap_or_default()
        ),
    };
    if args.admin.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_report(&report));
    }
    match report.verdict {
        teal_core::gates::Verdict::Pass => Ok(()),
        verdict => Err(ValidationVerdict(verdict).into()),
    }
}

/// The report as a table: gate, value, threshold, verdict, and why.
pub fn render_report(report: &crate::control::validation::Report) -> String {
    let mut out = format!(
        "{}: candidate {} ({}) against live {} ({}), {} samples from {}\n\n",
        report.model,
        report.candidate.version,
        report.candidate.slot,
        report.live.version,
        report.live.slot,
        report.samples,
        report.source
    );
    out.push_str(&format!(
        "  {:<10} {:>10}  {:<34} {:<13} {}\n",
        "GATE", "VALUE", "THRESHOLD", "VERDICT", "EVIDENCE"
    ));
    for gate in &report.gates {
        let value = gate.value.map_or("-".to_string(), |v| {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.4}")
            }
        });
        out.push_str(&format!(
            "  {:<10} {:>10}  {:<34} {:<13} {}\n",
            gate.gate,
            value,
            gate.threshold,
            gate.verdict.as_str().to_uppercase(),
            gate.reason
        ));
    }
    out.push_str(&format!(
        "\nverdict: {} (in {} ms)\n",
        report.verdict.as_str().to_uppercase(),
        report.duration_ms
    ));
    out
}

async fn audit(
    target: String,
    at: Option<String>,
    request: Option<String>,
    admin: AdminArgs,
) -> anyhow::Result<()> {
    let client = admin.client()?;
    let path = match (&at, &request) {
        (None, None) if target == "verify" => "/api/v1/audit/verify".to_string(),
        (None, None) => bail!(
            "say what to look up: teal audit {target} --at TIME, --request ID, or teal audit verify"
        ),
        (Some(at), _) => format!("/api/v1/models/{target}/audit?at={at}"),
        (None, Some(id)) => format!("/api/v1/models/{target}/audit?request={id}"),
    };
    let answer = call(&client, &path, None).await?;
    if admin.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else if target == "verify" && at.is_none() && request.is_none() {
        if answer["intact"] == true {
            println!(
                "audit log intact: {} events, every hash follows from its event and the one before",
                answer["events"]
            );
        } else {
            println!(
                "audit log TAMPERED: event #{} does not match its hash chain ({} events read)",
                answer["first_broken"], answer["events"]
            );
        }
    } else if let Some(requests) = answer["requests"].as_array() {
        for r in requests {
            println!(
                "request {} at {}: {} {} ({}), status {}, {} us",
                r["request_id"].as_str().unwrap_or("?"),
                crate::state::store::format_time(r["at_ms"].as_i64().unwrap_or(0)),
                r["model"].as_str().unwrap_or("?"),
                r["version"].as_str().unwrap_or("-"),
                r["slot"].as_str().unwrap_or("-"),
                r["status"],
                r["latency_us"]
            );
        }
    } else {
        println!(
            "{target} at {}: {} ({}) was live, since {} ({})",
            answer["at"].as_str().unwrap_or("?"),
            answer["live_version"].as_str().unwrap_or("?"),
            answer["live_slot"].as_str().unwrap_or("?"),
            answer["since"]["at"].as_str().unwrap_or("?"),
            answer["since"]["kind"].as_str().unwrap_or("?")
        );
    }
    if target == "verify" && answer["intact"] == false {
        bail!("the audit log does not verify");
    }
    Ok(())
}

async fn rollout_verb(model: &str, verb: &str, admin: AdminArgs) -> anyhow::Result<()> {
    let client = admin.client()?;
    let answer = call(
        &client,
        &format!("/api/v1/models/{model}/{verb}"),
        Some(serde_json::json!({})),
    )
    .await?;
    print_rollout(&answer, admin.json)
}

fn print_rollout(answer: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    let view: crate::routing::RolloutView = serde_json::from_value(answer.clone())?;
    print!("{}", render_rollout(&view));
    Ok(())
}

/// A rollout in a few lines: id, version, strategy, phase, traffic, timer, last checks.
pub fn render_rollout(view: &crate::routing::RolloutView) -> String {
    let r = &view.rollout;
    let mut out = format!(
        "rollout #{} of {} {}: {} ({}), since {}\n",
        r.id,
        r.model,
        r.version,
        view.phase_name.replace('_', " "),
        view.strategy,
        crate::state::store::format_time(r.since_ms)
    );
    out.push_str(&format!(
        "  traffic: live {}{}{}\n",
        r.route.active,
        if r.route.weight > 0 {
            format!(
                ", {}% to {}",
                f64::from(r.route.weight) / 100.0,
                r.route.active.other()
            )
        } else {
            String::new()
        },
        if r.route.shadow > 0 {
            format!(", mirroring {}%", f64::from(r.route.shadow) / 100.0)
        } else {
            String::new()
        }
    ));
    if let Some(at) = view.next_at_ms {
        let left = (at - crate::state::store::now_ms()).max(0) as f64 / 1000.0;
        out.push_str(&format!("  next step in {left:.0} s\n"));
    }
    if !r.last_check.is_empty() {
        out.push_str("  checks:");
        for o in &r.last_check {
            out.push_str(&format!(" {} {} ({});", o.rule, o.verdict, o.detail));
        }
        out.push('\n');
    }
    if let Some(outcome) = &r.outcome {
        out.push_str(&format!("  outcome: {outcome}\n"));
    }
    if view.phase_name == "awaiting_approval" {
        out.push_str(&format!(
            "  approve with: teal promote {}   or stop with: teal abort {}\n",
            r.model, r.model
        ));
    }
    out
}

/// Follows a rollout until it ends or waits for an operator, one line per phase change.
async fn follow_rollout(model: &str, admin: &AdminArgs) -> anyhow::Result<()> {
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

/// Redraws the status every second until interrupted.
async fn watch_status(model: Option<String>, admin: AdminArgs) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stdout().is_terminal() && !admin.json;
    loop {
        if terminal {
            // Clear the screen and go home.
            print!("\x1b[2J\x1b[H");
            println!(
                "teal status (every 1 s, Ctrl-C to stop)  {}\n",
                crate::state::store::format_time(crate::state::store::now_ms())
            );
        }
        status(
            model.clone(),
            AdminArgs {
                admin_url: admin.admin_url.clone(),
                state_dir: admin.state_dir.clone(),
                json: admin.json,
            },
        )
        .await?;
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn status(model: Option<String>, admin: AdminArgs) -> anyhow::Result<()> {
    let client = admin.client()?;
    let mut state = serde_json::Value::Null;
    let models: Vec<ModelStatus> = match &model {
        Some(name) => vec![serde_json::from_value(
            call(&client, &format!("/api/v1/models/{name}"), None).await?,
        )?],
        None => {
            let all = call(&client, "/api/v1/status", None).await?;
            state = all["state"].clone();
            serde_json::from_value(all["models"].clone())?
        }
    };
    if admin.json {
        let value = match model {
            Some(_) => serde_json::to_value(&models[0])?,
            None => serde_json::json!({ "models": models, "state": state }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if state["writable"] == false {
        println!(
            "warning: the state file cannot be written since {} ({}); teal keeps serving, but requests are not recorded and rollouts cannot start",
            state["since"].as_str().unwrap_or("?"),
            state["error"].as_str().unwrap_or("?"),
        );
    }
    for m in &models {
        print!("{}", render_status(m));
    }
    Ok(())
}

fn tensor_text(t: &TensorSpec) -> String {
    let dims: Vec<String> = t.shape.iter().map(ToString::to_string).collect();
    format!("{} {} [{}]", t.name, t.datatype, dims.join(", "))
}

fn render_status(m: &ModelStatus) -> String {
    let mut out = format!(
        "{}: live on {} ({}), route generation {}",
        m.name,
        m.live,
        m.live_version.as_deref().unwrap_or("-"),
        m.generation
    );
    if m.candidate_weight > 0 {
        out.push_str(&format!(
            ", canary {}% to {}",
            f64::from(m.candidate_weight) / 100.0,
            m.live.other()
        ));
    }
    if m.shadow > 0 {
        out.push_str(&format!(
            ", mirroring {}% to {}",
            f64::from(m.shadow) / 100.0,
            m.live.other()
        ));
    }
    if let Some(back) = m.rollback_to {
        out.push_str(&format!(", rollback goes to {back}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "  {:<6} {:<10} {:<8} {:<16} {}\n",
        "SLOT", "VERSION", "KIND", "STATE", "INPUTS"
    ));
    for s in &m.slots {
        let state = format!(
            "{}, {}",
            if s.live { "live" } else { "standby" },
            if s.ready { "ready" } else { "not ready" }
        );
        let inputs: Vec<String> = s.inputs.iter().map(tensor_text).collect();
        out.push_str(&format!(
            "  {:<6} {:<10} {:<8} {:<16} {}\n",
            s.color.as_str(),
            s.version,
            s.kind,
            state,
            if inputs.is_empty() {
                "(not published by the server)".to_string()
            } else {
                inputs.join(", ")
            }
        ));
        if let Some(p) = &s.process {
            let state = if p.running {
                "running".to_string()
            } else {
                format!("exited: {}", p.exit.clone().unwrap_or_default())
            };
            out.push_str(&format!(
                "         process {} on port {} ({state}): {}\n",
                p.pid, p.port, p.command
            ));
        }
        for r in &s.replicas {
            let state = match (r.ready, r.ejected) {
                (_, true) => "ejected",
                (true, false) => "ready",
                (false, false) => "not ready",
            };
            out.push_str(&format!(
                "         replica {} {state}, {} in flight, {} requests, {} failed\n",
                r.url, r.outstanding, r.requests, r.failures
            ));
        }
        if let Some(c) = &s.cache {
            out.push_str(&format!(
                "         cache {} entries, {} hits, {} misses\n",
                c.entries, c.hits, c.misses
            ));
        }
    }
    if let Some(rollout) = &m.rollout {
        out.push_str(&render_rollout(rollout));
    }
    out
}

fn print_switch(answer: &serde_json::Value, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    let outcome: SwitchOutcome = serde_json::from_value(answer.clone())?;
    if outcome.changed {
        println!(
            "{}: {verb} {} ({}) -> {} ({}), route generation {}",
            outcome.model,
            outcome.from,
            outcome.from_version,
            outcome.to,
            outcome.to_version,
            outcome.generation
        );
        println!("undo with: teal rollback {}", outcome.model);
    } else {
        println!(
            "{}: {} ({}) is already live; nothing changed",
            outcome.model, outcome.to, outcome.to_version
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        // Catches clashing flags (such as a subcommand's --version) before a user does.
        Cli::command().debug_assert();
    }

    #[test]
    fn deploy_takes_exactly_one_source() {
        assert!(
            Cli::try_parse_from([
                "teal",
                "deploy",
                "digits",
                "--version",
                "v3",
                "--onnx",
                "m.onnx"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["teal", "deploy", "digits", "--version", "v3"]).is_err());
        assert!(
            Cli::try_parse_from([
                "teal",
                "deploy",
                "digits",
                "--version",
                "v3",
                "--onnx",
                "m.onnx",
                "--command",
                "x"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["teal", "validate", "digits"]).is_err());
    }
}
