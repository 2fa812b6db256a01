//! Every V2 datatype (BOOL, UINT8 to UINT64, INT8 to INT64, FP16, BF16, FP32, FP64, BYTES)
//! through teal with `tritonclient` over HTTP, in binary and JSON form, and over gRPC: to an
//! in-process ONNX model that answers each input unchanged (made by the test with the `onnx`
//! helper API), and passed through to that model behind a second teal as an upstream model
//! server.

mod common;

use std::time::Duration;

use common::*;

async fn run_check(http: std::net::SocketAddr, grpc: Option<std::net::SocketAddr>) {
    let mut args = vec!["check".to_string(), http.to_string()];
    args.extend(grpc.map(|g| g.to_string()));
    let checked = python_check("datatypes_check.py", &args, Duration::from_secs(120)).await;
    eprintln!("{checked}");
}

fn config(slot: &str, grpc: bool) -> teal::core::config::Config {
    let grpc = if grpc {
        "grpc_listen = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{grpc}\n[[model]]\nname = \"types\"\n\n[model.blue]\n{slot}\n"
    );
    let mut config = teal::core::config::Config::parse(&text).unwrap();
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_goes_through_in_process_and_to_an_upstream() {
    let dir = temp_dir("datatypes");
    let model = dir.join("types.onnx");
    let made = std::process::Command::new(python())
        .arg(repo_root().join("tests/python/datatypes_check.py"))
        .arg("make")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let slot = format!(
        "version = \"v1\"\nkind = \"onnx\"\npath = \"{}\"\n",
        model.display()
    );
    let in_process = start(&config(&slot, true)).await;
    run_check(in_process.data_addr, in_process.grpc_addr).await;

    // The same model behind a model server (a second teal), which teal passes requests to.
    let url = in_process.data_url();
    let front = start(&config(&upstream("v1", &[url], ""), true)).await;
    run_check(front.data_addr, front.grpc_addr).await;
    stop(front).await;
    stop(in_process).await;
}
