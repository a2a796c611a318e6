//! Naive models of the Go and Mattermost behaviour posthook reproduces, written from the spec
//! rather than from posthook's code: the property tests (`tests/properties.rs`, a bounded number
//! of cases) and the fuzz targets (`fuzz/fuzz_targets/`, unbounded) check posthook against the
//! same models, so a model fixed in one place is fixed for both.
//!
//! Each of them includes this file with `#[path = "…"] mod models;` (the fuzz crate cannot use a
//! test crate, and the library does not export test code) and uses the part it checks, hence
//! the `dead_code` allowance. It needs the posthook library, serde_json and url only.

#![allow(dead_code)]

use std::collections::HashMap;

use posthook::config::{ContentType, HookConfig, TriggerWhen};
use posthook::reply::{DecodeError, WebhookResponse};
use posthook::webhook::Payload;

// ------------------------------------------------------------------------------------------
// First word and hook matching (spec §1.3–§1.4)
// ------------------------------------------------------------------------------------------

/// Go's `unicode.IsSpace`, written out from its definition.
pub fn go_is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{B}' | '\u{C}' | '\r' | ' ' | '\u{85}' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// A hook as the matching model sees it.
#[derive(Debug, Clone)]
pub struct HookSpec {
    pub team: Option<&'static str>,
    pub channel: Option<&'static str>,
    pub words: Vec<String>,
    pub when: TriggerWhen,
}

/// The hook as the config would hold it (one callback URL, form encoding).
pub fn hook_config(h: &HookSpec) -> HookConfig {
    HookConfig {
        display_name: String::new(),
        description: String::new(),
        team_id: h.team.map(String::from),
        channel_id: h.channel.map(String::from),
        trigger_words: h.words.clone(),
        trigger_when: h.when,
        callback_urls: vec![url::Url::parse("http://x.example/")
            .unwrap_or_else(|e| unreachable!("a fixed URL: {e}"))],
        content_type: ContentType::Form,
        token: "t".into(),
        username: String::new(),
        icon_url: String::new(),
        beyond: Default::default(),
        sending: Default::default(),
    }
}

/// The trigger word of `h` that `word` (the message's first word) triggers, if any.
pub fn model_trigger<'a>(h: &'a HookSpec, word: &str) -> Option<&'a str> {
    if word.is_empty() {
        return None;
    }
    h.words
        .iter()
        .find(|t| match h.when {
            TriggerWhen::Exact => t.as_str() == word,
            TriggerWhen::StartsWith => word.starts_with(t.as_str()),
        })
        .map(String::as_str)
}

/// Spec §1.4 as written, hook after hook, with the trigger word computed per hook (posthook
/// difference 1) and hooks of another team skipped (the store only returns the channel's team).
/// `word` is the message's first word, by the caller's own model of it.
pub fn model_matches<'a>(
    hooks: &'a [HookSpec],
    channel: &str,
    team: &str,
    word: &str,
) -> Vec<(usize, &'a str)> {
    hooks
        .iter()
        .enumerate()
        .filter(|(_, h)| h.team.is_none_or(|t| t == team))
        .filter_map(|(i, h)| match h.channel {
            Some(c) if c != channel => None,
            Some(_) if h.words.is_empty() => Some((i, "")),
            _ => model_trigger(h, word).map(|t| (i, t)),
        })
        .collect()
}

/// The documented pre-check: a hook bound to the channel (whatever its words), or a team-wide
/// hook that the first word triggers (whatever its team).
pub fn model_could_match(hooks: &[HookSpec], channel: &str, word: &str) -> bool {
    hooks.iter().any(|h| h.channel == Some(channel))
        || hooks
            .iter()
            .any(|h| h.channel.is_none() && model_trigger(h, word).is_some())
}

// ------------------------------------------------------------------------------------------
// Payload encodings (spec §2.3)
// ------------------------------------------------------------------------------------------

/// The payload whose eleven string fields are `s[0..11]`, in Go's struct order (token, team_id,
/// team_domain, channel_id, channel_name, user_id, user_name, post_id, text, trigger_word,
/// file_ids), created at `create_at_ms`.
pub fn payload_of(s: &[String], create_at_ms: i64) -> Payload<'_> {
    Payload {
        token: &s[0],
        team_id: &s[1],
        team_domain: &s[2],
        channel_id: &s[3],
        channel_name: &s[4],
        create_at_ms,
        user_id: &s[5],
        user_name: &s[6],
        post_id: &s[7],
        text: &s[8],
        trigger_word: &s[9],
        file_ids: &s[10],
        extras: None,
    }
}

/// Go's `url.QueryEscape`, byte by byte.
pub fn model_query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `json.Marshal` of a string: serde_json's escaping (the same for `"`, `\`, control
/// characters, `\b`, `\f`, `\n`, `\r`, `\t`) plus Go's HTML-safe escapes.
pub fn model_go_json(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|e| unreachable!("a string always serialises: {e}"))
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

// ------------------------------------------------------------------------------------------
// Slack translation (spec §4)
// ------------------------------------------------------------------------------------------

/// The users the Slack and reply models know by id: `U1` is alice, `bob7` is bob.b.
pub fn known_users() -> HashMap<String, String> {
    [("U1", "alice"), ("bob7", "bob.b")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The announcements Mattermost expands, and what they become.
pub const ANNOUNCEMENTS: [(&str, &str); 3] = [
    ("<!channel>", "@channel"),
    ("<!here>", "@here"),
    ("<!all>", "@all"),
];

/// `s` without the characters of `bad` (to keep generated plain text free of markup).
pub fn without(s: &str, bad: &[char]) -> String {
    s.chars().filter(|c| !bad.contains(c)).collect()
}

// ------------------------------------------------------------------------------------------
// Response decoding (spec §3.1)
// ------------------------------------------------------------------------------------------

pub type Decoded = Result<Option<WebhookResponse>, DecodeError>;

/// The same decoded response, or both an error (whichever).
pub fn same_outcome(a: &Decoded, b: &Decoded) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(_), Err(_)) => true,
        _ => false,
    }
}
