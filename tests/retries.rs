//! `retry`, `timeout_seconds` and `410 Gone` (issue 12), end to end: a hook with `retry` tries
//! a 5xx, a 429 or a timeout again after its backoff (at least `Retry-After`), with the same
//! `webhook-id`, until an attempt succeeds or none is left; an answer that yields a reply is
//! never repeated; a hook without `retry` keeps Mattermost's one attempt; a `410` disables the
//! hook; and every due request still ends exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::time::Duration;

use harness::*;
use posthook::stats::Snapshot;
use support::*;

/// A form hook on `#t` sending to `url`, with extra `key: value` lines.
fn hook(url: &str, extra: &[(&str, &str)]) -> String {
    word_hook("#t", url, extra)
}

/// Retries after about a second, then two.
const FAST: &str = "{attempts: 3, initial_seconds: 1, max_seconds: 2}";

/// Waits until every due request has ended, then checks the identity.
async fn settled(ph: &Posthook, due: u64) -> Snapshot {
    let s = ph
        .wait_stats("every due request ended", |s| {
            s.deliveries_due == due
                && s.deliveries_delivered + s.deliveries_failed + s.deliveries_dropped == due
        })
        .await;
    assert_eq!(s.deliveries_pending, 0, "{s:#?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_tried_again_after_the_backoff_with_the_same_webhook_id() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .responder(Responder::Script(vec![
            Answer::status(500),
            Answer::status(502),
            Answer::status(200),
        ]))
        .hook(|rx| hook(&rx.url("/h"), &[("retry", FAST)]))
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t go").await.0, 201);
    let fired = rx.wait_for(3, T).await;
    let ids: Vec<&str> = fired
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids[0].starts_with("msg_"),
        "a retried hook sends webhook-id"
    );
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id for all attempts: {ids:?}"
    );
    assert_eq!(fired[0].header("webhook-signature"), None, "not signed");
    assert_eq!(fired[0].body, fired[2].body, "the same body every time");
    let first = fired[1].received_at - fired[0].received_at;
    let second = fired[2].received_at - fired[1].received_at;
    assert!(
        first >= Duration::from_millis(790) && first <= Duration::from_millis(1500),
        "retry 1 after ~1 s ±20 %: {first:?}"
    );
    assert!(
        second >= Duration::from_millis(1590),
        "retry 2 after ~2 s ±20 %: {second:?}"
    );
    let s = settled(&ph, 1).await;
    assert_eq!(s.deliveries_delivered, 1, "{s:#?}");
    assert_eq!(
        (s.attempts_retry, s.attempts_delivered, s.attempts_failed),
        (2, 1, 0)
    );
    rx.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_lengthens_the_wait_and_the_last_attempt_fails_for_good() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .responder(Responder::Script(vec![
            Answer::status(429).header("Retry-After", "2"),
            Answer::status(503),
        ]))
        .hook(|rx| {
            hook(
                &rx.url("/h"),
                &[("retry", "{attempts: 2, initial_seconds: 1, max_seconds: 5}")],
            )
        })
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t go").await.0, 201);
    let fired = rx.wait_for(2, T).await;
    let waited = fired[1].received_at - fired[0].received_at;
    assert!(
        waited >= Duration::from_millis(1990),
        "Retry-After: 2 → {waited:?}"
    );
    let s = settled(&ph, 1).await;
    assert_eq!(s.deliveries_failed, 1, "503 on the last attempt: {s:#?}");
    assert_eq!((s.attempts_retry, s.attempts_failed), (1, 1));
    rx.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_reply_is_never_retried_and_other_statuses_are_final() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Script(vec![
            Answer::status(500).body(r#"{"text":"broken, but here is a reply"}"#),
            Answer::status(404),
        ]))
        .hook(|rx| hook(&rx.url("/h"), &[("retry", FAST)]))
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t one").await.0, 201);
    rx.wait_for(1, T).await;
    let posts = mm.wait_for_posts(2, T).await;
    assert_eq!(posts[1]["message"], "broken, but here is a reply");
    settled(&ph, 1).await;
    let s = ph
        .wait_stats("the reply counted", |s| s.replies_posted == 1)
        .await;
    assert_eq!(s.deliveries_delivered, 1, "{s:#?}");

    assert_eq!(create_post(ph.addr, PUBLIC, "#t two").await.0, 201);
    let s = settled(&ph, 2).await;
    assert_eq!(s.deliveries_failed, 1, "a 404 is final: {s:#?}");
    assert_eq!(s.attempts_retry, 0);
    rx.assert_quiet(Duration::from_millis(1500)).await;
    assert_eq!(rx.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retry_a_hook_makes_one_attempt_as_mattermost() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .responder(Responder::Status(500, String::new()))
        .hook(|rx| hook(&rx.url("/h"), &[]))
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t go").await.0, 201);
    let fired = rx.wait_for(1, T).await;
    assert_eq!(fired[0].header("webhook-id"), None, "Mattermost's request");
    let s = settled(&ph, 1).await;
    assert_eq!(
        (
            s.deliveries_delivered,
            s.attempts_delivered,
            s.attempts_retry
        ),
        (1, 1, 0),
        "any answer counts as delivered, as before: {s:#?}"
    );
    rx.assert_quiet(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_of_the_hook_is_retried_and_counted() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .responder(Responder::Hang)
        .hook(|rx| {
            hook(
                &rx.url("/h"),
                &[
                    ("timeout_seconds", "1"),
                    ("retry", "{attempts: 2, initial_seconds: 1}"),
                ],
            )
        })
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t go").await.0, 201);
    let fired = rx.wait_for(2, T).await;
    let waited = fired[1].received_at - fired[0].received_at;
    assert!(
        waited >= Duration::from_millis(1790) && waited < Duration::from_secs(5),
        "the hook's 1 s deadline, then ~1 s (the settings' 30 s never applied): {waited:?}"
    );
    let s = settled(&ph, 1).await;
    assert_eq!((s.deliveries_failed, s.attempts_retry), (1, 1), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_hook_and_the_others_keep_firing() {
    let gone = WebhookReceiver::start(Responder::Status(410, String::new())).await;
    let gone_url = gone.url("/gone");
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(move |_| hook(&gone_url, &[("id", "old-ci"), ("retry", FAST)]))
        .hook(|rx| hook(&rx.url("/alive"), &[]))
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t one").await.0, 201);
    gone.wait_for(1, T).await;
    rx.wait_for(1, T).await;
    let s = settled(&ph, 2).await;
    assert_eq!(s.hooks_disabled, 1, "{s:#?}");
    assert_eq!(s.deliveries_failed, 1, "a 410 is final");

    assert_eq!(create_post(ph.addr, PUBLIC, "#t two").await.0, 201);
    rx.wait_for(2, T).await;
    let s = settled(&ph, 3).await;
    assert_eq!(
        s.hook_matches, 3,
        "the disabled hook no longer matches: {s:#?}"
    );
    gone.assert_quiet(Duration::from_millis(1500)).await;
    assert_eq!(gone.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_backlog_bound_a_delivery_that_would_wait_is_dropped() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .responder(Responder::Status(503, String::new()))
        .settings(&format!(
            "{ALLOW_LOOPBACK}limits:\n  max_pending_deliveries: 0\n"
        ))
        .hook(|rx| hook(&rx.url("/h"), &[("retry", FAST)]))
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t go").await.0, 201);
    rx.wait_for(1, T).await;
    let s = settled(&ph, 1).await;
    assert_eq!(s.deliveries_dropped, 1, "{s:#?}");
    rx.assert_quiet(Duration::from_millis(1500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_one_hook_and_leaves_the_others_alone() {
    let slow =
        WebhookReceiver::start(Responder::Delay(Duration::from_millis(400), String::new())).await;
    let slow_url = slow.url("/slow");
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .responder(Responder::Delay(Duration::from_millis(400), String::new()))
        .hook(move |_| hook(&slow_url, &[("max_in_flight", "2")]))
        .hook(|rx| hook(&rx.url("/free"), &[]))
        .start()
        .await;
    let started = std::time::Instant::now();
    for i in 0..6 {
        assert_eq!(
            create_post(ph.addr, PUBLIC, &format!("#t {i}")).await.0,
            201
        );
    }
    // The unbounded hook's six are all in flight at once.
    rx.wait_for(6, T).await;
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "not held up: {:?}",
        started.elapsed()
    );
    slow.wait_for(6, T).await;
    let s = settled(&ph, 12).await;
    assert_eq!(s.deliveries_delivered, 12, "{s:#?}");
    assert_eq!(slow.max_concurrent(), 2, "never more than max_in_flight");
    assert!(rx.max_concurrent() > 2, "{}", rx.max_concurrent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_tells_the_user_once_an_hour_about_failures_and_about_a_disabled_hook() {
    let gone = WebhookReceiver::start(Responder::Status(410, String::new())).await;
    let gone_url = gone.url("/gone");
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Status(500, String::new()))
        .hook(|rx| {
            hook(
                &rx.url("/flaky"),
                &[
                    ("id", "flaky"),
                    ("retry", "{attempts: 1}"),
                    (
                        "notify",
                        &format!("{{username: {USER_NAME}, after_failures: 2}}"),
                    ),
                ],
            )
        })
        .start()
        .await;
    let dm_posts = |mm: &MattermostStandIn| -> Vec<String> {
        mm.posts()
            .into_iter()
            .filter(|p| p["channel_id"] == DM)
            .map(|p| p["message"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(create_post(ph.addr, PUBLIC, "#t 1").await.0, 201);
    settled(&ph, 1).await;
    assert!(dm_posts(&mm).is_empty(), "one failure is not yet enough");
    assert_eq!(create_post(ph.addr, PUBLIC, "#t 2").await.0, 201);
    ph.wait_stats("the notice sent", |s| s.notifications_sent == 1)
        .await;
    let sent = dm_posts(&mm);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains("hook `flaky`") && sent[0].contains("failed 2 deliveries in a row"),
        "{}",
        sent[0]
    );
    assert!(!sent[0].contains(&rx.url("/flaky")), "never the URL");
    for i in 3..6 {
        assert_eq!(
            create_post(ph.addr, PUBLIC, &format!("#t {i}")).await.0,
            201
        );
    }
    settled(&ph, 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dm_posts(&mm).len(), 1, "at most one message an hour");

    // Another hook with notify, disabled by a 410: its user hears of it.
    drop(ph);
    let (text, listen) = config_text(
        &mm.base_url(),
        &format!(
            "{ALLOW_LOOPBACK}hooks:\n{}",
            hook(
                &gone_url,
                &[
                    ("id", "old"),
                    ("notify", &format!("{{username: {USER_NAME}}}"))
                ]
            )
        ),
    );
    let ph = start(&text, listen).await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t 7").await.0, 201);
    ph.wait_stats("the notice sent", |s| s.notifications_sent == 1)
        .await;
    let sent = dm_posts(&mm);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1].contains("hook `old`") && sent[1].contains("is disabled: answered 410 Gone"),
        "{}",
        sent[1]
    );
}
