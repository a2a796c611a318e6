//! Memory: a 1 GiB webhook answer and a gzip bomb for a 201. posthook reads and decodes only up
//! to its bounds, and the resident set stays bounded; the test holds the gate exclusively, so
//! that no other test of this binary moves the RSS meanwhile.

use super::upstream::{posthook_before, PostMode, RawUpstream};
use super::webhooks::{Answer, FaultServer};
use super::wire::{assert_same_answer, exchange, post_request};
use super::*;

/// Samples the RSS every 10 ms until `done` holds (bounded by `T`); returns the peak.
async fn peak_rss_until(what: &str, done: impl Fn() -> bool) -> u64 {
    let deadline = Instant::now() + T;
    let mut peak = rss();
    while !done() {
        assert!(Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
        peak = peak.max(rss());
    }
    peak.max(rss())
}

/// A webhook that answers 1 GiB, and an upstream whose 201 is a gzip bomb (128 MiB of JSON
/// in about 130 KiB): posthook reads at most 1 MiB + 1 of the one and decodes at most
/// `limits.max_decoded_body_bytes` of the other; memory stays bounded, the user sees nothing,
/// and both are counted. Runs alone (the gate) so that other tests do not move the RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_a_1_gib_answer_and_a_gzip_bomb() {
    let _gate = MEMORY_GATE.write().await;

    // Row 1: the 1 GiB webhook answer.
    let what = "1 GiB answer";
    let mm = standin().await;
    let fault = FaultServer::start(PUBLIC_IP, Answer::Huge).await;
    let extra = format!(
        "settings:\n{ALLOW_PUBLIC_IP}hooks:\n{}",
        form_hook("#build", &fault.url("hook.test"))
    );
    let (ph, _) = launch(&mm.base_url(), &extra, false, names, &standin_saw(&mm)).await;
    let base = baseline(ph.addr).await;
    let before = rss();
    let took = timed_post(ph.addr, "#build huge answer").await;
    let n = not_delayed(what, base, took, || {
        timed_post(ph.addr, "#build huge answer")
    })
    .await;
    let state = fault.state.clone();
    let peak = peak_rss_until(what, move || state.ended.load(Ordering::SeqCst) as u64 == n).await;
    let s = settle(&ph, what).await;
    assert_eq!(
        (s.deliveries_due, s.deliveries_delivered, s.replies_failed),
        (n, n, n),
        "{what}: delivered, and the answer refused as too large: {s:#?}"
    );
    let written = fault.state.written.load(Ordering::SeqCst);
    assert!(
        written < n * MEMORY_BOUND,
        "{what}: posthook stopped reading and closed, after {written} bytes were written"
    );
    assert!(
        peak.saturating_sub(before) < MEMORY_BOUND,
        "{what}: RSS grew by {} MiB",
        (peak - before) >> 20
    );
    assert_up(ph.addr, what).await;
    drop(ph);

    // Row 2: the gzip bomb.
    let what = "gzip bomb";
    let message = "#build bomb";
    let post = created_post_json(PUBLIC, message, "{}");
    let bomb = tokio::task::spawn_blocking(move || {
        // A last member, "pad", holds 128 MiB of spaces.
        let head = format!("{},\"pad\":\"", &post[..post.len() - 1]);
        let spaces = vec![b' '; 1024 * 1024];
        gzip(&[head.as_bytes(), &spaces, b"\"}"], 128)
    })
    .await
    .unwrap();
    assert!(
        bomb.len() < 1024 * 1024,
        "under the inspection bound: {}",
        bomb.len()
    );
    let answer = http_response(
        "201 Created",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    drop(bomb);
    let up = RawUpstream::start(PostMode::Answer(answer)).await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before(&up, &rx, "").await;
    let base = baseline(ph.addr).await;
    let before = rss();
    let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
    let request = post_request(body.as_bytes(), &[]);
    let got = exchange(ph.addr, &request).await;
    assert_eq!(
        up.last_post(),
        body.as_bytes(),
        "{what}: the upstream got the exact body"
    );
    assert_same_answer(what, &got, &up.last_answer(), false);
    let n = not_delayed(what, base, got.took, || async {
        exchange(ph.addr, &request).await.took
    })
    .await;
    let h = handle(&ph);
    let stats = h.stats.clone();
    // Until every post is judged, either way.
    let peak = peak_rss_until(what, move || {
        let s = stats.snapshot();
        h.is_idle() && s.posts_unparsed + s.deliveries_due >= n
    })
    .await;
    assert!(
        peak.saturating_sub(before) < MEMORY_BOUND,
        "{what}: RSS grew by {} MiB",
        (peak - before) >> 20
    );
    let s = settle(&ph, what).await;
    assert_eq!(
        (s.posts_observed, s.posts_unparsed, s.deliveries_due),
        (BASELINE_POSTS + n, n, 0),
        "{what}: refused past the decoding bound: {s:#?}"
    );
    rx.assert_quiet(Duration::from_millis(100)).await;
    assert_up(ph.addr, what).await;
}
