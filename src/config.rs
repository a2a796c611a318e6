//! Configuration: the YAML file model, `${NAME}` substitution and validation into the
//! immutable [`Config`] the rest of posthook runs on.
//!
//! Two layers, as in river: [`file`] mirrors the YAML (unknown keys are errors, every string keeps
//! its line and column), and [`Config`] is what survives validation: parsed addresses, URLs,
//! durations and compiled hooks. The proxy never sees a raw config string. Every error names the
//! file, line, column and field, e.g.
//! `posthook.yaml:12:5: hooks[1].callback_urls[0]: not an http(s) URL`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

/// A configuration error, already formatted as `file:line:col: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The YAML file model: a literal mirror of the file, nothing checked beyond types.
pub mod file {
    use super::*;

    /// A string value with the place it was written at.
    pub type Str = Spanned<String>;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub listen: Option<Str>,
        pub metrics_listen: Option<Str>,
        pub upstream: Option<Str>,
        pub bot_token: Option<Str>,
        #[serde(default)]
        pub settings: Settings,
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub limits: Limits,
        #[serde(default)]
        pub hooks: Vec<Spanned<Hook>>,
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
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Hook {
        pub display_name: Option<Str>,
        pub description: Option<Str>,
        pub team_id: Option<Str>,
        pub channel_id: Option<Str>,
        pub trigger_words: Option<Vec<Str>>,
        pub trigger_when: Option<Spanned<TriggerWhenValue>>,
        pub callback_urls: Option<Vec<Str>>,
        pub content_type: Option<Str>,
        pub token: Option<Str>,
        pub username: Option<Str>,
        pub icon_url: Option<Str>,
    }

    /// `exact`, `starts_with`, or Mattermost's numeric `0` / `1`.
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum TriggerWhenValue {
        Number(i64),
        Name(String),
    }
}

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
}

impl fmt::Debug for HookConfig {
    // Hand-written so that the hook token never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookConfig")
            .field("display_name", &self.display_name)
            .field("team_id", &self.team_id)
            .field("channel_id", &self.channel_id)
            .field("trigger_words", &self.trigger_words)
            .field("trigger_when", &self.trigger_when)
            .field("callback_urls", &self.callback_urls.len())
            .field("content_type", &self.content_type)
            .field("token", &"<redacted>")
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
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub threads: usize,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_keepalive_pool_size: usize,
}

/// Bounds on every buffer, queue, task set and cache posthook keeps.
#[derive(Debug, Clone)]
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
}

/// The upstream Mattermost server.
#[derive(Debug, Clone)]
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
    pub upstream: Upstream,
    pub bot_token: String,
    pub settings: Settings,
    pub server: ServerSettings,
    pub limits: Limits,
    pub hooks: Vec<HookConfig>,
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
            bot_token: self.bot_token.clone(),
            settings: self.settings.clone(),
            server: self.server.clone(),
            limits: self.limits.clone(),
            hooks: Vec::new(),
        }
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
}

impl Config {
    /// Reads, substitutes and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{name}: cannot read: {e}")))?;
        Config::from_yaml(&name, &text, &|var| std::env::var(var).ok())
    }

    /// Parses YAML `text` (named `file_name` in errors); `env` resolves `${NAME}`.
    pub fn from_yaml(
        file_name: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let file: file::File = serde_saphyr::from_str(text).map_err(|e| {
            let loc = e.location().unwrap_or(Location::UNKNOWN);
            let msg = e.without_snippet().to_string();
            // serde-saphyr appends its own "at line X column Y"; the prefix already says it.
            let msg = strip_location_suffix(&msg);
            ConfigError(format!(
                "{file_name}:{}:{}: {msg}",
                loc.line(),
                loc.column()
            ))
        })?;
        Validator { file_name, env }.config(file)
    }
}

fn strip_location_suffix(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// A line and column, for errors about something that has no location of its own.
#[derive(Clone, Copy)]
struct Pos(u64, u64);

impl From<Location> for Pos {
    fn from(l: Location) -> Pos {
        Pos(l.line(), l.column())
    }
}

struct Validator<'a> {
    file_name: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Validator<'_> {
    fn err(&self, loc: impl Into<Pos>, field: &str, msg: impl fmt::Display) -> ConfigError {
        let Pos(line, column) = loc.into();
        ConfigError(format!(
            "{}:{line}:{column}: {field}: {msg}",
            self.file_name
        ))
    }

    /// Replaces every `${NAME}` with the environment variable NAME.
    fn subst(&self, s: &file::Str, field: &str) -> Result<String, ConfigError> {
        let raw = &s.value;
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.err(s.referenced, field, "unterminated ${ in value"))?;
            let name = &after[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(self.err(
                    s.referenced,
                    field,
                    format!("invalid variable name {name:?} in ${{…}}"),
                ));
            }
            let value = (self.env)(name).ok_or_else(|| {
                self.err(
                    s.referenced,
                    field,
                    format!("environment variable {name} is not set"),
                )
            })?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn required(
        &self,
        v: &Option<file::Str>,
        field: &str,
        parent: impl Into<Pos>,
    ) -> Result<(String, Location), ConfigError> {
        match v {
            Some(s) => Ok((self.subst(s, field)?, s.referenced)),
            None => Err(self.err(parent, field, "required")),
        }
    }

    fn optional(&self, v: &Option<file::Str>, field: &str) -> Result<String, ConfigError> {
        v.as_ref()
            .map(|s| self.subst(s, field))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    fn number(
        &self,
        v: &Option<Spanned<u64>>,
        field: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if n.value < min || n.value > max => Err(self.err(
                n.referenced,
                field,
                format!("must be between {min} and {max}"),
            )),
            Some(n) => Ok(n.value),
        }
    }

    fn config(&self, f: file::File) -> Result<Config, ConfigError> {
        let top = Pos(1, 1);
        let (listen_raw, listen_loc) = self.required(&f.listen, "listen", top)?;
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            self.err(
                listen_loc,
                "listen",
                "not an address:port such as 127.0.0.1:8065",
            )
        })?;
        let metrics_listen = match &f.metrics_listen {
            None => None,
            Some(raw) => {
                let value = self.subst(raw, "metrics_listen")?;
                let addr: SocketAddr = value.parse().map_err(|_| {
                    self.err(
                        raw.referenced,
                        "metrics_listen",
                        "not an address:port such as 127.0.0.1:9091",
                    )
                })?;
                if addr == listen {
                    return Err(self.err(
                        raw.referenced,
                        "metrics_listen",
                        "must differ from listen",
                    ));
                }
                Some(addr)
            }
        };
        let (up_raw, up_loc) = self.required(&f.upstream, "upstream", top)?;
        let upstream = self.upstream(&up_raw, up_loc)?;
        let (bot_token, bt_loc) = self.required(&f.bot_token, "bot_token", top)?;
        if bot_token.trim().is_empty() {
            return Err(self.err(bt_loc, "bot_token", "must not be empty"));
        }
        if bot_token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(self.err(bt_loc, "bot_token", "must not contain whitespace"));
        }
        let settings = self.settings(&f.settings)?;
        let server = self.server(&f.server)?;
        let limits = self.limits(&f.limits)?;
        let hooks = f
            .hooks
            .iter()
            .enumerate()
            .map(|(i, h)| self.hook(i, h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Config {
            listen,
            metrics_listen,
            upstream,
            bot_token,
            settings,
            server,
            limits,
            hooks,
        })
    }

    fn upstream(&self, raw: &str, loc: Location) -> Result<Upstream, ConfigError> {
        let url =
            url::Url::parse(raw).map_err(|_| self.err(loc, "upstream", "not an http(s) URL"))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(self.err(loc, "upstream", "not an http(s) URL")),
        };
        if !(url.path() == "/" || url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(self.err(
                loc,
                "upstream",
                "must be a base URL without path, query or fragment (clients' paths pass through unchanged)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.err(loc, "upstream", "must not carry credentials"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(self.err(loc, "upstream", "has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| self.err(loc, "upstream", "has no port"))?;
        let mut base_url = url.as_str().to_string();
        while base_url.ends_with('/') {
            base_url.pop();
        }
        Ok(Upstream {
            base_url,
            tls,
            host,
            port,
        })
    }

    fn settings(&self, s: &file::Settings) -> Result<Settings, ConfigError> {
        let timeout = self.number(
            &s.outgoing_integration_requests_timeout,
            "settings.outgoing_integration_requests_timeout",
            defaults::OUTGOING_INTEGRATION_REQUESTS_TIMEOUT_SECS,
            1,
            3600,
        )?;
        let max_post_size = self.number(
            &s.max_post_size,
            "settings.max_post_size",
            defaults::MAX_POST_SIZE,
            1,
            1_000_000,
        )?;
        let mut allowed = Vec::new();
        for (i, entry) in s
            .allowed_untrusted_internal_connections
            .iter()
            .flatten()
            .enumerate()
        {
            let field = format!("settings.allowed_untrusted_internal_connections[{i}]");
            let value = self.subst(entry, &field)?;
            // Mattermost's setting is one string of hosts and CIDRs separated by spaces or
            // commas; accept that form inside each list entry too.
            let parts: Vec<&str> = value
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|p| !p.is_empty())
                .collect();
            if parts.is_empty() {
                return Err(self.err(entry.referenced, &field, "must not be empty"));
            }
            for part in parts {
                allowed.push(parse_allow_entry(part).ok_or_else(|| {
                    self.err(
                        entry.referenced,
                        &field,
                        format!("{part:?} is neither a host name nor an IP address or CIDR"),
                    )
                })?);
            }
        }
        Ok(Settings {
            enable_post_username_override: s.enable_post_username_override.unwrap_or(false),
            enable_post_icon_override: s.enable_post_icon_override.unwrap_or(false),
            outgoing_integration_requests_timeout: Duration::from_secs(timeout),
            allowed_untrusted_internal_connections: allowed,
            max_post_size: max_post_size as usize,
        })
    }

    fn server(&self, s: &file::Server) -> Result<ServerSettings, ConfigError> {
        Ok(ServerSettings {
            threads: self.number(&s.threads, "server.threads", defaults::THREADS, 1, 256)? as usize,
            grace_period: Duration::from_secs(self.number(
                &s.grace_period_seconds,
                "server.grace_period_seconds",
                defaults::GRACE_PERIOD_SECS,
                0,
                3600,
            )?),
            graceful_shutdown_timeout: Duration::from_secs(self.number(
                &s.graceful_shutdown_timeout_seconds,
                "server.graceful_shutdown_timeout_seconds",
                defaults::GRACEFUL_SHUTDOWN_TIMEOUT_SECS,
                0,
                3600,
            )?),
            upstream_connect_timeout: Duration::from_secs(self.number(
                &s.upstream_connect_timeout_seconds,
                "server.upstream_connect_timeout_seconds",
                defaults::UPSTREAM_CONNECT_TIMEOUT_SECS,
                1,
                300,
            )?),
            upstream_keepalive_pool_size: self.number(
                &s.upstream_keepalive_pool_size,
                "server.upstream_keepalive_pool_size",
                defaults::UPSTREAM_KEEPALIVE_POOL_SIZE,
                0,
                1_000_000,
            )? as usize,
        })
    }

    fn limits(&self, l: &file::Limits) -> Result<Limits, ConfigError> {
        const GIB: u64 = 1024 * 1024 * 1024;
        Ok(Limits {
            max_inspected_body_bytes: self.number(
                &l.max_inspected_body_bytes,
                "limits.max_inspected_body_bytes",
                defaults::MAX_INSPECTED_BODY_BYTES,
                1024,
                GIB,
            )? as usize,
            max_decoded_body_bytes: self.number(
                &l.max_decoded_body_bytes,
                "limits.max_decoded_body_bytes",
                defaults::MAX_DECODED_BODY_BYTES,
                1024,
                GIB,
            )? as usize,
            queue_capacity: self.number(
                &l.queue_capacity,
                "limits.queue_capacity",
                defaults::QUEUE_CAPACITY,
                1,
                10_000_000,
            )? as usize,
            max_concurrent_jobs: self.number(
                &l.max_concurrent_jobs,
                "limits.max_concurrent_jobs",
                defaults::MAX_CONCURRENT_JOBS,
                1,
                100_000,
            )? as usize,
            max_concurrent_deliveries: self.number(
                &l.max_concurrent_deliveries,
                "limits.max_concurrent_deliveries",
                defaults::MAX_CONCURRENT_DELIVERIES,
                1,
                100_000,
            )? as usize,
            max_idle_connections_per_host: self.number(
                &l.max_idle_connections_per_host,
                "limits.max_idle_connections_per_host",
                defaults::MAX_IDLE_CONNECTIONS_PER_HOST,
                0,
                100_000,
            )? as usize,
            lookup_cache_ttl: Duration::from_secs(self.number(
                &l.lookup_cache_ttl_seconds,
                "limits.lookup_cache_ttl_seconds",
                defaults::LOOKUP_CACHE_TTL_SECS,
                0,
                86_400,
            )?),
            lookup_cache_max_entries: self.number(
                &l.lookup_cache_max_entries,
                "limits.lookup_cache_max_entries",
                defaults::LOOKUP_CACHE_MAX_ENTRIES,
                0,
                100_000_000,
            )?,
            lookup_timeout: Duration::from_secs(self.number(
                &l.lookup_timeout_seconds,
                "limits.lookup_timeout_seconds",
                defaults::LOOKUP_TIMEOUT_SECS,
                1,
                300,
            )?),
        })
    }

    fn hook(&self, i: usize, h: &Spanned<file::Hook>) -> Result<HookConfig, ConfigError> {
        let p = format!("hooks[{i}]");
        let at = h.referenced;
        let h = &h.value;
        let limited = |v: &Option<file::Str>, name: &str, max: usize| {
            let field = format!("{p}.{name}");
            let value = self.optional(v, &field)?;
            if value.chars().count() > max {
                let loc = v.as_ref().map(|s| s.referenced).unwrap_or(at);
                return Err(self.err(loc, &field, format!("longer than {max} characters")));
            }
            Ok(value)
        };
        let display_name = limited(&h.display_name, "display_name", 64)?;
        let description = limited(&h.description, "description", 500)?;
        let username = limited(&h.username, "username", 64)?;
        let icon_url = limited(&h.icon_url, "icon_url", 1024)?;
        let content_type_raw = limited(&h.content_type, "content_type", 128)?;
        let id_field = |v: &Option<file::Str>, name: &str| -> Result<Option<String>, ConfigError> {
            let Some(s) = v else { return Ok(None) };
            let field = format!("{p}.{name}");
            let value = self.subst(s, &field)?;
            if value.is_empty()
                || value.len() > 64
                || !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.err(
                    s.referenced,
                    &field,
                    "not a Mattermost id (letters, digits, '_' or '-')",
                ));
            }
            Ok(Some(value))
        };
        let team_id = id_field(&h.team_id, "team_id")?;
        let channel_id = id_field(&h.channel_id, "channel_id")?;

        let mut trigger_words = Vec::new();
        for (j, w) in h.trigger_words.iter().flatten().enumerate() {
            let field = format!("{p}.trigger_words[{j}]");
            let word = self.subst(w, &field)?;
            if word.is_empty() {
                return Err(self.err(w.referenced, &field, "must not be empty"));
            }
            trigger_words.push(word);
        }
        // Mattermost limits the `%s` form of the slice ("[a b c]") to 1024 characters.
        if trigger_words
            .iter()
            .map(|w| w.chars().count() + 1)
            .sum::<usize>()
            + 1
            > 1024
        {
            return Err(self.err(
                at,
                &format!("{p}.trigger_words"),
                "longer than 1024 characters in all",
            ));
        }
        if channel_id.is_none() && trigger_words.is_empty() {
            return Err(self.err(
                at,
                &format!("{p}.trigger_words"),
                "at least one trigger word is required when channel_id is not set",
            ));
        }
        let trigger_when = match &h.trigger_when {
            None => TriggerWhen::Exact,
            Some(t) => match &t.value {
                file::TriggerWhenValue::Number(0) => TriggerWhen::Exact,
                file::TriggerWhenValue::Number(1) => TriggerWhen::StartsWith,
                file::TriggerWhenValue::Name(n) if n == "exact" => TriggerWhen::Exact,
                file::TriggerWhenValue::Name(n) if n == "starts_with" => TriggerWhen::StartsWith,
                _ => {
                    return Err(self.err(
                        t.referenced,
                        &format!("{p}.trigger_when"),
                        "must be exact, starts_with, 0 or 1",
                    ))
                }
            },
        };

        let mut callback_urls = Vec::new();
        for (j, u) in h.callback_urls.iter().flatten().enumerate() {
            let field = format!("{p}.callback_urls[{j}]");
            let raw = self.subst(u, &field)?;
            callback_urls.push(
                parse_callback_url(&raw)
                    .ok_or_else(|| self.err(u.referenced, &field, "not an http(s) URL"))?,
            );
        }
        if callback_urls.is_empty() {
            return Err(self.err(
                at,
                &format!("{p}.callback_urls"),
                "at least one callback URL is required",
            ));
        }
        let (token, token_loc) = self.required(&h.token, &format!("{p}.token"), at)?;
        if token.is_empty() {
            return Err(self.err(token_loc, &format!("{p}.token"), "must not be empty"));
        }
        Ok(HookConfig {
            display_name,
            description,
            team_id,
            channel_id,
            trigger_words,
            trigger_when,
            callback_urls,
            content_type: if content_type_raw == "application/json" {
                ContentType::Json
            } else {
                ContentType::Form
            },
            token,
            username,
            icon_url,
        })
    }
}

/// Mattermost's `IsValidHTTPURL`: starts with `http://` or `https://` and parses, with a host.
fn parse_callback_url(raw: &str) -> Option<url::Url> {
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return None;
    }
    let url = url::Url::parse(raw).ok()?;
    url.host_str().filter(|h| !h.is_empty())?;
    Some(url)
}

fn parse_allow_entry(part: &str) -> Option<AllowEntry> {
    if let Ok(net) = part.parse::<IpNet>() {
        return Some(AllowEntry::Net(net));
    }
    if let Ok(ip) = part.parse::<IpAddr>() {
        return Some(AllowEntry::Net(IpNet::from(ip)));
    }
    let host = part.trim_end_matches('.').to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then_some(AllowEntry::Host(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "listen: \"127.0.0.1:8065\"\nupstream: \"http://127.0.0.1:8066\"\nbot_token: \"${BOT}\"\n";

    fn env(name: &str) -> Option<String> {
        match name {
            "BOT" => Some("bottoken123".into()),
            "HOOK_URL" => Some("http://ci.example.com:5000/hook".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml("posthook.yaml", text, &env)
    }

    fn err(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("config unexpectedly valid:\n{text}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn the_copy_kept_for_reloads_differs_only_by_its_hooks() {
        let text = format!(
            "{MINIMAL}metrics_listen: \"127.0.0.1:9091\"\nserver:\n  threads: 2\nlimits:\n  queue_capacity: 7\nhooks:\n  - trigger_words: [\"#a\"]\n    callback_urls: [\"${{HOOK_URL}}\"]\n    token: \"t1\"\n"
        );
        let c = load(&text).unwrap();
        let kept = c.without_hooks();
        assert!(kept.hooks.is_empty());
        assert_eq!(c.hooks.len(), 1);
        // Nothing a reload compares is lost.
        assert!(crate::live::restart_only_changes(&kept, &c).is_empty());
        assert_eq!(
            format!("{kept:?}"),
            format!("{c:?}").replace("hooks: 1", "hooks: 0")
        );
    }

    #[test]
    fn minimal_config_takes_mattermost_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8065".parse().unwrap());
        assert_eq!(c.upstream.base_url, "http://127.0.0.1:8066");
        assert_eq!(c.bot_token, "bottoken123");
        assert!(!c.settings.enable_post_username_override);
        assert!(!c.settings.enable_post_icon_override);
        assert_eq!(
            c.settings.outgoing_integration_requests_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(c.settings.max_post_size, 16383);
        assert!(c.hooks.is_empty());
        assert_eq!(c.metrics_listen, None, "no metrics endpoint unless asked");
    }

    #[test]
    fn metrics_listen_is_an_address_apart_from_listen() {
        let c = load(&format!("{MINIMAL}metrics_listen: \"127.0.0.1:9091\"\n")).unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9091".parse().unwrap()));
        assert_eq!(
            err(&format!("{MINIMAL}metrics_listen: \"9091\"\n")),
            "posthook.yaml:4:17: metrics_listen: not an address:port such as 127.0.0.1:9091"
        );
        assert_eq!(
            err(&format!("{MINIMAL}metrics_listen: \"127.0.0.1:8065\"\n")),
            "posthook.yaml:4:17: metrics_listen: must differ from listen"
        );
    }

    #[test]
    fn bad_callback_url_names_file_line_column_and_field() {
        let text = format!(
            "{MINIMAL}hooks:\n  - trigger_words: [\"#build\"]\n    callback_urls: [\"http://ok.example\"]\n    token: t\n  - trigger_words: [\"#deploy\"]\n    callback_urls:\n      - \"nowhere.com/\"\n    token: t\n"
        );
        assert_eq!(
            err(&text),
            "posthook.yaml:10:9: hooks[1].callback_urls[0]: not an http(s) URL"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        let e = err(&format!("{MINIMAL}setings: {{}}\n"));
        assert!(e.starts_with("posthook.yaml:4:1: "), "{e}");
        assert!(e.contains("setings"), "{e}");
        let e = err(&format!(
            "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_url: [\"http://x\"]\n    token: t\n"
        ));
        assert!(e.starts_with("posthook.yaml:6:5: "), "{e}");
        assert!(e.contains("callback_url"), "{e}");
    }

    #[test]
    fn unset_environment_variable_is_named() {
        let e = err("listen: \"127.0.0.1:1\"\nupstream: \"http://a\"\nbot_token: \"${NOPE}\"\n");
        assert_eq!(
            e,
            "posthook.yaml:3:12: bot_token: environment variable NOPE is not set"
        );
    }

    #[test]
    fn variables_are_substituted_inside_strings() {
        let c = load(&format!(
            "{MINIMAL}hooks:\n  - trigger_words: [\"#b\"]\n    callback_urls: [\"${{HOOK_URL}}?x=1\"]\n    token: \"pre-${{BOT}}-post\"\n"
        ))
        .unwrap();
        assert_eq!(c.hooks[0].token, "pre-bottoken123-post");
        assert_eq!(
            c.hooks[0].callback_urls[0].as_str(),
            "http://ci.example.com:5000/hook?x=1"
        );
    }

    #[test]
    fn hook_rules_follow_mattermost() {
        let cases: &[(&str, &str)] = &[
            (
                "  - callback_urls: [\"http://x\"]\n    token: t\n",
                "at least one trigger word is required",
            ),
            (
                "  - trigger_words: [\"\"]\n    callback_urls: [\"http://x\"]\n    token: t\n",
                "trigger_words[0]: must not be empty",
            ),
            (
                "  - trigger_words: [a]\n    token: t\n",
                "at least one callback URL is required",
            ),
            (
                "  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n",
                "hooks[0].token: required",
            ),
            (
                "  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: \"\"\n",
                "hooks[0].token: must not be empty",
            ),
            (
                "  - trigger_words: [a]\n    callback_urls: [\"ftp://x\"]\n    token: t\n",
                "not an http(s) URL",
            ),
            (
                "  - trigger_words: [a]\n    trigger_when: 2\n    callback_urls: [\"http://x\"]\n    token: t\n",
                "must be exact, starts_with, 0 or 1",
            ),
            (
                "  - trigger_words: [a]\n    display_name: \"0123456789012345678901234567890123456789012345678901234567890123X\"\n    callback_urls: [\"http://x\"]\n    token: t\n",
                "display_name: longer than 64 characters",
            ),
        ];
        for (hook, want) in cases {
            let e = err(&format!("{MINIMAL}hooks:\n{hook}"));
            assert!(e.contains(want), "hook {hook:?}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn channel_hook_needs_no_trigger_words_and_modes_parse() {
        let c = load(&format!(
            "{MINIMAL}hooks:\n  - channel_id: hawos4dqtby53pd64o4a4cmeoo\n    callback_urls: [\"http://x\"]\n    token: t\n  - trigger_words: [a]\n    trigger_when: 1\n    content_type: application/json\n    callback_urls: [\"http://x\"]\n    token: t\n  - trigger_words: [a]\n    trigger_when: starts_with\n    content_type: \"\"\n    callback_urls: [\"http://x\"]\n    token: t\n"
        ))
        .unwrap();
        assert_eq!(c.hooks[0].trigger_when, TriggerWhen::Exact);
        assert_eq!(c.hooks[0].content_type, ContentType::Form);
        assert_eq!(c.hooks[1].trigger_when, TriggerWhen::StartsWith);
        assert_eq!(c.hooks[1].content_type, ContentType::Json);
        assert_eq!(c.hooks[2].trigger_when, TriggerWhen::StartsWith);
        assert_eq!(c.hooks[2].content_type, ContentType::Form);
    }

    #[test]
    fn upstream_and_listen_are_checked() {
        let e = err("listen: \"nowhere\"\nupstream: \"http://a\"\nbot_token: x\n");
        assert!(e.starts_with("posthook.yaml:1:9: listen:"), "{e}");
        let e = err("listen: \"127.0.0.1:1\"\nupstream: \"ftp://a\"\nbot_token: x\n");
        assert!(e.contains("upstream: not an http(s) URL"), "{e}");
        let e = err("listen: \"127.0.0.1:1\"\nupstream: \"http://a/mm\"\nbot_token: x\n");
        assert!(e.contains("upstream: must be a base URL"), "{e}");
        let e = err("listen: \"127.0.0.1:1\"\nbot_token: x\n");
        assert!(e.contains("upstream: required"), "{e}");
        let c = load("listen: \"[::1]:1\"\nupstream: \"https://mm.example.com/\"\nbot_token: x\n")
            .unwrap();
        assert!(c.upstream.tls);
        assert_eq!(c.upstream.port, 443);
        assert_eq!(c.upstream.base_url, "https://mm.example.com");
    }

    #[test]
    fn allow_list_accepts_hosts_cidrs_and_mattermost_string_form() {
        let c = load(&format!(
            "{MINIMAL}settings:\n  allowed_untrusted_internal_connections: [\"ci.internal\", \"10.0.0.0/8 127.0.0.1,::1\"]\n"
        ))
        .unwrap();
        let a = &c.settings.allowed_untrusted_internal_connections;
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], AllowEntry::Host("ci.internal".into()));
        assert_eq!(a[1], AllowEntry::Net("10.0.0.0/8".parse().unwrap()));
        assert_eq!(a[2], AllowEntry::Net("127.0.0.1/32".parse().unwrap()));
        let e = err(&format!(
            "{MINIMAL}settings:\n  allowed_untrusted_internal_connections: [\"bad host!\"]\n"
        ));
        assert!(
            e.contains("allowed_untrusted_internal_connections[0]"),
            "{e}"
        );
    }

    #[test]
    fn numbers_are_range_checked() {
        let e = err(&format!("{MINIMAL}limits:\n  queue_capacity: 0\n"));
        assert_eq!(
            e,
            "posthook.yaml:5:19: limits.queue_capacity: must be between 1 and 10000000"
        );
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = load(&format!(
            "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: hooksecret\n"
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("bottoken123") && !shown.contains("hooksecret"),
            "{shown}"
        );
    }
}
