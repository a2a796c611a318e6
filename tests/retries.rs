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
    let mut fields = vec![
        ("trigger_words", "[\"#t\"]".to_string()),
        ("callback_urls", format!("[\"{url}\"]")),
        ("token", "\"tok\"".to_string()),
    ];
    fields.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let borrowed: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    hook_yaml(&borrowed)
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
    let s = settled(&ph, 1).await;
    assert_eq!((s.deliveries_delivered, s.replies_posted), (1, 1), "{s:#?}");

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
