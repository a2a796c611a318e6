//! App: wiring. Builds the Pingora server from a validated [`Config`]: the proxy service on
//! `listen`, the dispatcher as a background service and, with `metrics_listen`, the metrics
//! endpoint. This is the seam the binary, the tests and the benches all use; [`spawn`] runs a
//! server on a thread of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::configuration::ServerConf;
use pingora::server::{
    ExecutionPhase, RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora::services::background::{background_service, BackgroundService};
use thiserror::Error;

use crate::config::Config;
use crate::dispatch::{Dispatcher, IdleProbe};
use crate::edge::{self, EdgeService, EdgeSettings};
use crate::live::{restart_only_changes, Live, LiveConfig};
use crate::mattermost::{ApiError, MattermostClient};
use crate::metrics::MetricsApp;
use crate::names;
use crate::net::guard::{BoxError, Resolver, SystemResolver};
use crate::proxy::Proxy;
use crate::reply::{AnswerSink, Poster};
use crate::stats::Stats;

/// Why the server could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("Mattermost client: {0}")]
    Mattermost(#[source] ApiError),
    #[error("webhook client: {0}")]
    Webhooks(#[source] BoxError),
    #[error("listen {addr}: cannot listen: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("metrics_listen {addr}: cannot listen: {error}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("cannot start the server thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("{0}")]
    Upstreams(String),
    #[error("store: {0}")]
    Store(#[source] crate::store::StoreError),
}

/// Why a reload was rejected (the running configuration stays).
#[derive(Debug, Error)]
pub enum ReloadError {
    #[error("webhook client: {0}")]
    Webhooks(#[source] BoxError),
    #[error("reload state poisoned by an earlier panic")]
    Poisoned,
    #[error("{0}")]
    Names(String),
}

/// Replaceable parts, for tests.
pub struct Options {
    /// Resolves callback host names (the SSRF guard filters its answers).
    pub resolver: Arc<dyn Resolver>,
    /// Receives every webhook answer; `None` uses the reply poster.
    pub answer_sink: Option<Arc<dyn AnswerSink>>,
    /// The config file, read again on SIGHUP; `None`: no reload on SIGHUP.
    pub config_path: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resolver: Arc::new(SystemResolver),
            answer_sink: None,
            config_path: None,
        }
    }
}

/// What a running posthook exposes to its embedder.
#[derive(Clone)]
pub struct Handle {
    pub stats: Arc<Stats>,
    idle: IdleProbe,
    in_flight: Arc<AtomicUsize>,
    reload: Arc<ReloadState>,
}

struct ReloadState {
    live: LiveConfig,
    resolver: Arc<dyn Resolver>,
    current: Mutex<Current>,
    stats: Arc<Stats>,
    /// Several Mattermost nodes: names are resolved through the healthy ones.
    nodes: Option<Arc<crate::upstreams::Nodes>>,
    /// The thread that resolves the hooks' names again is running (started by the first
    /// config with names).
    names_started: std::sync::atomic::AtomicBool,
}

/// The config in force, for reloads and name refreshes.
struct Current {
    /// Everything but the hooks (see [`Config::without_hooks`]).
    config: Config,
    /// The hooks as written, when some name a team or channel (else empty: nothing to keep).
    named: Vec<crate::config::HookConfig>,
    /// Bumped by each reload, so that a name refresh begun before it is not applied after it.
    generation: u64,
}

/// The snapshot of `config` with `hooks` in place of its own (names resolved, or inactive).
fn live_with(
    config: &Config,
    hooks: Option<Vec<crate::config::HookConfig>>,
    resolver: Arc<dyn Resolver>,
) -> Result<Live, BoxError> {
    match hooks {
        None => Live::build(config, resolver),
        Some(hooks) => {
            let mut c = config.without_hooks();
            c.hooks = hooks;
            Live::build(&c, resolver)
        }
    }
}

impl Handle {
    /// True when no proxied request (websockets aside) is in flight and the dispatcher has
    /// no job or delivery left.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.idle.is_idle()
    }

    /// Swaps in the hooks and settings of `new` atomically. Returns the names of the changed
    /// sections that only a restart applies (they keep their running values).
    pub fn reload(&self, new: &Config) -> Result<Vec<&'static str>, ReloadError> {
        // Names are resolved before anything is swapped: one that does not resolve rejects
        // the reload, as an invalid file does.
        let named = names::has_names(&new.hooks);
        let resolved = if named {
            let (hooks, failed) = names::resolve_blocking(new, self.reload.nodes.clone())
                .map_err(ReloadError::Names)?;
            if !failed.is_empty() {
                let all: Vec<String> = failed.iter().map(ToString::to_string).collect();
                return Err(ReloadError::Names(all.join("; ")));
            }
            Some(hooks)
        } else {
            None
        };
        let live = live_with(new, resolved, self.reload.resolver.clone())
            .map_err(ReloadError::Webhooks)?;
        let mut current = self
            .reload
            .current
            .lock()
            .map_err(|_| ReloadError::Poisoned)?;
        let restart_only = restart_only_changes(&current.config, new);
        self.reload.live.store(Arc::new(live));
        current.config = new.without_hooks();
        current.named = if named { new.hooks.clone() } else { Vec::new() };
        current.generation += 1;
        drop(current);
        if named {
            start_names(&self.reload);
        }
        Ok(restart_only)
    }
}

/// Builds the Pingora server for `config`.
pub fn build(config: &Config, options: Options) -> Result<(Server, Handle), BuildError> {
    let stats = Arc::new(Stats::default());
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        upstream_keepalive_pool_size: config.server.upstream_keepalive_pool_size,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    crate::store::Store::check_blocking(&config.store).map_err(BuildError::Store)?;
    // Several Mattermost nodes: one balancer with its health check, for the proxy and for
    // posthook's own look-ups and replies.
    let nodes = if config.upstreams.len() > 1 {
        let nodes =
            crate::upstreams::Nodes::new(&config.upstreams).map_err(BuildError::Upstreams)?;
        let nodes = Arc::new(nodes);
        let checks = pingora::services::background::GenBackgroundService::new(
            "BG upstream health check".into(),
            nodes.balancer(),
        );
        server.add_service(checks);
        Some(nodes)
    } else {
        None
    };
    let mut mm =
        MattermostClient::from_config(config, stats.clone()).map_err(BuildError::Mattermost)?;
    if let Some(nodes) = &nodes {
        mm = mm.with_nodes(nodes.clone());
    }
    // Hooks that name their team or channel start inactive; the names thread resolves them.
    let named = names::has_names(&config.hooks);
    let live = live_with(
        config,
        named.then(|| names::inactive(&config.hooks)),
        options.resolver.clone(),
    )
    .map_err(BuildError::Webhooks)?
    .shared();
    let sink = match options.answer_sink {
        Some(s) => s,
        None => {
            // Replies follow the reply settings of the snapshot in force when the answer arrives.
            let settings = live.clone();
            Arc::new(Poster::new(
                move || settings.load().reply,
                mm.clone(),
                stats.clone(),
            ))
        }
    };

    let (dispatcher, handle) = Dispatcher::new(config, live.clone(), mm, stats.clone(), sink);
    let idle = dispatcher.idle_probe();
    if let Some(addr) = config.metrics_listen {
        // Pingora binds in the service's own thread and only panics there when it cannot:
        // try the address here first, so that a taken port fails the start, loudly.
        std::net::TcpListener::bind(addr)
            .map_err(|error| BuildError::MetricsListen { addr, error })?;
        let app = MetricsApp::new(stats.clone(), handle.queue_gauge());
        server.add_service(crate::metrics::service(addr, app));
    }
    // As for metrics_listen: a taken port is an error here, not a panic in Pingora's thread.
    let socket = edge::bind(config.listen).map_err(|error| BuildError::Listen {
        addr: config.listen,
        error,
    })?;
    let proxy = Proxy::new(config, live.clone(), handle, stats.clone(), nodes.clone());
    let in_flight = proxy.in_flight();
    let app = pingora::proxy::http_proxy(&server.configuration, proxy);
    let edge = EdgeSettings {
        header_timeout: config.server.header_timeout,
        keepalive_timeout: config.server.keepalive_timeout,
        body_timeout: config.server.body_timeout,
        max_connections: edge::connection_cap(config.limits.max_connections),
    };
    server.add_service(EdgeService::new(socket, app, edge, stats.clone()));
    server.add_service(background_service("webhook dispatcher", dispatcher));
    let handle = Handle {
        stats: stats.clone(),
        idle,
        in_flight,
        reload: Arc::new(ReloadState {
            live,
            resolver: options.resolver,
            current: Mutex::new(Current {
                config: config.without_hooks(),
                named: if named {
                    config.hooks.clone()
                } else {
                    Vec::new()
                },
                generation: 0,
            }),
            stats,
            nodes,
            names_started: std::sync::atomic::AtomicBool::new(false),
        }),
    };
    if named {
        start_names(&handle.reload);
    }
    if let Some(path) = options.config_path {
        server.add_service(background_service(
            "config reloader",
            Reloader {
                path,
                handle: handle.clone(),
            },
        ));
    }
    Ok((server, handle))
}

/// Starts, once, the thread that resolves the hooks' names now and every
/// `limits.name_refresh_seconds` (sooner, every [`names::RETRY`], while some fail). It ends
/// when the server is gone.
fn start_names(state: &Arc<ReloadState>) {
    if state.names_started.swap(true, Ordering::SeqCst) {
        return;
    }
    let weak = Arc::downgrade(state);
    let started = std::thread::Builder::new()
        .name("posthook-names".into())
        .spawn(move || refresh_names(&weak));
    if let Err(e) = started {
        error!("cannot start the name resolver: {e}; hooks with names stay inactive");
    }
}

fn refresh_names(state: &std::sync::Weak<ReloadState>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        error!("cannot start the name resolver's runtime; hooks with names stay inactive");
        return;
    };
    let mut client: Option<MattermostClient> = None;
    let mut last_ids = None;
    let mut last_failed: Vec<names::Unresolved> = Vec::new();
    loop {
        let Some(s) = state.upgrade() else { return };
        let Ok((config, named, generation)) = s
            .current
            .lock()
            .map(|c| (c.config.clone(), c.named.clone(), c.generation))
        else {
            return;
        };
        let stats = s.stats.clone();
        let nodes = s.nodes.clone();
        drop(s);
        let interval = config.limits.name_refresh;
        if named.is_empty() {
            std::thread::sleep(interval);
            continue;
        }
        let mm = match &client {
            Some(mm) => mm.clone(),
            None => match MattermostClient::from_config(&config, Arc::new(Stats::default())) {
                Ok(mm) => {
                    let mm = match nodes {
                        Some(nodes) => mm.with_nodes(nodes),
                        None => mm,
                    };
                    client = Some(mm.clone());
                    mm
                }
                Err(e) => {
                    error!("name resolver: {e}; retrying");
                    std::thread::sleep(names::RETRY);
                    continue;
                }
            },
        };
        let (resolved, failed) = rt.block_on(names::resolve(&mm, &named));
        Stats::add(&stats.name_failures, failed.len() as u64);
        // One line per name when its failure is new (not every retry).
        let same =
            |a: &names::Unresolved, b: &names::Unresolved| a.hook == b.hook && a.name == b.name;
        for f in failed
            .iter()
            .filter(|f| !last_failed.iter().any(|l| same(l, f)))
        {
            error!(
                "{f}; the hook is inactive until it resolves (tried again every {}s)",
                names::RETRY.as_secs()
            );
        }
        let ids = names::resolved_ids(&resolved);
        if last_ids.as_ref() != Some(&ids) {
            let Some(s) = state.upgrade() else { return };
            let current = s.current.lock();
            // A reload since this pass began has resolved its own hooks: keep them.
            if let Ok(current) = current.as_ref().map(|c| &**c) {
                if current.generation == generation {
                    match live_with(&current.config, Some(resolved), s.resolver.clone()) {
                        Ok(live) => {
                            s.live.store(Arc::new(live));
                            last_ids = Some(ids);
                        }
                        Err(e) => error!("name resolver: {e}"),
                    }
                }
            }
            drop(current);
        }
        // Logged once the hooks are in force.
        for f in last_failed
            .iter()
            .filter(|f| !failed.iter().any(|n| same(n, f)))
        {
            info!(
                "hook {}: {} resolves again; the hook is active",
                f.hook, f.name
            );
        }
        let wait = if failed.is_empty() {
            interval
        } else {
            interval.min(names::RETRY)
        };
        last_failed = failed;
        std::thread::sleep(wait);
    }
}

/// Reloads the config file on SIGHUP. An invalid file is rejected with a log line and the
/// running configuration stays.
struct Reloader {
    path: PathBuf,
    handle: Handle,
}

impl Reloader {
    fn reload(&self) {
        let name = self.path.display();
        let config = match Config::load(&self.path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload rejected, the running configuration stays: {e}");
                return;
            }
        };
        let masked = config.hooks_with_masked_secrets();
        if !masked.is_empty() {
            error!(
                "reload rejected, the running configuration stays: signing_secret of {} is masked (***)",
                masked.join(", ")
            );
            return;
        }
        match self.handle.reload(&config) {
            Ok(restart_only) => {
                info!("reloaded {name}: {} hooks", config.hooks.len());
                for section in restart_only {
                    warn!(
                        "reload: {section} changed in {name}; it takes effect only after a restart"
                    );
                }
            }
            Err(e) => error!("reload rejected, the running configuration stays: {e}"),
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                error!("cannot listen for SIGHUP, reloading is off: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hangup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    self.reload();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Ends a graceful shutdown as soon as the work is done: once Pingora has stopped accepting
/// and starts its grace period, a watcher thread waits until no request is in flight and no
/// job, delivery or reply is pending, logs what was delivered and dropped, and exits the
/// process (Pingora itself would sleep through the whole grace period). If the work is not
/// done within the grace period, Pingora's own shutdown continues and counts what it cuts.
pub fn exit_when_drained(server: &Server, handle: &Handle, grace: Duration) {
    let mut phases = server.watch_execution_phase();
    let handle = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("posthook-drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    // A little before Pingora's own grace period ends, so that the summary
                    // below is logged before Pingora stops the runtimes and the process.
                    let deadline =
                        Instant::now() + grace.saturating_sub(Duration::from_millis(250));
                    while !handle.is_idle() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let s = handle.stats.snapshot();
                    let summary = format!(
                        "due={} delivered={} failed={} dropped={} jobs_dropped={}",
                        s.deliveries_due,
                        s.deliveries_delivered,
                        s.deliveries_failed,
                        s.deliveries_dropped,
                        s.jobs_dropped
                    );
                    if handle.is_idle() {
                        info!("shutdown: all work done; exiting ({summary})");
                        log::logger().flush();
                        std::process::exit(0);
                    }
                    warn!("shutdown: grace period over with work pending ({summary}); stopping");
                    return;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        warn!("cannot watch the shutdown, the whole grace period will be waited: {e}");
    }
}

/// A posthook server running on its own thread (tests, benches, embedding).
pub struct Running {
    pub handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<ShutdownSignal>>,
    thread: Option<JoinHandle<()>>,
}

struct ChannelSignal(tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<ShutdownSignal>>>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        let rx = self.0.lock().await.take();
        match rx {
            Some(rx) => rx.await.unwrap_or(ShutdownSignal::FastShutdown),
            None => std::future::pending().await,
        }
    }
}

/// Starts posthook for `config` on a new thread. Must not be called from inside a tokio
/// runtime's worker thread (Pingora builds its own runtimes).
pub fn spawn(config: &Config, options: Options) -> Result<Running, BuildError> {
    let (server, handle) = build(config, options)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let signal = ChannelSignal(tokio::sync::Mutex::new(Some(rx)));
    let thread = std::thread::Builder::new()
        .name("posthook-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        })
        .map_err(BuildError::Thread)?;
    Ok(Running {
        handle,
        stop: Some(tx),
        thread: Some(thread),
    })
}

impl Running {
    /// Stops the server: `graceful` waits for the grace period, otherwise it stops at once.
    pub fn stop(mut self, graceful: bool) {
        self.shutdown(graceful);
    }

    fn shutdown(&mut self, graceful: bool) {
        if let Some(tx) = self.stop.take() {
            let signal = if graceful {
                ShutdownSignal::GracefulTerminate
            } else {
                ShutdownSignal::FastShutdown
            };
            let _ = tx.send(signal);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown(false);
    }
}
