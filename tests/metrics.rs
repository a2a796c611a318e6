//! End to end: the Prometheus endpoint on `metrics_listen`, the delivery accounting it shows
//! (`due == delivered + failed + dropped`), one log line per delivery, and no secret in any
//! log line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use harness::*;
use support::*;

// ---------------------------------------------------------------------------------------------
// Log capture: one logger for this test binary, at trace level, bounded.
// ---------------------------------------------------------------------------------------------

/// Lines kept at most; a run that logs more fails the secrets test instead of growing.
const MAX_LOG_LINES: usize = 200_000;

struct Capture {
    lines: Mutex<Vec<String>>,
    overflowed: std::sync::atomic::AtomicBool,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = format!("{} {} {}", record.level(), record.target(), record.args());
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() < MAX_LOG_LINES {
            lines.push(line);
        } else {
            self.overflowed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// The captured log lines of the whole test binary; installs the capture on first use.
/// The capture sits behind posthook's own log policy, exactly as the binary's logger does.
fn logs() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::new(Capture {
            lines: Mutex::new(Vec::new()),
            overflowed: std::sync::atomic::AtomicBool::new(false),
        }));
        log::set_boxed_logger(Box::new(posthook::logging::SecretSafe::new(Forward(
            capture,
        ))))
        .expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Trace);
        capture
    })
}

/// Forwards to the leaked capture (the logger must own a `Log`).
struct Forward(&'static Capture);

impl log::Log for Forward {
    fn enabled(&self, m: &log::Metadata) -> bool {
        self.0.enabled(m)
    }
    fn log(&self, r: &log::Record) {
        self.0.log(r)
    }
    fn flush(&self) {}
}

impl Capture {
    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Captured lines containing every one of `parts`.
    fn matching(&self, parts: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Scraping
// ---------------------------------------------------------------------------------------------

/// One scrape: every sample line as `series -> value` (series with its labels, as written).
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of `series`; panics, showing the scrape, when it is missing.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    /// The value of `series`, which must be a whole number.
    fn n(&self, series: &str) -> u64 {
        let v = self.get(series);
        assert_eq!(v.fract(), 0.0, "{series} = {v}");
        v as u64
    }

    fn due(&self) -> u64 {
        self.n("posthook_deliveries_due_total")
    }
    fn delivered(&self) -> u64 {
        self.n("posthook_deliveries_total{outcome=\"delivered\"}")
    }
    fn failed(&self) -> u64 {
        self.n("posthook_deliveries_total{outcome=\"failed\"}")
    }
    fn dropped(&self) -> u64 {
        self.n("posthook_deliveries_total{outcome=\"dropped\"}")
    }
    fn refused(&self) -> u64 {
        self.n("posthook_deliveries_refused_total")
    }
    fn reply(&self, outcome: &str) -> u64 {
        self.n(&format!("posthook_replies_total{{outcome=\"{outcome}\"}}"))
    }
    fn histogram_count(&self) -> u64 {
        self.n("posthook_delivery_duration_seconds_count")
    }

    /// The accounting identity, and the histogram holding exactly the deliveries sent.
    fn assert_accounted(&self) {
        assert_eq!(
            self.due(),
            self.delivered() + self.failed() + self.dropped(),
            "due == delivered + failed + dropped:\n{}",
            self.text
        );
        assert_eq!(
            self.histogram_count(),
            self.delivered() + self.failed() - self.refused(),
            "one duration per delivery sent (delivered, or failed but not refused):\n{}",
            self.text
        );
        assert_eq!(
            self.histogram_count(),
            self.n("posthook_delivery_duration_seconds_bucket{le=\"+Inf\"}"),
            "_count is the +Inf bucket"
        );
    }
}

/// `GET path` on the metrics endpoint; returns status, content type and body.
async fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, Option<String>, String) {
    let r = http_request(addr, method, path, &[], b"").await;
    (
        r.status,
        r.header("content-type").map(str::to_string),
        r.body_str(),
    )
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, content_type, text) = get(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4"));
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} written twice"
        );
    }
    Scrape { text, samples }
}

/// Scrapes until `f` holds and the accounting identity does too (deliveries settle
/// asynchronously), then checks the identity; panics with the last scrape at the deadline.
async fn scrape_until(addr: SocketAddr, what: &str, f: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + T;
    loop {
        let s = scrape(addr).await;
        if f(&s) && s.due() == s.delivered() + s.failed() + s.dropped() {
            s.assert_accounted();
            return s;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last scrape:\n{}", s.text);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn hook(name: &str, trigger: &str, urls: &[String]) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    hook_yaml(&[
        ("display_name", &format!("\"{name}\"")),
        ("trigger_words", &format!("[\"{trigger}\"]")),
        ("callback_urls", &format!("[{}]", urls.join(", "))),
        ("token", "\"hooktokensecret\""),
    ])
}

/// Starts posthook with a metrics endpoint; returns it and the endpoint's address.
async fn posthook_with_metrics(upstream: &str, extra: &str) -> (Posthook, SocketAddr) {
    logs();
    start_with_metrics(upstream, extra).await
}

/// The [`Fixture`] of this file: the log capture is installed before anything starts (finish
/// with `start_with_metrics`).
fn fixture<'a>() -> FixtureBuilder<'a> {
    logs();
    Fixture::builder()
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    free_port()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_only_get_metrics_and_starts_at_zero() {
    let mm = standin().await;
    let (ph, metrics) = posthook_with_metrics(&mm.base_url(), "").await;
    let s = scrape(metrics).await;
    for series in [
        "posthook_posts_observed_total",
        "posthook_hook_matches_total",
        "posthook_deliveries_due_total",
        "posthook_deliveries_total{outcome=\"delivered\"}",
        "posthook_deliveries_total{outcome=\"failed\"}",
        "posthook_deliveries_total{outcome=\"dropped\"}",
        "posthook_replies_total{outcome=\"posted\"}",
        "posthook_replies_total{outcome=\"failed\"}",
        "posthook_replies_total{outcome=\"none\"}",
        "posthook_delivery_duration_seconds_bucket{le=\"0.005\"}",
        "posthook_delivery_duration_seconds_bucket{le=\"30\"}",
        "posthook_delivery_duration_seconds_bucket{le=\"+Inf\"}",
        "posthook_delivery_duration_seconds_sum",
        "posthook_delivery_duration_seconds_count",
        "posthook_queue_depth",
        "posthook_lookups_total",
        "posthook_lookup_requests_total",
        "posthook_lookup_failures_total",
        "posthook_lookup_cache_hits_total",
    ] {
        assert_eq!(s.get(series), 0.0, "{series} starts at 0");
    }
    assert_eq!(s.n("posthook_queue_capacity"), 10_000);
    for name in [
        "posthook_deliveries_total",
        "posthook_delivery_duration_seconds",
        "posthook_queue_depth",
    ] {
        assert!(s.text.contains(&format!("# HELP {name} ")), "{name}");
    }
    assert!(s
        .text
        .contains("# TYPE posthook_delivery_duration_seconds histogram\n"));
    assert!(s.text.contains("# TYPE posthook_queue_depth gauge\n"));
    assert!(s
        .text
        .contains("# TYPE posthook_deliveries_total counter\n"));
    s.assert_accounted();

    assert_eq!(get(metrics, "GET", "/").await.0, 404);
    assert_eq!(get(metrics, "GET", "/metricsx").await.0, 404);
    assert_eq!(get(metrics, "GET", "/api/v4/posts").await.0, 404);
    assert_eq!(get(metrics, "POST", "/metrics").await.0, 405);
    assert_eq!(get(metrics, "GET", "/metrics?name[]=x").await.0, 200);
    // The proxy itself does not answer /metrics: it passes it through to Mattermost.
    let r = http_request(ph.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(
        r.json()["path"],
        "/metrics",
        "passed through: {}",
        r.body_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_post_is_counted_timed_and_its_look_ups_cached() {
    let (
        Fixture {
            mm: _mm,
            rx: _rx,
            ph,
        },
        metrics,
    ) = fixture()
        .hook(|rx| hook("Build", "#build", &[rx.url("/hook")]))
        .start_with_metrics()
        .await;

    let (status, post) = create_post(ph.addr, PUBLIC, "#build now").await;
    assert_eq!(status, 201);
    let s = scrape_until(metrics, "one delivery", |s| s.delivered() == 1).await;
    assert_eq!(s.n("posthook_posts_observed_total"), 1);
    assert_eq!(s.n("posthook_hook_matches_total"), 1);
    assert_eq!(s.due(), 1);
    assert_eq!((s.failed(), s.dropped()), (0, 0));
    assert_eq!(s.histogram_count(), 1);
    assert!(s.get("posthook_delivery_duration_seconds_sum") > 0.0);
    assert_eq!(s.n("posthook_queue_depth"), 0);
    // Channel, user and team: three look-ups, three requests, nothing cached yet.
    assert_eq!(s.n("posthook_lookups_total"), 3);
    assert_eq!(s.n("posthook_lookup_requests_total"), 3);
    assert_eq!(s.n("posthook_lookup_failures_total"), 0);
    assert_eq!(s.n("posthook_lookup_cache_hits_total"), 0);
    let id = post["id"].as_str().unwrap();
    let lines = logs().matching(&["delivery hook=0 name=\"Build\"", id]);
    assert_eq!(lines.len(), 1, "one log line per delivery: {lines:#?}");
    assert!(
        lines[0].contains("host=127.0.0.1 status=200 latency_ms=")
            && lines[0].ends_with("outcome=delivered"),
        "{}",
        lines[0]
    );

    // The same channel, user and team again: all three from the cache.
    assert_eq!(create_post(ph.addr, PUBLIC, "#build again").await.0, 201);
    let s = scrape_until(metrics, "second delivery", |s| s.delivered() == 2).await;
    assert_eq!(s.n("posthook_lookups_total"), 6);
    assert_eq!(s.n("posthook_lookup_requests_total"), 3);
    assert_eq!(s.n("posthook_lookup_cache_hits_total"), 3);
    assert_eq!(s.histogram_count(), 2);
    assert_eq!(s.n("posthook_posts_observed_total"), 2);
    // An empty 200 asks for no reply.
    let s = scrape_until(metrics, "reply outcomes", |s| s.reply("none") == 2).await;
    assert_eq!((s.reply("posted"), s.reply("failed")), (0, 0));
}

/// A refused callback is failed and not timed; a callback refused by the network is both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unreachable_callbacks_are_failed_and_only_the_sent_one_is_timed() {
    // Only the name "localhost" is allowed: the IP literal is refused before any connection,
    // the closed port is tried and refused by the network.
    let closed = format!("http://localhost:{}/down", closed_port());
    let (Fixture { mm: _mm, rx, ph }, metrics) = fixture()
        .settings("settings:\n  allowed_untrusted_internal_connections: [\"localhost\"]\n")
        .hook(|rx| hook("Internal", "#build", &[rx.url("/ip")]))
        .hook(|_| hook("Down", "#build", &[closed]))
        .start_with_metrics()
        .await;
    let (status, post) = create_post(ph.addr, PUBLIC, "#build").await;
    assert_eq!(status, 201);
    let s = scrape_until(metrics, "two failures", |s| s.failed() == 2).await;
    assert_eq!(s.due(), 2);
    assert_eq!(s.n("posthook_hook_matches_total"), 2);
    assert_eq!((s.delivered(), s.dropped()), (0, 0));
    assert_eq!(s.refused(), 1);
    assert_eq!(s.histogram_count(), 1, "the refused one was never sent");
    assert!(rx.requests().is_empty());
    let id = post["id"].as_str().unwrap();
    let refused = logs().matching(&["delivery hook=0 name=\"Internal\"", id]);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].contains("host=127.0.0.1 status=- latency_ms=")
            && refused[0].contains(" outcome=failed error=\"callback address refused: "),
        "{}",
        refused[0]
    );
    let down = logs().matching(&["delivery hook=1 name=\"Down\"", id]);
    assert_eq!(down.len(), 1, "{down:#?}");
    assert!(
        down[0].contains("host=localhost status=- ") && down[0].contains(" outcome=failed error="),
        "{}",
        down[0]
    );
}

/// A failed look-up drops every due request of the post, each counted and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_look_up_drops_every_due_request_with_a_line_each() {
    let (Fixture { mm, rx, ph }, metrics) = fixture()
        .hook(|rx| hook("Two", "#build", &[rx.url("/a"), rx.url("/b")]))
        .start_with_metrics()
        .await;
    // A public channel whose team Mattermost does not know: the team look-up answers 404.
    mm.add_channel("chanorphan", "noteam", "orphan", "O");
    let (status, post) = create_post(ph.addr, "chanorphan", "#build").await;
    assert_eq!(status, 201);
    let s = scrape_until(metrics, "two drops", |s| s.dropped() == 2).await;
    assert_eq!(s.due(), 2);
    assert_eq!(s.n("posthook_hook_matches_total"), 1);
    assert_eq!((s.delivered(), s.failed()), (0, 0));
    assert_eq!(s.histogram_count(), 0);
    assert_eq!(s.n("posthook_lookup_failures_total"), 1);
    rx.assert_quiet(Duration::from_millis(200)).await;
    let id = post["id"].as_str().unwrap();
    let lines = logs().matching(&["delivery hook=0 name=\"Two\"", id, "outcome=dropped"]);
    assert_eq!(lines.len(), 2, "one line per dropped request: {lines:#?}");
    for l in &lines {
        assert!(
            l.contains(
                "status=- latency_ms=- outcome=dropped reason=lookup_failed error=\"HTTP 404"
            ),
            "{l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_reply_and_empty_answer_are_counted_apart() {
    let quiet = WebhookReceiver::start(Responder::Json("{}".into())).await;
    let (Fixture { mm, rx: _pong, ph }, metrics) = fixture()
        .responder(Responder::Json(r#"{"text":"pong"}"#.into()))
        .hook(|pong| hook("Pong", "ping", &[pong.url("/p")]))
        .hook(|_| hook("Quiet", "ping", &[quiet.url("/q")]))
        .start_with_metrics()
        .await;
    let (status, post) = create_post(ph.addr, PUBLIC, "ping").await;
    assert_eq!(status, 201);
    let s = scrape_until(metrics, "both replies judged", |s| {
        s.reply("posted") + s.reply("none") == 2
    })
    .await;
    assert_eq!(s.reply("posted"), 1);
    assert_eq!(s.reply("none"), 1);
    assert_eq!(s.reply("failed"), 0);
    assert_eq!((s.due(), s.delivered()), (2, 2));
    assert_eq!(s.histogram_count(), 2);
    mm.wait_for_posts(2, T).await;
    let id = post["id"].as_str().unwrap();
    let posted = logs().matching(&["reply hook=0 name=\"Pong\"", id]);
    assert_eq!(posted.len(), 1, "{posted:#?}");
    assert!(
        posted[0].ends_with("parts=1 outcome=posted"),
        "{}",
        posted[0]
    );
    let none = logs().matching(&["reply hook=1 name=\"Quiet\"", id]);
    assert_eq!(none.len(), 1, "{none:#?}");
    assert!(none[0].ends_with("outcome=none"), "{}", none[0]);
}

/// Deliveries in flight when posthook stops are counted as dropped, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_in_flight_at_shutdown_are_counted_dropped() {
    let (Fixture { mm: _mm, rx, ph }, metrics) = fixture()
        .responder(Responder::Hang)
        .hook(|rx| hook("Slow", "#build", &[rx.url("/a"), rx.url("/b")]))
        .start_with_metrics()
        .await;
    let (status, post) = create_post(ph.addr, PUBLIC, "#build").await;
    assert_eq!(status, 201);
    rx.wait_for(2, T).await;
    let s = scrape(metrics).await;
    assert_eq!(s.due(), 2);
    assert_eq!(
        s.delivered() + s.failed() + s.dropped(),
        0,
        "both still in flight"
    );
    let stats = ph.running.as_ref().unwrap().handle.stats.clone();
    drop(ph);
    // The runtime drops its tasks as it ends, possibly just after the server thread returns.
    let deadline = Instant::now() + T;
    let s = loop {
        let s = stats.snapshot();
        if s.deliveries_dropped == 2 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(s.deliveries_dropped, 2, "{s:#?}");
    assert_eq!(
        s.deliveries_due,
        s.deliveries_delivered + s.deliveries_failed + s.deliveries_dropped
    );
    assert_eq!(s.delivery_duration.count(), 0, "no answer, no duration");
    let id = post["id"].as_str().unwrap();
    let lines = logs().matching(&["delivery hook=0", id, "outcome=dropped reason=cancelled"]);
    assert_eq!(lines.len(), 2, "{lines:#?}");
}

/// No secret reaches a log line at any level, over a run with deliveries, a failure, a
/// reply, a scrape and a shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_log_line() {
    const COOKIE_TOKEN: &str = "cookiesessionsecret";
    const HOOK_TOKEN: &str = "hooktokenverysecret";
    const QUERY_SECRET: &str = "querysecretvalue";
    let (Fixture { mm, rx, ph }, metrics) = fixture()
        .responder(Responder::Json(r#"{"text":"done"}"#.into()))
        .settings("settings:\n  allowed_untrusted_internal_connections: [\"localhost\"]\n")
        .hook(|rx| {
            // Allowed by name and answering; refused (IP literal); allowed but nobody listening.
            let port = rx.addr().port();
            [
                format!("http://localhost:{port}/hook?secret={QUERY_SECRET}"),
                format!("http://127.0.0.1:{port}/ip?secret={QUERY_SECRET}"),
                format!(
                    "http://localhost:{}/down?secret={QUERY_SECRET}",
                    closed_port()
                ),
            ]
            .iter()
            .enumerate()
            .map(|(i, url)| {
                hook_yaml(&[
                    ("display_name", &format!("\"Secret {i}\"")),
                    ("trigger_words", "[\"#deploy\"]"),
                    ("callback_urls", &format!("[\"{url}\"]")),
                    ("token", &format!("\"{HOOK_TOKEN}\"")),
                ])
            })
            .collect::<String>()
        })
        .start_with_metrics()
        .await;
    mm.add_token(COOKIE_TOKEN, USER);

    let body = serde_json::json!({"channel_id": PUBLIC, "message": "#deploy prod"}).to_string();
    let cookie = format!("MMAUTHTOKEN={COOKIE_TOKEN}; MMUSERID={USER}");
    let r = send_post(
        ph.addr,
        &[
            ("Cookie", cookie.as_str()),
            ("X-Requested-With", "XMLHttpRequest"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body_str());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let got = rx.wait_for(1, T).await;
    assert!(
        got[0].body_str().contains(HOOK_TOKEN),
        "the hook token was sent"
    );
    scrape_until(metrics, "all three settled", |s| {
        s.delivered() == 1 && s.failed() == 2 && s.reply("posted") == 1
    })
    .await;
    mm.wait_for_posts(2, T).await;
    drop(ph);

    assert!(
        !logs().overflowed.load(std::sync::atomic::Ordering::Relaxed),
        "log capture overflowed: lines were lost"
    );
    let lines = logs().lines();
    let deliveries = logs().matching(&["delivery hook=", &id]);
    assert_eq!(deliveries.len(), 3, "the capture works: {deliveries:#?}");
    assert_eq!(logs().matching(&["reply hook=0", &id]).len(), 1);
    for secret in [
        USER_TOKEN,
        COOKIE_TOKEN,
        HOOK_TOKEN,
        BOT_TOKEN,
        QUERY_SECRET,
    ] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(
            leaks.is_empty(),
            "{secret} appears in {} log line(s), e.g. {:?}",
            leaks.len(),
            leaks.first()
        );
    }
}

/// `log_format: json` through the binary: every line one JSON object with `ts`, `level` and
/// `msg`; the delivery and reply lines carry their fields (`hook` is the hook's id); no secret
/// in any line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_carry_the_delivery_fields_and_no_secret() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, r#"{"text":"built"}"#.into())).await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hook_token = "hooktokensecret0000000000a";
    let config = format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nlog_format: json\n{ALLOW_LOOPBACK}hooks:\n  - id: ci-build\n    trigger_words: [\"#build\"]\n    callback_urls: [\"{}\"]\n    token: {hook_token}\n",
        mm.base_url(),
        rx.url("/hook?secret=querysecret")
    );
    let p = harness::binary::Proc::start(&config, addr).await;
    assert_eq!(create_post(p.addr, PUBLIC, "#build main").await.0, 201);
    rx.wait_for(1, T).await;
    p.wait_log("\"msg\":\"reply\"").await;
    let lines = p.logs.lock().unwrap().clone();
    let mut delivery = None;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        for key in ["ts", "level", "target", "msg"] {
            assert!(v[key].is_string(), "no {key} in {line}");
        }
        for secret in [BOT_TOKEN, USER_TOKEN, hook_token, "querysecret"] {
            assert!(!line.contains(secret), "secret in a log line: {line}");
        }
        if v["msg"] == "delivery" {
            delivery = Some(v);
        }
    }
    let d = delivery.unwrap_or_else(|| panic!("no delivery line in {lines:#?}"));
    assert_eq!(d["level"], "INFO");
    assert_eq!(d["hook"], "ci-build");
    assert_eq!(d["outcome"], "delivered");
    assert_eq!(d["status"], 200);
    assert!(d["latency_ms"].is_number(), "{d}");
    assert!(
        d["host"]
            .as_str()
            .is_some_and(|h| h.starts_with("127.0.0.1")),
        "{d}"
    );
    assert!(d["post"].as_str().is_some_and(|p| p.len() == 26), "{d}");
    assert!(lines
        .iter()
        .any(|l| l.contains("\"msg\":\"posthook listening on")));
}
