//! The `ModelDeployment` custom resource: one model, two colours (blue and green), each a
//! Deployment running one version, and the rollout between them.
//!
//! The spec follows the familiar blue-green controller shape (active and preview Services,
//! auto-promotion with a delay, scale-down after a window); the status carries the rollout's
//! phase, the live colour, the route gateways follow, conditions, the last transition and
//! the last gate report. The CRD YAML under `deploy/` is generated from these types
//! (`teal operator --print-crd`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use teal_core::gates::GateConfig;
use teal_core::rollout::{CanaryStep, Evidence, RollbackRules, RolloutSettings, Stage, Strategy};
use teal_core::routing::Color;

/// A model served by two colours of pods, and how a new version replaces the live one.
// Each printer column repeats `type_ = "string"`, which the lint takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "teal.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    namespaced,
    status = "ModelDeploymentStatus",
    shortname = "mdep",
    category = "teal",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeColour"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.activeVersion"
    ),
    printcolumn(
        name = "Candidate",
        type_ = "string",
        json_path = ".status.candidateVersion"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelDeploymentSpec {
    /// The model's name on the Open Inference Protocol (`/v2/models/{model}`).
    pub model: String,
    /// Pods per colour.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// The container port the model server listens on (V2 REST).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The pod template both colours start from; a colour's own template replaces it, and a
    /// colour's image replaces the first container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub template: Option<PodTemplateSpec>,
    /// The blue colour's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue: Option<ColourSpec>,
    /// The green colour's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub green: Option<ColourSpec>,
    /// The Service clients use; in `service` mode the operator points its selector at the
    /// live colour. Default: the resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_service: Option<String>,
    /// A Service that selects the candidate during a rollout, for testing it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// How traffic moves: `service` patches the active Service's selector; `gateway` updates
    /// this resource's status, which teal gateways (`teal serve --kubernetes`) follow per
    /// request.
    #[serde(default)]
    pub switch_mode: SwitchMode,
    #[serde(default)]
    pub strategy: StrategySpec,
    /// Switch by itself once the gates pass; otherwise wait for approval
    /// (`kubectl annotate mdep NAME teal.dev/promote=VERSION`).
    #[serde(default = "yes")]
    pub auto_switch: bool,
    /// Seconds between the gates passing and an automatic switch (at most 30 days, as every
    /// duration here).
    #[serde(default)]
    #[schemars(range(max = 2_592_000))]
    pub switch_delay_seconds: u64,
    /// Seconds the new live version is watched, with automatic rollback armed.
    #[serde(default = "five_minutes")]
    #[schemars(range(max = 2_592_000))]
    pub observation_seconds: u64,
    /// Seconds the old colour stays up after the observation, for an instant rollback,
    /// before it is scaled to zero.
    #[serde(default = "ten_minutes")]
    #[schemars(range(max = 2_592_000))]
    pub teardown_seconds: u64,
    /// Seconds a colour's pods may take to become ready.
    #[serde(default = "ten_minutes")]
    #[schemars(range(max = 2_592_000))]
    pub ready_timeout_seconds: u64,
    #[serde(default)]
    pub validation: ValidationSpec,
    #[serde(default)]
    pub rollback: RollbackSpec,
    /// The MLflow tracking server that colours' `models:/` sources name, as the pods reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_uri: Option<String>,
    /// A registry alias to follow, `models:/NAME@ALIAS` on `mlflowUri`: when it moves to
    /// another version than the live one, the operator writes that version into the idle
    /// colour (the live colour's image and template, `source: models:/NAME/N`, version
    /// `NAME-N`) and rolls it out; when it moves back to the version being replaced during
    /// that rollout, the rollout is stopped. The operator itself reads the alias, with
    /// `MLFLOW_TRACKING_TOKEN` from its own environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
    /// Seconds between two readings of the watched alias.
    #[serde(default = "thirty")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub watch_interval_seconds: u64,
    /// A Secret whose keys the fetching init container gets as environment variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`,
    /// `MLFLOW_TRACKING_TOKEN`, ...). The model server's containers do not get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_secret: Option<String>,
    /// The Prometheus server the analyses query (its HTTP API), like
    /// `http://prometheus.monitoring:9090`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
    /// PromQL queries judged at the gates, through canary steps and through the bake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<AnalysisSpec>,
    /// Endpoints called at the rollout's points.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,
}

/// A PromQL instant query and the condition every series of its result must meet
/// (`[[model.rollout.analysis]]` in a config file). `{model}`, `{version}`, `{slot}` and
/// `{old_version}` are the candidate's. No data, a NaN or an error is inconclusive.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub query: String,
    /// An operator and a number: `< 0.01`, `>= 0.95`.
    pub condition: String,
    /// Seconds between measurements (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400))]
    pub interval_seconds: Option<u64>,
    /// Where it is judged (default all three).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at: Vec<AnalysisStage>,
    /// Failing measurements in a row before it fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub consecutive: Option<u32>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisStage {
    Gates,
    Canary,
    Bake,
}

/// A POST at the rollout's points (`[[model.rollout.webhook]]` in a config file).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookSpec {
    #[schemars(length(min = 1))]
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// `pre_rollout` (a non-2xx stops the rollout), `pre_switch` (the switch waits for a
    /// 200), and the notifications `canary_step`, `post_rollout`, `rollback`, `abort`,
    /// `failure`.
    pub on: Vec<HookPoint>,
    /// Seconds one call may take (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: Option<u64>,
    /// Calls after the first when one fails (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10))]
    pub retries: Option<u32>,
    /// An environment variable of the operator's pod (from a Secret) holding the HMAC-SHA256
    /// key the body is signed with (`x-teal-signature-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `json` (default) or `slack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<HookBody>,
    /// `pre_switch`: seconds to wait for a 200 before waiting for approval (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub confirm_timeout_seconds: Option<u64>,
    /// `pre_switch`: seconds between asks (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3_600))]
    pub confirm_interval_seconds: Option<u64>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HookPoint {
    PreRollout,
    PreSwitch,
    CanaryStep,
    PostRollout,
    Rollback,
    Abort,
    Failure,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HookBody {
    Json,
    Slack,
}

impl AnalysisSpec {
    /// The analysis the state machine judges (a condition that does not parse is reported
    /// by `problem` before this is used).
    fn analysis(&self) -> teal_core::rollout::Analysis {
        teal_core::rollout::Analysis {
            name: self.name.clone(),
            query: self.query.clone(),
            condition: self
                .condition
                .parse()
                .unwrap_or(teal_core::rollout::Condition {
                    op: teal_core::rollout::Op::Lt,
                    value: f64::NEG_INFINITY,
                }),
            interval_ms: ms(self.interval_seconds.unwrap_or(30)),
            at: match self.at.is_empty() {
                true => vec![Stage::Gates, Stage::Canary, Stage::Bake],
                false => self
                    .at
                    .iter()
                    .map(|a| match a {
                        AnalysisStage::Gates => Stage::Gates,
                        AnalysisStage::Canary => Stage::Canary,
                        AnalysisStage::Bake => Stage::Bake,
                    })
                    .collect(),
            },
            consecutive: self.consecutive.unwrap_or(3),
        }
    }
}

impl WebhookSpec {
    fn webhook(&self) -> teal_core::rollout::Webhook {
        use teal_core::rollout::HookEvent as E;
        teal_core::rollout::Webhook {
            name: self.name.clone(),
            url: self.url.clone(),
            on: self
                .on
                .iter()
                .map(|p| match p {
                    HookPoint::PreRollout => E::PreRollout,
                    HookPoint::PreSwitch => E::PreSwitch,
                    HookPoint::CanaryStep => E::CanaryStep,
                    HookPoint::PostRollout => E::PostRollout,
                    HookPoint::Rollback => E::Rollback,
                    HookPoint::Abort => E::Abort,
                    HookPoint::Failure => E::Failure,
                })
                .collect(),
            timeout_ms: ms(self.timeout_seconds.unwrap_or(10)),
            retries: self.retries.unwrap_or(3),
            secret_env: self.secret_env.clone(),
            format: match self.format {
                Some(HookBody::Slack) => teal_core::rollout::HookFormat::Slack,
                _ => teal_core::rollout::HookFormat::Json,
            },
            confirm_timeout_ms: ms(self.confirm_timeout_seconds.unwrap_or(3_600)),
            confirm_interval_ms: ms(self.confirm_interval_seconds.unwrap_or(5)),
        }
    }
}

/// One colour: a version and how its pods differ from the shared template.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ColourSpec {
    /// The version's name, reported in `x-teal-version` by gateways.
    #[schemars(length(min = 1))]
    pub version: String,
    /// The model server's image for this colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// A whole pod template for this colour, in place of the shared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub template: Option<PodTemplateSpec>,
    /// Where this version's model file comes from: `models:/NAME/VERSION` (a registry
    /// version by number: every pod must get the same file), `s3://BUCKET/KEY` or an
    /// http(s) URL. An init container (`teal fetch`, in the operator's image) downloads and
    /// checks it into `/mnt/models/model.onnx` before the model server starts; every
    /// container sees it there, read-only, and in `TEAL_MODEL_FILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The SHA-256 (hex) the source's file must have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SwitchMode {
    #[default]
    Service,
    Gateway,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StrategyKind {
    #[default]
    BlueGreen,
    Canary,
    ShadowThenSwitch,
}

/// How the candidate reaches traffic. Canary and shadow need `switchMode: gateway`: a
/// Service selector cannot split or mirror requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategySpec {
    #[serde(default, rename = "type")]
    pub kind: StrategyKind,
    /// Canary steps, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStepSpec>,
    /// Shadow-then-switch: seconds of mirrored traffic before the gates judge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2_592_000))]
    pub shadow_seconds: Option<u64>,
    /// Shadow-then-switch: percent of live requests mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_percent: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStepSpec {
    /// Percent of new requests for the candidate.
    #[schemars(range(min = 0, max = 100))]
    pub weight: f64,
    /// Seconds the step holds; absent waits for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2_592_000))]
    pub pause_seconds: Option<u64>,
    /// Run the gates again at the end of the step.
    #[serde(default)]
    pub gates: bool,
}

/// The gates run against the candidate before it takes traffic.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidationSpec {
    /// A labelled holdout in a ConfigMap, sent to both colours: JSON lines
    /// `{"features": [...], "label": n}`, or CSV (key ending `.csv`) with the label last.
    /// Without it only health and schema are checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holdout: Option<ConfigMapKey>,
    /// Fewer observations than this make a gate inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// Share of requests on which both colours must agree (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    /// Largest normed Wasserstein distance between the colours' score distributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift: Option<f64>,
    /// The candidate's p95 latency must be under this many milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_sla_ms: Option<f64>,
    /// The candidate's p95 may be at most this multiple of the live colour's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_ratio: Option<f64>,
    /// Largest share of failed requests on the candidate (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// How much holdout accuracy the candidate may lose against the live colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_tolerance: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapKey {
    pub config_map: String,
    pub key: String,
}

/// When an observed candidate is rolled back: each rule acts after `consecutive` failing
/// checks in a row. Each check sends `probeRequests` holdout rows to both colours.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2_592_000))]
    pub check_interval_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_requests: Option<u32>,
}

/// Where the resource stands.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// `stable`, `invalid`, or the rollout's phase (`deploying`, `warming_up`, `validating`,
    /// `awaiting_approval`, `switch_delay`, `canary`, `observing`, `promoted`,
    /// `tearing_down`, `torn_down`, `rolled_back`, `failed`, ...).
    #[serde(default)]
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_colour: Option<Colour>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_colour: Option<Colour>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_version: Option<String>,
    /// The route gateways follow: the live colour, the candidate's share and the mirrored
    /// share, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteStatus>,
    /// Percent of new requests per colour.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<String, f64>,
    /// The colour the active Service selects, as last applied (`service` mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_colour: Option<Colour>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition: Option<TransitionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_gate_report: Option<GateReportSummary>,
    /// The version each colour last ran. A rollout starts when the idle colour's spec names
    /// another; a version that failed or was rolled back is not tried again until then.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, String>,
    /// The version the watched alias named when the operator last read it (`NAME-N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias_version: Option<String>,
    /// Why the resource is `invalid`, or what the operator waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The rollout's whole state, so any operator replica resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub rollout: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Blue,
    Green,
}

impl From<Color> for Colour {
    fn from(c: Color) -> Colour {
        match c {
            Color::Blue => Colour::Blue,
            Color::Green => Colour::Green,
        }
    }
}

impl From<Colour> for Color {
    fn from(c: Colour) -> Color {
        match c {
            Colour::Blue => Color::Blue,
            Colour::Green => Color::Green,
        }
    }
}

impl Colour {
    pub fn name(self) -> &'static str {
        match self {
            Colour::Blue => "blue",
            Colour::Green => "green",
        }
    }

    pub fn other(self) -> Colour {
        match self {
            Colour::Blue => Colour::Green,
            Colour::Green => Colour::Blue,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    pub active: Colour,
    pub candidate_percent: f64,
    pub shadow_percent: f64,
}

/// A condition, as `metav1.Condition` has it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TransitionStatus {
    pub from: String,
    pub to: String,
    pub cause: String,
    pub actor: String,
    pub time: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateReportSummary {
    pub verdict: String,
    pub candidate_version: String,
    pub samples: u64,
    pub gates: Vec<GateLine>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GateLine {
    pub gate: String,
    pub verdict: String,
    pub reason: String,
}

/// The longest any duration field may be, in seconds: 30 days. Far past any rollout's
/// windows, and far from overflowing when turned into milliseconds.
pub const MAX_SECONDS: u64 = 30 * 86_400;

/// Seconds as milliseconds, saturating: a spec is checked against [`MAX_SECONDS`] before it
/// runs, and a value past it must never wrap into a short one.
fn ms(seconds: u64) -> u64 {
    seconds.saturating_mul(1000)
}

fn one() -> i32 {
    1
}

fn default_port() -> i32 {
    8080
}

fn yes() -> bool {
    true
}

fn thirty() -> u64 {
    30
}

fn five_minutes() -> u64 {
    300
}

fn ten_minutes() -> u64 {
    600
}

/// An object kept as written (pod templates, the rollout state): Kubernetes checks pod
/// templates when the Deployment is written; repeating their schema here would make the CRD
/// megabytes long.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl ColourSpec {
    /// What is wrong with the colour's `source` and `sha256`, as a sentence naming the field.
    fn source_problem(&self, c: Colour) -> Option<String> {
        let field = format!("spec.{}", c.name());
        let Some(source) = &self.source else {
            return self
                .sha256
                .as_ref()
                .map(|_| format!("{field}.sha256 pins a source's file: set {field}.source too"));
        };
        match teal_core::source::Source::parse(source) {
            Err(reason) => return Some(format!("{field}.source: {reason}")),
            Ok(teal_core::source::Source::Registry {
                at: teal_core::source::RegistryRef::Alias(_),
                ..
            }) => {
                return Some(format!(
                    "{field}.source: '{source}' names an alias, which each pod would resolve for itself (and the alias may move between two): name the version, models:/NAME/VERSION"
                ));
            }
            Ok(_) => {}
        }
        match &self.sha256 {
            Some(pin) if !(pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit())) => {
                Some(format!("{field}.sha256: must be 64 hexadecimal digits"))
            }
            _ => None,
        }
    }
}

impl ModelDeploymentSpec {
    /// The spec's colour `c`.
    pub fn colour(&self, c: Colour) -> Option<&ColourSpec> {
        match c {
            Colour::Blue => self.blue.as_ref(),
            Colour::Green => self.green.as_ref(),
        }
    }

    /// The registered model and alias `spec.watch` follows, when it names one.
    pub fn watched(&self) -> Option<(String, String)> {
        match teal_core::source::Source::parse(self.watch.as_deref()?) {
            Ok(teal_core::source::Source::Registry {
                name,
                at: teal_core::source::RegistryRef::Alias(alias),
            }) => Some((name, alias)),
            _ => None,
        }
    }

    /// What is wrong with `spec.watch`, as a sentence naming the field.
    fn watch_problem(&self) -> Option<String> {
        let watch = self.watch.as_ref()?;
        if self.watched().is_none() {
            return Some(format!(
                "spec.watch: '{watch}' is not a registry alias: name one as models:/NAME@ALIAS"
            ));
        }
        if self.watch_interval_seconds == 0 {
            return Some("spec.watchIntervalSeconds is 0: at least 1".into());
        }
        if self.mlflow_uri.is_none() {
            return Some("spec.watch: the alias is read from the tracking server: set spec.mlflowUri, like http://mlflow.mlops:5000".into());
        }
        for c in [Colour::Blue, Colour::Green] {
            if let Some(colour) = self.colour(c)
                && colour.source.is_none()
            {
                return Some(format!(
                    "spec.{}.source is absent: with spec.watch each colour's model file comes from the registry, so its pods can run the version the alias names; give it one, like models:/NAME/VERSION",
                    c.name()
                ));
            }
        }
        None
    }

    /// What is wrong with the spec, if anything, as a sentence naming the field.
    pub fn problem(&self) -> Option<String> {
        if self.model.is_empty() {
            return Some("spec.model is empty: name the model as clients ask for it".into());
        }
        if !teal_core::config::valid_name(&self.model) {
            return Some(format!(
                "spec.model '{}' is not a valid model name: use up to 128 letters, digits, '-', '_' and '.', not starting with '.'",
                self.model.escape_debug()
            ));
        }
        for (field, seconds) in self.durations() {
            if seconds > MAX_SECONDS {
                return Some(format!(
                    "{field} is {seconds}: at most {MAX_SECONDS} (30 days)"
                ));
            }
        }
        if self.blue.is_none() && self.green.is_none() {
            return Some(
                "spec.blue and spec.green are both absent: give at least one colour a version"
                    .into(),
            );
        }
        for c in [Colour::Blue, Colour::Green] {
            if let Some(problem) = self.colour(c).and_then(|colour| colour.source_problem(c)) {
                return Some(problem);
            }
        }
        if let Some(uri) = &self.mlflow_uri
            && !teal_core::rollout::http_url(uri)
        {
            return Some(format!(
                "spec.mlflowUri: '{uri}' is not an http:// or https:// URL"
            ));
        }
        if let Some(problem) = self.watch_problem() {
            return Some(problem);
        }
        for c in [Colour::Blue, Colour::Green] {
            if let Some(colour) = self.colour(c)
                && colour.image.is_none()
                && colour.template.is_none()
                && self.template.is_none()
            {
                return Some(format!(
                    "spec.{} has no image or template, and spec.template is absent: say what the pods run",
                    c.name()
                ));
            }
        }
        if self.switch_mode == SwitchMode::Service && self.strategy.kind != StrategyKind::BlueGreen
        {
            return Some(format!(
                "strategy {:?} needs switchMode: gateway; a Service selector cannot split or mirror requests",
                self.strategy.kind
            ));
        }
        if self.strategy.kind == StrategyKind::Canary && self.strategy.steps.is_empty() {
            return Some("strategy.steps is empty: a canary needs at least one step, like {weight: 10, pauseSeconds: 60}".into());
        }
        for (i, a) in self.analysis.iter().enumerate() {
            if let Err(reason) = a.condition.parse::<teal_core::rollout::Condition>() {
                return Some(format!("spec.analysis[{i}].condition: {reason}"));
            }
        }
        if !self.analysis.is_empty() && self.prometheus_url.is_none() {
            return Some("spec.analysis: analyses query Prometheus: set spec.prometheusUrl, like http://prometheus.monitoring:9090".into());
        }
        if let Some(url) = &self.prometheus_url
            && !teal_core::rollout::http_url(url)
        {
            return Some(format!(
                "spec.prometheusUrl: '{url}' is not an http:// or https:// URL"
            ));
        }
        if let Err((field, reason)) = self.settings().validate() {
            // The checks' fields by their names in the resource.
            let field = match field.strip_prefix("webhook[") {
                Some(rest) => format!("spec.webhooks[{rest}"),
                None if field.starts_with("analysis[") => format!("spec.{field}"),
                None => field,
            };
            return Some(format!("{field}: {reason}"));
        }
        if let Err(reason) = check_gates(&self.gates()) {
            return Some(format!("validation: {reason}"));
        }
        None
    }

    /// Every duration field with its value, for the bound check.
    fn durations(&self) -> Vec<(String, u64)> {
        let mut all = vec![
            (
                "spec.switchDelaySeconds".to_string(),
                self.switch_delay_seconds,
            ),
            (
                "spec.observationSeconds".to_string(),
                self.observation_seconds,
            ),
            ("spec.teardownSeconds".to_string(), self.teardown_seconds),
            (
                "spec.watchIntervalSeconds".to_string(),
                self.watch_interval_seconds,
            ),
            (
                "spec.readyTimeoutSeconds".to_string(),
                self.ready_timeout_seconds,
            ),
        ];
        if let Some(s) = self.strategy.shadow_seconds {
            all.push(("spec.strategy.shadowSeconds".into(), s));
        }
        for (i, step) in self.strategy.steps.iter().enumerate() {
            if let Some(s) = step.pause_seconds {
                all.push((format!("spec.strategy.steps[{i}].pauseSeconds"), s));
            }
        }
        if let Some(s) = self.rollback.check_interval_seconds {
            all.push(("spec.rollback.checkIntervalSeconds".into(), s));
        }
        all
    }

    /// The rollout settings the shared state machine runs with.
    pub fn settings(&self) -> RolloutSettings {
        let strategy = match self.strategy.kind {
            StrategyKind::BlueGreen => Strategy::BlueGreen,
            StrategyKind::Canary => Strategy::Canary {
                steps: self
                    .strategy
                    .steps
                    .iter()
                    .map(|s| CanaryStep {
                        percent: s.weight,
                        pause_ms: s.pause_seconds.map(ms),
                        gates: s.gates,
                    })
                    .collect(),
            },
            StrategyKind::ShadowThenSwitch => Strategy::ShadowThenSwitch {
                window_ms: ms(self.strategy.shadow_seconds.unwrap_or(300)),
                percent: self.strategy.shadow_percent.unwrap_or(100.0),
            },
        };
        let defaults = RollbackRules::default();
        let r = &self.rollback;
        RolloutSettings {
            strategy,
            auto_switch: self.auto_switch,
            switch_delay_ms: ms(self.switch_delay_seconds),
            observe_ms: ms(self.observation_seconds),
            keep_warm_ms: ms(self.teardown_seconds),
            abort_removes_green: false,
            evidence: self
                .validation
                .holdout
                .as_ref()
                .map(|h| Evidence::Holdout(h.key.clone().into())),
            rules: RollbackRules {
                latency_ratio: r.latency_ratio.unwrap_or(defaults.latency_ratio),
                max_error_rate: r.max_error_rate.unwrap_or(defaults.max_error_rate),
                consecutive: r.consecutive.unwrap_or(defaults.consecutive),
                min_requests: u64::from(r.probe_requests.unwrap_or(20)).min(defaults.min_requests),
                check_interval_ms: ms(r.check_interval_seconds.unwrap_or(10)),
                // The operator's checks send holdout probes to both colours at once: those
                // are its pairs. Live requests reach the pods through their Services, not
                // through teal, so there is no live share to pair and no failover.
                baseline_share: 0.0,
                ..defaults
            },
            failover: false,
            analysis: self.analysis.iter().map(AnalysisSpec::analysis).collect(),
            webhook: self.webhooks.iter().map(WebhookSpec::webhook).collect(),
            // No commands from a resource: a smoke test is a config file's only.
            smoke_test: Vec::new(),
            ..RolloutSettings::default()
        }
    }

    /// The gate thresholds.
    pub fn gates(&self) -> GateConfig {
        let d = GateConfig::default();
        let v = &self.validation;
        GateConfig {
            min_samples: v.min_samples.map_or(d.min_samples, |n| n as usize),
            agreement: v.agreement.unwrap_or(d.agreement),
            max_drift: v.max_drift.unwrap_or(d.max_drift),
            latency_sla_ms: v.latency_sla_ms.or(d.latency_sla_ms),
            max_latency_ratio: v.max_latency_ratio.unwrap_or(d.max_latency_ratio),
            max_error_rate: v.max_error_rate.unwrap_or(d.max_error_rate),
            accuracy_tolerance: v.accuracy_tolerance.unwrap_or(d.accuracy_tolerance),
            ..d
        }
    }
}

fn check_gates(g: &GateConfig) -> Result<(), String> {
    let share = |name: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("{name} must be between 0 and 1, not {v}"))
        }
    };
    share("agreement", g.agreement)?;
    share("maxErrorRate", g.max_error_rate)?;
    share("accuracyTolerance", g.accuracy_tolerance)?;
    if let Some(sla) = g.latency_sla_ms
        && !(sla > 0.0 && sla <= (MAX_SECONDS * 1000) as f64)
    {
        return Err(format!(
            "latencySlaMs must be more than 0 and at most {} (30 days), not {sla}",
            MAX_SECONDS * 1000
        ));
    }
    if g.max_drift.is_nan() || g.max_drift < 0.0 {
        return Err(format!("maxDrift must be at least 0, not {}", g.max_drift));
    }
    if g.max_latency_ratio.is_nan() || g.max_latency_ratio < 1.0 {
        return Err(format!(
            "maxLatencyRatio must be at least 1, not {}",
            g.max_latency_ratio
        ));
    }
    Ok(())
}
