//! The configs the children start from: posthook's (the shipped defaults written out, plus the
//! generated hooks) and nginx's (as the Mattermost docs configure it, with the direct, split and
//! chain servers).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use crate::fixtures::{BOT_TOKEN, HOOKS};
use crate::procfs::is_root;

/// The hooks: Mattermost's mix as in benches/micro.rs: 10% bound to a channel (not the one the
/// load posts to), 30% `starts_with` `!cmdN`, 60% `exact` `#wordN`/`#altN`; half form, half
/// JSON; every callback to `sink`.
pub fn hooks_yaml(sink: SocketAddr) -> String {
    let mut y = String::with_capacity(HOOKS * 200);
    y.push_str("hooks:\n");
    for i in 0..HOOKS {
        let _ = writeln!(y, "  - display_name: \"hook {i}\"");
        match i % 10 {
            0 => {
                let _ = writeln!(y, "    channel_id: \"chan{i:022}\"");
            }
            1..=3 => {
                let _ = writeln!(
                    y,
                    "    trigger_words: [\"!cmd{i}\"]\n    trigger_when: starts_with"
                );
            }
            _ => {
                let _ = writeln!(y, "    trigger_words: [\"#word{i}\", \"#alt{i}\"]");
            }
        }
        let ct = if i % 2 == 0 {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let _ = writeln!(
            y,
            "    callback_urls: [\"http://{sink}/hooks/{i}\"]\n    content_type: \"{ct}\"\n    token: \"hooktoken{i:017}\""
        );
    }
    y
}

/// posthook's config: the shipped defaults, written out, with loopback callbacks allowed.
pub fn posthook_yaml(
    listen: SocketAddr,
    upstream: SocketAddr,
    threads: usize,
    hooks: &str,
) -> String {
    format!(
        "listen: \"{listen}\"
upstream: \"http://{upstream}\"
bot_token: \"{BOT_TOKEN}\"
settings:
  allowed_untrusted_internal_connections: [\"127.0.0.1\"]
  outgoing_integration_requests_timeout: 30
server:
  threads: {threads}
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
  upstream_connect_timeout_seconds: 5
  upstream_keepalive_pool_size: 128
limits:
  max_inspected_body_bytes: 1048576
  max_decoded_body_bytes: 4194304
  queue_capacity: 10000
  max_concurrent_jobs: 64
  max_concurrent_deliveries: 256
  lookup_cache_ttl_seconds: 60
  lookup_cache_max_entries: 10000
  lookup_timeout_seconds: 10
{hooks}"
    )
}

pub struct NginxPorts {
    pub direct: SocketAddr,
    pub split: SocketAddr,
    pub chain: SocketAddr,
}

/// nginx as the Mattermost docs configure it (keep-alive upstream, HTTP/1.1, forwarding
/// headers), with three servers: straight to the upstream (D), the split deployment (only
/// `POST /api/v4/posts` to posthook) and the chain (everything through posthook).
pub fn nginx_conf(
    dir: &Path,
    workers: usize,
    upstream: SocketAddr,
    posthook: SocketAddr,
    p: &NginxPorts,
) -> String {
    let user = if is_root() { "user root;\n" } else { "" };
    let d = dir.display();
    let proxy = "proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;";
    format!(
        "{user}worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/client_body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  upstream mattermost {{ server {upstream}; keepalive 128; keepalive_requests 1000000; }}
  upstream posthook {{ server {posthook}; keepalive 128; keepalive_requests 1000000; }}
  map $request_method $posts_backend {{ POST posthook; default mattermost; }}
  server {{
    listen {direct};
    location / {{ proxy_pass http://mattermost; {proxy} }}
  }}
  server {{
    listen {split};
    location = /api/v4/posts {{ proxy_pass http://$posts_backend; {proxy} }}
    location / {{ proxy_pass http://mattermost; {proxy} }}
  }}
  server {{
    listen {chain};
    location / {{ proxy_pass http://posthook; {proxy} }}
  }}
}}
",
        direct = p.direct,
        split = p.split,
        chain = p.chain,
    )
}
