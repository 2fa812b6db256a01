//! `teal operator`: reconciles `ModelDeployment` resources with the same rollout state
//! machine and gates `teal serve` uses.
//!
//! Each reconcile does at most one step: it looks at the world for the phase the rollout
//! stands in (is the candidate's Deployment ready? what do the gates say? is a check due?),
//! steps the pure state machine with that event, writes the new state into the resource's
//! status (with the resource version it read, so a stale writer gets a 409 and retries), and
//! only then acts: Kubernetes Events for the transition, the Service selector in `service`
//! mode, scaling a colour to zero. Gateways in `gateway` mode follow `status.route`, which
//! the status write itself publishes. A restarted operator resumes from the status.
//!
//! - [`reconcile`](fn@reconcile): the loop itself: observe, step, write the status, act.
//! - `commands`: what people ask of a rollout, by annotation or by naming a new version.
//! - `observe`: the world as the phase needs it: Deployment readiness, the gates run against
//!   the colours' Services, the rollback checks.
//! - `status`: the resource's status, folded from each step and written guarded.
//! - `objects`: the Deployments and Services the operator owns, their names and selectors.
//! - `events`: the Kubernetes Events that tell people what happened.
//!
//! Nothing here waits inside the process for another task: the controller's watches on the
//! resources and the Deployments and Services they own are the events that start a
//! reconcile, and a reconcile that waits on a timer (a phase deadline, the next rollback
//! check) asks the controller to requeue it then.

mod alias;
mod commands;
mod events;
mod objects;
mod observe;
mod reconcile;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::crd::ModelDeployment;

pub use objects::{
    active_service, colour_service, deployment, deployment_name, namespace, service,
};
pub use reconcile::reconcile;

/// The finalizer the operator puts on each resource it manages, so that a deletion waits
/// until the operator has said, in an Event, what became of a rollout in progress.
pub const FINALIZER: &str = "teal.dev/cleanup";
/// Who writes the objects (server-side apply's field manager): the fields the operator owns
/// are the ones it may force, and nobody else's.
pub const MANAGER: &str = "teal-operator";
/// The annotation that approves a waiting switch or a manual canary step, naming the
/// candidate version: `kubectl annotate mdep digits teal.dev/promote=v2`. It names the
/// version so that an approval meant for one rollout cannot promote a later one.
pub const PROMOTE: &str = "teal.dev/promote";
/// The annotation that rolls the candidate back (or aborts it before the switch), naming
/// its version, for the same reason as [`PROMOTE`].
pub const ROLLBACK: &str = "teal.dev/rollback";

/// Why a reconcile did not finish; [`error_policy`] picks how soon the controller retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("someone else changed {0} first; reading it again")]
    Conflict(String),
    #[error("a patch could not be encoded: {0}")]
    Encode(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// An object the resource names exists, and teal did not make it: nothing was written
    /// to it, and the resource's status says so.
    #[error("{0}")]
    NotOurs(String),
}

/// How the operator reaches a Service's pods (in the cluster, by its DNS name); a parameter
/// so that tests point it at model servers on the loopback.
pub type ServiceUrl = Arc<dyn Fn(&str, &str, i32) -> String + Send + Sync>;
/// Milliseconds since the epoch; a parameter so tests drive time.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What every reconcile shares: the client, and the little this process remembers between
/// reconciles (everything that must survive a restart is in the resource's status).
pub struct Context {
    /// The API every read and write goes through.
    pub client: Client,
    /// Who publishes the Events (the operator and its replica).
    pub reporter: Reporter,
    /// How gates and checks reach a colour's Service.
    pub service_url: ServiceUrl,
    /// The time steps and status timestamps use.
    pub clock: Clock,
    /// How long gates and checks wait for a Service's pods to answer ready.
    pub connect_wait: Duration,
    /// Prometheus and webhooks, for the resources' analyses and webhooks.
    pub checks: Arc<crate::control::checks::Checks>,
    /// Per resource (by uid): whether this process already re-applied its route, and when
    /// the last rollback check ran.
    memory: Mutex<HashMap<String, Memory>>,
}

/// What this process knows of one resource that its status does not say.
#[derive(Default, Clone)]
struct Memory {
    /// The route the status names was applied again since this process started (or began
    /// to lead): a restarted operator or a new leader re-applies what the phase owes once,
    /// before it steps.
    resumed: bool,
    /// When the last rollback check ran, so checks keep their interval however often
    /// watch events start a reconcile.
    last_check_ms: i64,
    /// The rollout (id and version) whose `pre_rollout` webhooks answered 2xx.
    pre_rollout_done: Option<(i64, String)>,
    /// When each analysis of the watched phase is next due.
    analysis_next_ms: HashMap<String, i64>,
    /// When the watched alias is next read.
    alias_next_ms: i64,
    /// Why the watched alias could not be read, last time, so it is said once.
    alias_error: Option<String>,
    /// Gates passed, waiting for the `pre_switch` webhooks' 200.
    confirm: Option<observe::Confirm>,
}

impl Context {
    /// The context a running operator uses: Services by their cluster DNS names, the wall
    /// clock, and ten seconds for a colour's pods to answer ready.
    pub fn new(client: Client, instance: Option<String>) -> Context {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance,
        };
        Context {
            reporter,
            client,
            service_url: Arc::new(|namespace, service, port| {
                format!("http://{service}.{namespace}.svc:{port}")
            }),
            clock: Arc::new(now_ms),
            connect_wait: Duration::from_secs(10),
            checks: Arc::new(crate::control::checks::Checks::new(None)),
            memory: Mutex::new(HashMap::new()),
        }
    }

    fn memory(&self, uid: &str) -> Memory {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    fn remember(&self, uid: &str, change: impl FnOnce(&mut Memory)) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        change(memory.entry(uid.to_string()).or_default());
    }

    /// Drops what this process remembers of a resource that is gone.
    fn forget(&self, uid: &str) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

/// The wall clock in milliseconds since the epoch: the operator's default [`Clock`], and the
/// time leader election writes into its Lease.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the controller until `stop` resolves: watches the resources and the Deployments and
/// Services they own, so that a change to any of them starts a reconcile of its resource.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (resources, deployments, services) = match &namespace {
        Some(ns) => (
            Api::<ModelDeployment>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client, ns),
        ),
        None => (
            Api::<ModelDeployment>::all(client.clone()),
            Api::<Deployment>::all(client.clone()),
            Api::<Service>::all(client),
        ),
    };
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=teal");
    Controller::new(resources, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(services, owned)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|outcome| async move {
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "reconcile did not finish");
            }
        })
        .await;
}

/// Retries soon after a conflict (the resource changed under the reconcile; reading it
/// again is all it takes), later after other errors, so a failing API is not hammered.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, _ctx: Arc<Context>) -> Action {
    match error {
        Error::Conflict(_) => Action::requeue(Duration::from_secs(1)),
        _ => {
            tracing::warn!(resource = %md.name_any(), error = %error, "reconcile failed; retrying in 5 s");
            Action::requeue(Duration::from_secs(5))
        }
    }
}
