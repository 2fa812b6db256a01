//! The gRPC Open Inference Protocol against `tritonclient[grpc]` from PyPI, a client nobody
//! here wrote, unchanged: metadata, readiness, predictions with raw and typed contents, bad
//! input answered with its status code, and 100 switches under load on one HTTP/2
//! connection with no failed request (`tests/python/tritonclient_grpc_check.py`).

mod common;

use std::time::Duration;

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
        Duration::from_secs(240),
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

/// The gRPC listener is guarded as the REST one is: past `max_connections` a connection is
/// closed at once, one that sends nothing is closed after the header timeout (freeing its
/// place), and a real client is served afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_listener_caps_connections_and_closes_silent_ones() {
    use tokio::io::AsyncReadExt;
    let mut config = example_config();
    config.server.grpc_listen = Some("127.0.0.1:0".into());
    config.server.max_connections = Some(3);
    config.server.header_timeout_ms = 3000;
    let running = start(&config).await;
    let grpc = running.grpc_addr.unwrap();
    // Closed: the read ends (EOF or reset) within `limit`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(limit, stream.read(&mut byte)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    }
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(grpc).await.unwrap());
    }
    // Let the listener take all three before the fourth arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = tokio::net::TcpStream::connect(grpc).await.unwrap();
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "a connection past the cap is closed before the silent ones time out"
    );
    for stream in &mut silent {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "a connection that sends nothing is closed after the header timeout"
        );
    }
    let script = format!(
        "import tritonclient.grpc as g; assert g.InferenceServerClient('{grpc}').is_server_live(); print('all checks passed')"
    );
    let output = tokio::process::Command::new(python())
        .args(["-c", &script])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stop(running).await;
}
