//! The path docs/your-model.md walks, run as a user runs it: train and export a scikit-learn
//! classifier (examples/your-model/train.py, in the checkout's .venv), `teal init` it with a
//! labelled sample, `teal serve` the config it wrote, make a retrain's reference with
//! `teal init --reference-only`, and roll the retrain out with the `teal deploy` command init
//! printed: validated on the sample, switched, watched while clients keep calling.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Trains the two versions and writes the holdout (and the ZipMap export) into a new folder.
fn trained() -> PathBuf {
    let dir = temp_dir("your-model");
    let output = Command::new(python())
        .arg(repo_root().join("examples/your-model/train.py"))
        .arg(&dir)
        .arg("--zipmap")
        .output()
        .expect("run train.py");
    assert!(
        output.status.success(),
        "train.py failed (scripts/setup dev installs scikit-learn and skl2onnx into .venv):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    dir
}

fn teal(dir: &Path, args: &[&str]) -> Output {
    Command::new(teal_bin())
        .args(args)
        .current_dir(dir)
        .env("TEAL_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run teal")
}

fn json_of(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "teal failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn text(answer: &teal::cli::client::Answer) -> String {
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// The holdout's rows as V2 request bodies, one row each.
fn holdout_bodies(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("holdout.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
            let features = &cells[..cells.len() - 1];
            serde_json::json!({"inputs": [{"name": "input", "shape": [1, features.len()], "datatype": "FP32", "data": features}]})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scikit_learn_model_goes_from_export_to_a_rolled_out_retrain() {
    let dir = trained();

    // init: the signature, a classifier of 3 classes, right on most of the sample, and files
    // that the server takes as they are.
    let init = json_of(&teal(
        &dir,
        &[
            "init",
            "wine-v1.onnx",
            "--name",
            "wine",
            "--sample",
            "holdout.csv",
            "--json",
        ],
    ));
    assert_eq!(init["kind"], "classifier", "{init:#}");
    assert_eq!(init["classes"], 3, "{init:#}");
    assert_eq!(init["prediction_output"], "label", "{init:#}");
    assert_eq!(
        init["inputs"][0]["shape"],
        serde_json::json!([-1, 13]),
        "{init:#}"
    );
    assert_eq!(init["sample"]["rows"], 54, "{init:#}");
    assert!(
        init["sample"]["accuracy"].as_f64().unwrap() > 0.9,
        "{init:#}"
    );
    assert_eq!(init["reference_rows"], 54, "{init:#}");
    assert!(dir.join("wine-v1.reference.json").is_file());
    assert!(dir.join("teal.toml").is_file());
    assert!(init["warnings"].as_array().unwrap().is_empty(), "{init:#}");

    // A second init does not overwrite what the first wrote.
    let again = teal(&dir, &["init", "wine-v1.onnx", "--sample", "holdout.csv"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // serve: the config as init wrote it (only the ports chosen here).
    let log = dir.join("teal.log");
    let server = serve_binary(&dir.join("teal.toml"), Some(&log));
    let bodies = holdout_bodies(&dir);
    let answer = server
        .data
        .post_json("/v2/models/wine/infer", &bodies[0])
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{}", text(&answer));
    assert_eq!(answer.json()["model_version"], "v1");
    let simple = server
        .data
        .post_json(
            "/v1/models/wine/predict",
            &serde_json::json!({"features": bodies[0]["inputs"][0]["data"]}),
        )
        .await
        .unwrap();
    assert_eq!(simple.status, 200, "{}", text(&simple));

    // The retrain: its reference, and the deploy command init prints for it.
    let second = json_of(&teal(
        &dir,
        &[
            "init",
            "wine-v2.onnx",
            "--name",
            "wine",
            "--version",
            "v2",
            "--sample",
            "holdout.csv",
            "--reference-only",
            "--json",
        ],
    ));
    assert!(second["config"].is_null(), "{second:#}");
    let deploy = second["next"][0].as_str().unwrap().to_string();
    assert!(
        deploy.starts_with("teal deploy wine --version v2 --onnx wine-v2.onnx --reference "),
        "{deploy}"
    );

    // Clients keep calling while the retrain rolls out, so the bake has traffic to judge.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (client, stop, bodies) = (server.data.clone(), stop.clone(), bodies.clone());
        tokio::spawn(async move {
            let mut failed = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = &bodies[i % bodies.len()];
                match client.post_json("/v2/models/wine/infer", body).await {
                    Ok(a) if a.status == 200 => {}
                    Ok(a) => failed.push(format!("{} {}", a.status, text(&a))),
                    Err(e) => failed.push(e.to_string()),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (i, failed)
        })
    };
    let mut words: Vec<String> = deploy
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    words.extend(
        [
            "--observe",
            "3s",
            "--keep-warm",
            "2s",
            "--admin-url",
            server.admin.base(),
        ]
        .map(String::from),
    );
    let rollout = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || teal(&dir, &words.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = traffic.await.unwrap();
    let printed = String::from_utf8_lossy(&rollout.stdout);
    assert!(
        rollout.status.success(),
        "the rollout did not finish: {}\n{printed}\n{}",
        String::from_utf8_lossy(&rollout.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {failed:?}",
        failed.len()
    );

    // The retrain is live, validated on the sample before it took traffic.
    let status = server.admin.get("/api/v1/models/wine").await.unwrap();
    assert_eq!(status.json()["live_version"], "v2", "{}", text(&status));
    let answer = server
        .data
        .post_json("/v2/models/wine/infer", &bodies[0])
        .await
        .unwrap();
    assert_eq!(answer.json()["model_version"], "v2");
    let history = server
        .admin
        .get("/api/v1/models/wine/history?limit=50")
        .await
        .unwrap();
    let events = history.json()["events"].clone();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"validated"), "{events:#}");
    let switched = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollout" && e["detail"]["to"] == "switching")
        .unwrap_or_else(|| panic!("no switch in {events:#}"));
    let cause = switched["detail"]["cause"].as_str().unwrap_or("");
    assert!(
        cause.contains("gates passed")
            && cause.contains("holdout")
            && cause.contains("accuracy pass"),
        "{switched:#}"
    );
    drop(server);
}

#[test]
fn an_export_with_zipmap_is_refused_with_the_option_that_fixes_it() {
    let dir = trained();
    let output = teal(
        &dir,
        &["init", "wine-zipmap.onnx", "--sample", "holdout.csv"],
    );
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("ZipMap"), "{said}");
    assert!(said.contains("'zipmap': False"), "{said}");
    assert!(!dir.join("teal.toml").exists());
    assert!(!dir.join("wine-zipmap.reference.json").exists());

    // A sample whose rows do not fit the model's input says so, and writes nothing.
    std::fs::write(dir.join("narrow.csv"), "1.0,2.0,0\n3.0,4.0,1\n").unwrap();
    let output = teal(&dir, &["init", "wine-v1.onnx", "--sample", "narrow.csv"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("has 2 features but the model's input 'input' takes 13"),
        "{said}"
    );
    assert!(!dir.join("teal.toml").exists());

    // A retrain's reference needs the new version's name; a name must be one teal serves.
    let output = teal(&dir, &["init", "wine-v2.onnx", "--reference-only"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("--version"),
        "{said}"
    );
    let output = teal(&dir, &["init", "wine-v1.onnx", "--name", "my wine"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && said.contains("not a valid model name"),
        "{said}"
    );

    // Without a sample, made-up rows make the reference, and init says so.
    let init = json_of(&teal(&dir, &["init", "wine-v1.onnx", "--json"]));
    assert_eq!(init["reference_rows"], 32, "{init:#}");
    assert!(init["sample"].is_null());
    assert!(
        init["warnings"][0]
            .as_str()
            .unwrap()
            .contains("made-up rows"),
        "{init:#}"
    );
    assert!(init["config"].as_str().is_some(), "{init:#}");
    let config = std::fs::read_to_string(dir.join("teal.toml")).unwrap();
    assert!(config.contains("evidence = { replay = 1000 }"), "{config}");
}

/// `teal init` on each bundled model, copied into a folder of its own (with its holdout where
/// it has one) writes a config that `teal serve` runs as it is, and the model answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_on_each_bundled_model_writes_a_config_that_serves() {
    for (model, kind) in [
        ("digits", "classifier"),
        ("iris", "classifier"),
        ("cancer", "classifier"),
        ("diabetes", "regressor"),
    ] {
        let dir = temp_dir(&format!("init-{model}"));
        let source = repo_root().join("models").join(model);
        std::fs::create_dir_all(dir.join("v1")).unwrap();
        std::fs::copy(source.join("v1/model.onnx"), dir.join("v1/model.onnx")).unwrap();
        let holdout = source.join("holdout.jsonl");
        let mut args = vec!["init", "v1/model.onnx", "--json"];
        if holdout.exists() {
            std::fs::copy(&holdout, dir.join("holdout.jsonl")).unwrap();
            args.extend(["--sample", "holdout.jsonl"]);
        }
        let init = json_of(&teal(&dir, &args));
        // The name comes from the folder above the version's.
        assert!(
            init["model"]
                .as_str()
                .unwrap()
                .starts_with("teal-test-init-"),
            "{init:#}"
        );
        assert_eq!(init["kind"], kind, "{model}: {init:#}");
        if holdout.exists() {
            assert!(
                init["sample"]["accuracy"].as_f64().unwrap() > 0.8,
                "{model}: {init:#}"
            );
        }
        let name = init["model"].as_str().unwrap().to_string();
        let server = serve_binary(&dir.join("teal.toml"), None);
        let width = init["inputs"][0]["shape"][1].as_i64().unwrap() as usize;
        let answer = server
            .data
            .post_json(
                &format!("/v1/models/{name}/predict"),
                &serde_json::json!({ "features": vec![0.5; width] }),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{model}: {}", text(&answer));
        assert_eq!(answer.json()["model_version"], "v1", "{model}");
        drop(server);
    }
}

/// A model whose input is a type the V2 protocol has no datatype for (8-bit float, made with
/// the `onnx` helper API) is refused with what to change, before anything is written.
#[test]
fn an_unsupported_input_type_is_refused_with_what_to_change() {
    let dir = temp_dir("init-float8");
    let script = r#"
import sys
from onnx import TensorProto, helper, save
node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)
graph = helper.make_graph(
    [node], "half",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FN, [None, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
)
save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), sys.argv[1])
"#;
    let made = Command::new(python())
        .args(["-c", script])
        .arg(dir.join("half.onnx"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let output = teal(&dir, &["init", "half.onnx"]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("input 'x' is a tensor of Float8"), "{said}");
    assert!(said.contains("cast it in the export"), "{said}");
    assert!(!dir.join("teal.toml").exists());
    assert!(!dir.join("half.reference.json").exists());
}
