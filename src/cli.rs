//! The admin's commands on the delivery store (README "The delivery store"): they read the
//! store the config file names, work while posthook runs (on any replica), and print plain
//! text or, with `--json`, JSON (one object per line for lists).
//!
//! ```text
//! posthook deliveries -c FILE list [--hook ID] [--state STATE] [--since 1h] [--limit N] [--json]
//! posthook deliveries -c FILE show WEBHOOK_ID [--json]
//! posthook deliveries -c FILE replay WEBHOOK_ID
//! posthook hooks -c FILE list [--json]
//! posthook hooks -c FILE enable ID
//! ```
//!
//! Secrets never appear: a request body is shown with its `token` masked, and a hook's callback
//! URLs are never shown (only their hosts).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use crate::config::Config;
use crate::store::{CliStore, DeliveryDetail, DeliveryFilter, DeliveryRow, Store};

/// Why a command failed: the message for stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

/// `posthook deliveries … list` options.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub hook: Option<String>,
    pub state: Option<String>,
    pub since: Option<Duration>,
    pub limit: u32,
    pub json: bool,
}

/// The states a delivery can be in.
pub const STATES: [&str; 4] = ["pending", "delivered", "failed", "dropped"];

/// Runs `f` on the store of `config` on a runtime of its own; the memory store is an error
/// that names the `store` key.
fn with_store<T>(
    config: &Config,
    f: impl AsyncFnOnce(&CliStore) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError(format!("cannot start: {e}")))?;
    rt.block_on(async {
        let store = Store::open_for_cli(&config.store)
            .await
            .map_err(|e| CliError(format!("store: {e}")))?
            .ok_or_else(|| {
                CliError(
                    "the delivery store is memory (the `store` key is absent or says memory): nothing is kept to read; set store.url to sqlite:PATH".into(),
                )
            })?;
        f(&store).await
    })
}

fn store_error(e: crate::store::StoreError) -> CliError {
    CliError(format!("store: {e}"))
}

/// `deliveries list`: newest first.
pub fn list(config: &Config, options: &ListOptions) -> Result<String, CliError> {
    if let Some(state) = &options.state {
        if !STATES.contains(&state.as_str()) {
            return Err(CliError(format!(
                "--state must be one of {}",
                STATES.join(", ")
            )));
        }
    }
    let filter = DeliveryFilter {
        hook: options.hook.clone(),
        state: options.state.clone(),
        since: options.since,
        limit: options.limit,
    };
    let rows = with_store(config, async |s| s.list(&filter).await.map_err(store_error))?;
    let mut out = String::new();
    if options.json {
        for r in &rows {
            let _ = writeln!(out, "{}", row_json(r));
        }
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "{:<30}  {:<16}  {:<9}  {:>8}  {:>6}  {:<24}  HOST",
        "WEBHOOK_ID", "HOOK", "STATE", "ATTEMPTS", "STATUS", "CREATED (UTC)"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<30}  {:<16}  {:<9}  {:>8}  {:>6}  {:<24}  {}",
            r.id,
            r.hook,
            r.state,
            r.attempts,
            r.last_status.map_or("-".to_string(), |s| s.to_string()),
            utc(r.created_at_ms),
            r.host
        );
    }
    Ok(out)
}

/// `deliveries show`: every attempt, the request body (token masked) and the answer.
pub fn show(config: &Config, id: &str, as_json: bool) -> Result<String, CliError> {
    let detail = with_store(config, async |s| s.show(id).await.map_err(store_error))?
        .ok_or_else(|| CliError(format!("no delivery {id}")))?;
    let body = masked_body(&detail);
    let answer = detail
        .answer
        .as_ref()
        .map(|a| String::from_utf8_lossy(a).into_owned());
    if as_json {
        let mut v = row_json(&detail.row);
        v["attempts_detail"] = detail
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "n": a.n,
                    "at": utc(a.at_ms),
                    "status": a.status,
                    "latency_ms": a.latency_ms,
                    "error": a.error,
                    "outcome": a.outcome,
                })
            })
            .collect();
        v["request_body"] = body.into();
        v["answer"] = answer.into();
        return Ok(format!("{v}\n"));
    }
    let r = &detail.row;
    let mut out = String::new();
    let _ = writeln!(out, "webhook_id  {}", r.id);
    let _ = writeln!(out, "hook        {}", r.hook);
    let _ = writeln!(out, "host        {}", r.host);
    let _ = writeln!(out, "post        {}", r.post_id);
    let _ = writeln!(out, "state       {}", r.state);
    let _ = writeln!(out, "created     {}", utc(r.created_at_ms));
    let _ = writeln!(out, "updated     {}", utc(r.updated_at_ms));
    let _ = writeln!(out, "attempts    {}", r.attempts);
    for a in &detail.attempts {
        let _ = writeln!(
            out,
            "  #{:<3} {}  status {:>3}  {:>6} ms  {}{}",
            a.n,
            utc(a.at_ms),
            a.status.map_or("-".to_string(), |s| s.to_string()),
            a.latency_ms,
            a.outcome,
            a.error
                .as_deref()
                .map_or(String::new(), |e| format!("  error: {e}"))
        );
    }
    let _ = writeln!(
        out,
        "request body ({}):\n{body}",
        if detail.json { "JSON" } else { "form" }
    );
    let _ = writeln!(
        out,
        "answer:\n{}",
        answer.as_deref().unwrap_or("(none recorded)")
    );
    Ok(out)
}

/// `deliveries replay`: makes the delivery due now; the running service sends it again.
pub fn replay(config: &Config, id: &str) -> Result<String, CliError> {
    let found = with_store(config, async |s| s.replay(id).await.map_err(store_error))?;
    if !found {
        return Err(CliError(format!("no delivery {id}")));
    }
    Ok(format!(
        "{id}: due again; the running posthook sends it within about a second, with the same webhook-id\n"
    ))
}

/// `hooks list`: each hook of the config, enabled or disabled (with the reason).
pub fn hooks(config: &Config, as_json: bool) -> Result<String, CliError> {
    let disabled = with_store(config, async |s| {
        s.disabled_hooks().await.map_err(store_error)
    })?;
    let mut out = String::new();
    let names: Vec<String> = config
        .hooks
        .iter()
        .enumerate()
        .map(|(i, h)| h.name(i).to_string())
        .collect();
    let mut rows: Vec<(String, String, Option<&crate::store::DisabledHook>)> = config
        .hooks
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = h.name(i).to_string();
            let d = disabled.iter().find(|d| d.hook == name);
            (name, h.display_name.clone(), d)
        })
        .collect();
    for d in &disabled {
        if !names.contains(&d.hook) {
            rows.push((d.hook.clone(), "(not in the config)".into(), Some(d)));
        }
    }
    for (name, display, d) in rows {
        let state = if d.is_some() { "disabled" } else { "enabled" };
        if as_json {
            let v = json!({
                "hook": name,
                "display_name": display,
                "state": state,
                "reason": d.map(|d| d.reason.clone()),
                "disabled_at": d.map(|d| utc(d.disabled_at_ms)),
            });
            let _ = writeln!(out, "{v}");
        } else {
            let _ = write!(out, "{name:<16}  {state:<8}  {display}");
            if let Some(d) = d {
                let _ = write!(out, "  ({}, since {})", d.reason, utc(d.disabled_at_ms));
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// `hooks enable`: the hook fires again (within a second on every running posthook).
pub fn enable(config: &Config, id: &str) -> Result<String, CliError> {
    let was = with_store(config, async |s| {
        s.enable_hook(id).await.map_err(store_error)
    })?;
    Ok(if was {
        format!("hook {id} enabled: it fires again within about a second\n")
    } else {
        format!("hook {id} was not disabled\n")
    })
}

/// `1h`, `30m`, `45s`, `2d` (a whole number and a unit).
pub fn parse_since(text: &str) -> Result<Duration, CliError> {
    let bad = || {
        CliError(format!(
            "--since {text:?}: expected a number and s, m, h or d (e.g. 1h)"
        ))
    };
    let unit = text.chars().last().ok_or_else(bad)?;
    let n: u64 = text[..text.len() - unit.len_utf8()]
        .parse()
        .map_err(|_| bad())?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

fn row_json(r: &DeliveryRow) -> serde_json::Value {
    json!({
        "webhook_id": r.id,
        "hook": r.hook,
        "host": r.host,
        "post_id": r.post_id,
        "state": r.state,
        "attempts": r.attempts,
        "last_status": r.last_status,
        "last_error": r.last_error,
        "created_at": utc(r.created_at_ms),
        "updated_at": utc(r.updated_at_ms),
    })
}

/// The request body with the hook's `token` replaced by `***`.
fn masked_body(d: &DeliveryDetail) -> String {
    let text = String::from_utf8_lossy(&d.body).into_owned();
    if d.json {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(mut v) => {
                if v.get("token").is_some() {
                    v["token"] = "***".into();
                }
                v.to_string()
            }
            Err(_) => "(not JSON; not shown)".into(),
        }
    } else {
        text.split('&')
            .map(|pair| {
                if pair.starts_with("token=") {
                    "token=***".to_string()
                } else {
                    pair.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn since_takes_a_number_and_a_unit() {
        assert_eq!(parse_since("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_since("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_since("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_since("1w").is_err());
        assert!(parse_since("h").is_err());
        assert!(parse_since("").is_err());
    }

    #[test]
    fn shown_bodies_mask_the_token() {
        let mut d = DeliveryDetail {
            row: DeliveryRow {
                id: "msg_1".into(),
                hook: "0".into(),
                host: "h".into(),
                state: "delivered".into(),
                attempts: 1,
                created_at_ms: 0,
                updated_at_ms: 0,
                last_status: None,
                last_error: None,
                post_id: "p".into(),
            },
            json: false,
            body: bytes::Bytes::from("channel_id=c&text=hi&token=s3cret&user_id=u"),
            answer: None,
            attempts: Vec::new(),
        };
        assert_eq!(masked_body(&d), "channel_id=c&text=hi&token=***&user_id=u");
        d.json = true;
        d.body = bytes::Bytes::from(r#"{"token":"s3cret","text":"hi"}"#);
        assert!(!masked_body(&d).contains("s3cret"));
    }
}
