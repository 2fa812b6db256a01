//! Helpers shared by the integration tests: a real teal on 127.0.0.1:0 with the bundled models.
#![allow(dead_code)]

#[cfg(feature = "kubernetes")]
pub mod apiserver;
pub mod checks;
pub mod mlflow;
pub mod rollouts;

use std::path::PathBuf;
use std::time::Duration;

use teal::cli::client::HttpClient;
use teal::core::config::Config;
use teal::server::{self, Running};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The example config, on free ports, with its state in a fresh temporary folder.
pub fn example_config() -> Config {
    let mut config =
        server::load_config(&repo_root().join("examples/teal.toml")).expect("example config");
    config.server.listen = "127.0.0.1:0".into();
    config.server.admin = "127.0.0.1:0".into();
    config.server.state_dir = temp_dir("state");
    config
}

pub fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "teal-test-{what}-{}-{:x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub const TOKEN: &str = "test-token";

pub async fn start(config: &Config) -> Running {
    server::start(config, Some(TOKEN.to_string()))
        .await
        .expect("teal starts")
}

pub fn data(running: &Running) -> HttpClient {
    HttpClient::new(&running.data_url())
}

pub fn admin(running: &Running) -> HttpClient {
    HttpClient::new(&running.admin_url()).with_token(Some(TOKEN.to_string()))
}

pub async fn stop(running: Running) {
    running.shutdown(Duration::from_secs(5)).await;
}

/// Rows of a model's holdout file: features and label.
pub fn holdout(model: &str) -> Vec<(Vec<f64>, i64)> {
    let text = std::fs::read_to_string(repo_root().join(format!("models/{model}/holdout.jsonl")))
        .expect("holdout");
    text.lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("holdout row");
            let features = row["features"]
                .as_array()
                .expect("features")
                .iter()
                .map(|v| v.as_f64().expect("number"))
                .collect();
            (features, row["label"].as_i64().expect("label"))
        })
        .collect()
}

/// The reference outputs onnxruntime-Python computed for a version.
pub fn reference(model: &str, version: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(
        repo_root().join(format!("models/{model}/{version}/reference.json")),
    )
    .expect("reference");
    serde_json::from_str(&text).expect("reference json")
}

/// A V2 infer body with one FP32 input named `input`.
pub fn infer_body(rows: &[Vec<f64>]) -> serde_json::Value {
    let width = rows.first().map_or(0, Vec::len);
    serde_json::json!({"inputs": [{"name": "input", "shape": [rows.len(), width], "datatype": "FP32", "data": rows}]})
}

/// The teal binary built for these tests.
/// The Python of the checkout's own environment (`.venv`, which `scripts/setup dev` fills),
/// for everything that needs a Python package: never whatever `python3` is first on the PATH.
pub fn python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup dev",
        python.display()
    );
    python
}

/// [`python`] as one word of a shell command (a process slot's command runs in `sh -c`).
pub fn python_word() -> String {
    format!(
        "'{}'",
        python().display().to_string().replace('\'', "'\\''")
    )
}

pub fn teal_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_teal"))
}

/// What a load-and-flip run saw.
pub struct FlipRun {
    pub requests: u64,
    pub failures: Vec<String>,
}

/// Hammers `path` from `clients` tasks while flipping the model `flips` times through the
/// admin API. Every answer must be a 200 routed by a table no older than the one live when
/// its request started; `check` judges the rest (it gets the answer and its generation).
/// Generation 1 is the start; each flip adds one, so even generations are the flipped-to slot.
pub async fn flip_under_load(
    data: &HttpClient,
    admin: &HttpClient,
    model: &str,
    bodies: Vec<bytes::Bytes>,
    clients: usize,
    flips: u64,
    check: impl Fn(&teal::cli::client::Answer, u64, usize) -> Option<String> + Send + Sync + 'static,
) -> FlipRun {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let bodies = Arc::new(bodies);
    let check = Arc::new(check);
    let completed = Arc::new(AtomicU64::new(1));
    let issued = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicBool::new(false));
    let path = format!("/v2/models/{model}/infer");
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (data, bodies, completed, issued, done, check, path) = (
            data.clone(),
            bodies.clone(),
            completed.clone(),
            issued.clone(),
            done.clone(),
            check.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut failures) = (0u64, Vec::new());
            let mut i = c;
            // Bounded: stops when the flips are done, or after 200 000 requests at most.
            while !done.load(Ordering::SeqCst) && sent < 200_000 {
                let row = i % bodies.len();
                let floor = completed.load(Ordering::SeqCst);
                let answer = data
                    .send(
                        "POST",
                        &path,
                        &[("content-type", "application/json")],
                        bodies[row].clone(),
                    )
                    .await;
                let ceiling = issued.load(Ordering::SeqCst);
                i += 1;
                sent += 1;
                let answer = match answer {
                    Ok(a) if a.status == 200 => a,
                    Ok(a) => {
                        failures.push(format!("status {}: {}", a.status, a.error_message()));
                        continue;
                    }
                    Err(e) => {
                        failures.push(e.to_string());
                        continue;
                    }
                };
                let generation: u64 = answer
                    .header("x-teal-route-generation")
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0);
                if generation < floor || generation > ceiling {
                    failures.push(format!(
                        "generation {generation} outside [{floor}, {ceiling}]"
                    ));
                }
                if let Some(problem) = check(&answer, generation, row) {
                    failures.push(problem);
                }
            }
            (sent, failures)
        }));
    }
    let start = admin
        .get(&format!("/api/v1/models/{model}"))
        .await
        .expect("status");
    let first = start.json()["live"].as_str().expect("live").to_string();
    let other = if first == "blue" { "green" } else { "blue" };
    for flip in 0..flips {
        let to = if flip % 2 == 0 { other } else { first.as_str() };
        issued.store(flip + 2, Ordering::SeqCst);
        let answer = admin
            .post_json(
                &format!("/api/v1/models/{model}/switch"),
                &serde_json::json!({ "to": to }),
            )
            .await
            .expect("switch");
        assert_eq!(answer.status, 200, "{}", answer.error_message());
        assert_eq!(answer.json()["generation"], flip + 2);
        completed.store(flip + 2, Ordering::SeqCst);
        // Let requests run on this table before the next flip; correctness does not depend on how many.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    done.store(true, Ordering::SeqCst);
    let mut run = FlipRun {
        requests: 0,
        failures: Vec::new(),
    };
    for task in tasks {
        let (sent, mut failures) = task.await.expect("client task");
        run.requests += sent;
        run.failures.append(&mut failures);
    }
    run
}

/// A free port on 127.0.0.1 (for servers that must be restarted on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (with its process group) when the test lets go of it.
pub struct Proc(pub std::process::Child, pub bool);

impl Proc {
    /// Whether the process has exited (it is then reaped, and its group is not signalled again:
    /// its id may be reused by then).
    pub fn has_exited(&mut self) -> bool {
        if !self.1 {
            self.1 = matches!(self.0.try_wait(), Ok(Some(_)));
        }
        self.1
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.1 {
            // Not reaped yet, so the id is still this process's group's. (Not through the
            // kill(1) command: procps reads `kill -KILL -111` as a signal to every process.)
            let pgid = self.0.id() as i32;
            if pgid > 1 {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Spawns a command in its own process group.
pub fn spawn_group(command: &mut std::process::Command) -> Proc {
    use std::os::unix::process::CommandExt;
    Proc(command.process_group(0).spawn().expect("spawn"), false)
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; says whether it held.
pub async fn eventually(limit: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A separate `teal serve` process serving one digits version on `port`: a real V2 model
/// server to put behind an upstream slot.
pub fn teal_replica(port: u16, version: &str) -> Proc {
    let dir = temp_dir("replica");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:0\"\nstate_dir = \"{state}\"\n\n[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"{version}\"\nkind = \"onnx\"\npath = \"{model}\"\n",
        state = dir.join("state").display(),
        model = repo_root()
            .join(format!("models/digits/{version}/model.onnx"))
            .display(),
    );
    std::fs::write(dir.join("teal.toml"), config).unwrap();
    let mut command = std::process::Command::new(teal_bin());
    command
        .args(["serve", "--config"])
        .arg(dir.join("teal.toml"))
        .env("TEAL_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    spawn_teal(&mut command)
}

/// Starts `teal serve` (with stdout piped) in its own process group and waits for its
/// "teal ready" line.
pub fn spawn_teal(command: &mut std::process::Command) -> Proc {
    command.stdout(std::process::Stdio::piped());
    let mut proc = spawn_group(command);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proc.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.starts_with("teal ready:"),
        "teal did not start: {line:?}"
    );
    proc
}

/// Asks the admin API to send every new `digits` request to slot `to`; returns its answer.
pub async fn switch_digits(admin: &HttpClient, to: &str) -> teal::cli::client::Answer {
    admin
        .post_json(
            "/api/v1/models/digits/switch",
            &serde_json::json!({ "to": to }),
        )
        .await
        .unwrap()
}

/// The version that answers a digits request now, by its `x-teal-version` header.
pub async fn live_version(client: &HttpClient) -> String {
    let body = bytes::Bytes::from(infer_body(&[holdout("digits")[0].0.clone()]).to_string());
    let answer = client
        .send("POST", "/v2/models/digits/infer", &[], body)
        .await
        .unwrap();
    answer.header("x-teal-version").unwrap_or("").to_string()
}

/// The labels a version's reference gives for the first rows of the holdout.
pub fn reference_labels(model: &str, version: &str) -> Vec<i64> {
    reference(model, version)["outputs"]["label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// A config with one model, `digits`, whose slots (and any extra model settings) are TOML.
pub fn config_with(blue: &str, green: Option<&str>) -> Config {
    config_with_model_settings("", blue, green)
}

pub fn config_with_model_settings(settings: &str, blue: &str, green: Option<&str>) -> Config {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndrain_ms = 5000\n\n[[model]]\nname = \"digits\"\n{settings}\n[model.blue]\n{blue}\n"
    );
    if let Some(green) = green {
        text.push_str(&format!("[model.green]\n{green}\n"));
    }
    let mut config = Config::parse(&text).unwrap();
    config.resolve_paths(&repo_root());
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    config
}

/// An in-process ONNX slot of a bundled digits version (or a variant under `variants/`).
pub fn onnx(version: &str) -> String {
    let path = if version.starts_with("v2-") {
        format!("models/digits/variants/{version}/model.onnx")
    } else {
        format!("models/digits/{version}/model.onnx")
    };
    format!("version = \"{version}\"\nkind = \"onnx\"\npath = \"{path}\"\n")
}

pub fn upstream(version: &str, urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "version = \"{version}\"\nkind = \"upstream\"\nurls = [{}]\n{extra}\n",
        urls.join(", ")
    )
}

/// A process slot running `tests/python/onnx_model_server.py` on a digits model.
pub fn python_server(version: &str, model_version: &str, args: &str) -> String {
    format!(
        "version = \"{version}\"\nkind = \"process\"\ncommand = \"{python} tests/python/onnx_model_server.py --port {{port}} --model models/digits/{model_version}/model.onnx --version {version} {args}\"\nready_timeout_ms = 30000\nstop_grace_ms = 3000\n",
        python = python_word()
    )
}

/// Sends SIGTERM to one process (a teal under test).
pub fn terminate(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// A `teal serve` process on ports 127.0.0.1:0 picked, with clients for both listeners.
pub struct Binary {
    pub proc: Proc,
    pub data: HttpClient,
    pub admin: HttpClient,
}

impl Binary {
    /// Its peak resident memory (`VmHWM` in `/proc/<pid>/status`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status_bytes("VmHWM")
    }

    /// Its peak address space (`VmPeak`), in bytes: an allocation reserved but never
    /// touched shows here, not in the resident peak.
    pub fn peak_virtual(&self) -> u64 {
        self.status_bytes("VmPeak")
    }

    fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.0.id()))
            .expect("the process's status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        kib * 1024
    }
}

/// Starts `teal serve --config FILE` on ports of its choosing, its logs (stderr) written to
/// `log` when given, and reads where it listens from its "teal ready" line.
pub fn serve_binary(config: &std::path::Path, log: Option<&std::path::Path>) -> Binary {
    serve_binary_with_env(config, log, &[])
}

/// As [`serve_binary`], with more environment variables.
pub fn serve_binary_with_env(
    config: &std::path::Path,
    log: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> Binary {
    let mut command = std::process::Command::new(teal_bin());
    command.envs(env.iter().copied());
    command
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .env("TEAL_LOG", "warn")
        .current_dir(repo_root())
        .stdout(std::process::Stdio::piped());
    match log {
        Some(path) => command.stderr(std::fs::File::create(path).expect("log file")),
        None => command.stderr(std::process::Stdio::null()),
    };
    use std::os::unix::process::CommandExt;
    let mut proc = Proc(command.process_group(0).spawn().expect("spawn"), false);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proc.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // "teal ready: data plane http://A admin http://B (token in ...)[ metrics http://C]"
    let urls: Vec<&str> = line
        .split_whitespace()
        .filter(|w| w.starts_with("http://"))
        .collect();
    assert!(
        line.starts_with("teal ready:") && urls.len() >= 2,
        "teal did not start: {line:?}"
    );
    Binary {
        data: HttpClient::new(urls[0]),
        admin: HttpClient::new(urls[1]).with_token(Some(TOKEN.into())),
        proc,
    }
}

/// Writes a config file for [`serve_binary`]: `models` is the TOML of the `[[model]]` tables
/// (a `path = "models/..."` in them is made absolute, from the repository's root); the state
/// goes to a fresh folder beside the file.
pub fn config_file(models: &str) -> std::path::PathBuf {
    let dir = temp_dir("binary");
    let path = dir.join("teal.toml");
    let models = models.replace(
        "path = \"models/",
        &format!("path = \"{}/models/", repo_root().display()),
    );
    std::fs::write(
        &path,
        format!(
            "[server]\nstate_dir = \"{}\"\n\n{models}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Runs a check script of `tests/python/` with the checkout's Python and `args`, bounded by
/// `limit`; fails the test with both outputs unless it exits 0 and says "all checks passed".
/// Returns what it printed.
pub async fn python_check(script: &str, args: &[String], limit: Duration) -> String {
    let output = tokio::process::Command::new(python())
        .arg(repo_root().join("tests/python").join(script))
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, output)
        .await
        .unwrap_or_else(|_| panic!("{script} finishes within {limit:?}"))
        .expect("the checkout's Python runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{script}: {stdout}");
    stdout
}

/// Runs a validation of the test model through the admin API and waits (bounded) for its
/// report.
pub async fn validate(admin: &HttpClient, body: serde_json::Value) -> serde_json::Value {
    let started = admin
        .post_json("/api/v1/models/digits/validate", &body)
        .await
        .unwrap();
    assert_eq!(started.status, 202, "{}", started.error_message());
    let id = started.json()["id"].as_u64().unwrap();
    let mut report = serde_json::Value::Null;
    let finished = eventually(Duration::from_secs(120), async || {
        let status = admin
            .get(&format!("/api/v1/validations/{id}"))
            .await
            .unwrap()
            .json();
        report = status["report"].clone();
        status["state"] != "running"
    })
    .await;
    assert!(finished, "the validation did not finish");
    assert!(report.is_object(), "no report");
    report
}

/// The verdict of one gate in a validation report.
pub fn verdict_of<'a>(report: &'a serde_json::Value, gate: &str) -> &'a str {
    report["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == gate)
        .unwrap_or_else(|| panic!("no {gate} gate in {report}"))["verdict"]
        .as_str()
        .unwrap()
}
