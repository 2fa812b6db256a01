//! The admin API is separate and guarded; the CLI drives a real `teal serve` process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_without_the_right_token_are_refused() {
    let running = start(&example_config()).await;
    for token in [None, Some("wrong".to_string()), Some(format!("{TOKEN}x"))] {
        let client =
            teal::cli::client::HttpClient::new(&running.admin_url()).with_token(token.clone());
        for (method, path) in [
            ("GET", "/api/v1/status"),
            ("POST", "/api/v1/models/digits/switch"),
            ("POST", "/api/v1/models/digits/rollback"),
        ] {
            let answer = client
                .send(method, path, &[], bytes::Bytes::from("{\"to\":\"green\"}"))
                .await
                .unwrap();
            assert_eq!(answer.status, 401, "{method} {path} with {token:?}");
            assert!(
                answer.error_message().contains("admin token"),
                "{}",
                answer.error_message()
            );
        }
    }
    let status = admin(&running).get("/api/v1/status").await.unwrap();
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["models"][1]["name"], "digits");
    // Nothing switched while the token was wrong.
    assert_eq!(status.json()["models"][1]["live"], "blue");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_do_not_exist_on_the_data_plane() {
    let running = start(&example_config()).await;
    let client =
        teal::cli::client::HttpClient::new(&running.data_url()).with_token(Some(TOKEN.into()));
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/models/digits/switch"),
        ("POST", "/api/v1/models/digits/rollback"),
        ("GET", "/healthz"),
    ] {
        let answer = client
            .send(method, path, &[], bytes::Bytes::from("{\"to\":\"green\"}"))
            .await
            .unwrap();
        assert_eq!(answer.status, 404, "{method} {path} on the data plane");
    }
    let status = admin(&running).get("/api/v1/models/digits").await.unwrap();
    assert_eq!(
        status.json()["live"],
        "blue",
        "the data plane switched nothing"
    );
    stop(running).await;
}

fn teal(args: &[&str], state: &std::path::Path) -> std::process::Output {
    Command::new(teal_bin())
        .args(args)
        .env("TEAL_STATE_DIR", state)
        .env_remove("TEAL_ADMIN_TOKEN")
        .env_remove("TEAL_ADMIN_URL")
        .output()
        .expect("teal runs")
}

struct Server {
    child: Child,
    data_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(state: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(teal_bin())
        .args(["serve", "--config"])
        .arg(repo_root().join("examples/teal.toml"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(extra)
        .env("TEAL_STATE_DIR", state)
        .env_remove("TEAL_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("teal serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    // The ready line comes once the models are loaded; EOF means teal exited.
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("teal ready:"),
        "unexpected first line: {line:?}"
    );
    let data_url = line.split_whitespace().nth(4).unwrap().to_string();
    Server { child, data_url }
}

/// The server runs on one thread (`--threads 1`: one event loop, the benchmarks' setting);
/// the other tests that start the binary use the default of a thread per core.
#[test]
fn the_cli_reports_switches_and_rolls_back_a_real_server() {
    let state = temp_dir("cli");
    let mut server = serve(&state, &["--threads", "1"]);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the token file is private");
    let mode = std::fs::metadata(state.join("teal.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the state file is private to its owner");

    let status = teal(&["status", "digits", "--json"], &state);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(json["live"], "blue");
    assert_eq!(json["slots"].as_array().unwrap().len(), 2);

    let human = teal(&["status"], &state);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("digits: live on blue (v1)"), "{text}");
    assert!(text.contains("green  v2"), "{text}");

    let switch = teal(&["switch", "digits", "--to", "green"], &state);
    assert!(switch.status.success());
    assert!(String::from_utf8_lossy(&switch.stdout).contains("switched blue (v1) -> green (v2)"));
    let via_data = Command::new("python3")
        .args(["-c", "import sys,urllib.request,json;r=urllib.request.urlopen(urllib.request.Request(sys.argv[1]+'/v1/models/digits/predict',data=json.dumps({'features':[0]*64}).encode(),headers={'content-type':'application/json'}));print(r.headers['x-teal-version'])"])
        .arg(&server.data_url)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&via_data.stdout).trim(), "v2");

    let rollback = teal(&["rollback", "digits", "--json"], &state);
    let json: serde_json::Value = serde_json::from_slice(&rollback.stdout).unwrap();
    assert_eq!(json["to"], "blue");
    assert_eq!(json["generation"], 3);

    let unknown = teal(&["switch", "nope", "--to", "green"], &state);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown model 'nope'"));

    // SIGTERM: teal finishes and exits cleanly.
    terminate(server.child.id());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "teal did not stop within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn the_cli_says_what_to_do_when_no_server_answers() {
    let state = temp_dir("cli-none");
    std::fs::write(state.join("admin.token"), "t").unwrap();
    let output = Command::new(teal_bin())
        .args(["status", "--admin-url", "http://127.0.0.1:9"])
        .env("TEAL_STATE_DIR", &state)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is `teal serve` running?"), "{stderr}");
    let no_token = Command::new(teal_bin())
        .args(["status"])
        .env("TEAL_STATE_DIR", temp_dir("empty"))
        .env_remove("TEAL_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("no admin token"));
}

fn serve_error(env: &[(&str, &str)], config: &std::path::Path) -> String {
    let mut command = Command::new(teal_bin());
    command.args(["serve", "--config"]).arg(config).args([
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    command.env("TEAL_STATE_DIR", temp_dir("err"));
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1), "teal must exit 1");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_missing_or_wrong_onnx_runtime_library_is_a_clear_start_up_error() {
    let config = repo_root().join("examples/teal.toml");
    let missing = serve_error(
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")],
        &config,
    );
    assert!(missing.contains("does not exist"), "{missing}");
    assert!(
        missing.contains("pip install onnxruntime==1.31.1"),
        "{missing}"
    );
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a libc to stand in for a wrong library");
    let wrong = serve_error(&[("ORT_DYLIB_PATH", libc)], &config);
    assert!(wrong.contains("cannot load ONNX Runtime"), "{wrong}");
}

#[test]
fn a_bad_config_names_the_file_the_field_and_the_reason() {
    let dir = temp_dir("badconfig");
    let text = std::fs::read_to_string(repo_root().join("examples/teal.toml"))
        .unwrap()
        .replace("live = \"blue\"", "live = \"purple\"");
    let config = dir.join("teal.toml");
    std::fs::write(&config, text).unwrap();
    let error = serve_error(&[], &config);
    assert!(
        error.contains("teal.toml") && error.contains("line") && error.contains("purple"),
        "{error}"
    );
    let missing = serve_error(&[], &dir.join("absent.toml"));
    assert!(
        missing.contains("cannot read config") && missing.contains("absent.toml"),
        "{missing}"
    );
    let missing_model = std::fs::read_to_string(repo_root().join("examples/teal.toml"))
        .unwrap()
        .replace("../models/cancer/v1/model.onnx", "/nonexistent/model.onnx");
    std::fs::write(
        &config,
        missing_model.replace("../", &format!("{}/", repo_root().display())),
    )
    .unwrap();
    let error = serve_error(&[], &config);
    assert!(
        error.contains("model 'cancer', blue slot (version v1)")
            && error.contains("/nonexistent/model.onnx"),
        "{error}"
    );
    // A thread count of zero is refused as a usage error, before anything starts.
    let zero = Command::new(teal_bin())
        .args(["serve", "--threads", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert!(stderr.contains("1 or more"), "{stderr}");
}

#[test]
fn the_demo_runs_three_rollouts_under_load_with_no_failure_outside_the_fault() {
    let output = Command::new(teal_bin())
        .args(["demo", "--requests", "300", "--clients", "4", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["errors"], 0);
    let ended: Vec<&str> = summary["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ended"].as_str().unwrap())
        .collect();
    assert_eq!(ended, ["torn_down", "failed", "rolled_back"]);
    let phases = summary["phases"].as_array().unwrap();
    for (name, served) in [
        ("v1 live", "v1 (blue)"),
        ("v2 live", "v2 (green)"),
        ("rolled back: v2 live", "v2 (green)"),
    ] {
        let phase = phases.iter().find(|p| p["phase"] == name).unwrap();
        let versions = phase["versions"].as_object().unwrap();
        assert_eq!(versions.keys().collect::<Vec<_>>(), vec![served], "{phase}");
        assert!(phase["requests"].as_u64().unwrap() > 0);
        assert!(phase["accuracy"].as_f64().unwrap() > 0.9, "{phase}");
    }
    // v3's failures were all answered by v2, warm beside it: none reached a client.
    assert_eq!(
        summary["errors_from_the_fault"].as_u64(),
        Some(0),
        "{summary:#}"
    );
    assert!(summary["failovers"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["rollback_after_fault_ms"].as_f64().unwrap() < 10_000.0);
}

#[test]
fn the_admin_token_never_reaches_the_logs() {
    let state = temp_dir("token-logs");
    let log = state.join("teal.log");
    let mut command = Command::new(teal_bin());
    command
        .args(["--log-file"])
        .arg(&log)
        .args(["serve", "--config"])
        .arg(repo_root().join("examples/teal.toml"))
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("TEAL_STATE_DIR", &state)
        .env("TEAL_LOG", "trace")
        .env_remove("TEAL_ADMIN_TOKEN");
    let server = spawn_teal(&mut command);
    let token = std::fs::read_to_string(state.join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    // The CLI (which reads the token file), a right and a wrong token on the wire.
    for args in [
        &["status"][..],
        &["history", "digits"],
        &["switch", "digits", "--to", "green"],
    ] {
        let out = teal(args, &state);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(&token));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let admin_url = std::fs::read_to_string(state.join("admin.url")).unwrap();
    runtime.block_on(async {
        for presented in [token.clone(), format!("{token}x"), token[..10].to_string()] {
            let client =
                teal::cli::client::HttpClient::new(admin_url.trim()).with_token(Some(presented));
            let _ = client.get("/api/v1/status").await.unwrap();
        }
    });
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("teal::admin") && logged.contains("green"),
        "the switch is logged: {logged}"
    );
    assert!(
        !logged.contains(&token) && !logged.contains(&token[..16]),
        "the token appears in the log"
    );
}
