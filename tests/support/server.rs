//! The HTTP/1.1 server the stand-in and the receiver run on: an accept loop on
//! `127.0.0.1:0` that stops when dropped, hyper serving each connection, and the original case
//! of every request header (hyper keeps it to itself, so the connection's bytes are watched and
//! each request head is parsed on the side). And [`RecordedRequest`], what both servers record.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::{find_bytes, lock, percent_decode, query_param};

/// One request as a server received it.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as received (origin form: `/path?query`).
    pub path_and_query: String,
    /// Header lines in received order, names in their original case (read off the wire).
    pub headers: Vec<(String, String)>,
    /// The body, truncated to [`RECORD_BODY_LIMIT`](super::RECORD_BODY_LIMIT) bytes.
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

    /// The first value of form field `name`.
    pub fn form_value(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
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
pub(super) fn describe_requests(reqs: &[RecordedRequest]) -> String {
    if reqs.is_empty() {
        return "  (none)".to_string();
    }
    reqs.iter()
        .enumerate()
        .map(|(i, r)| format!("  #{i}: {}", r.summary()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) type Resp = Response<Full<Bytes>>;
type BoxResp = Pin<Box<dyn Future<Output = Resp> + Send>>;
pub(super) type Handler = Arc<dyn Fn(Request<Incoming>, RequestMeta) -> BoxResp + Send + Sync>;
type HeadQueue = Arc<Mutex<VecDeque<SniffedHead>>>;

#[allow(dead_code)]
pub(super) struct RequestMeta {
    pub(super) headers: Vec<(String, String)>,
    pub(super) received_at: Instant,
}

/// Aborts the accept loop (and with it every connection task) when dropped.
#[allow(dead_code)]
pub(super) struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[allow(dead_code)]
pub(super) async fn spawn_server(handler: Handler) -> (SocketAddr, ServerTask) {
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
pub(super) async fn read_body(mut body: Incoming, keep: usize) -> (Vec<u8>, u64) {
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
pub(super) fn response(status: u16, headers: &[(&str, String)], body: Vec<u8>) -> Resp {
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
