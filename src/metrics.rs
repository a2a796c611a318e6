//! Metrics: `GET /metrics` on `metrics_listen`, in the Prometheus text exposition format
//! (version 0.0.4), rendered by hand from [`Stats`] and the dispatch queue's gauge.
//!
//! The metric names are a fixed interface that dashboards and alerts read: rename nothing.
//! Every labelled series is written even at 0, so a query never finds a missing series.
//!
//! The endpoint is a Pingora listening service of its own (a [`ServeHttp`] app on one thread)
//! rather than a hand-rolled tokio listener: Pingora already parses HTTP, keeps connections
//! alive, stops accepting at shutdown and runs the service on its own runtime, so a scrape
//! never competes with the proxy's worker threads and no HTTP code is added here. The text
//! format is simple enough that a client crate would add dependencies and a global registry
//! for nothing: the counters already live in [`Stats`].
//!
//! Bind it to loopback or a private interface: it needs no credentials and has no connection
//! limit of its own.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::{HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

use crate::dispatch::QueueGauge;
use crate::stats::{Snapshot, Stats};

/// The only path served.
pub const METRICS_PATH: &str = "/metrics";

/// The Prometheus text exposition format, version 0.0.4.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4";

/// The queue gauges' values at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueReading {
    /// Jobs waiting in the dispatch queue.
    pub depth: usize,
    /// The queue's bound.
    pub capacity: usize,
}

/// Renders every metric from `s` and `queue` in the text exposition format.
pub fn render(s: &Snapshot, queue: QueueReading) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let w = &mut out;

    counter(
        w,
        "posthook_posts_observed_total",
        "Posts created through posthook: POST /api/v4/posts exchanges Mattermost answered 201, matching a hook or not.",
        s.posts_observed,
    );
    counter(
        w,
        "posthook_edits_observed_total",
        "Edits examined: PUT /api/v4/posts/{id} and /patch exchanges Mattermost answered 200 while some hook listed edited.",
        s.edits_observed,
    );
    counter(
        w,
        "posthook_bodies_too_large_total",
        "Post request bodies not inspected because they exceeded limits.max_inspected_body_bytes.",
        s.bodies_too_large,
    );
    counter(
        w,
        "posthook_posts_unparsed_total",
        "Created posts (201 bodies) that could not be decoded or parsed.",
        s.posts_unparsed,
    );
    counter(
        w,
        "posthook_jobs_dropped_total",
        "Created posts dropped before the dispatcher examined them: queue full or closed, or still queued at shutdown.",
        s.jobs_dropped,
    );
    counter(
        w,
        "posthook_own_posts_skipped_total",
        "Posts skipped because posthook's bot created them (or the bot could not be looked up).",
        s.own_posts_skipped,
    );
    counter(
        w,
        "posthook_duplicate_posts_skipped_total",
        "Posts skipped as a repeat of a post id already handled.",
        s.duplicate_posts_skipped,
    );
    counter(
        w,
        "posthook_non_public_posts_skipped_total",
        "Posts skipped at the channel look-up: no enabled hook fires in their channel type (by default: not public).",
        s.non_public_skipped,
    );
    counter(
        w,
        "posthook_hook_matches_total",
        "Hook matches, one per hook per post.",
        s.hook_matches,
    );
    counter(
        w,
        "posthook_deliveries_due_total",
        "Callback requests that became due, one per matching hook per callback URL; each ends in posthook_deliveries_total.",
        s.deliveries_due,
    );
    labelled(
        w,
        "posthook_deliveries_total",
        "counter",
        "Due callback requests by outcome: delivered (an answer, any status; with retry: a 2xx or one that yields a reply), failed (no answer, or with retry: after the last attempt), dropped (never sent, or cut off at shutdown or while waiting for a retry).",
        "outcome",
        &[
            ("delivered", s.deliveries_delivered),
            ("failed", s.deliveries_failed),
            ("dropped", s.deliveries_dropped),
        ],
    );
    labelled(
        w,
        "posthook_delivery_attempts_total",
        "counter",
        "Attempts of callback requests: delivered (the last of a delivered request), retry (to be tried again: hooks with retry), failed (the last of a failed request).",
        "outcome",
        &[
            ("delivered", s.attempts_delivered),
            ("retry", s.attempts_retry),
            ("failed", s.attempts_failed),
        ],
    );
    gauge(
        w,
        "posthook_deliveries_pending",
        "Deliveries waiting for a retry (at most limits.max_pending_deliveries).",
        s.deliveries_pending,
    );
    gauge(
        w,
        "posthook_hooks_disabled",
        "Hooks disabled by a 410 Gone answer.",
        s.hooks_disabled,
    );
    labelled(
        w,
        "posthook_notifications_total",
        "counter",
        "Direct messages of hooks' notify: sent, or failed (user look-up, channel or post refused).",
        "outcome",
        &[
            ("sent", s.notifications_sent),
            ("failed", s.notifications_failed),
        ],
    );
    counter(
        w,
        "posthook_store_errors_total",
        "Store operations that failed (writes, claims, reads); deliveries go on from memory.",
        s.store_errors,
    );
    counter(
        w,
        "posthook_deliveries_undurable_total",
        "Deliveries sent without having been written to the store (it failed or did not commit in time).",
        s.deliveries_undurable,
    );
    counter(
        w,
        "posthook_deliveries_refused_total",
        "Failed deliveries refused by the address guard (untrusted internal address), never sent; included in outcome=\"failed\".",
        s.deliveries_refused,
    );
    histogram(w, s);
    labelled(
        w,
        "posthook_replies_total",
        "counter",
        "Webhook answers by reply outcome: posted, failed (undecodable, unbuildable or refused by Mattermost), none (no reply asked).",
        "outcome",
        &[
            ("posted", s.replies_posted),
            ("failed", s.replies_failed),
            ("none", s.replies_none),
        ],
    );
    counter(
        w,
        "posthook_lookups_total",
        "Look-ups asked for (channel, team, user, bot; each id of a batched user look-up).",
        s.lookups,
    );
    counter(
        w,
        "posthook_lookup_requests_total",
        "HTTP requests sent to Mattermost for look-ups (a batched user look-up is one).",
        s.lookup_requests,
    );
    counter(
        w,
        "posthook_lookup_failures_total",
        "Look-ups that failed, with or without a request of their own.",
        s.lookup_failures,
    );
    counter(
        w,
        "posthook_lookup_cache_hits_total",
        "Successful look-ups answered without a request of their own: from the cache, or by joining an identical request in flight.",
        s.lookup_cache_hits,
    );
    counter(
        w,
        "posthook_name_failures_total",
        "Hook names (team, channel) that did not resolve, one per name per attempt; the hook is inactive until its names resolve.",
        s.name_failures,
    );
    gauge(
        w,
        "posthook_connections_open",
        "Client connections open now (limits.max_connections bounds them).",
        s.connections_open,
    );
    counter(
        w,
        "posthook_connections_refused_total",
        "Client connections closed at once because limits.max_connections were open.",
        s.connections_refused,
    );
    labelled(
        w,
        "posthook_connection_timeouts_total",
        "counter",
        "Client connections closed by a timeout: header (no complete request head within server.header_timeout_seconds), keepalive (no next request within server.keepalive_timeout_seconds).",
        "phase",
        &[
            ("header", s.header_timeouts),
            ("keepalive", s.keepalive_timeouts),
        ],
    );
    gauge(
        w,
        "posthook_queue_depth",
        "Created posts waiting in the dispatch queue.",
        queue.depth as u64,
    );
    gauge(
        w,
        "posthook_queue_capacity",
        "The dispatch queue's bound (limits.queue_capacity).",
        queue.capacity as u64,
    );
    out
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(w: &mut String, name: &str, help: &str, value: u64) {
    header(w, name, "counter", help);
    let _ = writeln!(w, "{name} {value}");
}

fn gauge(w: &mut String, name: &str, help: &str, value: u64) {
    header(w, name, "gauge", help);
    let _ = writeln!(w, "{name} {value}");
}

fn labelled(
    w: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    header(w, name, kind, help);
    for (v, n) in values {
        let _ = writeln!(w, "{name}{{{label}=\"{v}\"}} {n}");
    }
}

fn histogram(w: &mut String, s: &Snapshot) {
    const NAME: &str = "posthook_delivery_duration_seconds";
    header(
        w,
        NAME,
        "histogram",
        "Time from sending a callback request to its answer or failure; every delivery that was sent (not those refused by the address guard).",
    );
    let h = &s.delivery_duration;
    for (bound, n) in h.cumulative() {
        match bound {
            Some(b) => {
                let _ = writeln!(w, "{NAME}_bucket{{le=\"{}\"}} {n}", b.as_secs_f64());
            }
            None => {
                let _ = writeln!(w, "{NAME}_bucket{{le=\"+Inf\"}} {n}");
            }
        }
    }
    let _ = writeln!(w, "{NAME}_sum {}", h.sum_seconds());
    // The +Inf bucket, so that one scrape is always self-consistent.
    let _ = writeln!(w, "{NAME}_count {}", h.count());
}

/// The `ServeHttp` app behind the endpoint.
pub struct MetricsApp {
    stats: Arc<Stats>,
    queue: QueueGauge,
}

impl MetricsApp {
    /// An app reading `stats` and `queue` at every scrape.
    pub fn new(stats: Arc<Stats>, queue: QueueGauge) -> MetricsApp {
        MetricsApp { stats, queue }
    }

    fn scrape(&self) -> String {
        render(
            &self.stats.snapshot(),
            QueueReading {
                depth: self.queue.depth(),
                capacity: self.queue.capacity(),
            },
        )
    }
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let status = if req.uri.path() != METRICS_PATH {
            StatusCode::NOT_FOUND
        } else if req.method != Method::GET {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::OK
        };
        let body = if status == StatusCode::OK {
            self.scrape().into_bytes()
        } else {
            // A request body, if any, is never read: close instead of reusing the connection.
            session.set_keepalive(None);
            format!("{}\n", status.canonical_reason().unwrap_or_default()).into_bytes()
        };
        let mut response = Response::new(Vec::new());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_TEXT));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("GET"));
        }
        *response.body_mut() = body;
        response
    }
}

/// The metrics service listening on `addr`, on one thread of its own.
pub fn service(addr: SocketAddr, app: MetricsApp) -> Service<MetricsApp> {
    let mut service = Service::new("metrics".to_string(), app);
    service.threads = Some(1);
    service.add_tcp(&addr.to_string());
    service
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_series_is_present_with_help_and_type_even_at_zero() {
        let text = render(&Snapshot::default(), QueueReading::default());
        for (name, kind) in [
            ("posthook_posts_observed_total", "counter"),
            ("posthook_edits_observed_total", "counter"),
            ("posthook_hook_matches_total", "counter"),
            ("posthook_deliveries_due_total", "counter"),
            ("posthook_deliveries_total", "counter"),
            ("posthook_delivery_attempts_total", "counter"),
            ("posthook_deliveries_pending", "gauge"),
            ("posthook_hooks_disabled", "gauge"),
            ("posthook_store_errors_total", "counter"),
            ("posthook_notifications_total", "counter"),
            ("posthook_deliveries_undurable_total", "counter"),
            ("posthook_replies_total", "counter"),
            ("posthook_delivery_duration_seconds", "histogram"),
            ("posthook_queue_depth", "gauge"),
            ("posthook_lookups_total", "counter"),
            ("posthook_lookup_requests_total", "counter"),
            ("posthook_lookup_failures_total", "counter"),
            ("posthook_lookup_cache_hits_total", "counter"),
            ("posthook_name_failures_total", "counter"),
            ("posthook_connections_open", "gauge"),
            ("posthook_connections_refused_total", "counter"),
            ("posthook_connection_timeouts_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} {kind}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        for outcome in ["delivered", "failed", "dropped"] {
            let series = format!("posthook_deliveries_total{{outcome=\"{outcome}\"}}");
            assert_eq!(value(&text, &series), Some("0"), "{series}");
        }
        for outcome in ["posted", "failed", "none"] {
            let series = format!("posthook_replies_total{{outcome=\"{outcome}\"}}");
            assert_eq!(value(&text, &series), Some("0"), "{series}");
        }
        assert!(text.ends_with('\n'));
        // Every line is a comment or `name[{labels}] value`.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.split(' ').count() == 2,
                "{line:?}"
            );
        }
    }

    #[test]
    fn histogram_lines_are_cumulative_with_inf_sum_and_count() {
        let stats = Stats::default();
        stats.delivery_duration.observe(Duration::from_millis(3));
        stats.delivery_duration.observe(Duration::from_millis(700));
        stats.delivery_duration.observe(Duration::from_secs(40));
        let text = render(&stats.snapshot(), QueueReading::default());
        let h = "posthook_delivery_duration_seconds";
        for (le, n) in [
            ("0.005", "1"),
            ("0.01", "1"),
            ("0.5", "1"),
            ("1", "2"),
            ("2.5", "2"),
            ("30", "2"),
            ("+Inf", "3"),
        ] {
            assert_eq!(
                value(&text, &format!("{h}_bucket{{le=\"{le}\"}}")),
                Some(n),
                "le={le}"
            );
        }
        assert_eq!(value(&text, &format!("{h}_count")), Some("3"));
        assert_eq!(value(&text, &format!("{h}_sum")), Some("40.703"));
        let buckets = text
            .lines()
            .filter(|l| l.starts_with(h) && l.contains("_bucket"))
            .count();
        assert_eq!(buckets, 13, "12 bounds from 5 ms to 30 s, and +Inf");
    }

    #[test]
    fn queue_gauges_show_the_reading() {
        let text = render(
            &Snapshot::default(),
            QueueReading {
                depth: 7,
                capacity: 100,
            },
        );
        assert_eq!(value(&text, "posthook_queue_depth"), Some("7"));
        assert_eq!(value(&text, "posthook_queue_capacity"), Some("100"));
    }
}
