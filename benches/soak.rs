//! Soak: posthook (the release binary, as a child process) under a steady rate of posts for a
//! bounded time while its webhook endpoint flaps between answering, failing, timing out and
//! answering garbage. Every 10 s it samples posthook's RSS and open file descriptors; at the
//! end it checks that every due webhook request was counted once (delivered + failed +
//! dropped = due) and prints a markdown table.
//!
//! Run: `cargo bench --bench soak` (10 minutes) or `cargo bench --bench soak -- --seconds 60`.
//! Everything runs on 127.0.0.1 and stops by itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/harness/mod.rs"]
mod harness;

#[path = "common/procfs.rs"]
mod procfs;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;
use procfs::{open_fds, proc_status_kib};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_posthook");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads one metric value from a Prometheus text page.
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let rate: u64 = 50; // posts per second, half of them matching
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Json(r#"{"text":"ok"}"#.into())).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let dir = std::env::temp_dir().join(format!("posthook-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("posthook.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"{listen}\"\nmetrics_listen: \"{metrics}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nsettings:\n  outgoing_integration_requests_timeout: 1\n  allowed_untrusted_internal_connections: [\"127.0.0.1\"]\nhooks:\n  - display_name: soak\n    trigger_words: [\"#soak\"]\n    callback_urls: [\"{}\"]\n    token: t\n",
            mm.base_url(),
            rx.url("/soak")
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["-c", path.to_str().unwrap()])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let pid = child.0.id();
    let addr: std::net::SocketAddr = listen.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "posthook did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The webhook flaps every 5 s: answers, 500s, times out, answers garbage.
    let flapper = {
        let rx_responders = [
            Responder::Json(r#"{"text":"ok"}"#.into()),
            Responder::Status(500, "oops".into()),
            Responder::Delay(Duration::from_millis(1500), r#"{"text":"late"}"#.into()),
            Responder::Status(200, "not json at all".into()),
        ];
        let rx = std::sync::Arc::new(rx);
        let r = rx.clone();
        let task = tokio::spawn(async move {
            let mut i = 0usize;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                i += 1;
                r.set_responder(rx_responders[i % rx_responders.len()].clone());
            }
        });
        (rx, task)
    };

    println!("soak: {seconds} s at {rate} posts/s (half matching), webhook flapping every 5 s\n");
    println!("| t (s) | posts sent | errors | RSS (MiB) | open fds |\n|---:|---:|---:|---:|---:|");
    let start = Instant::now();
    let auth = format!("Bearer {USER_TOKEN}");
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(RawConn::connect(addr).await);
    }
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut samples: Vec<(u64, u64, usize)> = Vec::new();
    let mut next_sample = Duration::ZERO;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    while start.elapsed() < Duration::from_secs(seconds) {
        let intended = start + interval * sent as u32;
        if let Some(wait) = intended.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let word = if sent % 2 == 0 { "#soak" } else { "chatter" };
        let body = format!("{{\"channel_id\":\"{PUBLIC}\",\"message\":\"{word} {sent}\"}}");
        let conn = &mut conns[(sent % 4) as usize];
        let r = conn
            .request(
                "POST",
                "/api/v4/posts",
                &[("Authorization", auth.as_str())],
                body.as_bytes(),
            )
            .await;
        if r.status != 201 {
            errors += 1;
        }
        sent += 1;
        if start.elapsed() >= next_sample {
            let rss = proc_status_kib(pid, "VmRSS:") / 1024;
            let fds = open_fds(pid);
            samples.push((rss, start.elapsed().as_secs(), fds));
            println!(
                "| {} | {sent} | {errors} | {rss} | {fds} |",
                start.elapsed().as_secs()
            );
            next_sample += Duration::from_secs(10);
        }
    }
    flapper.1.abort();
    flapper
        .0
        .set_responder(Responder::Json(r#"{"text":"ok"}"#.into()));
    // Let the last deliveries (1 s timeout) settle, then read the counters.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = http_request(metrics.parse().unwrap(), "GET", "/metrics", &[], b"")
        .await
        .body_str();
    let due = metric(&page, "posthook_deliveries_due_total");
    let delivered = metric(&page, "posthook_deliveries_total{outcome=\"delivered\"}");
    let failed = metric(&page, "posthook_deliveries_total{outcome=\"failed\"}");
    let dropped = metric(&page, "posthook_deliveries_total{outcome=\"dropped\"}");
    let posted = metric(&page, "posthook_replies_total{outcome=\"posted\"}");
    let reply_failed = metric(&page, "posthook_replies_total{outcome=\"failed\"}");
    let none = metric(&page, "posthook_replies_total{outcome=\"none\"}");
    let peak = proc_status_kib(pid, "VmHWM:") / 1024;
    let first = samples
        .get(1)
        .or(samples.first())
        .copied()
        .unwrap_or_default();
    let last = samples.last().copied().unwrap_or_default();
    println!("\n| measure | value |\n|---|---:|");
    println!("| posts sent / answered non-201 | {sent} / {errors} |");
    println!("| deliveries due | {due} |");
    println!(
        "| delivered + failed + dropped | {delivered} + {failed} + {dropped} = {} |",
        delivered + failed + dropped
    );
    println!("| replies posted / failed / none | {posted} / {reply_failed} / {none} |");
    println!(
        "| RSS at {} s → at {} s (MiB) | {} → {} |",
        first.1, last.1, first.0, last.0
    );
    println!("| peak RSS (MiB) | {peak} |");
    println!(
        "| open fds at {} s → at {} s | {} → {} |",
        first.1, last.1, first.2, last.2
    );
    let balanced = due == delivered + failed + dropped && due == sent.div_ceil(2);
    println!(
        "\nresult: {} (every matching post due once: {}; counts balanced: {})",
        if balanced && errors == 0 {
            "PASS"
        } else {
            "FAIL"
        },
        due == sent.div_ceil(2),
        due == delivered + failed + dropped
    );
    drop(child);
}
