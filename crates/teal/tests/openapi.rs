//! The admin API's OpenAPI document is served, describes every endpoint teal has, and
//! Schemathesis (PyPI) finds no answer that breaks it: no 5xx, no undocumented status, no
//! body off its schema, no valid request refused, no invalid one accepted, no call that
//! works without the token.

mod common;

use common::*;

fn openapi_document() -> serde_json::Value {
    serde_json::from_str(include_str!("../src/admin/openapi.json")).expect("the document is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_served_and_every_path_in_it_exists() {
    let running = start(&example_config()).await;
    // Served without the token, as the document the file holds.
    let anonymous = teal::cli::client::HttpClient::new(&running.admin_url());
    let served = anonymous.get("/api/v1/openapi.json").await.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.json(), openapi_document());
    let admin = admin(&running);
    let document = openapi_document();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    for (path, operations) in paths {
        let concrete = path.replace("{model}", "digits").replace("{id}", "1");
        for method in operations.as_object().unwrap().keys() {
            if method == "parameters" {
                continue;
            }
            let answer = admin
                .send(
                    &method.to_uppercase(),
                    &concrete,
                    &[("content-type", "application/json")],
                    bytes::Bytes::from_static(b"{\"not\": \"valid\"}"),
                )
                .await
                .unwrap();
            let error = answer.error_message();
            assert!(
                !error.contains("no admin endpoint") && answer.status != 405,
                "{method} {path} is in the document but not in teal: {} {error}",
                answer.status
            );
        }
    }
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_wrong_with_the_admin_api() {
    let running = start(&example_config()).await;
    let url = running.admin_url();
    let work = temp_dir("schemathesis");
    // deploy and rollouts start what a request names (a process, a connection to a URL):
    // random commands and hosts are not run here. The bad-input tests cover their errors.
    let output = tokio::process::Command::new(repo_root().join(".venv/bin/schemathesis"))
        .current_dir(&work)
        .args(["run", &format!("{url}/api/v1/openapi.json"), "--url", &url])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all"])
        .args(["--exclude-operation-id", "deploy"])
        .args(["--exclude-operation-id", "startRollout"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "60", "--request-timeout", "10"])
        // One worker: with two, this Schemathesis release sometimes fails inside its own
        // coverage phase (a KeyError in a shared cache), which says nothing about teal.
        .args(["--workers", "1", "--generation-database", "none"])
        .args(["--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(300), output)
        .await
        .expect("schemathesis finishes within 5 minutes")
        .expect("schemathesis runs (scripts/setup dev installs it into .venv from requirements-dev.txt)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        report.contains("passed") && !report.contains("failed"),
        "{report}"
    );
    // The server is healthy after it all.
    let status = admin(&running).get("/api/v1/status").await.unwrap();
    assert_eq!(status.status, 200);
    stop(running).await;
}
