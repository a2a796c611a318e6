//! Fault matrix (issue #5, items 1 and 2): webhook endpoints, the upstream, clients and post
//! bodies that misbehave. For every fault the user's exchange is byte-exact and not delayed
//! (against a no-hook baseline in the same test), posthook stays up (a later request
//! succeeds), memory stays bounded, and the outcome is counted: once nothing is in flight,
//! `due == delivered + failed + dropped`.
//!
//! Every server here listens on 127.0.0.1 or 127.0.0.2; host names are resolved by a test
//! resolver to those addresses only, so no byte ever leaves the machine. A "public" redirect
//! target is a name that resolves to 127.0.0.2, which the allow-list permits.
//!
//! One file per fault family: `webhooks.rs` (endpoints that misbehave), `upstream.rs` (an
//! upstream that misbehaves on post creation), `clients.rs` (clients that go away),
//! `bad_input.rs` (bad post bodies) and `memory.rs` (a 1 GiB answer and a gzip bomb). This file
//! holds what they share: launching posthook on ports of its own, the timing and accounting
//! checks, and the gate that lets the memory test run alone; `wire.rs` reads and writes raw
//! HTTP/1.1 for the hand-written servers and clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod clients;
mod memory;
mod upstream;
mod webhooks;
mod wire;

// The shared test code lives beside this binary's folder.
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../support/mod.rs"]
mod support;

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use posthook::app::{Handle, Options};
use posthook::net::Resolver;
use posthook::stats::Snapshot;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The most a fault may add to the user's latency over the no-hook baseline.
const SLACK: Duration = Duration::from_millis(250);
/// The allowed "public" range: loopback, but permitted by the allow-list.
const PUBLIC_IP: &str = "127.0.0.2";
const ALLOW_PUBLIC_IP: &str = "  allowed_untrusted_internal_connections: [\"127.0.0.2/32\"]\n";
/// Memory growth tolerated while a fault is handled.
const MEMORY_BOUND: u64 = 64 * 1024 * 1024;
const ONE_GIB: u64 = 1 << 30;

/// Memory-sensitive rows run alone: every other test of this binary holds this gate shared.
static MEMORY_GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A resolver that knows a fixed set of names and nothing else (never the system's).
struct Names(Vec<(&'static str, IpAddr)>);

impl Resolver for Names {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let ips: Vec<IpAddr> = self
            .0
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(&host))
            .map(|(_, ip)| *ip)
            .collect();
        Box::pin(async move {
            if ips.is_empty() {
                Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host}: unknown to the test resolver"),
                ))
            } else {
                Ok(ips)
            }
        })
    }
}

fn names() -> Options {
    let ip: IpAddr = PUBLIC_IP.parse().unwrap();
    Options {
        resolver: Arc::new(Names(vec![("hook.test", ip), ("public.test", ip)])),
        ..Options::default()
    }
}

fn handle(ph: &Posthook) -> Handle {
    ph.running.as_ref().unwrap().handle.clone()
}

/// The accounting identity, and one duration per delivery actually sent.
fn assert_accounted(s: &Snapshot, what: &str) {
    assert_eq!(
        s.deliveries_due,
        s.deliveries_delivered + s.deliveries_failed + s.deliveries_dropped,
        "{what}: due == delivered + failed + dropped: {s:#?}"
    );
    assert_eq!(
        s.delivery_duration.count(),
        s.deliveries_delivered + s.deliveries_failed - s.deliveries_refused,
        "{what}: one duration per delivery sent: {s:#?}"
    );
}

/// Waits until nothing is in flight (no request, job, delivery or reply) and every due
/// request has ended; then checks the accounting.
async fn settle(ph: &Posthook, what: &str) -> Snapshot {
    let h = handle(ph);
    let s = ph
        .wait_stats(what, move |s| {
            h.is_idle()
                && s.deliveries_due
                    == s.deliveries_delivered + s.deliveries_failed + s.deliveries_dropped
        })
        .await;
    assert_accounted(&s, what);
    s
}

/// Waits until the dispatcher has judged `n` created posts (one hook): counted them unparsed
/// or repeated, or made their deliveries due.
async fn judged(ph: &Posthook, what: &str, n: u64) {
    ph.wait_stats(what, |s| {
        s.posts_unparsed + s.deliveries_due + s.duplicate_posts_skipped >= n
    })
    .await;
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// How many posts [`baseline`] creates (each counts in `posthook_posts_observed_total`).
const BASELINE_POSTS: u64 = 3;

/// The slowest of three posts that match no hook: the latency a fault must not add to.
async fn baseline(addr: SocketAddr) -> Duration {
    let mut worst = Duration::ZERO;
    for i in 0..BASELINE_POSTS {
        let ((status, _), took) = timed(create_post(addr, PUBLIC, &format!("nothing {i}"))).await;
        assert_eq!(status, 201, "baseline post");
        worst = worst.max(took);
    }
    worst
}

/// Checks that the user's request took less than `baseline + SLACK`. A fault that reached
/// the user's path would delay every such request, while a loaded machine (test processes
/// share it) delays one now and then: a slow `first` is measured `again`, at most twice more.
/// Returns how many requests were made (each may have fired its hook).
async fn not_delayed<F: Future<Output = Duration>>(
    what: &str,
    baseline: Duration,
    first: Duration,
    mut again: impl FnMut() -> F,
) -> u64 {
    let mut seen = vec![first];
    while seen.last().is_some_and(|took| *took >= baseline + SLACK) {
        assert!(
            seen.len() < 3,
            "{what}: the user's request took {seen:?} against {baseline:?} without hooks"
        );
        seen.push(again().await);
    }
    seen.len() as u64
}

/// A timed post through `addr` that must succeed.
async fn timed_post(addr: SocketAddr, message: &str) -> Duration {
    let ((status, _), took) = timed(create_post(addr, PUBLIC, message)).await;
    assert_eq!(status, 201, "{message}");
    took
}

/// posthook still answers: a passthrough request succeeds.
async fn assert_up(addr: SocketAddr, what: &str) {
    let r = http_request(addr, "GET", "/api/v4/system/ping", &[], b"").await;
    assert_eq!(
        r.status,
        200,
        "{what}: posthook still answers: {}",
        r.body_str()
    );
}

/// Who must have seen a probe that passed through posthook (its upstream), judging by the
/// probe's path and the answer.
type Saw<'a> = &'a dyn Fn(&str, &RawResponse) -> bool;

/// The stand-in saw the probe.
fn standin_saw(mm: &MattermostStandIn) -> impl Fn(&str, &RawResponse) -> bool + '_ {
    move |path, _| mm.requests().iter().any(|r| r.path_and_query == path)
}

/// Starts posthook in front of `upstream` with `extra` config (and, with `metrics`, a
/// metrics endpoint), and makes sure the listeners are this posthook's: `free_port` releases
/// the port before Pingora binds it, and other test processes share the machine. A probe
/// request must reach `saw` (and the metrics endpoint must answer posthook's metrics);
/// otherwise the attempt is stopped and retried on fresh ports.
async fn launch(
    upstream: &str,
    extra: &str,
    metrics: bool,
    options: fn() -> Options,
    saw: Saw<'_>,
) -> (Posthook, Option<SocketAddr>) {
    for _ in 0..5 {
        let metrics: Option<SocketAddr> =
            metrics.then(|| format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let extra = match metrics {
            Some(m) => format!("metrics_listen: \"{m}\"\n{extra}"),
            None => extra.to_string(),
        };
        let (text, listen) = config_text(upstream, &extra);
        let config = match posthook::config::Config::from_yaml("faults.yaml", &text, &|_| None) {
            Ok(c) => c,
            // Two free ports drawn apart can still be the same one (the listen and metrics
            // addresses must differ): draw again.
            Err(e) if e.to_string().contains("must differ from listen") => continue,
            Err(e) => panic!("{e}\n{text}"),
        };
        let opts = options();
        let spawned = tokio::task::spawn_blocking(move || posthook::app::spawn(&config, opts))
            .await
            .unwrap();
        let Ok(running) = spawned else {
            continue;
        };
        let ph = Posthook {
            addr: listen,
            running: Some(running),
        };
        if is_ours(&ph, metrics, saw).await {
            return (ph, metrics);
        }
    }
    panic!("could not start posthook on ports of its own");
}

/// posthook (by [`launch`]) in front of the stand-in, with one form hook on `rx`.
async fn posthook_before_standin(mm: &MattermostStandIn, rx: &WebhookReceiver) -> Posthook {
    let extra = format!(
        "{ALLOW_LOOPBACK}hooks:\n{}",
        form_hook("#build", &rx.url("/hook"))
    );
    launch(
        &mm.base_url(),
        &extra,
        false,
        Options::default,
        &standin_saw(mm),
    )
    .await
    .0
}

/// One probe through posthook, answered within 3 s; `None` when it fails in any way.
async fn probe(addr: SocketAddr, path: &str) -> Option<RawResponse> {
    let path = path.to_string();
    let mut answer = tokio::spawn(async move { http_request(addr, "GET", &path, &[], b"").await });
    match tokio::time::timeout(Duration::from_secs(3), &mut answer).await {
        Ok(r) => r.ok(),
        Err(_) => {
            answer.abort();
            None
        }
    }
}

async fn is_ours(ph: &Posthook, metrics: Option<SocketAddr>, saw: Saw<'_>) -> bool {
    let deadline = Instant::now() + T;
    while TcpStream::connect(ph.addr).await.is_err() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let path = format!("/posthook-probe/{}", random_id());
    let Some(r) = probe(ph.addr, &path).await else {
        return false;
    };
    if !saw(&path, &r) {
        return false;
    }
    match metrics {
        None => true,
        Some(m) => probe(m, "/metrics").await.is_some_and(|r| {
            r.status == 200 && r.body_str().contains("posthook_deliveries_due_total")
        }),
    }
}

/// The resident set size of this test process (posthook runs in it).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A created post as Mattermost's 201 returns it.
fn created_post_json(channel: &str, message: &str, props: &str) -> String {
    let now = now_ms();
    format!(
        concat!(
            r#"{{"id":"{}","create_at":{now},"update_at":{now},"edit_at":0,"delete_at":0,"#,
            r#""is_pinned":false,"user_id":"{USER}","channel_id":"{channel}","root_id":"","#,
            r#""original_id":"","message":{},"type":"","props":{props},"hashtags":"","#,
            r#""pending_post_id":"","reply_count":0,"last_reply_at":0,"participants":null,"#,
            r#""metadata":{{}}}}"#
        ),
        random_id(),
        serde_json::to_string(message).unwrap(),
        now = now,
        USER = USER,
        channel = channel,
        props = props,
    )
}

/// A whole HTTP/1.1 response with a Content-Length.
fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One gzip member of `parts[0]`, `repeat_middle` times `parts[1]`, then `parts[2]`.
fn gzip(parts: &[&[u8]], repeat_middle: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(parts[0]).unwrap();
    for _ in 0..repeat_middle {
        gz.write_all(parts[1]).unwrap();
    }
    gz.write_all(parts[2]).unwrap();
    gz.finish().unwrap()
}
