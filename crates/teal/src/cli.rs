//! The command line: `teal serve` runs the server; the other verbs talk to its admin API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use teal_core::protocol::TensorSpec;
use teal_core::routing::Color;

use crate::api;
use crate::client::HttpClient;
use crate::routing::{ModelStatus, SwitchOutcome};
use crate::server;

/// teal serves machine-learning models and replaces them safely.
///
/// Each model has two slots, blue and green. One is live; the other holds the next (or the
/// previous) version, loaded and warm. A switch moves every new request to the other slot in
/// one atomic step, and a rollback moves it back just as fast.
#[derive(Parser, Debug)]
#[command(name = "teal", version, propagate_version = true)]
#[command(
    after_help = "Start here:\n  teal demo                                  run teal on its bundled models and watch a switch\n  teal serve --config examples/teal.toml     serve the example models\n  teal status                                what is live, in another terminal"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the configured models: the data plane on --listen, the admin API on --admin.
    Serve(ServeArgs),
    /// Show each model's slots, versions and which one is live.
    Status {
        /// Only this model.
        model: Option<String>,
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
    /// Switch MODEL back to the slot that was live before its last switch.
    Rollback {
        /// The model to roll back.
        model: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Start teal on the bundled example models, send traffic, switch to green and back,
    /// and print what happened.
    Demo(crate::demo::DemoArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (TOML); see examples/teal.toml.
    #[arg(long, short, value_name = "FILE")]
    pub config: PathBuf,
    /// Data-plane address, overriding server.listen (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin address, overriding server.admin.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
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
            None => std::fs::read_to_string(self.state_dir.join(api::ADMIN_URL_FILE))
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
        Ok(HttpClient::new(&url).with_token(Some(token)))
    }
}

fn read_token(state_dir: &Path) -> anyhow::Result<String> {
    let path = api::token_path(state_dir);
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
        Command::Status { model, admin } => status(model, admin).await,
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
            print_switch(&answer, admin.json, "rolled back")
        }
        Command::Demo(args) => crate::demo::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = server::load_config(&args.config)?;
    config.apply_environment(&ProcessEnvironment);
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin {
        config.server.admin = admin;
    }
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.config.display()))?;
    let token = std::env::var("TEAL_ADMIN_TOKEN").ok();
    let running = server::start(&config, token).await?;
    // One plain line on stdout for people and scripts; logs go to stderr.
    println!(
        "teal ready: data plane {} admin {} (token in {})",
        running.data_url(),
        running.admin_url(),
        api::token_path(&running.state_dir).display()
    );
    wait_for_signal().await;
    tracing::info!("stopping: finishing requests in flight");
    running.shutdown(Duration::from_secs(10)).await;
    Ok(())
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
    if answer.status != 200 {
        bail!("{} (HTTP {})", answer.error_message(), answer.status);
    }
    Ok(answer.json())
}

async fn status(model: Option<String>, admin: AdminArgs) -> anyhow::Result<()> {
    let client = admin.client()?;
    let models: Vec<ModelStatus> = match &model {
        Some(name) => vec![serde_json::from_value(
            call(&client, &format!("/api/v1/models/{name}"), None).await?,
        )?],
        None => {
            let all = call(&client, "/api/v1/status", None).await?;
            serde_json::from_value(all["models"].clone())?
        }
    };
    if admin.json {
        let value = match model {
            Some(_) => serde_json::to_value(&models[0])?,
            None => serde_json::json!({ "models": models }),
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
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
    if let Some(back) = m.rollback_to {
        out.push_str(&format!(", rollback goes to {back}"));
    }
    out.push('\n');
    out.push_str(&format!(
        "  {:<6} {:<10} {:<6} {:<16} {}\n",
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
            "  {:<6} {:<10} {:<6} {:<16} {}\n",
            s.color.as_str(),
            s.version,
            s.kind,
            state,
            inputs.join(", ")
        ));
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
