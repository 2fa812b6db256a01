//! The Kubernetes operator's reconciler against a mocked API server (tower-test): every
//! path, with the exact requests it makes (method, path, query, body). The model pods behind
//! the colour Services are real: in-process teal servers serving the bundled digits versions,
//! so the gates and checks run for real. No cluster is involved; nothing here needs one.
// Built only with the `kubernetes` feature (on by default).
#![cfg(feature = "kubernetes")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::apiserver::{Api, RESOURCE, STATUS, deployment, mock_api, resource};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use teal::kubernetes::crd::ModelDeployment;
use teal::kubernetes::operator::{self, Context, Error};
use teal::server::Running;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const HOLDOUT: &str = "/api/v1/namespaces/default/configmaps/digits-holdout";
const START_MS: i64 = 1_790_000_000_000;

/// The two colours' pods: real model servers.
struct Pods {
    blue: Running,
    green: Running,
}

async fn pods(blue: &str, green: &str) -> Pods {
    Pods {
        blue: common::start(&common::config_with(&common::onnx(blue), None)).await,
        green: common::start(&common::config_with(&common::onnx(green), None)).await,
    }
}

/// One resource, the mocked API, and a clock the test moves.
struct Harness {
    api: Api,
    ctx: Arc<Context>,
    md: ModelDeployment,
    clock: Arc<AtomicI64>,
    resource_version: u64,
}

impl Harness {
    fn new(spec: Value, status: Option<Value>, pods: Option<&Pods>) -> Harness {
        let (client, api) = mock_api();
        let clock = Arc::new(AtomicI64::new(START_MS));
        let mut ctx = Context::new(client, Some("operator-0".into()));
        let now = clock.clone();
        ctx.clock = Arc::new(move || now.load(Ordering::SeqCst));
        ctx.connect_wait = Duration::from_secs(5);
        let urls: BTreeMap<String, String> = pods
            .map(|p| {
                BTreeMap::from([
                    ("digits-blue".to_string(), p.blue.data_url()),
                    ("digits-green".to_string(), p.green.data_url()),
                ])
            })
            .unwrap_or_default();
        ctx.service_url = Arc::new(move |namespace, service, port| {
            assert_eq!((namespace, port), ("default", 8080));
            urls.get(service)
                .cloned()
                .unwrap_or_else(|| "http://127.0.0.1:9".into())
        });
        Harness {
            api,
            ctx: Arc::new(ctx),
            md: resource(spec, status, 1),
            clock,
            resource_version: 1,
        }
    }

    fn reconcile(&self) -> tokio::task::JoinHandle<Result<Action, Error>> {
        tokio::spawn(operator::reconcile(
            Arc::new(self.md.clone()),
            self.ctx.clone(),
        ))
    }

    fn advance(&self, seconds: i64) {
        self.clock.fetch_add(seconds * 1000, Ordering::SeqCst);
    }

    /// The next request must be a status write guarded by the resource version read; it is
    /// merged into the resource, as the API server would. Returns the written status.
    async fn status_write(&mut self) -> Value {
        let seen = self.api.expect("PATCH", STATUS).await;
        assert_eq!(seen.content_type, "application/merge-patch+json");
        assert_eq!(
            seen.body["metadata"]["resourceVersion"],
            self.resource_version.to_string(),
            "a status write names the version it read"
        );
        let written = seen.body["status"].clone();
        let mut object = serde_json::to_value(&self.md).unwrap();
        merge(&mut object["status"], &written);
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        self.md = serde_json::from_value(object.clone()).unwrap();
        seen.answer(200, &object);
        written
    }

    /// A server-side apply of one colour's Deployment; returns its body.
    async fn deployment_apply(&mut self, colour: &str) -> Value {
        let seen = self
            .api
            .expect_write("PATCH", &format!("{DEPLOYMENTS}/digits-{colour}"))
            .await;
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert!(
            seen.query.contains("fieldManager=teal-operator") && seen.query.contains("force=true"),
            "{}",
            seen.query
        );
        seen.echo()
    }

    async fn service_apply(&mut self, name: &str) -> Value {
        let seen = self
            .api
            .expect_write("PATCH", &format!("{SERVICES}/{name}"))
            .await;
        assert_eq!(seen.content_type, "application/apply-patch+yaml");
        assert!(
            seen.query.contains("fieldManager=teal-operator"),
            "{}",
            seen.query
        );
        assert_eq!(
            seen.body["metadata"]["ownerReferences"][0]["kind"],
            "ModelDeployment"
        );
        seen.echo()
    }

    async fn readiness(&mut self, colour: &str, ready: i32) {
        self.api
            .expect("GET", &format!("{DEPLOYMENTS}/digits-{colour}"))
            .await
            .answer(200, &deployment(&format!("digits-{colour}"), 2, ready));
    }

    async fn holdout(&mut self) {
        let rows: Vec<&str> =
            std::fs::read_to_string(common::repo_root().join("models/digits/holdout.jsonl"))
                .unwrap()
                .leak()
                .lines()
                .take(120)
                .collect();
        self.api.expect("GET", HOLDOUT).await.answer(
            200,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "digits-holdout", "namespace": "default"}, "data": {"holdout.jsonl": rows.join("\n")}}),
        );
    }

    /// Moves the clock `seconds` on and runs a reconcile that makes a rollback check: the
    /// candidate's readiness (green, ready) and the holdout for the probes. Returns the
    /// reconcile, for the caller to follow.
    async fn check_after(
        &mut self,
        seconds: i64,
    ) -> tokio::task::JoinHandle<Result<Action, Error>> {
        self.advance(seconds);
        let task = self.reconcile();
        self.readiness("green", 2).await;
        self.holdout().await;
        task
    }

    /// Answers the operator's JSON patch of a colour (a guard on the resource version, then
    /// the colour written whole) as the API server would: the colour replaced, a new
    /// resource version and `generation`.
    fn colour_written(&mut self, seen: common::apiserver::Seen, generation: i64) {
        assert_eq!(seen.content_type, "application/json-patch+json");
        assert_eq!(seen.body[0]["op"], "test");
        let mut object = serde_json::to_value(&self.md).unwrap();
        let colour = seen.body[1]["path"]
            .as_str()
            .unwrap()
            .trim_start_matches("/spec/");
        object["spec"][colour] = seen.body[1]["value"].clone();
        self.resource_version += 1;
        object["metadata"]["resourceVersion"] = json!(self.resource_version.to_string());
        object["metadata"]["generation"] = json!(generation);
        self.md = serde_json::from_value(object.clone()).unwrap();
        seen.answer(200, &object);
    }

    fn phase(&self) -> String {
        self.md
            .status
            .as_ref()
            .map(|s| s.phase.clone())
            .unwrap_or_default()
    }

    /// Runs one reconcile that must write the status into `phase` and publish `reason`.
    async fn transition(&mut self, phase: &str, kind: &str, reason: &str) -> Value {
        let task = self.reconcile();
        let status = self.status_write().await;
        assert_eq!(status["phase"], phase, "{status}");
        self.api.expect_event(kind, reason).await;
        finished(task).await;
        status
    }
}

/// Waits (bounded) for a reconcile to finish, and returns what it asked for next.
async fn finished<T, E: std::fmt::Debug>(task: tokio::task::JoinHandle<Result<T, E>>) -> T {
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the reconcile finished: it waits for no request the test did not answer")
        .unwrap()
        .unwrap()
}

/// RFC 7386 merge, as the API server applies a merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in fields {
                if v.is_null() {
                    target.as_object_mut().unwrap().remove(k);
                } else {
                    merge(
                        target
                            .as_object_mut()
                            .unwrap()
                            .entry(k.clone())
                            .or_insert(Value::Null),
                        v,
                    );
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn spec(mode: &str) -> Value {
    json!({
        "model": "digits",
        "replicas": 2,
        "blue": {"version": "v1", "image": "registry.example/digits:v1"},
        "green": {"version": "v2", "image": "registry.example/digits:v2"},
        "switchMode": mode,
        "observationSeconds": 60,
        "teardownSeconds": 120,
        "validation": {"holdout": {"configMap": "digits-holdout", "key": "holdout.jsonl"}, "maxLatencyRatio": 10.0, "agreement": 0.9},
        // Room for the latency rule: ten probes on a busy machine are noisy, and these
        // tests are about the phases (the rule has its own tests in teal-core).
        "rollback": {"checkIntervalSeconds": 10, "probeRequests": 10, "latencyRatio": 10.0},
    })
}

/// Blue live with v1, green not yet deployed.
fn stable() -> Value {
    json!({
        "phase": "stable",
        "activeColour": "blue",
        "activeVersion": "v1",
        "route": {"active": "blue", "candidatePercent": 0.0, "shadowPercent": 0.0},
        "versions": {"blue": "v1"},
    })
}

/// From stable to validating: start, deploy green, wait for its pods, ready.
async fn to_validating(h: &mut Harness) {
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "deploying");
    assert_eq!(status["candidateColour"], "green");
    assert_eq!(status["candidateVersion"], "v2");
    assert_eq!(status["versions"]["green"], "v2");
    assert_eq!(status["rollout"]["version"], "v2");
    h.api.expect_event("Normal", "Deploying").await;
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(1))
    );

    let task = h.reconcile();
    let applied = h.deployment_apply("green").await;
    assert_eq!(applied["spec"]["replicas"], 2);
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/digits:v2"
    );
    assert_eq!(
        applied["spec"]["selector"]["matchLabels"]["teal.dev/colour"],
        "green"
    );
    assert_eq!(
        applied["spec"]["template"]["metadata"]["labels"]["teal.dev/version"],
        "v2"
    );
    assert_eq!(
        applied["metadata"]["ownerReferences"][0]["controller"],
        true
    );
    assert_eq!(h.status_write().await["phase"], "warming_up");
    h.api.expect_event("Normal", "WarmingUp").await;
    finished(task).await;

    // Not ready yet: nothing is written, the reconcile comes back soon.
    let task = h.reconcile();
    h.readiness("green", 0).await;
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(2))
    );
    h.api.silent(Duration::from_millis(200)).await;

    let task = h.reconcile();
    h.readiness("green", 2).await;
    assert_eq!(h.status_write().await["phase"], "validating");
    h.api.expect_event("Normal", "Validating").await;
    finished(task).await;
}

/// From validating (candidate good) to observing.
async fn to_observing(h: &mut Harness, service_mode: bool) {
    let task = h.reconcile();
    h.holdout().await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "switching", "{status}");
    assert_eq!(status["route"]["active"], "green");
    assert_eq!(status["weights"]["green"], 100.0);
    assert_eq!(status["lastGateReport"]["verdict"], "pass", "{status}");
    assert_eq!(status["lastGateReport"]["samples"], 120);
    // The route is published first, then the event says so.
    if service_mode {
        let service = h.service_apply("digits").await;
        assert_eq!(service["spec"]["selector"]["teal.dev/colour"], "green");
    }
    h.api.expect_event("Normal", "Switching").await;
    finished(task).await;
    h.api.silent(Duration::from_millis(200)).await;

    h.transition("observing", "Normal", "Observing").await;
}

/// From validating, in gateway mode: the gates pass and the status alone names green.
async fn gates_pass_and_the_status_switches(h: &mut Harness) {
    let task = h.reconcile();
    h.holdout().await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "switching");
    assert_eq!(
        status["route"],
        json!({"active": "green", "candidatePercent": 0.0, "shadowPercent": 0.0})
    );
    h.api.expect_event("Normal", "Switching").await;
    finished(task).await;
}

#[tokio::test]
async fn a_new_resource_gets_the_finalizer_before_anything_else() {
    let mut h = Harness::new(spec("service"), None, None);
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    let seen = h.api.expect("PATCH", RESOURCE).await;
    assert_eq!(seen.content_type, "application/json-patch+json");
    assert_eq!(
        seen.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["teal.dev/cleanup"]}
        ])
    );
    let md = serde_json::to_value(&h.md).unwrap();
    seen.answer(200, &md);
    assert_eq!(finished(task).await, Action::await_change());
    h.api.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_first_colour_goes_live_with_its_deployment_and_services() {
    let mut spec = spec("service");
    spec.as_object_mut().unwrap().remove("green");
    let mut h = Harness::new(spec, None, None);
    let task = h.reconcile();
    let applied = h.deployment_apply("blue").await;
    assert_eq!(applied["apiVersion"], "apps/v1");
    assert_eq!(applied["kind"], "Deployment");
    assert_eq!(applied["spec"]["replicas"], 2);
    assert_eq!(
        applied["spec"]["selector"]["matchLabels"],
        json!({"teal.dev/model-deployment": "digits", "teal.dev/colour": "blue"})
    );
    let container = &applied["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/digits:v1");
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        "/v2/models/digits/ready"
    );
    assert_eq!(applied["metadata"]["ownerReferences"][0]["name"], "digits");
    assert_eq!(
        applied["metadata"]["ownerReferences"][0]["uid"],
        "5e1f0c2a-0000-4000-8000-000000000001"
    );
    let active = h.service_apply("digits").await;
    assert_eq!(active["spec"]["selector"]["teal.dev/colour"], "blue");
    assert_eq!(active["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        h.service_apply("digits-blue").await["spec"]["selector"]["teal.dev/colour"],
        "blue"
    );
    assert_eq!(
        h.service_apply("digits-green").await["spec"]["selector"]["teal.dev/colour"],
        "green"
    );
    let status = h.status_write().await;
    assert_eq!(status["phase"], "stable");
    assert_eq!(status["activeColour"], "blue");
    assert_eq!(status["activeVersion"], "v1");
    assert_eq!(
        status["route"],
        json!({"active": "blue", "candidatePercent": 0.0, "shadowPercent": 0.0})
    );
    assert_eq!(status["weights"], json!({"blue": 100.0, "green": 0.0}));
    assert_eq!(status["versions"], json!({"blue": "v1"}));
    assert_eq!(status["rollout"], Value::Null);
    h.api.expect_event("Normal", "Deployed").await;
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(60))
    );
    h.api.silent(Duration::from_millis(200)).await;

    // Reconciled again with nothing new: the live Deployment is applied as the spec says
    // (a no-op unless someone changed it), and nothing else is written.
    let task = h.reconcile();
    assert_eq!(h.deployment_apply("blue").await["spec"]["replicas"], 2);
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(300))
    );
    h.api.silent(Duration::from_millis(200)).await;

    // A new replica count reaches the live colour.
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["spec"]["replicas"] = json!(5);
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    assert_eq!(h.deployment_apply("blue").await["spec"]["replicas"], 5);
    finished(task).await;
}

#[tokio::test]
async fn a_blue_green_rollout_in_service_mode_runs_from_deploy_to_teardown() {
    let pods = pods("v1", "v2").await;
    let mut h = Harness::new(spec("service"), Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    to_observing(&mut h, true).await;

    // A check is due every 10 s: the candidate's readiness, and probes to both colours.
    let task = h.check_after(10).await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "observing");
    let checks = status["rollout"]["last_check"].as_array().unwrap().clone();
    assert!(checks.iter().all(|c| c["verdict"] != "fail"), "{checks:?}");
    finished(task).await;
    h.api.silent(Duration::from_millis(200)).await;

    // The observation window (60 s) ends with every rule holding: promoted.
    let task = h.check_after(55).await;
    assert_eq!(h.status_write().await["phase"], "promoted");
    h.api.expect_event("Normal", "Promoted").await;
    finished(task).await;

    // After the teardown window (120 s), with green ready, blue is scaled to zero.
    let task = h.check_after(125).await;
    assert_eq!(h.status_write().await["phase"], "tearing_down");
    h.api.expect_event("Normal", "TearingDown").await;
    finished(task).await;

    let task = h.reconcile();
    let seen = h
        .api
        .expect_write("PATCH", &format!("{DEPLOYMENTS}/digits-blue"))
        .await;
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(seen.body, json!({"spec": {"replicas": 0}}));
    seen.echo();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "torn_down");
    assert_eq!(status["activeColour"], "green");
    assert_eq!(status["activeVersion"], "v2");
    assert_eq!(
        status["candidateColour"],
        Value::Null,
        "cleared, not left behind"
    );
    assert_eq!(status["lastTransition"]["to"], "torn_down");
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "RolloutComplete");
    h.api.expect_event("Normal", "TornDown").await;
    finished(task).await;

    // Done: blue's spec still names v1, the version it last ran, so nothing starts again.
    let task = h.reconcile();
    h.deployment_apply("green").await;
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(300))
    );
    h.api.silent(Duration::from_millis(300)).await;
    assert_eq!(h.phase(), "torn_down");
}

#[tokio::test]
async fn gates_that_fail_keep_blue_live_and_say_why() {
    let pods = pods("v1", "v2-permuted").await;
    let mut h = Harness::new(spec("service"), Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    let task = h.reconcile();
    h.holdout().await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "failed", "{status}");
    assert_eq!(status["route"]["active"], "blue");
    assert_eq!(status["activeVersion"], "v1");
    assert_eq!(status["lastGateReport"]["verdict"], "fail");
    let agreement = status["lastGateReport"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "agreement")
        .unwrap()
        .clone();
    assert_eq!(agreement["verdict"], "fail", "{agreement}");
    assert!(
        status["lastTransition"]["cause"]
            .as_str()
            .unwrap()
            .contains("gates failed")
    );
    let service = h.service_apply("digits").await;
    assert_eq!(service["spec"]["selector"]["teal.dev/colour"], "blue");
    h.api.expect_event("Warning", "Failed").await;
    finished(task).await;

    // The failed version is not tried again until green names another.
    let task = h.reconcile();
    h.deployment_apply("blue").await;
    finished(task).await;
    h.api.silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn gateway_mode_switches_through_the_status_alone() {
    let pods = pods("v1", "v2").await;
    let mut h = Harness::new(spec("gateway"), Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    gates_pass_and_the_status_switches(&mut h).await;
    // No Service is touched: gateways follow the status.
    h.api.silent(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_canary_in_gateway_mode_publishes_each_step_in_the_status() {
    let pods = pods("v1", "v2").await;
    let mut spec = spec("gateway");
    spec["strategy"] =
        json!({"type": "canary", "steps": [{"weight": 10, "pauseSeconds": 30}, {"weight": 50}]});
    let mut h = Harness::new(spec, Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    let task = h.reconcile();
    h.holdout().await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "canary");
    assert_eq!(
        status["route"],
        json!({"active": "blue", "candidatePercent": 10.0, "shadowPercent": 0.0})
    );
    assert_eq!(status["weights"], json!({"blue": 90.0, "green": 10.0}));
    h.api.expect_event("Normal", "Canary").await;
    finished(task).await;

    // The step is watched like the observation: a check every 10 s.
    let task = h.check_after(10).await;
    assert_eq!(h.status_write().await["phase"], "canary");
    finished(task).await;

    // The 30 s pause ends: the next step, 50%, which waits for approval.
    let task = h.check_after(25).await;
    let status = h.status_write().await;
    assert_eq!(status["route"]["candidatePercent"], 50.0);
    assert_eq!(
        status["rollout"]["phase"],
        json!({"phase": "canary", "step": 1})
    );
    // A new Event, not the first step's counted again: each transition says its own note.
    let event = h.api.expect_event("Normal", "Canary").await;
    assert!(event["note"].as_str().unwrap().contains("50%"), "{event}");
    assert_eq!(event["series"], Value::Null);
    finished(task).await;

    let mut object = serde_json::to_value(&h.md).unwrap();
    object["metadata"]["annotations"] = json!({"teal.dev/promote": "v2"});
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "switching");
    h.api.expect_event("Normal", "Switching").await;
    expect_consumed(&mut h, "teal.dev/promote").await;
    finished(task).await;
    assert_eq!(
        status["route"],
        json!({"active": "green", "candidatePercent": 0.0, "shadowPercent": 0.0})
    );
    h.api.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn shadow_then_switch_mirrors_for_its_window_before_the_gates() {
    let pods = pods("v1", "v2").await;
    let mut spec = spec("gateway");
    spec["strategy"] =
        json!({"type": "shadowThenSwitch", "shadowSeconds": 30, "shadowPercent": 50});
    let mut h = Harness::new(spec, Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    let status = h.md.status.clone().unwrap();
    let route = status.route.unwrap();
    assert_eq!(
        (route.candidate_percent, route.shadow_percent),
        (0.0, 50.0),
        "gateways mirror half of live traffic"
    );

    // Inside the window nothing is judged.
    h.advance(20);
    finished(h.reconcile()).await;
    h.api.silent(Duration::from_millis(200)).await;

    h.advance(11);
    gates_pass_and_the_status_switches(&mut h).await;
}

#[tokio::test]
async fn a_candidate_that_stops_being_ready_is_rolled_back_after_three_checks() {
    let pods = pods("v1", "v2").await;
    let mut h = Harness::new(spec("service"), Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    to_observing(&mut h, true).await;
    for strike in 1..=2 {
        h.advance(10);
        let task = h.reconcile();
        h.readiness("green", 1).await;
        let status = h.status_write().await;
        assert_eq!(status["phase"], "observing");
        assert_eq!(status["rollout"]["strikes"]["ready"], strike);
        finished(task).await;
        h.api.silent(Duration::from_millis(100)).await;
    }
    h.advance(10);
    let task = h.reconcile();
    h.readiness("green", 1).await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "rolled_back");
    assert_eq!(status["route"]["active"], "blue");
    assert_eq!(status["activeVersion"], "v1");
    let service = h.service_apply("digits").await;
    assert_eq!(service["spec"]["selector"]["teal.dev/colour"], "blue");
    h.api.expect_event("Warning", "RolledBack").await;
    finished(task).await;
    h.api.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn approval_by_annotation_switches_a_waiting_rollout() {
    let pods = pods("v1", "v2").await;
    let mut spec = spec("service");
    spec["autoSwitch"] = json!(false);
    let mut h = Harness::new(spec, Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    let task = h.reconcile();
    h.holdout().await;
    assert_eq!(h.status_write().await["phase"], "awaiting_approval");
    h.api.expect_event("Normal", "AwaitingApproval").await;
    finished(task).await;

    // Waiting writes nothing; an annotation for another version is not an approval.
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["metadata"]["annotations"] = json!({"teal.dev/promote": "v9"});
    h.md = serde_json::from_value(object.clone()).unwrap();
    finished(h.reconcile()).await;
    h.api.silent(Duration::from_millis(200)).await;

    object["metadata"]["annotations"] = json!({"teal.dev/promote": "v2"});
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "switching");
    assert_eq!(status["lastTransition"]["actor"], "kubectl annotate");
    h.service_apply("digits").await;
    h.api.expect_event("Normal", "Switching").await;
    expect_consumed(&mut h, "teal.dev/promote").await;
    finished(task).await;
}

#[tokio::test]
async fn a_new_version_named_before_the_switch_supersedes_the_rollout() {
    let mut h = Harness::new(spec("service"), Some(stable()), None);
    h.transition("deploying", "Normal", "Deploying").await;
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["spec"]["green"]["version"] = json!("v3");
    // A rollback annotation for v2 beside it is not what acted: it is left in place.
    object["metadata"]["annotations"] = json!({"teal.dev/rollback": "v2"});
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "aborted");
    assert_eq!(status["lastTransition"]["actor"], "spec.green (now v3)");
    assert_eq!(status["route"]["active"], "blue");
    h.service_apply("digits").await;
    h.api.expect_event("Warning", "Aborted").await;
    finished(task).await;

    // The next reconcile starts the rollout of v3.
    let status = h.transition("deploying", "Normal", "Deploying").await;
    assert_eq!(status["candidateVersion"], "v3");
    assert_eq!(status["versions"]["green"], "v3");
}

#[tokio::test]
async fn a_rollback_by_annotation_puts_blue_back() {
    let pods = pods("v1", "v2").await;
    let mut h = Harness::new(spec("service"), Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    to_observing(&mut h, true).await;
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["metadata"]["annotations"] = json!({"teal.dev/rollback": "v2"});
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "rolled_back");
    assert_eq!(status["lastTransition"]["actor"], "kubectl annotate");
    assert_eq!(status["activeVersion"], "v1");
    let service = h.service_apply("digits").await;
    assert_eq!(service["spec"]["selector"]["teal.dev/colour"], "blue");
    h.api.expect_event("Warning", "RolledBack").await;
    expect_consumed(&mut h, "teal.dev/rollback").await;
    finished(task).await;
}

/// The annotation the operator acted on is removed, so it cannot act on a later rollout.
async fn expect_consumed(h: &mut Harness, annotation: &str) {
    let seen = h.api.expect("PATCH", RESOURCE).await;
    assert_eq!(seen.content_type, "application/merge-patch+json");
    assert_eq!(
        seen.body,
        json!({"metadata": {"annotations": {annotation: null}}})
    );
    let object = serde_json::to_value(&h.md).unwrap();
    seen.answer(200, &object);
}

#[tokio::test]
async fn deleting_the_resource_cleans_up_then_drops_the_finalizer() {
    let mut status = stable();
    status["phase"] = json!("observing");
    let mut h = Harness::new(spec("service"), Some(status), None);
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["metadata"]["deletionTimestamp"] = json!("2026-11-22T10:00:00Z");
    h.md = serde_json::from_value(object.clone()).unwrap();
    let task = h.reconcile();
    let event = h.api.expect_event("Normal", "Deleted").await;
    assert!(
        event["note"].as_str().unwrap().contains("observing"),
        "{event}"
    );
    let seen = h.api.expect("PATCH", RESOURCE).await;
    assert_eq!(seen.content_type, "application/json-patch+json");
    assert_eq!(
        seen.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/0", "value": "teal.dev/cleanup"},
            {"op": "remove", "path": "/metadata/finalizers/0"}
        ])
    );
    seen.answer(200, &object);
    assert_eq!(finished(task).await, Action::await_change());
    h.api.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_conflicting_status_write_is_retried_without_acting() {
    let mut h = Harness::new(spec("service"), Some(stable()), None);
    let task = h.reconcile();
    let seen = h.api.expect("PATCH", STATUS).await;
    assert_eq!(seen.body["status"]["phase"], "deploying");
    seen.fail(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again");
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Conflict(_)), "{error}");
    // Nothing acted on a state that was not written: no event, no Deployment.
    h.api.silent(Duration::from_millis(300)).await;
    let action = operator::error_policy(Arc::new(h.md.clone()), &error, h.ctx.clone());
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
}

#[tokio::test]
async fn api_errors_are_retried_and_a_refused_deployment_fails_the_rollout() {
    let mut h = Harness::new(spec("service"), Some(stable()), None);
    h.transition("deploying", "Normal", "Deploying").await;

    // The API server fails: nothing is written, the reconcile is retried later.
    let task = h.reconcile();
    h.api
        .expect_write("PATCH", &format!("{DEPLOYMENTS}/digits-green"))
        .await
        .fail(500, "InternalError", "etcdserver: request timed out");
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Api(_)), "{error}");
    assert_eq!(
        operator::error_policy(Arc::new(h.md.clone()), &error, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    h.api.silent(Duration::from_millis(200)).await;
    assert_eq!(h.phase(), "deploying");

    // The API server refuses the Deployment itself: no retry can help, the rollout fails.
    let task = h.reconcile();
    h.api
        .expect_write("PATCH", &format!("{DEPLOYMENTS}/digits-green"))
        .await
        .fail(422, "Invalid", "Deployment.apps \"digits-green\" is invalid: spec.template.spec.containers[0].image: Required value");
    let status = h.status_write().await;
    assert_eq!(status["phase"], "failed");
    assert!(
        status["lastTransition"]["cause"]
            .as_str()
            .unwrap()
            .contains("image: Required value")
    );
    h.service_apply("digits").await;
    h.api.expect_event("Warning", "Failed").await;
    finished(task).await;
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_not_acted_on() {
    let mut spec = spec("service");
    spec["strategy"] = json!({"type": "canary", "steps": [{"weight": 10, "pauseSeconds": 60}]});
    let mut h = Harness::new(spec, Some(stable()), None);
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "invalid");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("switchMode: gateway"),
        "{status}"
    );
    h.api.expect_event("Warning", "InvalidSpec").await;
    assert_eq!(finished(task).await, Action::await_change());
    // Reconciled again unchanged: reported once.
    finished(h.reconcile()).await;
    h.api.silent(Duration::from_millis(200)).await;
}

mod leader {
    use super::*;
    use teal::kubernetes::leader::{Candidate, Decision, decide};

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/teal-system/leases/teal-operator";
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/teal-system/leases";

    fn candidate(identity: &str) -> Candidate {
        Candidate {
            identity: identity.into(),
            lease_name: "teal-operator".into(),
            namespace: "teal-system".into(),
            duration: Duration::from_secs(15),
        }
    }

    fn lease(holder: &str, renewed_ms: i64, transitions: i32) -> Value {
        let time = |ms: i64| {
            k8s_openapi::jiff::Timestamp::from_millisecond(ms)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        };
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "teal-operator", "namespace": "teal-system", "resourceVersion": "7"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "acquireTime": time(renewed_ms - 60_000),
                "renewTime": time(renewed_ms),
                "leaseTransitions": transitions,
            }
        })
    }

    #[test]
    fn decisions_follow_the_holder_and_the_expiry() {
        let parse = |v: Value| serde_json::from_value(v).unwrap();
        assert_eq!(decide(None, "a", START_MS), Decision::Create);
        assert_eq!(
            decide(Some(&parse(lease("a", START_MS, 0))), "a", START_MS),
            Decision::Renew
        );
        assert_eq!(
            decide(
                Some(&parse(lease("b", START_MS - 14_000, 0))),
                "a",
                START_MS
            ),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(
            decide(
                Some(&parse(lease("b", START_MS - 15_000, 0))),
                "a",
                START_MS
            ),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&parse(lease("", START_MS, 0))), "a", START_MS),
            Decision::TakeOver
        );
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_lease_and_leads() {
        let (client, mut api) = mock_api();
        let task =
            tokio::spawn(async move { candidate("operator-a").try_lead(&client, START_MS).await });
        api.expect("GET", LEASE).await.fail(
            404,
            "NotFound",
            "leases.coordination.k8s.io \"teal-operator\" not found",
        );
        let created = api.expect("POST", LEASES).await;
        assert_eq!(created.body["metadata"]["name"], "teal-operator");
        assert_eq!(created.body["spec"]["holderIdentity"], "operator-a");
        assert_eq!(created.body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(created.body["spec"]["leaseTransitions"], 0);
        created.echo();
        assert!(finished(task).await);
    }

    #[tokio::test]
    async fn a_second_replica_follows_while_the_leader_renews() {
        let (client, mut api) = mock_api();
        let task =
            tokio::spawn(async move { candidate("operator-b").try_lead(&client, START_MS).await });
        api.expect("GET", LEASE)
            .await
            .answer(200, &lease("operator-a", START_MS - 5_000, 0));
        assert!(!finished(task).await, "the lease is held and fresh");
        api.silent(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_a_lost_race_is_not_leading() {
        // Two replicas read the same expired lease; the API server lets the first write win.
        for (answer, leads) in [(200, true), (409, false)] {
            let (client, mut api) = mock_api();
            let task =
                tokio::spawn(
                    async move { candidate("operator-b").try_lead(&client, START_MS).await },
                );
            api.expect("GET", LEASE)
                .await
                .answer(200, &lease("operator-a", START_MS - 20_000, 3));
            let replaced = api.expect("PUT", LEASE).await;
            assert_eq!(replaced.body["spec"]["holderIdentity"], "operator-b");
            assert_eq!(replaced.body["spec"]["leaseTransitions"], 4);
            assert_eq!(
                replaced.body["metadata"]["resourceVersion"], "7",
                "the write is guarded by the version read"
            );
            if answer == 200 {
                replaced.echo();
            } else {
                replaced.fail(409, "Conflict", "the object has been modified");
            }
            assert_eq!(finished(task).await, leads);
        }
    }

    /// A leader whose renewals hang stops acting before its lease can expire, so two
    /// replicas never act at once.
    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_stops_before_its_lease_expires() {
        let (client, mut api) = mock_api();
        let started = tokio::time::Instant::now();
        let keeper = tokio::spawn(async move { candidate("operator-a").keep(&client).await });
        // Every renewal hangs: the API server takes the requests and never answers.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(seen) = api.next_untimed().await {
                assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", LEASE));
                held.push(seen);
            }
        });
        let why = tokio::time::timeout(Duration::from_secs(60), keeper)
            .await
            .expect("keep returns")
            .unwrap();
        assert!(why.contains("could not be renewed in time"), "{why}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "stopped after {:?}, at or after the lease's 15 s",
            started.elapsed()
        );
        hold.abort();
    }

    #[tokio::test]
    async fn the_leader_renews_its_own_lease() {
        let (client, mut api) = mock_api();
        let task =
            tokio::spawn(async move { candidate("operator-a").try_lead(&client, START_MS).await });
        let held = lease("operator-a", START_MS - 5_000, 2);
        api.expect("GET", LEASE).await.answer(200, &held);
        let renewed = api.expect("PUT", LEASE).await;
        assert_eq!(renewed.body["spec"]["holderIdentity"], "operator-a");
        assert_eq!(
            renewed.body["spec"]["leaseTransitions"], 2,
            "a renewal is not a transition"
        );
        assert_eq!(
            renewed.body["spec"]["acquireTime"],
            held["spec"]["acquireTime"]
        );
        assert_ne!(renewed.body["spec"]["renewTime"], held["spec"]["renewTime"]);
        renewed.echo();
        assert!(finished(task).await);
    }
}

/// The controller as `teal operator` runs it (without the lease): it lists and watches the
/// resources and the Deployments and Services they own, and reconciles what it sees.
#[tokio::test]
async fn the_controller_watches_the_resources_and_reconciles_a_new_one() {
    use std::sync::Mutex;
    let (client, mut api) = mock_api();
    let mut spec = spec("service");
    spec.as_object_mut().unwrap().remove("green");
    let mut fresh = serde_json::to_value(resource(spec, None, 1)).unwrap();
    fresh["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let ctx = Arc::new(Context::new(client, Some("operator-0".into())));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(operator::run(ctx, Some("default".into()), async move {
        let _ = stopped.await;
    }));
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut writes = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    let mut resource_watch = None;
    let mut pending: Option<Vec<u8>> = None;
    // Answer lists and watches as they come; collect the writes in order.
    while writes.len() < 7 {
        let seen = api.next().await;
        let watching = seen.query.contains("watch=true");
        match (seen.method.as_str(), seen.path.as_str(), watching) {
            ("GET", "/apis/teal.dev/v1alpha1/namespaces/default/modeldeployments", false) => {
                listed.insert("modeldeployments");
                seen.answer(200, &json!({"apiVersion": "teal.dev/v1alpha1", "kind": "ModelDeploymentList", "metadata": {"resourceVersion": "1"}, "items": [fresh.clone()]}));
            }
            ("GET", DEPLOYMENTS, false) | ("GET", SERVICES, false) => {
                assert!(
                    seen.query
                        .contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dteal"),
                    "{}",
                    seen.query
                );
                listed.insert(if seen.path == DEPLOYMENTS {
                    "deployments"
                } else {
                    "services"
                });
                let kind = if seen.path == DEPLOYMENTS {
                    "DeploymentList"
                } else {
                    "ServiceList"
                };
                seen.answer(200, &json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []}));
            }
            ("GET", "/apis/teal.dev/v1alpha1/namespaces/default/modeldeployments", true) => {
                match pending.take() {
                    Some(event) => seen.answer_bytes(200, event),
                    None => resource_watch = Some(seen),
                }
            }
            ("GET", _, true) => held.lock().unwrap().push(seen),
            // Before writing an object, the operator reads it: absent here.
            _ if common::apiserver::ownership_read(&seen) => {
                seen.fail(404, "NotFound", "not found")
            }
            (method, path, _) => {
                writes.push(format!("{method} {path}"));
                if path == STATUS {
                    let mut object = fresh.clone();
                    object["status"] = seen.body["status"].clone();
                    seen.answer(200, &object);
                } else if path == RESOURCE {
                    // The finalizer is added: the resource watch brings the resource with it.
                    let mut with = fresh.clone();
                    with["metadata"]["finalizers"] = json!(["teal.dev/cleanup"]);
                    with["metadata"]["resourceVersion"] = json!("2");
                    seen.answer(200, &with);
                    let event = json!({"type": "MODIFIED", "object": with}).to_string() + "\n";
                    match resource_watch.take() {
                        Some(watch) => watch.answer_bytes(200, event.into_bytes()),
                        None => pending = Some(event.into_bytes()),
                    }
                } else {
                    seen.echo();
                }
            }
        }
    }
    assert_eq!(
        listed.len(),
        3,
        "lists the resources and the objects they own: {listed:?}"
    );
    assert_eq!(
        writes,
        [
            format!("PATCH {RESOURCE}"),
            format!("PATCH {DEPLOYMENTS}/digits-blue"),
            format!("PATCH {SERVICES}/digits"),
            format!("PATCH {SERVICES}/digits-blue"),
            format!("PATCH {SERVICES}/digits-green"),
            format!("PATCH {STATUS}"),
            "POST /apis/events.k8s.io/v1/namespaces/default/events".to_string(),
        ]
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller stops when told")
        .unwrap();
}

/// An object as someone other than teal made it: no owner reference, no teal labels.
fn foreign(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": if kind == "Service" { "v1" } else { "apps/v1" },
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "checkout"}},
        "spec": {},
    })
}

#[tokio::test]
async fn an_existing_service_teal_did_not_make_is_reported_and_never_patched() {
    // The mocked API server stands in for a cluster where someone's `checkout` Service
    // exists; the resource names it as its active Service.
    let mut spec = spec("service");
    spec.as_object_mut().unwrap().remove("green");
    spec["activeService"] = json!("checkout");
    let mut h = Harness::new(spec, None, None);
    let task = h.reconcile();
    // The colour's own Deployment is teal's to create.
    h.deployment_apply("blue").await;
    // Every Service is read before any is written; `checkout` is someone else's.
    h.api
        .expect("GET", &format!("{SERVICES}/checkout"))
        .await
        .answer(200, &foreign("Service", "checkout"));
    let status = h.status_write().await;
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("Service default/checkout exists and teal did not make it")
            && message.contains("spec.activeService"),
        "{message}"
    );
    let condition = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(
        (&condition["status"], &condition["reason"]),
        (&json!("False"), &json!("ObjectNotOwned"))
    );
    h.api.expect_event("Warning", "ObjectNotOwned").await;
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(60))
    );
    // Looked at again: read, still someone else's, reported already; nothing is written.
    let task = h.reconcile();
    h.deployment_apply("blue").await;
    h.api
        .expect("GET", &format!("{SERVICES}/checkout"))
        .await
        .answer(200, &foreign("Service", "checkout"));
    finished(task).await;
    h.api.silent(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn an_existing_deployment_teal_did_not_make_is_reported_and_never_patched() {
    // The mocked API server holds a `digits-green` Deployment someone else made.
    let mut h = Harness::new(spec("service"), Some(stable()), None);
    h.transition("deploying", "Normal", "Deploying").await;
    let task = h.reconcile();
    h.api
        .expect("GET", &format!("{DEPLOYMENTS}/digits-green"))
        .await
        .answer(200, &foreign("Deployment", "digits-green"));
    let status = h.status_write().await;
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("Deployment default/digits-green exists and teal did not make it"),
        "{status}"
    );
    h.api.expect_event("Warning", "ObjectNotOwned").await;
    finished(task).await;
    h.api.silent(Duration::from_millis(200)).await;
    assert_eq!(
        h.phase(),
        "deploying",
        "the rollout waits; it does not fail"
    );
}

#[tokio::test]
async fn objects_teal_made_are_adopted_by_their_labels_or_owner_reference() {
    // The mocked API server answers the reads with objects teal made before: one carries
    // teal's labels for this resource, the other only its owner reference.
    let mut spec = spec("service");
    spec.as_object_mut().unwrap().remove("green");
    let mut h = Harness::new(spec, None, None);
    let task = h.reconcile();
    let mut labelled = foreign("Deployment", "digits-blue");
    labelled["metadata"]["labels"] =
        json!({"app.kubernetes.io/managed-by": "teal", "teal.dev/model-deployment": "digits"});
    h.api
        .expect("GET", &format!("{DEPLOYMENTS}/digits-blue"))
        .await
        .answer(200, &labelled);
    h.api
        .expect("PATCH", &format!("{DEPLOYMENTS}/digits-blue"))
        .await
        .echo();
    let mut owned = foreign("Service", "digits");
    owned["metadata"]["ownerReferences"] = json!([{"apiVersion": "teal.dev/v1alpha1", "kind": "ModelDeployment", "name": "digits", "uid": "5e1f0c2a-0000-4000-8000-000000000001"}]);
    h.api
        .expect("GET", &format!("{SERVICES}/digits"))
        .await
        .answer(200, &owned);
    // Another resource's Service of the same name would not do: its owner's uid differs.
    for name in ["digits", "digits-blue", "digits-green"] {
        h.service_apply(name).await;
    }
    assert_eq!(h.status_write().await["phase"], "stable");
    h.api.expect_event("Normal", "Deployed").await;
    finished(task).await;
}

#[tokio::test]
async fn the_image_shortcut_runs_with_a_restricted_security_context() {
    let mut spec = spec("service");
    spec.as_object_mut().unwrap().remove("green");
    let mut h = Harness::new(spec, None, None);
    let task = h.reconcile();
    let applied = h.deployment_apply("blue").await;
    let pod = &applied["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"],
        json!({
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // A read-only root still has a writable /tmp.
    assert_eq!(
        container["volumeMounts"],
        json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
    assert_eq!(pod["volumes"], json!([{"name": "tmp", "emptyDir": {}}]));
    task.abort();
}

#[tokio::test]
async fn out_of_range_durations_and_bad_model_names_are_refused_with_the_field_named() {
    for (field, value, named) in [
        (
            "observationSeconds",
            json!(u64::MAX),
            "spec.observationSeconds",
        ),
        ("teardownSeconds", json!(2_592_001), "spec.teardownSeconds"),
        (
            "rollback",
            json!({"checkIntervalSeconds": 18_446_744_073_709_551u64}),
            "spec.rollback.checkIntervalSeconds",
        ),
        ("model", json!("../etc"), "spec.model"),
        (
            "validation",
            json!({"latencySlaMs": -5.0}),
            "validation: latencySlaMs",
        ),
        ("model", json!("a/b"), "spec.model"),
    ] {
        let mut spec = spec("service");
        spec[field] = value;
        let mut h = Harness::new(spec, Some(stable()), None);
        let task = h.reconcile();
        let status = h.status_write().await;
        assert_eq!(status["phase"], "invalid", "{field}");
        let message = status["message"].as_str().unwrap();
        assert!(message.starts_with(named), "{field}: {message}");
        h.api.expect_event("Warning", "InvalidSpec").await;
        assert_eq!(finished(task).await, Action::await_change());
    }
    // A canary step's pause is bounded too, by its index.
    let mut spec = spec("gateway");
    spec["strategy"] = json!({"type": "canary", "steps": [{"weight": 10, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 9_999_999_999u64}]});
    let mut h = Harness::new(spec, Some(stable()), None);
    let task = h.reconcile();
    let status = h.status_write().await;
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.strategy.steps[1].pauseSeconds is 9999999999: at most 2592000"),
        "{status}"
    );
    h.api.expect_event("Warning", "InvalidSpec").await;
    finished(task).await;
}

/// A webhook receiver that exports `business_error_ratio{version="v2"}` at `value`, and a
/// real Prometheus scraping it.
async fn business_metrics(
    value: f64,
) -> (
    Arc<common::checks::Receiver>,
    String,
    common::checks::Prometheus,
) {
    let receiver = Arc::new(common::checks::Receiver::default());
    let base = common::checks::serve_receiver(receiver.clone()).await;
    receiver.business.lock().unwrap().insert("v2".into(), value);
    let prometheus = common::checks::start_prometheus_on(
        &common::temp_dir("operator-prometheus"),
        common::free_port(),
        &[("business", base.trim_start_matches("http://"))],
    )
    .await;
    (receiver, base, prometheus)
}

/// The resource's analyses (a real Prometheus scraping a business-metrics exporter) and
/// webhooks (a receiver of the test's): a `pre_rollout` hook is asked before the Deployment,
/// a query over its threshold fails the gates, and the failure is notified.
#[tokio::test]
async fn a_resource_s_analysis_fails_its_gates_and_its_webhooks_are_called() {
    let (receiver, base, prometheus) = business_metrics(0.5).await;
    let pods = pods("v1", "v2").await;
    let mut spec = spec("service");
    spec["prometheusUrl"] = json!(prometheus.url);
    spec["analysis"] = json!([{
        "name": "business",
        "query": "max(business_error_ratio{model=\"{model}\",version=\"{version}\"})",
        "condition": "< 0.01",
        "consecutive": 1,
        "at": ["gates"],
    }]);
    spec["webhooks"] = json!([
        { "name": "ticket", "url": format!("{base}/hook/ticket"), "on": ["pre_rollout"] },
        { "name": "notify", "url": format!("{base}/hook/notify"), "on": ["failure"] },
    ]);
    let mut h = Harness::new(spec, Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    assert_eq!(
        receiver.calls_of("ticket").len(),
        1,
        "asked once, before the Deployment"
    );
    let task = h.reconcile();
    h.holdout().await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "failed", "{status}");
    let line = status["lastGateReport"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gate"] == "analysis business")
        .cloned()
        .unwrap_or_else(|| panic!("no analysis line: {status}"));
    assert_eq!(line["verdict"], "fail");
    assert_eq!(
        line["reason"],
        "value 0.5, needs < 0.01 (failed 1 in a row)"
    );
    h.service_apply("digits").await;
    h.api.expect_event("Warning", "Failed").await;
    finished(task).await;
    let notified = common::eventually(Duration::from_secs(20), async || {
        !receiver.calls_of("notify").is_empty()
    })
    .await;
    assert!(notified, "no failure notification");
    let (headers, body) = receiver.calls_of("notify").remove(0);
    assert_eq!(headers["x-teal-event"], "failure");
    assert_eq!(body["version"], "v2");
    assert!(
        body["cause"].as_str().unwrap().contains("gates failed"),
        "{body}"
    );
}

/// A `pre_switch` webhook holds the switch: the gates pass, nothing is written while it
/// answers 409, and its 200 lets the switch through.
#[tokio::test]
async fn a_resource_s_confirm_hook_holds_the_switch_until_it_answers_200() {
    let receiver = Arc::new(common::checks::Receiver::default());
    let base = common::checks::serve_receiver(receiver.clone()).await;
    receiver.answer("confirm", 409);
    let pods = pods("v1", "v2").await;
    let mut spec = spec("service");
    spec["webhooks"] = json!([
        { "name": "confirm", "url": format!("{base}/hook/confirm"), "on": ["pre_switch"], "retries": 0, "confirmIntervalSeconds": 5 },
    ]);
    let mut h = Harness::new(spec, Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    let task = h.reconcile();
    h.holdout().await;
    finished(task).await;
    h.api.silent(Duration::from_millis(200)).await;
    assert_eq!(receiver.calls_of("confirm").len(), 1);
    // Not due again yet: not asked, nothing written.
    h.advance(2);
    finished(h.reconcile()).await;
    h.api.silent(Duration::from_millis(200)).await;
    assert_eq!(receiver.calls_of("confirm").len(), 1);
    assert_eq!(h.phase(), "validating");
    receiver.answer("confirm", 200);
    h.advance(4);
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "switching", "{status}");
    assert_eq!(status["lastGateReport"]["verdict"], "pass");
    assert!(
        status["lastTransition"]["cause"]
            .as_str()
            .unwrap()
            .contains("switch confirmed by confirm"),
        "{status}"
    );
    h.service_apply("digits").await;
    h.api.expect_event("Normal", "Switching").await;
    finished(task).await;
    assert_eq!(receiver.calls_of("confirm").len(), 2);
}

#[test]
fn a_resource_s_bad_analysis_or_webhook_is_reported_with_its_field() {
    let problem = |extra: Value| {
        let mut s = spec("service");
        merge(&mut s, &extra);
        serde_json::from_value::<teal::kubernetes::crd::ModelDeploymentSpec>(s)
            .map(|spec| spec.problem().unwrap_or_default())
            .unwrap_or_else(|e| e.to_string())
    };
    let analysis = |condition: &str| json!({"prometheusUrl": "http://prometheus:9090", "analysis": [{"name": "a", "query": "x", "condition": condition}]});
    assert!(problem(analysis("< 0.1")).is_empty());
    assert!(
        problem(analysis("about 0.1"))
            .starts_with("spec.analysis[0].condition: 'about 0.1' is not a condition"),
        "{}",
        problem(analysis("about 0.1"))
    );
    let mut no_url = analysis("< 0.1");
    no_url["prometheusUrl"] = Value::Null;
    assert!(problem(no_url).contains("set spec.prometheusUrl"));
    // A colour's source: a version by number, a store or a URL; never an alias.
    let sourced = |source: &str, sha256: Option<&str>| {
        let mut blue = json!({"version": "v1", "image": "x", "source": source});
        if let Some(pin) = sha256 {
            blue["sha256"] = json!(pin);
        }
        problem(json!({"blue": blue}))
    };
    assert!(sourced("models:/digits/3", None).is_empty());
    assert!(sourced("s3://models/digits/model.onnx", Some(&"0".repeat(64))).is_empty());
    assert!(
        sourced("models:/digits@champion", None)
            .starts_with("spec.blue.source: 'models:/digits@champion' names an alias"),
        "{}",
        sourced("models:/digits@champion", None)
    );
    assert!(sourced("gs://b/k", None).starts_with("spec.blue.source: "));
    assert_eq!(
        sourced("https://h/m.onnx", Some("abc")),
        "spec.blue.sha256: must be 64 hexadecimal digits"
    );
    assert_eq!(
        problem(json!({"blue": {"version": "v1", "image": "x", "sha256": "0".repeat(64)}})),
        "spec.blue.sha256 pins a source's file: set spec.blue.source too"
    );
    assert!(
        problem(json!({"mlflowUri": "mlflow:5000"}))
            .starts_with("spec.mlflowUri: 'mlflow:5000' is not an http")
    );
    // A watched alias: an alias on a tracking server, with colours that fetch their file.
    let watched = |watch: &str, extra: Value| {
        let mut fields = json!({
            "watch": watch,
            "mlflowUri": "http://mlflow:5000",
            "blue": {"version": "d-1", "image": "x", "source": "models:/d/1"},
            "green": {"version": "d-2", "image": "x", "source": "models:/d/2"},
        });
        merge(&mut fields, &extra);
        problem(fields)
    };
    assert_eq!(watched("models:/d@champion", json!({})), "");
    assert!(
        watched("models:/d/3", json!({}))
            .starts_with("spec.watch: 'models:/d/3' is not a registry alias")
    );
    assert!(
        watched("models:/d@champion", json!({"mlflowUri": null})).starts_with(
            "spec.watch: the alias is read from the tracking server: set spec.mlflowUri"
        )
    );
    assert!(
        watched("models:/d@champion", json!({"green": {"source": null}}))
            .starts_with("spec.green.source is absent: with spec.watch")
    );
    assert_eq!(
        watched("models:/d@champion", json!({"watchIntervalSeconds": 0})),
        "spec.watchIntervalSeconds is 0: at least 1"
    );
    assert_eq!(
        watched(
            "models:/d@champion",
            json!({"watchIntervalSeconds": 2_592_001})
        ),
        "spec.watchIntervalSeconds is 2592001: at most 2592000 (30 days)"
    );
    let hook = json!({"webhooks": [{"name": "h", "url": "ftp://x/y", "on": ["rollback"]}]});
    assert!(problem(hook).starts_with("spec.webhooks[0].url: 'ftp://x/y' is not an http"),);
    let unknown = json!({"webhooks": [{"name": "h", "url": "http://x/", "on": ["later"]}]});
    assert!(problem(unknown).contains("unknown variant `later`"));
}

/// A resource's analysis of the bake: measured with each rollback check, two failures in a
/// row roll the candidate back.
#[tokio::test]
async fn a_resource_s_bake_analysis_rolls_back_after_its_failures_in_a_row() {
    let (_receiver, _, prometheus) = business_metrics(0.5).await;
    let pods = pods("v1", "v2").await;
    let mut spec = spec("service");
    spec["prometheusUrl"] = json!(prometheus.url);
    spec["analysis"] = json!([{
        "name": "business",
        "query": "max(business_error_ratio{version=\"{version}\"})",
        "condition": "< 0.01",
        "consecutive": 2,
        "intervalSeconds": 5,
        "at": ["bake"],
    }]);
    let mut h = Harness::new(spec, Some(stable()), Some(&pods));
    to_validating(&mut h).await;
    to_observing(&mut h, true).await;
    let task = h.check_after(10).await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "observing", "{status}");
    assert_eq!(
        status["rollout"]["strikes"]["analysis"]["business"], 1,
        "{status}"
    );
    let shown = status["rollout"]["last_check"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["rule"] == "analysis")
        .cloned()
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(shown["detail"], "business: value 0.5, needs < 0.01");
    finished(task).await;
    h.api.silent(Duration::from_millis(100)).await;
    let task = h.check_after(10).await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "rolled_back", "{status}");
    assert_eq!(
        status["rollout"]["outcome"],
        "analysis: business: value 0.5, needs < 0.01 (failed 2 checks in a row)"
    );
    h.service_apply("digits").await;
    h.api.expect_event("Warning", "RolledBack").await;
    finished(task).await;
}

/// A resource that follows a registry alias on a real MLflow tracking server: blue live with
/// version 1 of digits, the alias at 1.
async fn watching(dir: &std::path::Path) -> (common::mlflow::Mlflow, Harness) {
    use common::mlflow::{registry, set_alias, start_mlflow};
    let mlflow = start_mlflow(dir).await;
    let versions = registry(
        &mlflow,
        &[
            &["onnx", "digits", "models/digits/v1/model.onnx"],
            &["onnx", "digits", "models/digits/v2/model.onnx"],
        ],
    );
    assert_eq!(versions, "1 2");
    set_alias(&mlflow, "digits", "champion", 1).await;
    let mut spec = spec("service");
    spec["blue"] = json!({"version": "digits-1", "image": "registry.example/onnx-server:1", "source": "models:/digits/1"});
    spec.as_object_mut().unwrap().remove("green");
    spec["watch"] = json!("models:/digits@champion");
    spec["mlflowUri"] = json!(mlflow.uri);
    let mut status = stable();
    status["activeVersion"] = json!("digits-1");
    status["versions"] = json!({"blue": "digits-1"});
    let h = Harness::new(spec, Some(status), None);
    (mlflow, h)
}

/// A reconcile between rollouts: the live colour's Deployment is applied as the spec says,
/// and the reconcile asks to come back after `requeue`.
async fn between_rollouts(h: &mut Harness, requeue: u64) {
    let task = h.reconcile();
    h.deployment_apply("blue").await;
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(requeue))
    );
    h.api.silent(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_watched_alias_rolls_the_version_out_through_the_idle_colour_and_moving_it_back_aborts()
 {
    let (mlflow, mut h) = watching(&common::temp_dir("mlflow")).await;

    // The alias names the live version: it is noted, nothing is rolled out, and the
    // resource is looked at again after the watch interval (30 s by default).
    let task = h.reconcile();
    h.deployment_apply("blue").await;
    let status = h.status_write().await;
    assert_eq!(status["aliasVersion"], "digits-1", "{status}");
    assert_eq!(status["phase"], "stable");
    assert_eq!(
        finished(task).await,
        Action::requeue(Duration::from_secs(30))
    );

    // The alias moves to 2. It is read again only when the interval has passed.
    common::mlflow::set_alias(&mlflow, "digits", "champion", 2).await;
    between_rollouts(&mut h, 30).await;
    h.advance(30);
    let task = h.reconcile();
    // The idle colour is written whole: the live colour's pods with version 2's file,
    // guarded by the resource version read.
    let seen = h.api.expect("PATCH", RESOURCE).await;
    assert_eq!(seen.content_type, "application/json-patch+json");
    assert_eq!(
        seen.body,
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": h.resource_version.to_string()},
            {"op": "add", "path": "/spec/green", "value": {"version": "digits-2", "image": "registry.example/onnx-server:1", "source": "models:/digits/2"}},
        ])
    );
    h.colour_written(seen, 2);
    h.api.expect_event("Normal", "AliasMoved").await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "deploying", "{status}");
    assert_eq!(status["candidateColour"], "green");
    assert_eq!(status["candidateVersion"], "digits-2");
    assert_eq!(status["aliasVersion"], "digits-2");
    assert_eq!(status["versions"]["green"], "digits-2");
    h.api.expect_event("Normal", "Deploying").await;
    finished(task).await;

    // The candidate's pods fetch version 2 by its number.
    let task = h.reconcile();
    let applied = h.deployment_apply("green").await;
    let init = &applied["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["name"], "teal-fetch");
    assert_eq!(init["args"][1], "models:/digits/2", "{init}");
    assert_eq!(
        applied["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/onnx-server:1"
    );
    assert_eq!(h.status_write().await["phase"], "warming_up");
    h.api.expect_event("Normal", "WarmingUp").await;
    finished(task).await;

    // The alias moves back to the live version before the switch: the rollout is aborted by
    // the watch, blue stays live.
    common::mlflow::set_alias(&mlflow, "digits", "champion", 1).await;
    h.advance(30);
    let task = h.reconcile();
    let status = h.status_write().await;
    assert_eq!(status["phase"], "aborted", "{status}");
    assert_eq!(
        status["lastTransition"]["actor"],
        "watch models:/digits@champion"
    );
    assert_eq!(status["route"]["active"], "blue");
    h.service_apply("digits").await;
    h.api.expect_event("Warning", "Aborted").await;
    finished(task).await;

    // Back on the live version, the alias is noted again and nothing starts; moved to 2
    // again, 2 is rolled out again.
    h.advance(30);
    let task = h.reconcile();
    h.deployment_apply("blue").await;
    assert_eq!(h.status_write().await["aliasVersion"], "digits-1");
    finished(task).await;
    common::mlflow::set_alias(&mlflow, "digits", "champion", 2).await;
    h.advance(30);
    let task = h.reconcile();
    let seen = h.api.expect("PATCH", RESOURCE).await;
    assert_eq!(seen.body[1]["value"]["version"], "digits-2");
    h.colour_written(seen, 3);
    h.api.expect_event("Normal", "AliasMoved").await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "deploying", "{status}");
    assert_eq!(status["candidateVersion"], "digits-2");
    h.api.expect_event("Normal", "Deploying").await;
    finished(task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_alias_is_said_once_and_the_live_version_keeps_serving() {
    let (_mlflow, mut h) = watching(&common::temp_dir("mlflow")).await;
    let mut object = serde_json::to_value(&h.md).unwrap();
    object["spec"]["watch"] = json!("models:/digits@nobody");
    h.md = serde_json::from_value(object).unwrap();
    let task = h.reconcile();
    let seen = h.api.expect_event("Warning", "AliasUnreadable").await;
    let note = seen["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("models:/digits@nobody cannot be read")
            && note.contains("digits-1 keeps serving"),
        "{note}"
    );
    h.deployment_apply("blue").await;
    let status = h.status_write().await;
    assert_eq!(status["phase"], "stable");
    assert!(status.get("aliasVersion").is_none(), "{status}");
    finished(task).await;
    // Read again after the interval, with the same reason: not said again.
    h.advance(30);
    between_rollouts(&mut h, 30).await;
}
