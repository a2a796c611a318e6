//! Validation: the file model ([`super::file`]) → the validated [`Config`], with `${NAME}`
//! substituted and every error formatted as `FILE:LINE:COL: field: message`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

use super::error::{self, ConfigError};
use super::{
    defaults, file, AllowEntry, Config, ContentType, HookConfig, Limits, LogFormat, ServerSettings,
    Settings, TriggerWhen,
};

impl Config {
    /// Reads, substitutes and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(&name, e))?;
        Config::from_yaml(&name, &text, &|var| std::env::var(var).ok())
    }

    /// Parses YAML `text` (named `file_name` in errors); `env` resolves `${NAME}`.
    pub fn from_yaml(
        file_name: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // The path of the value being read when reading failed, for the error.
        let mut path = String::new();
        let file = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, file::File>(de).map_err(|e| {
                path = e.path().to_string();
                e.into_inner()
            })
        })
        .map_err(|e| error::from_yaml(file_name, text, &path, &e))?;
        Validator { file_name, env }.config(file)
    }
}

/// A line and column, for errors about something that has no location of its own.
#[derive(Clone, Copy)]
pub(super) struct Pos(pub(super) u64, pub(super) u64);

impl From<Location> for Pos {
    fn from(l: Location) -> Pos {
        Pos(l.line(), l.column())
    }
}

pub(super) struct Validator<'a> {
    pub(super) file_name: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Validator<'_> {
    pub(super) fn err(
        &self,
        loc: impl Into<Pos>,
        field: &str,
        msg: impl fmt::Display,
    ) -> ConfigError {
        let Pos(line, column) = loc.into();
        ConfigError::new(format!(
            "{}:{line}:{column}: {field}: {msg}",
            self.file_name
        ))
    }

    /// Replaces every `${NAME}` with the environment variable NAME.
    pub(super) fn subst(&self, s: &file::Str, field: &str) -> Result<String, ConfigError> {
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
        let upstreams = self.upstreams(f.upstream.as_ref(), top)?;
        let upstream = upstreams[0].clone();
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
        let log_format = match &f.log_format {
            None => LogFormat::Text,
            Some(raw) => match self.subst(raw, "log_format")?.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => return Err(self.err(raw.referenced, "log_format", "must be text or json")),
            },
        };
        let settings = self.settings(&f.settings)?;
        let server = self.server(&f.server)?;
        let limits = self.limits(&f.limits)?;
        let store = self.store(f.store.as_ref())?;
        let hooks = f
            .hooks
            .iter()
            .enumerate()
            .map(|(i, h)| self.hook(i, h))
            .collect::<Result<Vec<_>, _>>()?;
        self.unique_ids(&f.hooks, &hooks)?;
        Ok(Config {
            listen,
            metrics_listen,
            upstream,
            upstreams,
            bot_token,
            settings,
            server,
            limits,
            store,
            hooks,
            log_format,
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
        let secs = |v: &Option<Spanned<u64>>, key: &str, default: u64, min: u64| {
            let n = self.number(v, &format!("server.{key}"), default, min, 3600)?;
            Ok::<_, ConfigError>(Duration::from_secs(n))
        };
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
            header_timeout: secs(
                &s.header_timeout_seconds,
                "header_timeout_seconds",
                defaults::HEADER_TIMEOUT_SECS,
                1,
            )?,
            keepalive_timeout: secs(
                &s.keepalive_timeout_seconds,
                "keepalive_timeout_seconds",
                defaults::KEEPALIVE_TIMEOUT_SECS,
                0,
            )?,
            body_timeout: secs(
                &s.body_timeout_seconds,
                "body_timeout_seconds",
                defaults::BODY_TIMEOUT_SECS,
                1,
            )?,
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
            max_pending_deliveries: self.number(
                &l.max_pending_deliveries,
                "limits.max_pending_deliveries",
                defaults::MAX_PENDING_DELIVERIES,
                0,
                100_000_000,
            )? as usize,
            max_connections: self.number(
                &l.max_connections,
                "limits.max_connections",
                defaults::MAX_CONNECTIONS,
                1,
                10_000_000,
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
            name_refresh: Duration::from_secs(self.number(
                &l.name_refresh_seconds,
                "limits.name_refresh_seconds",
                defaults::NAME_REFRESH_SECS,
                1,
                86_400,
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
        for (j, w) in h.trigger_words.iter().flat_map(|l| &l.value).enumerate() {
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
        let no_channel = channel_id.is_none() && h.channel.is_none();
        if no_channel && trigger_words.is_empty() && h.trigger_pattern.is_none() {
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
            beyond: self.beyond(&p, h)?,
            sending: self.sending(&p, h)?,
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
