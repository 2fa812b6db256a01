//! The operator's own checks in a rollout: Prometheus analyses against a real Prometheus
//! server (Debian's `prometheus`, started here, scraping teal and a business-metrics
//! exporter this test serves), webhooks to a receiver this test serves (signatures checked
//! with Python's `hmac`, not teal's code), and smoke tests run against the candidate alone.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::checks::*;
use common::rollouts::*;
use common::*;

/// A teal config: digits v1 live, these `[model.rollout]` settings and tables, and the
/// server's `extra` settings.
fn config(server: &str, rollout: &str) -> teal_core::config::Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ndrain_ms = 2000\n{server}\n\n[[model]]\nname = \"digits\"\n[model.blue]\n{}\n[model.rollout]\nevidence = {{ holdout = \"models/digits/holdout.jsonl\" }}\nobserve_ms = 2500\nkeep_warm_ms = 0\non_inconclusive = \"promote\"\nrules = {{ check_interval_ms = 200 }}\n{rollout}\n",
        onnx("v1")
    );
    let mut config =
        teal_core::config::Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.resolve_paths(&repo_root());
    config.server.state_dir = temp_dir("state");
    config.validate().unwrap();
    config
}

/// The `[[model]]` table of [`config`], for a config file `teal serve` reads.
fn model_text(rollout: &str) -> String {
    format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\n{}\n[model.rollout]\nevidence = {{ holdout = \"{}\" }}\nobserve_ms = 2500\nkeep_warm_ms = 0\non_inconclusive = \"promote\"\nrules = {{ check_interval_ms = 200 }}\n{rollout}\n",
        onnx("v1"),
        repo_root().join("models/digits/holdout.jsonl").display()
    )
}

/// Starts a rollout of `version` with the configured settings.
async fn roll_out(admin: &teal::cli::client::HttpClient, version: &str) -> i64 {
    let answer = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": onnx_candidate(version) }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.error_message());
    answer.json()["id"].as_i64().unwrap()
}

/// The model's audit events of `kind`, oldest first.
async fn audit(admin: &teal::cli::client::HttpClient, kind: &str) -> Vec<serde_json::Value> {
    let events = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    let mut list: Vec<serde_json::Value> = events["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect();
    list.sort_by_key(|e| e["id"].as_i64());
    list
}

/// Waits (bounded) for the rollout `id` to end; returns its state.
async fn ended(admin: &teal::cli::client::HttpClient, id: i64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let done = eventually(Duration::from_secs(90), async || {
        last = admin
            .get("/api/v1/models/digits/rollout")
            .await
            .unwrap()
            .json();
        last["id"] == id
            && ["torn_down", "rolled_back", "aborted", "failed"]
                .contains(&last["phase_name"].as_str().unwrap_or(""))
    })
    .await;
    assert!(done, "rollout {id} did not end: {last:#}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_query_lets_the_rollout_through_and_one_that_crosses_its_threshold_rolls_back() {
    let receiver = Arc::new(Receiver::default());
    let exporter = serve_receiver(receiver.clone()).await;
    receiver.business.lock().unwrap().insert("v2".into(), 0.001);
    receiver
        .business
        .lock()
        .unwrap()
        .insert("v2-reseed".into(), 0.001);
    // teal must be up for Prometheus to scrape it, and Prometheus's address is in teal's
    // config: teal starts first, naming a Prometheus port picked beforehand.
    let dir = temp_dir("analysis");
    let prometheus_port = free_port();
    let running = start(&config(
        &format!("prometheus_url = \"http://127.0.0.1:{prometheus_port}\""),
        r#"
[[model.rollout.analysis]]
name = "business"
query = 'max(business_error_ratio{model="{model}",version="{version}"})'
condition = "< 0.01"
interval_ms = 300
consecutive = 2
at = ["gates", "bake"]

[[model.rollout.analysis]]
name = "teal-up"
query = 'up{job="teal"}'
condition = "== 1"
interval_ms = 300
at = ["gates"]
"#,
    ))
    .await;
    let admin = admin(&running);
    let _prometheus = start_prometheus_on(
        &dir,
        prometheus_port,
        &[
            ("teal", running.admin_url().trim_start_matches("http://")),
            ("business", exporter.trim_start_matches("http://")),
        ],
    )
    .await;

    // v2's business metric is fine: gates and bake pass, v2 is released.
    let id = roll_out(&admin, "v2").await;
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "torn_down", "{state:#}");
    assert_eq!(live_version(&data(&running)).await, "v2");
    let measured = audit(&admin, "analysis").await;
    let gate = measured
        .iter()
        .find(|e| e["detail"]["analysis"] == "business" && e["detail"]["stage"] == "gates")
        .unwrap_or_else(|| panic!("no gate measurement of business: {measured:#?}"));
    assert_eq!(gate["detail"]["verdict"], "pass");
    assert_eq!(gate["detail"]["values"], serde_json::json!([0.001]));
    assert_eq!(
        gate["detail"]["query"],
        "max(business_error_ratio{model=\"digits\",version=\"v2\"})"
    );
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    assert!(
        history
            .to_string()
            .contains("analysis business pass (value 0.001, needs < 0.01)"),
        "the gates' summary in the audit trail carries the value: {history}"
    );

    // v2-reseed passes the gates, then its business metric crosses the threshold during the
    // bake: two failing measurements in a row roll it back. Its bake is long (a setting the
    // API may change), so only the analysis can end it.
    let answer = admin
        .post_json(
            "/api/v1/models/digits/rollouts",
            &serde_json::json!({ "candidate": onnx_candidate("v2-reseed"), "settings": { "observe_ms": "10m" } }),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 202, "{}", answer.error_message());
    let id = answer.json()["id"].as_i64().unwrap();
    wait_phase(&admin, "observing", Duration::from_secs(60)).await;
    receiver
        .business
        .lock()
        .unwrap()
        .insert("v2-reseed".into(), 0.2);
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "rolled_back", "{state:#}");
    assert_eq!(
        state["outcome"], "analysis: business: value 0.2, needs < 0.01 (failed 2 checks in a row)",
        "{state:#}"
    );
    assert_eq!(live_version(&data(&running)).await, "v2");
    let bake: Vec<_> = audit(&admin, "analysis")
        .await
        .into_iter()
        .filter(|e| {
            e["detail"]["stage"] == "bake" && e["detail"]["detail"] == "value 0.2, needs < 0.01"
        })
        .collect();
    assert!(
        bake.len() >= 2,
        "each failing measurement is in the audit trail: {bake:#?}"
    );
    assert_eq!(bake[0]["detail"]["verdict"], "fail");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_and_a_query_prometheus_refuses_are_inconclusive_with_the_reason() {
    let dir = temp_dir("inconclusive");
    let prometheus_port = free_port();
    let running = start(&config(
        &format!("prometheus_url = \"http://127.0.0.1:{prometheus_port}\""),
        r#"
[[model.rollout.analysis]]
name = "missing"
query = 'sum(no_such_metric{model="{model}"})'
condition = "< 1"
consecutive = 1
at = ["gates"]

[[model.rollout.analysis]]
name = "broken"
query = 'rate(model_server_requests_total[1m'
condition = "< 1"
consecutive = 1
at = ["gates"]
"#,
    ))
    .await;
    let admin = admin(&running);
    let _prometheus = start_prometheus_on(
        &dir,
        prometheus_port,
        &[("teal", running.admin_url().trim_start_matches("http://"))],
    )
    .await;
    roll_out(&admin, "v2").await;
    let state = wait_phase(&admin, "awaiting_approval", Duration::from_secs(60)).await;
    let waiting = state["waiting"].as_str().unwrap_or("");
    assert!(
        waiting.contains("analysis missing inconclusive (the query returned no data"),
        "{waiting}"
    );
    assert!(
        waiting
            .contains("analysis broken inconclusive (Prometheus refused the query (400, bad_data)"),
        "Prometheus's own reason is reported: {waiting}"
    );
    assert_eq!(live_version(&data(&running)).await, "v1");
    // The operator decides: teal promote goes on without the analyses.
    let promote = admin
        .post_json("/api/v1/models/digits/promote", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(promote.status, 200, "{}", promote.error_message());
    wait_phase(&admin, "torn_down", Duration::from_secs(60)).await;
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_is_inconclusive_never_a_pass() {
    // A port nothing listens on.
    let closed = free_port();
    let running = start(&config(
        &format!("prometheus_url = \"http://127.0.0.1:{closed}\""),
        r#"
[[model.rollout.analysis]]
name = "errors"
query = 'x'
condition = "< 1"
consecutive = 2
interval_ms = 100
"#,
    ))
    .await;
    let admin = admin(&running);
    roll_out(&admin, "v2").await;
    let state = wait_phase(&admin, "awaiting_approval", Duration::from_secs(60)).await;
    let waiting = state["waiting"].as_str().unwrap_or("");
    assert!(
        waiting.contains(&format!(
            "analysis errors inconclusive (Prometheus at http://127.0.0.1:{closed}/ did not answer"
        )),
        "{waiting}"
    );
    stop(running).await;
}

/// Checks a body's `x-teal-signature-256` with Python's `hmac`, apart from teal's code.
fn signature_is_valid(secret: &str, body: &[u8], header: &str) -> bool {
    let script = "import hmac, hashlib, sys\nkey = sys.argv[1].encode()\nbody = sys.stdin.buffer.read()\nprint('sha256=' + hmac.new(key, body, hashlib.sha256).hexdigest())";
    let mut child = std::process::Command::new(python())
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == header
}

const SECRET_VAR: &str = "TEAL_TEST_HOOK_SECRET";
const SECRET: &str = "s3cret-for-hooks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_gate_confirm_and_notify_with_a_valid_signature() {
    let receiver = Arc::new(Receiver::default());
    let base = serve_receiver(receiver.clone()).await;
    // `teal serve` itself, with the key in its environment, as an operator runs it.
    let file = config_file(&model_text(&format!(
        r#"
[[model.rollout.webhook]]
name = "ticket"
url = "{base}/hook/ticket"
on = ["pre_rollout"]
retries = 0

[[model.rollout.webhook]]
name = "confirm"
url = "{base}/hook/confirm"
on = ["pre_switch"]
confirm_interval_ms = 200

[[model.rollout.webhook]]
name = "notify"
url = "{base}/hook/notify"
on = ["post_rollout", "rollback", "abort", "failure"]
secret_env = "{SECRET_VAR}"

[[model.rollout.webhook]]
name = "chat"
url = "{base}/hook/chat"
on = ["failure", "post_rollout"]
format = "slack"

[[model.rollout.webhook]]
name = "hang"
url = "{base}/hook/hang"
on = ["post_rollout"]
timeout_ms = 300
retries = 1
"#
    )));
    let teal = serve_binary_with_env(&file, None, &[(SECRET_VAR, SECRET)]);
    let (admin, client) = (teal.admin.clone(), teal.data.clone());
    receiver.answer("hang", 0);

    // A pre-rollout hook that refuses stops the rollout before anything is deployed.
    receiver.answer("ticket", 403);
    let id = roll_out(&admin, "v2").await;
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "failed");
    assert_eq!(
        state["outcome"],
        "pre_rollout webhook 'ticket' stopped it: answered 403"
    );
    let status = admin.get("/api/v1/status").await.unwrap().json();
    assert!(
        !status.to_string().contains("\"v2\""),
        "nothing was deployed: {status}"
    );
    // The failure is notified, signed, and to chat as Slack's text.
    let notified = eventually(Duration::from_secs(20), async || {
        !receiver.calls_of("notify").is_empty() && !receiver.calls_of("chat").is_empty()
    })
    .await;
    assert!(notified, "no failure notification");
    let (headers, body) = receiver.raw_calls_of("notify").remove(0);
    assert_eq!(headers["x-teal-event"], "failure");
    assert!(
        signature_is_valid(SECRET, &body, &headers["x-teal-signature-256"]),
        "signature {} does not match the body",
        headers["x-teal-signature-256"]
    );
    assert!(!signature_is_valid(
        "another key",
        &body,
        &headers["x-teal-signature-256"]
    ));
    let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["model"], "digits");
    assert_eq!(payload["version"], "v2");
    assert_eq!(payload["old_version"], "v1");
    assert_eq!(payload["event"], "failure");
    assert!(
        payload["cause"]
            .as_str()
            .unwrap()
            .contains("'ticket' stopped it")
    );
    let (_, chat) = receiver.calls_of("chat").remove(0);
    let text = chat["text"].as_str().unwrap_or("");
    assert!(
        text.starts_with("teal: digits v2 (from v1): rollout failed: pre_rollout webhook"),
        "{chat}"
    );
    assert!(
        !receiver.calls_of("chat")[0]
            .0
            .contains_key("x-teal-signature-256"),
        "a hook without secret_env is sent unsigned"
    );

    // With the ticket open, the gates pass and the switch waits for the confirm hook.
    receiver.answer("ticket", 200);
    receiver.answer("confirm", 409);
    let id = roll_out(&admin, "v2").await;
    let asked = eventually(Duration::from_secs(60), async || {
        receiver.calls_of("confirm").len() >= 3
    })
    .await;
    assert!(asked, "the confirm hook was not asked");
    let held = admin
        .get("/api/v1/models/digits/rollout")
        .await
        .unwrap()
        .json();
    assert_eq!(
        held["phase_name"], "validating",
        "held before the switch: {held:#}"
    );
    assert_eq!(live_version(&client).await, "v1");
    let (_, ask) = receiver.calls_of("confirm").remove(0);
    assert_eq!(ask["event"], "pre_switch");
    assert!(
        ask["cause"]
            .as_str()
            .unwrap_or("")
            .contains("samples from holdout"),
        "the confirm hook sees the gates' report: {ask}"
    );
    receiver.answer("confirm", 200);
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "torn_down", "{state:#}");
    assert_eq!(live_version(&client).await, "v2");
    let released = eventually(Duration::from_secs(20), async || {
        receiver
            .calls_of("notify")
            .iter()
            .any(|(h, _)| h["x-teal-event"] == "post_rollout")
    })
    .await;
    assert!(released, "no post_rollout notification");
    for (headers, body) in receiver.raw_calls_of("notify") {
        assert!(signature_is_valid(
            SECRET,
            &body,
            &headers["x-teal-signature-256"]
        ));
    }
    // The hook that hangs is cut off at its timeout, tried twice, and reported.
    let reported = eventually(Duration::from_secs(20), async || {
        audit(&admin, "webhook")
            .await
            .iter()
            .any(|e| e["detail"]["hook"] == "hang" && e["detail"]["delivered"] == false)
    })
    .await;
    assert!(reported, "{:#?}", audit(&admin, "webhook").await);
    let hang = audit(&admin, "webhook")
        .await
        .into_iter()
        .find(|e| e["detail"]["hook"] == "hang")
        .unwrap();
    assert_eq!(
        hang["detail"]["result"], "no answer within 300 ms (2 tries)",
        "{hang:#}"
    );
    assert_eq!(receiver.calls_of("hang").len(), 2);
    let history = admin
        .get("/api/v1/models/digits/history?limit=1000")
        .await
        .unwrap()
        .json();
    assert!(
        history.to_string().contains("switch confirmed by confirm"),
        "{history}"
    );
    drop(teal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_hook_that_never_says_yes_times_out_and_the_rollout_waits_for_an_operator() {
    let receiver = Arc::new(Receiver::default());
    let base = serve_receiver(receiver.clone()).await;
    receiver.answer("confirm", 0);
    let running = start(&config(
        "",
        &format!(
            r#"
[[model.rollout.webhook]]
name = "confirm"
url = "{base}/hook/confirm"
on = ["pre_switch"]
timeout_ms = 200
retries = 0
confirm_timeout_ms = "1s"
confirm_interval_ms = 200
"#
        ),
    ))
    .await;
    let admin = admin(&running);
    roll_out(&admin, "v2").await;
    let state = wait_phase(&admin, "awaiting_approval", Duration::from_secs(60)).await;
    let waiting = state["waiting"].as_str().unwrap_or("");
    assert!(
        waiting.contains(
            "confirm hook confirm did not answer 200 within 1 s (no answer within 200 ms (1 tries))"
        ),
        "{waiting}"
    );
    assert!(!receiver.calls_of("confirm").is_empty());
    assert_eq!(live_version(&data(&running)).await, "v1");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_tests_reach_the_candidate_alone_and_a_failing_one_stops_the_rollout() {
    let dir = temp_dir("smoke");
    let flag = dir.join("fail");
    let body = serde_json::to_string(&infer_body(&[holdout("digits")[0].0.clone()])).unwrap();
    let running = start(&config(
        "",
        &format!(
            r#"
[[model.rollout.smoke_test]]
name = "candidate"
command = ["sh", "-c", "curl -sf -D - -o /dev/null -H 'content-type: application/json' -d \"$BODY\" {{candidate_url}}/v2/models/{{model}}/infer | tr -d '\\r' | grep -i '^x-teal-version: {{version}}$'"]
env = {{ BODY = '{body}' }}
timeout_ms = "20s"

[[model.rollout.smoke_test]]
name = "labels"
command = ["sh", "-c", "echo checking {{version}} against {{old_version}}; if [ -e {flag} ]; then echo 'expected label 3, got 5' >&2; exit 3; fi"]
"#,
            flag = flag.display()
        ),
    ))
    .await;
    let (admin, client) = (admin(&running), data(&running));

    // Both pass: the first reached v2 itself (its answer named v2) while v1 was live.
    let id = roll_out(&admin, "v2").await;
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "torn_down", "{state:#}");
    let runs = audit(&admin, "smoke_test").await;
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["detail"]["test"], "candidate");
    assert_eq!(runs[0]["detail"]["passed"], true, "{runs:#?}");
    assert_eq!(
        runs[0]["detail"]["output"]
            .as_str()
            .unwrap()
            .trim()
            .to_lowercase(),
        "x-teal-version: v2"
    );
    assert_eq!(runs[1]["detail"]["output"], "checking v2 against v1\n");

    // The second fails: the rollout stops before the switch with the test's words.
    std::fs::write(&flag, "").unwrap();
    let id = roll_out(&admin, "v2-reseed").await;
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "failed", "{state:#}");
    let outcome = state["outcome"].as_str().unwrap();
    assert!(
        outcome.contains("smoke test labels fail (exit 3: expected label 3, got 5)"),
        "{outcome}"
    );
    assert_eq!(live_version(&client).await, "v2");
    let runs = audit(&admin, "smoke_test").await;
    let last = runs.last().unwrap();
    assert_eq!(last["detail"]["status"], "exit 3");
    assert_eq!(
        last["detail"]["output"],
        "checking v2-reseed against v2\nexpected label 3, got 5\n"
    );
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_test_past_its_timeout_is_killed_with_its_children_and_fails() {
    let dir = temp_dir("smoke-timeout");
    let pid_file = dir.join("child.pid");
    let running = start(&config(
        "",
        &format!(
            r#"
[[model.rollout.smoke_test]]
name = "slow"
command = ["sh", "-c", "sleep 60 & echo $! > {}; wait"]
timeout_ms = 500
"#,
            pid_file.display()
        ),
    ))
    .await;
    let admin = admin(&running);
    let id = roll_out(&admin, "v2").await;
    let state = ended(&admin, id).await;
    assert_eq!(state["phase_name"], "failed");
    assert!(
        state["outcome"]
            .as_str()
            .unwrap()
            .contains("smoke test slow fail (killed after the 500 ms timeout)"),
        "{state:#}"
    );
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = eventually(Duration::from_secs(10), async || {
        !Path::new(&format!("/proc/{child}")).exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    })
    .await;
    assert!(gone, "the smoke test's child {child} outlived it");
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checks_are_refused_with_the_field_and_the_api_cannot_add_any() {
    let refused = |server: &str, rollout: &str| {
        let text = format!(
            "[server]\n{server}\n[[model]]\nname = \"digits\"\n[model.blue]\n{}\n[model.rollout]\n{rollout}\n",
            onnx("v1")
        );
        match teal_core::config::Config::parse(&text) {
            Err(e) => e.to_string(),
            Ok(c) => c.validate().unwrap_err().to_string(),
        }
    };
    let hook = |url: &str| {
        format!("[[model.rollout.webhook]]\nname = \"h\"\nurl = \"{url}\"\non = [\"rollback\"]\n")
    };
    for url in [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "127.0.0.1:9/x",
        "http://",
    ] {
        let e = refused("", &hook(url));
        assert!(e.contains("model[0].rollout.webhook[0].url"), "{url}: {e}");
        assert!(e.contains("not an http:// or https:// URL"), "{e}");
    }
    let analysis = |condition: &str, query: &str| {
        format!(
            "[[model.rollout.analysis]]\nname = \"a\"\nquery = '{query}'\ncondition = \"{condition}\"\n"
        )
    };
    let e = refused(
        "prometheus_url = \"http://127.0.0.1:9090\"",
        &analysis("about 0.1", "x"),
    );
    assert!(e.contains("is not a condition"), "{e}");
    let e = refused(
        "prometheus_url = \"http://127.0.0.1:9090\"",
        &analysis("< 0.1", "x{model=\"{modle}\"}"),
    );
    assert!(e.contains("unknown placeholder {modle}"), "{e}");
    let e = refused("", &analysis("< 0.1", "x"));
    assert!(e.contains("set server.prometheus_url"), "{e}");
    let e = refused(
        "prometheus_url = \"localhost:9090\"",
        &analysis("< 0.1", "x"),
    );
    assert!(e.contains("server.prometheus_url"), "{e}");
    let e = refused(
        "",
        "[[model.rollout.webhook]]\nname = \"h\"\nurl = \"http://x/\"\non = [\"later\"]\n",
    );
    assert!(e.contains("unknown variant `later`"), "{e}");

    // A webhook signing with a key the environment does not hold stops `teal serve` at once.
    let file = config_file(&format!(
        "[[model]]\nname = \"digits\"\n[model.blue]\n{}\n[model.rollout]\n[[model.rollout.webhook]]\nname = \"notify\"\nurl = \"http://127.0.0.1:9/\"\non = [\"rollback\"]\nsecret_env = \"TEAL_TEST_NO_SUCH_SECRET\"\n",
        onnx("v1")
    ));
    let out = std::process::Command::new(teal_bin())
        .args(["serve", "--config"])
        .arg(&file)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env_remove("TEAL_TEST_NO_SUCH_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model[0].rollout.webhook[0].secret_env")
            && stderr.contains("TEAL_TEST_NO_SUCH_SECRET, which is not set"),
        "{stderr}"
    );

    // Through the API, a rollout cannot bring its own webhook, query or command.
    let running = start(&config("", "")).await;
    let admin = admin(&running);
    for key in ["webhook", "analysis", "smoke_test"] {
        let answer = admin
            .post_json(
                "/api/v1/models/digits/rollouts",
                &serde_json::json!({
                    "candidate": onnx_candidate("v2"),
                    "settings": { key: [{ "name": "x", "url": "http://127.0.0.1:9/", "on": ["rollback"], "command": ["touch", "/tmp/x"], "query": "x", "condition": "< 1" }] }
                }),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 403, "{key}: {}", answer.error_message());
        assert!(
            answer
                .error_message()
                .contains("come only from the config file"),
            "{}",
            answer.error_message()
        );
    }
    stop(running).await;
}
