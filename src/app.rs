//! App: wiring. Builds the Pingora server from a validated [`Config`]: the proxy service on
//! `listen`, the dispatcher as a background service and, with `metrics_listen`, the metrics
//! endpoint. This is the seam the binary, the tests and the benches all use; [`spawn`] runs a
//! server on a thread of its own.

use std::sync::Arc;
use std::thread::JoinHandle;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use thiserror::Error;

use crate::config::Config;
use crate::dispatch::{AnswerSink, Dispatcher};
use crate::mattermost::MattermostClient;
use crate::metrics::MetricsApp;
use crate::proxy::Proxy;
use crate::rules::HookIndex;
use crate::stats::Stats;
use crate::webhook::{AddressPolicy, Resolver, SystemResolver, WebhookClient};

/// Why the server could not be built.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("listen {addr}: cannot listen: {error}")]
    Listen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("metrics_listen {addr}: cannot listen: {error}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
}

/// Replaceable parts, for tests.
pub struct Options {
    /// Resolves callback host names (the SSRF guard filters its answers).
    pub resolver: Arc<dyn Resolver>,
    /// Receives every webhook answer; `None` uses the reply poster.
    pub answer_sink: Option<Arc<dyn AnswerSink>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resolver: Arc::new(SystemResolver),
            answer_sink: None,
        }
    }
}

/// What a running posthook exposes to its embedder.
#[derive(Clone)]
pub struct Handle {
    pub stats: Arc<Stats>,
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

    let mm = MattermostClient::new(
        &config.upstream.base_url,
        &config.bot_token,
        config.limits.lookup_timeout,
        config.limits.lookup_cache_ttl,
        config.limits.lookup_cache_max_entries,
        stats.clone(),
    )
    .map_err(|e| BuildError::Client(e.to_string()))?;
    let webhooks = WebhookClient::new(
        AddressPolicy::new(&config.settings.allowed_untrusted_internal_connections),
        options.resolver,
        config.settings.outgoing_integration_requests_timeout,
    )
    .map_err(|e| BuildError::Client(e.to_string()))?;
    let sink = match options.answer_sink {
        Some(s) => s,
        None => Arc::new(crate::poster::Poster::new(
            config,
            mm.clone(),
            stats.clone(),
        )),
    };

    let index = Arc::new(HookIndex::new(&config.hooks));
    let (dispatcher, handle) =
        Dispatcher::new(config, index.clone(), mm, webhooks, stats.clone(), sink);
    if let Some(addr) = config.metrics_listen {
        // Pingora binds in the service's own thread and only panics there when it cannot:
        // try the address here first, so that a taken port fails the start, loudly.
        std::net::TcpListener::bind(addr)
            .map_err(|error| BuildError::MetricsListen { addr, error })?;
        let app = MetricsApp::new(stats.clone(), handle.queue_gauge());
        server.add_service(crate::metrics::service(addr, app));
    }
    // As for metrics_listen: a taken port is an error here, not a panic in Pingora's thread.
    std::net::TcpListener::bind(config.listen).map_err(|error| BuildError::Listen {
        addr: config.listen,
        error,
    })?;
    let proxy = Proxy::new(config, index, handle, stats.clone());
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, proxy);
    service.add_tcp(&config.listen.to_string());
    server.add_service(service);
    server.add_service(background_service("webhook dispatcher", dispatcher));
    Ok((server, Handle { stats }))
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
        .map_err(|e| BuildError::Client(e.to_string()))?;
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
