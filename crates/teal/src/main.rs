#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;
use teal::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its server's logs would only crowd it.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TEAL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(teal::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<teal::cli::ValidationVerdict>() {
            // The report is printed; the status says the verdict.
            Some(teal::cli::ValidationVerdict(teal::core::gates::Verdict::Fail)) => {
                std::process::ExitCode::from(teal::cli::EXIT_FAIL)
            }
            Some(_) => std::process::ExitCode::from(teal::cli::EXIT_INCONCLUSIVE),
            None => {
                eprintln!("error: {}", describe(&e));
                std::process::ExitCode::FAILURE
            }
        },
    }
}

/// The error and its causes, leaving out a cause its parent's message already states.
fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
