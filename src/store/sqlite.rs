//! The SQLite store's writer: one thread of its own that owns a connection, takes whatever
//! writes have queued up, runs them in one transaction with cached prepared statements and
//! tells each waiter. SQLite is a library: a statement is a function call, and a commit writes
//! the WAL (and syncs it with `store.sqlite_synchronous: full`; with `normal` the checkpoints
//! sync it). Run this way, a group commit costs one hand-over to the thread and one
//! back, where a pooled async connection would hand every statement over (two thread wake-ups
//! each). Commits start at most every `store.commit_interval_ms` (2 ms): under load the writes
//! of that time share one sync to disk. Both measured with `cargo bench --bench store_cpu`
//! (BENCHMARKS.md).
//!
//! Reads, claims and the CLI go through the sqlx pool as on PostgreSQL: WAL lets them run
//! beside this writer, and `busy_timeout` orders the writes of the two connections.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::ToSqlOutput;
use rusqlite::{Connection, ToSql, TransactionBehavior};

use super::writes::{Arg, Writes, SQLITE};
use super::{group, Op, StoreError, WriteRx};
use crate::config::StoreConfig;

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::{Value, ValueRef};
        Ok(match *self {
            Arg::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Arg::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Blob(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Arg::Int(None) | Arg::Text(None) | Arg::Blob(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

fn err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

/// Prepared statements kept per connection, at most (the writes have 30: one per kind and row count).
const STATEMENT_CACHE: usize = 64;

/// How often the checkpointer copies the WAL's committed pages into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// WAL pages past which a commit of the writer checkpoints by itself: only when the
/// checkpointer cannot keep up, so that the WAL stays bounded (about 40 MB of 4 KiB pages).
const WRITER_CHECKPOINT_PAGES: i64 = 10_000;

/// A connection to the database at `path` with the store's settings.
fn connect(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err)?;
    Ok(conn)
}

/// Opens the writer's connection to the database at `path` (its schema already in place) and
/// starts the thread, and the checkpointer's beside it; they end when every sender of `rx` is
/// gone.
///
/// SQLite checkpoints by default inside the commit that takes the WAL past 1 000 pages: that
/// commit then copies the WAL into the database and syncs it, tens of ms on a slow disk, while
/// every delivery waiting for the next commit waits too (at 1 000 deliveries/s, about one in
/// twenty: measured as the delivery p99 in BENCHMARKS.md). A thread of its own runs a PASSIVE
/// checkpoint every second instead, which never blocks the writer.
pub(super) fn start_writer(
    path: &Path,
    rx: WriteRx,
    config: &StoreConfig,
) -> Result<(), StoreError> {
    let interval = config.commit_interval;
    let synchronous = if config.sqlite_sync_full {
        "FULL"
    } else {
        "NORMAL"
    };
    let conn = connect(path, synchronous)?;
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let checkpointer = connect(path, synchronous)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("posthook-ckpt".into())
        .spawn(move || checkpoints(&checkpointer, &stopped))
        .map_err(|e| StoreError(format!("cannot start the store's checkpointer: {e}")))?;
    std::thread::Builder::new()
        .name("posthook-store".into())
        .spawn(move || {
            run(conn, rx, interval);
            drop(stop);
        })
        .map_err(|e| StoreError(format!("cannot start the store's writer: {e}")))?;
    Ok(())
}

/// A PASSIVE checkpoint every [`CHECKPOINT_EVERY`] until the writer stops. A checkpoint that
/// fails is tried again a second later (the writer's own threshold bounds the WAL meanwhile).
fn checkpoints(conn: &Connection, stopped: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stopped.recv_timeout(CHECKPOINT_EVERY)
    {
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

/// Commits what has queued up, a commit starting no sooner than `interval` after the one
/// before.
fn run(mut conn: Connection, mut rx: WriteRx, interval: Duration) {
    let writes = Writes::new(SQLITE);
    let mut last: Option<Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        if let Some(wait) =
            last.and_then(|at| (at + interval).checked_duration_since(Instant::now()))
        {
            std::thread::sleep(wait);
        }
        last = Some(Instant::now());
        let (ops, waiters) = group(first, &mut rx);
        let result = apply(&mut conn, &writes, &ops);
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// Runs `ops` in one transaction.
fn apply(conn: &mut Connection, writes: &Writes, ops: &[Op]) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let stmts = writes.statements(ops);
    for s in &stmts {
        let mut prepared = tx.prepare_cached(s.sql).map_err(err)?;
        prepared
            .execute(rusqlite::params_from_iter(s.args.iter()))
            .map_err(err)?;
    }
    tx.commit().map_err(err)
}
