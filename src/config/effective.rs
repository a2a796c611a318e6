//! `posthook -c FILE -T`: the effective configuration as YAML that `-t` accepts, as `nginx -T`
//! shows nginx's: every key with its value in force (defaults filled in, `${NAME}`s applied, a
//! relative SQLite path made absolute), every secret (bot token, hook tokens, signing secrets,
//! passwords in URLs) written exactly `***`.

use std::fmt::Write;

use super::{
    AllowEntry, Config, ContentType, Event, HookConfig, StoreUrl, Thread, TriggerWhen, MASKED,
};

/// `text` as a YAML double-quoted scalar (JSON's escapes are YAML's).
fn q(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A list of strings in YAML's flow style.
fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = items.into_iter().map(q).collect();
    format!("[{}]", items.join(", "))
}

/// `url` with its password (if any) masked.
fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Setting a password fails only for URLs that cannot have one.
            let _ = u.set_password(Some(MASKED));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Config {
    /// The effective configuration (see the module docs).
    pub fn effective_yaml(&self) -> String {
        let mut w = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_effective(&mut w);
        w
    }

    fn write_effective(&self, w: &mut String) -> std::fmt::Result {
        writeln!(
            w,
            "# posthook -T: the effective configuration; secrets are {MASKED}"
        )?;
        writeln!(w, "listen: {}", q(&self.listen.to_string()))?;
        if let Some(m) = self.metrics_listen {
            writeln!(w, "metrics_listen: {}", q(&m.to_string()))?;
        }
        if self.upstreams.len() > 1 {
            let urls = self.upstreams.iter().map(|u| u.base_url.as_str());
            writeln!(w, "upstream: {}", list(urls))?;
        } else {
            writeln!(w, "upstream: {}", q(&self.upstream.base_url))?;
        }
        writeln!(w, "bot_token: {}", q(MASKED))?;
        let format = match self.log_format {
            super::LogFormat::Text => "text",
            super::LogFormat::Json => "json",
        };
        writeln!(w, "log_format: {format}")?;
        let s = &self.settings;
        let allowed: Vec<String> = s
            .allowed_untrusted_internal_connections
            .iter()
            .map(|a| match a {
                AllowEntry::Host(h) => h.clone(),
                AllowEntry::Net(n) => n.to_string(),
            })
            .collect();
        writeln!(w, "settings:")?;
        writeln!(
            w,
            "  enable_post_username_override: {}",
            s.enable_post_username_override
        )?;
        writeln!(
            w,
            "  enable_post_icon_override: {}",
            s.enable_post_icon_override
        )?;
        writeln!(
            w,
            "  outgoing_integration_requests_timeout: {}",
            s.outgoing_integration_requests_timeout.as_secs()
        )?;
        writeln!(
            w,
            "  allowed_untrusted_internal_connections: {}",
            list(allowed.iter().map(String::as_str))
        )?;
        writeln!(w, "  max_post_size: {}", s.max_post_size)?;
        let v = &self.server;
        writeln!(w, "server:")?;
        writeln!(w, "  threads: {}", v.threads)?;
        writeln!(w, "  grace_period_seconds: {}", v.grace_period.as_secs())?;
        writeln!(
            w,
            "  graceful_shutdown_timeout_seconds: {}",
            v.graceful_shutdown_timeout.as_secs()
        )?;
        writeln!(
            w,
            "  upstream_connect_timeout_seconds: {}",
            v.upstream_connect_timeout.as_secs()
        )?;
        writeln!(
            w,
            "  upstream_keepalive_pool_size: {}",
            v.upstream_keepalive_pool_size
        )?;
        for (key, value) in [
            ("header_timeout_seconds", v.header_timeout),
            ("keepalive_timeout_seconds", v.keepalive_timeout),
            ("body_timeout_seconds", v.body_timeout),
        ] {
            writeln!(w, "  {key}: {}", value.as_secs())?;
        }
        let l = &self.limits;
        writeln!(w, "limits:")?;
        for (key, value) in [
            (
                "max_inspected_body_bytes",
                l.max_inspected_body_bytes as u64,
            ),
            ("max_decoded_body_bytes", l.max_decoded_body_bytes as u64),
            ("queue_capacity", l.queue_capacity as u64),
            ("max_concurrent_jobs", l.max_concurrent_jobs as u64),
            (
                "max_concurrent_deliveries",
                l.max_concurrent_deliveries as u64,
            ),
            (
                "max_idle_connections_per_host",
                l.max_idle_connections_per_host as u64,
            ),
            ("lookup_cache_ttl_seconds", l.lookup_cache_ttl.as_secs()),
            ("lookup_cache_max_entries", l.lookup_cache_max_entries),
            ("lookup_timeout_seconds", l.lookup_timeout.as_secs()),
            ("max_pending_deliveries", l.max_pending_deliveries as u64),
            ("name_refresh_seconds", l.name_refresh.as_secs()),
            ("max_connections", l.max_connections as u64),
        ] {
            writeln!(w, "  {key}: {value}")?;
        }
        let st = &self.store;
        let url = match &st.url {
            StoreUrl::Memory => "memory".to_string(),
            StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreUrl::Postgres(url) => masked_url(url),
        };
        writeln!(w, "store:")?;
        writeln!(w, "  url: {}", q(&url))?;
        writeln!(w, "  retention_days: {}", st.retention.as_secs() / 86_400)?;
        writeln!(w, "  lease_margin_seconds: {}", st.lease_margin.as_secs())?;
        writeln!(w, "  max_connections: {}", st.max_connections)?;
        writeln!(
            w,
            "  commit_interval_ms: {}",
            st.commit_interval.as_millis()
        )?;
        let sync = if st.sqlite_sync_full {
            "full"
        } else {
            "normal"
        };
        writeln!(w, "  sqlite_synchronous: {sync}")?;
        if self.hooks.is_empty() {
            writeln!(w, "hooks: []")?;
        } else {
            writeln!(w, "hooks:")?;
        }
        for h in &self.hooks {
            write_hook(w, h)?;
        }
        Ok(())
    }
}

fn write_hook(w: &mut String, h: &HookConfig) -> std::fmt::Result {
    let b = &h.beyond;
    // The first key opens the list entry.
    let mut first = true;
    let mut key = |w: &mut String, k: &str, v: String| {
        let lead = if std::mem::take(&mut first) {
            "  - "
        } else {
            "    "
        };
        writeln!(w, "{lead}{k}: {v}")
    };
    if let Some(id) = &b.id {
        key(w, "id", q(id))?;
    }
    key(w, "display_name", q(&h.display_name))?;
    key(w, "description", q(&h.description))?;
    match (&b.team_name, &h.team_id) {
        (Some(name), _) => key(w, "team", q(name))?,
        (None, Some(t)) => key(w, "team_id", q(t))?,
        (None, None) => {}
    }
    match (&b.channel_name, &h.channel_id) {
        (Some((team, channel)), _) => key(w, "channel", q(&format!("{team}/{channel}")))?,
        (None, Some(c)) => key(w, "channel_id", q(c))?,
        (None, None) => {}
    }
    if !h.trigger_words.is_empty() {
        key(
            w,
            "trigger_words",
            list(h.trigger_words.iter().map(String::as_str)),
        )?;
    }
    let when = match h.trigger_when {
        TriggerWhen::Exact => "exact",
        TriggerWhen::StartsWith => "starts_with",
    };
    // A pattern replaces trigger words, and `trigger_when` with them.
    match &b.trigger_pattern {
        Some(p) => key(w, "trigger_pattern", q(p.0.as_str()))?,
        None => key(w, "trigger_when", when.into())?,
    }
    let urls: Vec<String> = h
        .callback_urls
        .iter()
        .map(|u| masked_url(u.as_str()))
        .collect();
    key(w, "callback_urls", list(urls.iter().map(String::as_str)))?;
    let content_type = match h.content_type {
        ContentType::Json => "application/json",
        ContentType::Form => "application/x-www-form-urlencoded",
    };
    key(w, "content_type", q(content_type))?;
    key(w, "token", q(MASKED))?;
    key(w, "username", q(&h.username))?;
    key(w, "icon_url", q(&h.icon_url))?;
    key(w, "enabled", b.enabled.to_string())?;
    let types: Vec<&str> = ["O", "P", "D", "G"]
        .into_iter()
        .filter(|t| b.channel_types.contains(t))
        .collect();
    key(w, "channel_types", list(types))?;
    let events: Vec<&str> = [Event::Posted, Event::Edited]
        .into_iter()
        .filter(|e| b.events.contains(*e))
        .map(Event::as_str)
        .collect();
    key(w, "events", list(events))?;
    if let Some(users) = &b.from_users {
        key(w, "from_users", list(users.iter().map(String::as_str)))?;
    }
    key(w, "exclude_bots", b.exclude_bots.to_string())?;
    let thread = match b.thread {
        Thread::Any => "any",
        Thread::Root => "root",
        Thread::Reply => "reply",
    };
    key(w, "thread", thread.into())?;
    key(w, "payload_extras", b.payload_extras.to_string())?;
    let s = &h.sending;
    let secrets = s.signing_secrets.len() + s.masked_secrets;
    if secrets > 0 {
        key(w, "signing_secret", list(vec![MASKED; secrets]))?;
    }
    if let Some(r) = &s.retry {
        key(
            w,
            "retry",
            format!(
                "{{attempts: {}, initial_seconds: {}, max_seconds: {}}}",
                r.attempts,
                r.initial.as_secs(),
                r.max.as_secs()
            ),
        )?;
    }
    if let Some(t) = s.timeout {
        key(w, "timeout_seconds", t.as_secs().to_string())?;
    }
    if let Some(m) = s.max_in_flight {
        key(w, "max_in_flight", m.to_string())?;
    }
    if let Some(n) = &s.notify {
        key(
            w,
            "notify",
            format!(
                "{{username: {}, after_failures: {}}}",
                q(&n.username),
                n.after_failures
            ),
        )?;
    }
    Ok(())
}
