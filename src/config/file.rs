//! The YAML file model: a literal mirror of the file, nothing checked beyond types. Unknown keys
//! are errors; every value keeps the line and column it was written at, for the errors of
//! `validate`.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A string value with the place it was written at.
pub type Str = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<Str>,
    pub metrics_listen: Option<Str>,
    /// One base URL, or a list of them (a Mattermost HA cluster).
    pub upstream: Option<Spanned<OneOrMany>>,
    pub bot_token: Option<Str>,
    pub log_format: Option<Str>,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub limits: Limits,
    pub store: Option<Spanned<Store>>,
    #[serde(default)]
    pub hooks: Vec<Spanned<Hook>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Store {
    pub url: Option<Str>,
    pub retention_days: Option<Spanned<u64>>,
    pub lease_margin_seconds: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub commit_interval_ms: Option<Spanned<u64>>,
    pub sqlite_synchronous: Option<Str>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub enable_post_username_override: Option<bool>,
    pub enable_post_icon_override: Option<bool>,
    pub outgoing_integration_requests_timeout: Option<Spanned<u64>>,
    pub allowed_untrusted_internal_connections: Option<Vec<Str>>,
    pub max_post_size: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub threads: Option<Spanned<u64>>,
    pub grace_period_seconds: Option<Spanned<u64>>,
    pub graceful_shutdown_timeout_seconds: Option<Spanned<u64>>,
    pub upstream_connect_timeout_seconds: Option<Spanned<u64>>,
    pub upstream_keepalive_pool_size: Option<Spanned<u64>>,
    pub header_timeout_seconds: Option<Spanned<u64>>,
    pub keepalive_timeout_seconds: Option<Spanned<u64>>,
    pub body_timeout_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_inspected_body_bytes: Option<Spanned<u64>>,
    pub max_decoded_body_bytes: Option<Spanned<u64>>,
    pub queue_capacity: Option<Spanned<u64>>,
    pub max_concurrent_jobs: Option<Spanned<u64>>,
    pub max_concurrent_deliveries: Option<Spanned<u64>>,
    pub max_idle_connections_per_host: Option<Spanned<u64>>,
    pub lookup_cache_ttl_seconds: Option<Spanned<u64>>,
    pub lookup_cache_max_entries: Option<Spanned<u64>>,
    pub lookup_timeout_seconds: Option<Spanned<u64>>,
    pub name_refresh_seconds: Option<Spanned<u64>>,
    pub max_pending_deliveries: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub display_name: Option<Str>,
    pub description: Option<Str>,
    pub team_id: Option<Str>,
    pub channel_id: Option<Str>,
    /// `team: "team-name"`, instead of `team_id`.
    pub team: Option<Str>,
    /// `channel: "team-name/channel-name"`, instead of `channel_id`.
    pub channel: Option<Str>,
    pub trigger_words: Option<Spanned<Vec<Str>>>,
    pub trigger_when: Option<Spanned<TriggerWhenValue>>,
    pub callback_urls: Option<Vec<Str>>,
    pub content_type: Option<Str>,
    pub token: Option<Str>,
    pub username: Option<Str>,
    pub icon_url: Option<Str>,
    // Beyond Mattermost (opt-in).
    pub id: Option<Str>,
    pub enabled: Option<bool>,
    pub channel_types: Option<Spanned<Vec<Str>>>,
    pub events: Option<Spanned<Vec<Str>>>,
    pub from_users: Option<Spanned<Vec<Str>>>,
    pub exclude_bots: Option<bool>,
    pub thread: Option<Str>,
    pub payload_extras: Option<bool>,
    pub trigger_pattern: Option<Str>,
    // Reliable delivery (opt-in).
    pub signing_secret: Option<Spanned<OneOrMany>>,
    pub retry: Option<Spanned<Retry>>,
    pub timeout_seconds: Option<Spanned<u64>>,
    pub max_in_flight: Option<Spanned<u64>>,
    pub notify: Option<Spanned<Notify>>,
}

/// `notify` of a hook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub username: Option<Str>,
    pub after_failures: Option<Spanned<u64>>,
}

/// `retry` of a hook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    pub attempts: Option<Spanned<u64>>,
    pub initial_seconds: Option<Spanned<u64>>,
    pub max_seconds: Option<Spanned<u64>>,
}

/// One string, or a list of them. Read by hand rather than as an untagged enum, which would
/// buffer the value and lose the places of the list's entries.
#[derive(Debug)]
pub enum OneOrMany {
    /// The string (its place is the enclosing `Spanned`'s).
    One(String),
    Many(Vec<Str>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut all = Vec::new();
                while let Some(s) = seq.next_element::<Str>()? {
                    all.push(s);
                }
                Ok(OneOrMany::Many(all))
            }
        }
        d.deserialize_any(V)
    }
}

/// `exact`, `starts_with`, or Mattermost's numeric `0` / `1`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TriggerWhenValue {
    Number(i64),
    Name(String),
}

/// What the key `key` takes, in words, for the errors about a value of the wrong type
/// (`expected a whole number of seconds, found a string`). Every key of the model above has
/// one (a test checks it).
pub fn expected(key: &str) -> Option<&'static str> {
    Some(match key {
        "upstream" => "a URL or a list of URLs",
        "listen" | "metrics_listen" | "log_format" | "bot_token" | "display_name"
        | "description" | "team_id" | "channel_id" | "team" | "channel" | "content_type"
        | "token" | "username" | "icon_url" | "id" => "a string",
        "enable_post_username_override"
        | "enable_post_icon_override"
        | "enabled"
        | "exclude_bots"
        | "payload_extras" => "true or false",
        "thread" => "any, root or reply",
        "trigger_pattern" => "a string",
        "outgoing_integration_requests_timeout"
        | "grace_period_seconds"
        | "graceful_shutdown_timeout_seconds"
        | "upstream_connect_timeout_seconds"
        | "header_timeout_seconds"
        | "keepalive_timeout_seconds"
        | "body_timeout_seconds"
        | "lookup_cache_ttl_seconds"
        | "lookup_timeout_seconds"
        | "name_refresh_seconds"
        | "timeout_seconds"
        | "initial_seconds"
        | "max_seconds" => "a whole number of seconds",
        "attempts" => "a whole number",
        "max_post_size"
        | "threads"
        | "upstream_keepalive_pool_size"
        | "max_inspected_body_bytes"
        | "max_decoded_body_bytes"
        | "queue_capacity"
        | "max_concurrent_jobs"
        | "max_concurrent_deliveries"
        | "max_pending_deliveries"
        | "max_connections"
        | "max_in_flight"
        | "max_idle_connections_per_host"
        | "lookup_cache_max_entries" => "a whole number",
        "allowed_untrusted_internal_connections"
        | "trigger_words"
        | "callback_urls"
        | "from_users" => "a list of strings",
        "channel_types" => "a list of O, P, D, G",
        "signing_secret" => "a whsec_ secret or a list of them",
        "events" => "a list of posted, edited",
        "settings" | "server" | "limits" | "retry" | "store" | "notify" => "a mapping",
        "after_failures" => "a whole number",
        "url" => "a string",
        "retention_days" => "a whole number of days",
        "lease_margin_seconds" => "a whole number of seconds",
        "commit_interval_ms" => "a whole number of milliseconds",
        "sqlite_synchronous" => "full or normal",
        "hooks" => "a list of hooks",
        "trigger_when" => "exact, starts_with, 0 or 1",
        _ => return None,
    })
}

/// What an element of the list `key` takes, in words.
pub fn expected_element(key: &str) -> Option<&'static str> {
    match expected(key)? {
        "a list of strings" => Some("a string"),
        "a list of O, P, D, G" => Some("one of O, P, D, G"),
        "a whsec_ secret or a list of them" => Some("a whsec_ secret"),
        "a URL or a list of URLs" => Some("a URL"),
        "a list of posted, edited" => Some("posted or edited"),
        "a list of hooks" => Some("a hook (a mapping of its keys)"),
        _ => None,
    }
}
