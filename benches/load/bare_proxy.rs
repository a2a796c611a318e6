//! Scenario E, the framework's floor: a Pingora proxy with nothing but `upstream_peer`. It runs
//! in a child, this bench's binary re-executed with `--serve-bare-proxy`: Pingora's server never
//! returns and owns its process, and as a child its CPU and memory are measured per process just
//! like posthook's and nginx's. It exits when the parent's end of its stdin closes, so it cannot
//! outlive a parent that was killed.

use std::io::{self, Read};
use std::time::Duration;

struct Bare {
    peer: pingora::prelude::HttpPeer,
}

#[async_trait::async_trait]
impl pingora::proxy::ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut pingora::proxy::Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<pingora::prelude::HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

/// The framework's floor: a `ProxyHttp` with only `upstream_peer`, on the ServerConf and peer
/// options posthook uses. Exits when the parent closes our stdin.
pub fn serve_bare_proxy(listen: &str, upstream: &str, threads: usize) -> ! {
    std::thread::spawn(|| {
        let mut b = [0u8; 64];
        loop {
            match io::stdin().read(&mut b) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
    let (host, port) = upstream.rsplit_once(':').expect("host:port");
    let port: u16 = port.parse().expect("port");
    let mut peer = pingora::prelude::HttpPeer::new((host, port), false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.total_connection_timeout = Some(Duration::from_secs(5));
    let conf = pingora::server::configuration::ServerConf {
        threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        upstream_keepalive_pool_size: 128,
        ..Default::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { peer });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever()
}
