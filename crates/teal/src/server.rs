//! Starting and stopping teal: load every slot, bind both listeners, serve until told to stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use teal_core::config::{Config, ConfigError, SlotConfig};
use teal_core::routing::{Color, RouteTable};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::backends::LoadError;
use crate::backends::admission::Admission;
use crate::backends::fetch::Fetcher;
use crate::control::rollout::Rollouts;
use crate::control::slots::{self, NotStarted, SlotManager};
use crate::control::validation::Validator;
use crate::control::validation::taps::{Captures, ShadowHub};
use crate::gateway::{self, Gateway};
use crate::metrics::Metrics;
use crate::routing::{ModelRoutes, RouteSnapshot, Routes, Slot};
use crate::state::store::{ModelState, NewEvent, RequestLog, Store};
use crate::state::token;

/// Why teal could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("config {file}: {source}")]
    Config { file: String, source: ConfigError },
    #[error("cannot read config {file}: {source}")]
    ReadConfig {
        file: String,
        source: std::io::Error,
    },
    #[error("model '{model}', {color} slot (version {version}): {source}")]
    Load {
        model: String,
        color: Color,
        version: String,
        source: LoadError,
    },
    #[error("cannot listen on {addr} for the {what}: {source}; pick another address with --{flag}")]
    Bind {
        addr: String,
        what: &'static str,
        flag: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Store(String),
    #[error("state folder {dir}: {source}")]
    State { dir: String, source: std::io::Error },
}

/// Reads, resolves and validates a config file.
pub fn load_config(path: &Path) -> Result<Config, StartError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| StartError::ReadConfig {
        file: file.clone(),
        source,
    })?;
    let mut config = Config::parse(&text).map_err(|source| StartError::Config {
        file: file.clone(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    config.resolve_paths(base);
    config.validate().map_err(|source| StartError::Config {
        file: file.clone(),
        source,
    })?;
    // A webhook's key is named by the config and held by the environment: one that is not
    // there would only show at the first call, mid-rollout.
    for (i, model) in config.models.iter().enumerate() {
        for (j, hook) in model.rollout.webhook.iter().enumerate() {
            if let Some(var) = &hook.secret_env
                && std::env::var_os(var).is_none_or(|v| v.is_empty())
            {
                return Err(StartError::Config {
                    file,
                    source: ConfigError::new(
                        format!("model[{i}].rollout.webhook[{j}].secret_env"),
                        format!(
                            "webhook '{}' signs with the key in {var}, which is not set: export it before teal starts",
                            hook.name
                        ),
                    ),
                });
            }
        }
    }
    Ok(config)
}

/// Loads every configured slot. A slot that fails stops start-up with the reason.
///
/// `remembered` holds what the state file says each model ran when teal last stopped (the
/// versions deployed since start-up, and which slot was live); it wins over the config
/// file, so a restart never changes which version is live. But a remembered slot that runs
/// a command the config file does not hold is started only when `server.allow_commands` is
/// on: otherwise it is left out (returned, with why; the state file then records what runs,
/// so it is not started later either), and when it was the live one the model starts as the
/// config file has it.
pub async fn load_models(
    config: &Config,
    remembered: &[ModelState],
    fetcher: &Fetcher,
) -> Result<(RouteSnapshot, Vec<NotStarted>), StartError> {
    let mut models = BTreeMap::new();
    let mut held = Vec::new();
    for model in &config.models {
        let mut slots: [Option<Arc<Slot>>; 2] = [None, None];
        let state = remembered.iter().find(|s| s.model == model.name);
        let mut table = RouteTable {
            header_override: model.header_override,
            ..RouteTable::all_on(model.live)
        };
        let mut configs = [model.blue.clone(), model.green.clone()];
        if let Some(state) = state {
            let mut restored = [None, None];
            for (color, value) in &state.slots {
                match (
                    color.parse::<Color>(),
                    serde_json::from_value::<SlotConfig>(value.clone()),
                ) {
                    (Ok(color), Ok(slot))
                        if slot.runs_command()
                            && !config.server.allow_commands
                            && !configs.contains(&Some(slot.clone())) =>
                    {
                        let reason = format!(
                            "version {} {}",
                            slot.version,
                            slots::COMMANDS_ARE_THE_OPERATORS
                        );
                        tracing::error!(model = %model.name, slot = %color, version = %slot.version, %reason,
                            "a slot the state file remembers runs a command the config file does not hold: not started");
                        held.push(NotStarted {
                            model: model.name.clone(),
                            version: slot.version,
                            slot: Some(color),
                            rollout: None,
                            reason,
                        });
                    }
                    (Ok(color), Ok(slot)) => restored[color.index()] = Some(slot),
                    _ => {
                        tracing::warn!(model = %model.name, color, "a remembered slot cannot be read; using the config file's")
                    }
                }
            }
            if let Ok(active) = state.active.parse::<Color>()
                && restored[active.index()].is_some()
            {
                tracing::info!(model = %model.name, live = %active, "restoring the slots and route teal had when it stopped");
                configs = restored;
                table.active = active;
                table.candidate_weight = state.weight;
                table.shadow = state.shadow;
            }
        }
        for color in [Color::Blue, Color::Green] {
            if let Some(slot) = &configs[color.index()] {
                let loaded = slots::load(
                    &model.name,
                    color,
                    slot,
                    config.server.onnxruntime.as_deref(),
                    &model.cache,
                    model.batching.as_ref(),
                    fetcher,
                )
                .await
                .map_err(|source| StartError::Load {
                    model: model.name.clone(),
                    color,
                    version: slot.version.clone(),
                    source,
                })?;
                slots[color.index()] = Some(Arc::new(loaded));
            }
        }
        if slots[table.candidate().index()].is_none() {
            table.candidate_weight = 0;
            table.shadow = 0;
        }
        models.insert(
            model.name.clone(),
            Arc::new(ModelRoutes {
                name: model.name.clone(),
                table,
                slots,
                previous: None,
                prediction_output: model.prediction_output.clone(),
                cache: model.cache.clone(),
                batching: model.batching.clone(),
                gates: model.gates.clone(),
                capture_rate: model.capture_rate,
                capture_limit: model.capture_limit,
                sticky_header: model.sticky_header.clone(),
                sticky_cookie: model.sticky_cookie.clone(),
                admission: Arc::new(Admission::new(&model.limits.for_model(model))),
            }),
        );
    }
    Ok((RouteSnapshot { models }, held))
}

/// A running teal: both listeners bound and serving.
pub struct Running {
    pub data_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The metrics listener's address, when `server.metrics_listen` asks for one.
    pub metrics_addr: Option<SocketAddr>,
    /// The gRPC listener's address, when `server.grpc_listen` asks for one.
    pub grpc_addr: Option<SocketAddr>,
    pub routes: Arc<Routes>,
    pub slots: Arc<SlotManager>,
    pub token: String,
    pub state_dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn data_url(&self) -> String {
        format!("http://{}", self.data_addr)
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr)
    }

    pub fn metrics_url(&self) -> Option<String> {
        self.metrics_addr.map(|addr| format!("http://{addr}"))
    }

    /// Stops accepting connections, lets requests in flight finish (at most `grace`), and returns.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures_join(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                ?grace,
                "requests still in flight after the grace period; stopping anyway"
            );
        }
        // The listeners are closed: stop the model servers teal started.
        self.slots.stop_all().await;
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

async fn bind(
    addr: &str,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            what,
            flag,
            source,
        })
}

/// Accepts connections and serves HTTP/1.1 on each until `stop`; then lets the requests in
/// flight finish. A client that is slow to send its headers, or leaves a kept-alive
/// connection idle, is cut off after `header_timeout`.
fn serve_on<S>(
    listener: TcpListener,
    service: S,
    timeouts: gateway::Timeouts,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()>
where
    S: hyper::service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::http::Response<axum::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    tokio::spawn(async move {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(timeouts.header)
            .keep_alive(true);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        while let Some(stream) = accept(&listener, &mut stop).await {
            let io = gateway::Rewind::new(bytes::Bytes::new(), stream, timeouts.write);
            let connection = http.serve_connection(TokioIo::new(io), service.clone());
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
    })
}

/// Serves the data plane as [`serve_on`] serves a service, each connection through
/// [`gateway::serve_connection`]. At most `max_connections` are served at once; one more is
/// answered 503 and closed at once, and the open ones keep being served.
fn serve_data_plane(
    listener: TcpListener,
    plane: gateway::DataPlane,
    timeouts: gateway::Timeouts,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Every connection holds a sender; when the last is gone, every connection ended.
        let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        let places = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let stopping = stop.clone();
        let serve = |stream: tokio::net::TcpStream| {
            let Ok(place) = places.clone().try_acquire_owned() else {
                tracing::debug!(max_connections, "at the connection limit; refusing one");
                gateway::refuse_connection(stream);
                return;
            };
            let (plane, mut stop, open) = (plane.clone(), stopping.clone(), open.clone());
            tokio::spawn(async move {
                let stopped = stop_requested(&mut stop);
                gateway::serve_connection(stream, plane, timeouts, stopped).await;
                drop(place);
                drop(open);
            });
        };
        while let Some(stream) = accept(&listener, &mut stop).await {
            serve(stream);
        }
        // Connections the kernel had already taken when the stop came are accepted and told
        // that teal is stopping (their request gets 503), rather than reset with the listener.
        // The kernel's queue is asked directly: the runtime may not have seen them yet.
        if let Ok(listener) = listener.into_std() {
            let _ = listener.set_nonblocking(true);
            for _ in 0..max_connections {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // An accepted socket does not inherit the listener's non-blocking mode.
                        let _ = stream.set_nonblocking(true);
                        let _ = stream.set_nodelay(true);
                        if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                            serve(stream);
                        }
                    }
                    Err(e) if is_per_connection(&e) => {}
                    Err(_) => break,
                }
            }
        }
        drop(open);
        let _ = all_closed.recv().await;
    })
}

/// The default cap on data-plane connections: the open-file limit (which `teal serve` raises
/// to the hard limit) less an eighth of it, at least 256, kept for model files, the state file,
/// the admin listener and upstream connections.
pub fn default_max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(1 << 20);
    limit.saturating_sub((limit / 8).max(256)).max(64)
}

/// The next connection, or `None` once `stop` is set. Running out of file descriptors
/// pauses accepting briefly instead of spinning or failing the listener.
async fn accept(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<tokio::net::TcpStream> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(stream);
                }
                Err(e) => {
                    if !is_per_connection(&e) {
                        tracing::warn!(error = %e, "cannot accept connections; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
            () = stop_requested(stop) => return None,
        }
    }
}

async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Accept errors that concern one connection only (it was reset before it was accepted).
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Loads the models, binds both listeners and starts serving. `token` overrides the token
/// file (it comes from `TEAL_ADMIN_TOKEN`).
pub async fn start(config: &Config, token: Option<String>) -> Result<Running, StartError> {
    let state_dir = config.server.state_dir.clone();
    let state_error = |source| StartError::State {
        dir: state_dir.display().to_string(),
        source,
    };
    token::create_private_dir(&state_dir).map_err(state_error)?;
    let store_path = state_dir.join("teal.db");
    let max_bytes = config.server.state_max_bytes;
    let store = tokio::task::spawn_blocking(move || Store::open_limited(&store_path, max_bytes))
        .await
        .map_err(|e| StartError::Store(e.to_string()))?
        .map_err(|e| StartError::Store(e.to_string()))?;
    let store = Arc::new(store);
    // The state file holds the audit log, the request log and captured requests: owner only.
    // (SQLite gives its WAL and shared-memory files the same permissions.)
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            state_dir.join("teal.db"),
            std::fs::Permissions::from_mode(0o600),
        )
        .map_err(state_error)?;
    }
    let remembered = store
        .model_states()
        .map_err(|e| StartError::Store(e.to_string()))?;
    let fetcher = Arc::new(Fetcher::new(
        &config.server.state_dir,
        config.server.mlflow_uri.as_deref(),
        config.server.max_download_bytes,
        config.server.artifact_cache_files,
        config.server.artifact_cache_bytes,
    ));
    let (snapshot, mut not_started) = load_models(config, &remembered, &fetcher).await?;
    let data = bind(&config.server.listen, "data plane", "listen").await?;
    let admin_listener = bind(&config.server.admin, "admin API", "admin").await?;
    let metrics_listener = match &config.server.metrics_listen {
        Some(addr) => Some(bind(addr, "metrics", "metrics-listen").await?),
        None => None,
    };
    let grpc_listener = match &config.server.grpc_listen {
        Some(addr) => Some(bind(addr, "gRPC inference service", "grpc-listen").await?),
        None => None,
    };
    let (token, hint) = token::load_or_create_token(&state_dir, token).map_err(state_error)?;

    let data_addr = data.local_addr().map_err(state_error)?;
    let admin_addr = admin_listener.local_addr().map_err(state_error)?;
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr().map_err(state_error)?),
        None => None,
    };
    let grpc_addr = match &grpc_listener {
        Some(listener) => Some(listener.local_addr().map_err(state_error)?),
        None => None,
    };
    token::write_private(
        &state_dir.join(token::ADMIN_URL_FILE),
        &format!("http://{admin_addr}\n"),
    )
    .map_err(state_error)?;

    let routes = Arc::new(Routes::new(snapshot));
    let mut metrics = Metrics::new();
    metrics.register_state(store.write_failures());
    let metrics = Arc::new(metrics);
    let shadows = Arc::new(ShadowHub::new(metrics.shadow_dropped.clone()));
    let captures = Arc::new(Captures::start(
        store.clone(),
        metrics.capture_dropped.clone(),
        config.server.capture_queue_bytes,
    ));
    let mut gateway = Gateway::new(
        routes.clone(),
        config.server.max_body_bytes,
        shadows.clone(),
        captures.clone(),
        metrics.clone(),
    );
    gateway.store = Some(store.clone());
    gateway.feedback_token = config.server.feedback_token.clone();
    let baselines = gateway.baselines.clone();
    gateway.body_timeout = Duration::from_millis(config.server.body_timeout_ms);
    let (stop, stopped) = watch::channel(false);
    gateway.stopping = Some(stopped.clone());
    if config.server.request_log {
        gateway.request_log = Some(Arc::new(RequestLog::start(
            store.clone(),
            metrics.request_log_dropped.clone(),
            crate::state::store::Retention {
                max_rows: config.server.request_log_max_rows,
                max_age: Duration::from_millis(config.server.request_log_max_age_ms),
            },
        )));
    }
    let gateway = Arc::new(gateway);
    // Failed requests held back from the log are summed up once their interval is over,
    // even when no failure follows to carry the count.
    let held = Arc::downgrade(&gateway);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::gateway::FAILURE_LOG_INTERVAL);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(gateway) = held.upgrade() else {
                return;
            };
            gateway.log_held_failures();
        }
    });
    for model in routes.load().models.values() {
        let live = model.live();
        let event = NewEvent {
            model: model.name.clone(),
            kind: "started".into(),
            actor: "teal".into(),
            live_slot: live.map(|s| s.color.to_string()),
            live_version: live.map(|s| s.version.clone()),
            detail: serde_json::json!({ "versions": model.versions() }),
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.append(event))
            .await
            .map_err(|e| StartError::Store(e.to_string()))?
            .map_err(|e| StartError::Store(e.to_string()))?;
    }
    let mut validator = Validator::new(
        routes.clone(),
        shadows,
        captures,
        store.clone(),
        metrics.clone(),
    );
    // The gateway sends a rollout's concurrent-baseline pairs where its driver reads them.
    validator.baselines = baselines;
    let validator = Arc::new(validator);
    let slots = Arc::new(
        SlotManager::new(
            routes.clone(),
            config.server.onnxruntime.clone(),
            fetcher.clone(),
            Duration::from_millis(config.server.drain_ms),
        )
        .allowing_commands(config.server.allow_commands),
    );
    let rollouts = Arc::new(Rollouts::new(
        routes.clone(),
        slots.clone(),
        validator.clone(),
        store.clone(),
        metrics.clone(),
        config
            .models
            .iter()
            .map(|m| (m.name.clone(), m.rollout.clone()))
            .collect(),
    ));
    rollouts.equip(
        crate::control::checks::Checks::new(config.server.prometheus_url.as_deref()),
        Arc::new(crate::gateway::door::CandidateDoors {
            gateway: gateway.clone(),
        }),
    );
    for model in routes.load().models.keys() {
        crate::control::rollout::remember(&routes, &store, model).await;
    }
    not_started.extend(
        rollouts
            .resume_all()
            .await
            .map_err(|e| StartError::Store(e.to_string()))?,
    );
    let mut watchers = Vec::new();
    for model in &config.models {
        if let Some(source) = &model.source {
            tracing::info!(model = %model.name, alias = %source.watch, every_ms = source.poll_ms, "following the registry alias");
            watchers.push(crate::control::watch::spawn(
                model.name.clone(),
                source.clone(),
                routes.clone(),
                rollouts.clone(),
                fetcher.clone(),
                stopped.clone(),
            ));
        }
    }
    let mut admin = Admin::new(
        slots.clone(),
        validator,
        store,
        metrics.clone(),
        rollouts,
        token.clone(),
        hint,
    );
    admin.not_started = not_started;
    let admin = Arc::new(admin);
    let timeouts = gateway::Timeouts {
        header: Duration::from_millis(config.server.header_timeout_ms.max(1)),
        body: Duration::from_millis(config.server.body_timeout_ms.max(1)),
        write: Duration::from_millis(config.server.write_timeout_ms.max(1)),
    };
    let max_connections = config
        .server
        .max_connections
        .unwrap_or_else(default_max_connections);
    tracing::debug!(max_connections, "data-plane connection limit");
    let mut tasks = watchers;
    if let Some(listener) = metrics_listener {
        tasks.push(serve_on(
            listener,
            hyper_util::service::TowerToHyperService::new(admin::metrics_router(admin.clone())),
            timeouts,
            stopped.clone(),
        ));
    }
    if let Some(listener) = grpc_listener {
        tasks.push(gateway::grpc::serve(
            listener,
            gateway.clone(),
            timeouts,
            max_connections,
            stopped.clone(),
        ));
    }
    tasks.extend([
        serve_data_plane(
            data,
            gateway::DataPlane::new(gateway),
            timeouts,
            max_connections,
            stopped.clone(),
        ),
        serve_on(
            admin_listener,
            hyper_util::service::TowerToHyperService::new(admin::router(admin)),
            timeouts,
            stopped,
        ),
    ]);
    Ok(Running {
        data_addr,
        admin_addr,
        metrics_addr,
        grpc_addr,
        routes,
        slots,
        token,
        state_dir,
        stop,
        tasks,
    })
}
