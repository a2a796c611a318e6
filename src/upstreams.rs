//! Several Mattermost nodes (`upstream: [URL, URL, …]`, a Mattermost HA cluster): requests are
//! balanced over the nodes by Pingora's load balancer (round robin), and an active health check
//! (`GET /api/v4/system/ping` on each node, every [`CHECK_EVERY`]) takes a node that fails it
//! out until it answers 200 again. posthook's own look-ups and replies pick their node the same
//! way. When every node fails its check, all of them are tried (fail open: Mattermost's own
//! answer, or Pingora's 502, reaches the client rather than a refusal of posthook's making).
//!
//! One `upstream` URL keeps the single peer of before: no balancer, no health check.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::lb::health_check::HealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{discovery, Backend, Backends, LoadBalancer};
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;

use crate::config::Upstream;
use crate::net::client::{Body, HttpClient};
use crate::net::guard::{GuardedResolver, SystemResolver};

/// How often each node's health is checked: a failing node stops getting requests within
/// this plus [`CHECK_TIMEOUT`], and gets them again as soon after it answers.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a node has to answer its check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The nodes, their addresses (as the balancer knows them) and the balancer.
pub struct Nodes {
    nodes: Vec<(SocketAddr, Upstream)>,
    lb: Arc<LoadBalancer<RoundRobin>>,
}

/// The health check: `GET {node}/api/v4/system/ping` answered 200, through posthook's client
/// (TLS with each node's own name).
struct Ping {
    nodes: Vec<(SocketAddr, Upstream)>,
    client: HttpClient,
}

#[async_trait]
impl HealthCheck for Ping {
    async fn check(&self, target: &Backend) -> pingora::Result<()> {
        let fail = |why: String| pingora::Error::explain(pingora::ErrorType::ConnectError, why);
        let PeerAddr::Inet(addr) = &target.addr else {
            return Err(fail("not an inet address".into()));
        };
        let node = self
            .nodes
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, n)| n)
            .ok_or_else(|| fail(format!("{addr}: not a configured node")))?;
        let request = http::Request::get(format!("{}/api/v4/system/ping", node.base_url))
            .body(Body::default())
            .map_err(|e| fail(e.to_string()))?;
        match tokio::time::timeout(CHECK_TIMEOUT, self.client.send(request)).await {
            Ok(Ok(answer)) if answer.status() == http::StatusCode::OK => Ok(()),
            Ok(Ok(answer)) => Err(fail(format!("ping answered {}", answer.status()))),
            Ok(Err(e)) => Err(fail(crate::net::client::describe(&e))),
            Err(_) => Err(fail("ping timed out".into())),
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        let node = match &target.addr {
            PeerAddr::Inet(a) => self
                .nodes
                .iter()
                .find(|(n, _)| n == a)
                .map_or_else(|| a.to_string(), |(_, n)| n.base_url.clone()),
            other => format!("{other:?}"),
        };
        if healthy {
            log::info!("upstream node {node} answers its health check again: back in rotation");
        } else {
            log::warn!("upstream node {node} fails its health check (GET /api/v4/system/ping): out of rotation");
        }
    }

    fn health_threshold(&self, _success: bool) -> usize {
        1
    }
}

impl Nodes {
    /// The balancer over `upstreams` (each resolved once, here), with its health check.
    pub fn new(upstreams: &[Upstream]) -> Result<Nodes, String> {
        let mut nodes = Vec::with_capacity(upstreams.len());
        for up in upstreams {
            let addr = (up.host.as_str(), up.port)
                .to_socket_addrs()
                .map_err(|e| format!("upstream {}: {e}", up.base_url))?
                .next()
                .ok_or_else(|| format!("upstream {}: no address", up.base_url))?;
            if nodes.iter().any(|(a, _)| *a == addr) {
                return Err(format!(
                    "upstream {}: the same address as another node",
                    up.base_url
                ));
            }
            nodes.push((addr, up.clone()));
        }
        let backends = nodes
            .iter()
            .map(|(a, _)| Backend::new(&a.to_string()))
            .collect::<pingora::Result<std::collections::BTreeSet<_>>>()
            .map_err(|e| e.to_string())?;
        let mut lb = LoadBalancer::<RoundRobin>::from_backends(Backends::new(
            discovery::Static::new(backends),
        ));
        let client = HttpClient::new(
            GuardedResolver::new(Arc::new(SystemResolver), None),
            CHECK_TIMEOUT,
            nodes.len(),
            Duration::from_secs(30),
        )
        .map_err(|e| e.to_string())?;
        lb.set_health_check(Box::new(Ping {
            nodes: nodes.clone(),
            client,
        }));
        lb.health_check_frequency = Some(CHECK_EVERY);
        lb.parallel_health_check = true;
        // The static backends are known at once (no I/O).
        futures_lite_update(&lb);
        Ok(Nodes {
            nodes,
            lb: Arc::new(lb),
        })
    }

    /// The balancer, to run as a background service (its health checks).
    pub fn balancer(&self) -> Arc<LoadBalancer<RoundRobin>> {
        self.lb.clone()
    }

    /// Index of the node for the next request: the next healthy one in rotation, or when none
    /// is healthy, the next one regardless.
    pub fn pick(&self) -> usize {
        let chosen = self
            .lb
            .select(b"", 256)
            .or_else(|| self.lb.select_with(b"", 256, |_, _| true));
        chosen
            .and_then(|b| match b.addr {
                PeerAddr::Inet(a) => self.nodes.iter().position(|(n, _)| *n == a),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// The node at `i`.
    pub fn node(&self, i: usize) -> &Upstream {
        &self.nodes[i.min(self.nodes.len() - 1)].1
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// Runs the balancer's first update (static discovery completes without waiting).
fn futures_lite_update(lb: &LoadBalancer<RoundRobin>) {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut update = std::pin::pin!(lb.update());
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Err(e)) = update.as_mut().poll(&mut cx) {
        log::error!("upstream nodes: {e}");
    }
}
