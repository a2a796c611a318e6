//! Starts a real posthook (the library's `app::spawn`) in front of the Mattermost stand-in,
//! on 127.0.0.1 ephemeral ports, with a standard set of fixtures. [`Fixture`] (`fixture.rs`)
//! starts the stand-in, a webhook receiver and posthook in one go.
//!
//! This stays apart from `tests/support/`, on which it builds: support is the world around
//! posthook and never uses the library, while this is where the end-to-end tests start posthook
//! through the library's API (`app`, `config`, `stats`), so a change to that API is followed
//! here, never in support. `benches/soak.rs` includes both by path.

#![allow(dead_code)]

pub mod binary;
mod fixture;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use posthook::app::{Options, Running};
use posthook::config::Config;
use posthook::stats::Snapshot;

use crate::support::{MattermostStandIn, RawResponse};

// Each test binary uses its own part of the harness.
#[allow(unused_imports)]
pub use fixture::{Fixture, FixtureBuilder};

pub const TEAM: &str = "team1";
pub const TEAM_NAME: &str = "myteam";
pub const PUBLIC: &str = "chanpub";
pub const PUBLIC_NAME: &str = "town-square";
pub const PUBLIC2: &str = "chanpub2";
pub const PRIVATE: &str = "chanpriv";
pub const DM: &str = "chandm";
pub const GROUP: &str = "changroup";
/// A group message's name: the hex SHA-1 of its sorted member ids (Mattermost's
/// `GetGroupNameFromUserIds`); any 40 hex digits serve here.
pub const GROUP_NAME: &str = "8b1a9953c4611296a827abf8c47804d7e6c49c6b";
pub const OTHER_TEAM: &str = "team2";
pub const OTHER_CHANNEL: &str = "chanother";
pub const USER: &str = "user1";
pub const USER_NAME: &str = "alice";
pub const USER_TOKEN: &str = "usertokensecret";
pub const BOT: &str = "botuser";
pub const BOT_NAME: &str = "hookbot";
pub const BOT_TOKEN: &str = "bottokensecret";
pub const T: Duration = Duration::from_secs(10);

/// The stand-in with one team of public, private and DM channels, a user and the bot.
pub async fn standin() -> MattermostStandIn {
    let mm = MattermostStandIn::start().await;
    mm.add_team(TEAM, TEAM_NAME);
    mm.add_team(OTHER_TEAM, "otherteam");
    mm.add_channel(PUBLIC, TEAM, PUBLIC_NAME, "O");
    mm.add_channel(PUBLIC2, TEAM, "off-topic", "O");
    mm.add_channel(PRIVATE, TEAM, "secret", "P");
    mm.add_channel(DM, "", "botuser__user1", "D");
    mm.add_channel(GROUP, "", GROUP_NAME, "G");
    mm.add_channel(OTHER_CHANNEL, OTHER_TEAM, "elsewhere", "O");
    mm.add_user(USER, USER_NAME, false);
    mm.add_user(BOT, BOT_NAME, true);
    mm.add_token(USER_TOKEN, USER);
    mm.add_token(BOT_TOKEN, BOT);
    mm
}

/// An unused loopback port for posthook to listen on, drawn below the kernel's ephemeral
/// range (32768-60999 on Linux): ports that servers bound to port 0 get (stand-ins,
/// receivers) never land here, so no other test can take it between this check and
/// posthook's bind, which made a test talk to another test's server.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A config for posthook on a fresh port in front of `upstream`; `extra` is appended
/// verbatim (top-level `settings:`, `limits:` or `hooks:` sections).
pub fn config_text(upstream: &str, extra: &str) -> (String, SocketAddr) {
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "listen: \"{listen}\"\nupstream: \"{upstream}\"\nbot_token: \"{BOT_TOKEN}\"\nserver:\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{extra}"
    );
    (text, listen)
}

pub struct Posthook {
    pub addr: SocketAddr,
    pub running: Option<Running>,
}

impl Posthook {
    pub fn stats(&self) -> Snapshot {
        self.running.as_ref().unwrap().handle.stats.snapshot()
    }

    /// Waits until `f(stats)` holds.
    pub async fn wait_stats(&self, what: &str, f: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + T;
        loop {
            let s = self.stats();
            if f(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; stats: {s:#?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Posthook {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            // Stopping joins Pingora's thread: do it off the async worker.
            std::thread::spawn(move || r.stop(false)).join().unwrap();
        }
    }
}

/// Starts posthook with `text` and waits until it accepts connections.
pub async fn start(text: &str, listen: SocketAddr) -> Posthook {
    start_with(text, listen, Options::default()).await
}

pub async fn start_with(text: &str, listen: SocketAddr, options: Options) -> Posthook {
    let config =
        Config::from_yaml("test.yaml", text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let running = tokio::task::spawn_blocking(move || posthook::app::spawn(&config, options))
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + T;
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "posthook did not start listening on {listen}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Posthook {
        addr: listen,
        running: Some(running),
    }
}

/// Starts posthook in front of `upstream` with `extra` config and a metrics endpoint; waits
/// until both accept connections and returns posthook and the endpoint's address.
pub async fn start_with_metrics(upstream: &str, extra: &str) -> (Posthook, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // Two free ports drawn apart can still be the same one: draw the listen port again then.
    let (text, listen) = loop {
        let (text, listen) =
            config_text(upstream, &format!("metrics_listen: \"{metrics}\"\n{extra}"));
        if listen != metrics {
            break (text, listen);
        }
    };
    let ph = start(&text, listen).await;
    let deadline = Instant::now() + T;
    while tokio::net::TcpStream::connect(metrics).await.is_err() {
        assert!(Instant::now() < deadline, "metrics endpoint not listening");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (ph, metrics)
}

/// One hook entry for the `hooks:` list.
pub fn hook_yaml(fields: &[(&str, &str)]) -> String {
    let mut s = String::from("  -");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str("   ");
        }
        s.push_str(&format!(" {k}: {v}\n"));
    }
    s
}

/// A form hook on the one trigger word `trigger`, sending to `url` with token `tok`, and any
/// `extra` `key: value` lines (the opt-in keys under test).
pub fn word_hook(trigger: &str, url: &str, extra: &[(&str, &str)]) -> String {
    let mut fields = vec![
        ("trigger_words", format!("[\"{trigger}\"]")),
        ("callback_urls", format!("[\"{url}\"]")),
        ("token", "\"tok\"".to_string()),
    ];
    fields.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hook_yaml(&borrowed)
}

/// The token of [`form_hook`]: it must be the only `token` in every payload.
pub const HOOK_TOKEN: &str = "hooktokensecret";

/// The usual hook: form-encoded, team-wide on `trigger`, one callback URL, [`HOOK_TOKEN`].
pub fn form_hook(trigger: &str, url: &str) -> String {
    hook_yaml(&[
        ("display_name", "\"Build\""),
        ("trigger_words", &format!("[\"{trigger}\"]")),
        ("callback_urls", &format!("[\"{url}\"]")),
        ("token", &format!("\"{HOOK_TOKEN}\"")),
    ])
}

/// Settings that let webhooks reach receivers on loopback.
pub const ALLOW_LOOPBACK: &str =
    "settings:\n  allowed_untrusted_internal_connections: [\"127.0.0.1\"]\n";

/// Posts `message` to `channel` through `addr` as the test user; returns status and JSON.
pub async fn create_post(
    addr: SocketAddr,
    channel: &str,
    message: &str,
) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"channel_id": channel, "message": message}).to_string();
    let r = post_json(addr, &body).await;
    let json = serde_json::from_slice(&r.decoded_body()).unwrap_or(serde_json::Value::Null);
    (r.status, json)
}

/// `POST /api/v4/posts` through `addr` as the test user: its bearer token, then `headers`, and
/// `body` as is.
pub async fn send_post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
    let auth = format!("Bearer {USER_TOKEN}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    crate::support::http_request(addr, "POST", "/api/v4/posts", &all, body).await
}

/// [`send_post`] of the JSON `body`, with its content type.
pub async fn post_json(addr: SocketAddr, body: &str) -> RawResponse {
    send_post(
        addr,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// Edits post `id` through `addr` with the bearer `token`: `PUT /api/v4/posts/{id}` with the
/// whole post in `body` (`patch: false`), or `PUT /api/v4/posts/{id}/patch` with some fields.
pub async fn edit_as(
    addr: SocketAddr,
    token: &str,
    id: &str,
    patch: bool,
    body: &serde_json::Value,
) -> RawResponse {
    let auth = format!("Bearer {token}");
    let path = if patch {
        format!("/api/v4/posts/{id}/patch")
    } else {
        format!("/api/v4/posts/{id}")
    };
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    let body = body.to_string();
    crate::support::http_request(addr, "PUT", &path, &headers, body.as_bytes()).await
}

/// Changes the message of the test user's post `id` through `addr`, with a patch (`patch`)
/// or a `PUT` of the whole post (as the webapp does: `post` with the new message); returns the
/// status and the post in the answer.
pub async fn edit_message(
    addr: SocketAddr,
    post: &serde_json::Value,
    message: &str,
    patch: bool,
) -> (u16, serde_json::Value) {
    let id = post["id"].as_str().unwrap_or_default();
    let body = if patch {
        serde_json::json!({ "message": message })
    } else {
        let mut whole = post.clone();
        whole["message"] = message.into();
        whole
    };
    let r = edit_as(addr, USER_TOKEN, id, patch, &body).await;
    let json = serde_json::from_slice(&r.decoded_body()).unwrap_or(serde_json::Value::Null);
    (r.status, json)
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
