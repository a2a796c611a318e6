//! The store on PostgreSQL (issue 12, step 3), against a throwaway cluster: the store's
//! operations as on SQLite, claims that never hand one delivery to two replicas
//! (`FOR UPDATE SKIP LOCKED`), and replicas through the binary: one killed in the middle of a
//! delivery, the other finishes it once the lease has run out; a replay from either replica.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use posthook::config::{ContentType, Event, StoreConfig, StoreUrl};
use posthook::stats::Stats;
use posthook::store::{AttemptRecord, DeliveryFilter, End, NewDelivery, Store};
use support::*;

fn config(url: &str) -> StoreConfig {
    StoreConfig {
        url: StoreUrl::Postgres(url.to_string()),
        ..StoreConfig::default()
    }
}

fn delivery(id: &str, lease: Duration) -> NewDelivery {
    NewDelivery {
        id: id.into(),
        hook: "ci".into(),
        url_index: 0,
        host: "ci.example".into(),
        content_type: ContentType::Json,
        body: Bytes::from_static(b"{\"text\":\"hi\"}"),
        event: Event::Posted,
        post_id: "p1".into(),
        channel_id: "c1".into(),
        root_id: String::new(),
        user_id: "u1".into(),
        create_at: 1,
        lease,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_on_postgres_and_claims_hand_each_delivery_to_one_replica() {
    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let stats = Arc::new(Stats::default());
    let a = Store::open(&config(&pg.url), stats.clone()).await.unwrap();
    let b = Store::open(&config(&pg.url), stats.clone()).await.unwrap();
    assert!(a.is_durable());
    for i in 0..200 {
        assert!(
            a.intake(delivery(&format!("msg_{i:03}"), Duration::ZERO))
                .await
        );
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    // Two replicas claim at once, many times: each delivery goes to exactly one.
    let (x, y) = tokio::join!(
        async {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.extend(a.claim(7, Duration::from_secs(60)).await);
            }
            got
        },
        async {
            let mut got = Vec::new();
            for _ in 0..20 {
                got.extend(b.claim(7, Duration::from_secs(60)).await);
            }
            got
        }
    );
    let mut ids: Vec<String> = x.iter().chain(&y).map(|c| c.delivery.id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no delivery claimed twice");
    assert_eq!(n, 200, "all claimed: {} and {}", x.len(), y.len());
    assert!(!x.is_empty() && !y.is_empty(), "both replicas got work");
    assert_eq!(x[0].delivery.body, Bytes::from_static(b"{\"text\":\"hi\"}"));

    a.attempt(
        "msg_000",
        AttemptRecord {
            n: 1,
            status: Some(503),
            latency: Duration::from_millis(3),
            error: None,
        },
        End::Retry {
            after: Duration::ZERO,
            lease: Duration::ZERO,
        },
    )
    .await;
    b.attempt(
        "msg_001",
        AttemptRecord {
            n: 1,
            status: Some(200),
            latency: Duration::from_millis(3),
            error: None,
        },
        End::Delivered {
            answer: Bytes::from_static(b"ok"),
            reply_lease: None,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let again = b.claim(10, Duration::from_secs(60)).await;
    assert_eq!(again.len(), 1, "the retry whose holder let go");
    assert_eq!(
        (again[0].delivery.id.as_str(), again[0].attempts),
        ("msg_000", 1)
    );

    let cli = Store::open_for_cli(&config(&pg.url))
        .await
        .unwrap()
        .unwrap();
    let delivered = cli
        .list(&DeliveryFilter {
            state: Some("delivered".into()),
            limit: 10,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    let shown = cli.show("msg_001").await.unwrap().unwrap();
    assert_eq!(shown.answer.as_deref(), Some(&b"ok"[..]));
    assert!(shown.json);
    assert!(cli.replay("msg_001").await.unwrap());
    let replayed = a.claim(10, Duration::from_secs(60)).await;
    assert_eq!(replayed.len(), 1);
    a.disable_hook("ci", "answered 410 Gone").await;
    assert_eq!(
        b.disabled_hooks().await.unwrap().len(),
        1,
        "every replica sees it"
    );
    assert!(cli.enable_hook("ci").await.unwrap());
    assert_eq!(a.pending().await, Some(200));
    assert_eq!(stats.snapshot().store_errors, 0);
}

/// A replica's config on `addr` in front of `mm`, on the PostgreSQL store `url`.
fn replica(
    mm: &MattermostStandIn,
    addr: std::net::SocketAddr,
    url: &str,
    hook_url: &str,
) -> String {
    format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{}\"\nserver:\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{}store:\n  url: \"{url}\"\n  lease_margin_seconds: 1\nhooks:\n  - id: ci\n    trigger_words: [\"#t\"]\n    callback_urls: [\"{hook_url}\"]\n    token: tok\n    timeout_seconds: 2\n    retry: {{attempts: 3, initial_seconds: 1}}\n",
        mm.base_url(),
        harness::BOT_TOKEN,
        harness::ALLOW_LOOPBACK
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_delivery_leaves_its_work_to_the_other() {
    use harness::binary::{run, Proc};
    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let mm = harness::standin().await;
    let rx = WebhookReceiver::start(Responder::Hang).await;
    let addr_a: std::net::SocketAddr = format!("127.0.0.1:{}", harness::free_port())
        .parse()
        .unwrap();
    let addr_b: std::net::SocketAddr = format!("127.0.0.1:{}", harness::free_port())
        .parse()
        .unwrap();
    let mut a = Proc::start(&replica(&mm, addr_a, &pg.url, &rx.url("/h")), addr_a).await;
    let b = Proc::start(&replica(&mm, addr_b, &pg.url, &rx.url("/h")), addr_b).await;

    // Replica A sees the post and starts the delivery; the webhook does not answer.
    assert_eq!(
        harness::create_post(addr_a, harness::PUBLIC, "#t ship")
            .await
            .0,
        201
    );
    let fired = rx.wait_for(1, harness::T).await;
    let id = fired[0].header("webhook-id").unwrap().to_string();
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    // Replica B takes it over once A's lease has run out, with the same id.
    rx.set_responder(Responder::Json(r#"{"text":"shipped"}"#.to_string()));
    let fired = rx.wait_for(2, harness::T).await;
    assert_eq!(fired[1].header("webhook-id"), Some(id.as_str()));
    let posts = mm.wait_for_posts(2, harness::T).await;
    assert_eq!(posts[1]["message"], "shipped");
    b.wait_log("outcome=delivered").await;

    // A replay from the CLI with A's config (same store): the running replica sends it.
    let (code, out, err) = run(&["deliveries", "-c", a.path.to_str().unwrap(), "replay", &id]);
    assert_eq!(code, 0, "{out}{err}");
    let fired = rx.wait_for(3, harness::T).await;
    assert_eq!(fired[2].header("webhook-id"), Some(id.as_str()));
    let (code, out, _) = run(&[
        "deliveries",
        "-c",
        b.path.to_str().unwrap(),
        "show",
        &id,
        "--json",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["state"], "delivered");
    assert!(!out.contains("posthook@"), "never the store URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_going_down_under_load_is_never_seen_by_users_and_is_used_again_when_back() {
    let mut pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    let mm = harness::standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let extra = format!(
        "{}store:\n  url: \"{}\"\nhooks:\n{}",
        harness::ALLOW_LOOPBACK,
        pg.url,
        harness::word_hook("#t", &rx.url("/h"), &[("id", "ci")])
    );
    let (text, listen) = harness::config_text(&mm.base_url(), &extra);
    let ph = harness::start(&text, listen).await;
    let cli = Store::open_for_cli(&config(&pg.url))
        .await
        .unwrap()
        .unwrap();
    let mut sent = 0u64;
    sent += 20;
    assert!(post_batch(ph.addr, 20).await.iter().all(|s| *s == 201));
    rx.wait_for(20, harness::T).await;
    assert_eq!(stored(&cli).await.unwrap(), 20);

    tokio::task::block_in_place(|| pg.stop());
    sent += 20;
    let statuses = post_batch(ph.addr, 20).await;
    assert!(
        statuses.iter().all(|s| *s == 201),
        "users never notice: {statuses:?}"
    );
    rx.wait_for(40, harness::T).await;
    let s = ph
        .wait_stats("deliveries sent from memory", |s| {
            s.deliveries_delivered == 40
        })
        .await;
    assert!(s.deliveries_undurable >= 1, "{s:#?}");
    assert!(s.store_errors >= 1, "{s:#?}");

    tokio::task::block_in_place(|| pg.restart());
    let undurable = s.deliveries_undurable;
    sent += 20;
    let statuses = post_batch(ph.addr, 20).await;
    assert!(statuses.iter().all(|s| *s == 201));
    rx.wait_for(60, harness::T).await;
    let s = ph
        .wait_stats("all delivered", |s| s.deliveries_delivered == 60)
        .await;
    assert_eq!(
        s.deliveries_undurable, undurable,
        "written again once back: {s:#?}"
    );
    let deadline = std::time::Instant::now() + harness::T;
    loop {
        // The CLI's own pool reconnects too.
        if let Ok(n) = stored(&cli).await {
            if n >= 40 {
                assert!(n <= 60, "{n}");
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store did not come back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.deliveries_due, sent);
    assert_eq!(
        s.deliveries_due,
        s.deliveries_delivered + s.deliveries_failed + s.deliveries_dropped,
        "{s:#?}"
    );
}

/// Deliveries the store lists.
async fn stored(cli: &posthook::store::CliStore) -> Result<usize, posthook::store::StoreError> {
    cli.list(&DeliveryFilter {
        limit: 1000,
        ..DeliveryFilter::default()
    })
    .await
    .map(|rows| rows.len())
}

/// `n` matching posts in turn through `addr`; their statuses.
async fn post_batch(addr: std::net::SocketAddr, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for i in 0..n {
        statuses.push(
            harness::create_post(addr, harness::PUBLIC, &format!("#t {i}"))
                .await
                .0,
        );
    }
    statuses
}
