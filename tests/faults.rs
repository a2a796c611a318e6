//! Fault matrix (issue #5, items 1 and 2): webhook endpoints, the upstream, clients and post
//! bodies that misbehave. For every fault the user's exchange is byte-exact and not delayed
//! (against a no-hook baseline in the same test), posthook stays up (a later request
//! succeeds), memory stays bounded, and the outcome is counted: once nothing is in flight,
//! `due == delivered + failed + dropped`.
//!
//! Every server here listens on 127.0.0.1 or 127.0.0.2; host names are resolved by a test
//! resolver to those addresses only, so no byte ever leaves the machine. A "public" redirect
//! target is a name that resolves to 127.0.0.2, which the allow-list permits.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
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
/// The hook's token; it must be the only `token` in every payload.
const HOOK_TOKEN: &str = "hooktokensecret";
/// The allowed "public" range: loopback, but permitted by the allow-list.
const PUBLIC_IP: &str = "127.0.0.2";
const ALLOW_PUBLIC_IP: &str = "  allowed_untrusted_internal_connections: [\"127.0.0.2/32\"]\n";
/// Memory growth tolerated while a fault is handled.
const MEMORY_BOUND: u64 = 64 * 1024 * 1024;
const ONE_GIB: u64 = 1 << 30;

/// Memory-sensitive rows run alone: every other test of this binary holds this gate shared.
static MEMORY_GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn form_hook(url: &str) -> String {
    hook_yaml(&[
        ("display_name", "\"Build\""),
        ("trigger_words", "[\"#build\"]"),
        ("callback_urls", &format!("[\"{url}\"]")),
        ("token", &format!("\"{HOOK_TOKEN}\"")),
    ])
}

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

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 request reader for the hand-written servers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (head and Content-Length body) off `s`, keeping what follows in `buf`;
/// `None` at EOF, on an error, on a chunked or oversized request, or after `T`.
async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    let deadline = tokio::time::Instant::now() + T;
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (method, target) = (start.next()?.to_string(), start.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let mut req = Req {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return None;
    }
    let len: usize = req
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    if len > 8 * 1024 * 1024 {
        return None;
    }
    while buf.len() < head_end + len {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let rest = buf.split_off(head_end + len);
    req.body = std::mem::replace(buf, rest)[head_end..].to_vec();
    Some(req)
}

// ---------------------------------------------------------------------------------------------
// A raw client that tolerates broken answers
// ---------------------------------------------------------------------------------------------

/// What a client read off the wire, however the exchange ended.
struct Exchange {
    /// Every byte received.
    raw: Vec<u8>,
    head_len: usize,
    status: u16,
    /// The whole announced body arrived.
    complete: bool,
    took: Duration,
}

impl Exchange {
    fn body(&self) -> &[u8] {
        &self.raw[self.head_len..]
    }

    /// Header lines, without the status line.
    fn headers(&self) -> Vec<(String, String)> {
        header_lines(&self.raw[..self.head_len])
    }
}

fn header_lines(head: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect()
}

fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
}

/// Sends `request` on a fresh connection and reads one Content-Length response, or as much
/// of it as arrives before the connection ends (bounded by `T`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + T;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut head_len = 0;
    let mut want = None;
    loop {
        if head_len == 0 {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                head_len = i + 4;
                want = content_length(&header_lines(&raw[..head_len]));
            }
        }
        if let Some(len) = want {
            if raw.len() >= head_len + len {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            Ok(_) => break,
            Err(_) => panic!("{addr}: no end to the response within {T:?}"),
        }
    }
    let status = String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let complete = head_len > 0 && want.is_some_and(|len| raw.len() == head_len + len);
    Exchange {
        raw,
        head_len,
        status,
        complete,
        took: started.elapsed(),
    }
}

/// `POST /api/v4/posts` as the test user, as raw bytes.
fn post_request(body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "POST /api/v4/posts HTTP/1.1\r\nHost: chat.example.com\r\n\
         Authorization: Bearer {USER_TOKEN}\r\n"
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The client got exactly what the upstream sent: status line and every header (a proxy may
/// only add its own `Connection`/`Date`/`Keep-Alive`), and the body byte for byte. With
/// `prefix_only`, the body may stop early (the upstream cut it).
fn assert_same_answer(what: &str, got: &Exchange, sent: &[u8], prefix_only: bool) {
    let sent_head_len = find(sent, b"\r\n\r\n").unwrap() + 4;
    let status_line =
        |b: &[u8]| String::from_utf8_lossy(&b[..find(b, b"\r\n").unwrap()]).into_owned();
    assert_eq!(
        status_line(&got.raw),
        status_line(sent),
        "{what}: status line"
    );
    let hop = |h: Vec<(String, String)>| -> Vec<(String, String)> {
        h.into_iter()
            .filter(|(n, _)| {
                !["connection", "date", "keep-alive"].contains(&n.to_ascii_lowercase().as_str())
            })
            .collect()
    };
    assert_eq!(
        hop(got.headers()),
        hop(header_lines(&sent[..sent_head_len])),
        "{what}: response headers"
    );
    let sent_body = &sent[sent_head_len..];
    if prefix_only {
        assert!(
            sent_body.starts_with(got.body()),
            "{what}: the body received is a prefix of the body sent"
        );
    } else {
        assert!(got.complete, "{what}: the whole answer arrived");
        assert!(got.body() == sent_body, "{what}: response body byte-exact");
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook endpoints that misbehave
// ---------------------------------------------------------------------------------------------

/// How a hand-written webhook endpoint answers (after reading the whole request).
#[derive(Clone, Debug)]
enum Answer {
    /// 200, empty body.
    Ok,
    /// Never answers (the connection stays open until the server is dropped).
    Hang,
    /// A valid 200, one byte every 50 ms (2 s in all).
    Trickle,
    /// Resets the connection (SO_LINGER 0, then close) after reading the request.
    Reset,
    /// Resets the connection as soon as it is accepted.
    ResetOnAccept,
    /// Bytes that are not HTTP, then closes.
    Garbage,
    /// A valid 200 `application/json` whose body is not JSON.
    GarbageBody,
    /// 200 with `Content-Length: 1073741824`, streamed (never allocated) until the peer stops
    /// reading: an unterminated JSON string.
    Huge,
    /// 307 to this location.
    Redirect(String),
    /// A valid 200, after this long.
    Late(Duration),
}

const TRICKLED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

#[derive(Default)]
struct FaultState {
    connections: AtomicUsize,
    requests: Mutex<Vec<Req>>,
    /// Body bytes the `Huge` answer got written.
    written: AtomicU64,
    /// Connections whose handling has ended (the `Huge` writer stopped).
    ended: AtomicUsize,
}

/// A webhook endpoint with one [`Answer`]; dropping it stops it and every connection.
struct FaultServer {
    addr: SocketAddr,
    state: Arc<FaultState>,
    task: JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    async fn start(ip: &str, answer: Answer) -> FaultServer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FaultState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                conns.spawn(serve_fault(s, answer.clone(), st.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        FaultServer { addr, state, task }
    }

    /// The callback URL, by the name the test resolver maps to this server's address.
    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/hook", self.addr.port())
    }

    fn requests(&self) -> Vec<Req> {
        self.state.requests.lock().unwrap().clone()
    }

    async fn wait_connections(&self, n: usize, what: &str) {
        let st = self.state.clone();
        wait_until(what, T, move || st.connections.load(Ordering::SeqCst) >= n).await;
    }
}

async fn serve_fault(mut s: TcpStream, answer: Answer, st: Arc<FaultState>) {
    if let Answer::ResetOnAccept = answer {
        s.set_zero_linger().unwrap();
        drop(s);
        st.ended.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut s, &mut buf).await else {
        return;
    };
    st.requests.lock().unwrap().push(req);
    match answer {
        Answer::Ok => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
        Answer::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
        Answer::Trickle => {
            for b in TRICKLED {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Answer::Reset | Answer::ResetOnAccept => {
            s.set_zero_linger().unwrap();
            drop(s);
        }
        Answer::Garbage => {
            let _ = s
                .write_all(
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 \xff\xfe\x00 NOT HTTP\r\n\r\n",
                )
                .await;
            let _ = s.shutdown().await;
        }
        Answer::GarbageBody => {
            let r = http_response(
                "200 OK",
                &[("Content-Type", "application/json")],
                b"\x00\xff{\"text\": garbage \x1b[0m",
            );
            let _ = s.write_all(&r).await;
        }
        Answer::Huge => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {ONE_GIB}\r\n\r\n{{\"text\":\""
            );
            if s.write_all(head.as_bytes()).await.is_ok() {
                let chunk = vec![b'a'; 64 * 1024];
                let mut left = ONE_GIB - 9;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    st.written.fetch_add(n as u64, Ordering::SeqCst);
                    left -= n as u64;
                }
            }
        }
        Answer::Redirect(location) => {
            let r = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(r.as_bytes()).await;
        }
        Answer::Late(d) => {
            tokio::time::sleep(d).await;
            let body = r#"{"text":"too late"}"#;
            let r = http_response(
                "200 OK",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            let _ = s.write_all(&r).await;
        }
    }
    st.ended.fetch_add(1, Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// An answer, asking for no reply.
    Delivered,
    /// An answer that cannot be read as a reply.
    DeliveredUnreadable,
    Failed,
    Refused,
}

struct HookRow {
    name: &'static str,
    answer: fn(&Targets) -> Answer,
    outcome: Outcome,
    /// The request ends at the allowed "public" redirect target.
    reaches_public: bool,
}

/// Redirect targets, started once per row.
struct Targets {
    public: FaultServer,
    internal: FaultServer,
}

/// Runs one webhook fault: a fresh posthook (whole-request timeout 1 s) whose hook points at
/// the fault, a baseline, the matching post, a post while the fault is under way, then the
/// outcome and the accounting.
async fn hook_fault_row(row: &HookRow) {
    let what = row.name;
    let mm = standin().await;
    let targets = Targets {
        public: FaultServer::start(PUBLIC_IP, Answer::Ok).await,
        internal: FaultServer::start("127.0.0.1", Answer::Ok).await,
    };
    let answer = (row.answer)(&targets);
    let reads_request = !matches!(answer, Answer::ResetOnAccept);
    let fault = FaultServer::start(PUBLIC_IP, answer).await;
    let (ph, metrics) = launch(
        &mm.base_url(),
        &format!(
            "settings:\n  outgoing_integration_requests_timeout: 1\n{ALLOW_PUBLIC_IP}hooks:\n{}",
            form_hook(&fault.url("hook.test"))
        ),
        true,
        names,
        &standin_saw(&mm),
    )
    .await;
    let metrics = metrics.unwrap();
    let base = baseline(ph.addr).await;

    // The matching post: byte-exact both ways, in normal time.
    let body =
        serde_json::json!({"channel_id": PUBLIC, "message": format!("#build {what}")}).to_string();
    let auth = format!("Bearer {USER_TOKEN}");
    let (r, took) = timed(http_request(
        ph.addr,
        "POST",
        "/api/v4/posts",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    ))
    .await;
    assert_eq!(r.status, 201, "{what}: {}", r.body_str());
    let seen = mm
        .requests()
        .into_iter()
        .rev()
        .find(|q| q.method == "POST")
        .unwrap();
    assert_eq!(
        seen.body,
        body.as_bytes(),
        "{what}: the upstream got the exact body"
    );
    let post = r.json();
    let stored = mm.post(post["id"].as_str().unwrap()).unwrap();
    assert_eq!(post, stored, "{what}: the client got the created post");
    let message = format!("#build {what}");
    let n = not_delayed(what, base, took, || timed_post(ph.addr, &message)).await;

    // While the fault is under way, posts are not slowed down either.
    fault.wait_connections(1, what).await;
    let during = timed_post(ph.addr, "nothing during").await;
    let during_what = format!("{what} (during)");
    not_delayed(&during_what, base, during, || {
        timed_post(ph.addr, "nothing during")
    })
    .await;

    fault.wait_connections(n as usize, what).await;
    let s = settle(&ph, what).await;
    assert_eq!(s.deliveries_due, n, "{what}: {s:#?}");
    let got = (
        s.deliveries_delivered,
        s.deliveries_failed,
        s.deliveries_refused,
    );
    let want = match row.outcome {
        Outcome::Delivered | Outcome::DeliveredUnreadable => (n, 0, 0),
        Outcome::Failed => (0, n, 0),
        Outcome::Refused => (0, n, n),
    };
    assert_eq!(got, want, "{what}: (delivered, failed, refused): {s:#?}");
    assert_eq!(s.deliveries_dropped, 0, "{what}");
    let replies = (s.replies_none, s.replies_failed, s.replies_posted);
    let want = match row.outcome {
        // The target's empty 200 asks for no reply.
        Outcome::Delivered => (n, 0, 0),
        Outcome::DeliveredUnreadable => (0, n, 0),
        Outcome::Failed | Outcome::Refused => (0, 0, 0),
    };
    assert_eq!(
        replies, want,
        "{what}: replies (none, failed, posted): {s:#?}"
    );
    assert_eq!(
        (
            fault.state.connections.load(Ordering::SeqCst),
            fault.requests().len()
        ),
        (n as usize, n as usize * usize::from(reads_request)),
        "{what}: one connection and request per post (no retry)"
    );
    for sent in fault.requests() {
        let sent = String::from_utf8_lossy(&sent.body).into_owned();
        assert!(
            sent.contains(&format!("&token={HOOK_TOKEN}&")),
            "{what}: the payload was sent: {sent}"
        );
    }
    assert!(
        targets.internal.requests().is_empty(),
        "{what}: the internal address got nothing"
    );
    assert_up(ph.addr, what).await;
    // The endpoint shows the same accounting.
    let scrape = http_request(metrics, "GET", "/metrics", &[], b"")
        .await
        .body_str();
    let value = |series: &str| -> u64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} in {scrape}"))
            .parse()
            .unwrap()
    };
    let outcomes: u64 = ["delivered", "failed", "dropped"]
        .iter()
        .map(|o| value(&format!("posthook_deliveries_total{{outcome=\"{o}\"}}")))
        .sum();
    assert_eq!(
        value("posthook_deliveries_due_total"),
        outcomes,
        "{what}: {scrape}"
    );
    let at_target = targets.public.requests();
    if row.reaches_public {
        assert!(
            at_target.iter().all(|r| r.method == "POST"),
            "{what}: 307 keeps the method"
        );
        let bodies = |reqs: Vec<Req>| {
            let mut b: Vec<Vec<u8>> = reqs.into_iter().map(|r| r.body).collect();
            b.sort();
            b
        };
        assert_eq!(
            bodies(at_target),
            bodies(fault.requests()),
            "{what}: each request reached the allowed target, body kept"
        );
    } else {
        assert!(at_target.is_empty(), "{what}");
    }
}

/// Webhook endpoints that hang, trickle, reset, answer garbage, redirect or answer late: the
/// user never notices, posthook stays up, and each ends failed (or delivered) exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_faults_never_reach_the_user_and_are_counted() {
    let _gate = MEMORY_GATE.read().await;
    let rows = [
        HookRow {
            name: "hang",
            answer: |_| Answer::Hang,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "trickle",
            answer: |_| Answer::Trickle,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "reset",
            answer: |_| Answer::Reset,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "reset on accept",
            answer: |_| Answer::ResetOnAccept,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "garbage",
            answer: |_| Answer::Garbage,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "garbage body",
            answer: |_| Answer::GarbageBody,
            outcome: Outcome::DeliveredUnreadable,
            reaches_public: false,
        },
        HookRow {
            name: "after the timeout",
            answer: |_| Answer::Late(Duration::from_millis(1500)),
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "redirect to a public address",
            answer: |t| Answer::Redirect(format!("{}?from=redirect", t.public.url("public.test"))),
            outcome: Outcome::Delivered,
            reaches_public: true,
        },
        HookRow {
            name: "redirect to an internal address",
            answer: |t| Answer::Redirect(format!("http://127.0.0.1:{}/", t.internal.addr.port())),
            outcome: Outcome::Refused,
            reaches_public: false,
        },
    ];
    for row in &rows {
        hook_fault_row(row).await;
    }
}

// ---------------------------------------------------------------------------------------------
// An upstream that misbehaves on post creation
// ---------------------------------------------------------------------------------------------

/// How the raw upstream answers a `POST /api/v4/posts` whose body contains `#build` (other
/// posts get a normal 201).
#[derive(Clone, Debug)]
enum PostMode {
    /// A normal 201.
    Normal,
    /// A normal 201, after this long.
    Slow(Duration),
    /// These exact bytes.
    Answer(Vec<u8>),
    /// The head and half the body of these bytes, then a reset.
    ResetMid(Vec<u8>),
    /// The head and half the body of these bytes; once the flag is set, another quarter;
    /// the rest once posthook closed the connection (or after 1 s).
    Staged(Vec<u8>, Arc<std::sync::atomic::AtomicBool>),
}

struct UpState {
    mode: PostMode,
    /// The target of every request.
    targets: Mutex<Vec<String>>,
    /// Bodies of every `POST /api/v4/posts`, as received.
    posts: Mutex<Vec<Vec<u8>>>,
    /// The exact bytes of every answer to `POST /api/v4/posts`.
    answers: Mutex<Vec<Vec<u8>>>,
}

/// A hand-written Mattermost: post creation (with a fault), the channel, team and user
/// look-ups of the standard fixtures, `/api/v4/system/ping` and a 32 MiB `GET /big`.
struct RawUpstream {
    addr: SocketAddr,
    state: Arc<UpState>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(mode: PostMode) -> RawUpstream {
        RawUpstream::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), mode)
    }

    fn start_on(listener: TcpListener, mode: PostMode) -> RawUpstream {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpState {
            mode,
            targets: Mutex::default(),
            posts: Mutex::default(),
            answers: Mutex::default(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(serve_upstream(s, st.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        RawUpstream { addr, state, task }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn saw(&self, target: &str) -> bool {
        self.state
            .targets
            .lock()
            .unwrap()
            .iter()
            .any(|t| t == target)
    }

    fn last_post(&self) -> Vec<u8> {
        self.state.posts.lock().unwrap().last().unwrap().clone()
    }

    fn last_answer(&self) -> Vec<u8> {
        self.state.answers.lock().unwrap().last().unwrap().clone()
    }
}

fn json_answer(status: &str, body: &str) -> Vec<u8> {
    http_response(
        status,
        &[
            ("Content-Type", "application/json"),
            ("X-Version-Id", VERSION_ID),
        ],
        body.as_bytes(),
    )
}

/// An AppError answer, as Mattermost writes it.
fn app_error(status: u16, id: &str, message: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    let body = serde_json::json!({
        "id": id,
        "message": message,
        "detailed_error": "",
        "request_id": random_id(),
        "status_code": status,
    });
    json_answer(&format!("{status} {reason}"), &body.to_string())
}

/// A normal 201 for a post body (read as Go does: invalid UTF-8 replaced).
fn normal_created(body: &[u8]) -> Vec<u8> {
    let v: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(body)).unwrap_or_default();
    match (v["channel_id"].as_str(), v["message"].as_str()) {
        (Some(channel), Some(message)) => {
            json_answer("201 Created", &created_post_json(channel, message, "{}"))
        }
        _ => app_error(
            400,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing post in request body.",
        ),
    }
}

async fn serve_upstream(mut s: TcpStream, st: Arc<UpState>) {
    let mut buf = Vec::new();
    // Bounded: a connection serves at most this many requests.
    for _ in 0..1000 {
        let Some(req) = read_request(&mut s, &mut buf).await else {
            return;
        };
        st.targets.lock().unwrap().push(req.target.clone());
        let path = req.target.split('?').next().unwrap_or_default().to_string();
        let answer = match (req.method.as_str(), path.as_str()) {
            ("POST", "/api/v4/posts") => {
                st.posts.lock().unwrap().push(req.body.clone());
                let mode = if find(&req.body, b"#build").is_some() {
                    st.mode.clone()
                } else {
                    PostMode::Normal
                };
                let answer = match mode {
                    PostMode::Normal => normal_created(&req.body),
                    PostMode::Slow(d) => {
                        tokio::time::sleep(d).await;
                        normal_created(&req.body)
                    }
                    PostMode::Answer(bytes) => bytes,
                    PostMode::ResetMid(bytes) => {
                        st.answers.lock().unwrap().push(bytes.clone());
                        let head = find(&bytes, b"\r\n\r\n").unwrap() + 4;
                        let cut = head + (bytes.len() - head) / 2;
                        let _ = s.write_all(&bytes[..cut]).await;
                        let _ = s.flush().await;
                        s.set_zero_linger().unwrap();
                        return;
                    }
                    PostMode::Staged(bytes, go) => {
                        st.answers.lock().unwrap().push(bytes.clone());
                        let head = find(&bytes, b"\r\n\r\n").unwrap() + 4;
                        let half = head + (bytes.len() - head) / 2;
                        let three_quarters = head + (bytes.len() - head) * 3 / 4;
                        if s.write_all(&bytes[..half]).await.is_err() {
                            return;
                        }
                        let flag = go.clone();
                        wait_until("the client is gone", T, move || flag.load(Ordering::SeqCst))
                            .await;
                        if s.write_all(&bytes[half..three_quarters]).await.is_err() {
                            return;
                        }
                        // Bounded wait for posthook to close this connection (it gave up).
                        let mut probe = [0u8; 1];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await;
                        if s.write_all(&bytes[three_quarters..]).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                st.answers.lock().unwrap().push(answer.clone());
                answer
            }
            ("GET", "/api/v4/channels/chanpub") => json_answer(
                "200 OK",
                &serde_json::json!({
                    "id": PUBLIC, "team_id": TEAM, "type": "O", "name": PUBLIC_NAME
                })
                .to_string(),
            ),
            ("GET", "/api/v4/teams/team1") => json_answer(
                "200 OK",
                &format!(r#"{{"id":"{TEAM}","name":"{TEAM_NAME}","display_name":"My Team"}}"#),
            ),
            ("GET", "/api/v4/users/user1") => json_answer(
                "200 OK",
                &format!(r#"{{"id":"{USER}","username":"{USER_NAME}"}}"#),
            ),
            ("GET", p) if p.starts_with("/api/v4/posts/") => {
                // The created posts are known by the 201s this upstream sent (whole or not).
                let id = &p["/api/v4/posts/".len()..];
                let needle = format!("\"id\":\"{id}\"");
                let answers = st.answers.lock().unwrap().clone();
                let found = answers.iter().find_map(|a| {
                    let head = find(a, b"\r\n\r\n")? + 4;
                    let body = String::from_utf8_lossy(&a[head..]).to_string();
                    body.contains(&needle).then_some(body)
                });
                match found {
                    Some(body) => json_answer("200 OK", &body),
                    None => app_error(404, "app.post.get.app_error", "Unable to get the post."),
                }
            }
            ("GET", "/api/v4/system/ping") => json_answer("200 OK", r#"{"status":"OK"}"#),
            ("GET", "/big") => {
                let len = 32 * 1024 * 1024;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {len}\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..len / chunk.len() {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            _ => app_error(
                404,
                "api.context.404.app_error",
                "Sorry, we could not find the page.",
            ),
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// The form of the delivery made for `post_id`.
fn fired_for(
    hooks: &[RecordedRequest],
    post_id: &str,
) -> std::collections::HashMap<String, String> {
    hooks
        .iter()
        .map(|h| {
            h.form()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>()
        })
        .find(|f| f.get("post_id").map(String::as_str) == Some(post_id))
        .unwrap_or_else(|| panic!("no delivery for post {post_id}"))
}

/// posthook in front of a raw upstream, with one form hook on a receiver.
async fn posthook_before(up: &RawUpstream, rx: &WebhookReceiver, extra: &str) -> Posthook {
    let saw = |path: &str, _: &RawResponse| up.saw(path);
    let extra = format!(
        "{extra}{ALLOW_LOOPBACK}hooks:\n{}",
        form_hook(&rx.url("/hook"))
    );
    launch(&up.base_url(), &extra, false, Options::default, &saw)
        .await
        .0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpExpect {
    /// The whole 201 arrives and the hook fires.
    Fires,
    /// The answer is cut after its head and part of its body: the client sees it cut, and
    /// since the post exists, posthook recovers it by the id the part shows and fires.
    Cut,
    /// Not a 201: not even observed.
    NotCreated,
    /// A 201 that cannot be read: observed, counted unparsed, nothing fires.
    Unparsed,
}

struct UpRow {
    name: &'static str,
    mode: fn(&str) -> PostMode,
    expect: UpExpect,
    /// What the upstream itself takes to answer.
    upstream_delay: Duration,
}

fn created_answer(message: &str) -> Vec<u8> {
    json_answer("201 Created", &created_post_json(PUBLIC, message, "{}"))
}

/// The upstream slow, resetting mid-response, answering 5xx, or a 201 that is truncated, not
/// JSON, or not decodable: the client gets the upstream's exact bytes in the upstream's time,
/// posthook stays up, and only a whole, readable 201 fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_pass_through_exactly_and_fire_only_for_a_readable_201() {
    let _gate = MEMORY_GATE.read().await;
    let rows = [
        UpRow {
            name: "slow",
            mode: |_| PostMode::Slow(Duration::from_secs(2)),
            expect: UpExpect::Fires,
            upstream_delay: Duration::from_secs(2),
        },
        UpRow {
            name: "reset mid-response",
            mode: |m| PostMode::ResetMid(created_answer(m)),
            expect: UpExpect::Cut,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "500",
            mode: |_| {
                PostMode::Answer(app_error(
                    500,
                    "app.post.save.app_error",
                    "Unable to save the post.",
                ))
            },
            expect: UpExpect::NotCreated,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "503 html",
            mode: |_| {
                PostMode::Answer(http_response(
                    "503 Service Unavailable",
                    &[("Content-Type", "text/html"), ("Retry-After", "5")],
                    b"<html><body>down for maintenance</body></html>",
                ))
            },
            expect: UpExpect::NotCreated,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 truncated JSON",
            mode: |m| {
                let full = created_post_json(PUBLIC, m, "{}");
                PostMode::Answer(json_answer("201 Created", &full[..full.len() / 2]))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 not JSON",
            mode: |_| {
                PostMode::Answer(http_response(
                    "201 Created",
                    &[("Content-Type", "text/html")],
                    b"<html>created, probably</html>",
                ))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 gzip that is not gzip",
            mode: |m| {
                PostMode::Answer(http_response(
                    "201 Created",
                    &[
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "gzip"),
                    ],
                    created_post_json(PUBLIC, m, "{}").as_bytes(),
                ))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 in an unknown encoding",
            mode: |m| {
                PostMode::Answer(http_response(
                    "201 Created",
                    &[
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "br"),
                    ],
                    created_post_json(PUBLIC, m, "{}").as_bytes(),
                ))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
    ];
    for row in &rows {
        let what = row.name;
        let message = format!("#build {what}");
        let up = RawUpstream::start((row.mode)(&message)).await;
        let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
        let ph = posthook_before(&up, &rx, "").await;
        let base = baseline(ph.addr).await;

        let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
        let got = exchange(ph.addr, &post_request(body.as_bytes(), &[])).await;
        assert_eq!(
            up.last_post(),
            body.as_bytes(),
            "{what}: the upstream got the exact body"
        );
        let sent = up.last_answer();
        assert_same_answer(what, &got, &sent, row.expect == UpExpect::Cut);
        if row.expect == UpExpect::Cut {
            assert!(!got.complete, "{what}: the client sees the answer cut");
        }
        assert!(
            got.took >= row.upstream_delay,
            "{what}: took {:?}",
            got.took
        );
        let request = post_request(body.as_bytes(), &[]);
        let delay = row.upstream_delay;
        let n = not_delayed(what, base, got.took - delay, || async {
            let again = exchange(ph.addr, &request).await;
            assert!(again.took >= delay, "{what}");
            again.took - delay
        })
        .await;

        if row.expect == UpExpect::Unparsed {
            judged(&ph, what, n).await;
        }
        if row.expect == UpExpect::Fires {
            let hooks = rx.wait_for(n as usize, T).await;
            let post: serde_json::Value = serde_json::from_slice(got.body()).unwrap();
            let form = fired_for(&hooks, post["id"].as_str().unwrap());
            assert_eq!(form["text"], message, "{what}");
        }
        let s = settle(&ph, what).await;
        let (created, unparsed, delivered) = match row.expect {
            UpExpect::Fires => (n, 0, n),
            UpExpect::Cut => (n, 0, n),
            UpExpect::NotCreated => (0, 0, 0),
            UpExpect::Unparsed => (n, n, 0),
        };
        // Every 201 counts as a created post, the baseline's included.
        let observed = BASELINE_POSTS + created;
        assert_eq!(
            (s.posts_observed, s.posts_unparsed, s.deliveries_delivered),
            (observed, unparsed, delivered),
            "{what}: (observed, unparsed, delivered): {s:#?}"
        );
        assert_eq!(s.deliveries_due, delivered, "{what}");
        assert_up(ph.addr, what).await;
        rx.assert_quiet(Duration::from_millis(100)).await;
        assert_eq!(rx.requests().len() as u64, delivered, "{what}");
    }
}

/// The upstream down: an AppError 502, posthook stays up, and once Mattermost is back the
/// next post goes through and fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_then_back() {
    let _gate = MEMORY_GATE.read().await;
    // Mattermost's port, held (bound, not listening: connections are refused) so that nothing
    // else takes it meanwhile.
    let down = TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = down.local_addr().unwrap().port();
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let extra = format!("{ALLOW_LOOPBACK}hooks:\n{}", form_hook(&rx.url("/hook")));
    let unreachable = |_: &str, r: &RawResponse| {
        r.status == 502
            && serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|v| v["id"] == "posthook.upstream.unreachable.app_error")
    };
    let (ph, _) = launch(
        &format!("http://127.0.0.1:{port}"),
        &extra,
        false,
        Options::default,
        &unreachable,
    )
    .await;
    for message in ["nothing", "#build while down"] {
        let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
        let got = exchange(ph.addr, &post_request(body.as_bytes(), &[])).await;
        assert_eq!(got.status, 502, "{message}");
        let err: serde_json::Value = serde_json::from_slice(got.body()).unwrap();
        assert_eq!(err["id"], "posthook.upstream.unreachable.app_error");
        assert_eq!(err["status_code"], 502);
    }
    let s = settle(&ph, "down").await;
    assert_eq!((s.posts_observed, s.deliveries_due), (0, 0));

    // Mattermost comes back on its port.
    let up = RawUpstream::start_on(down.listen(64).unwrap(), PostMode::Normal);
    let base = baseline(ph.addr).await;
    let ((status, post), took) = timed(create_post(ph.addr, PUBLIC, "#build back")).await;
    assert_eq!(status, 201);
    let answer = up.last_answer();
    let sent: serde_json::Value =
        serde_json::from_slice(&answer[find(&answer, b"\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(post, sent, "the client got the created post");
    let n = not_delayed("back", base, took, || timed_post(ph.addr, "#build back")).await;
    let hooks = rx.wait_for(n as usize, T).await;
    let form = fired_for(&hooks, post["id"].as_str().unwrap());
    assert_eq!(form["text"], "#build back");
    let s = settle(&ph, "back").await;
    assert_eq!((s.deliveries_due, s.deliveries_delivered), (n, n));
}

// ---------------------------------------------------------------------------------------------
// Clients that go away
// ---------------------------------------------------------------------------------------------

/// A client that sends the head and half the body of a matching post, then goes away
/// (closing, or resetting): nothing is created, nothing fires, nothing stays in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_mid_request_fires_nothing_and_leaves_nothing_in_flight() {
    let _gate = MEMORY_GATE.read().await;
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let extra = format!("{ALLOW_LOOPBACK}hooks:\n{}", form_hook(&rx.url("/hook")));
    let (ph, _) = launch(
        &mm.base_url(),
        &extra,
        false,
        Options::default,
        &standin_saw(&mm),
    )
    .await;
    let base = baseline(ph.addr).await;
    let aborted = || {
        mm.posts()
            .iter()
            .filter(|p| {
                p["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("#build aborted")
            })
            .count()
    };
    let mut created = BASELINE_POSTS;
    for reset in [false, true] {
        let what = if reset { "reset" } else { "close" };
        let message = format!("#build aborted {what} {}", "x".repeat(4000));
        let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
        let request = post_request(body.as_bytes(), &[("Content-Type", "application/json")]);
        let cut = request.len() - body.len() / 2;
        let mut s = TcpStream::connect(ph.addr).await.unwrap();
        s.write_all(&request[..cut]).await.unwrap();
        s.flush().await.unwrap();
        // posthook has the head and waits for the rest of the body.
        let h = handle(&ph);
        wait_until("the request in flight", T, move || !h.is_idle()).await;
        if reset {
            s.set_zero_linger().unwrap();
        }
        drop(s);
        let s = settle(&ph, what).await;
        // Only the whole posts were created: the baseline's and the "nothing after" ones.
        assert_eq!(
            (s.posts_observed, s.deliveries_due),
            (created, 0),
            "{what}: {s:#?}"
        );
        assert_eq!(aborted(), 0, "{what}: nothing created");
        let took = timed_post(ph.addr, "nothing after").await;
        created += not_delayed(what, base, took, || timed_post(ph.addr, "nothing after")).await;
    }
    rx.assert_quiet(Duration::from_millis(200)).await;
    // The control: a whole post fires.
    assert_eq!(create_post(ph.addr, PUBLIC, "#build whole").await.0, 201);
    rx.wait_for(1, T).await;
    let s = settle(&ph, "control").await;
    assert_eq!((s.deliveries_due, s.deliveries_delivered), (1, 1));
}

/// A client that reads the first bytes of a large answer and goes away (reset): posthook stays
/// up, nothing stays in flight, the next post is not delayed, and whatever fires fires once.
/// (Whether the large created post fires depends on how much of it the sockets had buffered
/// when the client left; see the ignored test below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_mid_response_leaves_posthook_up() {
    let _gate = MEMORY_GATE.read().await;
    // A created post whose 201 is large (props near Mattermost's 800 000-rune bound), under
    // the inspection bound.
    let message = "#build large answer";
    let padding = "p".repeat(780 * 1024);
    let answer = json_answer(
        "201 Created",
        &created_post_json(PUBLIC, message, &format!(r#"{{"padding":"{padding}"}}"#)),
    );
    let up = RawUpstream::start(PostMode::Answer(answer)).await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before(&up, &rx, "").await;
    let base = baseline(ph.addr).await;

    let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
    let rows: [(&str, Vec<u8>, &[u8]); 2] = [
        (
            "passthrough GET of 32 MiB",
            b"GET /big HTTP/1.1\r\nHost: chat.example.com\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 ",
        ),
        (
            "matching post with a 780 KiB 201",
            post_request(body.as_bytes(), &[]),
            b"HTTP/1.1 201 ",
        ),
    ];
    for (what, request, status_line) in &rows {
        client_leaves_after_the_first_bytes(ph.addr, request, status_line).await;
        let s = settle(&ph, what).await;
        assert!(
            s.deliveries_due <= 1,
            "{what}: at most one delivery: {s:#?}"
        );
        let took = timed_post(ph.addr, "nothing after").await;
        not_delayed(what, base, took, || timed_post(ph.addr, "nothing after")).await;
    }
    assert_up(ph.addr, "after").await;
    let s = settle(&ph, "after").await;
    assert_eq!(rx.requests().len() as u64, s.deliveries_due);
}

/// Connects with a small receive window, sends `request`, reads the first bytes of the answer
/// (which must start with `status_line`), then resets the connection.
async fn client_leaves_after_the_first_bytes(addr: SocketAddr, request: &[u8], status_line: &[u8]) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut first = [0u8; 64];
    let n = tokio::time::timeout(T, s.read(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert!(
        first[..n].starts_with(status_line),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    s.set_zero_linger().unwrap();
    drop(s);
}

/// Mattermost creates the post whatever its client does, and fires its hooks; posthook watches
/// the upstream side for that reason. Here the upstream sends half the 201, the client reads
/// the head and leaves, and the rest of the 201 follows: the post exists and must fire (or at
/// least be counted as lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_created_for_a_client_that_left_mid_response_still_fires() {
    let _gate = MEMORY_GATE.read().await;
    let message = "#build client left";
    let go = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer = json_answer(
        "201 Created",
        &created_post_json(
            PUBLIC,
            message,
            &format!(r#"{{"note":"{}"}}"#, "n".repeat(8 * 1024)),
        ),
    );
    let up = RawUpstream::start(PostMode::Staged(answer, go.clone())).await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before(&up, &rx, "").await;
    let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
    client_leaves_after_the_first_bytes(
        ph.addr,
        &post_request(body.as_bytes(), &[]),
        b"HTTP/1.1 201 ",
    )
    .await;
    go.store(true, Ordering::SeqCst);
    let s = settle(&ph, "client gone").await;
    assert_eq!(s.posts_observed, 1, "{s:#?}");
    assert_eq!(
        (s.deliveries_due, s.deliveries_delivered),
        (1, 1),
        "the created post fires once: {s:#?}"
    );
    let hooks = rx.wait_for(1, T).await;
    let form: std::collections::HashMap<_, _> = hooks[0].form().into_iter().collect();
    assert_eq!(form["text"], message);
    assert_up(ph.addr, "after").await;
}

// ---------------------------------------------------------------------------------------------
// Bad input on the post path
// ---------------------------------------------------------------------------------------------

struct BadRow {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// The message of the created post when the stand-in (as Mattermost) creates a matching
    /// post; `None`: nothing may fire.
    fires: Option<&'static str>,
}

fn post_body(message: &str) -> Vec<u8> {
    serde_json::json!({"channel_id": PUBLIC, "message": message})
        .to_string()
        .into_bytes()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut body =
        format!(r##"{{"channel_id":"{PUBLIC}","message":"#build nested","props":{{"deep":"##)
            .into_bytes();
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.extend_from_slice(b"}}");
    body
}

/// An answer without what differs between two identical requests: the date, the request id,
/// and the created post's id and times.
fn normalized(e: &Exchange) -> (String, Vec<(String, String)>, serde_json::Value) {
    let status_line =
        String::from_utf8_lossy(&e.raw[..find(&e.raw, b"\r\n").unwrap()]).into_owned();
    let headers = e
        .headers()
        .into_iter()
        .filter(|(n, _)| {
            !["connection", "date", "keep-alive", "x-request-id"]
                .contains(&n.to_ascii_lowercase().as_str())
        })
        .collect();
    let mut body: serde_json::Value = serde_json::from_slice(e.body())
        .unwrap_or_else(|err| panic!("{err}: {:?}", String::from_utf8_lossy(e.body())));
    if let Some(o) = body.as_object_mut() {
        for volatile in ["id", "create_at", "update_at", "request_id"] {
            o.remove(volatile);
        }
    }
    (status_line, headers, body)
}

/// Malformed, truncated, deeply nested, huge and non-UTF-8 JSON, missing or wrong
/// Content-Type, duplicate keys, control characters: the upstream gets the exact bytes, the
/// client gets the upstream's exact answer, posthook stays up, and a delivery happens exactly
/// when Mattermost (the stand-in) created a matching post, with nothing injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_post_bodies_pass_through_exactly_and_fire_only_for_a_created_match() {
    let _gate = MEMORY_GATE.read().await;
    const INJECTION: &str = "#build a\r\nX-Injected: 1\r\n\r\nb=c&token=evil";
    const CONTROLS: &str = "#build \u{0}\u{7}\u{1b}[31m\tred\u{7f}\u{85}\u{2028}end";
    let huge = format!("#build {}", "a".repeat(2 * 1024 * 1024));
    let rows = vec![
        BadRow {
            name: "missing Content-Type",
            content_type: None,
            body: post_body("#build no type"),
            fires: Some("#build no type"),
        },
        BadRow {
            name: "wrong Content-Type",
            content_type: Some("text/plain; charset=latin1"),
            body: post_body("#build text plain"),
            fires: Some("#build text plain"),
        },
        BadRow {
            name: "form Content-Type",
            content_type: Some("application/x-www-form-urlencoded"),
            body: post_body("#build form type"),
            fires: Some("#build form type"),
        },
        BadRow {
            name: "malformed",
            content_type: Some("application/json"),
            body: format!(r##"{{"channel_id":"{PUBLIC}",,"message":"#build x"}}"##).into_bytes(),
            fires: None,
        },
        BadRow {
            name: "truncated",
            content_type: Some("application/json"),
            body: format!(r##"{{"channel_id":"{PUBLIC}","message":"#build trunc"##).into_bytes(),
            fires: None,
        },
        BadRow {
            name: "not an object",
            content_type: Some("application/json"),
            body: br##"["#build", "chanpub"]"##.to_vec(),
            fires: None,
        },
        BadRow {
            name: "empty",
            content_type: Some("application/json"),
            body: Vec::new(),
            fires: None,
        },
        BadRow {
            name: "wrong types",
            content_type: Some("application/json"),
            body: format!(r##"{{"channel_id":"{PUBLIC}","message":["#build"]}}"##).into_bytes(),
            fires: None,
        },
        BadRow {
            name: "nested 100 deep",
            content_type: Some("application/json"),
            body: nested(100),
            fires: Some("#build nested"),
        },
        BadRow {
            name: "nested 100 000 deep",
            content_type: Some("application/json"),
            body: nested(100_000),
            fires: None,
        },
        BadRow {
            name: "huge (2 MiB message)",
            content_type: Some("application/json"),
            body: post_body(&huge),
            fires: None,
        },
        BadRow {
            name: "non-UTF-8 (refused by the stand-in)",
            content_type: Some("application/json"),
            body: [
                format!(r##"{{"channel_id":"{PUBLIC}","message":"#build "##).as_bytes(),
                b"\xff\xfe\xc3(",
                b"\"}",
            ]
            .concat(),
            fires: None,
        },
        BadRow {
            name: "duplicate keys, the last matching",
            content_type: Some("application/json"),
            body: format!(
                "{{\"channel_id\":\"nosuchchannel\",\"message\":\"hello\",\
                 \"channel_id\":\"{PUBLIC}\",\"message\":\"#build second\"}}"
            )
            .into_bytes(),
            fires: Some("#build second"),
        },
        BadRow {
            name: "duplicate keys, the first matching",
            content_type: Some("application/json"),
            body: format!(
                "{{\"channel_id\":\"{PUBLIC}\",\"message\":\"#build first\",\"message\":\"plain\"}}"
            )
            .into_bytes(),
            fires: None,
        },
        BadRow {
            name: "header and form injection",
            content_type: Some("application/json"),
            body: post_body(INJECTION),
            fires: Some(INJECTION),
        },
        BadRow {
            name: "control characters",
            content_type: Some("application/json"),
            body: post_body(CONTROLS),
            fires: Some(CONTROLS),
        },
    ];

    let (fired, s) = bad_input_rows(&rows).await;
    assert_eq!(s.deliveries_delivered, fired);
}

/// Runs `rows` through one posthook in front of the stand-in; returns the deliveries and the
/// final counters.
async fn bad_input_rows(rows: &[BadRow]) -> (u64, Snapshot) {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let extra = format!("{ALLOW_LOOPBACK}hooks:\n{}", form_hook(&rx.url("/hook")));
    let (ph, _) = launch(
        &mm.base_url(),
        &extra,
        false,
        Options::default,
        &standin_saw(&mm),
    )
    .await;
    let base = baseline(ph.addr).await;
    let mut fired = 0;
    // The headers of an ordinary delivery, the reference for every other.
    let mut reference: Option<Vec<(String, String)>> = None;
    for row in rows {
        let what = row.name;
        let headers: Vec<(&str, &str)> = row
            .content_type
            .map(|ct| ("Content-Type", ct))
            .into_iter()
            .collect();
        let request = post_request(&row.body, &headers);
        let direct = exchange(mm.addr(), &request).await;
        let created_match = direct.status == 201
            && serde_json::from_slice::<serde_json::Value>(direct.body()).unwrap()["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("#build"));
        assert_eq!(
            row.fires.is_some(),
            created_match,
            "{what}: the table agrees with the stand-in ({})",
            direct.status
        );

        let too_large = ph.stats().bodies_too_large;
        let proxied = exchange(ph.addr, &request).await;
        let seen = mm
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST")
            .unwrap();
        assert_eq!(
            seen.body_len,
            row.body.len() as u64,
            "{what}: body length upstream"
        );
        assert!(
            row.body.starts_with(&seen.body)
                && seen.body.len() == row.body.len().min(RECORD_BODY_LIMIT),
            "{what}: the upstream got the exact bytes"
        );
        assert!(proxied.complete, "{what}");
        assert_eq!(
            normalized(&proxied),
            normalized(&direct),
            "{what}: the upstream's answer"
        );
        let n = not_delayed(what, base.max(direct.took), proxied.took, || async {
            exchange(ph.addr, &request).await.took
        })
        .await;
        if proxied.status == 201 {
            let post: serde_json::Value = serde_json::from_slice(proxied.body()).unwrap();
            assert_eq!(
                post,
                mm.post(post["id"].as_str().unwrap()).unwrap(),
                "{what}"
            );
        }

        if let Some(message) = row.fires {
            fired += n as usize;
            let got = rx.wait_for(fired, T).await;
            let post: serde_json::Value = serde_json::from_slice(proxied.body()).unwrap();
            let id = post["id"].as_str().unwrap();
            let hook = got
                .iter()
                .find(|h| h.form().contains(&("post_id".to_string(), id.to_string())))
                .unwrap_or_else(|| panic!("{what}: no delivery for {id}"));
            let form = hook.form();
            let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "channel_id",
                    "channel_name",
                    "file_ids",
                    "post_id",
                    "team_domain",
                    "team_id",
                    "text",
                    "timestamp",
                    "token",
                    "trigger_word",
                    "user_id",
                    "user_name"
                ],
                "{what}: exactly the 12 fields, once each"
            );
            let form: std::collections::HashMap<_, _> = form.into_iter().collect();
            assert_eq!(form["text"], message, "{what}: the exact message");
            assert_eq!(form["token"], HOOK_TOKEN, "{what}: the hook's token only");
            assert_eq!(form["post_id"], post["id"].as_str().unwrap(), "{what}");
            assert_eq!(form["trigger_word"], "#build", "{what}");
            // Exactly the headers of an ordinary delivery, whatever the message holds.
            let headers: Vec<(String, String)> = hook
                .headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
                .cloned()
                .collect();
            assert_eq!(
                hook.header("content-length"),
                Some(hook.body.len().to_string().as_str()),
                "{what}"
            );
            assert!(hook.header("x-injected").is_none(), "{what}");
            match &reference {
                None => {
                    assert_eq!(
                        hook.header("content-type"),
                        Some("application/x-www-form-urlencoded")
                    );
                    assert_eq!(hook.header("user-agent"), Some("Mattermost-Bot/1.1"));
                    assert_eq!(hook.header("accept"), Some("application/json"));
                    reference = Some(headers);
                }
                Some(want) => assert_eq!(&headers, want, "{what}: the webhook request's headers"),
            }
        }
        let s = settle(&ph, what).await;
        assert_eq!(s.deliveries_due, fired as u64, "{what}: {s:#?}");
        // A body over `limits.max_inspected_body_bytes` (1 MiB) is passed on uninspected.
        let over = if row.body.len() > 1024 * 1024 { n } else { 0 };
        assert_eq!(s.bodies_too_large - too_large, over, "{what}: {s:#?}");
        assert_eq!(rx.requests().len(), fired, "{what}: nothing else fired");
        assert_up(ph.addr, what).await;
    }
    let s = settle(&ph, "all rows").await;
    rx.assert_quiet(Duration::from_millis(200)).await;
    (fired as u64, s)
}

/// Go's decoder reads the first JSON value of the body and ignores what follows, so
/// Mattermost creates this post (the stand-in does too) and fires its hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_with_trailing_bytes_fires_like_mattermost() {
    let _gate = MEMORY_GATE.read().await;
    let rows = [BadRow {
        name: "trailing bytes after the object",
        content_type: Some("application/json"),
        body: [
            post_body("#build trailing").as_slice(),
            b" {\"message\":\"x\"} trailing",
        ]
        .concat(),
        fires: Some("#build trailing"),
    }];
    let (fired, s) = bad_input_rows(&rows).await;
    assert!(fired >= 1);
    assert_eq!(s.deliveries_delivered, fired);
}

/// A post body the stand-in refuses but Mattermost (Go) accepts: a raw upstream answers the
/// 201 Mattermost would; the client gets it exactly and the hook fires with `text`.
async fn accepted_by_mattermost(what: &str, body: &[u8], created: &str, text: &str) {
    let up = RawUpstream::start(PostMode::Answer(json_answer("201 Created", created))).await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before(&up, &rx, "").await;
    let base = baseline(ph.addr).await;
    let request = post_request(body, &[("Content-Type", "application/json")]);
    let got = exchange(ph.addr, &request).await;
    assert_eq!(
        up.last_post(),
        body,
        "{what}: the upstream got the exact bytes"
    );
    assert_same_answer(what, &got, &up.last_answer(), false);
    // A repeat is answered with the same post (the upstream's answer is fixed): fired once.
    let n = not_delayed(what, base, got.took, || async {
        exchange(ph.addr, &request).await.took
    })
    .await;
    judged(&ph, what, n).await;
    let s = settle(&ph, what).await;
    assert_eq!(
        (
            s.posts_observed,
            s.posts_unparsed,
            s.duplicate_posts_skipped,
            s.deliveries_due,
            s.deliveries_delivered
        ),
        (BASELINE_POSTS + n, 0, n - 1, 1, 1),
        "{what}: (observed, unparsed, repeated, due, delivered): {s:#?}"
    );
    let hooks = rx.wait_for(1, T).await;
    let form: std::collections::HashMap<_, _> = hooks[0].form().into_iter().collect();
    assert_eq!(form["text"], text, "{what}");
    assert_up(ph.addr, what).await;
}

/// Go replaces invalid UTF-8 with U+FFFD: Mattermost creates the post, and it fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_post_that_mattermost_accepts_fires() {
    let _gate = MEMORY_GATE.read().await;
    let body = [
        format!(r##"{{"channel_id":"{PUBLIC}","message":"#build caf"##).as_bytes(),
        b"\xe9 \xff",
        b"\"}",
    ]
    .concat();
    let text = "#build caf\u{fffd} \u{fffd}";
    let created = created_post_json(PUBLIC, text, "{}");
    accepted_by_mattermost("non-UTF-8", &body, &created, text).await;
}

/// Go's decoder nests up to 10 000 levels: Mattermost creates a post whose props nest 200
/// deep (far under its 800 000-rune props bound) and fires its hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_post_that_mattermost_accepts_fires() {
    let _gate = MEMORY_GATE.read().await;
    let depth = 200;
    let body = nested(depth);
    let deep = format!(r#"{{"deep":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    let created = created_post_json(PUBLIC, "#build nested", &deep);
    accepted_by_mattermost("nested 200 deep", &body, &created, "#build nested").await;
}

// ---------------------------------------------------------------------------------------------
// Memory: a 1 GiB webhook answer and a gzip bomb for a 201
// ---------------------------------------------------------------------------------------------

/// Samples the RSS every 10 ms until `done` holds (bounded by `T`); returns the peak.
async fn peak_rss_until(what: &str, done: impl Fn() -> bool) -> u64 {
    let deadline = Instant::now() + T;
    let mut peak = rss();
    while !done() {
        assert!(Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
        peak = peak.max(rss());
    }
    peak.max(rss())
}

/// A webhook that answers 1 GiB, and an upstream whose 201 is a gzip bomb (128 MiB of JSON
/// in about 130 KiB): posthook reads at most 1 MiB + 1 of the one and decodes at most
/// `limits.max_decoded_body_bytes` of the other; memory stays bounded, the user sees nothing,
/// and both are counted. Runs alone (the gate) so that other tests do not move the RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_1_gib_answer_and_a_gzip_bomb() {
    let _gate = MEMORY_GATE.write().await;

    // Row 1: the 1 GiB webhook answer.
    let what = "1 GiB answer";
    let mm = standin().await;
    let fault = FaultServer::start(PUBLIC_IP, Answer::Huge).await;
    let extra = format!(
        "settings:\n{ALLOW_PUBLIC_IP}hooks:\n{}",
        form_hook(&fault.url("hook.test"))
    );
    let (ph, _) = launch(&mm.base_url(), &extra, false, names, &standin_saw(&mm)).await;
    let base = baseline(ph.addr).await;
    let before = rss();
    let took = timed_post(ph.addr, "#build huge answer").await;
    let n = not_delayed(what, base, took, || {
        timed_post(ph.addr, "#build huge answer")
    })
    .await;
    let state = fault.state.clone();
    let peak = peak_rss_until(what, move || state.ended.load(Ordering::SeqCst) as u64 == n).await;
    let s = settle(&ph, what).await;
    assert_eq!(
        (s.deliveries_due, s.deliveries_delivered, s.replies_failed),
        (n, n, n),
        "{what}: delivered, and the answer refused as too large: {s:#?}"
    );
    let written = fault.state.written.load(Ordering::SeqCst);
    assert!(
        written < n * MEMORY_BOUND,
        "{what}: posthook stopped reading and closed, after {written} bytes were written"
    );
    assert!(
        peak.saturating_sub(before) < MEMORY_BOUND,
        "{what}: RSS grew by {} MiB",
        (peak - before) >> 20
    );
    assert_up(ph.addr, what).await;
    drop(ph);

    // Row 2: the gzip bomb.
    let what = "gzip bomb";
    let message = "#build bomb";
    let post = created_post_json(PUBLIC, message, "{}");
    let bomb = tokio::task::spawn_blocking(move || {
        // A last member, "pad", holds 128 MiB of spaces.
        let head = format!("{},\"pad\":\"", &post[..post.len() - 1]);
        let spaces = vec![b' '; 1024 * 1024];
        gzip(&[head.as_bytes(), &spaces, b"\"}"], 128)
    })
    .await
    .unwrap();
    assert!(
        bomb.len() < 1024 * 1024,
        "under the inspection bound: {}",
        bomb.len()
    );
    let answer = http_response(
        "201 Created",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    drop(bomb);
    let up = RawUpstream::start(PostMode::Answer(answer)).await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before(&up, &rx, "").await;
    let base = baseline(ph.addr).await;
    let before = rss();
    let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
    let request = post_request(body.as_bytes(), &[]);
    let got = exchange(ph.addr, &request).await;
    assert_eq!(
        up.last_post(),
        body.as_bytes(),
        "{what}: the upstream got the exact body"
    );
    assert_same_answer(what, &got, &up.last_answer(), false);
    let n = not_delayed(what, base, got.took, || async {
        exchange(ph.addr, &request).await.took
    })
    .await;
    let h = handle(&ph);
    let stats = h.stats.clone();
    // Until every post is judged, either way.
    let peak = peak_rss_until(what, move || {
        let s = stats.snapshot();
        h.is_idle() && s.posts_unparsed + s.deliveries_due >= n
    })
    .await;
    assert!(
        peak.saturating_sub(before) < MEMORY_BOUND,
        "{what}: RSS grew by {} MiB",
        (peak - before) >> 20
    );
    let s = settle(&ph, what).await;
    assert_eq!(
        (s.posts_observed, s.posts_unparsed, s.deliveries_due),
        (BASELINE_POSTS + n, n, 0),
        "{what}: refused past the decoding bound: {s:#?}"
    );
    rx.assert_quiet(Duration::from_millis(100)).await;
    assert_up(ph.addr, what).await;
}
