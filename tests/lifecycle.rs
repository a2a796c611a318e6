//! The running binary's life cycle: SIGTERM drains and exits as soon as the work is done,
//! SIGHUP reloads the hooks atomically (an invalid file keeps the running config), and no
//! connection is dropped across reloads under load.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::binary::Proc;
use harness::*;
use support::*;

fn config(mm: &MattermostStandIn, addr: std::net::SocketAddr, grace: u64, hooks: &str) -> String {
    format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nserver:\n  grace_period_seconds: {grace}\n  graceful_shutdown_timeout_seconds: 1\n{ALLOW_LOOPBACK}hooks:\n{hooks}",
        mm.base_url()
    )
}

fn hook(word: &str, url: &str) -> String {
    format!("  - trigger_words: [\"{word}\"]\n    callback_urls: [\"{url}\"]\n    token: t\n")
}

fn listen_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_at_once_when_there_is_nothing_to_do() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr = listen_addr();
    let mut p = Proc::start(&config(&mm, addr, 10, &hook("#a", &rx.url("/a"))), addr).await;
    assert_eq!(create_post(p.addr, PUBLIC, "hello").await.0, 201);
    let sent = Instant::now();
    p.signal("-TERM");
    let took = p.wait_exit(sent, Duration::from_secs(8)).await;
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} with a 10 s grace period"
    );
    assert_eq!(p.count_log("shutdown: all work done"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_delivery_and_its_reply_finish_then_exits() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Delay(
        Duration::from_millis(1500),
        r#"{"text":"done"}"#.into(),
    ))
    .await;
    let addr = listen_addr();
    let mut p = Proc::start(&config(&mm, addr, 10, &hook("#slow", &rx.url("/s"))), addr).await;
    assert_eq!(create_post(p.addr, PUBLIC, "#slow job").await.0, 201);
    rx.wait_for(1, T).await;
    let sent = Instant::now();
    p.signal("-TERM");
    let took = p.wait_exit(sent, Duration::from_secs(9)).await;
    let posts = mm.posts();
    assert_eq!(posts.len(), 2, "the trigger and the reply: {posts:#?}");
    assert_eq!(posts[1]["message"], "done");
    assert!(
        took > Duration::from_millis(800),
        "exited before the delivery finished: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "waited past the work: {took:?}"
    );
    assert_eq!(p.count_log("outcome=delivered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_hanging_delivery_at_the_grace_period_and_reports_it() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Hang).await;
    let addr = listen_addr();
    let mut p = Proc::start(&config(&mm, addr, 1, &hook("#hang", &rx.url("/h"))), addr).await;
    assert_eq!(create_post(p.addr, PUBLIC, "#hang on").await.0, 201);
    rx.wait_for(1, T).await;
    let sent = Instant::now();
    p.signal("-TERM");
    let took = p.wait_exit(sent, Duration::from_secs(8)).await;
    assert!(took >= Duration::from_millis(900), "{took:?}");
    p.wait_log("grace period over with work pending").await;
    p.wait_log("outcome=dropped reason=cancelled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_hooks_and_an_invalid_file_keeps_the_running_ones() {
    let mm = standin().await;
    let a = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let b = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr = listen_addr();
    let p = Proc::start(&config(&mm, addr, 1, &hook("#a", &a.url("/a"))), addr).await;
    assert_eq!(create_post(p.addr, PUBLIC, "#a one").await.0, 201);
    a.wait_for(1, T).await;

    std::fs::write(&p.path, config(&mm, addr, 1, &hook("#b", &b.url("/b")))).unwrap();
    p.signal("-HUP");
    p.wait_log("reloaded").await;
    assert_eq!(create_post(p.addr, PUBLIC, "#b two").await.0, 201);
    assert_eq!(create_post(p.addr, PUBLIC, "#a three").await.0, 201);
    b.wait_for(1, T).await;
    a.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(a.requests().len(), 1, "the old hook is gone");

    // An invalid file: rejected, named, and the running hooks stay.
    std::fs::write(&p.path, "listen: [oops\n").unwrap();
    p.signal("-HUP");
    p.wait_log("reload rejected").await;
    assert_eq!(create_post(p.addr, PUBLIC, "#b four").await.0, 201);
    b.wait_for(2, T).await;
    // A restart-only change is applied to the hooks and reported for the rest.
    let other = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        &p.path,
        config(&mm, other.parse().unwrap(), 1, &hook("#b", &b.url("/b"))),
    )
    .unwrap();
    p.signal("-HUP");
    p.wait_log("listen changed").await;
    assert_eq!(
        create_post(p.addr, PUBLIC, "#b five").await.0,
        201,
        "still on the old address"
    );
    b.wait_for(3, T).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_is_dropped_across_reloads_under_load() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr = listen_addr();
    let valid = config(&mm, addr, 1, &hook("#a", &rx.url("/a")));
    let p = Proc::start(&valid, addr).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            let auth = format!("Bearer {USER_TOKEN}");
            let mut done = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = if done % 2 == 0 {
                    conn.request("GET", "/api/v4/system/ping", &[], b"").await
                } else {
                    let body =
                        format!("{{\"channel_id\":\"{PUBLIC}\",\"message\":\"#a {w} {done}\"}}");
                    conn.request(
                        "POST",
                        "/api/v4/posts",
                        &[("Authorization", auth.as_str())],
                        body.as_bytes(),
                    )
                    .await
                };
                assert!(
                    r.status == 200 || r.status == 201,
                    "worker {w} request {done}: {}",
                    r.status
                );
                done += 1;
            }
            done
        }));
    }
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let text = if i % 3 == 2 {
            "hooks: [\n".to_string()
        } else {
            valid.clone()
        };
        std::fs::write(&p.path, text).unwrap();
        p.signal("-HUP");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    assert!(total > 40, "only {total} requests went through");
    assert!(
        p.count_log("reloaded") >= 5,
        "{}",
        p.logs.lock().unwrap().join("\n")
    );
    assert!(p.count_log("reload rejected") >= 2);
}
