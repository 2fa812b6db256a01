//! Helpers for the tests of the operator's own checks: a webhook receiver that is also a
//! business-metrics exporter, and a real Prometheus server scraping given targets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// One webhook call: the hook's name, its headers and its body.
pub type Call = (String, BTreeMap<String, String>, Vec<u8>);

/// A webhook receiver and a business-metrics exporter, in one HTTP server of the test's.
#[derive(Default)]
pub struct Receiver {
    /// Every webhook call: the hook's name, its headers and its body.
    pub calls: Mutex<Vec<Call>>,
    /// The status each hook answers (200 when unset); 0 never answers.
    pub answers: Mutex<BTreeMap<String, u16>>,
    /// `business_error_ratio` per version, as the exporter shows it.
    pub business: Mutex<BTreeMap<String, f64>>,
}

impl Receiver {
    pub fn answer(&self, hook: &str, status: u16) {
        self.answers.lock().unwrap().insert(hook.into(), status);
    }

    pub fn calls_of(&self, hook: &str) -> Vec<(BTreeMap<String, String>, serde_json::Value)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _, _)| h == hook)
            .map(|(_, headers, body)| {
                (
                    headers.clone(),
                    serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
                )
            })
            .collect()
    }

    pub fn raw_calls_of(&self, hook: &str) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(h, _, _)| h == hook)
            .map(|(_, headers, body)| (headers.clone(), body.clone()))
            .collect()
    }
}

/// Serves the receiver on a free loopback port; returns its base URL.
pub async fn serve_receiver(receiver: Arc<Receiver>) -> String {
    use axum::extract::{Path as UrlPath, State};
    let app = axum::Router::new()
        .route(
            "/hook/{name}",
            axum::routing::post(
                |State(r): State<Arc<Receiver>>,
                 UrlPath(name): UrlPath<String>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    r.calls
                        .lock()
                        .unwrap()
                        .push((name.clone(), headers, body.to_vec()));
                    let status = r.answers.lock().unwrap().get(&name).copied().unwrap_or(200);
                    if status == 0 {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        format!("hook {name} answered {status}"),
                    )
                },
            ),
        )
        .route(
            "/metrics",
            axum::routing::get(|State(r): State<Arc<Receiver>>| async move {
                let mut text = String::from("# TYPE business_error_ratio gauge\n");
                for (version, value) in r.business.lock().unwrap().iter() {
                    text.push_str(&format!(
                        "business_error_ratio{{model=\"digits\",version=\"{version}\"}} {value}\n"
                    ));
                }
                text
            }),
        )
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Debian's `prometheus` server: the one on the PATH, or else the one `scripts/setup dev`
/// (or `tests/observability.rs`) unpacked into `.deps/prometheus`.
pub fn prometheus_bin() -> PathBuf {
    let on_path = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return "prometheus".into();
    }
    let unpacked = repo_root().join(".deps/prometheus/usr/bin/prometheus");
    assert!(
        unpacked.exists(),
        "prometheus is missing: run scripts/setup dev, which installs Debian's prometheus package"
    );
    unpacked
}

/// A Prometheus server, stopped when dropped.
pub struct Prometheus {
    pub url: String,
    _server: Proc,
}

/// Starts Prometheus on a port picked before (teal's config had to name it).
pub async fn start_prometheus_on(dir: &Path, port: u16, targets: &[(&str, &str)]) -> Prometheus {
    let mut config = String::from(
        "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\nscrape_configs:\n",
    );
    for (job, target) in targets {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        ));
    }
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let server = spawn_group(
        std::process::Command::new(prometheus_bin())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap()),
    );
    let url = format!("http://127.0.0.1:{port}");
    let client = teal::cli::client::HttpClient::new(&url);
    let want = targets.len();
    let scraped = eventually(Duration::from_secs(60), async || {
        let Ok(a) = client.get("/api/v1/query?query=sum(up)").await else {
            return false;
        };
        a.status == 200
            && a.json()["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                == Some(want as f64)
    })
    .await;
    assert!(
        scraped,
        "Prometheus did not scrape its targets: {}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    Prometheus {
        url,
        _server: server,
    }
}
