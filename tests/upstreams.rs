//! Several Mattermost nodes (`upstream` as a list): requests are balanced round robin, a node
//! that fails its health check (`GET /api/v4/system/ping`) stops getting requests within 10 s
//! and gets them again within 10 s after it answers 200; posthook's own look-ups and replies
//! go to healthy nodes too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use harness::*;
use support::*;

async fn gets(addr: SocketAddr, n: usize) {
    let auth = format!("Bearer {USER_TOKEN}");
    for _ in 0..n {
        let r = http_request(
            addr,
            "GET",
            "/api/v4/users/me",
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "a user's request failed");
    }
}

fn served(mm: &MattermostStandIn) -> usize {
    mm.lookups("/api/v4/users/me")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_node_is_skipped_within_10_s_and_readmitted_within_10_s() {
    let (a, b) = (standin().await, standin().await);
    let rx = WebhookReceiver::start(Responder::Json(r#"{"text":"ok"}"#.into())).await;
    let hooks = format!("hooks:\n{}", word_hook("#a", &rx.url("/a"), &[]));
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = format!(
        "listen: \"{listen}\"\nupstream: [\"{}\", \"{}\"]\nbot_token: \"{BOT_TOKEN}\"\n{ALLOW_LOOPBACK}{hooks}",
        a.base_url(),
        b.base_url()
    );
    // The binary, as an admin runs it.
    let ph = harness::binary::Proc::start(&text, listen).await;

    // Round robin: both nodes serve.
    gets(listen, 20).await;
    assert!(
        served(&a) >= 5 && served(&b) >= 5,
        "a {} b {}",
        served(&a),
        served(&b)
    );

    // B fails its ping: within 10 s no request reaches it; users see no error meanwhile.
    b.set_ping_status(503);
    let since = Instant::now();
    loop {
        b.clear_requests();
        gets(listen, 6).await;
        if served(&b) == 0 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "node B still served after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node B out of rotation after {:?}", since.elapsed());
    b.clear_requests();
    a.clear_requests();
    gets(listen, 20).await;
    assert_eq!(served(&b), 0);
    assert_eq!(served(&a), 20);
    // A matching post: its look-ups and the reply go to the healthy node.
    let (status, _) = create_post(listen, PUBLIC, "#a build").await;
    assert_eq!(status, 201);
    rx.wait_for(1, T).await;
    a.wait_for_posts(2, T).await;
    assert!(b.posts().is_empty(), "node B got a post: {:?}", b.posts());
    assert!(
        b.requests()
            .iter()
            .all(|r| r.path() == "/api/v4/system/ping"),
        "{}",
        b.requests().len()
    );

    // B answers again: back in rotation within 10 s.
    b.set_ping_status(200);
    let since = Instant::now();
    loop {
        gets(listen, 6).await;
        if served(&b) > 0 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "node B not back after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node B back in rotation after {:?}", since.elapsed());
    ph.wait_log("fails its health check").await;
    ph.wait_log("answers its health check again").await;
}

#[test]
fn upstream_lists_are_checked() {
    for (upstream, error) in [
        ("[]", "upstream: must list at least one URL"),
        (
            "[\"http://a.example\", \"http://a.example/\"]",
            "upstream: lists a node twice",
        ),
        (
            "[\"http://a.example\", \"https://b.example\"]",
            "upstream: mixes http:// and https:// nodes",
        ),
        (
            "[\"http://a.example\", \"ftp://b.example\"]",
            "upstream: not an http(s) URL",
        ),
    ] {
        let text = format!("listen: \"127.0.0.1:1\"\nupstream: {upstream}\nbot_token: b\n");
        let e = posthook::config::Config::from_yaml("t.yaml", &text, &|_| None)
            .err()
            .unwrap_or_else(|| panic!("{upstream} accepted"))
            .to_string();
        assert!(e.contains(error), "{upstream}: {e}");
    }
    let text = "listen: \"127.0.0.1:1\"\nupstream: [\"http://a.example:8065\", \"http://b.example:8065\"]\nbot_token: b\n";
    let c = posthook::config::Config::from_yaml("t.yaml", text, &|_| None).unwrap();
    assert_eq!(c.upstreams.len(), 2);
    assert_eq!(c.upstream.base_url, "http://a.example:8065");
}
