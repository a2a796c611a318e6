//! Request smuggling at the edge (issue 14 item 4), through the binary: posthook keeps the
//! defences of the HTTP/1.1 parser it is built on.
//!
//! Each probe runs against a fresh `posthook` process in front of a raw-socket upstream written
//! here, which records every byte it receives on every connection and answers each request it
//! can frame with `200 ok`. The client is a plain `TcpStream` that writes the probe's exact
//! bytes. Ambiguous framing (`Content-Length` with `Transfer-Encoding`, obfuscated or repeated
//! `Transfer-Encoding`, conflicting `Content-Length`s, bad chunk sizes, obs-fold, NUL bytes,
//! bare LF line endings) must end in one of two safe ways:
//!
//! * rejected: posthook answers a 4xx and not one byte of the probe reaches the upstream;
//! * normalised: the upstream gets exactly one request, framed one unambiguous way (a single
//!   `Transfer-Encoding: chunked`, or a single `Content-Length`, or no body), and the client
//!   gets at most one response.
//!
//! In every case no request line the upstream receives names `/smuggled`, and a well-formed
//! request sent afterwards on a new connection still gets through cleanly (a half-sent request
//! left on a pooled upstream connection would swallow it). Which of the two outcomes each probe
//! gets is pinned, so a change in the parser shows here. A positive control shows that
//! well-formed chunked and `Content-Length` bodies reach the upstream intact and that a second
//! request on a connection is seen when there is one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::binary::Proc;
use harness::{free_port, BOT_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How long the client waits for a first response.
const FIRST_RESPONSE: Duration = Duration::from_secs(3);
/// How long the client keeps listening after a complete response, for a second one.
const QUIET: Duration = Duration::from_millis(400);
/// The upstream's answer to every request it can frame.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// A well-formed request sent on a new connection after each probe.
const FOLLOW_UP: &[u8] = b"GET /follow-up HTTP/1.1\r\nHost: x\r\n\r\n";
/// The request hidden in the probes' bodies.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

// ---------------------------------------------------------------------------------------------
// The upstream: a raw socket that records what it gets.

/// One request the upstream framed.
#[derive(Clone, Debug)]
struct UpRequest {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// How many bytes of the connection it took.
    len: usize,
}

impl UpRequest {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One connection the upstream accepted.
#[derive(Clone, Debug, Default)]
struct Conn {
    /// Every byte received, in order.
    raw: Vec<u8>,
    requests: Vec<UpRequest>,
    /// Why the upstream stopped framing requests on this connection, if it did.
    fault: Option<String>,
    /// The head of a request whose body never came whole (`len` is the head's).
    partial: Option<UpRequest>,
    closed: bool,
}

struct Upstream {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<Conn>>>,
    accept: JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::<Conn>::new()));
        let shared = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let i = {
                    let mut c = shared.lock().unwrap();
                    c.push(Conn::default());
                    c.len() - 1
                };
                tokio::spawn(serve(Wire {
                    stream,
                    buf: Vec::new(),
                    pos: 0,
                    conns: shared.clone(),
                    i,
                }));
            }
        });
        Upstream {
            addr,
            conns,
            accept,
        }
    }

    /// Waits until every connection has been closed by posthook; returns what they carried.
    async fn wait_closed(&self) -> Vec<Conn> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let conns = self.conns.lock().unwrap().clone();
            if conns.iter().all(|c| c.closed) {
                return conns;
            }
            assert!(
                Instant::now() < deadline,
                "upstream connections still open after posthook was killed: {conns:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The upstream's side of one connection: a read buffer whose every byte is also recorded.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    conns: Arc<Mutex<Vec<Conn>>>,
    i: usize,
}

impl Wire {
    /// Reads more bytes; false at EOF (or on a reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.conns.lock().unwrap()[self.i]
                    .raw
                    .extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The bytes up to and including `end`.
    async fn until(&mut self, end: &[u8], what: &str) -> Result<Vec<u8>, String> {
        loop {
            if let Some(at) = find(&self.buf[self.pos..], end) {
                let out = self.buf[self.pos..self.pos + at + end.len()].to_vec();
                self.pos += at + end.len();
                return Ok(out);
            }
            if !self.fill().await {
                return Err(format!("connection closed inside {what}"));
            }
        }
    }

    async fn exact(&mut self, n: usize, what: &str) -> Result<Vec<u8>, String> {
        while self.buf.len() - self.pos < n {
            if !self.fill().await {
                return Err(format!("connection closed inside {what}"));
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(out)
    }

    /// True if the connection ends cleanly here, between requests.
    async fn at_end(&mut self) -> bool {
        self.pos == self.buf.len() && !self.fill().await
    }
}

async fn serve(mut wire: Wire) {
    let (conns, i) = (wire.conns.clone(), wire.i);
    loop {
        if wire.at_end().await {
            break;
        }
        match read_request(&mut wire).await {
            Ok(req) => {
                conns.lock().unwrap()[i].requests.push(req);
                if wire.stream.write_all(OK).await.is_err() {
                    break;
                }
            }
            Err(fault) => {
                conns.lock().unwrap()[i].fault = Some(fault);
                // Keep recording whatever else comes, without answering.
                while wire.fill().await {}
                break;
            }
        }
    }
    conns.lock().unwrap()[i].closed = true;
}

/// Frames one request strictly: CRLF lines, no control bytes in the head, and exactly one of
/// a single `Transfer-Encoding: chunked`, a single `Content-Length` or no body.
async fn read_request(wire: &mut Wire) -> Result<UpRequest, String> {
    let start = wire.pos;
    let head = wire.until(b"\r\n\r\n", "the request head").await?;
    let head = &head[..head.len() - 4];
    let lone_cr_or_lf = head.iter().enumerate().any(|(k, &b)| {
        (b == b'\r' && head.get(k + 1) != Some(&b'\n'))
            || (b == b'\n' && (k == 0 || head[k - 1] != b'\r'))
    });
    let control = head
        .iter()
        .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n')) || b == 0x7f);
    if lone_cr_or_lf || control {
        return Err(format!(
            "a control byte or a lone CR or LF in the forwarded head {}",
            show(head)
        ));
    }
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for l in lines {
        let Some((n, v)) = l.split_once(':') else {
            return Err(format!("header line without a colon: {l:?}"));
        };
        if n.is_empty() || n.contains([' ', '\t']) {
            return Err(format!("bad header name in {l:?}"));
        }
        headers.push((n.to_string(), v.trim_matches([' ', '\t']).to_string()));
    }
    let mut req = UpRequest {
        line,
        headers,
        body: Vec::new(),
        len: 0,
    };
    req.len = wire.pos - start;
    let te = req.values("transfer-encoding");
    let cl = req.values("content-length");
    let framed = match (te.as_slice(), cl.as_slice()) {
        ([], []) => true,
        ([], [n]) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        ([t], []) => t.eq_ignore_ascii_case("chunked"),
        _ => false,
    };
    if framed {
        wire.conns.lock().unwrap()[wire.i].partial = Some(req.clone());
    }
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => {}
        ([], [n]) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n: usize = n
                .parse()
                .map_err(|e| format!("Content-Length {n:?}: {e}"))?;
            req.body = wire.exact(n, "a Content-Length body").await?;
        }
        ([t], []) if t.eq_ignore_ascii_case("chunked") => {
            req.body = read_chunked(wire).await?;
        }
        _ => {
            return Err(format!(
            "ambiguous framing forwarded: Transfer-Encoding {te:?}, Content-Length {cl:?} in {:?}",
            req.line
        ))
        }
    }
    req.len = wire.pos - start;
    wire.conns.lock().unwrap()[wire.i].partial = None;
    Ok(req)
}

async fn read_chunked(wire: &mut Wire) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line = wire.until(b"\r\n", "a chunk size").await?;
        let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let hex = line.split(';').next().unwrap_or_default().trim();
        if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("bad chunk size line {line:?}"));
        }
        let size = usize::from_str_radix(hex, 16).map_err(|e| format!("{line:?}: {e}"))?;
        if size == 0 {
            while wire.until(b"\r\n", "the trailers").await?.len() > 2 {}
            return Ok(body);
        }
        body.extend(wire.exact(size, "chunk data").await?);
        if wire.exact(2, "the CRLF after chunk data").await? != b"\r\n" {
            return Err("no CRLF after chunk data".into());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The client: a raw socket that writes a probe and reads whatever comes back.

#[derive(Debug)]
struct Seen {
    /// The complete responses, as status and body.
    responses: Vec<(u16, Vec<u8>)>,
    raw: Vec<u8>,
    /// Whether posthook closed the connection (rather than the client stopping to listen).
    closed: bool,
}

/// Writes `bytes` to `addr` and reads until posthook closes the connection, until no response
/// came within [`FIRST_RESPONSE`], or until [`QUIET`] passed after the last response (after
/// `expect` responses when that many are wanted).
async fn exchange(addr: SocketAddr, bytes: &[u8], expect: Option<usize>) -> Seen {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    // posthook may answer and close before it has read everything: a failed write is an
    // outcome like any other.
    let _ = s.write_all(bytes).await;
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut closed = false;
    loop {
        let complete = parse_responses(&raw, false).len();
        if expect.is_some_and(|n| complete >= n) {
            break;
        }
        let wait = if complete > 0 {
            QUIET
        } else {
            FIRST_RESPONSE.saturating_sub(started.elapsed())
        };
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(wait, s.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => raw.extend_from_slice(&chunk[..n]),
        }
    }
    Seen {
        responses: parse_responses(&raw, closed),
        raw,
        closed,
    }
}

/// The complete responses in `raw` (a body without length counts once the connection closed).
fn parse_responses(raw: &[u8], closed: bool) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(end) = find(&raw[pos..], b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[pos..pos + end]).into_owned();
        let body_at = pos + end + 4;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if (100..200).contains(&status) {
            pos = body_at;
            continue;
        }
        if status == 204 || status == 304 {
            out.push((status, Vec::new()));
            pos = body_at;
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if raw.len() < body_at + n {
                break;
            }
            out.push((status, raw[body_at..body_at + n].to_vec()));
            pos = body_at + n;
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            let mut at = body_at;
            let done = loop {
                let Some(eol) = find(&raw[at..], b"\r\n") else {
                    break false;
                };
                let size_text = String::from_utf8_lossy(&raw[at..at + eol]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or(0);
                at += eol + 2;
                if size == 0 {
                    if raw[at..].starts_with(b"\r\n") {
                        at += 2;
                    } else if let Some(t) = find(&raw[at..], b"\r\n\r\n") {
                        at += t + 4;
                    } else {
                        break false;
                    }
                    break true;
                }
                if raw.len() < at + size + 2 {
                    break false;
                }
                body.extend_from_slice(&raw[at..at + size]);
                at += size + 2;
            };
            if !done {
                break;
            }
            out.push((status, body));
            pos = at;
        } else if closed {
            out.push((status, raw[body_at..].to_vec()));
            pos = raw.len();
        } else {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Probes and their outcomes.

/// How the upstream got a normalised request's body.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Framing {
    Chunked,
    Length,
    None,
}

/// The outcome a probe is pinned to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// posthook answers this status and not one byte reaches the upstream.
    Rejected(u16),
    /// posthook forwards the head of the request (one head, framed one way), finds the body
    /// malformed, answers this status and closes that upstream connection: the upstream never
    /// gets a whole request, and nothing more on that connection.
    CutOff(u16),
    /// The upstream gets one request with this request line, framing and body, and the client
    /// its answer.
    Normalised {
        line: &'static str,
        framing: Framing,
        body: &'static [u8],
    },
}

/// What a probe got, when it is one of the safe outcomes.
#[derive(Debug, PartialEq)]
enum Got {
    Rejected(u16),
    CutOff(u16),
    Normalised {
        line: String,
        framing: Framing,
        body: Vec<u8>,
    },
}

impl Expect {
    fn got(self) -> Got {
        match self {
            Expect::Rejected(s) => Got::Rejected(s),
            Expect::CutOff(s) => Got::CutOff(s),
            Expect::Normalised {
                line,
                framing,
                body,
            } => Got::Normalised {
                line: line.into(),
                framing,
                body: body.into(),
            },
        }
    }
}

fn framing(r: &UpRequest) -> Framing {
    match (
        r.values("transfer-encoding").len(),
        r.values("content-length").len(),
    ) {
        (1, 0) => Framing::Chunked,
        (0, 1) => Framing::Length,
        _ => Framing::None,
    }
}

struct Probe {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn probe(name: &'static str, bytes: impl AsRef<[u8]>, expect: Expect) -> Probe {
    Probe {
        name,
        bytes: bytes.as_ref().to_vec(),
        expect,
    }
}

/// A `POST /api/v4/posts` with the header lines `headers` (each ending in CRLF, or not) and
/// then `body`.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /api/v4/posts HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
}

/// A chunked body that ends with `0` and then holds [`SMUGGLED`]: whoever frames it by
/// `Transfer-Encoding` sees a second request after it, whoever frames it by its full
/// `Content-Length` sees one body.
fn zero_then_smuggled() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

struct Outcome {
    client: Seen,
    follow_up: Seen,
    conns: Vec<Conn>,
    /// Per upstream connection, whether posthook had closed it before it was killed.
    closed_by_posthook: Vec<bool>,
}

/// Runs `bytes` against a fresh posthook in front of a fresh upstream, then a well-formed
/// request on a new connection; kills posthook and returns what everyone saw.
async fn run(bytes: &[u8]) -> Outcome {
    let upstream = Upstream::start().await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "listen: \"{listen}\"\nupstream: \"http://{}\"\nbot_token: \"{BOT_TOKEN}\"\nhooks: []\n",
        upstream.addr
    );
    let proc = Proc::start(&config, listen).await;
    let client = exchange(listen, bytes, None).await;
    let follow_up = exchange(listen, FOLLOW_UP, Some(1)).await;
    // A connection the upstream could not frame must be one posthook closed itself, before it
    // is killed: give it a moment to.
    let deadline = Instant::now() + Duration::from_secs(1);
    let closed_by_posthook = loop {
        let conns = upstream.conns.lock().unwrap().clone();
        if conns.iter().all(|c| c.closed || c.fault.is_none()) || Instant::now() > deadline {
            break conns.iter().map(|c| c.closed).collect();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    drop(proc);
    let conns = upstream.wait_closed().await;
    Outcome {
        client,
        follow_up,
        conns,
        closed_by_posthook,
    }
}

fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

/// What happened, or why it is not a safe outcome (or not the pinned one).
fn judge(p: &Probe, o: &Outcome) -> Result<String, String> {
    let upstream_bytes: Vec<String> = o.conns.iter().map(|c| show(&c.raw)).collect();
    let context = format!(
        "client sent {}; client got {}; upstream connections got {upstream_bytes:?}",
        show(&p.bytes),
        show(&o.client.raw)
    );
    let fail = |why: String| Err(format!("{why}; {context}"));
    // Never a smuggled request, whole or cut off.
    let mut heads = o
        .conns
        .iter()
        .flat_map(|c| c.requests.iter().chain(&c.partial));
    if let Some(r) = heads.find(|r| r.line.contains("smuggled")) {
        return fail(format!(
            "SMUGGLED: the upstream got the request line {:?}",
            r.line
        ));
    }
    // The request after the probe gets through cleanly.
    let follow: Vec<&UpRequest> = o
        .conns
        .iter()
        .flat_map(|c| &c.requests)
        .filter(|r| r.line.contains("/follow-up"))
        .collect();
    if o.follow_up.responses != [(200, b"ok".to_vec())] || follow.len() != 1 {
        return fail(format!(
            "the well-formed request after the probe did not get through cleanly: client got {}",
            show(&o.follow_up.raw)
        ));
    }
    let requests: Vec<&UpRequest> = o
        .conns
        .iter()
        .flat_map(|c| &c.requests)
        .filter(|r| !r.line.contains("/follow-up"))
        .collect();
    let faults: Vec<(usize, &Conn)> = o
        .conns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.fault.is_some())
        .collect();
    let probe_bytes = o.conns.iter().map(|c| c.raw.len()).sum::<usize>() - follow[0].len;
    let statuses: Vec<u16> = o.client.responses.iter().map(|(s, _)| *s).collect();
    let one_4xx = match statuses.as_slice() {
        [s] if (400..500).contains(s) => Some(*s),
        _ => None,
    };
    let (got, what) = match (requests.as_slice(), faults.as_slice(), one_4xx) {
        ([], [], Some(s)) if probe_bytes == 0 => (
            Got::Rejected(s),
            format!(
                "rejected: client got {s} (connection closed: {}), not one byte reached the upstream",
                o.client.closed
            ),
        ),
        ([], [(i, c)], Some(s))
            if c.fault.as_ref().is_some_and(|f| f.starts_with("connection closed"))
                && c.partial.is_some()
                && probe_bytes == c.raw.len()
                && o.closed_by_posthook[*i] =>
        {
            let head = c.partial.as_ref().unwrap();
            (
                Got::CutOff(s),
                format!(
                    "cut off: client got {s} (connection closed: {}); the upstream got only the head {:?} \
                     ({:?} framing) and {} body bytes, then posthook closed that connection",
                    o.client.closed,
                    head.line,
                    framing(head),
                    c.raw.len() - head.len
                ),
            )
        }
        ([r], [], _) if o.client.responses == [(200, b"ok".to_vec())] => (
            Got::Normalised {
                line: r.line.clone(),
                framing: framing(r),
                body: r.body.clone(),
            },
            format!(
                "normalised: the upstream got one request {:?}, {:?} framing, body {}; \
                 client got its 200 (connection closed: {})",
                r.line,
                framing(r),
                show(&r.body),
                o.client.closed
            ),
        ),
        _ => {
            return fail(format!(
                "not a safe outcome: the upstream framed {} requests ({:?}), could not frame {:?}, \
                 {probe_bytes} bytes in all; the client got statuses {statuses:?}",
                requests.len(),
                requests.iter().map(|r| &r.line).collect::<Vec<_>>(),
                faults.iter().map(|(_, c)| &c.fault).collect::<Vec<_>>()
            ))
        }
    };
    if got == p.expect.got() {
        Ok(what)
    } else {
        fail(format!("{what}, but pinned to {:?}", p.expect))
    }
}

/// Runs the probes concurrently, prints each outcome, and fails listing every probe whose
/// outcome is unsafe or not the pinned one.
async fn check(probes: Vec<Probe>) {
    let outcomes = futures_util::future::join_all(probes.iter().map(|p| run(&p.bytes))).await;
    let mut failures = Vec::new();
    for (p, o) in probes.iter().zip(&outcomes) {
        match judge(p, o) {
            Ok(what) => eprintln!("{}: {what}", p.name),
            Err(why) => {
                eprintln!("{}: FAILED: {why}", p.name);
                failures.push(format!("{}: {why}", p.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const POSTS: &str = "POST /api/v4/posts HTTP/1.1";

/// A post creation passed on as `Transfer-Encoding: chunked` with an empty body.
const CHUNKED_EMPTY: Expect = Expect::Normalised {
    line: POSTS,
    framing: Framing::Chunked,
    body: b"",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_bodies_get_through_intact() {
    check(vec![
        probe(
            "chunked POST",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            ),
            Expect::Normalised {
                line: POSTS,
                framing: Framing::Chunked,
                body: b"hello world",
            },
        ),
        probe(
            "Content-Length POST",
            post("Content-Length: 11\r\n", "hello world"),
            Expect::Normalised {
                line: POSTS,
                framing: Framing::Length,
                body: b"hello world",
            },
        ),
    ])
    .await;
    // The client gets the upstream's answer.
    for bytes in [
        post("Transfer-Encoding: chunked\r\n", "2\r\nhi\r\n0\r\n\r\n"),
        post("Content-Length: 2\r\n", "hi"),
    ] {
        let o = run(&bytes).await;
        assert_eq!(
            o.client.responses,
            [(200, b"ok".to_vec())],
            "{}",
            show(&o.client.raw)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_on_a_connection_would_be_seen() {
    // Two requests one after the other on a keep-alive connection both reach the upstream:
    // the checks above would see a smuggled one.
    let upstream = Upstream::start().await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "listen: \"{listen}\"\nupstream: \"http://{}\"\nbot_token: \"{BOT_TOKEN}\"\nhooks: []\n",
        upstream.addr
    );
    let proc = Proc::start(&config, listen).await;
    let mut conn = support::RawConn::connect(listen).await;
    for path in ["/first", "/second"] {
        let r = conn.request("GET", path, &[], b"").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }
    drop(conn);
    drop(proc);
    let lines: Vec<String> = upstream
        .wait_closed()
        .await
        .iter()
        .flat_map(|c| c.requests.iter().map(|r| r.line.clone()))
        .collect();
    assert_eq!(lines, ["GET /first HTTP/1.1", "GET /second HTTP/1.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding() {
    // Transfer-Encoding wins: Content-Length is dropped, the body ends at the `0` chunk and
    // keep-alive is switched off (RFC 9112 6.1), so what follows is never read as a request.
    let body = zero_then_smuggled();
    check(vec![
        probe(
            "CL.TE, Content-Length first",
            format!(
                "{POSTS}\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            ),
            CHUNKED_EMPTY,
        ),
        probe(
            "CL.TE, Transfer-Encoding first",
            post(
                &format!("Transfer-Encoding: chunked\r\nContent-Length: {}\r\n", body.len()),
                &body,
            ),
            CHUNKED_EMPTY,
        ),
        // Whoever framed this by its `Content-Length: 4` would see the request in the chunk.
        probe(
            "TE.CL, the smuggled request in a chunk",
            post(
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len()),
            ),
            Expect::Normalised {
                line: POSTS,
                framing: Framing::Chunked,
                body: SMUGGLED.as_bytes(),
            },
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding() {
    let body = zero_then_smuggled();
    let with = |te: &str| post(&format!("Content-Length: {}\r\n{te}", body.len()), &body);
    check(vec![
        probe(
            "xchunked",
            with("Transfer-Encoding: xchunked\r\n"),
            Expect::Rejected(400),
        ),
        probe(
            "space before the colon",
            with("Transfer-Encoding : chunked\r\n"),
            Expect::Rejected(400),
        ),
        probe(
            "chunked, identity",
            with("Transfer-Encoding: chunked, identity\r\n"),
            Expect::Rejected(400),
        ),
        // A tab is whitespace before a field value (RFC 9110 5.5): a plain CL.TE.
        probe(
            "tab before the value",
            with("Transfer-Encoding:\tchunked\r\n"),
            CHUNKED_EMPTY,
        ),
        probe(
            "chunked then identity",
            with("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
            Expect::Rejected(400),
        ),
        // chunked is the final coding: the upstream gets a single `Transfer-Encoding: chunked`.
        probe(
            "identity then chunked",
            with("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"),
            CHUNKED_EMPTY,
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths() {
    let body = format!("hello{SMUGGLED}");
    check(vec![
        probe(
            "two Content-Length headers",
            post("Content-Length: 5\r\nContent-Length: 40\r\n", &body),
            Expect::Rejected(400),
        ),
        probe(
            "Content-Length: 5, 40",
            post("Content-Length: 5, 40\r\n", &body),
            Expect::Rejected(400),
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sizes() {
    // The head is valid, so posthook has passed it on by the time the body turns out bad: it
    // answers 400 and closes that upstream connection before a single body byte.
    let chunked = |body: &str| post("Transfer-Encoding: chunked\r\n", body);
    let then = |size: &str| chunked(&format!("{size}\r\nhello\r\n0\r\n\r\n{SMUGGLED}"));
    check(vec![
        probe("-1", then("-1"), Expect::CutOff(400)),
        probe("0x5", then("0x5"), Expect::CutOff(400)),
        probe(
            "FFFFFFFFFFFFFFFFFFFFFF",
            then("FFFFFFFFFFFFFFFFFFFFFF"),
            Expect::CutOff(400),
        ),
        probe(
            "no CRLF after chunk data",
            chunked(&format!("5\r\nhello0\r\n\r\n{SMUGGLED}")),
            Expect::CutOff(400),
        ),
        // A chunk extension is dropped: the upstream gets the chunk re-encoded.
        probe(
            "5;\\x00",
            chunked("5;\0\r\nhello\r\n0\r\n\r\n"),
            Expect::Normalised {
                line: POSTS,
                framing: Framing::Chunked,
                body: b"hello",
            },
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold() {
    let body = zero_then_smuggled();
    let folded = |fold: &str| {
        post(
            &format!(
                "Content-Length: {}\r\nX-A: 1\r\n{fold}Transfer-Encoding: chunked\r\n",
                body.len()
            ),
            &body,
        )
    };
    check(vec![
        probe("continued with a space", folded(" "), Expect::Rejected(400)),
        probe("continued with a tab", folded("\t"), Expect::Rejected(400)),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes() {
    check(vec![
        probe(
            "NUL in a header value",
            post("X-A: a\0b\r\nContent-Length: 5\r\n", "hello"),
            Expect::Rejected(400),
        ),
        // Pingora percent-encodes control bytes in the request target.
        probe(
            "NUL in the request line",
            "GET /api/v4/a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
            Expect::Normalised {
                line: "GET /api/v4/a%00b HTTP/1.1",
                framing: Framing::None,
                body: b"",
            },
        ),
    ])
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf() {
    // A bare LF ends a line like CRLF (RFC 9112 2.2 allows it); what goes upstream is CRLF.
    let body = zero_then_smuggled();
    check(vec![
        // Whoever ignored the bare LF would see no body, and the request after the head.
        probe(
            "bare LF before Content-Length",
            format!(
                "{POSTS}\r\nHost: x\nContent-Length: {}\r\n\r\n{SMUGGLED}",
                SMUGGLED.len()
            ),
            Expect::Normalised {
                line: POSTS,
                framing: Framing::Length,
                body: SMUGGLED.as_bytes(),
            },
        ),
        probe(
            "bare LF before Transfer-Encoding",
            post(
                &format!(
                    "Content-Length: {}\r\nX-A: 1\nTransfer-Encoding: chunked\r\n",
                    body.len()
                ),
                &body,
            ),
            CHUNKED_EMPTY,
        ),
        probe(
            "bare LF ending the head",
            format!("{POSTS}\r\nHost: x\nContent-Length: 5\n\nhello"),
            Expect::Normalised {
                line: POSTS,
                framing: Framing::Length,
                body: b"hello",
            },
        ),
    ])
    .await;
}
