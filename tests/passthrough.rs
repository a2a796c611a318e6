//! End to end: everything that is not post creation passes through posthook unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use harness::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// A hook on new posts and edits, so that both are watched.
const HOOKS: &str = "hooks:\n  - trigger_words: [\"#build\"]\n    events: [posted, edited]\n    callback_urls: [\"http://127.0.0.1:9/h\"]\n    token: t\n";

/// posthook with [`HOOKS`] in front of the stand-in.
async fn in_front_of_standin() -> (MattermostStandIn, Posthook) {
    let mm = standin().await;
    let (text, listen) = config_text(&mm.base_url(), HOOKS);
    let ph = start(&text, listen).await;
    (mm, ph)
}

/// Headers as the upstream saw them, minus the one posthook adds on purpose.
fn without_forwarding(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-forwarded-for"))
        .cloned()
        .collect()
}

/// A response body with the stand-in's per-request id in an AppError blanked, every other
/// byte as it was.
fn without_request_id(body: &[u8]) -> Vec<u8> {
    let key = b"\"request_id\":\"";
    let mut out = body.to_vec();
    if let Some(at) = out.windows(key.len()).position(|w| w == key) {
        let start = at + key.len();
        let end = start + out[start..].iter().position(|&b| b == b'"').unwrap();
        out.drain(start..end);
    }
    out
}

/// Response headers minus those that legitimately differ: the stand-in's per-request id, and
/// the hop-by-hop `Connection` and `Date` that a proxy sets itself (nginx does the same).
fn stable(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| {
            !["date", "x-request-id", "connection"].contains(&k.to_ascii_lowercase().as_str())
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_responses_pass_byte_exact() {
    let (mm, ph) = in_front_of_standin().await;

    let headers: &[(&str, &str)] = &[
        ("Host", "chat.example.com"),
        ("Authorization", "BEARER usertokensecret"),
        ("X-Requested-With", "XMLHttpRequest"),
        ("X-Custom-Case", "MiXeD value"),
        ("x-dup", "one"),
        ("x-dup", "two"),
        ("Cookie", "MMAUTHTOKEN=usertokensecret; MMCSRF=def"),
    ];
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let cases: &[(&str, &str, &[u8])] = &[
        ("GET", "/api/v4/users/me?x=1&y=%2F", b""),
        ("PUT", "/api/v4/posts/abc/patch", b"{\"message\":\"edit\"}"),
        (
            "PUT",
            "/api/v4/posts/abc",
            b"{\"id\":\"abc\",\"message\":\"#build edit\"}",
        ),
        ("POST", "/api/v4/files?channel_id=chanpub", &body),
        ("DELETE", "/api/v4/posts/abc", b""),
        ("POST", "/api/v4/posts/abc/reactions", b"{}"),
    ];
    for (method, path, body) in cases {
        let direct = http_request(mm.addr(), method, path, headers, body).await;
        let seen_direct = mm.requests().last().unwrap().clone();
        let proxied = http_request(ph.addr, method, path, headers, body).await;
        let seen_proxied = mm.requests().last().unwrap().clone();

        assert_eq!(seen_proxied.method, seen_direct.method);
        assert_eq!(
            seen_proxied.path_and_query, seen_direct.path_and_query,
            "{method} {path}"
        );
        assert_eq!(
            without_forwarding(&seen_proxied.headers),
            seen_direct.headers,
            "{method} {path}: request headers (names, case, order, duplicates)"
        );
        assert_eq!(
            seen_proxied.body, seen_direct.body,
            "{method} {path}: request body"
        );
        assert_eq!(seen_proxied.body_len, body.len() as u64);
        assert_eq!(proxied.status, direct.status, "{method} {path}");
        assert_eq!(
            stable(&proxied.headers),
            stable(&direct.headers),
            "{method} {path}: response headers"
        );
        assert_eq!(
            without_request_id(&proxied.body),
            without_request_id(&direct.body),
            "{method} {path}: response body"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_is_added_like_nginx_and_host_is_kept() {
    let (mm, ph) = in_front_of_standin().await;

    let mut conn = RawConn::connect(ph.addr).await;
    conn.send_raw(b"GET /api/v4/system/ping HTTP/1.1\r\nHost: chat.example.com\r\n\r\n")
        .await;
    assert_eq!(conn.read_response().await.status, 200);
    let r = mm.requests().last().unwrap().clone();
    assert_eq!(r.header("host"), Some("chat.example.com"));
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    // Mattermost reads a missing X-Forwarded-Proto as "http": none is added.
    assert_eq!(r.header("x-forwarded-proto"), None);

    // Behind nginx: the client chain is extended and nginx's scheme is kept.
    conn.send_raw(b"GET /api/v4/system/ping HTTP/1.1\r\nHost: chat.example.com\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n").await;
    assert_eq!(conn.read_response().await.status, 200);
    let r = mm.requests().last().unwrap().clone();
    assert_eq!(r.header("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_chunked_bodies_work() {
    let (mm, ph) = in_front_of_standin().await;
    let mut conn = RawConn::connect(ph.addr).await;
    for i in 0..5 {
        let r = conn
            .request("GET", &format!("/api/v4/system/ping?i={i}"), &[], b"")
            .await;
        assert_eq!(r.status, 200, "request {i} on one connection");
    }
    conn.send_raw(
        b"POST /api/v4/files HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let r = conn.read_response().await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["received_bytes"], 11);
    let seen = mm.requests().last().unwrap().clone();
    assert_eq!(seen.body, b"hello world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_flow_both_ways() {
    let (_mm, ph) = in_front_of_standin().await;
    let (mut ws, resp) =
        tokio_tungstenite::connect_async(format!("ws://{}/api/v4/websocket", ph.addr))
            .await
            .unwrap();
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await.unwrap().unwrap();
    assert_eq!(hello, Message::text("{\"event\":\"hello\"}"));
    for i in 0..20 {
        let msg = format!("{{\"seq\":{i},\"action\":\"user_typing\"}}");
        ws.send(Message::text(msg.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(msg));
    }
    let bin: Vec<u8> = (0..=255u8).collect();
    ws.send(Message::binary(bin.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(bin));
    // Idle for a while: the upgraded connection is not cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("still here")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_gives_a_prompt_app_error_502() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (text, listen) = config_text(&dead, HOOKS);
    let ph = start(&text, listen).await;
    let t = Instant::now();
    let r = http_request(
        ph.addr,
        "POST",
        "/api/v4/posts",
        &[],
        b"{\"channel_id\":\"c\",\"message\":\"#build\"}",
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let e = r.json();
    assert_eq!(e["status_code"], 502);
    assert_eq!(e["id"], "posthook.upstream.unreachable.app_error");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("could not be reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_post_body_passes_through_uninspected() {
    let mm = standin().await;
    let (text, listen) = config_text(
        &mm.base_url(),
        &format!("limits:\n  max_inspected_body_bytes: 1024\n{HOOKS}"),
    );
    let ph = start(&text, listen).await;
    let big = "x".repeat(5000);
    let body =
        serde_json::json!({"channel_id": PUBLIC, "message": "#build", "props": {"blob": big}})
            .to_string();
    let r = send_post(ph.addr, &[], body.as_bytes()).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        mm.requests().last().unwrap().body,
        body.as_bytes(),
        "forwarded untouched"
    );
    let s = ph
        .wait_stats("oversize counted", |s| s.bodies_too_large == 1)
        .await;
    assert_eq!(
        s.posts_observed, 1,
        "counted as created, though not inspected"
    );
    assert_eq!(s.deliveries_due, 0, "not inspected");
}

/// A 100 MB upload streams through: it arrives whole, and posthook's memory does not grow
/// by anything near its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_upload_streams_without_being_held() {
    const SIZE: usize = 100 * 1024 * 1024;
    let (_mm, ph) = in_front_of_standin().await;
    let rss_before = rss_kib();
    let mut s = tokio::net::TcpStream::connect(ph.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /api/v4/files?channel_id=c HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut peak = rss_before;
    for i in 0..SIZE / chunk.len() {
        s.write_all(&chunk).await.unwrap();
        if i % 64 == 0 {
            peak = peak.max(rss_kib());
        }
    }
    let mut resp = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&resp).contains("received_bytes") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&resp)
        );
        resp.extend_from_slice(&buf[..n]);
    }
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains(&format!("\"received_bytes\":{SIZE}")),
        "{resp}"
    );
    let grown_mib = (peak.saturating_sub(rss_before)) / 1024;
    assert!(
        grown_mib < 48,
        "RSS grew by {grown_mib} MiB during a 100 MiB upload"
    );
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}
