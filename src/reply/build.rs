//! Building the reply: the part of Mattermost's `TriggerWebhook`, `CreateWebhookPost` and
//! `splitWebhookPost` that turns a decoded answer into the `POST /api/v4/posts` bodies posthook
//! sends, split and propped exactly as Mattermost would create them (spec §3.3–3.5). Pure;
//! user names come from a map the caller resolved with
//! [`WebhookResponse::referenced_user_ids`].

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::decode::WebhookResponse;
use super::slack::{
    self, apply_text_links, parse_slack_attachments, process_attachments, process_slack_text,
    ATTACHMENT_STRING_KEYS,
};
use crate::config::Settings;

/// `PostPropsMaxUserRunes`: the most runes the JSON of one reply part's props may take.
pub const PROPS_MAX_USER_RUNES: usize = 800_000 - 40_000;

/// Username shown when the username override is on but neither the response nor the hook
/// names one (`model.DefaultWebhookUsername`).
pub const DEFAULT_WEBHOOK_USERNAME: &str = "webhook";

/// Props a response may not set itself: Mattermost discards them and sets its own.
const RESERVED_PROPS: [&str; 3] = ["override_icon_url", "override_username", "from_webhook"];

/// Why a decoded response cannot become a reply; Mattermost logs these and posts nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// `priority` was sent without `priority.priority`.
    #[error("webhook response sets `priority` without `priority.priority`")]
    MissingPriority,
    /// The response asked for a `system_*` post type.
    #[error("webhook response asks for post type {0:?}, which is reserved for system messages")]
    SystemPostType(String),
    /// The post type is one Mattermost's `Post.IsValid` rejects with 400.
    #[error("webhook response asks for post type {0:?}; Mattermost accepts only \"\", a built-in type or custom_*")]
    InvalidPostType(String),
    /// The reply's props (without attachments) are too large to post at all.
    #[error("reply props take {runes} runes of JSON, over Mattermost's limit of {limit}")]
    PropsTooLarge {
        /// Runes of the props JSON.
        runes: usize,
        /// [`PROPS_MAX_USER_RUNES`].
        limit: usize,
    },
    /// An attachment cannot fit a reply part even with its `text` emptied.
    #[error("attachment {index} needs {excess} runes trimmed to fit the props limit but its text has only {text_runes}")]
    AttachmentTooLarge {
        /// Position among the attachments left after dropping `null`s.
        index: usize,
        /// Runes over [`PROPS_MAX_USER_RUNES`].
        excess: usize,
        /// Runes of the attachment's `text`.
        text_runes: usize,
    },
    /// A zero maximum post size would never let a message part end.
    #[error("max_post_size must be at least 1 rune")]
    ZeroMaxPostSize,
}

/// Mattermost settings that shape the reply (§3.4), as read from the client config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplySettings {
    /// `EnablePostUsernameOverride`.
    pub enable_post_username_override: bool,
    /// `EnablePostIconOverride`.
    pub enable_post_icon_override: bool,
    /// `MaxPostSize`, in runes (Unicode scalar values); must be at least 1.
    pub max_post_size: usize,
}

impl From<&Settings> for ReplySettings {
    /// The reply settings among Mattermost's `ServiceSettings` in the config.
    fn from(s: &Settings) -> ReplySettings {
        ReplySettings {
            enable_post_username_override: s.enable_post_username_override,
            enable_post_icon_override: s.enable_post_icon_override,
            max_post_size: s.max_post_size,
        }
    }
}

/// The parts of the matched hook that the reply uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookInfo<'a> {
    /// Copied into `props.webhook_display_name`, even when empty.
    pub display_name: &'a str,
    /// Fallback override username.
    pub username: &'a str,
    /// Fallback override icon URL.
    pub icon_url: &'a str,
}

/// The post that triggered the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerPost<'a> {
    /// Its id: the thread root of a `comment` reply to a root post.
    pub id: &'a str,
    /// Its thread root, `""` for a root post.
    pub root_id: &'a str,
    /// The channel the reply goes to.
    pub channel_id: &'a str,
}

/// Builds the `POST /api/v4/posts` bodies of the reply to `resp`, in posting order, following
/// `TriggerWebhook` and `CreateWebhookPost` (§3.3) and `splitWebhookPost` (§3.5).
///
/// Each body is `{channel_id, message, root_id?, type?, props, metadata?: {priority}}`:
/// `root_id` and `type` only when non-empty, `metadata` only when the response set `priority`.
/// `users` maps the ids of [`WebhookResponse::referenced_user_ids`] to usernames; missing ids
/// stay as `<@ID>`.
///
/// posthook's one deliberate difference: a `"comment"` reply to a post that is itself in a
/// thread goes under that thread's root (Mattermost would fail).
///
/// Returns no posts when the response does not ask for a reply (§3.2), and an error wherever
/// Mattermost would post nothing: `priority` without `priority.priority`, a `system_*` or
/// otherwise invalid type, props too large, or an attachment that cannot be trimmed to fit.
pub fn build_reply_posts(
    resp: &WebhookResponse,
    hook: &HookInfo<'_>,
    trigger: &TriggerPost<'_>,
    settings: &ReplySettings,
    users: &HashMap<String, String>,
) -> Result<Vec<Value>, ReplyError> {
    if !resp.wants_reply() {
        return Ok(Vec::new());
    }
    if settings.max_post_size == 0 {
        return Err(ReplyError::ZeroMaxPostSize);
    }

    let root_id = if resp.response_type == "comment" {
        if trigger.root_id.is_empty() {
            trigger.id
        } else {
            trigger.root_id
        }
    } else {
        ""
    };
    let message = apply_text_links(&process_slack_text(
        resp.text.as_deref().unwrap_or(""),
        users,
    ));
    let attachments = process_attachments(resp.attachments.as_deref().unwrap_or(&[]), users);

    // Same order of checks as CreateWebhookPost, so the same error wins.
    if resp.priority.as_ref().is_some_and(|p| p.priority.is_none()) {
        return Err(ReplyError::MissingPriority);
    }
    if resp.r#type.starts_with("system_") {
        return Err(ReplyError::SystemPostType(resp.r#type.clone()));
    }

    let mut props: Map<String, Value> = resp
        .props
        .iter()
        // A raw `props.attachments` is dropped: Mattermost copies only the typed list it builds.
        .filter(|(k, _)| k.as_str() != "attachments" && !RESERVED_PROPS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    props.insert("webhook_display_name".into(), hook.display_name.into());
    props.insert("from_webhook".into(), "true".into());
    if settings.enable_post_username_override {
        let username = [resp.username.as_str(), hook.username]
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or(DEFAULT_WEBHOOK_USERNAME);
        props.insert("override_username".into(), username.into());
    }
    if settings.enable_post_icon_override {
        if let Some(icon) = [resp.icon_url.as_str(), hook.icon_url]
            .into_iter()
            .find(|u| !u.is_empty())
        {
            props.insert("override_icon_url".into(), icon.into());
        }
    }

    // An empty processed list (`[null]`) sets neither the type nor `props.attachments`:
    // TriggerWebhook only hands non-empty lists on to ParseSlackAttachment.
    let (post_type, attachments) = if attachments.is_empty() {
        (resp.r#type.clone(), attachments)
    } else {
        parse_slack_attachments(&resp.r#type, attachments)
    };

    let parts = split_reply(&message, &props, attachments, settings.max_post_size)?;

    // Post.IsValid runs when each part is created; one bad type loses them all.
    if !mattermost_accepts_post_type(&post_type) {
        return Err(ReplyError::InvalidPostType(post_type));
    }

    let metadata = resp.priority.as_ref().map(|p| {
        json!({"priority": {
            "priority": p.priority,
            "requested_ack": p.requested_ack,
            "persistent_notifications": p.persistent_notifications,
        }})
    });
    Ok(parts
        .into_iter()
        .map(|part| {
            let mut part_props = props.clone();
            if !part.attachments.is_empty() {
                let list = part.attachments.into_iter().map(Value::Object).collect();
                part_props.insert("attachments".into(), Value::Array(list));
            }
            let mut post = Map::new();
            post.insert("channel_id".into(), trigger.channel_id.into());
            post.insert("message".into(), part.message.into());
            if !root_id.is_empty() {
                post.insert("root_id".into(), root_id.into());
            }
            if !post_type.is_empty() {
                post.insert("type".into(), post_type.as_str().into());
            }
            post.insert("props".into(), Value::Object(part_props));
            if let Some(metadata) = &metadata {
                post.insert("metadata".into(), metadata.clone());
            }
            Value::Object(post)
        })
        .collect())
}

/// Post types `Post.IsValid` accepts that a webhook may ask for (`system_*` is refused
/// earlier): the default, the non-system built-ins of current Mattermost, and `custom_*`.
fn mattermost_accepts_post_type(post_type: &str) -> bool {
    matches!(
        post_type,
        "" | "slack_attachment" | "me" | "reminder" | "add_bot_teams_channels" | "burn_on_read"
    ) || post_type.starts_with("custom_")
}

/// One post of a split reply.
#[derive(Debug, Default)]
struct Part {
    message: String,
    attachments: Vec<Map<String, Value>>,
    /// Runes each attachment adds to the props JSON, as Go counts it.
    attachment_runes: Vec<usize>,
}

/// `splitWebhookPost`: cuts the message every `max_runes` runes, then appends attachments to
/// the last part while its props JSON stays within [`PROPS_MAX_USER_RUNES`], opening a new
/// empty part when a part with attachments is full, and trimming the `text` of an attachment
/// that does not fit an empty part.
fn split_reply(
    message: &str,
    base_props: &Map<String, Value>,
    attachments: Vec<Map<String, Value>>,
    max_runes: usize,
) -> Result<Vec<Part>, ReplyError> {
    let base_runes = go_json_runes(&Value::Object(base_props.clone()));
    if base_runes > PROPS_MAX_USER_RUNES {
        return Err(ReplyError::PropsTooLarge {
            runes: base_runes,
            limit: PROPS_MAX_USER_RUNES,
        });
    }

    let mut parts = Vec::new();
    let mut rest = message;
    while let Some((cut, _)) = rest.char_indices().nth(max_runes) {
        parts.push(Part {
            message: rest[..cut].to_owned(),
            ..Part::default()
        });
        rest = &rest[cut..];
    }
    parts.push(Part {
        message: rest.to_owned(),
        ..Part::default()
    });

    for (index, mut attachment) in attachments.into_iter().enumerate() {
        let runes = go_attachment_runes(&attachment);
        // `parts` always holds at least the last message part.
        while let Some(last) = parts.last_mut() {
            let total = props_runes_with(base_runes, &last.attachment_runes, runes);
            if total <= PROPS_MAX_USER_RUNES {
                last.attachments.push(attachment);
                last.attachment_runes.push(runes);
                break;
            }
            if !last.attachments.is_empty() {
                parts.push(Part::default());
                continue;
            }
            // Go compares the JSON excess with the text's rune count, not its JSON length.
            let excess = total - PROPS_MAX_USER_RUNES;
            let text = attachment.get("text").and_then(Value::as_str).unwrap_or("");
            let text_runes = text.chars().count();
            if text_runes < excess {
                return Err(ReplyError::AttachmentTooLarge {
                    index,
                    excess,
                    text_runes,
                });
            }
            let keep: String = text.chars().take(text_runes - excess).collect();
            attachment.insert("text".into(), keep.into());
            let trimmed = go_attachment_runes(&attachment);
            last.attachments.push(attachment);
            last.attachment_runes.push(trimmed);
            break;
        }
    }
    Ok(parts)
}

/// Runes of `{…base…,"attachments":[a1,…,an,extra]}` given the runes of `{…base…}` (never
/// empty: `from_webhook` is always there) and of each attachment.
fn props_runes_with(base_runes: usize, attachment_runes: &[usize], extra: usize) -> usize {
    let count = attachment_runes.len() + 1;
    let list: usize = attachment_runes.iter().sum::<usize>() + extra + (count - 1) + 2;
    base_runes + 1 + r#""attachments":"#.len() + list
}

/// Runes of Go's `json.Marshal` of the attachment as Mattermost holds it: the typed
/// `MessageAttachment`, whose every member is printed (empty ones as `""`, `0` or `null`,
/// `actions` only when non-empty), whose unknown keys are gone, and whose fields are
/// `{title, value, short}`. Counting this shape, rather than the JSON posthook sends, keeps
/// split points where Mattermost puts them.
pub(super) fn go_attachment_runes(attachment: &Map<String, Value>) -> usize {
    let mut members: Vec<(&str, usize)> = Vec::with_capacity(17);
    let id = attachment.get("id").and_then(Value::as_i64).unwrap_or(0);
    members.push(("id", id.to_string().len()));
    for key in ATTACHMENT_STRING_KEYS {
        let s = attachment.get(key).and_then(Value::as_str).unwrap_or("");
        members.push((key, go_json_string_runes(s)));
    }
    let fields = match attachment.get("fields") {
        Some(Value::Array(fields)) => {
            let each: usize = fields
                .iter()
                .map(|f| {
                    let title = f.get("title").and_then(Value::as_str).unwrap_or("");
                    let value = f.get("value").map_or(4, go_json_runes);
                    let short = f.get("short").and_then(Value::as_bool).unwrap_or(false);
                    object_runes(&[
                        ("title", go_json_string_runes(title)),
                        ("value", value),
                        ("short", if short { 4 } else { 5 }),
                    ])
                })
                .sum();
            2 + each + fields.len().saturating_sub(1)
        }
        _ => 4,
    };
    members.push(("fields", fields));
    members.push(("ts", attachment.get("ts").map_or(4, go_json_runes)));
    if let Some(actions @ Value::Array(list)) = attachment.get("actions") {
        if !list.is_empty() {
            // Approximation: the raw actions, not Go's typed PostAction shape.
            members.push(("actions", go_json_runes(actions)));
        }
    }
    object_runes(&members)
}

/// Runes of a JSON object with these ASCII keys and value rune counts.
fn object_runes(members: &[(&str, usize)]) -> usize {
    let body: usize = members.iter().map(|(k, v)| k.len() + 3 + v).sum();
    2 + body + members.len().saturating_sub(1)
}

/// Runes of `value` as Go's `json.Marshal` prints it: no spaces, HTML-safe escaping, numbers
/// as `float64` (key order does not change the count).
pub(super) fn go_json_runes(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => go_json_float(slack::number_as_f64(n)).len(),
        Value::String(s) => go_json_string_runes(s),
        Value::Array(items) => {
            2 + items.iter().map(go_json_runes).sum::<usize>() + items.len().saturating_sub(1)
        }
        Value::Object(map) => {
            let body: usize = map
                .iter()
                .map(|(k, v)| go_json_string_runes(k) + 1 + go_json_runes(v))
                .sum();
            2 + body + map.len().saturating_sub(1)
        }
    }
}

/// Runes of a JSON string as Go escapes it: `\"` `\\` `\n` `\r` `\t` `\b` `\f` take two,
/// other control characters, `<`, `>`, `&`, U+2028 and U+2029 take six (`\u003c`).
fn go_json_string_runes(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => 6,
            c if c < ' ' => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Go's `encoding/json` text of a `float64`: shortest digits, plain notation for
/// 1e-6 ≤ |f| < 1e21, otherwise exponent form with `e-7` rather than `e-07`.
pub(super) fn go_json_float(f: f64) -> String {
    if !f.is_finite() {
        // Go refuses to marshal these; JSON input cannot produce them anyway.
        return "null".to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    let (digits, exp) = slack::shortest_digits(f);
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        return format!("{sign}{}", slack::fixed_form(&digits, exp));
    }
    let mut text = slack::exponent_form(&digits, exp);
    if exp > -10 && exp < 0 {
        // Go rewrites a two-digit negative exponent `e-07` as `e-7`.
        if let Some(pos) = text.rfind("e-0") {
            text.replace_range(pos + 2..pos + 3, "");
        }
    }
    format!("{sign}{text}")
}
