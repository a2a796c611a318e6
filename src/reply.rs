//! Webhook response decoding and reply building: the part of Mattermost's `TriggerWebhook`,
//! `CreateWebhookPost` and `splitWebhookPost` that runs after the callback answered (spec §3).
//! [`decode_response`] reads a response body the way Go's `json.Decoder` does, and
//! [`build_reply_posts`] turns it into the JSON bodies posthook sends to
//! `POST /api/v4/posts`, split and propped exactly as Mattermost would create them. Both are
//! pure; user names come from a map the caller resolved with
//! [`WebhookResponse::referenced_user_ids`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{json, Map, Value};

use crate::slack::{
    self, apply_text_links, go_key_matches, parse_slack_attachments, process_attachments,
    process_slack_text, Attachments, ATTACHMENT_STRING_KEYS,
};

/// Mattermost reads at most this many bytes of a webhook response
/// (`MaxIntegrationResponseSize`); a JSON value that does not end within them is an error.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// `PostPropsMaxUserRunes`: the most runes the JSON of one reply part's props may take.
pub const PROPS_MAX_USER_RUNES: usize = 800_000 - 40_000;

/// Username shown when the username override is on but neither the response nor the hook
/// names one (`model.DefaultWebhookUsername`).
pub const DEFAULT_WEBHOOK_USERNAME: &str = "webhook";

/// Props a response may not set itself: Mattermost discards them and sets its own.
const RESERVED_PROPS: [&str; 3] = ["override_icon_url", "override_username", "from_webhook"];

/// A decoded outgoing-webhook response (`model.OutgoingWebhookResponse`), before any Slack
/// translation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WebhookResponse {
    /// Reply message. `None` when the key was absent or `null`; `Some("")` still posts.
    pub text: Option<String>,
    /// Override username, used only when the username override setting is on.
    pub username: String,
    /// Override icon URL, used only when the icon override setting is on.
    pub icon_url: String,
    /// Extra post props as sent (`null` reads as empty).
    pub props: Map<String, Value>,
    /// Top-level `attachments` as decoded by Go's rules (known keys canonical and
    /// type-checked, `short` normalised to a bool), not yet translated; may hold `null`s.
    pub attachments: Option<Vec<Value>>,
    /// Post type requested by the response.
    pub r#type: String,
    /// `"comment"` (exactly) asks for a threaded reply.
    pub response_type: String,
    /// Post priority, kept as sent; building fails if `priority.priority` is missing.
    pub priority: Option<Priority>,
}

/// The response's `priority` object (`model.PostPriority`); each member is `None` when absent
/// or `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Priority {
    /// `""`, `"important"` or `"urgent"`; required by Mattermost whenever `priority` is sent.
    pub priority: Option<String>,
    /// Whether readers are asked to acknowledge the post.
    pub requested_ack: Option<bool>,
    /// Whether mentioned users get persistent notifications.
    pub persistent_notifications: Option<bool>,
}

impl WebhookResponse {
    /// Mattermost's "no reply" rule (§3.2): a post is made iff `text` is present (even empty)
    /// or the top-level `attachments` list is non-empty (even if it holds only `null`s).
    pub fn wants_reply(&self) -> bool {
        self.text.is_some() || self.attachments.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// Every user id the reply will resolve (see [`slack::referenced_user_ids`]); look them up
    /// in one batch and pass the id → username map to [`build_reply_posts`].
    pub fn referenced_user_ids(&self) -> Vec<String> {
        slack::referenced_user_ids(
            self.text.as_deref(),
            self.attachments.as_deref().unwrap_or(&[]),
        )
    }
}

/// Why a webhook response body could not be decoded; Mattermost logs these as
/// `api.unmarshal_error` and posts nothing.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body's first JSON value did not end within [`MAX_RESPONSE_BYTES`].
    #[error("webhook response JSON does not end within the first {limit} bytes")]
    TooLarge {
        /// The byte limit that was applied.
        limit: usize,
    },
    /// Invalid JSON, a top-level value that is not an object, or a field of the wrong type.
    #[error("webhook response is not a valid reply object: {0}")]
    Json(#[from] serde_json::Error),
}

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

/// Decodes a webhook response body like Mattermost's
/// `json.NewDecoder(io.LimitReader(body, 1 MiB)).Decode(&resp)` followed by the "no reply"
/// rule.
///
/// Only the first [`MAX_RESPONSE_BYTES`] bytes are read (pass at most one byte more so an
/// overlong value can be told from a broken one) and only the first JSON value: trailing bytes,
/// a second object included, are ignored. HTTP status and content type play no part.
///
/// - Empty or whitespace-only body, top-level `null`, or a response with neither `text` nor a
///   non-empty `attachments` → `Ok(None)`.
/// - Invalid JSON, a value cut by the limit, a top-level value other than an object, or any
///   known key with a wrong type (including an attachment field's `short`) → `Err`.
///
/// Keys match case-insensitively with Go's folding; the last of duplicate keys wins, except
/// that repeated `props` and `priority` objects merge as Go's decoder merges them. Invalid UTF-8
/// and lone surrogate escapes in strings become U+FFFD, as in Go.
pub fn decode_response(body: &[u8]) -> Result<Option<WebhookResponse>, DecodeError> {
    let window = &body[..body.len().min(MAX_RESPONSE_BYTES)];
    let first = window
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(&window[window.len()..], |i| &window[i..]);
    // Go decodes a top-level `null` into the response struct as a no-op and stops reading right
    // after the literal, so whatever follows it does not matter.
    if first.starts_with(b"null") {
        return Ok(None);
    }
    let text = go_coerce_strings(first);
    let mut values = serde_json::Deserializer::from_slice(&text).into_iter::<RawResponse>();
    match values.next() {
        None => Ok(None),
        Some(Ok(raw)) => Ok(Some(raw.into_response()).filter(WebhookResponse::wants_reply)),
        Some(Err(e)) if e.is_eof() && body.len() > MAX_RESPONSE_BYTES => {
            Err(DecodeError::TooLarge {
                limit: MAX_RESPONSE_BYTES,
            })
        }
        Some(Err(e)) => Err(DecodeError::Json(e)),
    }
}

/// Rewrites what Go's decoder silently repairs but serde_json rejects: bytes that are not
/// UTF-8 inside strings (one U+FFFD per byte, like `utf8.DecodeRune`) and `\u` escapes of
/// surrogates that do not form a pair (U+FFFD). Text outside strings is left for the parser to
/// judge. Borrows when there is nothing to repair.
fn go_coerce_strings(input: &[u8]) -> Cow<'_, [u8]> {
    const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let mut take = 1;
        let mut replacement: Option<&[u8]> = None;
        if !in_string {
            in_string = b == b'"';
        } else if b == b'"' {
            in_string = false;
        } else if b == b'\\' {
            take = 2;
            if let Some(unit) = hex_escape(input, i) {
                take = 6;
                if (0xD800..0xDC00).contains(&unit)
                    && hex_escape(input, i + 6).is_some_and(|low| (0xDC00..0xE000).contains(&low))
                {
                    take = 12;
                } else if (0xD800..0xE000).contains(&unit) {
                    replacement = Some(br"\ufffd");
                }
            }
        } else if b >= 0x80 {
            let len = match b {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => 0,
            };
            match input.get(i..i + len) {
                Some(seq) if len > 0 && std::str::from_utf8(seq).is_ok() => take = len,
                _ => replacement = Some(REPLACEMENT),
            }
        }
        let end = (i + take).min(input.len());
        match (replacement, out.as_mut()) {
            (Some(r), Some(buf)) => buf.extend_from_slice(r),
            (Some(r), None) => {
                let mut buf = input[..i].to_vec();
                buf.extend_from_slice(r);
                out = Some(buf);
            }
            (None, Some(buf)) => buf.extend_from_slice(&input[i..end]),
            (None, None) => {}
        }
        i = end;
    }
    out.map_or(Cow::Borrowed(input), Cow::Owned)
}

/// The UTF-16 unit of a `\uXXXX` escape starting at `at`, if there is one.
fn hex_escape(input: &[u8], at: usize) -> Option<u32> {
    let esc = input.get(at..at + 6)?;
    if esc[0] != b'\\' || esc[1] != b'u' {
        return None;
    }
    let hex = std::str::from_utf8(&esc[2..]).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// The response as Go's decoder leaves the struct, before the "no reply" rule.
#[derive(Default)]
struct RawResponse {
    text: Option<String>,
    username: String,
    icon_url: String,
    props: Option<Map<String, Value>>,
    attachments: Option<Vec<Value>>,
    r#type: String,
    response_type: String,
    priority: Option<Priority>,
}

impl RawResponse {
    fn into_response(self) -> WebhookResponse {
        WebhookResponse {
            text: self.text,
            username: self.username,
            icon_url: self.icon_url,
            props: self.props.unwrap_or_default(),
            attachments: self.attachments,
            r#type: self.r#type,
            response_type: self.response_type,
            priority: self.priority,
        }
    }
}

impl<'de> Deserialize<'de> for RawResponse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ResponseVisitor)
    }
}

struct ResponseVisitor;

impl<'de> Visitor<'de> for ResponseVisitor {
    type Value = RawResponse;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an outgoing webhook response object")
    }

    // Keys are handled in document order so that, as in Go, a later key overwrites an earlier
    // one even when the two differ in letter case.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawResponse, A::Error> {
        let mut r = RawResponse::default();
        while let Some(key) = map.next_key::<String>()? {
            let set_string = |slot: &mut String, v: Option<String>| {
                // `null` leaves a Go string untouched.
                if let Some(v) = v {
                    *slot = v;
                }
            };
            if go_key_matches(&key, "text") {
                // A `null` sets Go's `*string` back to nil.
                r.text = map.next_value()?;
            } else if go_key_matches(&key, "username") {
                set_string(&mut r.username, map.next_value()?);
            } else if go_key_matches(&key, "icon_url") {
                set_string(&mut r.icon_url, map.next_value()?);
            } else if go_key_matches(&key, "type") {
                set_string(&mut r.r#type, map.next_value()?);
            } else if go_key_matches(&key, "response_type") {
                set_string(&mut r.response_type, map.next_value()?);
            } else if go_key_matches(&key, "props") {
                // Go decodes a repeated object into the existing map, keeping earlier keys;
                // `null` resets it.
                match (
                    map.next_value::<Option<Map<String, Value>>>()?,
                    r.props.as_mut(),
                ) {
                    (Some(more), Some(props)) => props.extend(more),
                    (next, _) => r.props = next,
                }
            } else if go_key_matches(&key, "attachments") {
                r.attachments = map.next_value::<Attachments>()?.0;
            } else if go_key_matches(&key, "priority") {
                // Like `props`, a repeated object updates the existing struct.
                match map.next_value::<Option<PriorityPatch>>()? {
                    Some(patch) => patch.apply(r.priority.get_or_insert_with(Priority::default)),
                    None => r.priority = None,
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(r)
    }
}

/// One `priority` object: each member is absent (`None`), `null` (`Some(None)`) or set.
#[derive(Default)]
struct PriorityPatch {
    priority: Option<Option<String>>,
    requested_ack: Option<Option<bool>>,
    persistent_notifications: Option<Option<bool>>,
}

impl PriorityPatch {
    fn apply(self, to: &mut Priority) {
        if let Some(v) = self.priority {
            to.priority = v;
        }
        if let Some(v) = self.requested_ack {
            to.requested_ack = v;
        }
        if let Some(v) = self.persistent_notifications {
            to.persistent_notifications = v;
        }
    }
}

impl<'de> Deserialize<'de> for PriorityPatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(PriorityVisitor)
    }
}

struct PriorityVisitor;

impl<'de> Visitor<'de> for PriorityVisitor {
    type Value = PriorityPatch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a post priority object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PriorityPatch, A::Error> {
        let mut p = PriorityPatch::default();
        while let Some(key) = map.next_key::<String>()? {
            if go_key_matches(&key, "priority") {
                p.priority = Some(map.next_value()?);
            } else if go_key_matches(&key, "requested_ack") {
                p.requested_ack = Some(map.next_value()?);
            } else if go_key_matches(&key, "persistent_notifications") {
                p.persistent_notifications = Some(map.next_value()?);
            } else if go_key_matches(&key, "postid") || go_key_matches(&key, "channelid") {
                // Internal Go fields (untagged names); the server fills them itself, but a
                // wrong type still fails Go's decode.
                map.next_value::<Option<String>>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(p)
    }
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
fn go_attachment_runes(attachment: &Map<String, Value>) -> usize {
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
fn go_json_runes(value: &Value) -> usize {
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
fn go_json_float(f: f64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOOK: HookInfo<'static> = HookInfo {
        display_name: "Hook",
        username: "some-user-name",
        icon_url: "http://some-icon/",
    };
    const ROOT_TRIGGER: TriggerPost<'static> = TriggerPost {
        id: "triggerpostid",
        root_id: "",
        channel_id: "channelid",
    };
    const SETTINGS: ReplySettings = ReplySettings {
        enable_post_username_override: false,
        enable_post_icon_override: false,
        max_post_size: 16383,
    };

    fn decode(body: &str) -> WebhookResponse {
        match decode_response(body.as_bytes()) {
            Ok(Some(resp)) => resp,
            other => panic!("{body:?} should decode to a reply, got {other:?}"),
        }
    }

    fn build(resp: &WebhookResponse, settings: &ReplySettings) -> Vec<Value> {
        match build_reply_posts(resp, &HOOK, &ROOT_TRIGGER, settings, &HashMap::new()) {
            Ok(posts) => posts,
            Err(e) => panic!("building {resp:?} failed: {e}"),
        }
    }

    fn only_post(body: &str) -> Value {
        let posts = build(&decode(body), &SETTINGS);
        assert_eq!(posts.len(), 1, "{body} should make one post");
        posts.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn decoding_follows_go_json_decoder() {
        // T7 decoding rows plus §3.1/§3.2 cases. `None` = no reply, `Err` = error.
        let endless_string = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_RESPONSE_BYTES + 10));
        let endless_a = "a".repeat(MAX_RESPONSE_BYTES + 10);
        let late_garbage = format!(r#"{{"text":"ok"}}{}"#, " x".repeat(MAX_RESPONSE_BYTES));
        // (why, body, expected text or no reply, or an error)
        type Row<'a> = (&'a str, &'a str, Result<Option<&'a str>, ()>);
        let rows: Vec<Row<'_>> = vec![
            (
                "T7 valid text",
                r#"{"text": "Hello, World!"}"#,
                Ok(Some("Hello, World!")),
            ),
            ("T7 not JSON", "aaaaaaaa", Err(())),
            ("T7 endless string past 1 MiB", &endless_string, Err(())),
            ("T7 endless a", &endless_a, Err(())),
            ("T7 empty body", "", Ok(None)),
            ("whitespace only", " \r\n\t ", Ok(None)),
            ("empty object", "{}", Ok(None)),
            ("top-level null", "null", Ok(None)),
            ("top-level null with trailing bytes", "nullx", Ok(None)),
            ("text null", r#"{"text":null}"#, Ok(None)),
            ("empty attachments", r#"{"attachments":[]}"#, Ok(None)),
            ("empty text still replies", r#"{"text":""}"#, Ok(Some(""))),
            (
                "keys are case-insensitive",
                r#"{"TEXT":"x","Response_Type":"comment"}"#,
                Ok(Some("x")),
            ),
            (
                "first value only",
                r#"{"text":"a"}{"text":"b"}"#,
                Ok(Some("a")),
            ),
            (
                "trailing bytes ignored",
                r#"{"text":"a"} trailing"#,
                Ok(Some("a")),
            ),
            (
                "bytes past the limit never read",
                &late_garbage,
                Ok(Some("ok")),
            ),
            (
                "later duplicate wins",
                r#"{"text":"a","Text":"b"}"#,
                Ok(Some("b")),
            ),
            ("null resets text", r#"{"text":"a","text":null}"#, Ok(None)),
            (
                "unknown keys ignored",
                r#"{"text":"a","icon_emoji":":x:","extra":[1,{}]}"#,
                Ok(Some("a")),
            ),
            ("top-level array", r#"[{"text":"a"}]"#, Err(())),
            ("top-level string", r#""text""#, Err(())),
            ("top-level number", "1", Err(())),
            ("text of wrong type", r#"{"text":1}"#, Err(())),
            (
                "username of wrong type",
                r#"{"text":"a","username":true}"#,
                Err(()),
            ),
            ("props not an object", r#"{"text":"a","props":[]}"#, Err(())),
            ("attachments not an array", r#"{"attachments":{}}"#, Err(())),
            (
                "priority not an object",
                r#"{"text":"a","priority":"high"}"#,
                Err(()),
            ),
            (
                "priority.requested_ack not a bool",
                r#"{"text":"a","priority":{"priority":"","requested_ack":"yes"}}"#,
                Err(()),
            ),
            (
                "short null fails everything",
                r#"{"text":"a","attachments":[{"fields":[{"short":null}]}]}"#,
                Err(()),
            ),
            (
                "short 1 fails everything",
                r#"{"text":"a","attachments":[{"fields":[{"short":1}]}]}"#,
                Err(()),
            ),
            ("truncated object", r#"{"text":"a""#, Err(())),
        ];
        for (why, body, want) in rows {
            let got = decode_response(body.as_bytes())
                .map(|r| r.map(|r| r.text.unwrap_or_else(|| "<no text>".to_owned())))
                .map_err(|_| ());
            assert_eq!(got, want.map(|t| t.map(str::to_owned)), "{why}");
        }
    }

    #[test]
    fn value_cut_by_the_limit_reports_the_limit() {
        let body = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_RESPONSE_BYTES));
        assert!(matches!(
            decode_response(body.as_bytes()),
            Err(DecodeError::TooLarge {
                limit: MAX_RESPONSE_BYTES
            })
        ));
    }

    #[test]
    fn decoded_members_keep_their_values() {
        let resp = decode(
            r#"{"text":"t","username":"u","ICON_URL":"i","type":"custom_x","response_type":"comment",
                "props":{"a":1},"PROPS":{"b":null},"attachments":[null,{"Text":"x"}],
                "priority":{"priority":"urgent"},"priority":{"requested_ack":true}}"#,
        );
        let want = WebhookResponse {
            text: Some("t".into()),
            username: "u".into(),
            icon_url: "i".into(),
            props: Map::from_iter([("a".to_owned(), json!(1)), ("b".to_owned(), Value::Null)]),
            attachments: Some(vec![Value::Null, json!({"text": "x"})]),
            r#type: "custom_x".into(),
            response_type: "comment".into(),
            priority: Some(Priority {
                priority: Some("urgent".into()),
                requested_ack: Some(true),
                persistent_notifications: None,
            }),
        };
        assert_eq!(resp, want, "repeated props/priority merge like Go");
        assert_eq!(
            decode(r#"{"text":"a","props":null}"#).props,
            Map::new(),
            "null props"
        );
        assert_eq!(
            decode(r#"{"text":"a","username":"u","username":null}"#).username,
            "u",
            "null keeps a string"
        );
    }

    #[test]
    fn broken_utf8_and_lone_surrogates_become_replacement_characters() {
        let rows: [(&[u8], &str, &str); 5] = [
            (b"{\"text\":\"a\xffb\"}", "a\u{FFFD}b", "invalid byte"),
            (
                b"{\"text\":\"\xe2\x82a\"}",
                "\u{FFFD}\u{FFFD}a",
                "one U+FFFD per byte of a cut sequence",
            ),
            (br#"{"text":"\ud800x"}"#, "\u{FFFD}x", "lone high surrogate"),
            (
                br#"{"text":"\udc00\ud800\u0041"}"#,
                "\u{FFFD}\u{FFFD}A",
                "lone low, then high without low",
            ),
            (
                br#"{"text":"\ud83d\ude00 \u00e9"}"#,
                "\u{1F600} \u{e9}",
                "valid pair and escapes untouched",
            ),
        ];
        for (body, want, why) in rows {
            let got = decode_response(body).ok().flatten().and_then(|r| r.text);
            assert_eq!(got.as_deref(), Some(want), "{why}");
        }
    }

    #[test]
    fn overrides_follow_settings_and_fallbacks() {
        // T5 rows and the two mixed settings; the hook has a username and an icon.
        let text_only = r#"{"text": "sample response text from test server"}"#;
        let with_overrides = r#"{"text":"sample response text from test server","username":"webhookuser","icon_url":"http://webhook/icon"}"#;
        let rows = [
            (
                "T5 on/on",
                text_only,
                true,
                true,
                Some("some-user-name"),
                Some("http://some-icon/"),
            ),
            ("T5 off/off", text_only, false, false, None, None),
            (
                "T5 response wins",
                with_overrides,
                true,
                true,
                Some("webhookuser"),
                Some("http://webhook/icon"),
            ),
            (
                "username only",
                text_only,
                true,
                false,
                Some("some-user-name"),
                None,
            ),
            (
                "icon only",
                text_only,
                false,
                true,
                None,
                Some("http://some-icon/"),
            ),
            (
                "response values ignored when off",
                with_overrides,
                false,
                false,
                None,
                None,
            ),
        ];
        for (why, body, user_on, icon_on, want_user, want_icon) in rows {
            let settings = ReplySettings {
                enable_post_username_override: user_on,
                enable_post_icon_override: icon_on,
                ..SETTINGS
            };
            let posts = build(&decode(body), &settings);
            let props = &posts[0]["props"];
            assert_eq!(
                props.get("override_username").and_then(Value::as_str),
                want_user,
                "{why}: username"
            );
            assert_eq!(
                props.get("override_icon_url").and_then(Value::as_str),
                want_icon,
                "{why}: icon"
            );
            assert_eq!(props["from_webhook"], "true", "{why}: from_webhook");
            assert_eq!(
                posts[0]["message"], "sample response text from test server",
                "{why}: message"
            );
        }
    }

    #[test]
    fn overrides_without_hook_values_use_defaults() {
        let hook = HookInfo {
            display_name: "",
            username: "",
            icon_url: "",
        };
        let settings = ReplySettings {
            enable_post_username_override: true,
            enable_post_icon_override: true,
            ..SETTINGS
        };
        let posts = build_reply_posts(
            &decode(r#"{"text":"x"}"#),
            &hook,
            &ROOT_TRIGGER,
            &settings,
            &HashMap::new(),
        );
        let props = posts
            .ok()
            .and_then(|p| p.into_iter().next())
            .map(|p| p["props"].clone());
        assert_eq!(
            props,
            Some(
                json!({"override_username": "webhook", "from_webhook": "true", "webhook_display_name": ""})
            ),
            "username falls back to `webhook`, no icon prop (MM-T584)"
        );
    }

    #[test]
    fn reply_body_has_the_documented_shape() {
        let post = only_post(r#"{"text":"hi <!here> <https://x|X>"}"#);
        assert_eq!(
            post,
            json!({
                "channel_id": "channelid",
                "message": "hi @here [X](https://x)",
                "props": {"from_webhook": "true", "webhook_display_name": "Hook"},
            })
        );
        assert_eq!(
            only_post(r#"{"text":""}"#)["message"],
            "",
            "an empty text still makes one (empty) post"
        );
    }

    #[test]
    fn user_ids_in_text_are_replaced_with_usernames() {
        let resp = decode(r#"{"text":"<@u1> and <@u2>","attachments":[{"text":"<@u2>"}]}"#);
        assert_eq!(resp.referenced_user_ids(), vec!["u1", "u2"]);
        let users = HashMap::from([("u1".to_owned(), "alice".to_owned())]);
        let posts =
            build_reply_posts(&resp, &HOOK, &ROOT_TRIGGER, &SETTINGS, &users).unwrap_or_default();
        assert_eq!(posts[0]["message"], "@alice and <@u2>");
    }

    #[test]
    fn comment_replies_go_under_the_thread_root() {
        let rows = [
            (
                "comment on a root post",
                "comment",
                "",
                Some("triggerpostid"),
            ),
            (
                "comment on a thread reply (posthook difference)",
                "comment",
                "rootpostid",
                Some("rootpostid"),
            ),
            ("no comment on a thread reply", "", "rootpostid", None),
            ("response_type is case-sensitive", "Comment", "", None),
        ];
        for (why, response_type, root, want) in rows {
            let resp = WebhookResponse {
                text: Some("x".into()),
                response_type: response_type.into(),
                ..WebhookResponse::default()
            };
            let trigger = TriggerPost {
                root_id: root,
                ..ROOT_TRIGGER
            };
            let posts = build_reply_posts(&resp, &HOOK, &trigger, &SETTINGS, &HashMap::new())
                .unwrap_or_default();
            assert_eq!(
                posts[0].get("root_id").and_then(Value::as_str),
                want,
                "{why}"
            );
        }
    }

    #[test]
    fn reserved_props_are_discarded_and_display_name_overwritten() {
        let post = only_post(
            r#"{"text":"x","props":{"override_username":"evil","override_icon_url":"evil","from_webhook":"false",
                "webhook_display_name":"spoof","attachments":[{"text":"raw"}],"from_bot":"true","override_icon_emoji":"e","k":[1]}}"#,
        );
        assert_eq!(
            post["props"],
            json!({
                "from_webhook": "true",
                "webhook_display_name": "Hook",
                "from_bot": "true",
                "override_icon_emoji": "e",
                "k": [1],
            }),
            "reserved keys and raw props.attachments are dropped, others copied"
        );
        assert!(
            post.get("type").is_none(),
            "raw props.attachments does not set a type"
        );
    }

    #[test]
    fn post_types_are_checked_like_mattermost() {
        // T8 system_generic, §3.3 step 8 and §4.4.
        // (why, body, expected post type, or the error)
        type Row<'a> = (&'a str, &'a str, Result<Option<&'a str>, ReplyError>);
        let rows: [Row<'_>; 9] = [
            (
                "T8 system type",
                r#"{"text":"x","type":"system_generic"}"#,
                Err(ReplyError::SystemPostType("system_generic".into())),
            ),
            (
                "T4 custom type",
                r#"{"text":"x","type":"custom_as"}"#,
                Ok(Some("custom_as")),
            ),
            ("default type", r#"{"text":"x"}"#, Ok(None)),
            ("me", r#"{"text":"x","type":"me"}"#, Ok(Some("me"))),
            (
                "unknown type would be a 400",
                r#"{"text":"x","type":"post"}"#,
                Err(ReplyError::InvalidPostType("post".into())),
            ),
            (
                "attachments give slack_attachment",
                r#"{"attachments":[{"text":"a"}]}"#,
                Ok(Some("slack_attachment")),
            ),
            (
                "attachments keep a custom type",
                r#"{"attachments":[{"text":"a"}],"type":"custom_x"}"#,
                Ok(Some("custom_x")),
            ),
            (
                "null-only attachments set no type",
                r#"{"attachments":[null]}"#,
                Ok(None),
            ),
            (
                "priority is checked before type",
                r#"{"text":"x","type":"system_x","priority":{}}"#,
                Err(ReplyError::MissingPriority),
            ),
        ];
        for (why, body, want) in rows {
            let got = build_reply_posts(
                &decode(body),
                &HOOK,
                &ROOT_TRIGGER,
                &SETTINGS,
                &HashMap::new(),
            )
            .map(|posts| {
                posts[0]
                    .get("type")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            assert_eq!(got, want.map(|t| t.map(str::to_owned)), "{why}");
        }
    }

    #[test]
    fn attachments_land_in_props_translated() {
        let post = only_post(
            r#"{"text":"t","attachments":[null,{"pretext":"<!here> <a|b>","Title":"<c|d>","fields":[{"value":42,"short":"True"}],"x":1}]}"#,
        );
        assert_eq!(
            post["props"]["attachments"],
            json!([{"pretext": "@here [b](a)", "title": "<c|d>", "fields": [{"value": "42", "short": true}], "x": 1}]),
        );
        assert_eq!(post["type"], "slack_attachment");
    }

    #[test]
    fn null_only_attachments_make_an_empty_post_without_attachments() {
        // §3.2: `[null]` passes the gate; the processed list is empty, so TriggerWebhook sets
        // no props.attachments and ParseSlackAttachment (T14) never runs.
        let post = only_post(r#"{"attachments":[null]}"#);
        assert_eq!(
            post,
            json!({
                "channel_id": "channelid",
                "message": "",
                "props": {"from_webhook": "true", "webhook_display_name": "Hook"},
            })
        );
    }

    #[test]
    fn priority_is_kept_exactly_and_required() {
        // T9.
        let rows = [
            (
                r#"{"priority":"high","requested_ack":true,"persistent_notifications":false}"#,
                json!({"priority": "high", "requested_ack": true, "persistent_notifications": false}),
            ),
            (
                r#"{"priority":"","requested_ack":true,"persistent_notifications":false}"#,
                json!({"priority": "", "requested_ack": true, "persistent_notifications": false}),
            ),
            (
                r#"{"priority":"urgent","requested_ack":false,"persistent_notifications":true}"#,
                json!({"priority": "urgent", "requested_ack": false, "persistent_notifications": true}),
            ),
            (
                r#"{"PRIORITY":"important"}"#,
                json!({"priority": "important", "requested_ack": null, "persistent_notifications": null}),
            ),
        ];
        for (priority, want) in rows {
            let body = format!(r#"{{"text":"foo @user","priority":{priority}}}"#);
            let post = only_post(&body);
            assert_eq!(post["metadata"]["priority"], want, "T9 {priority}");
            assert_eq!(post["message"], "foo @user", "T9 message unchanged");
        }
        for priority in [r#"{}"#, r#"{"requested_ack":true}"#, r#"{"priority":null}"#] {
            let body = format!(r#"{{"text":"x","priority":{priority}}}"#);
            let got = build_reply_posts(
                &decode(&body),
                &HOOK,
                &ROOT_TRIGGER,
                &SETTINGS,
                &HashMap::new(),
            );
            assert_eq!(
                got,
                Err(ReplyError::MissingPriority),
                "missing priority.priority in {priority}"
            );
        }
        assert!(
            only_post(r#"{"text":"x","priority":null}"#)
                .get("metadata")
                .is_none(),
            "null priority"
        );
    }

    fn cjk(runes: usize) -> String {
        "本那".chars().cycle().take(runes).collect()
    }

    fn attachment_with_text(runes: usize) -> Value {
        json!({"text": cjk(runes)})
    }

    /// (message runes, attachment text runes) of each part.
    fn shape(posts: &[Value]) -> Vec<(usize, Vec<usize>)> {
        posts
            .iter()
            .map(|p| {
                let message = p["message"].as_str().unwrap_or_default().chars().count();
                let texts = p["props"]
                    .get("attachments")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .map(|a| a["text"].as_str().unwrap_or_default().chars().count())
                            .collect()
                    })
                    .unwrap_or_default();
                (message, texts)
            })
            .collect()
    }

    #[test]
    fn long_replies_split_like_split_webhook_post() {
        // T10 with maxPostSize 10000 and CJK runes.
        let settings = ReplySettings {
            max_post_size: 10_000,
            ..SETTINGS
        };
        type Shape = Vec<(usize, Vec<usize>)>;
        let rows: [(&str, usize, &[usize], Shape); 6] = [
            (
                "message only",
                15_000,
                &[],
                vec![(10_000, vec![]), (5_000, vec![])],
            ),
            (
                "attachments follow the last part",
                15_000,
                &[1_000, 2_000, 759_000],
                vec![
                    (10_000, vec![]),
                    (5_000, vec![1_000, 2_000]),
                    (0, vec![759_000]),
                ],
            ),
            (
                "everything fits",
                10,
                &[100, 150, 200],
                vec![(10, vec![100, 150, 200])],
            ),
            (
                "second attachment opens a part",
                9_999,
                &[570_000, 190_000],
                vec![(9_999, vec![570_000]), (0, vec![190_000])],
            ),
            (
                "MM-24644",
                15_000,
                &[5_150, 2_000, 759_000],
                vec![
                    (10_000, vec![]),
                    (5_000, vec![5_150, 2_000]),
                    (0, vec![759_000]),
                ],
            ),
            (
                "exactly max runes is one part",
                10_000,
                &[],
                vec![(10_000, vec![])],
            ),
        ];
        for (why, message, texts, want) in rows {
            let resp = WebhookResponse {
                text: Some(cjk(message)),
                attachments: Some(texts.iter().map(|&n| attachment_with_text(n)).collect()),
                ..WebhookResponse::default()
            };
            let posts = build(&resp, &settings);
            assert_eq!(shape(&posts), want, "T10 {why}");
            for post in &posts {
                assert_eq!(
                    post["props"]["from_webhook"], "true",
                    "{why}: every part is a webhook post"
                );
                let expected_type = if texts.is_empty() {
                    None
                } else {
                    Some("slack_attachment")
                };
                assert_eq!(
                    post.get("type").and_then(Value::as_str),
                    expected_type,
                    "{why}: every part has the type"
                );
            }
        }
    }

    #[test]
    fn split_parts_are_the_message_in_order() {
        let text = format!("{}{}", cjk(10_000), "tail");
        let settings = ReplySettings {
            max_post_size: 10_000,
            ..SETTINGS
        };
        let resp = WebhookResponse {
            text: Some(text.clone()),
            response_type: "comment".into(),
            ..WebhookResponse::default()
        };
        let posts = build(&resp, &settings);
        let joined: String = posts.iter().filter_map(|p| p["message"].as_str()).collect();
        assert_eq!(joined, text);
        assert!(
            posts.iter().all(|p| p["root_id"] == "triggerpostid"),
            "every part in the thread"
        );
    }

    #[test]
    fn oversized_props_fail_and_oversized_attachments_are_trimmed() {
        // T10 error row: props `foo` of 1,520,000 × "x".
        let mut resp = decode(r#"{"text":"foo"}"#);
        resp.props
            .insert("foo".into(), "x".repeat(1_520_000).into());
        let got = build_reply_posts(&resp, &HOOK, &ROOT_TRIGGER, &SETTINGS, &HashMap::new());
        assert!(
            matches!(got, Err(ReplyError::PropsTooLarge { .. })),
            "T10 huge props: {got:?}"
        );

        let resp = WebhookResponse {
            text: Some("m".into()),
            attachments: Some(vec![attachment_with_text(800_000)]),
            ..WebhookResponse::default()
        };
        let posts = build(&resp, &SETTINGS);
        let props_runes = go_json_runes(&posts[0]["props"]);
        assert_eq!(
            posts.len(),
            1,
            "a lone oversized attachment is trimmed in place"
        );
        assert!(
            props_runes <= PROPS_MAX_USER_RUNES,
            "trimmed props fit: {props_runes}"
        );

        let resp = WebhookResponse {
            text: Some("m".into()),
            attachments: Some(vec![json!({"text": "short", "title": cjk(770_000)})]),
            ..WebhookResponse::default()
        };
        let got = build_reply_posts(&resp, &HOOK, &ROOT_TRIGGER, &SETTINGS, &HashMap::new());
        assert!(
            matches!(got, Err(ReplyError::AttachmentTooLarge { index: 0, .. })),
            "text too short to trim: {got:?}"
        );
    }

    #[test]
    fn no_reply_and_zero_size_are_handled() {
        let empty = WebhookResponse::default();
        assert_eq!(
            build(&empty, &SETTINGS),
            Vec::<Value>::new(),
            "no text, no attachments"
        );
        let settings = ReplySettings {
            max_post_size: 0,
            ..SETTINGS
        };
        let got = build_reply_posts(
            &decode(r#"{"text":"x"}"#),
            &HOOK,
            &ROOT_TRIGGER,
            &settings,
            &HashMap::new(),
        );
        assert_eq!(got, Err(ReplyError::ZeroMaxPostSize));
    }

    #[test]
    fn go_json_rune_count_matches_go_marshal() {
        let rows = [
            (
                json!("a<b>&\u{2028}"),
                r#""a\u003cb\u003e\u0026\u2028""#,
                "HTML-safe escapes",
            ),
            (
                json!("\"\\\n\r\t\u{8}\u{c}\u{1}"),
                r#""\"\\\n\r\t\b\f\u0001""#,
                "control characters",
            ),
            (json!("本"), "\"本\"", "runes, not bytes"),
            (json!(12345678), "12345678", "plain float below 1e21"),
            (json!(1e21), "1e+21", "exponent from 1e21"),
            (json!(0.000001), "0.000001", "plain from 1e-6"),
            (json!(0.0000001), "1e-7", "e-07 shortened"),
            (json!(1.5e-10), "1.5e-10", "two-digit negative exponent"),
            (
                json!({"b": [true, null], "a": 1.5}),
                r#"{"a":1.5,"b":[true,null]}"#,
                "nested",
            ),
        ];
        for (value, go_text, why) in rows {
            assert_eq!(go_json_runes(&value), go_text.chars().count(), "{why}");
        }
        assert_eq!(go_json_float(1e-7), "1e-7");
        assert_eq!(go_json_float(-2.5e22), "-2.5e+22");
    }

    #[test]
    fn typed_attachment_count_includes_every_go_member() {
        // Go prints all 16 members of an empty MessageAttachment (actions is omitempty).
        let go_empty = r#"{"id":0,"fallback":"","color":"","pretext":"","author_name":"","author_link":"","author_icon":"","title":"","title_link":"","text":"","fields":null,"image_url":"","thumb_url":"","footer":"","footer_icon":"","ts":null}"#;
        assert_eq!(go_attachment_runes(&Map::new()), go_empty.chars().count());
        let with_field = json!({"x_unknown": "ignored", "fields": [{"value": "v", "short": true}]});
        let go_field = go_empty.replace(
            r#""fields":null"#,
            r#""fields":[{"title":"","value":"v","short":true}]"#,
        );
        let Value::Object(map) = with_field else {
            panic!("object literal")
        };
        assert_eq!(go_attachment_runes(&map), go_field.chars().count());
    }
}
