//! The edge: posthook's own accept loop in front of Pingora's HTTP/1 sessions, so that hostile
//! or broken clients cost little and cannot stay for ever.
//!
//! Pingora's listening service gives every accepted connection a full proxy session at once
//! and bounds a request head only per read (a client trickling one header line at a time
//! stays as long as it likes). Here, instead:
//!
//! - at most `limits.max_connections` connections are open; one more is closed at once
//!   (counted), so that existing users keep working and a refused client learns it now;
//! - a new connection holds no session until its first request head is complete in the
//!   kernel's socket buffer ([`head::wait`]), and an idle keep-alive connection none until its
//!   next request starts to arrive ([`head::idle`]); each head has
//!   `server.header_timeout_seconds` in all (a keep-alive request's head is held to it by the
//!   stream as Pingora reads it, [`ClientStream::expect_head`]), the wait between requests
//!   `server.keepalive_timeout_seconds`;
//! - each request then runs through Pingora's own HTTP/1 code ([`HttpServerApp`]), with
//!   `server.body_timeout_seconds` for each read and write of a body (an upload that moves is
//!   never cut; a websocket keeps its own rule: no idle timeout, see `proxy`).

mod head;
mod stream;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use log::{error, info, warn};
use pingora::apps::{HttpPersistentSettings, HttpServerApp};
use pingora::protocols::http::ServerSession;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::stats::Stats;

pub use head::complete as head_complete;
use stream::ClientStream;

/// The listen backlog asked of the kernel (which caps it at `net.core.somaxconn`): Pingora's.
const BACKLOG: u32 = 65_535;

/// File descriptors kept for posthook's own use when the open files limit is what bounds
/// client connections: connections to Mattermost and to webhooks, the store, the metrics
/// listener. A quarter of a small limit.
const RESERVED_FDS: u64 = 1024;

/// Raises this process's soft limit of open files to its hard limit (as Go's runtime does:
/// the soft 1 024 that service managers set exists for `select()`, which nothing here uses)
/// and returns how many client connections may be open at once: `max_connections`, or fewer
/// when the limit leaves no room for them beside posthook's own connections, with a warning
/// (a flood would otherwise use up the descriptors posthook needs to reach Mattermost).
pub fn connection_cap(max_connections: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            warn!("cannot read the open files limit: {e}");
            return max_connections;
        }
    };
    let mut limit = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                info!("open files limit raised from {soft} to {hard}");
                limit = hard;
            }
            Err(e) => warn!("cannot raise the open files limit from {soft} to {hard}: {e}"),
        }
    }
    let room = limit.saturating_sub(RESERVED_FDS.min(limit / 4)).max(1);
    if (max_connections as u64) <= room {
        return max_connections;
    }
    warn!(
        "at most {room} client connections, not limits.max_connections = {max_connections}: \
         the open files limit is {limit} (raise it, e.g. systemd's LimitNOFILE={})",
        max_connections as u64 + RESERVED_FDS
    );
    usize::try_from(room).unwrap_or(max_connections)
}

/// How the edge treats connections (from `server` and `limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeSettings {
    /// The whole request head must arrive within this, from the connection's start or from
    /// the first byte of a later request.
    pub header_timeout: Duration,
    /// How long a connection may wait for its next request; zero: no keep-alive.
    pub keepalive_timeout: Duration,
    /// Each read or write of a request or response body must progress within this.
    pub body_timeout: Duration,
    /// Connections open at once; beyond it, new ones are closed at once.
    pub max_connections: usize,
}

/// Binds `addr` now (so that a taken port fails the start), listening once the service runs.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// The proxy's listening service: the accept loop and each connection's life.
pub struct EdgeService<A> {
    name: String,
    socket: Option<TcpSocket>,
    app: Option<Arc<A>>,
    settings: EdgeSettings,
    stats: Arc<Stats>,
}

impl<A> EdgeService<A> {
    pub fn new(socket: TcpSocket, app: A, settings: EdgeSettings, stats: Arc<Stats>) -> Self {
        EdgeService {
            name: "posthook proxy".into(),
            socket: Some(socket),
            app: Some(Arc::new(app)),
            settings,
            stats,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> Service for EdgeService<A> {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let (Some(socket), Some(app)) = (self.socket.take(), self.app.take()) else {
            return;
        };
        let listener = match socket.listen(BACKLOG) {
            Ok(l) => l,
            Err(e) => {
                error!("cannot listen: {e}");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        accept_loop(
            &listener,
            &app,
            &slots,
            self.settings,
            &self.stats,
            &mut shutdown,
        )
        .await;
        info!("no longer accepting connections");
        // Wakes sessions that Pingora holds waiting (none between requests: those are ours).
        app.http_cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }
}

async fn accept_loop<A: HttpServerApp + Send + Sync + 'static>(
    listener: &TcpListener,
    app: &Arc<A>,
    slots: &Arc<Semaphore>,
    settings: EdgeSettings,
    stats: &Arc<Stats>,
    shutdown: &mut ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Full: closed now rather than left waiting (see the README).
                    stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let conn = Conn {
                    app: app.clone(),
                    settings,
                    stats: stats.clone(),
                    _slot: slot,
                };
                conn.stats.connections_open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(conn.serve(tcp, peer, shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors (or another passing failure): wait instead of spinning.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client connection: its slot under the cap, released when it ends.
struct Conn<A> {
    app: Arc<A>,
    settings: EdgeSettings,
    stats: Arc<Stats>,
    _slot: OwnedSemaphorePermit,
}

impl<A> Drop for Conn<A> {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Conn<A> {
    /// Requests one after another on one connection, as Pingora's own loop runs them, each
    /// started only once its head is complete.
    async fn serve(self, tcp: TcpStream, peer: SocketAddr, mut shutdown: ShutdownWatch) {
        let s = self.settings;
        let accepted = SystemTime::now();
        let mut timer = Box::pin(tokio::time::sleep(s.header_timeout));
        if !self.head(&tcp, &mut timer, &mut shutdown).await {
            return;
        }
        let mut client = ClientStream::new(tcp, peer, accepted, timer, self.stats.clone());
        // Complete in the socket, or the first 64 KiB of a longer one: its deadline stands.
        client.expect_head(None);
        let mut persistent: Option<HttpPersistentSettings> = None;
        loop {
            let mut session = ServerSession::new_http1(Box::new(client));
            match persistent.take() {
                Some(p) => p.apply_to_session(&mut session),
                None => session.set_keepalive_reuses_remaining(
                    self.app
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                ),
            }
            // A keep-alive value is what lets Pingora hand the connection back for another
            // request (it also bounds each read of a head); the head's deadline and the wait
            // between requests are ours.
            if *shutdown.borrow() || s.keepalive_timeout.is_zero() {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(s.header_timeout.as_secs().max(1)));
            }
            session.set_read_timeout(Some(s.body_timeout));
            session.set_write_timeout(Some(s.body_timeout));
            let Some(reused) = self.app.process_new_http(session, &shutdown).await else {
                return;
            };
            let (stream, settings) = reused.consume();
            persistent = settings;
            match stream.into_any().downcast::<ClientStream>() {
                Ok(c) => client = *c,
                Err(_) => return,
            }
            // The next request: the stream holds its head to the deadline as Pingora reads
            // it (no peeking on a connection that has sent a whole head already).
            let (tcp, timer) = client.parts();
            match head::idle(tcp, s.keepalive_timeout, timer, &mut shutdown).await {
                head::Wait::Ready => {
                    client.expect_head(Some(tokio::time::Instant::now() + s.header_timeout))
                }
                head::Wait::IdleTimeout => {
                    self.stats
                        .keepalive_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Waits for a first complete request head on `tcp` (see [`head::wait`]); false when the
    /// connection is to be closed instead, counting why.
    async fn head(
        &self,
        tcp: &TcpStream,
        timer: &mut Pin<Box<Sleep>>,
        shutdown: &mut ShutdownWatch,
    ) -> bool {
        match head::wait(tcp, timer, shutdown).await {
            head::Wait::Ready => true,
            head::Wait::HeaderTimeout => {
                head::header_timeout(&self.stats);
                false
            }
            head::Wait::IdleTimeout | head::Wait::Closed | head::Wait::Shutdown => false,
        }
    }
}
