//! The gRPC Open Inference Protocol against `tritonclient[grpc]` from PyPI, a client nobody
//! here wrote, unchanged: metadata, readiness, predictions with raw and typed contents, bad
//! input answered with its status code, and 100 switches under load on one HTTP/2
//! connection with no failed request (`tests/python/tritonclient_grpc_check.py`).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_is_served_and_routed_like_rest() {
    let mut config = example_config();
    config.server.grpc_listen = Some("127.0.0.1:0".into());
    for model in &mut config.models {
        if model.name == "digits" {
            model.header_override = true;
        }
    }
    let running = start(&config).await;
    let grpc = running.grpc_addr.expect("the gRPC listener is bound");
    let args = [
        grpc.to_string(),
        running.admin_url(),
        TOKEN.to_string(),
        repo_root().display().to_string(),
    ];
    let checked = python_check(
        "tritonclient_grpc_check.py",
        &args,
        std::time::Duration::from_secs(240),
    )
    .await;
    stop(running).await;
    eprintln!("{checked}");
}

#[tokio::test]
async fn the_grpc_listener_is_off_unless_asked_for() {
    let running = start(&example_config()).await;
    assert_eq!(running.grpc_addr, None);
    stop(running).await;
}
