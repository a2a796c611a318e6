//! The embedded Mattermost API's data and rules: teams, channels, users, tokens and posts in
//! memory, and post creation and editing as Mattermost 10.11 validates and answers them
//! (`createPost`, `UpdatePost`, `PatchPost`, reduced to what a client or a proxy observes; see
//! `../shared/spec/mattermost-api.md`). `posthook demo` serves it; the tests' stand-in
//! (`tests/support/standin.rs`) serves the same, with failure knobs and a record of requests.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

/// Mattermost's default `MaxPostSize` (runes), the longest message the API accepts.
pub const MAX_POST_SIZE: usize = 16383;

pub use super::ids::{new_id, now_ms};

#[derive(Clone, Debug)]
pub struct Team {
    pub id: String,
    /// The URL handle, also shown as the display name.
    pub name: String,
    pub create_at: i64,
}

#[derive(Clone, Debug)]
pub struct Channel {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// `O` public, `P` private, `D` direct message, `G` group message.
    pub channel_type: String,
    pub create_at: i64,
    pub last_post_at: i64,
    pub last_root_post_at: i64,
    pub total_msg_count: i64,
    pub total_msg_count_root: i64,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub username: String,
    pub is_bot: bool,
    pub create_at: i64,
}

/// A post in the real server's field order (`model.Post`).
#[derive(Clone, Debug, Serialize)]
pub struct Post {
    pub id: String,
    pub create_at: i64,
    pub update_at: i64,
    pub edit_at: i64,
    pub delete_at: i64,
    pub is_pinned: bool,
    pub user_id: String,
    pub channel_id: String,
    pub root_id: String,
    pub original_id: String,
    pub message: String,
    #[serde(rename = "type")]
    pub post_type: String,
    pub props: Value,
    pub hashtags: String,
    pub file_ids: Vec<String>,
    pub pending_post_id: String,
    pub reply_count: i64,
    pub last_reply_at: i64,
    pub participants: Option<Vec<Value>>,
    pub metadata: Value,
    /// Created through `POST /api/v4/posts` (not seeded).
    #[serde(skip)]
    pub via_api: bool,
}

impl Post {
    /// A new post of `user_id` in `channel_id` (in the thread of `root_id`, `""` for none),
    /// created now, with every other field as Mattermost fills it for a plain message.
    pub fn new(user_id: &str, channel_id: &str, root_id: &str, message: &str) -> Post {
        let now = now_ms();
        Post {
            id: new_id(),
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
            props: json!({}),
            hashtags: parse_hashtags(message),
            file_ids: Vec::new(),
            pending_post_id: String::new(),
            reply_count: 0,
            last_reply_at: 0,
            participants: None,
            metadata: json!({}),
            via_api: false,
        }
    }
}

/// Mattermost's `AppError`: the status and the error's id, message and detail.
#[derive(Clone, Debug)]
pub struct AppErr {
    pub status: u16,
    pub id: &'static str,
    pub message: String,
    pub detailed: String,
}

impl AppErr {
    pub fn new(status: u16, id: &'static str, message: &str) -> AppErr {
        AppErr {
            status,
            id,
            message: message.to_string(),
            detailed: String::new(),
        }
    }

    pub fn detailed(mut self, detailed: &str) -> AppErr {
        self.detailed = detailed.to_string();
        self
    }

    pub fn session_expired() -> AppErr {
        AppErr::new(
            401,
            "api.context.session_expired.app_error",
            "Invalid or expired session, please login again.",
        )
    }

    pub fn invalid_body(name: &str) -> AppErr {
        AppErr::new(
            400,
            "api.context.invalid_body_param.app_error",
            &format!("Invalid or missing {name} in request body."),
        )
    }

    /// What Mattermost answers a session without the permission (an unknown channel or post
    /// included: its look-up failing is turned into a permission error).
    pub fn permissions() -> AppErr {
        AppErr::new(
            403,
            "api.context.permissions.app_error",
            "You do not have the appropriate permissions.",
        )
    }
}

/// Everything the embedded server knows, in memory.
#[derive(Debug, Default)]
pub struct Directory {
    pub teams: Vec<Team>,
    pub channels: Vec<Channel>,
    pub users: Vec<User>,
    /// Session and bot tokens → user id.
    pub tokens: HashMap<String, String>,
    pub posts: Vec<Post>,
    /// (user id, `pending_post_id`) → the post it created.
    pub pending: HashMap<(String, String), String>,
    /// `MaxPostSize`; 0 means Mattermost's default.
    pub max_post_size: usize,
    /// `ExperimentalEnableHardenedMode`: integration-reserved props refused from non-bots.
    pub hardened: bool,
}

impl Directory {
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id)
    }

    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    pub fn max_post_size(&self) -> usize {
        if self.max_post_size == 0 {
            MAX_POST_SIZE
        } else {
            self.max_post_size
        }
    }

    /// The user a session or bot token belongs to.
    pub fn user_of_token(&self, token: &str) -> Option<&User> {
        self.tokens.get(token).and_then(|id| self.user(id))
    }

    /// Adds a team (`name` is the URL handle, also used as display name).
    pub fn add_team(&mut self, id: &str, name: &str) {
        self.teams.push(Team {
            id: id.to_string(),
            name: name.to_string(),
            create_at: now_ms(),
        });
    }

    /// Adds a channel; `channel_type` is "O", "P", "D" or "G".
    pub fn add_channel(&mut self, id: &str, team_id: &str, name: &str, channel_type: &str) {
        self.channels.push(Channel {
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

    pub fn add_user(&mut self, id: &str, username: &str, is_bot: bool) {
        self.users.push(User {
            id: id.to_string(),
            username: username.to_string(),
            is_bot,
            create_at: now_ms(),
        });
    }

    /// Registers a token for `user_id`.
    pub fn add_token(&mut self, token: &str, user_id: &str) {
        self.tokens.insert(token.to_string(), user_id.to_string());
    }

    /// Seeds an existing post (not created through the API).
    pub fn add_post(
        &mut self,
        channel_id: &str,
        user_id: &str,
        message: &str,
        root_id: &str,
    ) -> Post {
        let mut props = serde_json::Map::new();
        if self.user(user_id).is_some_and(|u| u.is_bot) {
            props.insert("from_bot".to_string(), Value::String("true".to_string()));
        }
        let mut post = Post::new(user_id, channel_id, root_id, message);
        post.props = Value::Object(props);
        self.store_post(post)
    }

    /// Stores a new post and updates the thread root and channel counters.
    pub fn store_post(&mut self, mut post: Post) -> Post {
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

pub fn parse_hashtags(message: &str) -> String {
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
fn post_type_allowed(t: &str) -> bool {
    matches!(t, "" | "slack_attachment" | "me" | "reminder") || t.starts_with("custom_")
}

/// Props reserved for integrations in hardened mode.
const RESERVED_PROPS: &[&str] = &[
    "from_webhook",
    "override_username",
    "webhook_display_name",
    "override_icon_url",
    "override_icon_emoji",
];

/// `createPost` + `CreatePostAsUser` + `CreatePost`, reduced to what a proxy can observe.
/// Returns the post and whether it is new (false: de-duplicated by `pending_post_id`).
pub fn create_post(st: &mut Directory, user: &User, body: &[u8]) -> Result<(Post, bool), AppErr> {
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
    let channel = st
        .channel(&channel_id)
        .cloned()
        .ok_or_else(AppErr::permissions)?;
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
    let metadata = match priority {
        Some(p) => json!({ "priority": p }),
        None => json!({}),
    };
    let post = Post {
        post_type,
        props: Value::Object(props),
        file_ids,
        pending_post_id: pending_post_id.clone(),
        metadata,
        via_api: true,
        ..Post::new(&user.id, &channel.id, &root_id, &message)
    };
    let post = st.store_post(post);
    if !pending_post_id.is_empty() {
        st.pending
            .insert((user.id.clone(), pending_post_id), post.id.clone());
    }
    Ok((post, true))
}

/// `PUT /api/v4/posts/{id}` (`patch: false`: the whole post; omitted fields are blank, but
/// omitted `file_ids` stay) or `PUT /api/v4/posts/{id}/patch` (`patch: true`: only the given
/// fields change), as Mattermost's UpdatePost and PatchPost do (mattermost-api.md "Edits"):
/// `edit_at` moves only when the message (or the file ids) change, `update_at` always; the id,
/// `create_at` and `root_id` stay.
pub fn edit_post(
    st: &mut Directory,
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
        .ok_or_else(AppErr::permissions)?;
    if post.user_id != user.id {
        return Err(AppErr::permissions());
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
