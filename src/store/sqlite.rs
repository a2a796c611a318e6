//! The SQLite store's writer: one thread of its own that owns a connection, takes whatever
//! writes have queued up, runs them in one transaction with cached prepared statements and
//! tells each waiter. SQLite is a library: a statement is a function call, and a commit syncs
//! the WAL to disk. Run this way, a group commit costs one hand-over to the thread and one
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

/// Opens the writer's connection to the database at `path` (its schema already in place) and
/// starts the thread; it ends when every sender of `rx` is gone.
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
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    std::thread::Builder::new()
        .name("posthook-store".into())
        .spawn(move || run(conn, rx, interval))
        .map_err(|e| StoreError(format!("cannot start the store's writer: {e}")))?;
    Ok(())
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
