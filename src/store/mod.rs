//! Store: where deliveries live (`store.url`), so that none is lost to a crash or a restart,
//! and the delivery log that `posthook deliveries` reads.
//!
//! `memory` (the default) keeps nothing: posthook behaves as it always has. With `sqlite:PATH`
//! every due callback request is written before its first attempt, each attempt and the answer
//! are recorded, and a retry waits in the store as well as in memory. Writes go through one
//! writer (a thread of its own on SQLite, a task on PostgreSQL) that commits whatever has queued
//! up in one transaction (group commit), a commit starting at most every
//! `store.commit_interval_ms`; the writes' SQL is written once (`writes.rs`). Callers
//! wait for their commit, never longer than [`WRITE_WAIT`]: past it, or when the store fails,
//! the delivery goes on from memory (counted in `posthook_deliveries_undurable_total`), and the
//! user's traffic never waits on any of it. A delivery is leased to the process working on it;
//! a lease that runs out (its process died) makes it due for any process to claim.

mod sql;
mod sqlite;
mod writes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::warn;
use tokio::sync::{mpsc, oneshot};

use crate::config::{ContentType, Event, StoreConfig, StoreUrl};
use crate::stats::Stats;

/// The longest a delivery waits for its write to commit before going on from memory.
pub const WRITE_WAIT: Duration = Duration::from_secs(2);
/// Writes queued for the writer, at most; a full queue is a failed write (counted).
const WRITE_QUEUE: usize = 8192;
/// Writes committed in one transaction, at most.
const GROUP_MAX: usize = 512;

/// Who waits for a write's commit.
type Waiter = oneshot::Sender<Result<(), StoreError>>;
/// A write and its waiter.
type Write = (Op, Waiter);
/// The writer's end of the write queue.
type WriteRx = mpsc::Receiver<Write>;

/// A store failure, as text (the engines' errors are not `Clone`; every waiter of a group
/// commit gets the same one).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// A callback request as the store keeps it: everything needed to send it again, and nothing
/// secret (the hook's URL is named by its position in the hook's list: it may carry a secret;
/// the body holds the hook's token, as Mattermost sends it).
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The `webhook-id` (`msg_…`).
    pub id: String,
    /// The hook's name (its `id`, or its position).
    pub hook: String,
    pub url_index: u32,
    pub host: String,
    pub content_type: ContentType,
    pub body: Bytes,
    pub event: Event,
    pub post_id: String,
    pub channel_id: String,
    pub root_id: String,
    pub user_id: String,
    pub create_at: i64,
    /// How long the writing process holds it (its first attempt's deadline and a margin).
    pub lease: Duration,
}

/// A delivery claimed from the store, to be sent again.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: NewDelivery,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A delivered request whose reply was never recorded as done (its process died), claimed to
/// post the reply from the kept answer.
#[derive(Debug, Clone)]
pub struct ClaimedReply {
    pub delivery: NewDelivery,
    pub status: u16,
    pub answer: Bytes,
}

/// One attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// 1 for the first.
    pub n: u32,
    pub status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
}

/// What an attempt ended in.
#[derive(Debug, Clone)]
pub enum End {
    /// Delivered; the answer is kept (before any reply is posted). With `reply_lease`, the
    /// answer yields a reply, held by this process that long: if it dies before the reply is
    /// recorded as done, any process posts it from the kept answer.
    Delivered {
        answer: Bytes,
        reply_lease: Option<Duration>,
    },
    /// To be tried again after `after`; held by this process `lease` longer.
    Retry { after: Duration, lease: Duration },
    /// Failed for good.
    Failed,
}

impl End {
    fn outcome(&self) -> &'static str {
        match self {
            End::Delivered { .. } => "delivered",
            End::Retry { .. } => "retry",
            End::Failed => "failed",
        }
    }
}

/// A write for the writer task.
#[derive(Debug)]
enum Op {
    Intake(NewDelivery),
    Attempt {
        id: String,
        attempt: AttemptRecord,
        end: End,
    },
    Drop {
        id: String,
        reason: String,
    },
    DisableHook {
        hook: String,
        reason: String,
    },
    ReplyDone {
        id: String,
    },
}

/// `posthook deliveries list` filters.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub hook: Option<String>,
    pub state: Option<String>,
    /// Only deliveries created this recently.
    pub since: Option<Duration>,
    pub limit: u32,
}

/// A delivery in a list.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub hook: String,
    pub host: String,
    /// `pending`, `delivered`, `failed` or `dropped`.
    pub state: String,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub post_id: String,
}

/// One recorded attempt.
#[derive(Debug, Clone)]
pub struct StoredAttempt {
    pub n: u32,
    pub at_ms: i64,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub outcome: String,
}

/// A delivery with its attempts, body and answer.
#[derive(Debug, Clone)]
pub struct DeliveryDetail {
    pub row: DeliveryRow,
    pub json: bool,
    pub body: Bytes,
    pub answer: Option<Bytes>,
    pub attempts: Vec<StoredAttempt>,
}

/// A hook disabled in the store (by a `410 Gone`).
#[derive(Debug, Clone)]
pub struct DisabledHook {
    pub hook: String,
    pub disabled_at_ms: i64,
    pub reason: String,
}

/// The store: memory (nothing kept) or a database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Option<Arc<Durable>>,
}

struct Durable {
    sql: sql::Sql,
    writes: mpsc::Sender<Write>,
    stats: Arc<Stats>,
    errors: ErrorLog,
}

impl Store {
    /// The memory store: nothing is kept.
    pub const MEMORY: Store = Store { inner: None };

    /// The memory store: nothing is kept.
    pub fn memory() -> Store {
        Store::MEMORY
    }

    /// Opens the store `config` names (creating the database and its tables when missing)
    /// and starts its writer on the current runtime.
    pub async fn open(config: &StoreConfig, stats: Arc<Stats>) -> Result<Store, StoreError> {
        let Some(sql) = sql::Sql::open_config(config).await? else {
            return Ok(Store::memory());
        };
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        match &config.url {
            // SQLite: a thread of its own runs the writes (sqlite.rs says why).
            StoreUrl::Sqlite(path) => sqlite::start_writer(path, rx, config)?,
            _ => {
                tokio::spawn(writer(sql.clone(), rx, config.commit_interval));
            }
        }
        Ok(Store {
            inner: Some(Arc::new(Durable {
                sql,
                writes: tx,
                stats,
                errors: ErrorLog::default(),
            })),
        })
    }

    /// Opens the store `config` names, creating it when missing, and closes it again: a start
    /// fails early on a store it cannot use.
    pub async fn check(config: &StoreConfig) -> Result<(), StoreError> {
        sql::Sql::open_config(config).await.map(drop)
    }

    /// [`Store::check`] on a thread and runtime of its own, from any caller (the memory
    /// store needs no check).
    pub fn check_blocking(config: &StoreConfig) -> Result<(), StoreError> {
        if *config == StoreConfig::default() {
            return Ok(());
        }
        let store = config.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| StoreError(e.to_string()))?;
            rt.block_on(Store::check(&store))
        })
        .join()
        .unwrap_or_else(|_| Err(StoreError("the check panicked".into())))
    }

    /// Opens the store for reading and administration (the CLI): no writer task.
    pub async fn open_for_cli(config: &StoreConfig) -> Result<Option<CliStore>, StoreError> {
        Ok(sql::Sql::open_config(config)
            .await?
            .map(|sql| CliStore { sql }))
    }

    /// Whether deliveries are kept (not `memory`).
    pub fn is_durable(&self) -> bool {
        self.inner.is_some()
    }

    /// Writes a new delivery before its first attempt; false (counted as undurable) when it
    /// could not be written in time.
    pub async fn intake(&self, d: NewDelivery) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let ok = inner.write(Op::Intake(d)).await;
        if !ok {
            Stats::inc(&inner.stats.deliveries_undurable);
        }
        ok
    }

    /// Writes new deliveries before their first attempts, all in one wait (they join one
    /// group commit); false (each counted as undurable) when they could not be written in time.
    pub async fn intake_all(&self, ds: Vec<NewDelivery>) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let n = ds.len() as u64;
        let ok = inner
            .write_all(ds.into_iter().map(Op::Intake).collect())
            .await;
        if !ok {
            Stats::add(&inner.stats.deliveries_undurable, n);
        }
        ok
    }

    /// Records attempt `attempt` of delivery `id` and what it ended in.
    pub async fn attempt(&self, id: &str, attempt: AttemptRecord, end: End) {
        if let Some(inner) = &self.inner {
            inner
                .write(Op::Attempt {
                    id: id.to_string(),
                    attempt,
                    end,
                })
                .await;
        }
    }

    /// Records that delivery `id` was dropped (never to be sent again) because of `reason`.
    pub async fn dropped(&self, id: &str, reason: &str) {
        if let Some(inner) = &self.inner {
            inner
                .write(Op::Drop {
                    id: id.to_string(),
                    reason: reason.to_string(),
                })
                .await;
        }
    }

    /// Records that the reply to delivery `id` was handled (posted, or failed for good: a reply
    /// is never retried).
    pub async fn reply_done(&self, id: &str) {
        if let Some(inner) = &self.inner {
            inner.write(Op::ReplyDone { id: id.to_string() }).await;
        }
    }

    /// Leases up to `limit` delivered requests whose reply no process holds, for `lease`.
    pub async fn claim_replies(&self, limit: u32, lease: Duration) -> Vec<ClaimedReply> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        match inner.sql.claim_replies(limit, lease).await {
            Ok(c) => c,
            Err(e) => {
                inner.failed("claiming replies", &e);
                Vec::new()
            }
        }
    }

    /// Records that hook `hook` was disabled, so that every process (and the next start)
    /// sees it.
    pub async fn disable_hook(&self, hook: &str, reason: &str) {
        if let Some(inner) = &self.inner {
            inner
                .write(Op::DisableHook {
                    hook: hook.to_string(),
                    reason: reason.to_string(),
                })
                .await;
        }
    }

    /// Leases up to `limit` due deliveries that no process holds, for `lease`.
    pub async fn claim(&self, limit: u32, lease: Duration) -> Vec<Claimed> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        match inner.sql.claim(limit, lease).await {
            Ok(c) => c,
            Err(e) => {
                inner.failed("claiming due deliveries", &e);
                Vec::new()
            }
        }
    }

    /// The hooks disabled in the store; `None` when it could not be read.
    pub async fn disabled_hooks(&self) -> Option<Vec<DisabledHook>> {
        let inner = self.inner.as_ref()?;
        match inner.sql.disabled_hooks().await {
            Ok(h) => Some(h),
            Err(e) => {
                inner.failed("reading the disabled hooks", &e);
                None
            }
        }
    }

    /// Deliveries pending in the store (waiting for a retry, or leased and in flight).
    pub async fn pending(&self) -> Option<u64> {
        let inner = self.inner.as_ref()?;
        match inner.sql.pending().await {
            Ok(n) => Some(n),
            Err(e) => {
                inner.failed("counting pending deliveries", &e);
                None
            }
        }
    }

    /// Deletes finished deliveries older than `age`, `batch` at a time, pausing between
    /// batches; returns how many.
    pub async fn purge(&self, age: Duration, batch: u32) -> u64 {
        let Some(inner) = &self.inner else {
            return 0;
        };
        let mut total = 0;
        loop {
            match inner.sql.purge(age, batch).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(batch) {
                        return total;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    inner.failed("deleting old deliveries", &e);
                    return total;
                }
            }
        }
    }
}

impl Durable {
    /// Queues `ops` for the writer together and waits for their commits, at most
    /// [`WRITE_WAIT`] in all.
    async fn write_all(&self, ops: Vec<Op>) -> bool {
        let mut acks = Vec::with_capacity(ops.len());
        for op in ops {
            let (tx, rx) = oneshot::channel();
            if self.writes.try_send((op, tx)).is_err() {
                self.failed(
                    "writing",
                    &StoreError("the store's write queue is full".into()),
                );
                return false;
            }
            acks.push(rx);
        }
        let all = async {
            for rx in acks {
                match rx.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(StoreError("the store's writer stopped".into())),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(WRITE_WAIT, all).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.failed("writing", &e);
                false
            }
            Err(_) => {
                self.failed(
                    "writing",
                    &StoreError(format!("no commit within {}s", WRITE_WAIT.as_secs())),
                );
                false
            }
        }
    }

    /// Queues `op` for the writer and waits for its commit, at most [`WRITE_WAIT`].
    async fn write(&self, op: Op) -> bool {
        self.write_all(vec![op]).await
    }

    /// Counts a store failure and logs it, at most once every ten seconds.
    fn failed(&self, what: &str, e: &StoreError) {
        Stats::inc(&self.stats.store_errors);
        self.errors.note(what, e);
    }
}

/// The writer: commits whatever has queued up, in one transaction, and tells each waiter.
/// A commit starts no sooner than `interval` after the one before.
async fn writer(sql: sql::Sql, mut rx: WriteRx, interval: Duration) {
    let mut last: Option<Instant> = None;
    while let Some(first) = rx.recv().await {
        if let Some(at) = last {
            tokio::time::sleep_until((at + interval).into()).await;
        }
        last = Some(Instant::now());
        let (ops, waiters) = group(first, &mut rx);
        let result = sql.apply(&ops).await;
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// `first` and whatever else has queued up, [`GROUP_MAX`] at most: one group commit's writes
/// and their waiters.
fn group(first: Write, rx: &mut WriteRx) -> (Vec<Op>, Vec<Waiter>) {
    let mut ops = vec![first.0];
    let mut waiters = vec![first.1];
    while ops.len() < GROUP_MAX {
        match rx.try_recv() {
            Ok((op, w)) => {
                ops.push(op);
                waiters.push(w);
            }
            Err(_) => break,
        }
    }
    (ops, waiters)
}

/// Logs store failures at most once every ten seconds, with the count since the last line.
#[derive(Default)]
struct ErrorLog {
    last: std::sync::Mutex<Option<(Instant, u64)>>,
}

impl ErrorLog {
    fn note(&self, what: &str, e: &StoreError) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let now = Instant::now();
        match &mut *last {
            Some((at, n)) if now.duration_since(*at) < Duration::from_secs(10) => *n += 1,
            _ => {
                let more = last.map_or(0, |(_, n)| n);
                warn!(
                    "store: {what} failed: {e}; deliveries go on from memory ({more} more failures since the last such line; all counted in posthook_store_errors_total)"
                );
                *last = Some((now, 0));
            }
        }
    }
}

/// The store as the CLI uses it: reads, replays, hooks.
pub struct CliStore {
    sql: sql::Sql,
}

impl CliStore {
    pub async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        self.sql.list(filter).await
    }

    pub async fn show(&self, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
        self.sql.show(id).await
    }

    /// Makes delivery `id` due now: the running service sends it again (same `webhook-id`).
    pub async fn replay(&self, id: &str) -> Result<bool, StoreError> {
        self.sql.replay(id).await
    }

    pub async fn disabled_hooks(&self) -> Result<Vec<DisabledHook>, StoreError> {
        self.sql.disabled_hooks().await
    }

    pub async fn enable_hook(&self, hook: &str) -> Result<bool, StoreError> {
        self.sql.enable_hook(hook).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreUrl;

    fn temp_db(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "posthook-store-{name}-{}-{}",
            std::process::id(),
            crate::signing::new_message_id()
        ));
        dir.join("posthook.db")
    }

    fn delivery(id: &str, lease: Duration) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            hook: "ci".into(),
            url_index: 1,
            host: "ci.example".into(),
            content_type: ContentType::Form,
            body: Bytes::from_static(b"text=hi&token=t"),
            event: Event::Posted,
            post_id: "p1".into(),
            channel_id: "c1".into(),
            root_id: String::new(),
            user_id: "u1".into(),
            create_at: 1_767_225_600_000,
            lease,
        }
    }

    fn attempt(n: u32, status: Option<u16>) -> AttemptRecord {
        AttemptRecord {
            n,
            status,
            latency: Duration::from_millis(12),
            error: status.is_none().then(|| "timed out after 1s".to_string()),
        }
    }

    #[tokio::test]
    async fn deliveries_are_kept_claimed_when_their_lease_ends_replayed_and_purged() {
        let path = temp_db("life");
        let config = StoreConfig {
            url: StoreUrl::Sqlite(path.clone()),
            ..StoreConfig::default()
        };
        let stats = Arc::new(Stats::default());
        let store = Store::open(&config, stats.clone()).await.unwrap();
        assert!(store.is_durable());
        assert!(
            store
                .intake(delivery("msg_a", Duration::from_secs(60)))
                .await
        );
        assert!(store.intake(delivery("msg_b", Duration::ZERO)).await);
        // msg_a is leased to its writer; msg_b's lease is over: any process may claim it.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let claimed = store.claim(10, Duration::from_secs(60)).await;
        let ids: Vec<&str> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
        assert_eq!(ids, ["msg_b"]);
        let c = &claimed[0];
        assert_eq!((c.attempts, c.delivery.url_index), (0, 1));
        assert_eq!(c.delivery.body, Bytes::from_static(b"text=hi&token=t"));
        assert!(
            store.claim(10, Duration::from_secs(60)).await.is_empty(),
            "leased now"
        );

        store
            .attempt(
                "msg_a",
                attempt(1, None),
                End::Retry {
                    after: Duration::ZERO,
                    lease: Duration::ZERO,
                },
            )
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let again = store.claim(10, Duration::from_secs(60)).await;
        assert_eq!(again.len(), 1, "a retry whose holder is gone");
        assert_eq!(again[0].attempts, 1);
        store
            .attempt(
                "msg_a",
                attempt(2, Some(200)),
                End::Delivered {
                    answer: Bytes::from_static(b"{\"text\":\"ok\"}"),
                    reply_lease: None,
                },
            )
            .await;
        assert_eq!(store.pending().await, Some(1), "msg_b is still leased");

        let cli = Store::open_for_cli(&config).await.unwrap().unwrap();
        let rows = cli
            .list(&DeliveryFilter {
                limit: 10,
                ..DeliveryFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        let shown = cli.show("msg_a").await.unwrap().unwrap();
        assert_eq!(shown.row.state, "delivered");
        assert_eq!(shown.attempts.len(), 2);
        assert_eq!(shown.attempts[0].outcome, "retry");
        assert_eq!(shown.attempts[1].status, Some(200));
        assert_eq!(shown.answer.as_deref(), Some(&b"{\"text\":\"ok\"}"[..]));
        let delivered = cli
            .list(&DeliveryFilter {
                state: Some("delivered".into()),
                hook: Some("ci".into()),
                limit: 10,
                ..DeliveryFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(delivered.len(), 1);

        assert!(cli.replay("msg_a").await.unwrap());
        assert!(!cli.replay("msg_nope").await.unwrap());
        let replayed = store.claim(10, Duration::from_secs(60)).await;
        assert_eq!(replayed.len(), 1, "a replay is due at once");
        assert_eq!(replayed[0].attempts, 2, "attempts so far are kept");

        store.disable_hook("ci", "answered 410 Gone").await;
        let hooks = store.disabled_hooks().await.unwrap();
        assert_eq!(hooks.len(), 1);
        assert!(cli.enable_hook("ci").await.unwrap());
        assert!(store.disabled_hooks().await.unwrap().is_empty());

        store.dropped("msg_b", "hook_removed").await;
        store
            .attempt("msg_a", attempt(3, Some(200)), End::Failed)
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.purge(Duration::ZERO, 1).await, 2, "in batches of one");
        assert_eq!(store.pending().await, Some(0));
        assert_eq!(stats.snapshot().store_errors, 0);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn a_store_that_fails_lets_deliveries_go_on_counted() {
        let path = temp_db("fail");
        let config = StoreConfig {
            url: StoreUrl::Sqlite(path.clone()),
            ..StoreConfig::default()
        };
        let stats = Arc::new(Stats::default());
        let store = Store::open(&config, stats.clone()).await.unwrap();
        // The table goes away under the running store (a disk emptied, a wrong database).
        let other = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        sqlx::query("DROP TABLE posthook_deliveries")
            .execute(&other)
            .await
            .unwrap();
        assert!(!store.intake(delivery("msg_c", Duration::ZERO)).await);
        let s = stats.snapshot();
        assert_eq!((s.store_errors, s.deliveries_undurable), (1, 1));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
