//! Hostile clients at the edge (issue 14), through the binary: memory taken by a flood of
//! half-open connections comes back once they close.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use harness::binary::Proc;
use harness::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// This process's soft limit of open files.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_a_half_open_flood_returns_after_it_closes() {
    let mm = standin().await;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nhooks: []\n",
        mm.base_url()
    );
    let p = Proc::start(&config, addr).await;
    let pid = p.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid);
    // 1 000 connections that send half a request head and stop (fewer under a low file
    // limit: this process holds one end of each).
    let n = open_files_limit().saturating_sub(100).min(1000);
    let flood = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nContent-Ty")
                    .unwrap();
                s
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = rss_kib(pid);
    drop(flood);
    // Within a few seconds, RSS is back within 20 MiB of where it started.
    let closed = Instant::now();
    let after = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        if now <= before + 20 * 1024 || closed.elapsed() > Duration::from_secs(5) {
            break now;
        }
    };
    eprintln!(
        "RSS {before} KiB, with {n} half-open connections {during} KiB, {:?} after they closed {after} KiB",
        closed.elapsed()
    );
    assert!(
        during > before + 10 * 1024,
        "the flood did not show ({before} → {during} KiB): the test measures nothing"
    );
    assert!(
        after <= before + 20 * 1024,
        "RSS {before} → {during} → {after} KiB 5 s after the flood closed"
    );
}
