//! A V2 client nobody here wrote, `tritonclient[http]` from PyPI, works against teal unchanged.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_gets_correct_metadata_readiness_and_predictions() {
    let running = start(&example_config()).await;
    let args = [
        running.data_addr.to_string(),
        repo_root().display().to_string(),
    ];
    let checked = python_check(
        "tritonclient_check.py",
        &args,
        std::time::Duration::from_secs(120),
    )
    .await;
    stop(running).await;
    eprintln!("{checked}");
}
