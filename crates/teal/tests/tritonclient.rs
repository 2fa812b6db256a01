//! A V2 client nobody here wrote, `tritonclient[http]` from PyPI, works against teal unchanged.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_correct_metadata_readiness_and_predictions() {
    let running = start(&example_config()).await;
    let script = repo_root().join("tests/python/tritonclient_check.py");
    let output = tokio::process::Command::new(python())
        .arg(&script)
        .arg(running.data_addr.to_string())
        .arg(repo_root())
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the client finishes within 2 minutes")
        .expect("the checkout's Python runs");
    stop(running).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
