//! posthook: outgoing webhooks for an unmodified Mattermost server, from a proxy in front of it.
//!
//! ```text
//!  client ──► posthook (Pingora) ──────────────────────────► Mattermost
//!               │ POST /api/v4/posts: copy body, 201 → job        ▲
//!               ▼                                                 │ look-ups, replies
//!            dispatch (bounded queue) ─► rules ─► webhook ──► reply (bot token)
//! ```
//!
//! # Layout
//!
//! Data flows config → rules → proxy (observe) → dispatch (queue) → webhook (call) →
//! reply (translate) → mattermost (look-ups, post). Modules are listed from the top of that
//! flow's wiring down to the leaves; a module imports only modules listed after it
//! (`tests/layout.rs` checks that no import runs back up and that no module is circular).
//!
//! - [`demo`]: `posthook demo`: posthook in front of an embedded, in-memory Mattermost API
//!   ([`demo::model`], [`demo::routes`], shared with the tests' stand-in) and an example webhook.
//! - [`dryrun`]: `posthook match`: which hooks a message fires and the exact requests, unsent.
//! - [`cli`]: the admin's commands on the delivery store (`posthook deliveries`, `posthook
//!   hooks`).
//! - [`app`]: wiring: the proxy service, the dispatcher, metrics, the SIGHUP reloader, the
//!   drain on SIGTERM; the seam the binary, tests and benches use ([`app::build`],
//!   [`app::spawn`]).
//! - [`metrics`]: the optional Prometheus endpoint (`metrics_listen`) over [`stats`].
//! - [`proxy`]: the Pingora `ProxyHttp`: passthrough, observation, fail-open.
//! - [`edge`]: the accept loop in front of Pingora's sessions: the connection cap, the
//!   request head and keep-alive deadlines, body timeouts; no session before a complete head.
//! - [`dispatch`]: the background service, in stages: admit → resolve channel → match →
//!   fan out → resolve names → deliver; [`dispatch::queue`] is the bounded hand-over from the
//!   proxy, `due` the exactly-once accounting, `created` the decoding of the 201.
//! - [`live`]: the reloadable part of the config (hooks, index, webhook client, reply
//!   settings) behind one atomic swap.
//! - [`names`]: hooks' `team` and `channel` names, resolved and refreshed into ids.
//! - [`reply`]: the webhook's answer → reply posts: [`reply::decode`], [`reply::slack`],
//!   [`reply::build`] (pure) and [`reply::poster`] (I/O; the dispatcher's answer sink).
//! - [`webhook`]: byte-exact payload encoding and sending, with Go's redirect rules; a
//!   [`webhook::Delivery`] names one callback request.
//! - [`store`]: where deliveries are kept (memory, SQLite): intake before the first attempt,
//!   attempts, leases and claims, the delivery log the CLI reads.
//! - [`rules`]: first-word extraction and the compiled hook index (pure).
//! - [`mattermost`]: the REST client with bounded, coalescing look-up caches;
//!   [`mattermost::model`]: Mattermost's own shapes and paths.
//! - [`upstreams`]: several Mattermost nodes: Pingora's round-robin balancer and the nodes'
//!   health check, for the proxy and for posthook's own requests.
//! - [`net`]: the pooled HTTP client ([`net::client`]) and the SSRF guard ([`net::guard`]).
//! - [`config`]: the YAML file model ([`config::file`]), validation into [`Config`], errors as
//!   `FILE:LINE:COL: field: message`.
//! - [`signing`]: Standard Webhooks signatures (`signing_secret`) and message ids.
//! - [`go`]: Go-compatibility helpers shared by several stages (JSON key folding, QueryEscape,
//!   JSON string escaping, lossy UTF-8).
//! - [`stats`]: counters for every outcome; [`logging`]: the log policy that keeps secrets out.

pub mod demo;

pub mod app;
pub mod cli;
pub mod dryrun;
pub mod metrics;
pub mod proxy;

pub mod edge;

pub mod dispatch;
pub mod live;
pub mod names;

pub mod reply;
pub mod webhook;

pub mod store;

pub mod mattermost;
pub mod rules;
pub mod upstreams;

pub mod net;

pub mod config;
pub mod signing;

pub mod go;
pub mod logging;
pub mod stats;

pub use app::{build, spawn, BuildError, Handle, Options, Running};
pub use config::{Config, ConfigError};
