//! The loss window of the durable store: how long after the client has its 201 a matching
//! post's delivery is committed to the store. Only a crash inside that window can lose a
//! delivery (README "The delivery store"). posthook (the release binary, a child process) runs
//! with `store: sqlite:` in front of the stand-in; for each of N posts in turn the bench
//! polls the database (a reader of its own, every 0.2 ms) until the row is there, and prints
//! the distribution. The webhook never answers, so nothing else writes meanwhile.
//!
//! Run: `cargo bench --bench store_window` (200 posts) or `-- --posts 1000`. Everything runs
//! on 127.0.0.1 and stops by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::binary::Proc;
use harness::*;
use sqlx::Row;
use support::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let posts: usize = args
        .iter()
        .position(|a| a == "--posts")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Hang).await;
    let dir = std::env::temp_dir().join(format!("posthook-window-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("posthook.db");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nserver:\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{ALLOW_LOOPBACK}store:\n  url: \"sqlite:{}\"\nhooks:\n  - trigger_words: [\"#t\"]\n    callback_urls: [\"{}\"]\n    token: tok\n    timeout_seconds: 1\n",
        mm.base_url(),
        db.display(),
        rx.url("/h")
    );
    let _p = Proc::start(&config, addr).await;
    let reader = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=ro", db.display()))
        .await
        .unwrap();
    let count = || async {
        sqlx::query("SELECT COUNT(*) AS n FROM posthook_deliveries")
            .fetch_one(&reader)
            .await
            .map(|r| r.get::<i64, _>("n"))
            .unwrap_or(0)
    };
    // Warm the look-up caches and the connections: the first post pays for them once.
    create_post(addr, PUBLIC, "#t warm").await;
    while count().await < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut windows = Vec::with_capacity(posts);
    for i in 0..posts {
        let (status, _) = create_post(addr, PUBLIC, &format!("#t {i}")).await;
        assert_eq!(status, 201);
        let got_201 = Instant::now();
        let want = i as i64 + 2;
        while count().await < want {
            assert!(got_201.elapsed() < Duration::from_secs(10), "no row");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        windows.push(got_201.elapsed());
    }
    let (slowest, worst) = windows
        .iter()
        .enumerate()
        .max_by_key(|(_, w)| **w)
        .map(|(i, w)| (i, *w))
        .unwrap();
    windows.sort();
    let at = |q: f64| windows[((windows.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    println!("| posts | median | p90 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {posts} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    println!(
        "\nslowest: post {slowest} of {posts} ({:.2} ms)",
        worst.as_secs_f64() * 1000.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
