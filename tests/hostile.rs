//! Hostile clients at the edge (issue 14), through the binary: a head trickled line by line is
//! closed at its deadline, an idle keep-alive connection at its timeout, a slow upload that
//! moves is never cut (a stalled one is), a flood beyond `limits.max_connections` is refused
//! while a normal client keeps posting, and a flood of half-open connections costs little
//! memory, which comes back once they close.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use harness::binary::Proc;
use harness::*;
use support::{http_request, MattermostStandIn, RawConn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A process's limits of open files (soft, hard).
fn open_files_limits(pid: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line.split_whitespace().skip(3);
    let mut next = || fields.next().unwrap().parse().unwrap();
    (next(), next())
}

/// This process's limit of open files, its soft limit raised to its hard one first.
fn open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    open_files_limits("self").0
}

/// Opens `n` connections to `addr` that each send `bytes` (from a blocking thread).
async fn open(addr: SocketAddr, n: usize, bytes: &'static [u8]) -> Vec<TcpStream> {
    tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(bytes).unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap()
}

/// Waits until posthook counts `n` open connections.
async fn wait_open(edge: &Edge, n: u64) {
    let deadline = Instant::now() + T;
    while edge.metric("posthook_connections_open").await != n {
        assert!(
            Instant::now() < deadline,
            "posthook never had {n} connections open"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 5 s) for RSS to come back within 20 MiB of `before`; the RSS then.
async fn settled(pid: u32, before: u64) -> (u64, Duration) {
    let closed = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        if now <= before + 20 * 1024 || closed.elapsed() > Duration::from_secs(5) {
            return (now, closed.elapsed());
        }
    }
}

/// Opens `n` connections that each send `bytes` and waits until posthook holds them all, then
/// half a second more; returns them and posthook's RSS then (KiB).
async fn hold(edge: &Edge, n: usize, bytes: &'static [u8]) -> (Vec<TcpStream>, u64) {
    let conns = open(edge.p.addr, n, bytes).await;
    wait_open(edge, n as u64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (conns, rss_kib(edge.p.child.id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_cost_little_and_memory_returns() {
    let edge = Edge::start("", "").await;
    let (addr, pid) = (edge.p.addr, edge.p.child.id());
    // 1 000 of each kind (fewer under a low file limit: this process holds one end of each).
    let n = open_files_limit().saturating_sub(100).min(1000) as usize;
    let per_conn = |from: u64, to: u64| (to.saturating_sub(from)) as f64 / n as f64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);

    // Half a request head, then nothing.
    let (half_open, with_half_open) = hold(
        &edge,
        n,
        b"POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nContent-Ty",
    )
    .await;
    drop(half_open);
    wait_open(&edge, 0).await;
    // What the half-open flood left (tokio's registrations are kept for reuse) is the base.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_idle = rss_kib(pid);

    // One request answered, then idle (keep-alive): the answers are read so that each
    // connection is back to waiting for its next request.
    let mut idle = open(
        addr,
        n,
        b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let idle = tokio::task::spawn_blocking(move || {
        for s in &mut idle {
            let mut buf = [0u8; 1024];
            let got = s.read(&mut buf).unwrap();
            assert!(buf[..got].starts_with(b"HTTP/1.1 200"));
        }
        idle
    })
    .await
    .unwrap();
    wait_open(&edge, n as u64).await;
    let base_idle = rss_kib(pid);
    // What the requests themselves took is given back within jemalloc's decay (1 s).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let with_idle = rss_kib(pid);
    drop(idle);
    wait_open(&edge, 0).await;

    // Memory that had to be taken: uploads stalled half-way hold a whole proxy session each.
    let base_stalled = rss_kib(pid);
    let (stalled, with_stalled) = hold(
        &edge,
        n,
        b"POST /api/v4/files HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nhalf",
    )
    .await;
    drop(stalled);
    let (after, took) = settled(pid, before).await;

    eprintln!(
        "RSS {before} KiB; {n} half-open connections {with_half_open} KiB ({:.1} KiB each); \
         {n} idle keep-alive ones {with_idle} KiB (from {before_idle}: {:.1} KiB each; {base_idle} while answering); \
         {n} stalled uploads {with_stalled} KiB (from {base_stalled}: {:.1} KiB each); \
         {took:?} after they closed {after} KiB",
        per_conn(before, with_half_open),
        per_conn(before_idle, with_idle),
        per_conn(base_stalled, with_stalled),
    );
    assert!(
        per_conn(before, with_half_open) <= 8.0,
        "a half-open connection costs {:.1} KiB",
        per_conn(before, with_half_open)
    );
    assert!(
        per_conn(before_idle, with_idle) <= 8.0,
        "an idle keep-alive connection costs {:.1} KiB",
        per_conn(before_idle, with_idle)
    );
    assert!(
        with_stalled > base_stalled + 10 * 1024,
        "the stalled uploads did not show ({base_stalled} → {with_stalled} KiB): the return is not measured"
    );
    assert!(
        after <= before + 20 * 1024,
        "RSS {before} → {with_stalled} → {after} KiB 5 s after the flood closed"
    );
}

/// posthook (the binary) in front of the stand-in with `server:`/`limits:` lines added, and its
/// metrics endpoint.
struct Edge {
    mm: MattermostStandIn,
    p: Proc,
    metrics: SocketAddr,
}

impl Edge {
    async fn start(server: &str, limits: &str) -> Edge {
        Edge::start_after(server, limits, "").await
    }

    /// Started after the shell command `setup` (see [`Proc::start_after`]).
    async fn start_after(server: &str, limits: &str, setup: &str) -> Edge {
        let mm = standin().await;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "listen: \"{addr}\"\nmetrics_listen: \"{metrics}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nserver:\n  grace_period_seconds: 0\n{server}limits:\n  lookup_timeout_seconds: 10\n{limits}hooks: []\n",
            mm.base_url()
        );
        let p = Proc::start_after(&config, addr, setup).await;
        Edge { mm, p, metrics }
    }

    /// One sample of the metrics endpoint, e.g. `posthook_connections_open`.
    async fn metric(&self, series: &str) -> u64 {
        let text = http_request(self.metrics, "GET", "/metrics", &[], b"")
            .await
            .body_str();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
            .parse()
            .unwrap()
    }
}

const POST_BODY: &str = r#"{"channel_id":"chanpub","message":"still here"}"#;

/// A post by the user on `conn`; its status.
async fn post(conn: &mut RawConn) -> u16 {
    let auth = format!("Bearer {USER_TOKEN}");
    conn.request(
        "POST",
        "/api/v4/posts",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        POST_BODY.as_bytes(),
    )
    .await
    .status
}

/// Reads until the server closes `tcp` (end of stream or reset); how long that took from
/// `since`, or `None` within `limit`.
async fn closed_within(
    tcp: &mut tokio::net::TcpStream,
    since: Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(since.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_head_is_closed_at_the_header_deadline() {
    let edge = Edge::start("  header_timeout_seconds: 2\n", "").await;
    // 50 slowloris clients: a request line, then one header line every 300 ms, for ever.
    let clients: Vec<_> = (0..50).map(|i| {
        let addr = edge.p.addr;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = tcp.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return start.elapsed(),
                        Ok(n) => panic!("client {i} got an answer: {:?}", String::from_utf8_lossy(&buf[..n])),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {
                        if tcp.write_all(format!("X-Trickle-{i}: {:?}\r\n", start.elapsed()).as_bytes()).await.is_err() {
                            return start.elapsed();
                        }
                        assert!(start.elapsed() < Duration::from_secs(15), "client {i} still open after 15 s");
                    }
                }
            }
        })
    }).collect();
    // Meanwhile (once they are all trickling) a normal request is served at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let served = Instant::now();
    let mut conn = RawConn::connect(edge.p.addr).await;
    assert_eq!(
        conn.request("GET", "/api/v4/system/ping", &[], b"")
            .await
            .status,
        200
    );
    let served = served.elapsed();
    let mut lasted = Vec::new();
    for c in clients {
        lasted.push(c.await.unwrap());
    }
    lasted.sort();
    eprintln!(
        "50 trickling heads closed after {:?} .. {:?} (header timeout 2 s); a normal request took {served:?} meanwhile",
        lasted[0],
        lasted[49]
    );
    assert!(
        lasted[0] >= Duration::from_millis(1900),
        "closed early: {:?}",
        lasted[0]
    );
    assert!(
        lasted[49] <= Duration::from_secs(4),
        "closed late: {:?}",
        lasted[49]
    );
    // The same deadline holds for a keep-alive connection's next request.
    let mut tcp = conn.into_inner().into_inner();
    let start = Instant::now();
    tcp.write_all(b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let second = loop {
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => break start.elapsed(),
                Ok(n) => panic!("the keep-alive trickler got an answer: {:?}", String::from_utf8_lossy(&buf[..n])),
            },
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if tcp.write_all(b"X-Trickle: 1\r\n").await.is_err() {
                    break start.elapsed();
                }
                assert!(start.elapsed() < Duration::from_secs(15), "the keep-alive trickler still open after 15 s");
            }
        }
    };
    eprintln!("a keep-alive connection trickling its second head was closed after {second:?}");
    assert!(
        second >= Duration::from_millis(1900) && second <= Duration::from_secs(4),
        "{second:?}"
    );
    assert_eq!(
        edge.metric("posthook_connection_timeouts_total{phase=\"header\"}")
            .await,
        51
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keepalive_connection_is_closed_and_a_busy_one_is_not() {
    let edge = Edge::start("  keepalive_timeout_seconds: 2\n", "").await;
    // Busy: a request every second for 5 s on one connection.
    let busy = {
        let addr = edge.p.addr;
        tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            for _ in 0..6 {
                assert_eq!(
                    conn.request("GET", "/api/v4/system/ping", &[], b"")
                        .await
                        .status,
                    200
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut conn = RawConn::connect(edge.p.addr).await;
    assert_eq!(
        conn.request("GET", "/api/v4/system/ping", &[], b"")
            .await
            .status,
        200
    );
    let idle = Instant::now();
    let mut tcp = conn.into_inner().into_inner();
    let closed = closed_within(&mut tcp, idle, Duration::from_secs(10)).await;
    eprintln!("an idle keep-alive connection was closed after {closed:?} (timeout 2 s)");
    let closed = closed.expect("the idle connection is still open after 10 s");
    assert!(
        closed >= Duration::from_millis(1900),
        "closed early: {closed:?}"
    );
    assert!(closed <= Duration::from_secs(4), "closed late: {closed:?}");
    busy.await.unwrap();
    assert!(
        edge.metric("posthook_connection_timeouts_total{phase=\"keepalive\"}")
            .await
            >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_that_moves_is_not_cut_and_a_stalled_one_is() {
    let edge = Edge::start(
        "  header_timeout_seconds: 2\n  body_timeout_seconds: 2\n",
        "",
    )
    .await;
    let head = format!(
        "POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        POST_BODY.len()
    );
    // Moving: the body in 8 pieces 700 ms apart, 4.9 s in all (more than both timeouts).
    let mut conn = RawConn::connect(edge.p.addr).await;
    conn.send_raw(head.as_bytes()).await;
    let started = Instant::now();
    for piece in POST_BODY.as_bytes().chunks(POST_BODY.len().div_ceil(8)) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        conn.send_raw(piece).await;
    }
    let r = conn.read_response_for("POST").await;
    eprintln!("a body sent over {:?}: {}", started.elapsed(), r.status);
    assert_eq!(r.status, 201, "{}", r.body_str());
    assert_eq!(r.json()["message"], "still here");
    assert!(edge
        .mm
        .requests()
        .iter()
        .any(|q| q.path_and_query == "/api/v4/posts" && q.body == POST_BODY.as_bytes()));
    // Stalled: half the body, then nothing.
    let mut tcp = tokio::net::TcpStream::connect(edge.p.addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&POST_BODY.as_bytes()[..10]).await.unwrap();
    let stalled = Instant::now();
    let closed = closed_within(&mut tcp, stalled, Duration::from_secs(10)).await;
    eprintln!("a stalled body: connection ended after {closed:?} (body timeout 2 s)");
    let closed = closed.expect("a stalled upload is still open after 10 s");
    assert!(
        closed >= Duration::from_millis(1900),
        "cut early: {closed:?}"
    );
    assert!(closed <= Duration::from_secs(5), "cut late: {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_cap_is_refused_while_a_client_keeps_posting() {
    // 10 000 connections against a cap of 1 000, fewer under a low file limit (this process
    // holds one end of each).
    let flood = open_files_limit().saturating_sub(500).min(10_000) as usize;
    let cap = flood / 10;
    let edge = Edge::start("", &format!("  max_connections: {cap}\n")).await;
    let mut client = RawConn::connect(edge.p.addr).await;
    assert_eq!(post(&mut client).await, 201);
    let addr = edge.p.addr;
    let flooding = tokio::task::spawn_blocking(move || {
        (0..flood)
            .filter_map(|_| {
                let mut s = TcpStream::connect(addr).ok()?;
                let _ = s.write_all(b"POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nContent-Ty");
                Some(s)
            })
            .collect::<Vec<_>>()
    });
    // The normal client posts on its keep-alive connection all through the flood.
    let mut latencies = Vec::new();
    let mut open_seen = 0;
    while !flooding.is_finished() || latencies.len() < 50 {
        let t = Instant::now();
        assert_eq!(
            post(&mut client).await,
            201,
            "post {} failed during the flood",
            latencies.len()
        );
        latencies.push(t.elapsed());
        if latencies.len() % 20 == 0 {
            open_seen = open_seen.max(edge.metric("posthook_connections_open").await);
        }
    }
    let mut conns = flooding.await.unwrap();
    let opened = conns.len();
    // A new connection now is closed at once, without an answer.
    let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = late
        .write_all(b"GET /api/v4/system/ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let refused_in = closed_within(&mut late, Instant::now(), Duration::from_secs(5)).await;
    let open = edge.metric("posthook_connections_open").await;
    let refused = edge.metric("posthook_connections_refused_total").await;
    // Which flood connections did posthook close?
    let mut closed = 0;
    for c in &mut conns {
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 16];
        if !matches!(c.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            closed += 1;
        }
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "flood of {opened} connections against a cap of {cap}: {open} open, {refused} refused ({closed} seen closed); \
         the normal client's {} posts during it: p50 {:?}, p99 {:?}, max {:?}; a new connection was closed after {refused_in:?}",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );
    assert!(
        open <= cap as u64,
        "{open} connections open against a cap of {cap}"
    );
    assert!(
        open_seen <= cap as u64,
        "{open_seen} open seen during the flood"
    );
    assert!(
        open >= cap as u64 - 1,
        "the cap was not reached: {open} open"
    );
    assert!(
        refused >= (opened - cap) as u64,
        "{refused} refused of {opened} against a cap of {cap}"
    );
    assert!(
        closed >= opened - cap,
        "{closed} of {opened} closed by posthook"
    );
    assert!(
        refused_in.is_some(),
        "a connection beyond the cap was left waiting"
    );
    // Once the flood goes, new connections are served again.
    drop(conns);
    let deadline = Instant::now() + T;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut fresh = RawConn::connect(addr).await;
        let mut tcp_ok = false;
        let auth = format!("Bearer {USER_TOKEN}");
        fresh.send_raw(format!("POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{POST_BODY}", POST_BODY.len()).as_bytes()).await;
        let mut tcp = fresh.into_inner();
        let mut line = String::new();
        if tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncBufReadExt::read_line(&mut tcp, &mut line),
        )
        .await
        .is_ok_and(|r| r.is_ok())
            && line.starts_with("HTTP/1.1 201")
        {
            tcp_ok = true;
        }
        if tcp_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still refused after the flood closed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_open_files_limit_keeps_room_for_posthooks_own_connections() {
    // Under an open files limit of 400 (soft and hard) and the default cap of 10 000, posthook
    // caps client connections at 300, so that a flood of 600 leaves it the descriptors it
    // needs itself: its metrics endpoint answers, and posts from clients already connected
    // reach Mattermost on new upstream connections.
    let edge = Edge::start_after("", "", "ulimit -n 400").await;
    edge.p
        .wait_log("at most 300 client connections, not limits.max_connections = 10000")
        .await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(RawConn::connect(edge.p.addr).await);
    }
    let flood = open(
        edge.p.addr,
        600,
        b"POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nContent-Ty",
    )
    .await;
    wait_open(&edge, 300).await;
    // Twenty posts at once: more than the one upstream connection the pool has.
    let statuses = futures_util::future::join_all(clients.iter_mut().map(post)).await;
    assert_eq!(statuses, vec![201; 20]);
    let refused = edge.metric("posthook_connections_refused_total").await;
    eprintln!(
        "open files limit 400: 300 connections open, {refused} refused; 20 posts at once: 201"
    );
    assert!(refused >= 320, "{refused} refused of 620 against 300");
    drop(flood);
    // A soft limit below the hard one is raised to it.
    drop(edge);
    let edge = Edge::start_after("", "", "ulimit -Sn 256").await;
    let pid = edge.p.child.id().to_string();
    let (soft, hard) = open_files_limits(&pid);
    assert_eq!(soft, hard, "the soft limit of open files was not raised");
    edge.p.wait_log("open files limit raised from 256").await;
}
