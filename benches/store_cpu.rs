//! What the durable store costs per delivery: CPU of this process and the wait for the intake's
//! commit, with deliveries offered at a fixed rate straight to posthook's `Store` (no proxy, no
//! HTTP), each going through the writes a delivery with a reply makes: intake, the attempt
//! (delivered, the answer kept, the reply leased), the reply done.
//!
//! Run: `cargo bench --bench store_cpu` (SQLite, 1 000 deliveries/s for 5 s), or
//! `-- --rate 2000 --seconds 3 --postgres` (also a throwaway PostgreSQL cluster, as the tests
//! start it). Everything stays on this machine (a temp dir, a unix socket).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/procfs.rs"]
mod procfs;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use posthook::config::{ContentType, Event, StoreConfig, StoreUrl};
use posthook::stats::Stats;
use posthook::store::{AttemptRecord, End, NewDelivery, Store};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn delivery(i: u64) -> NewDelivery {
    NewDelivery {
        id: posthook::signing::new_message_id(),
        hook: format!("{}", i % 1000),
        url_index: 0,
        host: "127.0.0.1:9".into(),
        content_type: ContentType::Form,
        // A payload of Mattermost's size (about 400 bytes).
        body: Bytes::from(format!(
            "channel_id=chan0000000000000000000001&channel_name=town-square&file_ids=&post_id=post{i:022}&team_domain=team&team_id=team0000000000000000000001&text=%23word{i}+hello+world+this+is+a+message&timestamp=1767225600000&token=hooktoken00000000000000001&trigger_word=%23word{i}&user_id=user0000000000000000000001&user_name=alice"
        )),
        event: Event::Posted,
        post_id: format!("post{i:022}"),
        channel_id: "chan0000000000000000000001".into(),
        root_id: String::new(),
        user_id: "user0000000000000000000001".into(),
        create_at: 1_767_225_600_000,
        lease: Duration::from_secs(45),
    }
}

fn own_ticks() -> u64 {
    procfs::stat_ticks("/proc/self/stat")
}

async fn run(name: &str, mut config: StoreConfig, rate: f64, seconds: f64) {
    if let Some(ms) = std::env::args()
        .position(|a| a == "--interval")
        .and_then(|i| std::env::args().nth(i + 1))
        .and_then(|v| v.parse().ok())
    {
        config.commit_interval = Duration::from_millis(ms);
    }
    let stats = Arc::new(Stats::default());
    let store = Store::open(&config, stats.clone()).await.unwrap();
    let n = (rate * seconds) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let ticks0 = own_ticks();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = t0 + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let d = delivery(i);
            let id = d.id.clone();
            let start = Instant::now();
            let ok = store.intake_all(vec![d]).await;
            let intake = start.elapsed();
            store
                .attempt(
                    &id,
                    AttemptRecord {
                        n: 1,
                        status: Some(200),
                        latency: Duration::from_millis(1),
                        error: None,
                    },
                    End::Delivered {
                        answer: Bytes::from_static(b"{\"text\":\"build started\"}"),
                        reply_lease: Some(Duration::from_secs(45)),
                    },
                )
                .await;
            store.reply_done(&id).await;
            (ok, intake, start.elapsed())
        }));
    }
    let mut intakes = Vec::with_capacity(tasks.len());
    let mut totals = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for t in tasks {
        let (ok, intake, total) = t.await.unwrap();
        failed += u64::from(!ok);
        intakes.push(intake);
        totals.push(total);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (own_ticks() - ticks0) as f64 / procfs::clock_ticks();
    intakes.sort();
    totals.sort();
    let q = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "| {name} | {rate:.0} | {n} | {failed} | {:.1} µs | {:.2} / {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.2} |",
        cpu / n as f64 * 1e6,
        q(&intakes, 0.5),
        q(&intakes, 0.99),
        q(&intakes, 1.0),
        q(&totals, 0.5),
        q(&totals, 0.99),
        cpu / wall,
    );
    let s = stats.snapshot();
    assert_eq!(s.store_errors, 0, "{name}: store errors");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rate: f64 = arg("--rate", 1000.0);
    let seconds: f64 = arg("--seconds", 5.0);
    let with_pg = std::env::args().any(|a| a == "--postgres");
    let dir = std::env::temp_dir().join(format!("posthook-store-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "| store | deliveries/s | deliveries | undurable | CPU per delivery | intake commit p50 / p99 / max | three writes p50 / p99 | cores busy |"
    );
    println!("|---|---:|---:|---:|---:|---|---|---:|");
    // The bench's own work (spawning, ids, timers): what the memory store costs.
    run("memory", StoreConfig::default(), rate, seconds).await;
    let sqlite = StoreConfig {
        url: StoreUrl::Sqlite(dir.join("posthook.db")),
        ..StoreConfig::default()
    };
    if !std::env::args().any(|a| a == "--no-sqlite") {
        run("sqlite", sqlite, rate, seconds).await;
    }
    if with_pg {
        let pg = support::PgCluster::start();
        let config = StoreConfig {
            url: StoreUrl::Postgres(pg.url.clone()),
            ..StoreConfig::default()
        };
        run("postgres", config, rate, seconds).await;
        drop(pg);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
