//! Proxy: the Pingora `ProxyHttp` that passes every request to Mattermost untouched and
//! watches post creation on the side.
//!
//! Only `POST /api/v4/posts` is observed, and, while some hook lists `edited`, the two `PUT`s
//! that edit a post. The request body is copied (never held back) as it streams, up to a bound;
//! at its end the channel id and first word (for an edit, whose channel the request does not
//! tell, the message alone) decide cheaply whether any hook could match. Only then is the
//! upstream's answer (201 created, 200 edited) copied too, and once the response has been
//! written to the client, [`ProxyHttp::logging`] hands it to the dispatcher without waiting. Every phase fails open: posthook's own problems are logged and counted, never
//! turned into an error for the user.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use log::debug;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};
use serde::Deserialize;

use crate::config::{Config, Event};
use crate::dispatch::{BodyEncoding, DispatchHandle, Job};
use crate::go;
use crate::live::LiveConfig;
use crate::mattermost::model::{edited_post_id, PostRequest, POSTS_PATH};
use crate::stats::Stats;
use crate::upstreams::Nodes;

/// The proxy application: immutable, shared by every request.
pub struct Proxy {
    /// The Mattermost node(s), one peer each.
    peers: Vec<HttpPeer>,
    /// With several nodes: the balancer choosing among the healthy ones.
    nodes: Option<Arc<Nodes>>,
    /// The hooks' index, from the live snapshot (a reload swaps it between requests).
    live: LiveConfig,
    /// Proxied requests in flight (websocket sessions aside), for a shutdown that ends as
    /// soon as they are done.
    in_flight: Arc<AtomicUsize>,
    dispatch: DispatchHandle,
    stats: Arc<Stats>,
    max_inspected: usize,
}

/// Per-request state.
#[derive(Default)]
pub struct Ctx {
    /// Counted in the proxy's in-flight requests.
    counted: bool,
    /// This is `POST /api/v4/posts`, its answer not yet seen: a 201 counts as a created post.
    creating: bool,
    /// This is an edit watched for `edited` hooks, its answer not yet seen: a 200 counts as an
    /// edit examined.
    editing: bool,
    /// This is an edit (its 200 is wanted), not a new post (its 201).
    edit: bool,
    /// The request body is being copied and decided on.
    watching: bool,
    /// Copy of the request body so far (empty once given up).
    request_copy: BytesMut,
    /// The request body decided that some hook could match.
    interested: bool,
    /// The 201's body is being copied.
    capturing: bool,
    encoding: Option<BodyEncoding>,
    response_copy: BytesMut,
    /// The whole 201 body was copied.
    response_complete: bool,
}

impl Ctx {
    fn give_up(&mut self) {
        self.interested = false;
        self.capturing = false;
        self.request_copy = BytesMut::new();
        self.response_copy = BytesMut::new();
    }
}

impl Proxy {
    /// Builds the proxy for `config` on the live, reloadable hooks (see [`crate::live`]),
    /// handing created posts to `dispatch`.
    pub fn new(
        config: &Config,
        live: LiveConfig,
        dispatch: DispatchHandle,
        stats: Arc<Stats>,
        nodes: Option<Arc<Nodes>>,
    ) -> Proxy {
        // One peer per node, built once (building one resolves its host).
        let peers = config
            .upstreams
            .iter()
            .map(|up| {
                let sni = if up.tls {
                    up.host.clone()
                } else {
                    String::new()
                };
                let mut peer = HttpPeer::new((up.host.as_str(), up.port), up.tls, sni);
                peer.options.connection_timeout = Some(config.server.upstream_connect_timeout);
                peer.options.total_connection_timeout =
                    Some(config.server.upstream_connect_timeout);
                peer
            })
            .collect();
        Proxy {
            peers,
            nodes,
            live,
            in_flight: Arc::new(AtomicUsize::new(0)),
            dispatch,
            stats,
            max_inspected: config.limits.max_inspected_body_bytes,
        }
    }

    /// The count of proxied requests in flight (websocket sessions aside).
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Whether `body` (a whole `POST /api/v4/posts` request body) could trigger a hook.
    pub fn request_could_match(&self, body: &[u8]) -> bool {
        read_request(body, |post| {
            self.live
                .load()
                .index
                .could_match(&post.channel_id, &post.message)
        })
    }

    /// Whether `body` (a whole request body of an edit) could trigger an `edited` hook: its
    /// message could, in some channel; or it has none (a patch of other fields keeps the
    /// post's message, which only the 200 shows).
    pub fn edit_could_match(&self, body: &[u8]) -> bool {
        read_request(body, |post| {
            !post.has_message
                || self
                    .live
                    .load()
                    .edits
                    .could_match_in_any_channel(&post.message)
        })
    }

    /// Hands the created post to the dispatcher, never waiting: the whole 201 when it was read,
    /// or the part that was read when the exchange ended early (the client went away while
    /// Pingora was writing the answer, and it stopped reading the upstream): the post exists
    /// in Mattermost all the same, and the dispatcher recovers it from its id.
    fn hand_over(&self, ctx: &mut Ctx) {
        if !ctx.capturing || (!ctx.response_complete && ctx.response_copy.is_empty()) {
            return;
        }
        ctx.capturing = false;
        let body = std::mem::take(&mut ctx.response_copy).freeze();
        self.dispatch.submit(Job {
            event: if ctx.edit {
                Event::Edited
            } else {
                Event::Posted
            },
            body,
            encoding: ctx.encoding.unwrap_or(BodyEncoding::Identity),
            complete: ctx.response_complete,
        });
    }

    /// Appends `chunk` to `copy` unless that passes the bound; false once over it.
    fn copy_bounded(&self, copy: &mut BytesMut, chunk: &[u8]) -> bool {
        if copy.len() + chunk.len() > self.max_inspected {
            return false;
        }
        copy.extend_from_slice(chunk);
        true
    }
}

/// Decides on a request body with `decide`, read as Mattermost reads it.
///
/// Go's decoder replaces invalid UTF-8 and lone surrogate escapes with U+FFFD where serde_json
/// refuses them: invalid UTF-8 is replaced the same way and read again, and a lone surrogate
/// answers "maybe" (the post in the answer then decides). Anything else unreadable is refused
/// by Mattermost too.
fn read_request(body: &[u8], decide: impl Fn(&PostRequest<'_>) -> bool) -> bool {
    let err = match first_value::<PostRequest>(body) {
        Ok(p) => return decide(&p),
        Err(e) => e,
    };
    if std::str::from_utf8(body).is_err() {
        let text = go::lossy_utf8(body);
        if let Ok(p) = first_value::<PostRequest>(text.as_bytes()) {
            return decide(&p);
        }
    }
    let msg = err.to_string();
    msg.contains("surrogate") || msg.contains("hex escape")
}

/// Reads the first JSON value of `body` and ignores what follows, as Go's
/// `json.NewDecoder(body).Decode` (Mattermost's reader of post bodies) does.
fn first_value<'de, T: Deserialize<'de>>(body: &'de [u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    T::deserialize(&mut de)
}

/// `X-Forwarded-For`, as a constant so look-ups skip parsing the name.
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");

/// Appends the client address to `X-Forwarded-For`, as nginx's recommended Mattermost config
/// does (`$proxy_add_x_forwarded_for`), so that Mattermost sees the user's address.
///
/// `X-Forwarded-Proto` passes as the client or a front proxy sent it and is never added:
/// Mattermost only asks whether it says `https` (else it looks at its own TLS), so an added
/// `http` would change bytes and nothing else.
///
/// This runs for every proxied request, so it builds the value in one buffer that becomes the
/// header value without a copy, and formats IPv4 addresses by hand (`Display` for
/// `Ipv4Addr` cost more than everything else here together; see BENCHMARKS.md).
pub fn add_forwarded_headers(req: &mut RequestHeader, client: Option<&PingoraAddr>) -> Result<()> {
    if let Some(ip) = client.and_then(|a| a.as_inet()).map(|a| a.ip()) {
        let mut value = BytesMut::with_capacity(64);
        // Every earlier line of the chain is kept, joined as nginx joins them.
        for prev in req.headers.get_all(&X_FORWARDED_FOR) {
            let prev = prev.as_bytes().trim_ascii();
            if !prev.is_empty() {
                value.extend_from_slice(prev);
                value.extend_from_slice(b", ");
            }
        }
        push_ip(&mut value, ip);
        let value = http::HeaderValue::from_maybe_shared(value.freeze())
            .map_err(|_| Error::explain(ErrorType::InvalidHTTPHeader, "X-Forwarded-For"))?;
        req.insert_header("X-Forwarded-For", value)?;
    }
    Ok(())
}

/// Writes `ip` as `Display` does (IPv6 without brackets).
fn push_ip(out: &mut BytesMut, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b".");
                }
                if octet >= 100 {
                    out.extend_from_slice(&[b'0' + octet / 100]);
                }
                if octet >= 10 {
                    out.extend_from_slice(&[b'0' + octet / 10 % 10]);
                }
                out.extend_from_slice(&[b'0' + octet % 10]);
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            // Writing to a BytesMut cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// The body of the 502 clients get when Mattermost cannot be reached: an AppError, because
/// Mattermost's clients parse error bodies as JSON.
pub fn app_error_body(status: u16, id: &str, message: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "id": id,
            "message": message,
            "detailed_error": "",
            "request_id": "",
            "status_code": status,
            "is_oauth": false,
        })
        .to_string(),
    )
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    /// No downstream modules. Pingora's default adds its response-compression module switched
    /// off, which posthook never switches on (bodies pass as Mattermost wrote them); skipping it
    /// saves its per-request context and filter calls (measured in BENCHMARKS.md).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    /// Adds `X-Forwarded-For` and marks post creation for observation.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Added here rather than in `upstream_request_filter`: Pingora sends upstream a copy of
        // this header, made with exactly as much room as it has headers, so adding one to the
        // copy would grow both of its maps; this one was parsed with room to spare. A failure
        // only loses the header.
        let client = session.client_addr().cloned();
        if let Err(e) = add_forwarded_headers(session.req_header_mut(), client.as_ref()) {
            debug!("could not add X-Forwarded-For: {e}");
        }
        // A websocket lives as long as the user's tab: it must not hold up a shutdown, and it
        // may stay quiet as long as it likes (no read timeout; a write must still progress
        // within the body timeout the edge set).
        if session.is_upgrade_req() {
            session.as_downstream_mut().set_read_timeout(None);
        } else {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            ctx.counted = true;
        }
        let req = session.req_header();
        ctx.creating = req.method == http::Method::POST && req.uri.path() == POSTS_PATH;
        // Edits are looked at only while some hook lists `edited`.
        ctx.editing = req.method == http::Method::PUT
            && edited_post_id(req.uri.path()).is_some()
            && !self.live.load().edits.is_empty();
        ctx.edit = ctx.editing;
        ctx.watching = (ctx.editing || ctx.creating && !self.live.load().index.is_empty())
            // A compressed request body cannot be inspected cheaply; Mattermost does not
            // accept one either.
            && !req.headers.contains_key(http::header::CONTENT_ENCODING);
        if ctx.watching {
            // A client that closes its side right after sending the post must not abort the
            // upstream exchange (Pingora's default): Mattermost creates the post anyway, and
            // its 201 is needed to fire the hooks.
            session.as_downstream_mut().set_abort_on_close(false);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let i = self.nodes.as_ref().map_or(0, |n| n.pick());
        Ok(Box::new(self.peers[i.min(self.peers.len() - 1)].clone()))
    }

    /// Copies the post-creation body as it streams; the chunk itself is never touched.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if !ctx.watching {
            return Ok(());
        }
        if let Some(chunk) = body.as_ref() {
            if !self.copy_bounded(&mut ctx.request_copy, chunk) {
                Stats::inc(&self.stats.bodies_too_large);
                ctx.watching = false;
                ctx.give_up();
                return Ok(());
            }
        }
        if end_of_stream {
            ctx.watching = false;
            ctx.interested = if ctx.edit {
                self.edit_could_match(&ctx.request_copy)
            } else {
                self.request_could_match(&ctx.request_copy)
            };
            ctx.request_copy = BytesMut::new();
        }
        Ok(())
    }

    /// Starts copying the upstream's answer when a post was created (201) or edited (200) and
    /// might trigger a hook.
    ///
    /// The upstream side is watched (not the copy sent to the client), so that a post created
    /// for a client that has gone away still fires its hooks, as in Mattermost.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // An interim answer (100 Continue before the 201) is not the outcome yet.
        if resp.status.is_informational() {
            return Ok(());
        }
        let status = resp.status.as_u16();
        // Every post created through posthook counts, whether or not a hook could match it;
        // so does every edit examined.
        if std::mem::take(&mut ctx.creating) && status == 201 {
            Stats::inc(&self.stats.posts_observed);
        }
        if std::mem::take(&mut ctx.editing) && status == 200 {
            Stats::inc(&self.stats.edits_observed);
        }
        if !ctx.interested {
            return Ok(());
        }
        if status != if ctx.edit { 200 } else { 201 } {
            ctx.give_up();
            return Ok(());
        }
        let encoding = match resp
            .headers
            .get(http::header::CONTENT_ENCODING)
            .map(|v| v.as_bytes().trim_ascii().to_ascii_lowercase())
            .as_deref()
        {
            None | Some(b"identity") | Some(b"") => Some(BodyEncoding::Identity),
            Some(b"gzip") | Some(b"x-gzip") => Some(BodyEncoding::Gzip),
            Some(b"deflate") => Some(BodyEncoding::Deflate),
            Some(_) => None,
        };
        match encoding {
            Some(e) => {
                ctx.encoding = Some(e);
                ctx.capturing = true;
            }
            None => {
                Stats::inc(&self.stats.posts_unparsed);
                ctx.give_up();
            }
        }
        Ok(())
    }

    /// Copies the upstream's 201 (200 for an edit) body; the bytes sent on to the client are never touched.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if !ctx.capturing {
            return Ok(None);
        }
        if let Some(chunk) = body.as_ref() {
            if !self.copy_bounded(&mut ctx.response_copy, chunk) {
                Stats::inc(&self.stats.bodies_too_large);
                ctx.give_up();
                return Ok(None);
            }
        }
        if end_of_stream {
            ctx.response_complete = true;
        }
        Ok(None)
    }

    /// The exchange is over: if Mattermost created the post (its whole 201 was read), hand it
    /// to the dispatcher, never waiting. A client that went away meanwhile does not matter: the
    /// post exists, and Mattermost fires its hooks too.
    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        // The job is queued before the request stops counting as in flight, so that a
        // shutdown waiting for both never sees a gap between them.
        self.hand_over(ctx);
        if std::mem::take(&mut ctx.counted) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
    /// Upstream failures become an AppError-shaped JSON error, as Mattermost's clients expect.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, _ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 {
            let (id, message) = match code {
                502 => (
                    "posthook.upstream.unreachable.app_error",
                    "The Mattermost server could not be reached.",
                ),
                400 => (
                    "posthook.request.bad.app_error",
                    "The request could not be read.",
                ),
                _ => (
                    "posthook.proxy.error.app_error",
                    "The proxy could not complete the request.",
                ),
            };
            let body = app_error_body(code, id, message);
            if let Err(werr) = write_json_error(session, code, body).await {
                debug!("could not send the error response: {werr}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

async fn write_json_error(session: &mut Session, code: u16, body: Bytes) -> Result<()> {
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    session
        .as_downstream_mut()
        .write_error_response(resp, body)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut ips: Vec<IpAddr> = Vec::new();
        for a in [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 255] {
            for b in [0u8, 7, 10, 100, 255] {
                ips.push(IpAddr::V4(Ipv4Addr::new(a, b, 255 - a, b / 2)));
            }
        }
        ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        ips.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        ips.push(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()));
        for ip in ips {
            let mut out = BytesMut::new();
            push_ip(&mut out, ip);
            assert_eq!(&out[..], ip.to_string().as_bytes(), "{ip}");
        }
    }
}
