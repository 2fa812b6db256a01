//! Model files from where teams keep them: versions in a real MLflow model registry (a
//! tracking server started here, SQLite backend, its artifact proxy on a local folder) and
//! files over HTTP with a SHA-256 pin. Each is fetched, checked, kept by digest, and its
//! provenance shown; a bad source is refused with the reason while the live version serves.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::mlflow::*;
use common::*;

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn config(text: &str, mlflow: Option<&Mlflow>) -> teal::core::config::Config {
    let server = match mlflow {
        Some(m) => format!("mlflow_uri = \"{}\"\n", m.uri),
        None => String::new(),
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{server}\n[[model]]\nname = \"digits\"\n{text}"
    );
    let mut config = teal::core::config::Config::parse(&text).unwrap();
    config.resolve_paths(&repo_root());
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    config
}

async fn deploy(
    admin: &teal::cli::client::HttpClient,
    slot: serde_json::Value,
) -> teal::cli::client::Answer {
    admin
        .post_json("/api/v1/models/digits/deploy", &slot)
        .await
        .unwrap()
}

async fn first_label(running: &teal::server::Running, path: &str) -> i64 {
    let row = holdout("digits")[0].0.clone();
    let answer = data(running)
        .send(
            "POST",
            path,
            &[],
            Bytes::from(infer_body(&[row]).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    answer.json()["outputs"][0]["data"][0].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_versions_are_fetched_by_alias_and_number_with_their_provenance() {
    let dir = temp_dir("mlflow");
    let mlflow = start_mlflow(&dir).await;
    let versions = registry(
        &mlflow,
        &[
            &["onnx", "digits", "models/digits/v1/model.onnx"],
            &["onnx", "digits", "models/digits/v2/model.onnx"],
            &["sklearn", "iris-sklearn"],
        ],
    );
    assert_eq!(versions, "1 2 1");
    set_alias(&mlflow, "digits", "champion", 1).await;

    let configured = config(
        "[model.blue]\nversion = \"champion\"\nkind = \"onnx\"\nsource = \"models:/digits@champion\"\nreference = \"models/digits/v1/reference.json\"\n",
        Some(&mlflow),
    );
    let running = start(&configured).await;
    let admin = admin(&running);
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let provenance = &status["slots"][0]["provenance"];
    assert_eq!(
        provenance["source"], "models:/digits@champion",
        "{status:#}"
    );
    assert_eq!(provenance["resolved"], "models:/digits/1");
    assert_eq!(provenance["registry_version"], "1");
    assert_eq!(
        provenance["run_id"].as_str().unwrap().len(),
        32,
        "{provenance}"
    );
    // The registry's file is the one logged, byte for byte.
    assert_eq!(
        provenance["sha256"],
        sha256_of(&repo_root().join("models/digits/v1/model.onnx"))
    );
    assert_eq!(
        first_label(&running, "/v2/models/digits/infer").await,
        reference_labels("digits", "v1")[0]
    );

    // A version by number, deployed through the API: in the standby slot with its provenance,
    // which the deploy's audit event records too.
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "r2", "kind": "onnx", "source": "models:/digits/2"}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(
        answer.json()["provenance"]["resolved"],
        "models:/digits/2",
        "{}",
        answer.json()
    );
    assert_eq!(
        first_label(&running, "/v2/models/digits/versions/r2/infer").await,
        reference_labels("digits", "v2")[0]
    );
    let events = admin
        .get("/api/v1/models/digits/audit")
        .await
        .unwrap()
        .json();
    assert!(
        events.to_string().contains("models:/digits/2"),
        "the deploy's audit event names the resolved version: {events}"
    );

    // Bad sources: refused with the reason, the live version untouched.
    for (source, says) in [
        ("models:/digits@nobody", "alias nobody not found"),
        ("models:/nothing/1", "nothing"),
        (
            "models:/iris-sklearn/1",
            "no ONNX flavour (its flavours: python_function, sklearn)",
        ),
    ] {
        let answer = deploy(
            &admin,
            serde_json::json!({"version": "bad", "kind": "onnx", "source": source}),
        )
        .await;
        assert_eq!(answer.status, 422, "{source}: {}", answer.error_message());
        let message = answer.error_message();
        assert!(message.contains(says), "{source}: {message}");
    }
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(status["live_version"], "champion", "{status:#}");
    assert_eq!(
        first_label(&running, "/v2/models/digits/infer").await,
        reference_labels("digits", "v1")[0]
    );
    stop(running).await;

    // The alias moves while teal is down: the restart loads the version the slot was
    // serving (remembered by number and digest), not the alias's new one, which only a
    // rollout may bring.
    set_alias(&mlflow, "digits", "champion", 2).await;
    let running = start(&configured).await;
    let status = admin_of(&running)
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    let live = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["version"] == "champion")
        .unwrap();
    assert_eq!(
        live["provenance"]["resolved"], "models:/digits/1",
        "{status:#}"
    );
    assert_eq!(status["live_version"], "champion");
    assert_eq!(
        first_label(&running, "/v2/models/digits/infer").await,
        reference_labels("digits", "v1")[0]
    );
    stop(running).await;
}

/// The digests of the model files in a state folder's artifact cache, sorted.
fn cached_digests(state: &Path) -> Vec<String> {
    let mut kept: Vec<String> = std::fs::read_dir(state.join("artifacts"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            Some(
                name.strip_prefix("sha256-")?
                    .strip_suffix(".onnx")?
                    .to_string(),
            )
        })
        .collect();
    kept.sort();
    kept
}

fn sorted<const N: usize>(digests: [String; N]) -> Vec<String> {
    let mut digests = digests.to_vec();
    digests.sort();
    digests
}

/// Waits (bounded) until the file server at `base` serves the bundled models' files.
async fn serving_files(base: &str) {
    let probe = teal::cli::client::HttpClient::new(base);
    assert!(
        eventually(Duration::from_secs(30), async || {
            matches!(probe.get("/digits/v1/reference.json").await, Ok(a) if a.status == 200)
        })
        .await,
        "the file server at {base} did not start"
    );
}

fn admin_of(running: &teal::server::Running) -> teal::cli::client::HttpClient {
    admin(running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_over_http_is_pinned_by_its_digest_and_kept_once() {
    // A plain HTTP file server over the models folder.
    let port = free_port();
    let _files = spawn_group(
        std::process::Command::new(python())
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(repo_root().join("models"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let base = format!("http://127.0.0.1:{port}");
    serving_files(&base).await;
    let v1 = sha256_of(&repo_root().join("models/digits/v1/model.onnx"));
    let v2 = sha256_of(&repo_root().join("models/digits/v2/model.onnx"));
    let mut settings = config(
        &format!(
            "[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\nsource = \"{base}/digits/v1/model.onnx\"\nsha256 = \"{v1}\"\n"
        ),
        None,
    );
    settings.server.max_download_bytes = 1_000_000;
    let state = settings.server.state_dir.clone();
    let running = start(&settings).await;
    let admin = admin(&running);
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(status["slots"][0]["provenance"]["sha256"], v1, "{status:#}");
    assert!(state.join(format!("artifacts/sha256-{v1}.onnx")).is_file());

    // The wrong pin: refused, nothing kept under the wrong name, nothing changed.
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "v2", "kind": "onnx", "source": format!("{base}/digits/v2/model.onnx"), "sha256": v1}),
    )
    .await;
    assert_eq!(answer.status, 422, "{}", answer.error_message());
    assert!(
        answer
            .error_message()
            .contains(&format!("SHA-256 is {v2}, not the pinned {v1}")),
        "{}",
        answer.error_message()
    );
    // A file the server does not have: its answer is the reason.
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "v9", "kind": "onnx", "source": format!("{base}/digits/v9/model.onnx")}),
    )
    .await;
    assert!(
        answer.error_message().contains("404"),
        "{}",
        answer.error_message()
    );
    // The right pin: deployed.
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "v2", "kind": "onnx", "source": format!("{base}/digits/v2/model.onnx"), "sha256": v2}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let kept = cached_digests(&state);
    assert_eq!(
        kept.len(),
        2,
        "only whole, checked files are kept: {kept:?}"
    );
    stop(running).await;

    // A cache of two files: deploying a third version into the standby slot deletes the
    // file no loaded version uses (v2's, replaced) and keeps the live one's, however old,
    // with the note that named the deleted one.
    let reseed = sha256_of(&repo_root().join("models/digits/variants/v2-reseed/model.onnx"));
    settings.server.artifact_cache_files = 2;
    let running = start(&settings).await;
    let admin = common::admin(&running);
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "v2-reseed", "kind": "onnx", "source": format!("{base}/digits/variants/v2-reseed/model.onnx"), "sha256": reseed}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(cached_digests(&state), sorted([v1.clone(), reseed.clone()]));
    let notes: Vec<String> = std::fs::read_dir(state.join("artifacts"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("source-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    assert!(
        notes.iter().all(|n| !n.starts_with(&v2)),
        "the note of the deleted file went with it: {notes:?}"
    );
    stop(running).await;

    // A cache bounded in bytes, room for two of these files and many more by count: v2,
    // fetched again into the standby slot, pushes out v2-reseed's file, which it replaced.
    let size = |digest: &str| {
        std::fs::metadata(state.join(format!("artifacts/sha256-{digest}.onnx")))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    settings.server.artifact_cache_files = 16;
    settings.server.artifact_cache_bytes = size(&v1)
        + std::fs::metadata(repo_root().join("models/digits/v2/model.onnx"))
            .unwrap()
            .len();
    let running = start(&settings).await;
    let answer = deploy(
        &common::admin(&running),
        serde_json::json!({"version": "v2", "kind": "onnx", "source": format!("{base}/digits/v2/model.onnx"), "sha256": v2}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(
        cached_digests(&state),
        sorted([v1.clone(), v2.clone()]),
        "the byte bound deleted v2-reseed's file ({reseed})"
    );
    stop(running).await;

    // Too large for the limit: refused before it is all read.
    let mut small = config(
        "[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"models/digits/v1/model.onnx\"\n",
        None,
    );
    small.server.max_download_bytes = 1000;
    let running = start(&small).await;
    let answer = deploy(
        &common::admin(&running),
        serde_json::json!({"version": "v2", "kind": "onnx", "source": format!("{base}/digits/v2/model.onnx")}),
    )
    .await;
    assert!(
        answer
            .error_message()
            .contains("larger than server.max_download_bytes"),
        "{}",
        answer.error_message()
    );
    stop(running).await;
}

/// The requests a `tests/python/breaking_files.py` server logged for `path`.
fn served(log: &Path, path: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["path"] == path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_breaks_off_resumes_from_its_bytes_or_starts_again_when_the_file_changed() {
    // A file server whose first download of each file breaks off halfway.
    let dir = temp_dir("breaking-files");
    let log = dir.join("requests.jsonl");
    let port = free_port();
    let _files = spawn_group(
        std::process::Command::new(python())
            .arg(repo_root().join("tests/python/breaking_files.py"))
            .arg(port.to_string())
            .arg(repo_root().join("models"))
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let base = format!("http://127.0.0.1:{port}");
    serving_files(&base).await;
    let running = start(&config(
        "[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"models/digits/v1/model.onnx\"\n",
        None,
    ))
    .await;
    let admin = admin(&running);

    // The same file at the source: the second request asks for the rest, with the ETag of
    // the first, and gets only the rest.
    let file = repo_root().join("models/digits/v2/model.onnx");
    let size = std::fs::metadata(&file).unwrap().len();
    let v2 = sha256_of(&file);
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "v2", "kind": "onnx", "source": format!("{base}/digits/v2/model.onnx"), "sha256": v2}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let requests = served(&log, "/digits/v2/model.onnx");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let half = size / 2;
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["sent"], half);
    assert_eq!(requests[1]["range"], format!("bytes={half}-"));
    assert_eq!(
        requests[1]["if_range"], requests[0]["etag"],
        "{requests:#?}"
    );
    assert_eq!(requests[1]["status"], 206, "{requests:#?}");
    assert_eq!(requests[1]["sent"], size - half);
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let standby = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|slot| slot["version"] == "v2")
        .cloned()
        .unwrap_or_default();
    assert_eq!(standby["provenance"]["sha256"], v2, "{status:#}");
    assert_eq!(standby["provenance"]["bytes"], size, "{status:#}");

    // The file changed between the two requests: the server sends it whole, and teal starts
    // again rather than splice two files.
    let file = repo_root().join("models/digits/variants/v2-reseed/model.onnx");
    let reseed = sha256_of(&file);
    let answer = deploy(
        &admin,
        serde_json::json!({"version": "v2-reseed", "kind": "onnx", "source": format!("{base}/changing/digits/variants/v2-reseed/model.onnx"), "sha256": reseed}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    let requests = served(&log, "/changing/digits/variants/v2-reseed/model.onnx");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert!(requests[1]["range"].is_string(), "{requests:#?}");
    assert_eq!(requests[1]["status"], 200, "{requests:#?}");
    assert_eq!(requests[1]["sent"], std::fs::metadata(&file).unwrap().len());
    stop(running).await;

    // `teal fetch`, as a Kubernetes colour's init container runs it: the file whole at its
    // output, resumed the same way, and its provenance for scripts.
    let out = dir.join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    let file = repo_root().join("models/digits/variants/v2-permuted/model.onnx");
    let digest = sha256_of(&file);
    let fetched = std::process::Command::new(common::teal_bin())
        .arg("fetch")
        .arg(format!("{base}/digits/variants/v2-permuted/model.onnx"))
        .args(["--sha256", &digest, "--json", "--output"])
        .arg(out.join("model.onnx"))
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(shown["sha256"], digest);
    assert_eq!(
        std::fs::read(out.join("model.onnx")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let requests = served(&log, "/digits/variants/v2-permuted/model.onnx");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[1]["status"], 206, "{requests:#?}");
    // A wrong pin: exit 1 with both digests, and nothing at the output or beside it.
    let wrong = std::process::Command::new(common::teal_bin())
        .arg("fetch")
        .arg(format!("{base}/digits/v1/model.onnx"))
        .args(["--sha256", &digest, "--output"])
        .arg(out.join("wrong.onnx"))
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains(&format!("not the pinned {digest}")), "{said}");
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("model.onnx")]);
}

#[test]
fn sources_that_cannot_work_are_refused_at_config_load_with_the_field_named() {
    for (slot, field, says) in [
        ("source = \"models:/fraud\"", "source", "models:/NAME@ALIAS"),
        (
            "source = \"gs://bucket/m.onnx\"",
            "source",
            "not a source yet",
        ),
        ("source = \"s3://bucket\"", "source", "s3://BUCKET/KEY"),
        (
            "path = \"m.onnx\"\nsource = \"models:/fraud/1\"",
            "source",
            "not both",
        ),
        (
            "source = \"https://h/m.onnx\"\nsha256 = \"abc\"",
            "sha256",
            "64 hexadecimal",
        ),
        (
            "path = \"m.onnx\"\nsha256 = \"abc\"",
            "sha256",
            "set source too",
        ),
        ("workers = 1", "path", "needs a path"),
    ] {
        let text = format!(
            "[[model]]\nname = \"m\"\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\n{slot}\n"
        );
        let error = match teal::core::config::Config::parse(&text) {
            Err(e) => e.to_string(),
            Ok(config) => config.validate().unwrap_err().to_string(),
        };
        assert!(
            error.contains(field) && error.contains(says),
            "{slot}: {error}"
        );
    }
    // A command that serves a registry version: the version named once, and used.
    for (slot, field, says) in [
        (
            "kind = \"process\"\ncommand = \"serve {port}\"\nsource = \"models:/fraud/1\"",
            "command",
            "names no {source}",
        ),
        (
            "kind = \"process\"\ncommand = \"serve {port} {source}\"",
            "command",
            "the slot has no source",
        ),
        (
            "kind = \"process\"\ncommand = \"serve {port} {source}\"\nsource = \"https://h/m.onnx\"",
            "source",
            "a process slot's source is a registry version",
        ),
        (
            "kind = \"upstream\"\nurls = [\"http://127.0.0.1:9\"]\nsource = \"models:/fraud/1\"",
            "source",
            "an upstream slot fronts running servers",
        ),
    ] {
        let text = format!("[[model]]\nname = \"m\"\n[model.blue]\nversion = \"v1\"\n{slot}\n");
        let error = match teal::core::config::Config::parse(&text) {
            Err(e) => e.to_string(),
            Ok(config) => config.validate().unwrap_err().to_string(),
        };
        assert!(
            error.contains(field) && error.contains(says),
            "{slot}: {error}"
        );
    }
    let fine = "[[model]]\nname = \"m\"\n[model.blue]\nversion = \"v1\"\nkind = \"process\"\ncommand = \"serve {port}\"\nsource = \"models:/fraud@champion\"\nenv = { MODEL_URI = \"{source}\" }\n";
    teal::core::config::Config::parse(fine)
        .unwrap()
        .validate()
        .unwrap();
    // The cache's bounds.
    for (server, field, says) in [
        (
            "artifact_cache_files = 1",
            "server.artifact_cache_files",
            "at least 2",
        ),
        (
            "artifact_cache_bytes = 0",
            "server.artifact_cache_bytes",
            "more than 0",
        ),
    ] {
        let text = format!(
            "[server]\n{server}\n[[model]]\nname = \"m\"\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\npath = \"m.onnx\"\n"
        );
        let error = match teal::core::config::Config::parse(&text) {
            Err(e) => e.to_string(),
            Ok(config) => config.validate().unwrap_err().to_string(),
        };
        assert!(
            error.contains(field) && error.contains(says),
            "{server}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_alias_rolls_the_version_out_and_a_bad_one_is_stopped_by_the_gates() {
    let dir = temp_dir("mlflow-watch");
    let mlflow = start_mlflow(&dir).await;
    let versions = registry(
        &mlflow,
        &[
            &["onnx", "digits", "models/digits/v1/model.onnx"],
            &["onnx", "digits", "models/digits/v2/model.onnx"],
            // Labels shifted by one: the gates fail it.
            &[
                "onnx",
                "digits",
                "models/digits/variants/v2-permuted/model.onnx",
            ],
        ],
    );
    assert_eq!(versions, "1 2 3");
    set_alias(&mlflow, "digits", "champion", 1).await;
    let running = start(&config(
        "[model.source]\nwatch = \"models:/digits@champion\"\npoll_ms = 200\n\
         [model.rollout]\nstrategy = { kind = \"blue_green\" }\nevidence = { holdout = \"models/digits/holdout.jsonl\" }\n\
         observe_ms = 1500\nkeep_warm_ms = 0\non_inconclusive = \"promote\"\n\
         [model.rollout.rules]\ncheck_interval_ms = 200\n\
         [model.blue]\nversion = \"digits-1\"\nkind = \"onnx\"\nsource = \"models:/digits/1\"\n",
        Some(&mlflow),
    ))
    .await;
    let admin = admin(&running);
    let live = async || {
        admin.get("/api/v1/models/digits").await.unwrap().json()["live_version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(live().await, "digits-1");

    // The alias moves to version 2: teal rolls it out, and it serves.
    let moved = std::time::Instant::now();
    let moved_ms = now_ms();
    set_alias(&mlflow, "digits", "champion", 2).await;
    assert!(
        eventually(Duration::from_secs(120), async || live().await
            == "digits-2")
        .await,
        "digits-2 never went live: {:#}",
        admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json()
    );
    eprintln!("alias moved -> digits-2 serving: {:?}", moved.elapsed());
    // Where that time went (the rollout's phases, from its audit events): deploying is the
    // fetch and load, validating the gates.
    for (phase, at) in phase_times(&admin, "digits-2", moved_ms).await {
        eprintln!("  {phase} from +{at} ms");
    }
    assert_eq!(
        first_label(&running, "/v2/models/digits/infer").await,
        reference_labels("digits", "v2")[0]
    );
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    let slot = status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["version"] == "digits-2")
        .unwrap();
    assert_eq!(
        slot["provenance"]["resolved"], "models:/digits/2",
        "{status:#}"
    );
    // Which file answered a request (`teal audit digits --request ID`).
    let row = holdout("digits")[0].0.clone();
    let answer = data(&running)
        .send(
            "POST",
            "/v2/models/digits/infer",
            &[],
            Bytes::from(infer_body(&[row]).to_string()),
        )
        .await
        .unwrap();
    let id = answer.header("x-request-id").unwrap().to_string();
    let mut audit = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(10), async || {
            audit = admin
                .get(&format!("/api/v1/models/digits/audit?request={id}"))
                .await
                .unwrap()
                .json();
            audit["requests"][0]["provenance"]["resolved"] == "models:/digits/2"
        })
        .await,
        "{audit:#}"
    );
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "fetched"
                && e["detail"]["provenance"]["resolved"] == "models:/digits/2"),
        "the rollout recorded where the file came from: {history:#}"
    );

    // Then to version 3, a bad one: the gates stop it and version 2 keeps serving.
    set_alias(&mlflow, "digits", "champion", 3).await;
    let failed = common::rollouts::wait_phase(&admin, "failed", Duration::from_secs(120)).await;
    assert_eq!(failed["version"], "digits-3", "{failed:#}");
    assert!(
        failed["outcome"]
            .as_str()
            .unwrap()
            .starts_with("gates failed"),
        "{failed:#}"
    );
    assert_eq!(live().await, "digits-2");
    // The alias still names the failed version: it is not tried again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rollout = admin
        .get("/api/v1/models/digits/rollout")
        .await
        .unwrap()
        .json();
    assert_eq!(rollout["version"], "digits-3");
    assert_eq!(rollout["phase_name"], "failed", "{rollout:#}");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_in_an_s3_compatible_store_is_fetched_with_the_usual_credentials() {
    // moto's S3 server, in a process of its own on a free port.
    let moto = repo_root().join(".deps/moto/bin");
    assert!(
        moto.join("moto_server").exists(),
        "{} is missing: run scripts/setup dev, which installs moto there",
        moto.display()
    );
    let port = free_port();
    let _store = spawn_group(
        std::process::Command::new(moto.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let probe = teal::cli::client::HttpClient::new(&endpoint);
    assert!(
        eventually(Duration::from_secs(60), async || probe
            .get("/")
            .await
            .is_ok())
        .await,
        "moto did not start"
    );
    let credentials = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    // A bucket holding digits v1, put there with boto3 as a team's pipeline would.
    let put = std::process::Command::new(moto.join("python"))
        .args([
            "-c",
            "import sys, boto3\n\
             s3 = boto3.client('s3', endpoint_url=sys.argv[1])\n\
             s3.create_bucket(Bucket='models')\n\
             s3.upload_file(sys.argv[2], 'models', 'digits/v1/model.onnx')\n",
        ])
        .arg(&endpoint)
        .arg(repo_root().join("models/digits/v1/model.onnx"))
        .envs(credentials)
        .output()
        .unwrap();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );

    let config = config_file(&format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\nversion = \"v1\"\nkind = \"onnx\"\nsource = \"s3://models/digits/v1/model.onnx\"\nreference = \"{}\"\n",
        repo_root()
            .join("models/digits/v1/reference.json")
            .display()
    ));
    let log = config.parent().unwrap().join("stderr.log");
    let teal = serve_binary_with_env(&config, Some(&log), &credentials);
    let status = teal
        .admin
        .get("/api/v1/models/digits")
        .await
        .unwrap()
        .json();
    let provenance = &status["slots"][0]["provenance"];
    assert_eq!(
        provenance["source"], "s3://models/digits/v1/model.onnx",
        "{status:#}"
    );
    assert_eq!(
        provenance["sha256"],
        sha256_of(&repo_root().join("models/digits/v1/model.onnx"))
    );
    // A key the bucket does not have: refused with the reason, v1 keeps serving.
    let answer = teal
        .admin
        .post_json(
            "/api/v1/models/digits/deploy",
            &serde_json::json!({"version": "v2", "kind": "onnx", "source": "s3://models/digits/v2/model.onnx"}),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 422, "{}", answer.error_message());
    assert!(
        answer
            .error_message()
            .contains("s3://models/digits/v2/model.onnx does not exist"),
        "{}",
        answer.error_message()
    );
    // The secret is never written to the log.
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("testing-secret"), "{logged}");
}

/// The phases of the model's rollout of `version`, each with the time it was entered, in
/// milliseconds after `since_ms` (wall clock), from the audit trail.
async fn phase_times(
    admin: &teal::cli::client::HttpClient,
    version: &str,
    since_ms: i64,
) -> Vec<(String, i64)> {
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    let mut phases: Vec<(String, i64)> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "rollout" && e["detail"]["version"] == version)
        .filter_map(|e| {
            Some((
                e["detail"]["to"].as_str()?.to_string(),
                e["at_ms"].as_i64()? - since_ms,
            ))
        })
        .collect();
    phases.sort_by_key(|(_, at)| *at);
    phases
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_alias_back_during_a_rollout_aborts_it() {
    let dir = temp_dir("mlflow-back");
    let mlflow = start_mlflow(&dir).await;
    let versions = registry(
        &mlflow,
        &[
            &["onnx", "digits", "models/digits/v1/model.onnx"],
            &["onnx", "digits", "models/digits/v2/model.onnx"],
        ],
    );
    assert_eq!(versions, "1 2");
    set_alias(&mlflow, "digits", "champion", 1).await;
    // The switch waits for an operator's approval, so the rollout is still before it when
    // the alias moves back.
    let running = start(&config(
        "[model.source]\nwatch = \"models:/digits@champion\"\npoll_ms = 200\n\
         [model.rollout]\nstrategy = { kind = \"blue_green\" }\nauto_switch = false\n\
         evidence = { holdout = \"models/digits/holdout.jsonl\" }\nkeep_warm_ms = 0\n\
         [model.blue]\nversion = \"digits-1\"\nkind = \"onnx\"\nsource = \"models:/digits/1\"\n",
        Some(&mlflow),
    ))
    .await;
    let admin = admin(&running);
    set_alias(&mlflow, "digits", "champion", 2).await;
    let waiting =
        common::rollouts::wait_phase(&admin, "awaiting_approval", Duration::from_secs(120)).await;
    assert_eq!(waiting["version"], "digits-2", "{waiting:#}");
    set_alias(&mlflow, "digits", "champion", 1).await;
    let aborted = common::rollouts::wait_phase(&admin, "aborted", Duration::from_secs(60)).await;
    assert_eq!(aborted["version"], "digits-2", "{aborted:#}");
    let status = admin.get("/api/v1/models/digits").await.unwrap().json();
    assert_eq!(status["live_version"], "digits-1", "{status:#}");
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    assert!(
        history
            .to_string()
            .contains("watch models:/digits@champion"),
        "the abort's actor is the watch: {history}"
    );
    stop(running).await;
}

/// `teal demo --registry`, as a user runs it: an MLflow server of its own, the alias moved
/// twice, the good version live by alias and the bad one stopped by the gates, no request
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_demo_rolls_out_by_alias_and_the_gates_stop_the_bad_version() {
    mlflow_python();
    let run = tokio::process::Command::new(teal_bin())
        .args(["demo", "--registry", "--json", "--clients", "2"])
        .current_dir(repo_root())
        .env("TEAL_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(400), run)
        .await
        .expect("the demo ends within 400 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["registered"], serde_json::json!(["1", "2", "3"]));
    assert_eq!(summary["live_at_the_end"], "digits-2", "{summary:#}");
    assert_eq!(summary["bad"]["end"][0], "failed", "{summary:#}");
    assert_eq!(summary["requests"]["failed"], 0, "{summary:#}");
    assert!(
        summary["answered_by"]["digits-2"].as_u64() > Some(0),
        "{summary:#}"
    );
    assert!(summary["alias_to_serving_ms"].as_i64() > Some(0));
    // The good version went through the gates and the switch, by the audit trail.
    let phases: Vec<&str> = summary["good"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_str())
        .collect();
    assert!(
        phases.starts_with(&["deploying", "warming_up", "validating", "switching"]),
        "{phases:?}"
    );
}

/// A registry version with no ONNX flavour (a scikit-learn model logged with its signature)
/// is served by a command: MLServer's MLflow runtime, given the version as `{source}`. teal
/// resolves the alias when the slot loads, gives the command the version's number and the
/// tracking URI, records where it came from, and follows the alias with the same command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_version_of_another_flavour_is_served_by_a_command_and_followed_by_the_watch() {
    let dir = temp_dir("mlflow-flavour");
    let mlflow = start_mlflow(&dir).await;
    let holdout = dir.join("holdout.jsonl");
    let versions = registry(
        &mlflow,
        &[
            &["sklearn", "iris", "1.0"],
            &["sklearn", "iris", "0.5"],
            &["iris-holdout", holdout.to_str().unwrap()],
        ],
    );
    assert_eq!(versions, "1 2 ok");
    set_alias(&mlflow, "iris", "champion", 1).await;
    let mlserver = repo_root().join(".deps/mlflow/bin/mlserver");
    let folder = dir.join("mlserver");
    std::fs::create_dir_all(&folder).unwrap();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
mlflow_uri = "{uri}"
allow_commands = true
[[model]]
name = "iris"
[model.source]
watch = "models:/iris@champion"
poll_ms = 200
[model.rollout]
strategy = {{ kind = "blue_green" }}
evidence = {{ holdout = "{holdout}" }}
observe_ms = 1000
keep_warm_ms = 0
on_inconclusive = "promote"
[model.blue]
version = "iris-1"
kind = "process"
source = "models:/iris@champion"
command = "{mlserver} start {folder}"
ready_timeout_ms = 120000
env = {{ MLSERVER_MODEL_NAME = "{{model}}", MLSERVER_MODEL_IMPLEMENTATION = "mlserver_mlflow.MLflowRuntime", MLSERVER_MODEL_URI = "{{source}}", MLSERVER_HTTP_PORT = "{{port}}", MLSERVER_GRPC_PORT = "0", MLSERVER_METRICS_PORT = "0", MLSERVER_METRICS_DIR = "{folder}" }}
"#,
        uri = mlflow.uri,
        mlserver = mlserver.display(),
        folder = folder.display(),
        holdout = holdout.display(),
    );
    let mut config = teal::core::config::Config::parse(&text).unwrap();
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    let running = start(&config).await;
    let admin = admin_of(&running);
    let status = async || admin.get("/api/v1/models/iris").await.unwrap().json();
    let slot_of = |status: &serde_json::Value, version: &str| {
        status["slots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["version"] == version)
            .cloned()
            .unwrap_or_default()
    };
    // The alias was resolved when the slot loaded: the command serves version 1, and the
    // slot keeps it by number, with the run that logged it.
    let first = status().await;
    assert_eq!(first["live_version"], "iris-1", "{first:#}");
    let blue = slot_of(&first, "iris-1");
    assert_eq!(blue["provenance"]["source"], "models:/iris@champion");
    assert_eq!(blue["provenance"]["resolved"], "models:/iris/1");
    assert!(blue["provenance"]["run_id"].is_string(), "{blue:#}");
    assert!(blue["provenance"].get("sha256").is_none(), "{blue:#}");
    let ask = async || {
        let body = serde_json::json!({"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]});
        data(&running)
            .send(
                "POST",
                "/v2/models/iris/infer",
                &[],
                Bytes::from(body.to_string()),
            )
            .await
            .unwrap()
    };
    let answer = ask().await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(answer.header("x-teal-version"), Some("iris-1"));
    assert_eq!(
        answer.json()["outputs"][0]["data"],
        serde_json::json!([0, 2])
    );

    // The alias moves: the same command is started with version 2, rolled out, and serves.
    set_alias(&mlflow, "iris", "champion", 2).await;
    assert!(
        eventually(
            Duration::from_secs(180),
            async || status().await["live_version"] == "iris-2"
        )
        .await,
        "iris-2 never went live: {:#}",
        admin
            .get("/api/v1/models/iris/rollout")
            .await
            .unwrap()
            .json()
    );
    let green = slot_of(&status().await, "iris-2");
    assert_eq!(
        green["provenance"]["resolved"], "models:/iris/2",
        "{green:#}"
    );
    let answer = ask().await;
    assert_eq!(answer.status, 200, "{}", answer.error_message());
    assert_eq!(answer.header("x-teal-version"), Some("iris-2"));
    stop(running).await;
}
