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

/// The most rows one statement writes, as a power of two: a group of n writes of one kind
/// takes one statement per bit of n (so each dialect has a fixed set of texts to prepare).
const CHUNK_BITS: u32 = 6;

/// The writes' SQL in one dialect: for the multi-row kinds, one text per row count
/// 1, 2, 4, … 2^[`CHUNK_BITS`].
#[derive(Debug, Clone)]
pub(super) struct Writes {
    intake: Vec<String>,
    attempt: Vec<String>,
    outcome: Vec<String>,
    reply_done: Vec<String>,
    drop: String,
    disable_hook: String,
}

/// `d` in whole milliseconds, as the store's columns keep times.
pub(super) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn content_type_name(c: ContentType) -> &'static str {
    match c {
        ContentType::Form => "form",
        ContentType::Json => "json",
    }
}

/// `rows` groups of `width` parameters, numbered on from `$1`: `($1, $2), ($3, $4)`; `row`
/// writes one group around its parameters' names.
fn rows(n: usize, width: usize, row: impl Fn(&[String]) -> String) -> String {
    (0..n)
        .map(|r| {
            let names: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            row(&names)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The texts of `make(rows)` for 1, 2, 4, … rows.
fn sizes(d: Dialect, make: impl Fn(usize) -> String) -> Vec<String> {
    (0..=CHUNK_BITS).map(|b| d.q(&make(1 << b))).collect()
}

impl Writes {
    pub fn new(d: Dialect) -> Writes {
        Writes {
            intake: sizes(d, |n| {
                format!(
                    "INSERT INTO posthook_deliveries (id, hook, url_index, host, content_type, \
                     body, event, post_id, channel_id, root_id, user_id, create_at, state, \
                     attempts, next_at, lease_until, created_at, updated_at) VALUES {} \
                     ON CONFLICT (id) DO NOTHING",
                    rows(n, 13, |p| format!(
                        "({}, 'pending', 0, {{now}}, {{now}} + {}, {{now}}, {{now}})",
                        p[..12].join(", "),
                        p[12]
                    ))
                )
            }),
            attempt: sizes(d, |n| {
                format!(
                    "INSERT INTO posthook_attempts (delivery_id, n, at, status, latency_ms, error, \
                     outcome) VALUES {} ON CONFLICT (delivery_id, n) DO NOTHING",
                    rows(n, 6, |p| format!(
                        "({}, {}, {{now}}, {})",
                        p[0],
                        p[1],
                        p[2..].join(", ")
                    ))
                )
            }),
            // VALUES' columns are column1, column2, … in both dialects.
            outcome: sizes(d, |n| {
                format!(
                    "UPDATE posthook_deliveries SET state = v.column2, \
                     next_at = {{now}} + v.column3, lease_until = {{now}} + v.column4, \
                     attempts = CASE WHEN attempts > v.column5 THEN attempts ELSE v.column5 END, \
                     last_status = v.column6, last_error = v.column7, \
                     answer = COALESCE(v.column8, answer), reply = v.column9, \
                     updated_at = {{now}} FROM (VALUES {}) AS v \
                     WHERE posthook_deliveries.id = v.column1",
                    rows(n, 9, |p| format!("({})", p.join(", ")))
                )
            }),
            reply_done: sizes(d, |n| {
                format!(
                    "UPDATE posthook_deliveries SET reply = 'done', lease_until = NULL, \
                     updated_at = {{now}} WHERE id IN ({})",
                    rows(n, 1, |p| p[0].clone())
                )
            }),
            drop: d.q(
                "UPDATE posthook_deliveries SET state = 'dropped', last_error = $1, \
                 lease_until = NULL, updated_at = {now} WHERE id = $2 AND state = 'pending'",
            ),
            disable_hook: d.q(
                "INSERT INTO posthook_hooks (hook, disabled_at, reason) VALUES ($1, {now}, $2) \
                 ON CONFLICT (hook) DO UPDATE SET disabled_at = excluded.disabled_at, \
                 reason = excluded.reason",
            ),
        }
    }

    /// The statements that make `ops`: writes of one kind share multi-row statements, in the
    /// order of a delivery's life (no two writes of one group concern one delivery: each
    /// caller waits for its write before the next).
    pub fn statements<'a>(&'a self, ops: &'a [Op]) -> Vec<Stmt<'a>> {
        use Arg::{Blob, Int, Text};
        let mut intake = Vec::new();
        let mut attempt = Vec::new();
        let mut outcome = Vec::new();
        let mut reply_done = Vec::new();
        let mut out = Vec::new();
        for op in ops {
            match op {
                Op::Intake(d) => intake.push([
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
                ]),
                Op::Attempt {
                    id,
                    attempt: a,
                    end,
                } => {
                    attempt.push([
                        Text(Some(id)),
                        Int(Some(i64::from(a.n))),
                        Int(a.status.map(i64::from)),
                        Int(Some(ms(a.latency))),
                        Text(a.error.as_deref()),
                        Text(Some(end.outcome())),
                    ]);
                    outcome.push(outcome_row(id, a, end));
                }
                Op::ReplyDone { id } => reply_done.push([Text(Some(id))]),
                Op::Drop { id, reason } => out.push(Stmt {
                    sql: &self.drop,
                    args: vec![Text(Some(reason)), Text(Some(id))],
                }),
                Op::DisableHook { hook, reason } => out.push(Stmt {
                    sql: &self.disable_hook,
                    args: vec![Text(Some(hook)), Text(Some(reason))],
                }),
            }
        }
        let mut all = Vec::new();
        chunked(&self.intake, &intake, &mut all);
        chunked(&self.attempt, &attempt, &mut all);
        chunked(&self.outcome, &outcome, &mut all);
        chunked(&self.reply_done, &reply_done, &mut all);
        all.append(&mut out);
        all
    }
}

/// Statements writing `rows` with `texts` (one per power-of-two row count), largest first.
fn chunked<'a, const W: usize>(
    texts: &'a [String],
    rows: &[[Arg<'a>; W]],
    out: &mut Vec<Stmt<'a>>,
) {
    let mut rest = rows;
    for b in (0..texts.len()).rev() {
        let n = 1usize << b;
        while rest.len() >= n {
            let (now, later) = rest.split_at(n);
            out.push(Stmt {
                sql: &texts[b],
                args: now.iter().flatten().copied().collect(),
            });
            rest = later;
        }
    }
}

/// A delivery's new state after an attempt, as the outcome statement's row.
fn outcome_row<'a>(id: &'a str, a: &'a AttemptRecord, end: &'a End) -> [Arg<'a>; 9] {
    use Arg::{Blob, Int, Text};
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
    [
        Text(Some(id)),
        Text(Some(state)),
        Int(Some(next)),
        Int(lease),
        Int(Some(i64::from(a.n))),
        Int(a.status.map(i64::from)),
        Text(a.error.as_deref()),
        Blob(answer),
        Text(reply),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Event;
    use crate::store::NewDelivery;
    use bytes::Bytes;

    fn intake(i: usize) -> Op {
        Op::Intake(NewDelivery {
            id: format!("msg_{i}"),
            hook: "h".into(),
            url_index: 0,
            host: "h.example".into(),
            content_type: ContentType::Json,
            body: Bytes::from_static(b"{}"),
            event: Event::Posted,
            post_id: "p".into(),
            channel_id: "c".into(),
            root_id: String::new(),
            user_id: "u".into(),
            create_at: 0,
            lease: Duration::ZERO,
        })
    }

    /// The highest `$n` in `sql`.
    fn params(sql: &str) -> usize {
        sql.split('$')
            .skip(1)
            .filter_map(|s| {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_group_takes_one_statement_per_bit_of_its_size_with_every_argument_placed() {
        let writes = Writes::new(POSTGRES);
        let ops: Vec<Op> = (0..100)
            .map(intake)
            .chain([Op::ReplyDone { id: "msg_1".into() }])
            .collect();
        let stmts = writes.statements(&ops);
        let rows: Vec<usize> = stmts.iter().map(|s| s.args.len()).collect();
        assert_eq!(rows, [64 * 13, 32 * 13, 4 * 13, 1]);
        for s in &stmts {
            assert_eq!(params(s.sql), s.args.len(), "{}", s.sql);
        }
        assert!(stmts[0].sql.contains("($820, $821, $822, $823, $824, $825, $826, $827, $828, $829, $830, $831, 'pending', 0, "));
        assert!(stmts[0].sql.contains(" + $832, "));
        // 129 rows: one of 64 at most per statement.
        let ops: Vec<Op> = (0..129).map(intake).collect();
        assert_eq!(writes.statements(&ops).len(), 3);
        assert!(writes.statements(&[]).is_empty());
    }
}
