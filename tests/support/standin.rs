//! The Mattermost stand-in: the parts of the REST API posthook relies on (`POST /api/v4/posts`
//! with Mattermost's validation, the two `PUT`s that edit a post, channel/team/user look-ups,
//! the client config, the websocket),
//! answered the way Mattermost 10.11 answers them, with fixtures, failure knobs and a record of
//! every request. See the example in the module docs of `support`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::header::HeaderMap;
use http::{Method, Request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
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
    gzip_bytes, lock, now_ms, query_param, random_id, zlib_bytes, MAX_POST_SIZE, RECORD_BODY_LIMIT,
    VERSION_ID,
};

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
    /// Channels whose look-up is refused with 403, as Mattermost refuses a private, direct or
    /// group channel to a session that is not a member (and not a System Admin).
    unreadable: Vec<String>,
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

/// The 403 Mattermost gives for an edit it refuses: an unknown post (its look-up failing is
/// turned into a permission error), or another user's post without `edit_others_posts`.
#[allow(dead_code)]
fn edit_refused() -> AppErr {
    AppErr::new(
        403,
        "api.context.permissions.app_error",
        "You do not have the appropriate permissions.",
    )
}

/// `PUT /api/v4/posts/{id}` (`patch: false`: the whole post; omitted fields are blank, but
/// omitted `file_ids` stay) or `PUT /api/v4/posts/{id}/patch` (`patch: true`: only the given
/// fields change), as Mattermost's UpdatePost and PatchPost do (mattermost-api.md "Edits"):
/// `edit_at` moves only when the message (or the file ids) change, `update_at` always; the id,
/// `create_at` and `root_id` stay.
#[allow(dead_code)]
fn edit_post(
    st: &mut MmState,
    user: &User,
    id: &str,
    body: &[u8],
    patch: bool,
) -> Result<Post, AppErr> {
    let what = if patch { "patch" } else { "post" };
    let value = serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| AppErr::invalid_body(what))?;
    let obj = value
        .as_object()
        .ok_or_else(|| AppErr::invalid_body(what))?;
    let text = |key: &str| -> Result<Option<String>, AppErr> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AppErr::invalid_body(what)),
        }
    };
    if !patch && text("id")?.as_deref() != Some(id) {
        return Err(AppErr::new(
            400,
            "api.context.invalid_param.app_error",
            "Invalid id parameter.",
        ));
    }
    let message = text("message")?;
    let file_ids: Option<Vec<String>> = match obj.get("file_ids") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| AppErr::invalid_body(what))?,
        ),
        Some(_) => return Err(AppErr::invalid_body(what)),
    };
    let props = match obj.get("props") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(Value::Object(m.clone())),
        Some(_) => return Err(AppErr::invalid_body(what)),
    };
    let is_pinned = match obj.get("is_pinned") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(AppErr::invalid_body(what)),
    };
    let max = st.max_post_size();
    let post = st
        .posts
        .iter_mut()
        .find(|p| p.id == id && p.delete_at == 0)
        .ok_or_else(edit_refused)?;
    if post.user_id != user.id {
        return Err(edit_refused());
    }
    if post.post_type.starts_with("system_") {
        return Err(AppErr::new(
            400,
            "api.post.update_post.system_message.app_error",
            "Unable to update system message.",
        ));
    }
    // UpdatePost: what the body omits is blank (file ids excepted); PatchPost: it stays.
    let message = if patch {
        message.unwrap_or_else(|| post.message.clone())
    } else {
        message.unwrap_or_default()
    };
    if message.chars().count() > max {
        return Err(AppErr::new(
            400,
            "model.post.is_valid.message_length.app_error",
            "Invalid Message property length.",
        ));
    }
    let file_ids = file_ids.unwrap_or_else(|| post.file_ids.clone());
    let now = now_ms();
    if message != post.message || file_ids != post.file_ids {
        // Strictly later than the previous edit, so that two edits in one millisecond stay two.
        post.edit_at = now.max(post.edit_at + 1);
    }
    post.hashtags = parse_hashtags(&message);
    post.message = message;
    post.file_ids = file_ids;
    match (patch, props) {
        (_, Some(p)) => post.props = p,
        (false, None) => post.props = json!({}),
        (true, None) => {}
    }
    match (patch, is_pinned) {
        (_, Some(b)) => post.is_pinned = b,
        (false, None) => post.is_pinned = false,
        (true, None) => {}
    }
    post.update_at = now.max(post.edit_at);
    Ok(post.clone())
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

/// A look-up's answer: 200 with the object's JSON, or the 404 AppError (`id`, `message`)
/// Mattermost gives when it does not exist.
#[allow(dead_code)]
fn found(json: Option<Vec<u8>>, id: &'static str, message: &str) -> MmReply {
    match json {
        Some(json) => MmReply::Json(200, json),
        None => MmReply::Error(AppErr::new(404, id, message)),
    }
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
            unreadable: Vec::new(),
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

    /// Refuses look-ups of channel `id` with 403 from now on, as Mattermost does for a private,
    /// direct or group channel the bot is not a member of.
    pub fn refuse_channel_lookups(&self, id: &str) {
        lock(&self.state).unreadable.push(id.to_string());
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
    let api_route = matches!(
        (&method, segments.as_slice()),
        (&Method::POST, ["api", "v4", "posts"])
            | (
                &Method::GET,
                ["api", "v4", "channels" | "teams" | "users" | "posts", _]
            )
            | (&Method::POST, ["api", "v4", "users", "ids"])
            | (&Method::GET, ["api", "v4", "config", "client"])
            | (&Method::PUT, ["api", "v4", "posts", _])
            | (&Method::PUT, ["api", "v4", "posts", _, "patch"])
            | (&Method::GET, ["api", "v4", "users", "username", _])
            | (&Method::POST, ["api", "v4", "channels", "direct"])
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
                let result = create_post(&mut st, &user, &body).map(|(post, _new)| post);
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
                let result = edit_post(&mut st, &user, id, &body, rest == ["patch"]);
                (result, post_encoding(&st, &headers))
            };
            post_response(result, 200, encoding, &request_id)
        }
        (&Method::GET, ["api", "v4", "channels", id])
            if lock(&state).unreadable.iter().any(|c| c == id) =>
        {
            let err = AppErr::new(
                403,
                "api.context.permissions.app_error",
                "You do not have the appropriate permissions.",
            );
            mm_response(MmReply::Error(err), &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "channels", id]) => {
            let st = lock(&state);
            let reply = found(
                st.channel(id).map(channel_json),
                "app.channel.get.existing.app_error",
                "Unable to find the existing channel.",
            );
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "posts", id]) => {
            let st = lock(&state);
            let reply = found(
                st.posts.iter().find(|p| p.id == *id).map(to_json),
                "app.post.get.app_error",
                "Unable to get the post.",
            );
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "teams", id]) => {
            let st = lock(&state);
            let reply = found(
                st.team(id).map(team_json),
                "app.team.get.find.app_error",
                "Unable to find the existing team.",
            );
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "users", id]) => {
            let st = lock(&state);
            let wanted = if *id == "me" { user.id.as_str() } else { id };
            let reply = found(
                st.user(wanted)
                    .map(|u| to_json(&user_value(u, u.id == user.id))),
                "app.user.missing_account.const",
                "Unable to find the user.",
            );
            mm_response(reply, &request_id, &[])
        }
        (&Method::GET, ["api", "v4", "users", "username", name]) => {
            let st = lock(&state);
            let reply = found(
                st.users
                    .iter()
                    .find(|u| u.username == *name)
                    .map(|u| to_json(&user_value(u, u.id == user.id))),
                "app.user.get_by_username.app_error",
                "Unable to find an existing account matching your username for this team. This team may require an invite from the team owner to join.",
            );
            mm_response(reply, &request_id, &[])
        }
        (&Method::POST, ["api", "v4", "channels", "direct"]) => {
            // Mattermost's createDirectChannel: two user ids; the channel is made once, named
            // by the sorted ids joined with "__", with no team.
            let ids: Option<Vec<String>> = serde_json::from_slice(&body).ok();
            let mut st = lock(&state);
            let reply = match ids {
                Some(ids) if ids.len() == 2 && ids.iter().all(|id| st.user(id).is_some()) => {
                    let mut sorted = ids.clone();
                    sorted.sort();
                    let name = sorted.join("__");
                    let existing = st.channels.iter().find(|c| c.name == name).cloned();
                    let channel = match existing {
                        Some(c) => c,
                        None => {
                            let c = Channel {
                                id: random_id(),
                                team_id: String::new(),
                                name,
                                channel_type: "D".into(),
                                create_at: now_ms(),
                                last_post_at: 0,
                                last_root_post_at: 0,
                                total_msg_count: 0,
                                total_msg_count_root: 0,
                            };
                            st.channels.push(c.clone());
                            c
                        }
                    };
                    MmReply::Json(201, channel_json(&channel))
                }
                _ => MmReply::Error(AppErr::invalid_body("user_ids")),
            };
            drop(st);
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
        Err(err) => return mm_response(MmReply::Error(err), request_id, &[]),
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
                MmReply::Json(status, bytes),
                request_id,
                &[
                    ("Content-Encoding", enc.to_string()),
                    ("Vary", "Accept-Encoding".to_string()),
                ],
            )
        }
        None => mm_response(MmReply::Json(status, json), request_id, &[]),
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
