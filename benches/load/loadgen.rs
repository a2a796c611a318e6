//! The load generator (runtime "bench-loadgen"): ready-made requests as the Mattermost web app
//! sends them, and two ways of sending them. The closed loop finds the maximum throughput. The
//! open loop sends at a fixed rate from a pacer thread and counts latency from the intended send
//! time, so that a stall is charged to every request due during it, not only to the one that
//! met it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::clock::unix_ms;
use crate::fixtures::{CHANNEL_ID, HOOKS, MATCH_EVERY, MATCH_PREFIX, USER_ID, USER_TOKEN};
use crate::http::read_msg;

/// A request that takes longer than this counts as an error (keeps every phase bounded).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a scenario sends: a ring of ready-made requests, used in order.
#[derive(Clone)]
pub struct Workload {
    requests: Arc<Vec<Bytes>>,
    expect: u16,
}

const NORMAL_MESSAGES: &[&str] = &[
    "good morning everyone, the build is green",
    "lunch at noon?",
    "@bob can you review my PR when you have a minute",
    "I pushed the fix to staging, please have a look",
    "#general is noisy today",
    "!important the standup moves to 10:30",
    "thanks!",
    "see https://ci.example.com/b/42 for the details",
    "ok",
];

fn request_head(method: &str, path: &str, body_len: Option<usize>) -> String {
    let mut h = format!(
        "{method} {path} HTTP/1.1\r\nHost: mattermost.example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\nAccept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAuthorization: Bearer {USER_TOKEN}\r\nX-Requested-With: XMLHttpRequest\r\n"
    );
    if let Some(n) = body_len {
        let _ = write!(
            h,
            "Content-Type: application/json\r\nContent-Length: {n}\r\n"
        );
    }
    h.push_str("\r\n");
    h
}

/// `POST /api/v4/posts` as the web app sends it; one in `MATCH_EVERY` (`i % 10 == 0`) starts
/// with a trigger word of exactly one hook (`match_all`: every one does).
pub fn posts_workload(n: usize, match_all: bool) -> Workload {
    let ms = unix_ms();
    let requests = (0..n)
        .map(|i| {
            let message = if match_all || i % MATCH_EVERY == 0 {
                // Exact-mode hooks are those with i % 10 >= 4 (see hooks_yaml).
                let k = (i * 7919) % (HOOKS / 10) * 10 + 4 + (i / MATCH_EVERY) % 6;
                format!("{MATCH_PREFIX}{k} please build main")
            } else {
                NORMAL_MESSAGES[i % NORMAL_MESSAGES.len()].to_string()
            };
            let body = serde_json::json!({
                "file_ids": [],
                "message": message,
                "channel_id": CHANNEL_ID,
                "pending_post_id": format!("{USER_ID}:{}", ms + i as i64),
                "user_id": USER_ID,
                "create_at": 0,
                "metadata": {},
                "props": {"disable_group_highlight": true},
                "update_at": ms + i as i64,
                "reply_count": 0
            })
            .to_string();
            let mut r = request_head("POST", "/api/v4/posts", Some(body.len())).into_bytes();
            r.extend_from_slice(body.as_bytes());
            Bytes::from(r)
        })
        .collect();
    Workload {
        requests: Arc::new(requests),
        expect: 201,
    }
}

pub fn get_workload(path: &str) -> Workload {
    Workload {
        requests: Arc::new(vec![Bytes::from(request_head("GET", path, None))]),
        expect: 200,
    }
}

struct Client {
    s: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Client {
            s,
            buf: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// Sends `req` and checks the answer; Ok(false) when the server closes the connection.
    async fn call(&mut self, req: &[u8], expect: u16) -> Result<bool, String> {
        let exchange = async {
            self.s
                .write_all(req)
                .await
                .map_err(|e| format!("write: {}", e.kind()))?;
            let msg = read_msg(&mut self.s, &mut self.buf, true)
                .await
                .map_err(|e| format!("read: {}", e.kind()))?
                .ok_or_else(|| "closed by server".to_string())?;
            let status = msg.status();
            if status != expect {
                return Err(format!("HTTP {status}"));
            }
            if msg.body.is_empty() || msg.body[0] != b'{' {
                return Err("body is not JSON".into());
            }
            Ok(!msg.close)
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err("timeout".into()),
        }
    }
}

/// What one load phase measured.
#[derive(Default)]
pub struct LoadResult {
    /// Completed in the measuring window (closed loop) / intended in it (open loop).
    pub ok: u64,
    pub window: f64,
    /// All successful requests of the phase, warm-up included (for CPU per request).
    pub total: u64,
    pub errors: BTreeMap<String, u64>,
    /// Latencies (ns) of the measuring window.
    pub lat: Vec<u64>,
    /// Open loop: how late the pacer released each request (ns).
    pub pacer_lag: Vec<u64>,
}

impl LoadResult {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn merge(&mut self, other: ConnResult) {
        self.lat.extend(other.lat);
        self.total += other.total;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

#[derive(Default)]
struct ConnResult {
    lat: Vec<u64>,
    total: u64,
    errors: BTreeMap<String, u64>,
}

impl ConnResult {
    /// A new connection, or None with the failure counted.
    async fn connect(&mut self, addr: SocketAddr) -> Option<Client> {
        match Client::connect(addr).await {
            Ok(c) => Some(c),
            Err(e) => {
                *self
                    .errors
                    .entry(format!("connect: {}", e.kind()))
                    .or_default() += 1;
                None
            }
        }
    }

    /// Sends `req` on the connected `client` and counts the outcome; `latency` gets the moment
    /// the answer was in and says what to record (nothing outside the measuring window). A
    /// failed call, or a connection the server closes, empties `client` for a new connect.
    async fn exchange(
        &mut self,
        client: &mut Option<Client>,
        req: &[u8],
        expect: u16,
        latency: impl FnOnce(Instant) -> Option<u64>,
    ) {
        let res = client.as_mut().expect("connected").call(req, expect).await;
        let done = Instant::now();
        match res {
            Ok(keep) => {
                self.total += 1;
                if let Some(ns) = latency(done) {
                    self.lat.push(ns);
                }
                if !keep {
                    *client = None;
                }
            }
            Err(e) => {
                *self.errors.entry(e).or_default() += 1;
                *client = None;
            }
        }
    }
}

/// `conns` keep-alive connections, each sending its next request as soon as the previous
/// answer is in: the maximum throughput.
pub async fn closed_loop(
    addr: SocketAddr,
    wl: &Workload,
    conns: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let start = Instant::now();
    let (t_w, t_end) = (start + warmup, start + warmup + measure);
    let next = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (wl, next) = (wl.clone(), next.clone());
        set.spawn(async move {
            let mut r = ConnResult {
                lat: Vec::with_capacity(64 * 1024),
                ..Default::default()
            };
            let mut client: Option<Client> = None;
            while Instant::now() < t_end {
                if client.is_none() {
                    client = r.connect(addr).await;
                    if client.is_none() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                }
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let req = &wl.requests[i % wl.requests.len()];
                let t0 = Instant::now();
                let latency =
                    |t1: Instant| (t1 >= t_w && t1 < t_end).then(|| (t1 - t0).as_nanos() as u64);
                r.exchange(&mut client, req, wl.expect, latency).await;
            }
            r
        });
    }
    let mut out = LoadResult {
        window: measure.as_secs_f64(),
        ..Default::default()
    };
    while let Some(r) = set.join_next().await {
        out.merge(r.expect("connection task"));
    }
    out.ok = out.lat.len() as u64;
    out
}

/// Requests at a fixed `rate`, released by a pacer thread at their intended times and served
/// by whichever of `conns` connections is free; latency counts from the intended time, so a
/// stall delays (and is charged to) every request due during it.
pub async fn open_loop(
    addr: SocketAddr,
    wl: &Workload,
    rate: f64,
    conns: usize,
    warmup: Duration,
    measure: Duration,
) -> LoadResult {
    let mut out = LoadResult {
        window: measure.as_secs_f64(),
        ..Default::default()
    };
    let mut clients = Vec::new();
    for _ in 0..conns {
        match Client::connect(addr).await {
            Ok(c) => clients.push(Some(c)),
            Err(e) => {
                *out.errors
                    .entry(format!("connect: {}", e.kind()))
                    .or_default() += 1
            }
        }
    }
    let n = ((warmup + measure).as_secs_f64() * rate) as u64;
    let period = 1e9 / rate;
    let t0 = Instant::now() + Duration::from_millis(20);
    let t_w = t0 + warmup;
    let due = move |i: u64| t0 + Duration::from_nanos((i as f64 * period) as u64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let mut lag = Vec::with_capacity(n as usize);
            let mut i = 0;
            while i < n {
                let now = Instant::now();
                let next = due(i);
                if next > now {
                    std::thread::sleep(next - now);
                    continue;
                }
                while i < n && due(i) <= now {
                    lag.push((now - due(i)).as_nanos() as u64);
                    if tx.send((i, due(i))).is_err() {
                        return lag;
                    }
                    i += 1;
                }
            }
            lag
        })
        .expect("pacer thread");
    let mut set = tokio::task::JoinSet::new();
    for client in clients {
        let (wl, rx) = (wl.clone(), rx.clone());
        set.spawn(async move {
            let mut client = client;
            let mut r = ConnResult::default();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((i, intended)) = job else { break };
                if client.is_none() {
                    client = r.connect(addr).await;
                    if client.is_none() {
                        continue;
                    }
                }
                let req = &wl.requests[i as usize % wl.requests.len()];
                let latency =
                    |done: Instant| (intended >= t_w).then(|| (done - intended).as_nanos() as u64);
                r.exchange(&mut client, req, wl.expect, latency).await;
            }
            r
        });
    }
    while let Some(r) = set.join_next().await {
        out.merge(r.expect("connection task"));
    }
    let lag = tokio::task::spawn_blocking(move || pacer.join().expect("pacer"))
        .await
        .expect("pacer join");
    // A system that falls behind finishes after the window: the rate it achieved counts the
    // time it took.
    let span = Instant::now().saturating_duration_since(t_w);
    out.window = measure.as_secs_f64().max(span.as_secs_f64());
    let warm = (warmup.as_secs_f64() * rate) as usize;
    out.pacer_lag = lag.into_iter().skip(warm).collect();
    out.ok = out.lat.len() as u64;
    out
}
