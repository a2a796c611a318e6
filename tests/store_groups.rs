//! Group commits under load, on both engines: a burst of writes that share one transaction
//! (and multi-row statements: 100 of a kind take three, of 64, 32 and 4 rows) must land each
//! on its own delivery, exactly as one write at a time would. Through the store's API as the
//! dispatcher uses it, read back through the CLI's view.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use posthook::config::{ContentType, Event, StoreConfig, StoreUrl};
use posthook::stats::Stats;
use posthook::store::{AttemptRecord, DeliveryFilter, End, NewDelivery, Store};
use support::*;

const N: usize = 100;

fn delivery(i: usize) -> NewDelivery {
    NewDelivery {
        id: format!("msg_{i:03}"),
        hook: format!("h{}", i % 7),
        url_index: (i % 2) as u32,
        host: "ci.example".into(),
        content_type: if i % 2 == 0 {
            ContentType::Json
        } else {
            ContentType::Form
        },
        body: Bytes::from(format!("body {i}")),
        event: if i % 5 == 0 {
            Event::Edited
        } else {
            Event::Posted
        },
        post_id: format!("p{i}"),
        channel_id: "c1".into(),
        root_id: String::new(),
        user_id: "u1".into(),
        create_at: i as i64,
        lease: Duration::from_secs(60),
    }
}

/// What attempt `i` ends in: delivered with a reply, delivered, a retry, or failed.
fn end(i: usize) -> (AttemptRecord, End) {
    let status = [200, 200, 503, 404][i % 4];
    let record = AttemptRecord {
        n: 1,
        status: (i % 4 != 3 || i % 8 == 3).then_some(status),
        latency: Duration::from_millis(i as u64),
        error: (i % 4 == 3).then(|| format!("error {i}")),
    };
    let end = match i % 4 {
        0 => End::Delivered {
            answer: Bytes::from(format!("answer {i}")),
            reply_lease: Some(Duration::from_secs(60)),
        },
        1 => End::Delivered {
            answer: Bytes::from(format!("answer {i}")),
            reply_lease: None,
        },
        2 => End::Retry {
            after: Duration::from_secs(30),
            lease: Duration::from_secs(60),
        },
        _ => End::Failed,
    };
    (record, end)
}

async fn burst(config: StoreConfig) {
    let config = StoreConfig {
        // Long enough that every write of a burst queues up while the writer waits.
        commit_interval: Duration::from_millis(50),
        ..config
    };
    let stats = Arc::new(Stats::default());
    let store = Store::open(&config, stats.clone()).await.unwrap();
    // A first commit, so that the burst waits for the interval and is taken as one group.
    store.disable_hook("warm", "warming up").await;
    assert!(store.intake_all((0..N).map(delivery).collect()).await);
    join_all((0..N).map(|i| {
        let store = store.clone();
        async move {
            let (record, end) = end(i);
            store.attempt(&format!("msg_{i:03}"), record, end).await;
        }
    }))
    .await;
    join_all((0..N).filter(|i| i % 4 == 0).map(|i| {
        let store = store.clone();
        async move { store.reply_done(&format!("msg_{i:03}")).await }
    }))
    .await;
    assert_eq!(stats.snapshot().store_errors, 0);
    assert!(
        store
            .claim_replies(10, Duration::from_secs(60))
            .await
            .is_empty(),
        "every reply recorded as done"
    );
    assert_eq!(store.pending().await, Some((N / 4) as u64), "the retries");

    let cli = Store::open_for_cli(&config).await.unwrap().unwrap();
    for i in 0..N {
        let id = format!("msg_{i:03}");
        let d = cli.show(&id).await.unwrap().unwrap();
        let want_state = ["delivered", "delivered", "pending", "failed"][i % 4];
        assert_eq!(d.row.state, want_state, "{id}");
        assert_eq!(d.row.hook, format!("h{}", i % 7), "{id}");
        assert_eq!(d.row.post_id, format!("p{i}"), "{id}");
        assert_eq!(d.body, Bytes::from(format!("body {i}")), "{id}");
        assert_eq!(d.json, i % 2 == 0, "{id}");
        assert_eq!(d.row.attempts, 1, "{id}");
        let (record, _) = end(i);
        assert_eq!(d.row.last_status, record.status, "{id}");
        assert_eq!(d.row.last_error, record.error, "{id}");
        assert_eq!(d.attempts.len(), 1, "{id}");
        assert_eq!(d.attempts[0].latency_ms, i as i64, "{id}");
        let want_outcome = ["delivered", "delivered", "retry", "failed"][i % 4];
        assert_eq!(d.attempts[0].outcome, want_outcome, "{id}");
        let answer = (i % 4 < 2).then(|| Bytes::from(format!("answer {i}")));
        assert_eq!(d.answer, answer, "{id}");
    }
    let failed = cli
        .list(&DeliveryFilter {
            state: Some("failed".into()),
            limit: 1000,
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), N / 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_in_one_commit_lands_each_on_its_delivery_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("posthook-groups-{}", random_id()));
    burst(StoreConfig {
        url: StoreUrl::Sqlite(dir.join("posthook.db")),
        ..StoreConfig::default()
    })
    .await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_writes_in_one_commit_lands_each_on_its_delivery_on_postgres() {
    let pg = tokio::task::spawn_blocking(PgCluster::start).await.unwrap();
    burst(StoreConfig {
        url: StoreUrl::Postgres(pg.url.clone()),
        ..StoreConfig::default()
    })
    .await;
}
