//! The store's writes as data: each [`Op`] becomes one or two statements ([`Stmt`]: the SQL in
//! the store's dialect and its arguments), written once here and run by either engine — sqlx
//! for PostgreSQL, the SQLite writer thread ([`super::sqlite`]) for SQLite. The SQL of each
//! dialect is built once, when the store opens.

use std::time::Duration;

use super::{AttemptRecord, End, Op};
use crate::config::ContentType;

/// What the two dialects spell differently.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dialect {
    /// The database's clock, in milliseconds.
    pub now: &'static str,
    /// A column of bytes.
    pub blob: &'static str,
    /// After the subquery of a claim: rows another process is claiming are skipped, not waited
    /// for (SQLite has one writer at a time and needs none).
    pub skip_locked: &'static str,
}

pub(super) const SQLITE: Dialect = Dialect {
    now: "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    blob: "BLOB",
    skip_locked: "",
};

pub(super) const POSTGRES: Dialect = Dialect {
    now: "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    blob: "BYTEA",
    skip_locked: "FOR UPDATE SKIP LOCKED",
};

impl Dialect {
    /// `sql` in this dialect.
    pub fn q(&self, sql: &str) -> String {
        sql.replace("{now}", self.now)
            .replace("{blob}", self.blob)
            .replace("{skip_locked}", self.skip_locked)
    }
}

/// One argument of a statement. Nulls keep their type: PostgreSQL types each parameter.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
}

/// A statement and its arguments, in the order their `$n` first appear.
#[derive(Debug)]
pub(super) struct Stmt<'a> {
    pub sql: &'a str,
    pub args: Vec<Arg<'a>>,
}

/// The writes' SQL in one dialect.
#[derive(Debug, Clone)]
pub(super) struct Writes {
    intake: String,
    attempt: String,
    outcome: String,
    drop: String,
    reply_done: String,
    disable_hook: String,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn content_type_name(c: ContentType) -> &'static str {
    match c {
        ContentType::Form => "form",
        ContentType::Json => "json",
    }
}

impl Writes {
    pub fn new(d: Dialect) -> Writes {
        Writes {
            intake: d.q(
                "INSERT INTO posthook_deliveries (id, hook, url_index, host, content_type, body, \
                 event, post_id, channel_id, root_id, user_id, create_at, state, attempts, \
                 next_at, lease_until, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', 0, \
                 {now}, {now} + $13, {now}, {now}) ON CONFLICT (id) DO NOTHING",
            ),
            attempt: d.q(
                "INSERT INTO posthook_attempts (delivery_id, n, at, status, latency_ms, error, \
                 outcome) VALUES ($1, $2, {now}, $3, $4, $5, $6) \
                 ON CONFLICT (delivery_id, n) DO NOTHING",
            ),
            outcome: d.q(
                "UPDATE posthook_deliveries SET state = $1, next_at = {now} + $2, \
                 lease_until = {now} + $3, \
                 attempts = CASE WHEN attempts > $4 THEN attempts ELSE $4 END, last_status = $5, \
                 last_error = $6, answer = COALESCE($7, answer), reply = $8, updated_at = {now} \
                 WHERE id = $9",
            ),
            drop: d.q(
                "UPDATE posthook_deliveries SET state = 'dropped', last_error = $1, \
                 lease_until = NULL, updated_at = {now} WHERE id = $2 AND state = 'pending'",
            ),
            reply_done: d.q(
                "UPDATE posthook_deliveries SET reply = 'done', lease_until = NULL, \
                 updated_at = {now} WHERE id = $1",
            ),
            disable_hook: d.q(
                "INSERT INTO posthook_hooks (hook, disabled_at, reason) VALUES ($1, {now}, $2) \
                 ON CONFLICT (hook) DO UPDATE SET disabled_at = excluded.disabled_at, \
                 reason = excluded.reason",
            ),
        }
    }

    /// The statements that make `op`, appended to `out`.
    pub fn statements<'a>(&'a self, op: &'a Op, out: &mut Vec<Stmt<'a>>) {
        use Arg::{Blob, Int, Text};
        match op {
            Op::Intake(d) => out.push(Stmt {
                sql: &self.intake,
                args: vec![
                    Text(Some(&d.id)),
                    Text(Some(&d.hook)),
                    Int(Some(i64::from(d.url_index))),
                    Text(Some(&d.host)),
                    Text(Some(content_type_name(d.content_type))),
                    Blob(Some(&d.body)),
                    Text(Some(d.event.as_str())),
                    Text(Some(&d.post_id)),
                    Text(Some(&d.channel_id)),
                    Text(Some(&d.root_id)),
                    Text(Some(&d.user_id)),
                    Int(Some(d.create_at)),
                    Int(Some(ms(d.lease))),
                ],
            }),
            Op::Attempt { id, attempt, end } => self.attempt(id, attempt, end, out),
            Op::Drop { id, reason } => out.push(Stmt {
                sql: &self.drop,
                args: vec![Text(Some(reason)), Text(Some(id))],
            }),
            Op::ReplyDone { id } => out.push(Stmt {
                sql: &self.reply_done,
                args: vec![Text(Some(id))],
            }),
            Op::DisableHook { hook, reason } => out.push(Stmt {
                sql: &self.disable_hook,
                args: vec![Text(Some(hook)), Text(Some(reason))],
            }),
        }
    }

    /// One attempt and what it ended in: the attempt's row, and the delivery's new state.
    fn attempt<'a>(
        &'a self,
        id: &'a str,
        a: &'a AttemptRecord,
        end: &'a End,
        out: &mut Vec<Stmt<'a>>,
    ) {
        use Arg::{Blob, Int, Text};
        out.push(Stmt {
            sql: &self.attempt,
            args: vec![
                Text(Some(id)),
                Int(Some(i64::from(a.n))),
                Int(a.status.map(i64::from)),
                Int(Some(ms(a.latency))),
                Text(a.error.as_deref()),
                Text(Some(end.outcome())),
            ],
        });
        let (state, next, lease, answer, reply) = match end {
            End::Delivered {
                answer,
                reply_lease,
            } => (
                "delivered",
                0,
                reply_lease.map(ms),
                Some(answer.as_ref()),
                reply_lease.map(|_| "pending"),
            ),
            End::Retry { after, lease } => {
                ("pending", ms(*after), Some(ms(*after + *lease)), None, None)
            }
            End::Failed => ("failed", 0, None, None, None),
        };
        out.push(Stmt {
            sql: &self.outcome,
            args: vec![
                Text(Some(state)),
                Int(Some(next)),
                Int(lease),
                Int(Some(i64::from(a.n))),
                Int(a.status.map(i64::from)),
                Text(a.error.as_deref()),
                Blob(answer),
                Text(reply),
                Text(Some(id)),
            ],
        });
    }
}
