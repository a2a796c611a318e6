//! End to end: posts created through posthook fire exactly the requests Mattermost would send.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::time::{Duration, Instant};

use harness::*;
use support::*;

/// The fixture most tests here use: one form hook on `#build`, calling the receiver at `/h`.
fn build_hook<'a>() -> FixtureBuilder<'a> {
    Fixture::builder().hook(|rx| form_hook("#build", &rx.url("/h")))
}

/// Spec §2.2/§2.3: the form payload, byte for byte, built from the created post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_post_fires_the_exact_form_payload_after_201() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| form_hook("#build", &rx.url("/hook?x=1")))
        .start()
        .await;

    let (status, post) =
        create_post(ph.addr, PUBLIC, "#build it now, \"please\" & <fast>\népée").await;
    assert_eq!(status, 201);
    let got = rx.wait_for(1, T).await;
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/hook?x=1", "callback query string kept");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("accept"), Some("application/json"));
    assert_eq!(r.header("user-agent"), Some("Mattermost-Bot/1.1"));
    assert!(
        r.header("authorization").is_none(),
        "no credentials toward webhooks"
    );
    assert!(
        r.header("cookie").is_none(),
        "no credentials toward webhooks"
    );
    let create_at = post["create_at"].as_i64().unwrap();
    let expected = format!(
        "channel_id={PUBLIC}&channel_name={PUBLIC_NAME}&file_ids=&post_id={}&team_domain={TEAM_NAME}&team_id={TEAM}&text=%23build+it+now%2C+%22please%22+%26+%3Cfast%3E%0A%C3%A9p%C3%A9e&timestamp={}&token=hooktokensecret&trigger_word=%23build&user_id={USER}&user_name={USER_NAME}",
        post["id"].as_str().unwrap(),
        create_at / 1000
    );
    assert_eq!(r.body_str(), expected);
    let s = ph
        .wait_stats("delivery", |s| s.deliveries_delivered == 1)
        .await;
    assert_eq!(s.deliveries_due, 1);
    assert_eq!(s.hook_matches, 1);
    assert_eq!(s.posts_observed, 1);
}

/// Spec §2.3 JSON encoding, and §5.1 T4 rows with a channel-bound hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_hook_gets_go_json_with_millisecond_timestamp() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| {
            hook_yaml(&[
                ("channel_id", PUBLIC),
                ("trigger_words", "[\"triggerword\"]"),
                ("trigger_when", "1"),
                ("content_type", "application/json"),
                ("callback_urls", &format!("[\"{}\"]", rx.url("/j"))),
                ("token", "\"tok\""),
            ])
        })
        .start()
        .await;
    let (status, post) = create_post(ph.addr, PUBLIC, "triggerwordaaazzz lorem <ipsum>").await;
    assert_eq!(status, 201);
    let r = &rx.wait_for(1, T).await[0];
    assert_eq!(r.header("content-type"), Some("application/json"));
    let expected = format!(
        r#"{{"token":"tok","team_id":"{TEAM}","team_domain":"{TEAM_NAME}","channel_id":"{PUBLIC}","channel_name":"{PUBLIC_NAME}","timestamp":{},"user_id":"{USER}","user_name":"{USER_NAME}","post_id":"{}","text":"triggerwordaaazzz lorem \u003cipsum\u003e","trigger_word":"triggerword","file_ids":""}}"#,
        post["create_at"].as_i64().unwrap(),
        post["id"].as_str().unwrap()
    );
    assert_eq!(r.body_str(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_only_hook_fires_on_an_empty_file_post_to_every_url() {
    let b = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let Fixture { mm: _mm, rx: a, ph } = Fixture::builder()
        .hook(|a| {
            hook_yaml(&[
                ("channel_id", PUBLIC),
                (
                    "callback_urls",
                    &format!("[\"{}\", \"{}\"]", a.url("/a"), b.url("/b")),
                ),
                ("token", "\"tok\""),
            ])
        })
        .start()
        .await;
    let body = serde_json::json!({"channel_id": PUBLIC, "message": "", "file_ids": ["f1", "f2"]})
        .to_string();
    let r = send_post(ph.addr, &[], body.as_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.body_str());
    for rx in [&a, &b] {
        let got = rx.wait_for(1, T).await;
        let form: std::collections::HashMap<_, _> = got[0].form().into_iter().collect();
        assert_eq!(form["trigger_word"], "");
        assert_eq!(form["text"], "");
        assert_eq!(form["file_ids"], "f1,f2");
    }
    // A post in another channel fires nothing.
    let (status, _) = create_post(ph.addr, PUBLIC2, "hello").await;
    assert_eq!(status, 201);
    a.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(a.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_posts_and_non_public_channels_fire_nothing() {
    let Fixture { mm, rx, ph } = build_hook().start().await;

    for channel in [PRIVATE, DM] {
        let (status, _) = create_post(ph.addr, channel, "#build private").await;
        assert_eq!(status, 201, "{channel}");
    }
    mm.set_post_failure(Some((500, "app.post.save.app_error")));
    let (status, _) = create_post(ph.addr, PUBLIC, "#build fails").await;
    assert_eq!(status, 500);
    mm.set_post_failure(Some((400, "api.post.create_post.bad.app_error")));
    let (status, _) = create_post(ph.addr, PUBLIC, "#build bad").await;
    assert_eq!(status, 400);
    mm.set_post_failure(None);
    // Unknown channel: Mattermost answers 403.
    let (status, _) = create_post(ph.addr, "nosuchchannel", "#build").await;
    assert_eq!(status, 403);
    // Not the first word.
    let (status, _) = create_post(ph.addr, PUBLIC, "please #build").await;
    assert_eq!(status, 201);
    let s = ph
        .wait_stats("private posts judged", |s| s.non_public_skipped == 2)
        .await;
    rx.assert_quiet(Duration::from_millis(400)).await;
    assert_eq!(s.deliveries_due, 0);
    // The control: the same hook does fire for a good post.
    let (status, _) = create_post(ph.addr, PUBLIC, "#build").await;
    assert_eq!(status, 201);
    rx.wait_for(1, T).await;
}

/// Mattermost gzips the 201 when the client asks; the client still gets the upstream's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_201_is_decoded_on_the_copy_only() {
    for deflate in [false, true] {
        let Fixture { mm, rx, ph } = build_hook().start().await;
        mm.set_gzip(!deflate);
        mm.set_deflate(deflate);
        let body =
            serde_json::json!({"channel_id": PUBLIC, "message": "#build zipped"}).to_string();
        let r = send_post(
            ph.addr,
            &[("Accept-Encoding", "gzip, deflate")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 201);
        let want = if deflate { "deflate" } else { "gzip" };
        assert_eq!(
            r.header("content-encoding"),
            Some(want),
            "client gets the compressed body"
        );
        let post: serde_json::Value = serde_json::from_slice(&r.decoded_body()).unwrap();
        let got = rx.wait_for(1, T).await;
        let form: std::collections::HashMap<_, _> = got[0].form().into_iter().collect();
        assert_eq!(form["post_id"], post["id"].as_str().unwrap(), "{want}");
        assert_eq!(form["text"], "#build zipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_matching_posts_give_exactly_one_delivery_each() {
    const N: usize = 40;
    let Fixture { mm, rx, ph } = build_hook().start().await;
    let mut tasks = Vec::new();
    for i in 0..N {
        let addr = ph.addr;
        tasks.push(tokio::spawn(async move {
            let (status, post) = create_post(addr, PUBLIC, &format!("#build {i}")).await;
            assert_eq!(status, 201);
            post["id"].as_str().unwrap().to_string()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let got = rx.wait_for(N, T).await;
    rx.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), N, "exactly one request per post");
    let mut delivered: Vec<String> = got
        .iter()
        .map(|r| {
            r.form()
                .into_iter()
                .find(|(k, _)| k == "post_id")
                .unwrap()
                .1
        })
        .collect();
    delivered.sort();
    ids.sort();
    assert_eq!(delivered, ids);
    // The concurrent look-ups of one channel, team and user were coalesced into one each.
    assert_eq!(
        mm.lookups("/api/v4/channels/"),
        1,
        "channel look-ups coalesced"
    );
    assert_eq!(mm.lookups("/api/v4/teams/"), 1, "team look-ups coalesced");
    assert_eq!(mm.lookups("/api/v4/users/"), 1, "user look-ups coalesced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_delay_posts() {
    let Fixture { mm: _mm, rx, ph } = build_hook().responder(Responder::Hang).start().await;
    // Baseline: posts that match nothing.
    let mut baseline = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(create_post(ph.addr, PUBLIC, "nothing").await.0, 201);
        baseline = baseline.max(t.elapsed());
    }
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        assert_eq!(
            create_post(ph.addr, PUBLIC, &format!("#build {i}")).await.0,
            201
        );
        worst = worst.max(t.elapsed());
    }
    rx.wait_for(10, T).await;
    // The webhook never answers (30 s timeout): posts must finish in normal time regardless.
    assert!(
        worst < baseline + Duration::from_millis(250),
        "matching posts took {worst:?} against {baseline:?} without webhooks"
    );
    assert_eq!(
        ph.stats().deliveries_delivered + ph.stats().deliveries_failed,
        0,
        "still hanging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_callback_address_is_refused_unless_allowed() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    // No allow-list: 127.0.0.1 is loopback, and "localhost" resolves to it.
    let hooks = format!(
        "hooks:\n{}{}",
        form_hook("#build", &rx.url("/ip")),
        form_hook("#build", &rx.url("/name").replace("127.0.0.1", "localhost"))
    );
    let (text, listen) = config_text(&mm.base_url(), &hooks);
    let ph = start(&text, listen).await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
    let s = ph
        .wait_stats("refusals", |s| s.deliveries_failed == 2)
        .await;
    assert_eq!(s.deliveries_due, 2);
    assert_eq!(s.deliveries_delivered, 0);
    rx.assert_quiet(Duration::from_millis(200)).await;
    drop(ph);

    // Allowed by host name only: the name passes, the bare IP does not.
    let (text, listen) = config_text(
        &mm.base_url(),
        &format!("settings:\n  allowed_untrusted_internal_connections: [\"localhost\"]\n{hooks}"),
    );
    let ph = start(&text, listen).await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
    let got = rx.wait_for(1, T).await;
    assert_eq!(got[0].path(), "/name");
    ph.wait_stats("one refusal", |s| {
        s.deliveries_failed == 1 && s.deliveries_delivered == 1
    })
    .await;
    drop(ph);

    // Allowed by CIDR: both pass.
    rx.clear();
    let (text, listen) = config_text(
        &mm.base_url(),
        &format!("settings:\n  allowed_untrusted_internal_connections: [\"127.0.0.0/8\"]\n{hooks}"),
    );
    let ph = start(&text, listen).await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
    rx.wait_for(2, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_ups_are_cached_and_use_the_bot_token() {
    let Fixture { mm, rx, ph } = build_hook().start().await;
    for i in 0..5 {
        assert_eq!(
            create_post(ph.addr, PUBLIC, &format!("#build {i}")).await.0,
            201
        );
    }
    rx.wait_for(5, T).await;
    assert_eq!(mm.lookups("/api/v4/channels/"), 1, "channel looked up once");
    assert_eq!(mm.lookups("/api/v4/teams/"), 1, "team looked up once");
    assert_eq!(mm.lookups("/api/v4/users/"), 1, "user looked up once");
    for r in mm.requests().iter().filter(|r| r.method == "GET") {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {BOT_TOKEN}").as_str())
        );
    }
}

/// A retried post (same pending_post_id) is answered with the same post: fire once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_post_fires_once() {
    let Fixture { mm: _mm, rx, ph } = build_hook().start().await;
    let body = serde_json::json!({"channel_id": PUBLIC, "message": "#build", "pending_post_id": "user1:12345"}).to_string();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = send_post(ph.addr, &[], body.as_bytes()).await;
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids[0], ids[1]);
    rx.wait_for(1, T).await;
    ph.wait_stats("duplicate", |s| s.duplicate_posts_skipped == 1)
        .await;
    rx.assert_quiet(Duration::from_millis(200)).await;
    assert_eq!(rx.requests().len(), 1);
}

/// A client that sends its post and goes away at once: Mattermost still creates the post, and
/// its hooks fire, as Mattermost's own would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_right_after_posting_still_fires_the_hooks() {
    use tokio::io::AsyncWriteExt;
    let Fixture { mm, rx, ph } = build_hook().start().await;
    // Mattermost is slow to answer: the clients are gone before the 201 comes back.
    mm.set_post_delay(Duration::from_millis(300));
    for (i, how) in ["half-close", "close"].iter().enumerate() {
        let body = serde_json::json!({"channel_id": PUBLIC, "message": format!("#build {how}")})
            .to_string();
        let mut s = tokio::net::TcpStream::connect(ph.addr).await.unwrap();
        let head = format!(
            "POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {USER_TOKEN}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        if *how == "half-close" {
            s.shutdown().await.unwrap();
            mm.wait_for_posts(i + 1, T).await;
            drop(s);
        } else {
            drop(s);
        }
        let got = rx.wait_for(i + 1, T).await;
        let form: std::collections::HashMap<_, _> = got[i].form().into_iter().collect();
        assert_eq!(form["text"], format!("#build {how}"), "{how}");
    }
    assert_eq!(mm.posts().len(), 2);
}
