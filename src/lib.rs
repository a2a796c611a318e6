//! posthook: outgoing webhooks for an unmodified Mattermost server, from a proxy in front of it.
//!
//! ```text
//!  client ──► posthook (Pingora) ──────────────────────────► Mattermost
//!               │ POST /api/v4/posts: copy body, 201 → job        ▲
//!               ▼                                                 │ look-ups, replies
//!            dispatch (bounded queue) ─► rules ─► webhook ──► reply (bot token)
//! ```
//!
//! Data flows config → rules → proxy (observe) → dispatch (queue) → webhook (call) →
//! reply (translate) → mattermost (look-ups, post).
//!
//! # Layout
//! - [`config`]: YAML file model, `${NAME}` substitution, validation with file:line:col errors.
//! - [`rules`]: first-word extraction and the compiled hook index (pure).
//! - [`proxy`]: the Pingora `ProxyHttp`: passthrough, observation, fail-open.
//! - [`dispatch`]: background service: bounded queue, look-ups, concurrent deliveries.
//! - [`webhook`]: byte-exact payload encoding and the SSRF-guarded HTTP client.
//! - [`poster`]: posts the replies through the REST API with the bot token.
//! - [`reply`]: webhook answer decoding and reply building (pure).
//! - [`slack`]: Slack markup → Mattermost translation (pure).
//! - [`live`]: the reloadable part of the config (hooks, settings) behind one atomic swap.
//! - [`client`]: the pooled HTTP/1.1 client (hyper-util, rustls) under [`webhook`] and
//!   [`mattermost`], with the SSRF-filtering resolver and bounded, gzip-aware answer reads.
//! - [`mattermost`]: REST client with bounded, coalescing look-up caches.
//! - [`stats`]: counters for every outcome.
//! - [`metrics`]: the optional Prometheus endpoint (`metrics_listen`) over [`stats`].
//! - [`logging`]: the log policy that keeps dependencies' secrets out of the logs.
//! - [`app`]: wiring; the seam the binary, tests and benches use.

pub mod app;
pub mod client;
pub mod config;
pub mod dispatch;
pub mod live;
pub mod logging;
pub mod mattermost;
pub mod metrics;
pub mod poster;
pub mod proxy;
pub mod reply;
pub mod rules;
pub mod slack;
pub mod stats;
pub mod webhook;
