//! The demo's three small servers, on ephemeral loopback ports: the embedded Mattermost API
//! (hyper, [`super::routes`] over a [`Directory`]), the example webhook (answers `echo …`), and
//! the tap in front of each callback URL, which reads posthook's request as raw bytes (so the
//! terminal shows it exactly, header case and order included), forwards it and relays the
//! answer. Each server takes at most [`MAX_CONNECTIONS`] connections at once and bodies up to
//! [`MAX_BODY`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::model::{new_id, Directory, Post};
use super::routes::{is_api_route, parse_auth_token, Reply, VERSION_ID};
use super::Screen;
use crate::net::client::{read_capped, Body, HttpClient};

/// Connections each demo server serves at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// The largest request or answer body a demo server reads.
pub(super) const MAX_BODY: usize = 4 * 1024 * 1024;
/// A client has this long to send a request head, and a webhook to answer the tap.
const TIMEOUT: Duration = Duration::from_secs(30);

type Resp = Response<Full<Bytes>>;

/// Accepts connections on `listener` until the runtime stops, at most [`MAX_CONNECTIONS`]
/// served at once (the others wait in the kernel's backlog), each by `serve_one`.
async fn accept<F, Fut>(listener: TcpListener, serve_one: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let served = serve_one(stream);
        tokio::spawn(async move {
            served.await;
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 on `listener` with `handle` until the runtime stops.
pub(super) async fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send + 'static,
{
    accept(listener, |stream| {
        let handle = handle.clone();
        async move {
            let service = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await;
}

/// A response with `status`, Mattermost's headers and `body` (JSON).
fn json_response(status: u16, request_id: &str, body: Vec<u8>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    h.insert("x-version-id", http::HeaderValue::from_static(VERSION_ID));
    r
}

/// A request's body, up to [`MAX_BODY`] (`None`: larger, or it failed).
async fn body_of(req: Request<Incoming>) -> Option<Bytes> {
    Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// The embedded Mattermost API: `GET /api/v4/system/ping`, and the authenticated routes of
/// [`is_api_route`]; each post created or edited is shown on `screen`.
pub(super) async fn api(
    dir: Arc<Mutex<Directory>>,
    screen: Screen,
    req: Request<Incoming>,
) -> Resp {
    let request_id = new_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let token = parse_auth_token(req.headers(), &query).map(|(t, _)| t);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if method == Method::GET && segments == ["api", "v4", "system", "ping"] {
        let body = json!({"ActiveSearchBackend": "database", "status": "OK"});
        return json_response(200, &request_id, body.to_string().into_bytes());
    }
    let reply = if !is_api_route(&method, &segments) {
        Reply::Error(super::model::AppErr::new(
            404,
            "api.context.404.app_error",
            "Sorry, we could not find the page.",
        ))
    } else {
        let Some(body) = body_of(req).await else {
            let err = super::model::AppErr::invalid_body("body");
            let (status, body) = Reply::Error(err).into_parts(&request_id);
            return json_response(status, &request_id, body);
        };
        let Ok(mut d) = dir.lock() else {
            return json_response(500, &request_id, Vec::new());
        };
        match token.and_then(|t| d.user_of_token(&t).cloned()) {
            None => Reply::Error(super::model::AppErr::session_expired()),
            Some(user) => {
                let reply = d.answer(&method, &segments, &user, &body);
                if let Some(Reply::Json(status @ (200 | 201), json)) = &reply {
                    if method != Method::GET && segments.get(2) == Some(&"posts") {
                        let id = serde_json::from_slice::<Value>(json)
                            .ok()
                            .and_then(|v| v.get("id")?.as_str().map(str::to_string));
                        if let Some(id) = id {
                            screen.post(&d, &id, *status == 200);
                        }
                    }
                }
                reply.unwrap_or(Reply::Json(404, Vec::new()))
            }
        }
    };
    let (status, body) = reply.into_parts(&request_id);
    json_response(status, &request_id, body)
}

/// The example webhook: answers a post `echo …` with a Slack-style reply naming the author
/// (`<@USER_ID>`, which posthook turns into `@username` as Mattermost does).
pub(super) async fn echo(req: Request<Incoming>) -> Resp {
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes() != b"application/json");
    let body = body_of(req).await.unwrap_or_default();
    let field = |name: &str| -> String {
        if form {
            url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        } else {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get(name).and_then(Value::as_str).map(str::to_string))
                .unwrap_or_default()
        }
    };
    let (text, word, user) = (field("text"), field("trigger_word"), field("user_id"));
    let rest = text.strip_prefix(word.as_str()).unwrap_or(&text).trim();
    let said = if rest.is_empty() {
        "(nothing after the trigger word)"
    } else {
        rest
    };
    let answer = json!({ "text": format!("<@{user}> said: {said}") });
    json_response(200, "", answer.to_string().into_bytes())
}

/// The tap: `/N` forwards to target N. Reads one request as raw bytes, shows it (as sent to
/// the target: its path and `Host`), forwards it, shows the answer and writes it back.
pub(super) async fn tap(
    listener: TcpListener,
    targets: Arc<Vec<url::Url>>,
    client: Arc<HttpClient>,
    screen: Screen,
) {
    accept(listener, |stream| {
        let (targets, client, screen) = (targets.clone(), client.clone(), screen.clone());
        async move {
            let _ =
                tokio::time::timeout(TIMEOUT * 2, relay(stream, &targets, &client, &screen)).await;
        }
    })
    .await;
}

/// Reads a request head and its `Content-Length` body (posthook's requests have no other
/// framing); `None` when the stream ends first or the request is too large.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        read_more(stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    if length > MAX_BODY {
        return None;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        read_more(stream, &mut body).await?;
    }
    body.truncate(length);
    Some((head, body))
}

/// Appends what `stream` has next to `buf`; `None` when it ended or stalled for [`TIMEOUT`].
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout(TIMEOUT, stream.read(&mut chunk))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

async fn relay(mut stream: TcpStream, targets: &[url::Url], client: &HttpClient, screen: &Screen) {
    let Some((head, body)) = read_request(&mut stream).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or("POST"), parts.next().unwrap_or("/"));
    let target = path
        .trim_start_matches('/')
        .parse::<usize>()
        .ok()
        .and_then(|i| targets.get(i));
    let Some(target) = target else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    };
    let host = match target.port() {
        Some(p) => format!("{}:{p}", target.host_str().unwrap_or("")),
        None => target.host_str().unwrap_or("").to_string(),
    };
    let target_path = match target.query() {
        Some(q) => format!("{}?{q}", target.path()),
        None => target.path().to_string(),
    };
    // The request as posthook sends it to the target: its request line and Host.
    let mut shown = format!("{method} {target_path} HTTP/1.1\r\n");
    let mut request = Request::builder().method(method).uri(target.as_str());
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("host") {
            shown.push_str(&format!("{name}: {host}\r\n"));
            continue;
        }
        shown.push_str(line);
        shown.push_str("\r\n");
        if !name.eq_ignore_ascii_case("content-length") {
            request = request.header(name.trim(), value.trim());
        }
    }
    screen.webhook_request(target.as_str(), &shown, &body);
    let started = Instant::now();
    let answer = match request.body(Body::new(Bytes::from(body))) {
        Ok(r) => tokio::time::timeout(TIMEOUT, client.send(r)).await,
        Err(_) => return,
    };
    let (status, content_type, answer) = match answer {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let body = read_capped(resp.into_body(), MAX_BODY, false)
                .await
                .unwrap_or_default();
            (status, content_type, body)
        }
        Ok(Err(e)) => {
            screen.webhook_failed(&crate::net::client::describe(&e));
            (502, String::new(), Bytes::new())
        }
        Err(_) => {
            screen.webhook_failed("no answer within 30 s");
            (504, String::new(), Bytes::new())
        }
    };
    if status < 502 || !answer.is_empty() {
        screen.webhook_answer(status, started.elapsed(), &content_type, &answer);
    }
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.len()
    );
    if !content_type.is_empty() {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&answer);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.shutdown().await;
}

/// Post `id` as the screen shows it: its author's and channel's names, and the post.
pub(super) fn describe_post<'d>(
    dir: &'d Directory,
    id: &str,
) -> Option<(&'d str, &'d str, &'d Post)> {
    let post = dir.posts.iter().find(|p| p.id == id)?;
    let author = dir
        .user(&post.user_id)
        .map_or(post.user_id.as_str(), |u| u.username.as_str());
    let channel = dir
        .channel(&post.channel_id)
        .map_or(post.channel_id.as_str(), |c| c.name.as_str());
    Some((author, channel, post))
}
