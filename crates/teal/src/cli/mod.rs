//! The command line: `teal serve` runs the server; the other verbs talk to its admin API.

mod audit;
pub mod client;
mod completions;
mod connect;
pub mod demo;
mod demo_registry;
mod fetch;
mod init;
mod render;
mod rollout;
mod serve;
mod status;
mod validate;

use audit::*;
use completions::completions;
pub use connect::AdminArgs;
use connect::*;
pub use init::InitArgs;
use render::*;
pub use render::{render_report, render_rollout};
pub use rollout::DeployArgs;
use rollout::*;
use serve::*;
pub use serve::{OperatorArgs, ProcessEnvironment, ServeArgs};
use status::*;
use validate::*;
pub use validate::{EXIT_FAIL, EXIT_INCONCLUSIVE, ValidateArgs, ValidationVerdict};

use std::collections::BTreeMap;
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

/// What `teal --version` prints: the release and the commit it was built from, or "unknown"
/// when the sources came without their git history (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TEAL_BUILD_COMMIT"),
    ")"
);

/// teal serves machine-learning models and replaces them safely.
///
/// Each model has two slots, blue and green. One is live; the other holds the next (or the
/// previous) version, loaded and warm. A switch moves every new request to the other slot in
/// one atomic step, and a rollback moves it back just as fast.
#[derive(Parser, Debug)]
#[command(name = "teal", version = VERSION)]
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

// The command line is parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
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
    /// Make a model of yours ready to serve: inspect an ONNX file, check its export, write
    /// the reference outputs each version must reproduce, and a commented config.
    Init(InitArgs),
    /// Fetch one model file from a registry, an S3 store or a URL, check it (size, SHA-256
    /// pin) and write it to a path: what a slot's `source` does, and, on Kubernetes, the init
    /// container that brings a colour's `source` into its pods.
    Fetch(fetch::FetchArgs),
    /// Start teal on the bundled example models, send traffic, switch to green and back,
    /// and print what happened.
    Demo(crate::cli::demo::DemoArgs),
    /// Run the Kubernetes operator: reconcile ModelDeployment resources (Deployments per
    /// colour, gates, switch, observation, rollback, teardown). Only the replica holding the
    /// leader Lease acts.
    // A build without the `kubernetes` feature hides it, and says so if it is asked for.
    #[command(hide = cfg!(not(feature = "kubernetes")))]
    Operator(OperatorArgs),
    /// Print the completion script for SHELL (teal's verbs and flags) to standard output.
    #[command(after_help = completions::INSTALL)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
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
        Command::Fetch(args) => fetch::fetch(args).await,
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
        Command::Init(args) => init::init(args).await,
        Command::Operator(args) => operator(args).await,
        Command::Completions { shell } => completions(shell),
    }
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

    #[test]
    fn deploy_from_a_source_sends_it_and_its_pin() {
        let parsed = Cli::try_parse_from([
            "teal",
            "deploy",
            "fraud",
            "--version",
            "fraud-7",
            "--from",
            "models:/fraud/7",
            "--sha256",
            "ab",
        ])
        .unwrap();
        let Command::Deploy(args) = parsed.command else {
            panic!("a deploy");
        };
        let slot = args.slot_config().unwrap();
        assert_eq!(slot["kind"], "onnx");
        assert_eq!(slot["source"], "models:/fraud/7");
        assert_eq!(slot["sha256"], "ab");
        assert!(slot.get("path").is_none(), "{slot}");
        // --sha256 pins a source, and --reference goes with a model teal runs: each is
        // refused without one.
        for extra in [
            ["--onnx", "m.onnx", "--sha256", "ab"],
            ["--upstream", "http://127.0.0.1:9", "--reference", "r.json"],
        ] {
            let mut argv = vec!["teal", "deploy", "fraud", "--version", "v"];
            argv.extend(extra);
            let Command::Deploy(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("a deploy");
            };
            assert!(args.slot_config().is_err(), "{extra:?}");
        }
    }
}
