//! Three contracts that were found broken from outside (issue 10), each checked here through
//! the real binary, as an admin or an integration meets them:
//!
//! - every config error is `FILE:LINE:COL: field: message`, a value of the wrong type included;
//! - `posthook_posts_observed_total` counts every post created through posthook;
//! - a webhook request's header names are written in canonical case, as Mattermost's Go
//!   client writes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_posthook");

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("posthook-contracts-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `posthook -c FILE -t` on `text`.
fn check(dir: &std::path::Path, text: &str) -> Output {
    let path = dir.join("posthook.yaml");
    std::fs::write(&path, text).unwrap();
    Command::new(BIN)
        .args(["-c", path.to_str().unwrap(), "-t"])
        .output()
        .unwrap()
}

/// What a key takes, and a value of another type for it.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Seconds,
    Whole,
    Flag,
    Texts,
    Section,
    Hooks,
    TriggerWhen,
    Thread,
    ChannelTypes,
    Events,
    Secrets,
    Days,
    Urls,
}

impl Kind {
    /// A wrong value and how the error describes it.
    fn wrong(self) -> (&'static str, &'static str) {
        match self {
            Kind::Text => ("[a, b]", "a list"),
            Kind::Seconds | Kind::Whole => ("\"soon\"", "a string"),
            Kind::Flag => ("[true]", "a list"),
            Kind::Texts => ("\"#build\"", "a string"),
            Kind::Section => ("5", "a number"),
            Kind::Hooks => ("{a: 1}", "a mapping"),
            Kind::TriggerWhen => ("1.5", "a decimal number"),
            Kind::Thread => ("[root]", "a list"),
            Kind::ChannelTypes => ("O", "a string"),
            Kind::Events => ("edited", "a string"),
            Kind::Secrets => ("{a: 1}", "a mapping"),
            Kind::Days => ("\"week\"", "a string"),
            Kind::Urls => ("{a: 1}", "a mapping"),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Seconds => "a whole number of seconds",
            Kind::Whole => "a whole number",
            Kind::Flag => "true or false",
            Kind::Texts => "a list of strings",
            Kind::Section => "a mapping",
            Kind::Hooks => "a list of hooks",
            Kind::TriggerWhen => "exact, starts_with, 0 or 1",
            Kind::Thread => "any, root or reply",
            Kind::ChannelTypes => "a list of O, P, D, G",
            Kind::Events => "a list of posted, edited",
            Kind::Secrets => "a whsec_ secret or a list of them",
            Kind::Days => "a whole number of days",
            Kind::Urls => "a URL or a list of URLs",
        }
    }
}

/// Every key of the config file (README's configuration reference), by section.
const KEYS: &[(&str, &str, Kind)] = &[
    ("", "listen", Kind::Text),
    ("", "metrics_listen", Kind::Text),
    ("", "upstream", Kind::Urls),
    ("", "log_format", Kind::Text),
    ("", "bot_token", Kind::Text),
    ("", "settings", Kind::Section),
    ("", "server", Kind::Section),
    ("", "limits", Kind::Section),
    ("", "hooks", Kind::Hooks),
    ("settings", "enable_post_username_override", Kind::Flag),
    ("settings", "enable_post_icon_override", Kind::Flag),
    (
        "settings",
        "outgoing_integration_requests_timeout",
        Kind::Seconds,
    ),
    (
        "settings",
        "allowed_untrusted_internal_connections",
        Kind::Texts,
    ),
    ("settings", "max_post_size", Kind::Whole),
    ("server", "threads", Kind::Whole),
    ("server", "grace_period_seconds", Kind::Seconds),
    ("server", "graceful_shutdown_timeout_seconds", Kind::Seconds),
    ("server", "upstream_connect_timeout_seconds", Kind::Seconds),
    ("server", "upstream_keepalive_pool_size", Kind::Whole),
    ("limits", "max_inspected_body_bytes", Kind::Whole),
    ("limits", "max_decoded_body_bytes", Kind::Whole),
    ("limits", "queue_capacity", Kind::Whole),
    ("limits", "max_concurrent_jobs", Kind::Whole),
    ("limits", "max_concurrent_deliveries", Kind::Whole),
    ("limits", "max_idle_connections_per_host", Kind::Whole),
    ("limits", "lookup_cache_ttl_seconds", Kind::Seconds),
    ("limits", "lookup_cache_max_entries", Kind::Whole),
    ("limits", "lookup_timeout_seconds", Kind::Seconds),
    ("limits", "name_refresh_seconds", Kind::Seconds),
    ("hooks", "display_name", Kind::Text),
    ("hooks", "description", Kind::Text),
    ("hooks", "team_id", Kind::Text),
    ("hooks", "channel_id", Kind::Text),
    ("hooks", "trigger_words", Kind::Texts),
    ("hooks", "trigger_when", Kind::TriggerWhen),
    ("hooks", "callback_urls", Kind::Texts),
    ("hooks", "content_type", Kind::Text),
    ("hooks", "token", Kind::Text),
    ("hooks", "username", Kind::Text),
    ("hooks", "icon_url", Kind::Text),
    ("hooks", "id", Kind::Text),
    ("hooks", "enabled", Kind::Flag),
    ("hooks", "thread", Kind::Thread),
    ("hooks", "channel_types", Kind::ChannelTypes),
    ("hooks", "events", Kind::Events),
    ("hooks", "signing_secret", Kind::Secrets),
    ("hooks", "team", Kind::Text),
    ("hooks", "channel", Kind::Text),
    ("limits", "max_pending_deliveries", Kind::Whole),
    ("", "store", Kind::Section),
    ("store", "url", Kind::Text),
    ("store", "retention_days", Kind::Days),
    ("store", "lease_margin_seconds", Kind::Seconds),
    ("store", "max_connections", Kind::Whole),
    ("hooks", "retry", Kind::Section),
    ("hooks", "timeout_seconds", Kind::Seconds),
    ("hooks", "max_in_flight", Kind::Whole),
    ("hooks", "notify", Kind::Section),
    ("hooks", "from_users", Kind::Texts),
    ("hooks", "exclude_bots", Kind::Flag),
    ("hooks", "trigger_pattern", Kind::Text),
    ("hooks", "payload_extras", Kind::Flag),
    ("server", "header_timeout_seconds", Kind::Seconds),
    ("server", "keepalive_timeout_seconds", Kind::Seconds),
    ("server", "body_timeout_seconds", Kind::Seconds),
    ("limits", "max_connections", Kind::Whole),
];

/// A config whose only fault is `key` (in `section`) set to `value`; returns it with the line
/// and column at which the value starts.
fn config_with(section: &str, key: &str, value: &str) -> (String, usize, usize) {
    let mut lines: Vec<String> = [
        ("listen", "\"127.0.0.1:1\""),
        ("upstream", "\"http://127.0.0.1:2\""),
        ("bot_token", "bot"),
    ]
    .iter()
    .filter(|(k, _)| !(section.is_empty() && *k == key))
    .map(|(k, v)| format!("{k}: {v}"))
    .collect();
    let line = match section {
        "" => format!("{key}: {value}"),
        "hooks" => {
            lines.push("hooks:".into());
            // Types are read before anything is validated: the key alone makes the hook.
            format!("  - {key}: {value}")
        }
        s => {
            lines.push(format!("{s}:"));
            format!("  {key}: {value}")
        }
    };
    let column = line.find(": ").unwrap() + 3;
    lines.push(line);
    let at = lines.len();
    (lines.join("\n") + "\n", at, column)
}

#[test]
fn every_key_with_a_wrong_value_type_is_named_with_its_place() {
    let dir = scratch("types");
    let file = dir.join("posthook.yaml");
    for &(section, key, kind) in KEYS {
        let (value, found) = kind.wrong();
        let (text, line, column) = config_with(section, key, value);
        let out = check(&dir, &text);
        let field = match section {
            "" => key.to_string(),
            "hooks" => format!("hooks[0].{key}"),
            s => format!("{s}.{key}"),
        };
        let want = format!(
            "{}:{line}:{column}: {field}: expected {}, found {found}",
            file.display(),
            kind.expected()
        );
        assert_eq!(out.status.code(), Some(1), "{field}: exit status\n{text}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            want,
            "{field}\n{text}"
        );
        assert!(out.stdout.is_empty(), "{field}: nothing on stdout");
    }
}

#[test]
fn a_valid_config_still_checks_ok() {
    let dir = scratch("valid");
    let (text, _, _) = config_with(
        "settings",
        "outgoing_integration_requests_timeout",
        "\"30\"",
    );
    let out = check(&dir, &text);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config ok: 0 hooks\n");
}

/// The binary as a child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(text: &str, name: &str, addr: SocketAddr) -> Running {
    let path = scratch(name).join("posthook.yaml");
    std::fs::write(&path, text).unwrap();
    let child = Command::new(BIN)
        .args(["-c", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + T;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "posthook did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running(child)
}

/// One request's head and body, exactly as received.
struct RawRequest {
    head: Vec<u8>,
    body: Vec<u8>,
}

/// A webhook receiver that keeps the raw bytes of every request and answers 200 with no body.
async fn raw_receiver() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<RawRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        continue;
                    };
                    let head = buf[..end + 4].to_vec();
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + 4 + len {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    let _ = tx.send(RawRequest { head, body });
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<RawRequest>) -> RawRequest {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("no webhook request in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_request_heads_are_written_in_canonical_case() {
    let mm = standin().await;
    let (receiver, mut requests) = raw_receiver().await;
    let url = format!("\"http://{receiver}/hook\"");
    let hooks = [
        hook_yaml(&[
            ("trigger_words", "[\"#form\"]"),
            ("callback_urls", &format!("[{url}]")),
            ("token", "formtoken"),
        ]),
        hook_yaml(&[
            ("trigger_words", "[\"#json\"]"),
            ("callback_urls", &format!("[{url}]")),
            ("content_type", "application/json"),
            ("token", "jsontoken"),
        ]),
    ];
    let (text, listen) = config_text(
        &mm.base_url(),
        &format!("{ALLOW_LOOPBACK}hooks:\n{}", hooks.concat()),
    );
    let _ph = run(&text, "case", listen).await;
    for (message, mime) in [
        ("#form now", "application/x-www-form-urlencoded"),
        ("#json now", "application/json"),
    ] {
        assert_eq!(create_post(listen, PUBLIC, message).await.0, 201);
        let request = next(&mut requests).await;
        let head = String::from_utf8(request.head.clone()).unwrap();
        let lines: Vec<&str> = head.trim_end().split("\r\n").collect();
        assert_eq!(lines[0], "POST /hook HTTP/1.1", "{message}: {head}");
        let mut names: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split_once(": ").unwrap().0)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "Accept",
                "Accept-Encoding",
                "Content-Length",
                "Content-Type",
                "Host",
                "User-Agent"
            ],
            "{message}: header names as Go writes them: {head}"
        );
        for line in [
            "User-Agent: Mattermost-Bot/1.1".to_string(),
            "Accept: application/json".into(),
            "Accept-Encoding: gzip".into(),
            format!("Content-Type: {mime}"),
            format!("Content-Length: {}", request.body.len()),
            format!("Host: {receiver}"),
        ] {
            assert!(
                lines.contains(&line.as_str()),
                "{message}: no {line:?} in {head}"
            );
        }
    }
}

/// `GET /metrics` on `addr`: the value of the sample `name`.
async fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let r = support::http_request(addr, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8(r.decoded_body()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_post_created_through_posthook_is_counted_matching_or_not() {
    let mm = standin().await;
    let (receiver, mut requests) = raw_receiver().await;
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hook = hook_yaml(&[
        ("trigger_words", "[\"#build\"]"),
        ("callback_urls", &format!("[\"http://{receiver}/hook\"]")),
        ("token", "t"),
    ]);
    let (text, listen) = config_text(
        &mm.base_url(),
        &format!("metrics_listen: \"{metrics}\"\n{ALLOW_LOOPBACK}hooks:\n{hook}"),
    );
    let _ph = run(&text, "observed", listen).await;
    // Two posts no hook matches, one it does, and a create that Mattermost refuses.
    assert_eq!(create_post(listen, PUBLIC, "hello").await.0, 201);
    assert_eq!(create_post(listen, PUBLIC2, "good morning").await.0, 201);
    assert_eq!(create_post(listen, PUBLIC, "#build it").await.0, 201);
    assert_ne!(
        create_post(listen, "nosuchchannel0000000000000", "#build")
            .await
            .0,
        201
    );
    // Not a post creation at all.
    let r = support::http_request(listen, "GET", "/api/v4/system/ping", &[], b"").await;
    assert_eq!(r.status, 200);
    next(&mut requests).await;
    let deadline = Instant::now() + T;
    while metric(metrics, "posthook_deliveries_total{outcome=\"delivered\"}").await != Some(1) {
        assert!(Instant::now() < deadline, "the delivery was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric(metrics, "posthook_posts_observed_total").await,
        Some(3),
        "every 201 of POST /api/v4/posts, and nothing else"
    );
}
