//! The SSRF guard, end to end: callback URLs whose addresses are internal receive nothing
//! unless allowed, and the address checked is the address connected to.
//!
//! Only loopback addresses are ever connected to here (a guard that failed would reach a
//! listener of this test, never the network): internal ranges beyond loopback are covered by
//! the unit tests of `webhook.rs`, which never connect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::*;
use posthook::app::Options;
use posthook::net::Resolver;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A resolver whose answers the test scripts: one list of addresses per call, the last
/// repeated; every call is counted.
struct Scripted {
    answers: Vec<Vec<IpAddr>>,
    calls: Arc<AtomicUsize>,
    names: Arc<Mutex<Vec<String>>>,
}

impl Resolver for Scripted {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().push(host);
        let answer = self.answers[n.min(self.answers.len() - 1)].clone();
        Box::pin(async move { Ok(answer) })
    }
}

/// A listener that answers every request `{"text":null}` and counts connections.
async fn counting_listener(ip: &str, port: u16) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind((ip, port)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (port, hits)
}

async fn posthook_with(
    mm_url: &str,
    settings: &str,
    url: &str,
    answers: Vec<Vec<IpAddr>>,
) -> (Posthook, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let resolver = Scripted {
        answers,
        calls: calls.clone(),
        names: Arc::new(Mutex::new(Vec::new())),
    };
    let hooks = format!(
        "{settings}hooks:\n  - trigger_words: [\"#build\"]\n    callback_urls: [\"{url}\"]\n    token: t\n"
    );
    let (text, listen) = config_text(mm_url, &hooks);
    let ph = start_with(
        &text,
        listen,
        Options {
            resolver: Arc::new(resolver),
            ..Options::default()
        },
    )
    .await;
    (ph, calls)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// Every loopback-reachable form of an internal address is refused, by name and as a literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_by_name_and_by_literal() {
    let mm = standin().await;
    let (port, hits) = counting_listener("127.0.0.1", 0).await;
    // The same port on ::1, so that a broken guard would be seen for the v6 rows too.
    let (_, hits_v6) = counting_listener("::1", port).await;
    let rows: &[(&str, &str)] = &[
        ("127.0.0.1", "loopback v4"),
        ("127.9.9.9", "loopback v4, another address of 127/8"),
        ("0.0.0.0", "unspecified v4 (Linux connects it to loopback)"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::1", "loopback v6"),
        ("::", "unspecified v6"),
    ];
    for (ip, what) in rows {
        // By name: the resolver answers the internal address.
        let (ph, calls) = posthook_with(
            &mm.base_url(),
            "",
            &format!("http://hooks.example.test:{port}/h"),
            vec![ips(&[ip])],
        )
        .await;
        assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
        ph.wait_stats(what, |s| s.deliveries_failed == 1).await;
        assert!(calls.load(Ordering::SeqCst) >= 1, "{what}: resolver asked");
        drop(ph);
        // As an IP literal in the URL (never reaches the resolver).
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let (ph, calls) = posthook_with(
            &mm.base_url(),
            "",
            &format!("http://{host}:{port}/h"),
            vec![vec![]],
        )
        .await;
        assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
        ph.wait_stats(what, |s| s.deliveries_failed == 1).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "{what}: literal not resolved"
        );
        drop(ph);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no refused address was connected to"
    );
    assert_eq!(
        hits_v6.load(Ordering::SeqCst),
        0,
        "no refused v6 address was connected to"
    );
}

/// Of one answer with an internal and an allowed address, only the allowed one is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_addresses_of_an_answer_are_connected_to() {
    let mm = standin().await;
    // 127.0.0.2 is allowed by CIDR, 127.0.0.3 is not; both listen on one port.
    let (port, allowed_hits) = counting_listener("127.0.0.2", 0).await;
    let (_, refused_hits) = counting_listener("127.0.0.3", port).await;
    let (ph, _) = posthook_with(
        &mm.base_url(),
        "settings:\n  allowed_untrusted_internal_connections: [\"127.0.0.2/32\"]\n",
        &format!("http://hooks.example.test:{port}/h"),
        vec![ips(&["127.0.0.3", "127.0.0.2"])],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
    }
    ph.wait_stats("three deliveries", |s| s.deliveries_delivered == 3)
        .await;
    assert_eq!(refused_hits.load(Ordering::SeqCst), 0);
    assert!(allowed_hits.load(Ordering::SeqCst) >= 1);
}

/// A name that answers an allowed address first and an internal one on the next look-up
/// (DNS rebinding) never gets a connection to the internal one: each connection uses the
/// very answer that was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_after_the_check_reaches_nothing() {
    let mm = standin().await;
    let (port, allowed_hits) = counting_listener("127.0.0.2", 0).await;
    let (_, refused_hits) = counting_listener("127.0.0.3", port).await;
    let (ph, calls) = posthook_with(
        &mm.base_url(),
        "settings:\n  allowed_untrusted_internal_connections: [\"127.0.0.2/32\"]\n",
        &format!("http://hooks.example.test:{port}/h"),
        vec![ips(&["127.0.0.2"]), ips(&["127.0.0.3"])],
    )
    .await;
    // Each post needs a fresh connection (the listener closes after one answer), so each
    // resolves again: the first gets the allowed address, later ones the internal one.
    for i in 1..=3 {
        assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
        ph.wait_stats("outcome", |s| {
            s.deliveries_delivered + s.deliveries_failed == i
        })
        .await;
    }
    let s = ph.stats();
    assert!(calls.load(Ordering::SeqCst) >= 2, "resolved more than once");
    assert_eq!(s.deliveries_delivered, 1, "{s:?}");
    assert_eq!(s.deliveries_failed, 2, "{s:?}");
    assert_eq!(allowed_hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        refused_hits.load(Ordering::SeqCst),
        0,
        "the rebound address was never reached"
    );
}

/// A redirect to an internal address is refused like a direct one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_internal_addresses_are_refused() {
    let mm = standin().await;
    let (target_port, target_hits) = counting_listener("127.0.0.1", 0).await;
    // The callback host (allowed by name) redirects to a loopback literal that is not allowed.
    let redirector = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let rport = redirector.local_addr().unwrap().port();
    let redirects = Arc::new(AtomicUsize::new(0));
    let r = redirects.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = redirector.accept().await else {
                return;
            };
            r.fetch_add(1, Ordering::SeqCst);
            let loc = format!("http://127.0.0.1:{target_port}/internal");
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let (ph, _) = posthook_with(
        &mm.base_url(),
        "settings:\n  allowed_untrusted_internal_connections: [\"hooks.example.test\"]\n",
        &format!("http://hooks.example.test:{rport}/h"),
        vec![ips(&["127.0.0.2"])],
    )
    .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#build").await.0, 201);
    ph.wait_stats("refused redirect", |s| s.deliveries_failed == 1)
        .await;
    assert_eq!(redirects.load(Ordering::SeqCst), 1);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
}
