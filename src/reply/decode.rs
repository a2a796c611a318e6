//! Decoding a webhook's answer the way Mattermost's Go decoder reads
//! `model.OutgoingWebhookResponse` (spec §3.1–3.2): [`decode_response`] reads the first JSON
//! value within [`MAX_RESPONSE_BYTES`], keys matched with Go's case folding, wrong types
//! refused as Go refuses them. Pure.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::slack::{self, Attachments};
use crate::go;
use crate::webhook::MAX_RESPONSE_BYTES;

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
    /// in one batch and pass the id → username map to [`super::build::build_reply_posts`].
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
            if go::key_matches(&key, "text") {
                // A `null` sets Go's `*string` back to nil.
                r.text = map.next_value()?;
            } else if go::key_matches(&key, "username") {
                set_string(&mut r.username, map.next_value()?);
            } else if go::key_matches(&key, "icon_url") {
                set_string(&mut r.icon_url, map.next_value()?);
            } else if go::key_matches(&key, "type") {
                set_string(&mut r.r#type, map.next_value()?);
            } else if go::key_matches(&key, "response_type") {
                set_string(&mut r.response_type, map.next_value()?);
            } else if go::key_matches(&key, "props") {
                // Go decodes a repeated object into the existing map, keeping earlier keys;
                // `null` resets it.
                match (
                    map.next_value::<Option<Map<String, Value>>>()?,
                    r.props.as_mut(),
                ) {
                    (Some(more), Some(props)) => props.extend(more),
                    (next, _) => r.props = next,
                }
            } else if go::key_matches(&key, "attachments") {
                r.attachments = map.next_value::<Attachments>()?.0;
            } else if go::key_matches(&key, "priority") {
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
            if go::key_matches(&key, "priority") {
                p.priority = Some(map.next_value()?);
            } else if go::key_matches(&key, "requested_ack") {
                p.requested_ack = Some(map.next_value()?);
            } else if go::key_matches(&key, "persistent_notifications") {
                p.persistent_notifications = Some(map.next_value()?);
            } else if go::key_matches(&key, "postid") || go::key_matches(&key, "channelid") {
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
