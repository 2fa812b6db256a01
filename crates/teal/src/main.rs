#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;
use teal::cli::{Cli, Command, LogFormat};

// glibc's allocator was an eighth of the gateway's CPU time under load; mimalloc's
// thread-local free lists cost a fraction of that for the many small, short-lived buffers of
// a request. Built without transparent huge pages (`no_thp`), which cost 20 MB of resident
// memory for no measurable speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo and init print their own progress; the server's logs would only crowd it.
    let default_level = if matches!(cli.command, Command::Demo(_) | Command::Init(_)) {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TEAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let file = match &cli.log_file {
        Some(path) => match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => Some(std::sync::Mutex::new(file)),
            Err(e) => {
                eprintln!("error: cannot open the log file {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (cli.log_format, file) {
        (LogFormat::Json, Some(file)) => builder.json().with_writer(file).init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).init(),
        (LogFormat::Text, Some(file)) => builder.with_ansi(false).with_writer(file).init(),
        (LogFormat::Text, None) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
    raise_open_file_limit();
    let threads = match &cli.command {
        Command::Serve(args) => args.threads,
        _ => None,
    };
    // One thread is one event loop, with no work stealing and no waking of other threads:
    // in the gateway benchmark its p99 was below the multi-threaded runtime's with one worker.
    let mut runtime = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(n);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
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

/// Every connection is a file descriptor, and many systems start processes with a soft limit
/// of 1,024: raise it to the hard limit, as servers do, so thousands of clients can connect.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(soft, hard, error = %e, "cannot raise the open-file limit");
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
