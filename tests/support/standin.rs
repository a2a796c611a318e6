//! The Mattermost stand-in: the parts of the REST API posthook relies on (`POST /api/v4/posts`
//! with Mattermost's validation, the two `PUT`s that edit a post, channel/team/user look-ups,
//! the client config, the websocket),
//! answered the way Mattermost 10.11 answers them, with fixtures, failure knobs and a record of
//! every request. See the example in the module docs of `support`.
//!
//! Mattermost's data and rules (post creation and edits, look-ups, JSON shapes, AppErrors) are
//! the library's `posthook::demo::{model, routes}`, which `posthook demo` serves too; this file
//! adds what only tests need: failure knobs, compression, the websocket, the request record.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::header::HeaderMap;
use http::{Method, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use posthook::demo::model::{create_post, edit_post, AppErr, Directory, Post};
use posthook::demo::routes::{
    cookie_value, is_api_route, parse_auth_token, to_json, Reply, TokenLocation,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::server::{
    describe_requests, read_body, response, spawn_server, Handler, RecordedRequest, RequestMeta,
    Resp, ServerTask,
};
use super::{
    gzip_bytes, lock, query_param, zlib_bytes, MAX_POST_SIZE, RECORD_BODY_LIMIT, VERSION_ID,
};

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
    /// Teams, channels, users, tokens and posts, with Mattermost's rules (shared with
    /// `posthook demo`'s embedded API: `posthook::demo`).
    dir: Directory,
    requests: Vec<RecordedRequest>,
    gzip: bool,
    deflate: bool,
    post_failure: Option<(u16, &'static str)>,
    post_delay: Duration,
    /// Channels whose look-up is refused with 403, as Mattermost refuses a private, direct or
    /// group channel to a session that is not a member (and not a System Admin).
    unreadable: Vec<String>,
    config: BTreeMap<String, String>,
    /// The status `GET /api/v4/system/ping` answers (200: healthy).
    ping_status: u16,
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

#[allow(dead_code)]
fn post_value(p: &Post) -> Value {
    serde_json::to_value(p).unwrap_or_else(|e| panic!("serialize post: {e}"))
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
            dir: Directory {
                max_post_size: MAX_POST_SIZE,
                ..Directory::default()
            },
            requests: Vec::new(),
            gzip: false,
            deflate: false,
            post_failure: None,
            post_delay: Duration::ZERO,
            unreadable: Vec::new(),
            config: default_client_config(),
            ping_status: 200,
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
        lock(&self.state).dir.add_team(id, name);
    }

    /// Adds a channel; `channel_type` is "O", "P", "D" or "G".
    pub fn add_channel(&self, id: &str, team_id: &str, name: &str, channel_type: &str) {
        lock(&self.state)
            .dir
            .add_channel(id, team_id, name, channel_type);
    }

    /// What `GET /api/v4/system/ping` answers: 200 (healthy, the default) or e.g. 503.
    pub fn set_ping_status(&self, status: u16) {
        lock(&self.state).ping_status = status;
    }

    /// Renames channel `id` (its URL name), as an admin does in the System Console.
    pub fn rename_channel(&self, id: &str, name: &str) {
        if let Some(c) = lock(&self.state)
            .dir
            .channels
            .iter_mut()
            .find(|c| c.id == id)
        {
            c.name = name.to_string();
        }
    }

    /// Refuses look-ups of channel `id` with 403 from now on, as Mattermost does for a private,
    /// direct or group channel the bot is not a member of.
    pub fn refuse_channel_lookups(&self, id: &str) {
        lock(&self.state).unreadable.push(id.to_string());
    }

    pub fn add_user(&self, id: &str, username: &str, is_bot: bool) {
        lock(&self.state).dir.add_user(id, username, is_bot);
    }

    /// Registers a session/bot token for `user_id` (usable as `Authorization: Bearer <token>`,
    /// `Authorization: Token <token>`, cookie `MMAUTHTOKEN=<token>` or `?access_token=`).
    /// A bot user's token counts as an integration session (hardened mode).
    pub fn add_token(&self, token: &str, user_id: &str) {
        lock(&self.state).dir.add_token(token, user_id);
    }

    /// Seeds an existing post (not counted by [`posts`](Self::posts)); returns it as JSON.
    /// Useful as a thread root or as a reply that a trigger post replies to.
    pub fn add_post(&self, channel_id: &str, user_id: &str, message: &str, root_id: &str) -> Value {
        let post = lock(&self.state)
            .dir
            .add_post(channel_id, user_id, message, root_id);
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
        st.dir.hardened = on;
        st.config
            .insert("ExperimentalEnableHardenedMode".to_string(), on.to_string());
    }

    /// Sets a client-config value, e.g. `set_config("EnablePostUsernameOverride", "true")`.
    pub fn set_config(&self, key: &str, value: &str) {
        let mut st = lock(&self.state);
        if key == "MaxPostSize" {
            st.dir.max_post_size = value.parse().unwrap_or(MAX_POST_SIZE);
        }
        st.config.insert(key.to_string(), value.to_string());
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
            .dir
            .posts
            .iter()
            .filter(|p| p.via_api)
            .map(post_value)
            .collect()
    }

    /// Any stored post (created or seeded) by id.
    pub fn post(&self, id: &str) -> Option<Value> {
        lock(&self.state)
            .dir
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
    let request_id = posthook::demo::model::new_id();
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

    let needs_full_body = method == Method::POST
        && (path == "/api/v4/posts"
            || path == "/api/v4/users/ids"
            || path == "/api/v4/channels/direct")
        || method == Method::PUT && path.starts_with("/api/v4/posts/");
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
    let api_route = is_api_route(&method, &segments)
        || (method == Method::GET && segments == ["api", "v4", "config", "client"]);
    if method == Method::GET && segments == ["api", "v4", "system", "ping"] {
        let status = lock(&state).ping_status;
        let health = if status == 200 { "OK" } else { "UNHEALTHY" };
        let reply = json!({ "ActiveSearchBackend": "database", "status": health });
        return mm_response(Reply::Json(status, to_json(&reply)), &request_id, &[]);
    }
    if !api_route {
        let reply = json!({ "method": method.as_str(), "path": path, "received_bytes": body_len });
        return mm_response(Reply::Json(200, to_json(&reply)), &request_id, &[]);
    }

    if method == Method::POST && path == "/api/v4/posts" {
        let failure = lock(&state).post_failure;
        if let Some((status, id)) = failure {
            let err = AppErr::new(status, id, app_error_message(id));
            return mm_response(Reply::Error(err), &request_id, &[]);
        }
    }

    // Authentication (and CSRF for cookie sessions on non-GET requests).
    let token = parse_auth_token(&headers, &query);
    let user = {
        let st = lock(&state);
        token
            .as_ref()
            .and_then(|(t, _)| st.dir.user_of_token(t))
            .cloned()
    };
    let Some(user) = user else {
        if config_route(&segments) {
            return client_config(&state, &query, false, &request_id);
        }
        return mm_response(Reply::Error(AppErr::session_expired()), &request_id, &[]);
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
            return mm_response(Reply::Error(err), &request_id, &[]);
        }
    }

    match (&method, segments.as_slice()) {
        (&Method::POST, ["api", "v4", "posts"]) => {
            let (result, delay, encoding) = {
                let mut st = lock(&state);
                let result = create_post(&mut st.dir, &user, &body).map(|(post, _new)| post);
                (result, st.post_delay, post_encoding(&st, &headers))
            };
            if result.is_ok() && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            post_response(result, 201, encoding, &request_id)
        }
        (&Method::PUT, ["api", "v4", "posts", id, rest @ ..]) => {
            let (result, encoding) = {
                let mut st = lock(&state);
                let result = edit_post(&mut st.dir, &user, id, &body, rest == ["patch"]);
                (result, post_encoding(&st, &headers))
            };
            post_response(result, 200, encoding, &request_id)
        }
        (&Method::GET, ["api", "v4", "channels", id])
            if lock(&state).unreadable.iter().any(|c| c == id) =>
        {
            mm_response(Reply::Error(AppErr::permissions()), &request_id, &[])
        }
        _ => {
            let reply = lock(&state).dir.answer(&method, &segments, &user, &body);
            match reply {
                Some(reply) => mm_response(reply, &request_id, &[]),
                None => client_config(&state, &query, true, &request_id),
            }
        }
    }
}

/// How a post answer is encoded: gzip or deflate when switched on and accepted.
#[allow(dead_code)]
fn post_encoding(st: &MmState, headers: &HeaderMap) -> Option<&'static str> {
    if st.gzip && accepts_encoding(headers, "gzip") {
        Some("gzip")
    } else if st.deflate && accepts_encoding(headers, "deflate") {
        Some("deflate")
    } else {
        None
    }
}

/// The answer to a post's creation (`status` 201) or edit (200), encoded per `encoding`.
#[allow(dead_code)]
fn post_response(
    result: Result<Post, AppErr>,
    status: u16,
    encoding: Option<&'static str>,
    request_id: &str,
) -> Resp {
    let post = match result {
        Ok(post) => post,
        Err(err) => return mm_response(Reply::Error(err), request_id, &[]),
    };
    let json = to_json(&post);
    match encoding {
        Some(enc) => {
            let bytes = if enc == "gzip" {
                gzip_bytes(&json)
            } else {
                zlib_bytes(&json)
            };
            mm_response(
                Reply::Json(status, bytes),
                request_id,
                &[
                    ("Content-Encoding", enc.to_string()),
                    ("Vary", "Accept-Encoding".to_string()),
                ],
            )
        }
        None => mm_response(Reply::Json(status, json), request_id, &[]),
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
        return mm_response(Reply::Error(err), request_id, &[]);
    }
    let st = lock(state);
    let config: BTreeMap<&String, &String> = st
        .config
        .iter()
        .filter(|(k, _)| logged_in || LIMITED_CONFIG_KEYS.contains(&k.as_str()))
        .collect();
    mm_response(Reply::Json(200, to_json(&config)), request_id, &[])
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
fn mm_response(reply: Reply, request_id: &str, extra: &[(&str, String)]) -> Resp {
    let (status, body) = reply.into_parts(request_id);
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
        return mm_response(Reply::Error(err), request_id, &[]);
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
