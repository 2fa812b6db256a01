//! `teal serve` and `teal operator`: the long-running verbs, the runtime's thread count,
//! and waiting for the signal that stops them. Without the `kubernetes` feature, the
//! cluster mode of `teal serve` and the operator refuse to start and say why.

use super::*;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (TOML); see examples/teal.toml.
    #[arg(
        long,
        short,
        value_name = "FILE",
        required_unless_present = "kubernetes"
    )]
    pub config: Option<PathBuf>,
    /// Also serve the ModelDeployment resources in `gateway` switch mode: follow their
    /// status and their colours' endpoints, and route per request (in a cluster).
    #[arg(long, hide = cfg!(not(feature = "kubernetes")))]
    pub kubernetes: bool,
    /// With --kubernetes: only this namespace's resources, by their plain model names
    /// (default: all the gateway may read, each model named NAMESPACE.MODEL).
    #[arg(
        long,
        value_name = "NAMESPACE",
        requires = "kubernetes",
        hide = cfg!(not(feature = "kubernetes"))
    )]
    pub namespace: Option<String>,
    /// Data-plane address, overriding server.listen (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin address, overriding server.admin (default 127.0.0.1:8090, loopback in every
    /// mode: the admin token changes what every model answers).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// An address for /metrics alone (read-only, no token), overriding server.metrics_listen:
    /// for a scraper outside the host or pod while the admin API stays on loopback.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// An address for the Open Inference Protocol over gRPC (as tritonclient.grpc calls it),
    /// overriding server.grpc_listen; off unless one of them is set.
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<String>,
    /// Threads serving requests (default: one per core). 1 runs one event loop on one thread,
    /// as one nginx worker does: the shortest tail when teal shares a small machine with its
    /// model servers.
    #[arg(long, value_name = "N", env = "TEAL_THREADS", value_parser = thread_count)]
    pub threads: Option<usize>,
}

/// The settings of `teal serve --kubernetes` without a config file: the data plane on every
/// interface, since the cluster reaches the gateway at the pod's address; the admin API on
/// loopback at its default port, as in every mode (`TEAL_ADMIN_LISTEN` or `--admin` move it);
/// no metrics listener unless `TEAL_METRICS_LISTEN` or `--metrics-listen` asks for one.
pub(crate) const BUILT_IN_GATEWAY: &str = "[server]\nlisten = \"0.0.0.0:8080\"\n";

pub(crate) fn thread_count(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("give the number of threads, 1 or more".to_string()),
    }
}

#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Print the CustomResourceDefinition (YAML) and exit, as deploy/kubernetes/crd.yaml holds it.
    #[arg(long)]
    pub print_crd: bool,
    /// Only this namespace's resources (default: every namespace).
    #[arg(long, value_name = "NAMESPACE", env = "TEAL_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Where the leader Lease lives (the operator's own namespace).
    #[arg(
        long,
        value_name = "NAMESPACE",
        env = "TEAL_NAMESPACE",
        default_value = "teal-system"
    )]
    pub lease_namespace: String,
    /// The leader Lease's name.
    #[arg(long, default_value = "teal-operator")]
    pub lease_name: String,
    /// This replica's name in the Lease and in Events (the pod's name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Seconds a lease lasts without renewal before another replica may take it.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub lease_seconds: u64,
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (mut config, source) = match &args.config {
        Some(path) => (server::load_config(path)?, path.display().to_string()),
        None => (
            teal_core::config::Config::parse(BUILT_IN_GATEWAY)?,
            "the built-in gateway settings".to_string(),
        ),
    };
    config.apply_environment(&ProcessEnvironment);
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = args.admin {
        config.server.admin = admin;
    }
    if let Some(metrics) = args.metrics_listen {
        config.server.metrics_listen = Some(metrics);
    }
    if let Some(grpc) = args.grpc_listen {
        config.server.grpc_listen = Some(grpc);
    }
    let checked = match args.kubernetes {
        true => config.validate_allowing_no_models(),
        false => config.validate(),
    };
    checked.map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    let token = std::env::var("TEAL_ADMIN_TOKEN").ok();
    // The cluster first: a gateway that cannot reach it should not start serving nothing.
    let cluster = match args.kubernetes {
        true => Some(cluster_client("teal serve --kubernetes").await?),
        false => None,
    };
    let mut signals = StopSignals::listen();
    let running = server::start(&config, token).await?;
    let follower = cluster.map(|client| follow_cluster(client, args.namespace, &running));
    // One plain line on stdout for people and scripts; logs go to stderr.
    let metrics = running
        .metrics_url()
        .map(|url| format!(" metrics {url}"))
        .unwrap_or_default();
    let grpc = running
        .grpc_addr
        .map(|addr| format!(" grpc {addr}"))
        .unwrap_or_default();
    println!(
        "teal ready: data plane {} admin {} (token in {}){metrics}{grpc}",
        running.data_url(),
        running.admin_url(),
        token::token_path(&running.state_dir).display()
    );
    signals.wait().await;
    tracing::info!("stopping: finishing requests in flight");
    if let Some(follower) = follower {
        follower.abort();
    }
    running.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

/// The Kubernetes API client, from the pod's service account or KUBECONFIG.
#[cfg(feature = "kubernetes")]
async fn cluster_client(_verb: &str) -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.context(
        "cannot reach the Kubernetes API: run in a pod with a service account, or set KUBECONFIG",
    )
}

/// A build without the `kubernetes` feature has no client to make: the cluster verbs stop
/// here, before anything starts, and say how to get a build that has them.
#[cfg(not(feature = "kubernetes"))]
async fn cluster_client(verb: &str) -> anyhow::Result<std::convert::Infallible> {
    Err(without_kubernetes(verb))
}

#[cfg(not(feature = "kubernetes"))]
fn without_kubernetes(verb: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`{verb}` needs Kubernetes support, and this teal was built without it: build teal with its default features (`cargo build --release`), which include the `kubernetes` feature"
    )
}

/// Follows the ModelDeployment resources into the route table, until aborted.
#[cfg(feature = "kubernetes")]
fn follow_cluster(
    client: kube::Client,
    namespace: Option<String>,
    running: &server::Running,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(crate::kubernetes::gateway::follow(
        client,
        namespace,
        running.routes.clone(),
    ))
}

#[cfg(not(feature = "kubernetes"))]
fn follow_cluster(
    client: std::convert::Infallible,
    _namespace: Option<String>,
    _running: &server::Running,
) -> tokio::task::JoinHandle<()> {
    match client {}
}

#[cfg(not(feature = "kubernetes"))]
pub(crate) async fn operator(_args: OperatorArgs) -> anyhow::Result<()> {
    Err(without_kubernetes("teal operator"))
}

#[cfg(feature = "kubernetes")]
pub(crate) async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    use crate::kubernetes::{leader, operator};
    if args.print_crd {
        print!("{}", crate::kubernetes::crd_yaml());
        return Ok(());
    }
    let mut signals = StopSignals::listen();
    let client = cluster_client("teal operator").await?;
    let identity = args
        .identity
        .unwrap_or_else(|| format!("teal-operator-{}", std::process::id()));
    let candidate = leader::Candidate {
        identity: identity.clone(),
        lease_name: args.lease_name,
        namespace: args.lease_namespace,
        duration: Duration::from_secs(args.lease_seconds.max(3)),
    };
    tracing::info!(identity = %identity, lease = %candidate.lease_name, "waiting to lead");
    tokio::select! {
        _ = candidate.acquire(&client) => {}
        _ = signals.wait() => return Ok(()),
    }
    let ctx = std::sync::Arc::new(operator::Context::new(client.clone(), Some(identity)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(operator::run(ctx, args.namespace, async move {
        let _ = stopped.await;
    }));
    let outcome = tokio::select! {
        lost = candidate.keep(&client) => Err(anyhow::anyhow!("stopped leading: {lost}")),
        _ = signals.wait() => Ok(()),
    };
    let _ = stop.send(());
    let _ = controller.await;
    outcome
}

/// SIGTERM and SIGINT, listened for from the moment this is made: made before teal says it
/// is ready, so a supervisor that stops it right after (systemd, Kubernetes) gets the
/// graceful stop, not the default action that ends the process at once and resets every
/// connection.
pub(crate) struct StopSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    pub(crate) fn listen() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        StopSignals {
            terminate: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// Completes at the first SIGTERM or SIGINT since [`StopSignals::listen`].
    pub(crate) async fn wait(&mut self) {
        async fn one(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(self.terminate.as_mut()) => {}
            _ = one(self.interrupt.as_mut()) => {}
        }
    }
}

/// The process environment, for config overrides.
pub struct ProcessEnvironment;

impl teal_core::config::Environment for ProcessEnvironment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::BUILT_IN_GATEWAY;

    #[test]
    fn the_gateway_without_a_config_file_keeps_its_admin_api_on_loopback() {
        let config = teal_core::config::Config::parse(BUILT_IN_GATEWAY).unwrap();
        config.validate_allowing_no_models().unwrap();
        let admin: SocketAddr = config.server.admin.parse().unwrap();
        assert!(admin.ip().is_loopback(), "{admin}");
        assert_eq!(config.server.admin, teal_core::config::DEFAULT_ADMIN);
        assert_ne!(admin.port(), 9090, "9090 is Prometheus's port");
        assert_eq!(config.server.metrics_listen, None);
        assert!(!config.server.allow_commands);
        let listen: SocketAddr = config.server.listen.parse().unwrap();
        assert!(listen.ip().is_unspecified(), "{listen}");
    }
}
