//! `teal validate`: run the gates on evidence and exit by the verdict.

use super::*;

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

/// Exit statuses of `teal validate`.
pub const EXIT_FAIL: u8 = 3;
pub const EXIT_INCONCLUSIVE: u8 = 4;

/// What `teal validate` ended with, for the exit status.
#[derive(Debug, thiserror::Error)]
#[error("validation verdict: {}", .0.as_str())]
pub struct ValidationVerdict(pub teal_core::gates::Verdict);

pub(crate) async fn validate(args: ValidateArgs) -> anyhow::Result<()> {
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
