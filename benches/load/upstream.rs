//! What stands around posthook, on the "bench-upstream" runtime: a cheap Mattermost (creates
//! posts and answers channel, team and user look-ups with Mattermost's field sets and headers),
//! the webhook sink (answers like a typical integration) and the black hole (a dead endpoint
//! that accepts and never answers). They live in this process so that the times they record
//! come from the load generator's clock, which is what makes delivery latencies comparable.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::clock::{now_ns, unix_ms};
use crate::fixtures::{BOT_ID, BOT_TOKEN, MATCH_PREFIX, TEAM_ID, USER_ID, VERSION_ID};
use crate::http::{find, read_msg, Msg};

/// What the webhook sink answers: a typical integration's reply. `comment` makes the reply
/// carry the triggering post's id as `root_id`, which is how the reply is matched to it.
const SINK_ANSWER: &str = r#"{"text":"ok","response_type":"comment"}"#;

/// Shared state of the upstream, the sink and the black hole; also the record of arrival
/// times that the delivery and reply latencies are computed from.
#[derive(Default)]
pub struct Upstream {
    seq: AtomicU64,
    responses: AtomicU64,
    posts: AtomicU64,
    replies_n: AtomicU64,
    pub lookups: AtomicU64,
    other: AtomicU64,
    pub bad: AtomicU64,
    /// Matching client posts: (post seq, 201 written at).
    pub created: Mutex<Vec<(u64, u64)>>,
    /// Replies posted by posthook: (seq of the post replied to, received at).
    pub replies: Mutex<Vec<(u64, u64)>>,
    /// Webhook requests: (post seq, received at, answered at).
    pub sink: Mutex<Vec<(u64, u64, u64)>>,
    pub sink_unreadable: AtomicU64,
    pub blackhole_conns: AtomicU64,
    /// Connections accepted by the upstream (a proxy that reuses its connections opens few).
    pub accepted: AtomicU64,
    /// Connections accepted by the sink.
    pub sink_accepted: AtomicU64,
}

/// The parts of a create-post request the stand-in reflects into the created post.
#[derive(serde::Deserialize)]
struct NewPost<'a> {
    #[serde(borrow, default)]
    channel_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    message: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    root_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    pending_post_id: std::borrow::Cow<'a, str>,
}

fn post_id(seq: u64) -> String {
    format!("bench{seq:021}")
}

fn parse_seq(id: &str) -> Option<u64> {
    id.strip_prefix("bench")?.parse().ok()
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A created post with Mattermost's full field set.
fn write_post(out: &mut Vec<u8>, seq: u64, user_id: &str, p: &NewPost, now_ms: i64) {
    let _ = write!(
        out,
        "{{\"id\":\"{}\",\"create_at\":{now_ms},\"update_at\":{now_ms},\"edit_at\":0,\"delete_at\":0,\"is_pinned\":false,\"user_id\":\"{user_id}\",\"channel_id\":",
        post_id(seq)
    );
    json_str(out, &p.channel_id);
    out.extend_from_slice(b",\"root_id\":");
    json_str(out, &p.root_id);
    out.extend_from_slice(b",\"original_id\":\"\",\"message\":");
    json_str(out, &p.message);
    out.extend_from_slice(
        b",\"type\":\"\",\"props\":{\"disable_group_highlight\":true},\"hashtags\":",
    );
    let tags: Vec<&str> = p
        .message
        .split_whitespace()
        .filter(|w| w.len() > 1 && w.starts_with('#'))
        .collect();
    json_str(out, &tags.join(" "));
    out.extend_from_slice(b",\"file_ids\":[],\"pending_post_id\":");
    json_str(out, &p.pending_post_id);
    out.extend_from_slice(
        b",\"reply_count\":0,\"last_reply_at\":0,\"participants\":null,\"metadata\":{}}",
    );
}

/// A channel, team or user as Mattermost answers a look-up by id (`users/me` is the bot);
/// `false`, with nothing written, when `path` is no such look-up.
fn write_lookup(out: &mut Vec<u8>, path: &str) -> bool {
    let _ = if let Some(id) = path.strip_prefix("/api/v4/channels/") {
        write!(
            out,
            "{{\"id\":\"{id}\",\"create_at\":1700000000000,\"update_at\":1700000000000,\"delete_at\":0,\"team_id\":\"{TEAM_ID}\",\"type\":\"O\",\"display_name\":\"Town Square\",\"name\":\"town-square\",\"header\":\"\",\"purpose\":\"\",\"last_post_at\":1700000000000,\"total_msg_count\":0,\"extra_update_at\":0,\"creator_id\":\"\",\"scheme_id\":null,\"props\":null,\"group_constrained\":null,\"shared\":null,\"total_msg_count_root\":0,\"policy_id\":null,\"last_root_post_at\":1700000000000}}"
        )
    } else if let Some(id) = path.strip_prefix("/api/v4/teams/") {
        write!(
            out,
            "{{\"id\":\"{id}\",\"create_at\":1700000000000,\"update_at\":1700000000000,\"delete_at\":0,\"display_name\":\"Bench\",\"name\":\"bench\",\"description\":\"\",\"email\":\"\",\"type\":\"O\",\"company_name\":\"\",\"allowed_domains\":\"\",\"invite_id\":\"\",\"allow_open_invite\":true,\"scheme_id\":null,\"group_constrained\":null,\"policy_id\":null,\"cloud_limits_archived\":false}}"
        )
    } else if let Some(id) = path.strip_prefix("/api/v4/users/") {
        let (id, name) = match id {
            "me" => (BOT_ID, "hookbot"),
            id => (id, "alice"),
        };
        write!(
            out,
            "{{\"id\":\"{id}\",\"create_at\":1700000000000,\"update_at\":1700000000000,\"delete_at\":0,\"username\":\"{name}\",\"auth_data\":\"\",\"auth_service\":\"\",\"email\":\"{name}@example.com\",\"nickname\":\"\",\"first_name\":\"\",\"last_name\":\"\",\"position\":\"\",\"roles\":\"system_user\",\"locale\":\"en\",\"timezone\":{{\"automaticTimezone\":\"\",\"manualTimezone\":\"\",\"useAutomaticTimezone\":\"true\"}},\"disable_welcome_email\":false}}"
        )
    } else {
        return false;
    };
    true
}

fn response_head(out: &mut Vec<u8>, status: &str, body_len: usize, request_no: u64) {
    // Mattermost's own headers, minus Date (which costs a clock read and formatting).
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nVary: Accept-Encoding\r\nX-Request-Id: rq{request_no:024}\r\nX-Version-Id: {VERSION_ID}\r\nContent-Length: {body_len}\r\n\r\n"
    );
}

impl Upstream {
    /// Counts a look-up made by posthook (with the bot's token; clients' GETs are not).
    fn count_lookup(&self, msg: &Msg) {
        if find(&msg.head, BOT_TOKEN.as_bytes(), 0).is_some() {
            self.lookups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes the answer to `msg` into `out`; returns the seq of a matching post whose 201
    /// time must be recorded once written.
    fn respond(
        &self,
        msg: &Msg,
        received: u64,
        out: &mut Vec<u8>,
        body: &mut Vec<u8>,
    ) -> Option<u64> {
        let n = self.responses.fetch_add(1, Ordering::Relaxed);
        let (method, target) = msg.request_line();
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(q) => (&target[..q], &target[q + 1..]),
            None => (target, &b""[..]),
        };
        let path = std::str::from_utf8(path).unwrap_or("");
        let mut record = None;
        let status = match (method, path) {
            (b"POST", "/api/v4/posts") => match serde_json::from_slice::<NewPost>(&msg.body) {
                Ok(p) if !p.channel_id.is_empty() => {
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed);
                    let reply = find(query, b"set_online=false", 0).is_some();
                    let user = if reply { BOT_ID } else { USER_ID };
                    write_post(body, seq, user, &p, unix_ms());
                    if reply {
                        self.replies_n.fetch_add(1, Ordering::Relaxed);
                        if let Some(root) = parse_seq(&p.root_id) {
                            self.replies.lock().unwrap().push((root, received));
                        }
                    } else {
                        self.posts.fetch_add(1, Ordering::Relaxed);
                        if p.message.starts_with(MATCH_PREFIX) {
                            record = Some(seq);
                        }
                    }
                    "201 Created"
                }
                _ => {
                    self.bad.fetch_add(1, Ordering::Relaxed);
                    body.extend_from_slice(br#"{"id":"api.context.invalid_body_param.app_error","message":"Invalid or missing post in request body.","detailed_error":"","request_id":"","status_code":400}"#);
                    "400 Bad Request"
                }
            },
            (b"GET", p) => {
                if write_lookup(body, p) {
                    self.count_lookup(msg);
                    "200 OK"
                } else {
                    self.answer_other(body)
                }
            }
            _ => self.answer_other(body),
        };
        response_head(out, status, body.len(), n);
        out.extend_from_slice(body);
        record
    }

    /// Requests the stand-in does not model still get JSON: the load generator checks for it.
    fn answer_other(&self, body: &mut Vec<u8>) -> &'static str {
        self.other.fetch_add(1, Ordering::Relaxed);
        body.extend_from_slice(br#"{"status":"OK"}"#);
        "200 OK"
    }
}

pub async fn serve(listener: TcpListener, st: Arc<Upstream>, kind: Serve) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        match kind {
            Serve::Upstream => st.accepted.fetch_add(1, Ordering::Relaxed),
            Serve::Sink => st.sink_accepted.fetch_add(1, Ordering::Relaxed),
            Serve::BlackHole => 0,
        };
        let st = st.clone();
        tokio::spawn(async move {
            match kind {
                Serve::Upstream => upstream_conn(s, st).await,
                Serve::Sink => sink_conn(s, st).await,
                Serve::BlackHole => black_hole_conn(s, st).await,
            }
        });
    }
}

#[derive(Clone, Copy)]
pub enum Serve {
    Upstream,
    Sink,
    BlackHole,
}

async fn upstream_conn(mut s: TcpStream, st: Arc<Upstream>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(4096);
    let mut body = Vec::with_capacity(2048);
    while let Ok(Some(msg)) = read_msg(&mut s, &mut buf, false).await {
        let received = now_ns();
        out.clear();
        body.clear();
        let record = st.respond(&msg, received, &mut out, &mut body);
        if s.write_all(&out).await.is_err() {
            return;
        }
        if let Some(seq) = record {
            st.created.lock().unwrap().push((seq, now_ns()));
        }
        if msg.close {
            return;
        }
    }
}

/// The `post_id` of a webhook payload, form or JSON.
fn payload_post_id(body: &[u8]) -> Option<&str> {
    let raw = if body.first() == Some(&b'{') {
        let start = find(body, b"\"post_id\":\"", 0)? + 11;
        let len = body[start..].iter().position(|&b| b == b'"')?;
        &body[start..start + len]
    } else {
        body.split(|&b| b == b'&')
            .find_map(|kv| kv.strip_prefix(b"post_id="))?
    };
    std::str::from_utf8(raw).ok()
}

async fn sink_conn(mut s: TcpStream, st: Arc<Upstream>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(512);
    let mut n = 0u64;
    while let Ok(Some(msg)) = read_msg(&mut s, &mut buf, false).await {
        let received = now_ns();
        let seq = payload_post_id(&msg.body).and_then(parse_seq);
        out.clear();
        response_head(&mut out, "200 OK", SINK_ANSWER.len(), n);
        out.extend_from_slice(SINK_ANSWER.as_bytes());
        n += 1;
        if s.write_all(&out).await.is_err() {
            return;
        }
        let answered = now_ns();
        match seq {
            Some(seq) => st.sink.lock().unwrap().push((seq, received, answered)),
            None => {
                st.sink_unreadable.fetch_add(1, Ordering::Relaxed);
            }
        }
        if msg.close {
            return;
        }
    }
}

/// A dead webhook endpoint: accepts, reads and never answers.
async fn black_hole_conn(mut s: TcpStream, st: Arc<Upstream>) {
    st.blackhole_conns.fetch_add(1, Ordering::Relaxed);
    let mut b = vec![0u8; 16 * 1024];
    while let Ok(n) = s.read(&mut b).await {
        if n == 0 {
            break;
        }
    }
    st.blackhole_conns.fetch_sub(1, Ordering::Relaxed);
}
