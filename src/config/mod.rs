//! Configuration: the YAML file model, `${NAME}` substitution and validation into the
//! immutable [`Config`] the rest of posthook runs on.
//!
//! Two layers, as in river: [`mod@file`] mirrors the YAML (unknown keys are errors, every string keeps
//! its line and column), and [`Config`] is what survives validation: parsed addresses, URLs,
//! durations and compiled hooks. The proxy never sees a raw config string. Every error names the
//! file, line, column and field, e.g.
//! `posthook.yaml:12:5: hooks[1].callback_urls[0]: not an http(s) URL`.

mod beyond;
mod effective;
mod error;
pub mod file;
mod sending;
mod store;
mod upstream;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

pub use error::ConfigError;

/// How a hook's trigger words are compared with a post's first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerWhen {
    /// Mattermost `0`: the first word equals a trigger word.
    Exact,
    /// Mattermost `1`: the first word starts with a trigger word.
    StartsWith,
}

/// The payload encoding a hook asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// `application/x-www-form-urlencoded` (anything but `application/json`, as in Mattermost).
    Form,
    /// `application/json`.
    Json,
}

/// One validated outgoing webhook.
#[derive(Clone)]
pub struct HookConfig {
    pub display_name: String,
    pub description: String,
    pub team_id: Option<String>,
    pub channel_id: Option<String>,
    pub trigger_words: Vec<String>,
    pub trigger_when: TriggerWhen,
    pub callback_urls: Vec<url::Url>,
    pub content_type: ContentType,
    pub token: String,
    pub username: String,
    pub icon_url: String,
    /// posthook's opt-in keys beyond Mattermost's hook model.
    pub beyond: Beyond,
    /// How requests are sent beyond Mattermost's one unsigned attempt (opt-in).
    pub sending: Sending,
}

/// A hook's opt-in keys of reliable delivery (README "Signing"). The defaults send exactly
/// Mattermost's request, once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sending {
    /// `signing_secret`: each signs every request (Standard Webhooks), several for rotation;
    /// empty: unsigned.
    pub signing_secrets: Vec<crate::signing::Secret>,
    /// `retry`: attempts and backoff; `None`: one attempt, as Mattermost.
    pub retry: Option<Retry>,
    /// `timeout_seconds`: this hook's whole-request deadline; `None`: the settings' one.
    pub timeout: Option<Duration>,
    /// `max_in_flight`: requests of this hook in flight at once; `None`: no bound of its own.
    pub max_in_flight: Option<usize>,
    /// `notify`: whom the bot tells when the hook keeps failing or is disabled.
    pub notify: Option<Notify>,
    /// Entries of `signing_secret` written `***` (as `posthook -T` prints them): such a file
    /// passes `-t` but posthook refuses to run with it.
    pub masked_secrets: usize,
}

/// How `posthook -T` prints every secret, exactly.
pub const MASKED: &str = "***";

/// Whether `name` has the shape of a Mattermost username: 1 to 64 letters, digits, `.`, `-`
/// and `_`. Checked at load (`notify.username`) and before a name goes into a request path.
pub fn is_valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// A hook's `notify`: the bot sends `username` a direct message after `after_failures`
/// consecutive finally-failed deliveries, and when the hook is disabled; at most one message
/// per hook per hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub username: String,
    pub after_failures: u32,
}

/// A hook's `retry`: up to `attempts` in all; retry n (1 for the first) waits
/// min(`max`, `initial`·2ⁿ⁻¹) ±20 %, at least min(`Retry-After`, `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

/// A hook's keys beyond Mattermost's model (README "Beyond Mattermost"). The defaults behave
/// exactly as Mattermost's outgoing webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beyond {
    /// `id`: the hook's stable name in logs; `None`: its position in the file.
    pub id: Option<String>,
    /// `enabled: false` keeps the hook in the file without firing it.
    pub enabled: bool,
    /// `channel_types`: the types of channel whose posts fire.
    pub channel_types: ChannelTypes,
    /// `events`: which events fire (a new post, an edit).
    pub events: Events,
    /// `from_users`: only posts by these users (each a user id or a username); `None`: anyone.
    pub from_users: Option<Vec<String>>,
    /// `exclude_bots`: skip posts by bot accounts.
    pub exclude_bots: bool,
    /// `thread`: which posts of a thread fire.
    pub thread: Thread,
    /// `payload_extras`: four fields after Mattermost's twelve.
    pub payload_extras: bool,
    /// `trigger_pattern`: fires when it matches anywhere in the message (instead of trigger
    /// words).
    pub trigger_pattern: Option<Pattern>,
    /// `team: "team-name"`: the team by its name (the hook's `team_id` is resolved from it).
    pub team_name: Option<String>,
    /// `channel: "team-name/channel-name"`: the channel by its names (`channel_id` resolved).
    pub channel_name: Option<(String, String)>,
}

/// A compiled `trigger_pattern` (Rust `regex` syntax), compared by its source.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// Most bytes one compiled `trigger_pattern` may take (regex's `size_limit`): a larger one is
/// a config error.
pub const MAX_PATTERN_BYTES: usize = 1 << 20;

impl Default for Beyond {
    fn default() -> Beyond {
        Beyond {
            id: None,
            enabled: true,
            channel_types: ChannelTypes::PUBLIC,
            events: Events::POSTED,
            from_users: None,
            exclude_bots: false,
            thread: Thread::Any,
            payload_extras: false,
            trigger_pattern: None,
            team_name: None,
            channel_name: None,
        }
    }
}

/// A set of Mattermost channel types (`O` public, `P` private, `D` direct message, `G` group
/// message), as a hook's `channel_types` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelTypes(u8);

impl ChannelTypes {
    /// The letters, in the order of the bits.
    const LETTERS: [&'static str; 4] = ["O", "P", "D", "G"];
    /// `[O]`: public channels only, as in Mattermost.
    pub const PUBLIC: ChannelTypes = ChannelTypes(1);

    /// The set with the type `letter` (`O`, `P`, `D` or `G`) added; `None` for another letter.
    pub fn with(self, letter: &str) -> Option<ChannelTypes> {
        let bit = Self::LETTERS.iter().position(|l| *l == letter)?;
        Some(ChannelTypes(self.0 | 1 << bit))
    }

    /// Whether a channel of type `letter` is in the set (an unknown type never is).
    pub fn contains(self, letter: &str) -> bool {
        Self::LETTERS
            .iter()
            .position(|l| *l == letter)
            .is_some_and(|bit| self.0 & 1 << bit != 0)
    }

    /// Both sets together.
    pub fn union(self, other: ChannelTypes) -> ChannelTypes {
        ChannelTypes(self.0 | other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What happened to a post: created (`POST /api/v4/posts` answered 201) or edited (a `PUT`
/// of the post or its patch answered 200 with a new `edit_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Posted,
    Edited,
}

impl Event {
    /// The name in the config's `events` and in the payload's `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Posted => "posted",
            Event::Edited => "edited",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Event::Posted => 1,
            Event::Edited => 2,
        }
    }
}

/// A set of [`Event`]s, as a hook's `events` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events(u8);

impl Events {
    /// `[posted]`: new posts only, as in Mattermost.
    pub const POSTED: Events = Events(1);

    /// The set with the event named `name` (`posted` or `edited`) added; `None` for another name.
    pub fn with(self, name: &str) -> Option<Events> {
        let event = [Event::Posted, Event::Edited]
            .into_iter()
            .find(|e| e.as_str() == name)?;
        Some(Events(self.0 | event.bit()))
    }

    pub fn contains(self, event: Event) -> bool {
        self.0 & event.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Which posts of a thread fire a hook (`thread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// Every post (Mattermost's behaviour).
    Any,
    /// Only posts that start a thread (empty `root_id`).
    Root,
    /// Only replies in a thread.
    Reply,
}

impl Thread {
    /// Whether a post with thread root `root_id` (`""` for a root post) may fire.
    pub fn admits(self, root_id: &str) -> bool {
        match self {
            Thread::Any => true,
            Thread::Root => root_id.is_empty(),
            Thread::Reply => !root_id.is_empty(),
        }
    }
}

impl Sending {
    /// Whether requests carry the Standard Webhooks headers.
    pub fn is_signed(&self) -> bool {
        !self.signing_secrets.is_empty()
    }

    /// Whether requests carry a `webhook-id` (signed or retried: receivers drop repeats by it).
    pub fn has_webhook_id(&self) -> bool {
        self.is_signed() || self.retry.is_some()
    }
}

impl Beyond {
    /// Whether deciding needs the author's user record (username, bot flag).
    pub fn needs_author(&self) -> bool {
        self.exclude_bots || self.from_users.is_some()
    }
}

impl HookConfig {
    /// The hook's name in logs: its `id`, or its position in the file.
    pub fn name(&self, position: usize) -> HookName<'_> {
        HookName {
            id: self.beyond.id.as_deref(),
            position,
        }
    }
}

/// See [`HookConfig::name`].
#[derive(Debug, Clone, Copy)]
pub struct HookName<'a> {
    id: Option<&'a str>,
    position: usize,
}

impl fmt::Display for HookName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => f.write_str(id),
            None => write!(f, "{}", self.position),
        }
    }
}

impl fmt::Debug for HookConfig {
    // Hand-written so that the hook token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookConfig")
            .field("id", &self.beyond.id)
            .field("display_name", &self.display_name)
            .field("team_id", &self.team_id)
            .field("channel_id", &self.channel_id)
            .field("trigger_words", &self.trigger_words)
            .field("trigger_when", &self.trigger_when)
            .field("callback_urls", &self.callback_urls.len())
            .field("content_type", &self.content_type)
            .field("token", &"<redacted>")
            .field("signing_secrets", &self.sending.signing_secrets.len())
            .finish_non_exhaustive()
    }
}

/// An entry of `allowed_untrusted_internal_connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A host name (compared case-insensitively with the callback URL's host).
    Host(String),
    /// An address range; a single address is a /32 or /128.
    Net(IpNet),
}

/// Mattermost's `ServiceSettings` that posthook honours.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enable_post_username_override: bool,
    pub enable_post_icon_override: bool,
    pub outgoing_integration_requests_timeout: Duration,
    pub allowed_untrusted_internal_connections: Vec<AllowEntry>,
    pub max_post_size: usize,
}

/// Pingora's own server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub threads: usize,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_keepalive_pool_size: usize,
    /// The whole request head must arrive within this (`header_timeout_seconds`).
    pub header_timeout: Duration,
    /// How long a client connection may wait for its next request; zero: no keep-alive.
    pub keepalive_timeout: Duration,
    /// Each read or write of a client's request or response body must progress within this.
    pub body_timeout: Duration,
}

/// Bounds on every buffer, queue, task set and cache posthook keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_inspected_body_bytes: usize,
    pub max_decoded_body_bytes: usize,
    pub queue_capacity: usize,
    pub max_concurrent_jobs: usize,
    pub max_concurrent_deliveries: usize,
    /// Idle keep-alive connections kept per webhook host, and to Mattermost for look-ups and
    /// replies: at least the usual concurrency, so that connections are reused, not churned.
    pub max_idle_connections_per_host: usize,
    pub lookup_cache_ttl: Duration,
    pub lookup_cache_max_entries: u64,
    pub lookup_timeout: Duration,
    /// How often the hooks' team and channel names are resolved again
    /// (`name_refresh_seconds`), so that renames are followed.
    pub name_refresh: Duration,
    /// Deliveries waiting for a retry at once; beyond it, a delivery that would wait is
    /// dropped (counted) instead.
    pub max_pending_deliveries: usize,
    /// Client connections open at once; beyond it, new ones are closed at once (counted).
    pub max_connections: usize,
}

/// The upstream Mattermost server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http://host:port` or `https://host:port`, no trailing slash: the REST base.
    pub base_url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// The whole validated configuration.
#[derive(Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served (Prometheus text format); `None`: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// The first of `upstreams` (the only one, usually).
    pub upstream: Upstream,
    /// Every Mattermost node (`upstream` as a list); one for a single server.
    pub upstreams: Vec<Upstream>,
    pub bot_token: String,
    pub settings: Settings,
    pub server: ServerSettings,
    pub limits: Limits,
    /// Where deliveries are kept (`store`).
    pub store: StoreConfig,
    pub hooks: Vec<HookConfig>,
    /// How log lines are written (`log_format`); read at start.
    pub log_format: LogFormat,
}

/// `log_format`: `text` (one `[time level target] message` line) or `json` (one object per
/// line, for a log shipper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `store`: where deliveries are kept, and for how long once finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// Finished deliveries older than this are deleted (`retention_days`).
    pub retention: Duration,
    /// A delivery is leased for its request's deadline plus this (`lease_margin_seconds`):
    /// after a crash, its work is due again once the lease runs out.
    pub lease_margin: Duration,
    /// Connections to a PostgreSQL store, at most (`max_connections`).
    pub max_connections: u32,
    /// Group commits start at most this often (`commit_interval_ms`): under load, the writes
    /// that arrive meanwhile share one commit (one sync to disk, one hand-over).
    pub commit_interval: Duration,
    /// SQLite syncs every commit to disk (`full`, survives a power loss) or only its
    /// checkpoints (`normal`: survives a crash of posthook, not of the host)
    /// (`sqlite_synchronous`).
    pub sqlite_sync_full: bool,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            url: StoreUrl::Memory,
            retention: Duration::from_secs(7 * 86_400),
            lease_margin: Duration::from_secs(15),
            max_connections: 8,
            commit_interval: Duration::from_millis(2),
            sqlite_sync_full: false,
        }
    }
}

/// `store.url`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// Nothing is kept: a restart loses waiting retries (Mattermost's behaviour, and the
    /// default).
    Memory,
    /// An SQLite database file (relative paths: from the config file's directory).
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (`postgres://USER:PASS@HOST/DB`), shared by replicas.
    Postgres(String),
}

impl fmt::Debug for StoreUrl {
    // Hand-written so that a database password never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Memory => f.write_str("Memory"),
            StoreUrl::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            StoreUrl::Postgres(_) => f.write_str("Postgres(<redacted>)"),
        }
    }
}

impl Config {
    /// A copy of everything but the hooks: what a running posthook keeps to compare a reload
    /// against (the hooks themselves live in the swappable snapshot, see [`crate::live`]).
    /// With 10 000 hooks a full copy is several MiB kept for nothing.
    pub fn without_hooks(&self) -> Config {
        Config {
            listen: self.listen,
            metrics_listen: self.metrics_listen,
            upstream: self.upstream.clone(),
            upstreams: self.upstreams.clone(),
            bot_token: self.bot_token.clone(),
            settings: self.settings.clone(),
            server: self.server.clone(),
            limits: self.limits.clone(),
            store: self.store.clone(),
            hooks: Vec::new(),
            log_format: self.log_format,
        }
    }
}

impl Config {
    /// The hooks (by name) with a `signing_secret` written `***`: see [`Sending::masked_secrets`].
    pub fn hooks_with_masked_secrets(&self) -> Vec<String> {
        self.hooks
            .iter()
            .enumerate()
            .filter(|(_, h)| h.sending.masked_secrets > 0)
            .map(|(i, h)| match &h.beyond.id {
                Some(id) => id.clone(),
                None => format!("hooks[{i}]"),
            })
            .collect()
    }
}

impl fmt::Debug for Config {
    // Hand-written so that the bot token and hook tokens never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("metrics_listen", &self.metrics_listen)
            .field("upstream", &self.upstream.base_url)
            .field("bot_token", &"<redacted>")
            .field("store", &self.store.url)
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

/// Defaults, shared by validation and documentation (README, conf/posthook.yaml).
pub mod defaults {
    pub const OUTGOING_INTEGRATION_REQUESTS_TIMEOUT_SECS: u64 = 30;
    pub const MAX_POST_SIZE: u64 = 16383;
    pub const THREADS: u64 = 1;
    pub const GRACE_PERIOD_SECS: u64 = 5;
    pub const GRACEFUL_SHUTDOWN_TIMEOUT_SECS: u64 = 5;
    pub const UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;
    pub const UPSTREAM_KEEPALIVE_POOL_SIZE: u64 = 128;
    pub const MAX_INSPECTED_BODY_BYTES: u64 = 1024 * 1024;
    pub const MAX_DECODED_BODY_BYTES: u64 = 4 * 1024 * 1024;
    pub const QUEUE_CAPACITY: u64 = 10_000;
    pub const MAX_CONCURRENT_JOBS: u64 = 64;
    pub const MAX_CONCURRENT_DELIVERIES: u64 = 256;
    pub const MAX_IDLE_CONNECTIONS_PER_HOST: u64 = 256;
    pub const LOOKUP_CACHE_TTL_SECS: u64 = 60;
    pub const LOOKUP_CACHE_MAX_ENTRIES: u64 = 10_000;
    pub const LOOKUP_TIMEOUT_SECS: u64 = 10;
    pub const NAME_REFRESH_SECS: u64 = 300;
    pub const MAX_PENDING_DELIVERIES: u64 = 100_000;
    pub const HEADER_TIMEOUT_SECS: u64 = 30;
    pub const KEEPALIVE_TIMEOUT_SECS: u64 = 75;
    pub const BODY_TIMEOUT_SECS: u64 = 60;
    pub const MAX_CONNECTIONS: u64 = 10_000;
}

#[cfg(test)]
mod tests;
