//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver): it loads,
//! shows both slots of the example model, its charts update with live traffic, its rollback
//! button moves traffic (checked on the data plane), and without the token nothing it sends
//! is accepted. A screenshot is saved as `target/test-artifacts/dashboard.png`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use teal::cli::client::HttpClient;

/// A chromedriver process and one browser session in it.
struct Browser {
    _driver: Proc,
    client: HttpClient,
    session: String,
}

impl Browser {
    async fn start() -> Browser {
        let port = free_port();
        let mut command = std::process::Command::new("chromedriver");
        command
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let driver = spawn_group(&mut command);
        let client = HttpClient::new(&format!("http://127.0.0.1:{port}"))
            .with_timeout(Duration::from_secs(60));
        let up = eventually(Duration::from_secs(20), async || {
            client
                .get("/status")
                .await
                .is_ok_and(|a| a.json()["value"]["ready"] == true)
        })
        .await;
        assert!(
            up,
            "chromedriver did not start (scripts/setup dev installs chromium-driver)"
        );
        // A fresh profile, and none of Chromium's own network traffic: the browser talks to
        // 127.0.0.1 only.
        let profile = temp_dir("chromium");
        let capabilities = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        } } });
        let answer = client.post_json("/session", &capabilities).await.unwrap();
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let session = answer.json()["value"]["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        Browser {
            _driver: driver,
            client,
            session,
        }
    }

    async fn call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let answer = self
            .client
            .post_json(&format!("/session/{}{path}", self.session), &body)
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("/url", serde_json::json!({ "url": url })).await;
    }

    async fn script(&self, script: &str) -> serde_json::Value {
        self.call(
            "/execute/sync",
            serde_json::json!({ "script": script, "args": [] }),
        )
        .await
    }

    async fn script_async(&self, script: &str) -> serde_json::Value {
        self.call(
            "/execute/async",
            serde_json::json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Clicks the element `css` names. The dashboard redraws every second, so an element
    /// found just before a redraw is gone when the click arrives ("stale element
    /// reference"): it is found again and clicked, a bounded number of times. (Its armed
    /// state outlives redraws, so a retried click means the same.)
    async fn click(&self, css: &str) {
        for _ in 0..10 {
            let found = self
                .call(
                    "/element",
                    serde_json::json!({ "using": "css selector", "value": css }),
                )
                .await;
            let id = found
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v.as_str())
                .unwrap()
                .to_string();
            let answer = self
                .client
                .post_json(
                    &format!("/session/{}/element/{id}/click", self.session),
                    &serde_json::json!({}),
                )
                .await
                .unwrap();
            if answer.status == 200 {
                return;
            }
            let error = answer.json()["value"]["error"].clone();
            assert_eq!(
                error,
                "stale element reference",
                "click on {css}: {}",
                String::from_utf8_lossy(&answer.body)
            );
        }
        panic!("{css} went stale ten times in a row");
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let answer = self
            .client
            .get(&format!("/session/{}/screenshot", self.session))
            .await
            .unwrap();
        let png = base64_decode(answer.json()["value"].as_str().unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Polls a script until it returns true, within the limit.
    async fn until(&self, limit: Duration, script: &str) -> bool {
        eventually(limit, async || self.script(script).await == true).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (closing Chromium) before the driver process is killed.
        let (client, session) = (self.client.clone(), self.session.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    client.send("DELETE", &format!("/session/{session}"), &[], Bytes::new()),
                )
                .await;
            });
        })
        .join();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(value(c))).collect();
        let n = v
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (x << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if v.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if v.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_model_updates_its_charts_and_rolls_back_in_a_real_browser() {
    let config = example_config();
    let running = start(&config).await;
    let (client, admin) = (data(&running), admin(&running));
    // Traffic throughout, so the charts have something to draw.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let rows = holdout("digits");
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = Bytes::from(infer_body(&[rows[i % rows.len()].0.clone()]).to_string());
                let _ = client
                    .send("POST", "/v2/models/digits/infer", &[], body)
                    .await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Green live, so the dashboard's rollback has somewhere to go.
    let switched = switch_digits(&admin, "green").await;
    assert_eq!(switched.status, 200);
    assert_eq!(live_version(&client).await, "v2");

    let browser = Browser::start().await;
    let url = running.admin_url();
    browser.open(&format!("{url}/")).await;
    // Without a token the dashboard asks for one and shows no model.
    assert!(
        browser
            .until(
                Duration::from_secs(10),
                "return !document.querySelector('#login').hidden"
            )
            .await,
        "the login form is shown"
    );
    // A call without the token is refused, and changes nothing.
    let refused = browser
        .script_async(
            "const done = arguments[arguments.length - 1]; fetch('/api/v1/models/digits/rollback', {method: 'POST'}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(refused, 401);
    assert_eq!(live_version(&client).await, "v2");

    // Sign in: the token goes to this tab's session storage.
    browser
        .script(&format!(
            "document.querySelector('#token').value = '{TOKEN}'; return true;"
        ))
        .await;
    browser.click("#sign-in").await;
    assert!(
        browser
            .until(
                Duration::from_secs(15),
                "return document.querySelectorAll('section[data-model=\"digits\"] tr[data-slot]').length === 2",
            )
            .await,
        "both slots of digits are shown"
    );
    let slots = browser
        .script("return [...document.querySelectorAll('section[data-model=\"digits\"] tr[data-slot]')].map(r => r.innerText.replace(/\\s+/g, ' ').trim())")
        .await;
    let text = slots.to_string();
    assert!(text.contains("v1") && text.contains("v2"), "{text}");
    // The charts redraw with new points every second.
    let points = "return Number(document.querySelector('section[data-model=\"digits\"] canvas[data-chart=\"rps\"]').getAttribute('data-samples') || 0)";
    let before = browser.script(points).await.as_i64().unwrap_or(0);
    assert!(
        eventually(Duration::from_secs(15), async || {
            browser.script(points).await.as_i64().unwrap_or(0) >= before + 3
        })
        .await,
        "the request-rate chart gained samples"
    );
    let drawn = browser
        .script("return Number(document.querySelector('section[data-model=\"digits\"] canvas[data-chart=\"rps\"]').getAttribute('data-points'))")
        .await;
    assert!(drawn.as_i64().unwrap_or(0) > 0, "the chart drew its lines");
    browser
        .script("document.querySelector('section[data-model=\"digits\"]').scrollIntoView(); return true;")
        .await;
    browser
        .screenshot(&repo_root().join("target/test-artifacts/dashboard.png"))
        .await;
    // On a phone-sized screen the page fits its width: nothing scrolls sideways.
    browser
        .call(
            "/window/rect",
            serde_json::json!({ "width": 390, "height": 844 }),
        )
        .await;
    assert!(
        browser
            .until(
                Duration::from_secs(5),
                "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            )
            .await,
        "the dashboard fits a phone's width"
    );
    browser
        .screenshot(&repo_root().join("target/test-artifacts/dashboard-phone.png"))
        .await;
    browser
        .call(
            "/window/rect",
            serde_json::json!({ "width": 1280, "height": 1000 }),
        )
        .await;

    // Roll back: the first click arms the button, the second sends it.
    let rollback = "section[data-model=\"digits\"] button[data-action=\"rollback\"]";
    browser.click(rollback).await;
    browser.click(rollback).await;
    assert!(
        eventually(Duration::from_secs(10), async || live_version(&client)
            .await
            == "v1")
        .await,
        "the dashboard's rollback moved traffic back to v1"
    );
    let history = admin
        .get("/api/v1/models/digits/history")
        .await
        .unwrap()
        .json();
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "rolled_back" && e["actor"] == "dashboard"),
        "the rollback is in the audit log as the dashboard's"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    drop(browser);
    stop_running(running).await;
}

async fn stop_running(running: teal::server::Running) {
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_files_are_served_without_the_token_and_with_strict_headers() {
    let config = example_config();
    let running = start(&config).await;
    let anonymous = HttpClient::new(&running.admin_url());
    for (path, kind) in [
        ("/", "text/html"),
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let a = anonymous.get(path).await.unwrap();
        assert_eq!(a.status, 200, "{path}");
        assert!(
            a.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(
            a.header("content-security-policy")
                .unwrap()
                .contains("default-src 'self'"),
            "{path}"
        );
        // Nothing is fetched from elsewhere: no CDN.
        let body = String::from_utf8_lossy(&a.body);
        assert!(
            !body.contains("https://") && !body.contains("http://"),
            "{path}"
        );
    }
    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/models/digits/promote"),
        ("POST", "/api/v1/models/digits/abort"),
        ("POST", "/api/v1/models/digits/rollback"),
    ] {
        let a = anonymous
            .send(method, path, &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!(a.status, 401, "{method} {path}");
    }
    stop(running).await;
}
