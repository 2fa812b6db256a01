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

/// Reads from `stream` until it yields a byte or ends: `Some(true)` for a byte (the server
/// spoke), `Some(false)` for the end (the server closed it). The bound only stops a hung test.
async fn first_read(stream: &mut tokio::net::TcpStream) -> Option<bool> {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(30), stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => Some(false),
        Ok(Ok(_)) => Some(true),
        Err(_) => None,
    }
}

/// The gRPC listener is guarded as the REST one is: past `max_connections` a connection is
/// closed at once while those inside are served (the server answers an HTTP/2 preface with
/// its settings), and one that sends nothing is closed after the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_listener_caps_connections_and_closes_silent_ones() {
    use tokio::io::AsyncWriteExt;
    // The header timeout is the default 30 s: the silent connections keep their places for
    // the whole test, so which connection is refused does not depend on timing (the listener
    // takes connections in the order they arrived).
    let mut config = example_config();
    config.server.grpc_listen = Some("127.0.0.1:0".into());
    config.server.max_connections = Some(3);
    let running = start(&config).await;
    let grpc = running.grpc_addr.unwrap();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(tokio::net::TcpStream::connect(grpc).await.unwrap());
    }
    let mut client = tokio::net::TcpStream::connect(grpc).await.unwrap();
    client
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut fourth = tokio::net::TcpStream::connect(grpc).await.unwrap();
    assert_eq!(
        first_read(&mut fourth).await,
        Some(false),
        "a connection past the cap is closed"
    );
    assert_eq!(
        first_read(&mut client).await,
        Some(true),
        "a connection inside the cap is served"
    );
    drop((silent, client, fourth));
    stop(running).await;

    // A connection that sends nothing is closed at the header timeout.
    let mut config = example_config();
    config.server.grpc_listen = Some("127.0.0.1:0".into());
    config.server.header_timeout_ms = 500;
    let running = start(&config).await;
    let mut silent = tokio::net::TcpStream::connect(running.grpc_addr.unwrap())
        .await
        .unwrap();
    assert_eq!(
        first_read(&mut silent).await,
        Some(false),
        "a connection that sends nothing is closed after the header timeout"
    );
    stop(running).await;
}
