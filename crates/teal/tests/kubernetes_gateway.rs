//! `teal serve --kubernetes`: gateway replicas follow a ModelDeployment's status and its
//! colours' EndpointSlices from a mocked API server (tower-test), and route per request.
//! The pods behind the EndpointSlices are real model servers (in-process teal serving the
//! bundled digits versions); no cluster is involved.
// Built only with the `kubernetes` feature (on by default).
#![cfg(feature = "kubernetes")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::apiserver::{Api, mock_api};
use serde_json::{Value, json};
use teal::cli::client::HttpClient;
use teal::server::Running;
use tokio::sync::watch;

const RESOURCES: &str = "/apis/teal.dev/v1alpha1/namespaces/default/modeldeployments";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

fn resource(status: &Value, resource_version: u64) -> Value {
    resource_in(status, resource_version, "gateway")
}

fn resource_in(status: &Value, resource_version: u64, mode: &str) -> Value {
    json!({
        "apiVersion": "teal.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "digits", "namespace": "default", "uid": "5e1f0c2a-0000-4000-8000-000000000002", "resourceVersion": resource_version.to_string(), "generation": 1},
        "spec": {
            "model": "digits",
            "blue": {"version": "v1", "image": "registry.example/digits:v1"},
            "green": {"version": "v2", "image": "registry.example/digits:v2"},
            "switchMode": mode,
        },
        "status": status,
    })
}

fn slice(colour: &str, url: &str) -> Value {
    let address = url.trim_start_matches("http://");
    let (host, port) = address.rsplit_once(':').unwrap();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("digits-{colour}-x7k2p"),
            "namespace": "default",
            "resourceVersion": "5",
            "labels": {"kubernetes.io/service-name": format!("digits-{colour}"), "teal.dev/colour": colour},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [host], "conditions": {"ready": true}},
            // A pod that is not ready is never routed to.
            {"addresses": ["127.0.0.1"], "conditions": {"ready": false}},
        ],
        "ports": [{"name": "http", "port": port.parse::<u16>().unwrap(), "protocol": "TCP"}],
    })
}

/// What the mocked API server holds: the resource (changed by the test) and the slices.
struct Cluster {
    resource: Mutex<(Value, u64)>,
    slices: Vec<Value>,
    changed: watch::Sender<u64>,
}

impl Cluster {
    /// The operator's write: the resource as it now is, at `version`; held watches answer.
    fn publish(&self, object: Value, version: u64) {
        *self.resource.lock().unwrap() = (object, version);
        self.changed.send_replace(version);
    }
}

/// Whether every gateway answers with `version` within 20 s.
async fn every_gateway_serves(clients: &[HttpClient], version: &str) -> bool {
    for client in clients {
        let served = common::eventually(Duration::from_secs(20), async || {
            version_served(client).await.as_deref() == Some(version)
        })
        .await;
        if !served {
            return false;
        }
    }
    true
}

/// Answers one gateway's list and watch requests until it goes away. A watch is held open
/// until the resource changes, then answered with the change.
async fn serve(mut api: Api, cluster: Arc<Cluster>) {
    while let Some(seen) = api.next_untimed().await {
        assert_eq!(
            seen.method, "GET",
            "a gateway only reads: {} {}",
            seen.method, seen.path
        );
        let watching = seen.query.contains("watch=true");
        match (seen.path.as_str(), watching) {
            (RESOURCES, false) => {
                let (object, version) = cluster.resource.lock().unwrap().clone();
                seen.answer(200, &json!({"apiVersion": "teal.dev/v1alpha1", "kind": "ModelDeploymentList", "metadata": {"resourceVersion": version.to_string()}, "items": [object]}));
            }
            (RESOURCES, true) => {
                let from: u64 = seen
                    .query
                    .split('&')
                    .find_map(|p| p.strip_prefix("resourceVersion="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let cluster = cluster.clone();
                let mut changed = cluster.changed.subscribe();
                tokio::spawn(async move {
                    while *changed.borrow_and_update() <= from {
                        if changed.changed().await.is_err() {
                            return;
                        }
                    }
                    let (object, _) = cluster.resource.lock().unwrap().clone();
                    let line = json!({"type": "MODIFIED", "object": object}).to_string() + "\n";
                    seen.answer_bytes(200, line.into_bytes());
                });
            }
            (SLICES, false) => {
                assert!(
                    seen.query.contains("labelSelector=teal.dev%2Fcolour"),
                    "{}",
                    seen.query
                );
                seen.answer(200, &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": "5"}, "items": cluster.slices}));
            }
            (SLICES, true) => {
                // No slice changes in this test: the watch stays open.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(seen);
                });
            }
            (path, _) => panic!("a gateway asked for {path}"),
        }
    }
}

async fn version_served(client: &HttpClient) -> Option<String> {
    let rows: Vec<Vec<f64>> = common::holdout("digits")
        .into_iter()
        .take(1)
        .map(|r| r.0)
        .collect();
    let answer = client
        .post_json("/v2/models/digits/infer", &common::infer_body(&rows))
        .await
        .ok()?;
    (answer.status == 200)
        .then(|| {
            answer
                .headers
                .get("x-teal-version")?
                .to_str()
                .ok()
                .map(String::from)
        })
        .flatten()
}

async fn gateway(cluster: &Arc<Cluster>) -> Running {
    let mut config = teal::core::config::Config::parse(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    config.server.state_dir = common::temp_dir("gateway");
    config.validate_allowing_no_models().unwrap();
    let running = common::start(&config).await;
    let (client, api) = mock_api();
    tokio::spawn(serve(api, cluster.clone()));
    tokio::spawn(teal::kubernetes::gateway::follow(
        client,
        Some("default".into()),
        running.routes.clone(),
    ));
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_flips_every_gateway_replica() {
    let blue = common::start(&common::config_with(&common::onnx("v1"), None)).await;
    let green = common::start(&common::config_with(&common::onnx("v2"), None)).await;
    let status = json!({
        "phase": "observing",
        "activeColour": "blue", "activeVersion": "v1",
        "candidateColour": "green", "candidateVersion": "v2",
        "route": {"active": "blue", "candidatePercent": 0.0, "shadowPercent": 0.0},
    });
    let (changed, _) = watch::channel(10);
    let cluster = Arc::new(Cluster {
        resource: Mutex::new((resource(&status, 10), 10)),
        slices: vec![
            slice("blue", &blue.data_url()),
            slice("green", &green.data_url()),
        ],
        changed,
    });
    let gateways = [gateway(&cluster).await, gateway(&cluster).await];
    let clients: Vec<HttpClient> = gateways.iter().map(common::data).collect();

    assert!(
        every_gateway_serves(&clients, "v1").await,
        "every gateway routes digits to blue (v1) from the status"
    );

    // The operator switches: the status now names green.
    let mut switched = status.clone();
    switched["activeColour"] = json!("green");
    switched["activeVersion"] = json!("v2");
    switched["candidateColour"] = json!("blue");
    switched["candidateVersion"] = json!("v1");
    switched["route"]["active"] = json!("green");
    cluster.publish(resource(&switched, 11), 11);

    assert!(
        every_gateway_serves(&clients, "v2").await,
        "every gateway follows the new status to green (v2)"
    );
    // Once flipped, every request goes to green (the same kept-alive clients).
    for client in &clients {
        for _ in 0..50 {
            assert_eq!(version_served(client).await.as_deref(), Some("v2"));
        }
    }

    // A canary share in the status splits new requests on every replica.
    let mut canary = switched.clone();
    canary["route"]["candidatePercent"] = json!(50.0);
    cluster.publish(resource(&canary, 12), 12);
    for client in &clients {
        let split = common::eventually(Duration::from_secs(20), async || {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..40 {
                if let Some(v) = version_served(client).await {
                    seen.insert(v);
                }
            }
            seen.len() == 2
        })
        .await;
        assert!(split, "with a 50% candidate share both versions answer");
    }

    // Switched to Service-selector mode, the resource is no longer the gateways' to route.
    cluster.publish(resource_in(&canary, 13, "service"), 13);
    for client in &clients {
        let forgotten = common::eventually(Duration::from_secs(20), async || {
            client
                .get("/v2/models/digits/ready")
                .await
                .map(|a| a.status)
                .ok()
                == Some(404)
        })
        .await;
        assert!(forgotten, "the model is no longer routed by the gateways");
    }
    for running in gateways {
        common::stop(running).await;
    }
    common::stop(blue).await;
    common::stop(green).await;
}

/// `value` moved into `namespace` (its `metadata.namespace`), with a uid of its own.
fn in_namespace(mut value: Value, namespace: &str) -> Value {
    value["metadata"]["namespace"] = json!(namespace);
    if value["metadata"]["uid"].is_string() {
        value["metadata"]["uid"] = json!(format!("uid-{namespace}"));
    }
    value
}

async fn infer_version(client: &HttpClient, model: &str) -> (u16, Option<String>) {
    let rows = vec![common::holdout("digits")[0].0.clone()];
    let answer = client
        .post_json(
            &format!("/v2/models/{model}/infer"),
            &common::infer_body(&rows),
        )
        .await
        .unwrap();
    let version = answer
        .headers
        .get("x-teal-version")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    (answer.status, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_namespaces_the_same_model_name_is_two_qualified_models() {
    // The mocked API server holds two tenants' resources, `shop/digits` and `bank/digits`,
    // both naming the model `digits`; their pods are real model servers.
    let shop_pod = common::start(&common::config_with(&common::onnx("v1"), None)).await;
    let bank_pod = common::start(&common::config_with(&common::onnx("v2"), None)).await;
    let status = |version: &str| {
        json!({
            "phase": "stable",
            "activeColour": "blue", "activeVersion": version,
            "route": {"active": "blue", "candidatePercent": 0.0, "shadowPercent": 0.0},
        })
    };
    let resources = [
        in_namespace(resource(&status("v1"), 10), "shop"),
        in_namespace(resource(&status("v2"), 10), "bank"),
    ];
    let slices = [
        in_namespace(slice("blue", &shop_pod.data_url()), "shop"),
        in_namespace(slice("blue", &bank_pod.data_url()), "bank"),
    ];
    let mut config = teal::core::config::Config::parse(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    config.server.state_dir = common::temp_dir("gateway");
    config.validate_allowing_no_models().unwrap();
    let running = common::start(&config).await;
    let (client, mut api) = mock_api();
    // A gateway without --namespace follows every namespace.
    tokio::spawn(teal::kubernetes::gateway::follow(
        client,
        None,
        running.routes.clone(),
    ));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(seen) = api.next_untimed().await {
            assert_eq!(seen.method, "GET", "a gateway only reads");
            if seen.query.contains("watch=true") {
                // Nothing changes in this test: watches stay open.
                held.push(seen);
                continue;
            }
            match seen.path.as_str() {
                "/apis/teal.dev/v1alpha1/modeldeployments" => seen.answer(200, &json!({"apiVersion": "teal.dev/v1alpha1", "kind": "ModelDeploymentList", "metadata": {"resourceVersion": "10"}, "items": resources})),
                "/apis/discovery.k8s.io/v1/endpointslices" => seen.answer(200, &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": "5"}, "items": slices})),
                path => panic!("a gateway asked for {path}"),
            }
        }
    });
    let client = common::data(&running);
    let routed = common::eventually(Duration::from_secs(20), async || {
        infer_version(&client, "shop.digits").await == (200, Some("v1".into()))
            && infer_version(&client, "bank.digits").await == (200, Some("v2".into()))
    })
    .await;
    assert!(
        routed,
        "each namespace's model is routed under its qualified name, to its own pods"
    );
    assert_eq!(
        infer_version(&client, "digits").await.0,
        404,
        "no tenant owns the bare name"
    );
    common::stop(running).await;
    common::stop(shop_pod).await;
    common::stop(bank_pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_one_namespace_the_older_resource_keeps_a_model_name_whichever_is_seen_first() {
    // The mocked API server lists `digits-new` (created later, pods on v1) before
    // `digits-old` (pods on v2); both name the model `digits` in namespace `default`.
    let new_pod = common::start(&common::config_with(&common::onnx("v1"), None)).await;
    let old_pod = common::start(&common::config_with(&common::onnx("v2"), None)).await;
    let named = |name: &str, created: &str, version: &str| {
        let mut object = resource(
            &json!({
                "phase": "stable",
                "activeColour": "blue", "activeVersion": version,
                "route": {"active": "blue", "candidatePercent": 0.0, "shadowPercent": 0.0},
            }),
            10,
        );
        object["metadata"]["name"] = json!(name);
        object["metadata"]["uid"] = json!(format!("uid-{name}"));
        object["metadata"]["creationTimestamp"] = json!(created);
        object
    };
    let sliced = |name: &str, url: &str| {
        let mut object = slice("blue", url);
        object["metadata"]["name"] = json!(format!("{name}-blue-x7k2p"));
        object["metadata"]["labels"]["kubernetes.io/service-name"] = json!(format!("{name}-blue"));
        object
    };
    let slices = vec![
        sliced("digits-new", &new_pod.data_url()),
        sliced("digits-old", &old_pod.data_url()),
    ];
    let resources = vec![
        named("digits-new", "2026-02-01T00:00:00Z", "v1"),
        named("digits-old", "2026-01-01T00:00:00Z", "v2"),
    ];
    let mut config = teal::core::config::Config::parse(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    config.server.state_dir = common::temp_dir("gateway");
    config.validate_allowing_no_models().unwrap();
    let running = common::start(&config).await;
    let (client, mut api) = mock_api();
    tokio::spawn(teal::kubernetes::gateway::follow(
        client,
        Some("default".into()),
        running.routes.clone(),
    ));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(seen) = api.next_untimed().await {
            if seen.query.contains("watch=true") {
                held.push(seen);
                continue;
            }
            match seen.path.as_str() {
                RESOURCES => seen.answer(200, &json!({"apiVersion": "teal.dev/v1alpha1", "kind": "ModelDeploymentList", "metadata": {"resourceVersion": "10"}, "items": resources})),
                SLICES => seen.answer(200, &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {"resourceVersion": "5"}, "items": slices})),
                path => panic!("a gateway asked for {path}"),
            }
        }
    });
    let client = common::data(&running);
    let kept = common::eventually(Duration::from_secs(20), async || {
        infer_version(&client, "digits").await == (200, Some("v2".into()))
    })
    .await;
    assert!(kept, "the older resource's pods (v2) answer for `digits`");
    for _ in 0..20 {
        assert_eq!(
            infer_version(&client, "digits").await,
            (200, Some("v2".into()))
        );
    }
    common::stop(running).await;
    common::stop(new_pod).await;
    common::stop(old_pod).await;
}
