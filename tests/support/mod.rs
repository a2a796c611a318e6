//! Test support for posthook's integration tests.
//!
//! * [`MattermostStandIn`]: an in-process HTTP/1.1 server that imitates the parts of the Mattermost
//!   REST API posthook relies on (`POST /api/v4/posts`, channel/team/user look-ups, client config,
//!   the websocket), with fixtures, failure knobs and a record of every request.
//! * [`WebhookReceiver`]: an outgoing-webhook callback endpoint with a configurable [`Responder`].
//! * [`RawConn`] / [`http_request`]: a byte-exact HTTP/1.1 client on a plain `TcpStream`.
//! * Small helpers: [`gunzip`], [`inflate`], [`wait_until`], [`random_id`].
//!
//! Everything binds to `127.0.0.1:0` and runs on the current tokio runtime; dropping a server
//! stops its accept loop and open connections. The file is written to work both as a crate root
//! and unchanged as `tests/support/mod.rs` (`mod support;`), so every item carries
//! `#[allow(dead_code)]` and nothing calls `unwrap`/`expect`.
//!
//! ```ignore
//! let mm = MattermostStandIn::start().await;
//! mm.add_team("team1", "myteam");
//! mm.add_channel("chan1", "team1", "town-square", "O");
//! mm.add_user("user1", "alice", false);
//! mm.add_token("tok1", "user1");
//! let hook = WebhookReceiver::start(Responder::Json(r#"{"text":"hi"}"#.into())).await;
//! // point posthook at mm.base_url() and hook.url("/hook"), send traffic, then:
//! let reqs = hook.wait_for(1, Duration::from_secs(5)).await;
//! let posts = mm.wait_for_posts(2, Duration::from_secs(5)).await;
//! ```

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Request bodies are recorded up to this many bytes (the full length is in `body_len`).
#[allow(dead_code)]
pub const RECORD_BODY_LIMIT: usize = 1024 * 1024;

/// `X-Version-Id` sent by the stand-in (`version.build.confighash.licensed`, like the real server).
#[allow(dead_code)]
pub const VERSION_ID: &str = "10.11.0.10.11.0.6f9a1c0e2d8b4a7c9e3f5b1d0a2c4e6f.false";

/// Default `MaxPostSize` of the stand-in's client config (and the limit it enforces).
#[allow(dead_code)]
pub const MAX_POST_SIZE: usize = 16383;

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// A 26-character Mattermost-style id (lowercase letters and digits, the server's own alphabet).
#[allow(dead_code)]
pub fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = String::with_capacity(26);
    let mut round = 0u64;
    while out.len() < 26 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u128(nanos);
        hasher.write_u64(round);
        let mut bits = hasher.finish();
        for _ in 0..12 {
            if out.len() == 26 {
                break;
            }
            out.push(char::from(ALPHABET[(bits & 31) as usize]));
            bits >>= 5;
        }
        round += 1;
    }
    out
}

/// Decompresses a gzip stream; panics if it is not one.
#[allow(dead_code)]
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| {
            panic!(
                "gunzip: not a valid gzip stream ({e}); {} bytes",
                data.len()
            )
        });
    out
}

/// Decompresses an HTTP `deflate` body (a zlib stream, RFC 1950); panics if it is not one.
#[allow(dead_code)]
pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| {
            panic!(
                "inflate: not a valid zlib stream ({e}); {} bytes",
                data.len()
            )
        });
    out
}

#[allow(dead_code)]
fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .unwrap_or_else(|e| panic!("gzip encode: {e}"));
    enc.finish().unwrap_or_else(|e| panic!("gzip encode: {e}"))
}

#[allow(dead_code)]
fn zlib_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .unwrap_or_else(|e| panic!("deflate encode: {e}"));
    enc.finish()
        .unwrap_or_else(|e| panic!("deflate encode: {e}"))
}

/// Polls `f` every 5 ms until it returns true; panics naming `what` after `timeout`.
#[allow(dead_code)]
pub async fn wait_until<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(dead_code)]
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[allow(dead_code)]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[allow(dead_code)]
fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[allow(dead_code)]
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(dead_code)]
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

// ---------------------------------------------------------------------------------------------
// Recorded requests
// ---------------------------------------------------------------------------------------------

/// One request as a server received it.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as received (origin form: `/path?query`).
    pub path_and_query: String,
    /// Header lines in received order, names in their original case (read off the wire).
    pub headers: Vec<(String, String)>,
    /// The body, truncated to [`RECORD_BODY_LIMIT`] bytes.
    pub body: Vec<u8>,
    /// The full length of the body as received (after de-chunking).
    pub body_len: u64,
    /// When the request head was handed to the server.
    pub received_at: Instant,
}

#[allow(dead_code)]
impl RecordedRequest {
    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.path_and_query
            .split_once('?')
            .map_or(self.path_and_query.as_str(), |(p, _)| p)
    }

    /// The raw query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }

    /// A decoded query parameter.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query().and_then(|q| query_param(q, key))
    }

    /// The first value of a header, name compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of a header, in received order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The (recorded part of the) body as text, lossily decoded.
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; panics with the body text if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {:?}",
                self.method,
                self.path_and_query,
                self.body_str()
            )
        })
    }

    /// The body decoded as `application/x-www-form-urlencoded`, pairs in order.
    pub fn form(&self) -> Vec<(String, String)> {
        let text = self.body_str();
        if text.is_empty() {
            return Vec::new();
        }
        text.split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// One line describing the request, for panic messages.
    pub fn summary(&self) -> String {
        let mut preview = self.body_str();
        if preview.len() > 300 {
            let mut cut = 300;
            while !preview.is_char_boundary(cut) {
                cut -= 1;
            }
            preview.truncate(cut);
            preview.push('…');
        }
        format!(
            "{} {} ({} body bytes) {:?}",
            self.method, self.path_and_query, self.body_len, preview
        )
    }
}

#[allow(dead_code)]
fn describe_requests(reqs: &[RecordedRequest]) -> String {
    if reqs.is_empty() {
        return "  (none)".to_string();
    }
    reqs.iter()
        .enumerate()
        .map(|(i, r)| format!("  #{i}: {}", r.summary()))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Server plumbing shared by the stand-in and the receiver
// ---------------------------------------------------------------------------------------------

type Resp = Response<Full<Bytes>>;
type BoxResp = Pin<Box<dyn Future<Output = Resp> + Send>>;
type Handler = Arc<dyn Fn(Request<Incoming>, RequestMeta) -> BoxResp + Send + Sync>;
type HeadQueue = Arc<Mutex<VecDeque<SniffedHead>>>;

#[allow(dead_code)]
struct RequestMeta {
    headers: Vec<(String, String)>,
    received_at: Instant,
}

/// Aborts the accept loop (and with it every connection task) when dropped.
#[allow(dead_code)]
struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[allow(dead_code)]
async fn spawn_server(handler: Handler) -> (SocketAddr, ServerTask) {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => {
                        let _ = tcp.set_nodelay(true);
                        conns.spawn(serve_connection(tcp, handler.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    (addr, ServerTask(task))
}

#[allow(dead_code)]
async fn serve_connection(tcp: TcpStream, handler: Handler) {
    let heads: HeadQueue = Arc::new(Mutex::new(VecDeque::new()));
    let io = TokioIo::new(SniffIo {
        inner: tcp,
        sniffer: Sniffer {
            state: SniffState::Head,
            buf: Vec::new(),
            queue: heads.clone(),
        },
    });
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let received_at = Instant::now();
        let headers = take_head(&heads, &req);
        let fut = handler(
            req,
            RequestMeta {
                headers,
                received_at,
            },
        );
        async move { Ok::<_, Infallible>(fut.await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .preserve_header_case(true)
        .title_case_headers(true)
        .header_read_timeout(None)
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

/// Header lines of the current request with their original case, from the wire; falls back to
/// hyper's (lower-cased) view if the sniffer lost track.
#[allow(dead_code)]
fn take_head(queue: &HeadQueue, req: &Request<Incoming>) -> Vec<(String, String)> {
    let target = req.uri().to_string();
    if let Some(head) = lock(queue).pop_front() {
        if head.method == req.method().as_str() && head.target == target {
            return head.headers;
        }
    }
    req.headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// hyper keeps the original header case to itself, so the connection's bytes are watched and
/// request heads parsed on the side (tracking message framing to skip bodies).
#[allow(dead_code)]
struct SniffedHead {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

#[allow(dead_code)]
#[derive(Clone, Copy, Debug)]
enum SniffState {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd(u64),
    Trailers,
    Done,
}

#[allow(dead_code)]
struct Sniffer {
    state: SniffState,
    buf: Vec<u8>,
    queue: HeadQueue,
}

#[allow(dead_code)]
impl Sniffer {
    const MAX_LINE: usize = 1 << 20;

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                SniffState::Done => return,
                SniffState::Head => {
                    if self.buf.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                    }
                    let from = self.buf.len().saturating_sub(3);
                    self.buf.extend_from_slice(data);
                    match find_bytes(&self.buf[from..], b"\r\n\r\n") {
                        Some(pos) => {
                            let end = from + pos + 4;
                            let rest = self.buf.len() - end;
                            data = &data[data.len() - rest..];
                            let mut head = std::mem::take(&mut self.buf);
                            head.truncate(end);
                            self.on_head(&head);
                        }
                        None => {
                            if self.buf.len() > Self::MAX_LINE {
                                self.give_up();
                            }
                            return;
                        }
                    }
                }
                SniffState::Body(n) | SniffState::ChunkData(n) | SniffState::ChunkDataEnd(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    let left = n - k;
                    self.state = match (self.state, left) {
                        (SniffState::Body(_), 0) => SniffState::Head,
                        (SniffState::Body(_), l) => SniffState::Body(l),
                        (SniffState::ChunkData(_), 0) => SniffState::ChunkDataEnd(2),
                        (SniffState::ChunkData(_), l) => SniffState::ChunkData(l),
                        (_, 0) => SniffState::ChunkSize,
                        (_, l) => SniffState::ChunkDataEnd(l),
                    };
                }
                SniffState::ChunkSize | SniffState::Trailers => {
                    let Some(nl) = data.iter().position(|b| *b == b'\n') else {
                        self.buf.extend_from_slice(data);
                        if self.buf.len() > Self::MAX_LINE {
                            self.give_up();
                        }
                        return;
                    };
                    self.buf.extend_from_slice(&data[..=nl]);
                    data = &data[nl + 1..];
                    let line = std::mem::take(&mut self.buf);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim();
                    if let SniffState::Trailers = self.state {
                        if text.is_empty() {
                            self.state = SniffState::Head;
                        }
                    } else {
                        let hex = text.split(';').next().unwrap_or("").trim();
                        self.state = match u64::from_str_radix(hex, 16) {
                            Ok(0) => SniffState::Trailers,
                            Ok(n) => SniffState::ChunkData(n),
                            Err(_) => SniffState::Done,
                        };
                    }
                }
            }
        }
    }

    fn give_up(&mut self) {
        self.state = SniffState::Done;
        self.buf = Vec::new();
    }

    fn on_head(&mut self, head: &[u8]) {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_string();
        let target = request_line.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        let values = |name: &str| {
            headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let chunked = values("transfer-encoding")
            .last()
            .is_some_and(|v| v.trim_end().ends_with("chunked"));
        let upgrade = !values("upgrade").is_empty()
            && values("connection")
                .iter()
                .any(|v| v.split(',').any(|t| t.trim() == "upgrade"));
        let length = values("content-length")
            .first()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        self.state = if upgrade || method == "CONNECT" {
            SniffState::Done
        } else if chunked {
            SniffState::ChunkSize
        } else if length > 0 {
            SniffState::Body(length)
        } else {
            SniffState::Head
        };
        lock(&self.queue).push_back(SniffedHead {
            method,
            target,
            headers,
        });
    }
}

#[allow(dead_code)]
struct SniffIo {
    inner: TcpStream,
    sniffer: Sniffer,
}

impl AsyncRead for SniffIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            this.sniffer.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for SniffIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Reads a whole body, keeping at most `keep` bytes; returns (kept bytes, total length).
#[allow(dead_code)]
async fn read_body(mut body: Incoming, keep: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if kept.len() < keep {
                let take = (keep - kept.len()).min(data.len());
                kept.extend_from_slice(&data[..take]);
            }
        }
    }
    (kept, total)
}

#[allow(dead_code)]
fn response(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Mattermost stand-in
// ---------------------------------------------------------------------------------------------

#[allow(dead_code)]
#[derive(Clone, Debug)]
struct Team {
    id: String,
    name: String,
    create_at: i64,
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
struct Channel {
    id: String,
    team_id: String,
    name: String,
    channel_type: String,
    create_at: i64,
    last_post_at: i64,
    last_root_post_at: i64,
    total_msg_count: i64,
    total_msg_count_root: i64,
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
struct User {
    id: String,
    username: String,
    is_bot: bool,
    create_at: i64,
}

/// A post in the real server's field order (`model.Post`).
#[allow(dead_code)]
#[derive(Clone, Debug, Serialize)]
struct Post {
    id: String,
    create_at: i64,
    update_at: i64,
    edit_at: i64,
    delete_at: i64,
    is_pinned: bool,
    user_id: String,
    channel_id: String,
    root_id: String,
    original_id: String,
    message: String,
    #[serde(rename = "type")]
    post_type: String,
    props: Value,
    hashtags: String,
    file_ids: Vec<String>,
    pending_post_id: String,
    reply_count: i64,
    last_reply_at: i64,
    participants: Option<Vec<Value>>,
    metadata: Value,
    #[serde(skip)]
    via_api: bool,
}

#[allow(dead_code)]
#[derive(Serialize)]
struct ChannelJson<'a> {
    id: &'a str,
    create_at: i64,
    update_at: i64,
    delete_at: i64,
    team_id: &'a str,
    #[serde(rename = "type")]
    channel_type: &'a str,
    display_name: &'a str,
    name: &'a str,
    header: &'a str,
    purpose: &'a str,
    last_post_at: i64,
    total_msg_count: i64,
    extra_update_at: i64,
    creator_id: &'a str,
    scheme_id: Option<&'a str>,
    props: Option<Value>,
    group_constrained: Option<bool>,
    shared: Option<bool>,
    total_msg_count_root: i64,
    policy_id: Option<&'a str>,
    last_root_post_at: i64,
}

#[allow(dead_code)]
#[derive(Serialize)]
struct TeamJson<'a> {
    id: &'a str,
    create_at: i64,
    update_at: i64,
    delete_at: i64,
    display_name: &'a str,
    name: &'a str,
    description: &'a str,
    email: &'a str,
    #[serde(rename = "type")]
    team_type: &'a str,
    company_name: &'a str,
    allowed_domains: &'a str,
    invite_id: &'a str,
    allow_open_invite: bool,
    scheme_id: Option<&'a str>,
    group_constrained: Option<bool>,
    policy_id: Option<&'a str>,
    cloud_limits_archived: bool,
}

#[allow(dead_code)]
#[derive(Serialize)]
struct TimezoneJson {
    #[serde(rename = "automaticTimezone")]
    automatic: &'static str,
    #[serde(rename = "manualTimezone")]
    manual: &'static str,
    #[serde(rename = "useAutomaticTimezone")]
    use_automatic: &'static str,
}

/// A sanitised user as `GET /api/v4/users/{id}` returns it; `is_bot` and `bot_description`
/// are omitted for humans, like the real server (`omitempty`).
#[allow(dead_code)]
#[derive(Serialize)]
struct UserJson<'a> {
    id: &'a str,
    create_at: i64,
    update_at: i64,
    delete_at: i64,
    username: &'a str,
    auth_data: &'a str,
    auth_service: &'a str,
    email: String,
    nickname: &'a str,
    first_name: &'a str,
    last_name: &'a str,
    position: &'a str,
    roles: &'a str,
    locale: &'a str,
    timezone: TimezoneJson,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_bot: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bot_description: Option<&'a str>,
    disable_welcome_email: bool,
}

#[allow(dead_code)]
#[derive(Serialize)]
struct AppErrorJson<'a> {
    id: &'a str,
    message: &'a str,
    detailed_error: &'a str,
    request_id: &'a str,
    status_code: u16,
    is_oauth: bool,
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
struct AppErr {
    status: u16,
    id: &'static str,
    message: String,
    detailed: String,
}

#[allow(dead_code)]
impl AppErr {
    fn new(status: u16, id: &'static str, message: &str) -> AppErr {
        AppErr {
            status,
            id,
            message: message.to_string(),
            detailed: String::new(),
        }
    }

    fn detailed(mut self, detailed: &str) -> AppErr {
        self.detailed = detailed.to_string();
        self
    }

    fn session_expired() -> AppErr {
        AppErr::new(
            401,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        )
    }

    fn invalid_body(name: &str) -> AppErr {
        AppErr::new(
            400,
            "api.context.invalid_body_param.app_error",
            &format!("Invalid or missing {name} in request body."),
        )
    }
}

/// English messages of the AppError ids the stand-in knows, for `set_post_failure`.
#[allow(dead_code)]
fn app_error_message(id: &str) -> &'static str {
    match id {
        "api.context.session_expired.app_error" => {
            "Invalid or expired session, please login again."
        }
        "api.context.permissions.app_error" => "You do not have the appropriate permissions.",
        "api.post.create_post.root_id.app_error" => "Invalid RootId parameter.",
        "api.post.create_post.channel_root_id.app_error" => {
            "Invalid ChannelId for RootId parameter."
        }
        "api.context.invalid_body_param.app_error" => "Invalid or missing post in request body.",
        "api.context.invalid_param.app_error" => "Invalid post.type parameter.",
        "model.post.is_valid.type.app_error" => "Invalid type.",
        "app.post.save.app_error" => "Unable to save the post.",
        "api.context.too_many_requests.app_error" => "Too many requests.",
        "api.context.server_busy.app_error" => {
            "Server is busy, non-critical services are temporarily unavailable."
        }
        _ => "Forced failure (MattermostStandIn::set_post_failure).",
    }
}

#[allow(dead_code)]
struct MmState {
    teams: Vec<Team>,
    channels: Vec<Channel>,
    users: Vec<User>,
    tokens: HashMap<String, String>,
    posts: Vec<Post>,
    pending: HashMap<(String, String), String>,
    requests: Vec<RecordedRequest>,
    gzip: bool,
    deflate: bool,
    post_failure: Option<(u16, &'static str)>,
    post_delay: Duration,
    hardened: bool,
    config: BTreeMap<String, String>,
}

#[allow(dead_code)]
impl MmState {
    fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    fn max_post_size(&self) -> usize {
        self.config
            .get("MaxPostSize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(MAX_POST_SIZE)
    }

    /// Stores a new post and updates the thread root and channel counters.
    fn store_post(&mut self, mut post: Post) -> Post {
        if !post.root_id.is_empty() {
            let root_id = post.root_id.clone();
            let replies = self.posts.iter().filter(|p| p.root_id == root_id).count() as i64 + 1;
            if let Some(root) = self.posts.iter_mut().find(|p| p.id == root_id) {
                root.reply_count = replies;
                root.last_reply_at = post.create_at;
            }
            post.reply_count = replies;
        }
        if let Some(ch) = self.channels.iter_mut().find(|c| c.id == post.channel_id) {
            ch.last_post_at = post.create_at;
            ch.total_msg_count += 1;
            if post.root_id.is_empty() {
                ch.last_root_post_at = post.create_at;
                ch.total_msg_count_root += 1;
            }
        }
        self.posts.push(post.clone());
        post
    }
}

#[allow(dead_code)]
fn default_client_config() -> BTreeMap<String, String> {
    [
        ("AboutLink", "https://mattermost.com/default-about/"),
        ("BuildNumber", "10.11.0"),
        ("DiagnosticsEnabled", "false"),
        ("EnableBotAccountCreation", "true"),
        ("EnableCommands", "true"),
        ("EnableCustomEmoji", "true"),
        ("EnableIncomingWebhooks", "true"),
        ("EnableOutgoingWebhooks", "true"),
        ("EnablePostIconOverride", "false"),
        ("EnablePostUsernameOverride", "false"),
        ("EnableUserAccessTokens", "false"),
        ("ExperimentalEnableHardenedMode", "false"),
        ("MaxFileSize", "104857600"),
        ("MaxPostSize", "16383"),
        ("SiteName", "Mattermost"),
        ("SiteURL", ""),
        ("Version", "10.11.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Keys only a logged-in client sees in `GET /api/v4/config/client?format=old`.
#[allow(dead_code)]
const LIMITED_CONFIG_KEYS: &[&str] = &[
    "AboutLink",
    "BuildNumber",
    "DiagnosticsEnabled",
    "SiteName",
    "SiteURL",
    "Version",
];

/// Where the request's session token came from (`ParseAuthTokenFromRequest` order).
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TokenLocation {
    Cookie,
    Header,
    Query,
}

#[allow(dead_code)]
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|part| {
            let (k, v) = part.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
}

#[allow(dead_code)]
fn parse_auth_token(headers: &HeaderMap, query: &str) -> Option<(String, TokenLocation)> {
    if let Some(token) = cookie_value(headers, "MMAUTHTOKEN") {
        return Some((token, TokenLocation::Cookie));
    }
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if auth.len() > 6
            && auth
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
        {
            return Some((
                auth.get(7..).unwrap_or("").to_string(),
                TokenLocation::Header,
            ));
        }
        if auth.len() > 5
            && auth
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("token"))
        {
            return Some((
                auth.get(6..).unwrap_or("").to_string(),
                TokenLocation::Header,
            ));
        }
    }
    query_param(query, "access_token")
        .filter(|t| !t.is_empty())
        .map(|t| (t, TokenLocation::Query))
}

/// Does `Accept-Encoding` list `coding` with a non-zero q-value?
#[allow(dead_code)]
fn accepts_encoding(headers: &HeaderMap, coding: &str) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            name.eq_ignore_ascii_case(coding) && !refused
        })
}

/// `model.ParseHashtags`, simplified: words starting with `#` and a letter, at least 3 chars.
#[allow(dead_code)]
fn parse_hashtags(message: &str) -> String {
    let mut tags: Vec<String> = Vec::new();
    for word in message.split_whitespace() {
        let word = word.trim_end_matches(|c: char| ".,:;!?()[]{}\"'".contains(c));
        let mut chars = word.chars();
        if chars.next() != Some('#') || !chars.next().is_some_and(char::is_alphabetic) {
            continue;
        }
        if word.chars().count() >= 3 && !tags.iter().any(|t| t == word) {
            tags.push(word.to_string());
        }
    }
    tags.join(" ")
}

/// Post types `Post.IsValid` accepts from the REST API (`system_*` is refused earlier).
#[allow(dead_code)]
fn post_type_allowed(t: &str) -> bool {
    matches!(t, "" | "slack_attachment" | "me" | "reminder") || t.starts_with("custom_")
}

/// Props reserved for integrations in hardened mode.
#[allow(dead_code)]
const RESERVED_PROPS: &[&str] = &[
    "from_webhook",
    "override_username",
    "webhook_display_name",
    "override_icon_url",
    "override_icon_emoji",
];

/// `createPost` + `CreatePostAsUser` + `CreatePost`, reduced to what a proxy can observe.
/// Returns the post and whether it is new (false: de-duplicated by `pending_post_id`).
#[allow(dead_code)]
fn create_post(st: &mut MmState, user: &User, body: &[u8]) -> Result<(Post, bool), AppErr> {
    // Go's json.Decoder reads the first JSON value and ignores what follows.
    let value = serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| AppErr::invalid_body("post"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| AppErr::invalid_body("post"))?;
    let text = |key: &str| -> Result<String, AppErr> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(AppErr::invalid_body("post")),
        }
    };
    let channel_id = text("channel_id")?;
    let message = text("message")?;
    let root_id = text("root_id")?;
    let post_type = text("type")?;
    let pending_post_id = text("pending_post_id")?;
    let file_ids: Vec<String> = match obj.get("file_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AppErr::invalid_body("post"))?,
        Some(_) => return Err(AppErr::invalid_body("post")),
    };
    let mut props = match obj.get("props") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(AppErr::invalid_body("post")),
    };
    let priority = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => m.get("priority").filter(|p| !p.is_null()).cloned(),
        Some(_) => return Err(AppErr::invalid_body("post")),
    };

    // Permission `create_post`: an unknown (or missing) channel fails it → 403.
    let channel = st.channel(&channel_id).cloned().ok_or_else(|| {
        AppErr::new(
            403,
            "api.context.permissions.app_error",
            "You do not have the appropriate permissions.",
        )
    })?;
    if st.hardened && !user.is_bot {
        let reserved: Vec<&str> = RESERVED_PROPS
            .iter()
            .copied()
            .filter(|k| props.contains_key(*k))
            .collect();
        if !reserved.is_empty() {
            return Err(AppErr::invalid_body("props").detailed(&format!(
                "Cannot use props reserved for integrations. props: [{}]",
                reserved.join(" ")
            )));
        }
    }
    if post_type.starts_with("system_") {
        return Err(AppErr::new(
            400,
            "api.context.invalid_param.app_error",
            "Invalid post.type parameter.",
        ));
    }
    if !pending_post_id.is_empty() {
        let key = (user.id.clone(), pending_post_id.clone());
        if let Some(existing) = st.pending.get(&key) {
            if let Some(post) = st.posts.iter().find(|p| &p.id == existing) {
                return Ok((post.clone(), false));
            }
        }
    }
    if !root_id.is_empty() {
        let root = st
            .posts
            .iter()
            .find(|p| p.id == root_id && p.delete_at == 0)
            .ok_or_else(|| {
                AppErr::new(
                    400,
                    "api.post.create_post.root_id.app_error",
                    "Invalid RootId parameter.",
                )
            })?;
        if root.channel_id != channel_id {
            return Err(AppErr::new(
                400,
                "api.post.create_post.channel_root_id.app_error",
                "Invalid ChannelId for RootId parameter.",
            ));
        }
        if !root.root_id.is_empty() {
            return Err(AppErr::new(
                400,
                "api.post.create_post.root_id.app_error",
                "Invalid RootId parameter.",
            ));
        }
    }
    if !post_type_allowed(&post_type) {
        return Err(AppErr::new(
            400,
            "model.post.is_valid.type.app_error",
            "Invalid type.",
        ));
    }
    if message.chars().count() > st.max_post_size() {
        return Err(AppErr::new(
            400,
            "model.post.is_valid.message_length.app_error",
            "Invalid Message property length.",
        ));
    }

    props.remove("add_channel_member");
    if user.is_bot {
        props.insert("from_bot".to_string(), Value::String("true".to_string()));
    }
    let now = now_ms();
    let metadata = match priority {
        Some(p) => json!({ "priority": p }),
        None => json!({}),
    };
    let post = Post {
        id: random_id(),
        create_at: now,
        update_at: now,
        edit_at: 0,
        delete_at: 0,
        is_pinned: false,
        user_id: user.id.clone(),
        channel_id: channel.id.clone(),
        root_id,
        original_id: String::new(),
        hashtags: parse_hashtags(&message),
        message,
        post_type,
        props: Value::Object(props),
        file_ids,
        pending_post_id: pending_post_id.clone(),
        reply_count: 0,
        last_reply_at: 0,
        participants: None,
        metadata,
        via_api: true,
    };
    let post = st.store_post(post);
    if !pending_post_id.is_empty() {
        st.pending
            .insert((user.id.clone(), pending_post_id), post.id.clone());
    }
    Ok((post, true))
}

#[allow(dead_code)]
fn channel_json(c: &Channel) -> Vec<u8> {
    to_json(&ChannelJson {
        id: &c.id,
        create_at: c.create_at,
        update_at: c.create_at,
        delete_at: 0,
        team_id: &c.team_id,
        channel_type: &c.channel_type,
        display_name: &c.name,
        name: &c.name,
        header: "",
        purpose: "",
        last_post_at: c.last_post_at,
        total_msg_count: c.total_msg_count,
        extra_update_at: 0,
        creator_id: "",
        scheme_id: None,
        props: None,
        group_constrained: None,
        shared: Some(false),
        total_msg_count_root: c.total_msg_count_root,
        policy_id: None,
        last_root_post_at: c.last_root_post_at,
    })
}

#[allow(dead_code)]
fn team_json(t: &Team) -> Vec<u8> {
    to_json(&TeamJson {
        id: &t.id,
        create_at: t.create_at,
        update_at: t.create_at,
        delete_at: 0,
        display_name: &t.name,
        name: &t.name,
        description: "",
        email: "",
        team_type: "O",
        company_name: "",
        allowed_domains: "",
        invite_id: "",
        allow_open_invite: false,
        scheme_id: None,
        group_constrained: None,
        policy_id: None,
        cloud_limits_archived: false,
    })
}

#[allow(dead_code)]
fn user_value(u: &User, is_me: bool) -> UserJson<'_> {
    UserJson {
        id: &u.id,
        create_at: u.create_at,
        update_at: u.create_at,
        delete_at: 0,
        username: &u.username,
        auth_data: "",
        auth_service: "",
        email: if is_me {
            format!("{}@example.com", u.username)
        } else {
            String::new()
        },
        nickname: "",
        first_name: "",
        last_name: "",
        position: "",
        roles: "system_user",
        locale: "en",
        timezone: TimezoneJson {
            automatic: "",
            manual: "",
            use_automatic: "true",
        },
        is_bot: u.is_bot,
        bot_description: u.is_bot.then_some(""),
        disable_welcome_email: false,
    }
}

#[allow(dead_code)]
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| panic!("serialize: {e}"))
}

#[allow(dead_code)]
fn post_value(p: &Post) -> Value {
    serde_json::to_value(p).unwrap_or_else(|e| panic!("serialize post: {e}"))
}

/// The stand-in's answer before encoding.
#[allow(dead_code)]
enum MmReply {
    Json(u16, Vec<u8>),
    Error(AppErr),
}

/// An in-process Mattermost stand-in; see the module docs. Dropping it stops the server.
#[allow(dead_code)]
pub struct MattermostStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<MmState>>,
    _server: ServerTask,
}

#[allow(dead_code)]
impl MattermostStandIn {
    /// Starts the server on `127.0.0.1:0` on the current tokio runtime.
    pub async fn start() -> MattermostStandIn {
        let state = Arc::new(Mutex::new(MmState {
            teams: Vec::new(),
            channels: Vec::new(),
            users: Vec::new(),
            tokens: HashMap::new(),
            posts: Vec::new(),
            pending: HashMap::new(),
            requests: Vec::new(),
            gzip: false,
            deflate: false,
            post_failure: None,
            post_delay: Duration::ZERO,
            hardened: false,
            config: default_client_config(),
        }));
        let st = state.clone();
        let handler: Handler =
            Arc::new(move |req, meta| Box::pin(handle_mm(st.clone(), req, meta)));
        let (addr, server) = spawn_server(handler).await;
        MattermostStandIn {
            addr,
            state,
            _server: server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    // ----- fixtures -----

    /// Adds a team (`name` is the URL handle, also used as display name).
    pub fn add_team(&self, id: &str, name: &str) {
        lock(&self.state).teams.push(Team {
            id: id.to_string(),
            name: name.to_string(),
            create_at: now_ms(),
        });
    }

    /// Adds a channel; `channel_type` is "O", "P", "D" or "G".
    pub fn add_channel(&self, id: &str, team_id: &str, name: &str, channel_type: &str) {
        lock(&self.state).channels.push(Channel {
            id: id.to_string(),
            team_id: team_id.to_string(),
            name: name.to_string(),
            channel_type: channel_type.to_string(),
            create_at: now_ms(),
            last_post_at: 0,
            last_root_post_at: 0,
            total_msg_count: 0,
            total_msg_count_root: 0,
        });
    }

    pub fn add_user(&self, id: &str, username: &str, is_bot: bool) {
        lock(&self.state).users.push(User {
            id: id.to_string(),
            username: username.to_string(),
            is_bot,
            create_at: now_ms(),
        });
    }

    /// Registers a session/bot token for `user_id` (usable as `Authorization: Bearer <token>`,
    /// `Authorization: Token <token>`, cookie `MMAUTHTOKEN=<token>` or `?access_token=`).
    /// A bot user's token counts as an integration session (hardened mode).
    pub fn add_token(&self, token: &str, user_id: &str) {
        lock(&self.state)
            .tokens
            .insert(token.to_string(), user_id.to_string());
    }

    /// Seeds an existing post (not counted by [`posts`](Self::posts)); returns it as JSON.
    /// Useful as a thread root or as a reply that a trigger post replies to.
    pub fn add_post(&self, channel_id: &str, user_id: &str, message: &str, root_id: &str) -> Value {
        let now = now_ms();
        let mut st = lock(&self.state);
        let mut props = serde_json::Map::new();
        if st.user(user_id).is_some_and(|u| u.is_bot) {
            props.insert("from_bot".to_string(), Value::String("true".to_string()));
        }
        let post = st.store_post(Post {
            id: random_id(),
            create_at: now,
            update_at: now,
            edit_at: 0,
            delete_at: 0,
            is_pinned: false,
            user_id: user_id.to_string(),
            channel_id: channel_id.to_string(),
            root_id: root_id.to_string(),
            original_id: String::new(),
            message: message.to_string(),
            post_type: String::new(),
            props: Value::Object(props),
            hashtags: parse_hashtags(message),
            file_ids: Vec::new(),
            pending_post_id: String::new(),
            reply_count: 0,
            last_reply_at: 0,
            participants: None,
            metadata: json!({}),
            via_api: false,
        });
        post_value(&post)
    }

    // ----- knobs -----

    /// gzip the `POST /api/v4/posts` 201 body when the client accepts gzip.
    pub fn set_gzip(&self, on: bool) {
        lock(&self.state).gzip = on;
    }

    /// zlib-`deflate` the `POST /api/v4/posts` 201 body when the client accepts deflate
    /// (gzip wins when both are on and accepted).
    pub fn set_deflate(&self, on: bool) {
        lock(&self.state).deflate = on;
    }

    /// Make every `POST /api/v4/posts` answer `status` with an AppError of that id (before
    /// authentication), creating nothing. `None` restores normal behaviour.
    pub fn set_post_failure(&self, failure: Option<(u16, &'static str)>) {
        lock(&self.state).post_failure = failure;
    }

    /// Delay the `POST /api/v4/posts` answer by `delay` after the post has been created.
    pub fn set_post_delay(&self, delay: Duration) {
        lock(&self.state).post_delay = delay;
    }

    /// `ExperimentalEnableHardenedMode`: refuse integration-reserved props from non-bot tokens.
    pub fn set_hardened_mode(&self, on: bool) {
        let mut st = lock(&self.state);
        st.hardened = on;
        st.config
            .insert("ExperimentalEnableHardenedMode".to_string(), on.to_string());
    }

    /// Sets a client-config value, e.g. `set_config("EnablePostUsernameOverride", "true")`.
    pub fn set_config(&self, key: &str, value: &str) {
        lock(&self.state)
            .config
            .insert(key.to_string(), value.to_string());
    }

    // ----- records -----

    /// Every request so far, in the order their bodies finished arriving.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Forgets the recorded requests (fixtures and posts stay).
    pub fn clear_requests(&self) {
        lock(&self.state).requests.clear();
    }

    /// How many requests had a target starting with `path_prefix` (e.g. "/api/v4/channels/").
    pub fn lookups(&self, path_prefix: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.path_and_query.starts_with(path_prefix))
            .count()
    }

    /// Posts created through `POST /api/v4/posts`, in creation order, as stored now.
    pub fn posts(&self) -> Vec<Value> {
        lock(&self.state)
            .posts
            .iter()
            .filter(|p| p.via_api)
            .map(post_value)
            .collect()
    }

    /// Any stored post (created or seeded) by id.
    pub fn post(&self, id: &str) -> Option<Value> {
        lock(&self.state)
            .posts
            .iter()
            .find(|p| p.id == id)
            .map(post_value)
    }

    /// Waits until at least `n` posts were created; panics listing posts and requests on timeout.
    pub async fn wait_for_posts(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let posts = self.posts();
            if posts.len() >= n {
                return posts;
            }
            if Instant::now() >= deadline {
                let listed = posts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("  #{i}: {p}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                panic!(
                    "MattermostStandIn: timed out after {timeout:?} waiting for {n} created post(s); \
                     {} arrived:\n{}\nrequests received:\n{}",
                    posts.len(),
                    if listed.is_empty() { "  (none)".to_string() } else { listed },
                    describe_requests(&self.requests())
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[allow(dead_code)]
async fn handle_mm(
    state: Arc<Mutex<MmState>>,
    mut req: Request<Incoming>,
    meta: RequestMeta,
) -> Resp {
    let request_id = random_id();
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();

    // The websocket upgrade needs the whole request, so it is handled before the body is read.
    if method == Method::GET && path == "/api/v4/websocket" {
        record(&state, &method, &path_and_query, meta, Vec::new(), 0);
        return websocket(&mut req, &headers, &request_id);
    }

    let needs_full_body =
        method == Method::POST && (path == "/api/v4/posts" || path == "/api/v4/users/ids");
    let keep = if needs_full_body {
        usize::MAX
    } else {
        RECORD_BODY_LIMIT
    };
    let (body, body_len) = read_body(req.into_body(), keep).await;
    let recorded_body = body[..body.len().min(RECORD_BODY_LIMIT)].to_vec();
    record(
        &state,
        &method,
        &path_and_query,
        meta,
        recorded_body,
        body_len,
    );

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let api_route = matches!(
        (&method, segments.as_slice()),
        (&Method::POST, ["api", "v4", "posts"])
            | (
                &Method::GET,
                ["api", "v4", "channels" | "teams" | "users" | "posts", _]
            )
            | (&Method::POST, ["api", "v4", "users", "ids"])
            | (&Method::GET, ["api", "v4", "config", "client"])
    );
    if !api_route {
        let reply = json!({ "method": method.as_str(), "path": path, "received_bytes": body_len });
        return mm_response(MmReply::Json(200, to_json(&reply)), &request_id, &[]);
    }

    if method == Method::POST && path == "/api/v4/posts" {
        let failure = lock(&state).post_failure;
        if let Some((status, id)) = failure {
            let err = AppErr::new(status, id, app_error_message(id));
            return mm_response(MmReply::Error(err), &request_id, &[]);
        }
    }

    // Authentication (and CSRF for cookie sessions on non-GET requests).
    let token = parse_auth_token(&headers, &query);
    let user = {
        let st = lock(&state);
        token
            .as_ref()
            .and_then(|(t, _)| st.tokens.get(t))
            .and_then(|uid| st.user(uid))
            .cloned()
    };
    let Some(user) = user else {
        if config_route(&segments) {
            return client_config(&state, &query, false, &request_id);
        }
        return mm_response(MmReply::Error(AppErr::session_expired()), &request_id, &[]);
    };
    if method != Method::GET && token.as_ref().map(|(_, loc)| *loc) == Some(TokenLocation::Cookie) {
        let xrw = headers
            .get("x-requested-with")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "XMLHttpRequest");
        let csrf = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let csrf_ok = csrf.is_some_and(|c| {
            !c.is_empty() && cookie_value(&headers, "MMCSRF").as_deref() == Some(c)
        });
        if !xrw && !csrf_ok {
            let err = AppErr::session_expired().detailed("Appears to be a CSRF attempt");
            return mm_response(MmReply::Error(err), &request_id, &[]);
        }
    }

    match (&method, segments.as_slice()) {
        (&Method::POST, ["api", "v4", "posts"]) => {
            let (result, delay, encoding) = {
                let mut st = lock(&state);
                let result = create_post(&mut st, &user, &body);
                let encoding = if st.gzip && accepts_encoding(&headers, "gzip") {
                    Some("gzip")
                } else if st.deflate && accepts_encoding(&headers, "deflate") {
                    Some("deflate")
                } else {
                    None
                };
                (result, st.post_delay, encoding)
            };
            match result {
                Ok((post, _new)) => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let json = to_json(&post);
                    match encoding {
                        Some(enc) => {
                            let bytes = if enc == "gzip" {
                                gzip_bytes(&json)
                            } else {
                                zlib_bytes(&json)
                            };
                            mm_response(
                                MmReply::Json(201, bytes),
                                &request_id,
                                &[
                                    ("Content-Encoding", enc.to_string()),
                                    ("Vary", "Accept-Encoding".to_string()),
                                ],
                            )
                        }
                        None => mm_response(MmReply::Json(201, json), &request_id, &[]),
                    }
                }
                Err(err) => mm_response(MmReply::Error(err), &request_id, &[]),
            }
        }
        (&Method::GET, ["api", "v4", "channels", id]) => {
            let st = lock(&state);
            let reply = match st.channel(id) {
                Some(c) => MmReply::Json(200, channel_json(c)),
                None => MmReply::Error(AppErr::new(
                    404,
                    "app.channel.get.existing.app_error",
                    "Unable to find the existing channel.",
                )),
            };
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "posts", id]) => {
            let st = lock(&state);
            let reply = match st.posts.iter().find(|p| p.id == *id) {
                Some(p) => MmReply::Json(200, to_json(p)),
                None => MmReply::Error(AppErr::new(
                    404,
                    "app.post.get.app_error",
                    "Unable to get the post.",
                )),
            };
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "teams", id]) => {
            let st = lock(&state);
            let reply = match st.team(id) {
                Some(t) => MmReply::Json(200, team_json(t)),
                None => MmReply::Error(AppErr::new(
                    404,
                    "app.team.get.find.app_error",
                    "Unable to find the existing team.",
                )),
            };
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "users", id]) => {
            let st = lock(&state);
            let wanted = if *id == "me" { user.id.as_str() } else { id };
            let reply = match st.user(wanted) {
                Some(u) => MmReply::Json(200, to_json(&user_value(u, u.id == user.id))),
                None => MmReply::Error(AppErr::new(
                    404,
                    "app.user.missing_account.const",
                    "Unable to find the user.",
                )),
            };
            mm_response(reply, &request_id, &[])
        }
        (&Method::POST, ["api", "v4", "users", "ids"]) => {
            let ids: Option<Vec<String>> = serde_json::from_slice(&body).ok();
            let reply = match ids {
                Some(ids) if !ids.is_empty() => {
                    let st = lock(&state);
                    let mut seen = Vec::new();
                    let users: Vec<UserJson<'_>> = ids
                        .iter()
                        .filter_map(|id| st.user(id))
                        .filter(|u| {
                            let fresh = !seen.contains(&u.id);
                            seen.push(u.id.clone());
                            fresh
                        })
                        .map(|u| user_value(u, u.id == user.id))
                        .collect();
                    MmReply::Json(200, to_json(&users))
                }
                _ => MmReply::Error(AppErr::invalid_body("user_ids")),
            };
            mm_response(reply, &request_id, &[])
        }
        _ => client_config(&state, &query, true, &request_id),
    }
}

#[allow(dead_code)]
fn config_route(segments: &[&str]) -> bool {
    segments == ["api", "v4", "config", "client"]
}

#[allow(dead_code)]
fn client_config(
    state: &Arc<Mutex<MmState>>,
    query: &str,
    logged_in: bool,
    request_id: &str,
) -> Resp {
    if query_param(query, "format").as_deref() != Some("old") {
        let err = AppErr::new(
            501,
            "api.config.client.old_format.app_error",
            "New format for the client configuration is not supported yet. Please specify format=old in the query string.",
        );
        return mm_response(MmReply::Error(err), request_id, &[]);
    }
    let st = lock(state);
    let config: BTreeMap<&String, &String> = st
        .config
        .iter()
        .filter(|(k, _)| logged_in || LIMITED_CONFIG_KEYS.contains(&k.as_str()))
        .collect();
    mm_response(MmReply::Json(200, to_json(&config)), request_id, &[])
}

#[allow(dead_code)]
fn record(
    state: &Arc<Mutex<MmState>>,
    method: &Method,
    path_and_query: &str,
    meta: RequestMeta,
    body: Vec<u8>,
    body_len: u64,
) {
    lock(state).requests.push(RecordedRequest {
        method: method.as_str().to_string(),
        path_and_query: path_and_query.to_string(),
        headers: meta.headers,
        body,
        body_len,
        received_at: meta.received_at,
    });
}

#[allow(dead_code)]
fn mm_response(reply: MmReply, request_id: &str, extra: &[(&str, String)]) -> Resp {
    let (status, body) = match reply {
        MmReply::Json(status, body) => (status, body),
        MmReply::Error(err) => (
            err.status,
            to_json(&AppErrorJson {
                id: err.id,
                message: &err.message,
                detailed_error: &err.detailed,
                request_id,
                status_code: err.status,
                is_oauth: false,
            }),
        ),
    };
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("X-Request-Id", request_id.to_string()),
        ("X-Version-Id", VERSION_ID.to_string()),
    ];
    headers.extend(extra.iter().cloned());
    response(status, &headers, body)
}

#[allow(dead_code)]
fn websocket(req: &mut Request<Incoming>, headers: &HeaderMap, request_id: &str) -> Resp {
    let is_upgrade = headers
        .get(http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|v| v.as_bytes().to_vec());
    let (true, Some(key)) = (is_upgrade, key) else {
        let err = AppErr::new(
            400,
            "api.web_socket.connect.upgrade.app_error",
            "Failed to upgrade websocket connection.",
        );
        return mm_response(MmReply::Error(err), request_id, &[]);
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        if ws
            .send(Message::text(r#"{"event":"hello"}"#))
            .await
            .is_err()
        {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                return;
            }
        }
    });
    response(
        101,
        &[
            ("Upgrade", "websocket".to_string()),
            ("Connection", "Upgrade".to_string()),
            ("Sec-WebSocket-Accept", derive_accept_key(&key)),
            ("X-Request-Id", request_id.to_string()),
            ("X-Version-Id", VERSION_ID.to_string()),
        ],
        Vec::new(),
    )
}

// ---------------------------------------------------------------------------------------------
// Webhook receiver
// ---------------------------------------------------------------------------------------------

/// How a [`WebhookReceiver`] answers.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Responder {
    /// 200 with `Content-Type: application/json` and this body.
    Json(String),
    /// This status with `Content-Type: application/json` and this body.
    Status(u16, String),
    /// Never answers (the connection stays open).
    Hang,
    /// Waits, then 200 `application/json` with this body.
    Delay(Duration, String),
}

#[allow(dead_code)]
struct RecvShared {
    responder: Mutex<Responder>,
    requests: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Decrements the in-flight count when a request's handling ends (or is dropped).
#[allow(dead_code)]
struct InFlight(Arc<RecvShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An outgoing-webhook callback endpoint on `127.0.0.1:0`. Dropping it stops the server.
#[allow(dead_code)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<RecvShared>,
    _server: ServerTask,
}

#[allow(dead_code)]
impl WebhookReceiver {
    pub async fn start(responder: Responder) -> WebhookReceiver {
        let shared = Arc::new(RecvShared {
            responder: Mutex::new(responder),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let handler: Handler =
            Arc::new(move |req, meta| Box::pin(handle_hook(sh.clone(), req, meta)));
        let (addr, server) = spawn_server(handler).await;
        WebhookReceiver {
            addr,
            shared,
            _server: server,
        }
    }

    /// Changes the answer for requests arriving from now on.
    pub fn set_responder(&self, responder: Responder) {
        *lock(&self.shared.responder) = responder;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{sep}{path}", self.addr)
    }

    /// Requests received so far (recorded once the body has been read, before answering).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The highest number of requests that were being handled at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; panics listing them on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "WebhookReceiver {}: timed out after {timeout:?} waiting for {n} request(s); {} arrived:\n{}",
                    self.addr,
                    reqs.len(),
                    describe_requests(&reqs)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asserts that no request arrives during `d` (fails as soon as one does).
    pub async fn assert_quiet(&self, d: Duration) {
        let before = self.requests().len();
        let deadline = Instant::now() + d;
        loop {
            let reqs = self.requests();
            if reqs.len() > before {
                panic!(
                    "WebhookReceiver {}: expected no request for {d:?}, but got:\n{}",
                    self.addr,
                    describe_requests(&reqs[before..])
                );
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[allow(dead_code)]
async fn handle_hook(shared: Arc<RecvShared>, req: Request<Incoming>, meta: RequestMeta) -> Resp {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(shared.clone());
    let method = req.method().as_str().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let (body, body_len) = read_body(req.into_body(), RECORD_BODY_LIMIT).await;
    let responder = lock(&shared.responder).clone();
    lock(&shared.requests).push(RecordedRequest {
        method,
        path_and_query,
        headers: meta.headers,
        body,
        body_len,
        received_at: meta.received_at,
    });
    let json = |status: u16, body: String| {
        response(
            status,
            &[("Content-Type", "application/json".to_string())],
            body.into_bytes(),
        )
    };
    match responder {
        Responder::Json(body) => json(200, body),
        Responder::Status(status, body) => json(status, body),
        Responder::Hang => std::future::pending().await,
        Responder::Delay(d, body) => {
            tokio::time::sleep(d).await;
            json(200, body)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A response read off the wire by [`RawConn`].
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// Header lines in received order, original case.
    pub headers: Vec<(String, String)>,
    /// The body as sent (de-chunked, NOT decompressed).
    pub body: Vec<u8>,
}

#[allow(dead_code)]
impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body after undoing `Content-Encoding: gzip|deflate`.
    pub fn decoded_body(&self) -> Vec<u8> {
        match self
            .header("content-encoding")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gzip") => gunzip(&self.body),
            Some("deflate") => inflate(&self.body),
            _ => self.body.clone(),
        }
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.decoded_body()).into_owned()
    }

    /// The (decoded) body as JSON; panics with status and body text otherwise.
    pub fn json(&self) -> Value {
        let body = self.decoded_body();
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "response {} {}: body is not JSON ({e}): {:?}",
                self.status,
                self.reason,
                String::from_utf8_lossy(&body)
            )
        })
    }
}

/// A plain TCP connection speaking HTTP/1.1 byte for byte (keep-alive capable).
#[allow(dead_code)]
pub struct RawConn {
    stream: BufReader<TcpStream>,
    host: String,
}

#[allow(dead_code)]
impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = tcp.set_nodelay(true);
        RawConn {
            stream: BufReader::new(tcp),
            host: addr.to_string(),
        }
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.host));
        stream
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush to {}: {e}", self.host));
    }

    /// Sends a request (headers in the given order and case; `Host` and `Content-Length` are
    /// added unless present) and reads the response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !has("host") {
            head.push_str(&format!("Host: {}\r\n", self.host));
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let needs_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
        if needs_length && !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await;
        self.read_response_for(method).await
    }

    /// Reads one response (skipping `100 Continue`).
    pub async fn read_response(&mut self) -> RawResponse {
        self.read_response_for("GET").await
    }

    /// Reads one response to a request of `method` (a HEAD response has no body).
    pub async fn read_response_for(&mut self, method: &str) -> RawResponse {
        loop {
            let status_line = self.read_line().await;
            if status_line.is_empty() {
                panic!("{}: connection closed before a response arrived", self.host);
            }
            let mut parts = status_line.trim_end().splitn(3, ' ');
            let _version = parts.next();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{}: bad status line {status_line:?}", self.host));
            let reason = parts.next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let line = self.read_line().await;
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    break;
                }
                if let Some((n, v)) = line.split_once(':') {
                    headers.push((n.to_string(), v.trim().to_string()));
                }
            }
            if status == 100 {
                continue;
            }
            let mut resp = RawResponse {
                status,
                reason,
                headers,
                body: Vec::new(),
            };
            if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304
            {
                return resp;
            }
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            if chunked {
                resp.body = self.read_chunked().await;
            } else if let Some(len) = resp
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
            {
                let mut body = vec![0u8; len];
                self.stream
                    .read_exact(&mut body)
                    .await
                    .unwrap_or_else(|e| panic!("{}: reading {len} body bytes: {e}", self.host));
                resp.body = body;
            } else {
                self.stream
                    .read_to_end(&mut resp.body)
                    .await
                    .unwrap_or_else(|e| panic!("{}: reading body to EOF: {e}", self.host));
            }
            return resp;
        }
    }

    async fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        self.stream
            .read_until(b'\n', &mut line)
            .await
            .unwrap_or_else(|e| panic!("{}: read: {e}", self.host));
        String::from_utf8_lossy(&line).into_owned()
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await;
            let hex = line
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&hex, 16)
                .unwrap_or_else(|_| panic!("{}: bad chunk size line {line:?}", self.host));
            if size == 0 {
                while !self.read_line().await.trim().is_empty() {}
                return body;
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.stream
                .read_exact(&mut body[start..])
                .await
                .unwrap_or_else(|e| panic!("{}: reading chunk: {e}", self.host));
            self.read_line().await;
        }
    }

    /// The underlying stream (e.g. to check that the server closes the connection).
    pub fn into_inner(self) -> BufReader<TcpStream> {
        self.stream
    }
}

/// One request on a fresh connection; see [`RawConn::request`].
#[allow(dead_code)]
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    RawConn::connect(addr)
        .await
        .request(method, path, headers, body)
        .await
}
