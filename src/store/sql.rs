//! The SQL engine of the store, through sqlx's `Any` driver: SQLite (embedded, one process)
//! and PostgreSQL (shared by replicas). Every query is written once, with `$1`-style parameters
//! in the order they first appear (which SQLite and PostgreSQL both read), the database's clock
//! as `{now}` (milliseconds: leases and due times never depend on a process's clock), and the
//! few words the two dialects spell differently as placeholders ([`Dialect`]).
//!
//! Tables carry a `posthook_` prefix, so that they can live beside Mattermost's own.

use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, ConnectOptions, Executor, Row};

use super::writes::{ms, Arg, Dialect, Writes, POSTGRES, SQLITE};
use super::{
    Claimed, ClaimedReply, DeliveryDetail, DeliveryFilter, DeliveryRow, DisabledHook, NewDelivery,
    Op, StoreError, StoredAttempt,
};
use crate::config::{ContentType, Event, StoreConfig, StoreUrl};

/// The schema; each statement is idempotent.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS posthook_deliveries (
        id TEXT PRIMARY KEY,
        hook TEXT NOT NULL,
        url_index BIGINT NOT NULL,
        host TEXT NOT NULL,
        content_type TEXT NOT NULL,
        body {blob} NOT NULL,
        event TEXT NOT NULL,
        post_id TEXT NOT NULL,
        channel_id TEXT NOT NULL,
        root_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        create_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        next_at BIGINT NOT NULL,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_status BIGINT,
        last_error TEXT,
        answer {blob},
        reply TEXT
    )",
    "CREATE INDEX IF NOT EXISTS posthook_deliveries_due ON posthook_deliveries (state, next_at)",
    "CREATE INDEX IF NOT EXISTS posthook_deliveries_created ON posthook_deliveries (created_at)",
    // The replies a claim looks for, without visiting every delivered row: the claim is an
    // UPDATE, and on SQLite it holds the write lock (and so the writer) while it scans; that
    // scan grew with the table and stalled the writer for tens of ms each second. (A partial
    // index is not chosen by SQLite's planner over the (state, next_at) one.)
    "CREATE INDEX IF NOT EXISTS posthook_deliveries_replies ON posthook_deliveries \
     (reply, updated_at)",
    "CREATE TABLE IF NOT EXISTS posthook_attempts (
        delivery_id TEXT NOT NULL,
        n BIGINT NOT NULL,
        at BIGINT NOT NULL,
        status BIGINT,
        latency_ms BIGINT NOT NULL,
        error TEXT,
        outcome TEXT NOT NULL,
        PRIMARY KEY (delivery_id, n)
    )",
    "CREATE TABLE IF NOT EXISTS posthook_hooks (
        hook TEXT PRIMARY KEY,
        disabled_at BIGINT NOT NULL,
        reason TEXT NOT NULL
    )",
];

/// The columns a claim or a detail reads.
const DELIVERY_COLUMNS: &str = "id, hook, url_index, host, content_type, body, event, post_id, \
     channel_id, root_id, user_id, create_at, attempts";

/// A connection pool on one database.
#[derive(Clone)]
pub(super) struct Sql {
    pool: AnyPool,
    dialect: Dialect,
    writes: std::sync::Arc<Writes>,
}

fn err(e: sqlx::Error) -> StoreError {
    StoreError(e.to_string())
}

impl Sql {
    /// Opens the database `config` names; `None` for the memory store.
    pub(super) async fn open_config(config: &StoreConfig) -> Result<Option<Sql>, StoreError> {
        match &config.url {
            StoreUrl::Memory => Ok(None),
            StoreUrl::Sqlite(path) => Sql::open_sqlite(path).await.map(Some),
            StoreUrl::Postgres(url) => Sql::open_postgres(url, config.max_connections)
                .await
                .map(Some),
        }
    }

    /// Opens (creating when missing) the SQLite database at `path`, in WAL mode with every
    /// commit synced to disk, with the schema in place. One connection: SQLite has one writer,
    /// and the writer task batches the writes.
    async fn open_sqlite(path: &Path) -> Result<Sql, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        }
        let absolute = std::path::absolute(path)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        let url = url::Url::from_file_path(&absolute)
            .map_err(|()| StoreError(format!("{}: not a usable path", path.display())))?;
        let url = format!("sqlite://{}?mode=rwc", url.path());
        Sql::open(&url, 1, SQLITE).await
    }

    /// Opens a PostgreSQL database (`postgres://…`) with up to `connections` connections,
    /// with the schema in place.
    async fn open_postgres(url: &str, connections: u32) -> Result<Sql, StoreError> {
        // The error of a failed connection may quote the URL: never show it.
        Sql::open(url, connections, POSTGRES)
            .await
            .map_err(|e| StoreError(e.0.replace(url, "<store.url>")))
    }

    async fn open(url: &str, connections: u32, dialect: Dialect) -> Result<Sql, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let options: AnyConnectOptions = url.parse().map_err(err)?;
        // Statements are logged by sqlx at debug; posthook's policy caps dependencies at info
        // anyway, and bodies never belong in a log line.
        let options = options.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 5000",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(err)?;
        let sql = Sql {
            pool,
            dialect,
            writes: std::sync::Arc::new(Writes::new(dialect)),
        };
        for statement in SCHEMA {
            sqlx::query(&sql.q(statement))
                .execute(&sql.pool)
                .await
                .map_err(err)?;
        }
        Ok(sql)
    }

    /// `sql` in this database's dialect.
    fn q(&self, sql: &str) -> String {
        self.dialect.q(sql)
    }

    /// Applies `ops` in one transaction (the group commit).
    pub(super) async fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        let stmts = self.writes.statements(ops);
        let mut tx = self.pool.begin().await.map_err(err)?;
        for s in &stmts {
            let mut query = sqlx::query(s.sql);
            for a in &s.args {
                query = match *a {
                    Arg::Int(v) => query.bind(v),
                    Arg::Text(v) => query.bind(v),
                    Arg::Blob(v) => query.bind(v),
                };
            }
            query.execute(&mut *tx).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    /// Leases up to `limit` deliveries that are due and held by no one (a retry whose holder
    /// died, a replay), for `lease`.
    pub(super) async fn claim(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<Claimed>, StoreError> {
        let rows = sqlx::query(&self.q(&format!(
            "UPDATE posthook_deliveries SET lease_until = {{now}} + $1, updated_at = {{now}} \
             WHERE id IN (SELECT id FROM posthook_deliveries WHERE state = 'pending' \
             AND next_at <= {{now}} AND (lease_until IS NULL OR lease_until < {{now}}) \
             ORDER BY next_at LIMIT $2 {{skip_locked}}) RETURNING {DELIVERY_COLUMNS}"
        )))
        .bind(ms(lease))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(claimed).collect()
    }

    /// Leases up to `limit` delivered requests whose reply is pending and held by no one.
    pub(super) async fn claim_replies(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedReply>, StoreError> {
        let rows = sqlx::query(&self.q(&format!(
            "UPDATE posthook_deliveries SET lease_until = {{now}} + $1, updated_at = {{now}} \
             WHERE id IN (SELECT id FROM posthook_deliveries WHERE state = 'delivered' \
             AND reply = 'pending' AND (lease_until IS NULL OR lease_until < {{now}}) \
             ORDER BY updated_at LIMIT $2 {{skip_locked}}) \
             RETURNING {DELIVERY_COLUMNS}, last_status, answer"
        )))
        .bind(ms(lease))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter()
            .map(|r| {
                let answer: Option<Vec<u8>> = r.try_get("answer").map_err(err)?;
                let status: Option<i64> = r.try_get("last_status").map_err(err)?;
                Ok(ClaimedReply {
                    delivery: claimed(r)?.delivery,
                    status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
                    answer: Bytes::from(answer.unwrap_or_default()),
                })
            })
            .collect()
    }

    /// How many deliveries are pending (waiting for a retry, or leased and in flight).
    pub(super) async fn pending(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM posthook_deliveries WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes up to `batch` finished deliveries (and their attempts) last changed more than
    /// `age` ago; returns how many.
    pub(super) async fn purge(&self, age: Duration, batch: u32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err)?;
        let ids: Vec<String> = sqlx::query_scalar(&self.q(
            "SELECT id FROM posthook_deliveries WHERE created_at < {now} - $1 \
             AND state <> 'pending' AND updated_at < {now} - $1 LIMIT $2",
        ))
        .bind(ms(age))
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?;
        for id in &ids {
            for table in [
                "posthook_attempts WHERE delivery_id",
                "posthook_deliveries WHERE id",
            ] {
                sqlx::query(&format!("DELETE FROM {table} = $1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        tx.commit().await.map_err(err)?;
        Ok(ids.len() as u64)
    }

    /// The hooks disabled in the store.
    pub(super) async fn disabled_hooks(&self) -> Result<Vec<DisabledHook>, StoreError> {
        let rows =
            sqlx::query("SELECT hook, disabled_at, reason FROM posthook_hooks ORDER BY hook")
                .fetch_all(&self.pool)
                .await
                .map_err(err)?;
        rows.iter()
            .map(|r| {
                Ok(DisabledHook {
                    hook: r.try_get("hook").map_err(err)?,
                    disabled_at_ms: r.try_get("disabled_at").map_err(err)?,
                    reason: r.try_get("reason").map_err(err)?,
                })
            })
            .collect()
    }

    /// Enables hook `hook` again; false when it was not disabled.
    pub(super) async fn enable_hook(&self, hook: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM posthook_hooks WHERE hook = $1")
            .bind(hook)
            .execute(&self.pool)
            .await
            .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Makes delivery `id` due again now, with its id; false when there is no such delivery.
    pub(super) async fn replay(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.q(
            "UPDATE posthook_deliveries SET state = 'pending', next_at = {now}, \
             lease_until = NULL, updated_at = {now} WHERE id = $1",
        ))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Deliveries matching `filter`, newest first.
    pub(super) async fn list(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let since = filter.since.map_or(0, ms);
        let rows = sqlx::query(&self.q(
            "SELECT id, hook, host, state, attempts, created_at, updated_at, last_status, \
             last_error, post_id FROM posthook_deliveries \
             WHERE ($1 IS NULL OR hook = $1) AND ($2 IS NULL OR state = $2) \
             AND ($3 = 0 OR created_at >= {now} - $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4",
        ))
        .bind(filter.hook.as_deref())
        .bind(filter.state.as_deref())
        .bind(since)
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        rows.iter().map(delivery_row).collect()
    }

    /// Delivery `id` with every attempt, its body and the answer.
    pub(super) async fn show(&self, id: &str) -> Result<Option<DeliveryDetail>, StoreError> {
        let row = sqlx::query(
            "SELECT id, hook, host, state, attempts, created_at, updated_at, last_status, \
             last_error, post_id, content_type, body, answer FROM posthook_deliveries WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let attempts = sqlx::query(
            "SELECT n, at, status, latency_ms, error, outcome FROM posthook_attempts \
             WHERE delivery_id = $1 ORDER BY n",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(err)?;
        let attempts = attempts
            .iter()
            .map(|a| {
                Ok(StoredAttempt {
                    n: u32::try_from(a.try_get::<i64, _>("n").map_err(err)?).unwrap_or(0),
                    at_ms: a.try_get("at").map_err(err)?,
                    status: a
                        .try_get::<Option<i64>, _>("status")
                        .map_err(err)?
                        .and_then(|s| u16::try_from(s).ok()),
                    latency_ms: a.try_get("latency_ms").map_err(err)?,
                    error: a.try_get("error").map_err(err)?,
                    outcome: a.try_get("outcome").map_err(err)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let content_type: String = row.try_get("content_type").map_err(err)?;
        let body: Vec<u8> = row.try_get("body").map_err(err)?;
        let answer: Option<Vec<u8>> = row.try_get("answer").map_err(err)?;
        Ok(Some(DeliveryDetail {
            row: delivery_row(&row)?,
            json: content_type == "json",
            body: Bytes::from(body),
            answer: answer.map(Bytes::from),
            attempts,
        }))
    }
}

fn claimed(r: &AnyRow) -> Result<Claimed, StoreError> {
    let content_type: String = r.try_get("content_type").map_err(err)?;
    let event: String = r.try_get("event").map_err(err)?;
    let body: Vec<u8> = r.try_get("body").map_err(err)?;
    Ok(Claimed {
        delivery: NewDelivery {
            id: r.try_get("id").map_err(err)?,
            hook: r.try_get("hook").map_err(err)?,
            url_index: u32::try_from(r.try_get::<i64, _>("url_index").map_err(err)?)
                .unwrap_or(u32::MAX),
            host: r.try_get("host").map_err(err)?,
            content_type: if content_type == "json" {
                ContentType::Json
            } else {
                ContentType::Form
            },
            body: Bytes::from(body),
            event: if event == "edited" {
                Event::Edited
            } else {
                Event::Posted
            },
            post_id: r.try_get("post_id").map_err(err)?,
            channel_id: r.try_get("channel_id").map_err(err)?,
            root_id: r.try_get("root_id").map_err(err)?,
            user_id: r.try_get("user_id").map_err(err)?,
            create_at: r.try_get("create_at").map_err(err)?,
            lease: Duration::ZERO,
        },
        attempts: u32::try_from(r.try_get::<i64, _>("attempts").map_err(err)?).unwrap_or(0),
    })
}

fn delivery_row(r: &AnyRow) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: r.try_get("id").map_err(err)?,
        hook: r.try_get("hook").map_err(err)?,
        host: r.try_get("host").map_err(err)?,
        state: r.try_get("state").map_err(err)?,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts").map_err(err)?).unwrap_or(0),
        created_at_ms: r.try_get("created_at").map_err(err)?,
        updated_at_ms: r.try_get("updated_at").map_err(err)?,
        last_status: r
            .try_get::<Option<i64>, _>("last_status")
            .map_err(err)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error").map_err(err)?,
        post_id: r.try_get("post_id").map_err(err)?,
    })
}
