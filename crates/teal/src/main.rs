#![forbid(unsafe_code)]

use std::io::IsTerminal;

use clap::Parser;
use teal::cli::{Cli, Command, LogFormat, ServeArgs};

// glibc's allocator was an eighth of the gateway's CPU time under load; mimalloc's
// thread-local free lists cost a fraction of that for the many small, short-lived buffers of
// a request. Built without transparent huge pages (`no_thp`), which cost 20 MB of resident
// memory for no measurable speed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its server's logs would only crowd it.
    let default_level = if matches!(cli.command, Command::Demo(_)) {
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
    // One event loop on one thread (a current-thread runtime: no work stealing, no waking of
    // other threads) when asked for, and by default for `serve` on a machine of two cores or
    // fewer, where it served more requests with a shorter tail than two work-stealing
    // threads, both as a proxy and in-process (BENCHMARKS.md). Otherwise work-stealing
    // threads: N, or `TOKIO_WORKER_THREADS`, or one per core.
    let one_loop = match &cli.command {
        Command::Serve(args) => args.threads.map_or_else(small_machine, |n| n == 1),
        _ => false,
    };
    let mut runtime = if one_loop {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Command::Serve(ServeArgs {
            threads: Some(n), ..
        }) = &cli.command
        {
            runtime.worker_threads(*n);
        }
        runtime
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

/// Two cores or fewer available to teal (its cgroup's CPU quota counts), and no thread count
/// given through tokio's own `TOKIO_WORKER_THREADS`.
fn small_machine() -> bool {
    std::env::var_os("TOKIO_WORKER_THREADS").is_none()
        && std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) <= 2
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
