//! Logging: the policy every posthook logger goes through, so that no secret reaches a log line.
//!
//! posthook's own lines never carry a token, a cookie or a callback URL (only its host), at any
//! level. Its dependencies are another matter: Pingora logs every proxied request's headers,
//! the user's `Authorization` and `Cookie` included, at debug and trace level
//! (`pingora_proxy::proxy_h1`, `pingora_core::protocols::http::v1::client`), and names the
//! request URI (query and all, where an `access_token=` may sit) in some error lines.
//! [`SecretSafe`] therefore caps every target outside posthook at `info`, whatever the
//! configured level, and blanks `access_token` values in the dependency lines that remain.

use log::{Level, Log, Metadata, Record};

/// A [`Log`] wrapper applying posthook's log policy before `inner` sees a record.
pub struct SecretSafe<L> {
    inner: L,
}

impl<L: Log> SecretSafe<L> {
    /// Wraps `inner`, which still applies its own level filter after the policy.
    pub fn new(inner: L) -> SecretSafe<L> {
        SecretSafe { inner }
    }
}

/// Whether `target` is posthook's own (the library's modules or the binary).
fn is_own(target: &str) -> bool {
    target == "posthook" || target.starts_with("posthook::")
}

/// Whether the policy lets a record with `metadata` through: posthook's own at every level,
/// dependencies' at `info` and above only.
pub fn allowed(metadata: &Metadata) -> bool {
    is_own(metadata.target()) || metadata.level() <= Level::Info
}

const ACCESS_TOKEN: &str = "access_token=";

/// `text` with the value after every `access_token=` replaced by `<redacted>`.
pub fn redact_access_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ACCESS_TOKEN) {
        let value_start = at + ACCESS_TOKEN.len();
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..];
        let end = value
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ',' | ';' | '>' | '#')
            })
            .unwrap_or(value.len());
        if end > 0 {
            out.push_str("<redacted>");
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

impl<L: Log> Log for SecretSafe<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        allowed(metadata) && self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        if is_own(record.target()) {
            self.inner.log(record);
            return;
        }
        let text = match record.args().as_str() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(record.args().to_string()),
        };
        if !text.contains(ACCESS_TOKEN) {
            self.inner.log(record);
            return;
        }
        let clean = redact_access_tokens(&text);
        self.inner.log(
            &Record::builder()
                .args(format_args!("{clean}"))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Keys whose values a JSON line carries as numbers (`-`: null).
const NUMERIC: &[&str] = &["status", "latency_ms", "attempt", "retry_in_ms"];

/// One log line as a JSON object (`log_format: json`): `ts`, `level`, `target` and `msg`, and
/// when the message is written in posthook's `word key=value …` form (delivery, reply, notify
/// lines), `msg` is the word and each pair a field of its own: `hook`, `post`, `host`,
/// `status`, `latency_ms`, `outcome`, …. Any other message is `msg` whole.
pub fn json_line(ts: &str, level: Level, target: &str, text: &str) -> String {
    use serde_json::{Map, Value};
    let mut line = format!(
        "{{\"ts\":{},\"level\":{},\"target\":{}",
        Value::from(ts),
        Value::from(level.as_str()),
        Value::from(target)
    );
    let (msg, fields) = match key_values(text) {
        Some((word, pairs)) => (word, pairs),
        None => (text, Vec::new()),
    };
    line.push_str(",\"msg\":");
    line.push_str(&Value::from(msg).to_string());
    let mut seen = Map::new();
    for (key, value) in fields {
        if matches!(key, "ts" | "level" | "target" | "msg") || seen.contains_key(key) {
            continue;
        }
        let value = if NUMERIC.contains(&key) {
            match value.parse::<f64>() {
                Ok(n) if value != "-" => serde_json::Number::from_f64(n)
                    .map(|n| match value.parse::<i64>() {
                        Ok(i) => Value::from(i),
                        Err(_) => Value::Number(n),
                    })
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            }
        } else {
            Value::from(value)
        };
        line.push(',');
        line.push_str(&Value::from(key).to_string());
        line.push(':');
        line.push_str(&value.to_string());
        seen.insert(key.to_string(), Value::Null);
    }
    line.push('}');
    line
}

/// `word key=value key="quoted \"value\"" …` split into the word and its pairs (quoted values
/// unescaped as Rust's `{:?}` wrote them); `None` when `text` is not entirely in that form.
fn key_values(text: &str) -> Option<(&str, Vec<(&str, String)>)> {
    let (word, mut rest) = text.split_once(' ')?;
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return None;
    }
    let mut pairs = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            break;
        }
        let (key, after) = rest.split_once('=')?;
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return None;
        }
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            unquote(quoted)?
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_string(), &after[end..])
        };
        pairs.push((key, value));
        rest = next;
    }
    Some((word, pairs))
}

/// The string a `{:?}` wrote, from after its opening quote: the value and what follows its
/// closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                'u' => {
                    // \u{XXXX}
                    let (_, open) = chars.next()?;
                    if open != '{' {
                        return None;
                    }
                    let mut hex = String::new();
                    for (_, h) in chars.by_ref() {
                        if h == '}' {
                            break;
                        }
                        hex.push(h);
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl Log for &Lines {
        fn enabled(&self, _: &Metadata) -> bool {
            true
        }
        fn log(&self, r: &Record) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {} {}", r.level(), r.target(), r.args()));
        }
        fn flush(&self) {}
    }

    fn emit(logger: &dyn Log, level: Level, target: &str, msg: &str) {
        logger.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{msg}"))
                .build(),
        );
    }

    #[test]
    fn dependencies_are_capped_at_info_and_posthook_is_not() {
        let lines = Lines::default();
        let safe = SecretSafe::new(&lines);
        let header = "Sending header to upstream {\"authorization\": \"Bearer usertoken\"}";
        emit(&safe, Level::Debug, "pingora_proxy::proxy_h1", header);
        emit(
            &safe,
            Level::Trace,
            "pingora_core::protocols::http::v1::client",
            header,
        );
        emit(&safe, Level::Debug, "posthookish", "not ours");
        emit(&safe, Level::Info, "pingora_core::server", "server up");
        emit(&safe, Level::Debug, "posthook::dispatch", "ours");
        emit(&safe, Level::Trace, "posthook", "the binary");
        assert_eq!(
            *lines.0.lock().unwrap(),
            [
                "INFO pingora_core::server server up",
                "DEBUG posthook::dispatch ours",
                "TRACE posthook the binary",
            ]
        );
    }

    #[test]
    fn json_lines_split_key_values_and_keep_prose_whole() {
        let v: serde_json::Value = serde_json::from_str(&json_line(
            "2026-12-07T04:50:00.123Z",
            Level::Info,
            "posthook::dispatch::due",
            "delivery hook=ci-build name=\"Build \\\"it\\\"\\n\\u{1b}\" post=p1 host=ci.example status=200 latency_ms=1.5 outcome=delivered",
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "ts": "2026-12-07T04:50:00.123Z", "level": "INFO",
                "target": "posthook::dispatch::due", "msg": "delivery",
                "hook": "ci-build", "name": "Build \"it\"\n\u{1b}", "post": "p1",
                "host": "ci.example", "status": 200, "latency_ms": 1.5, "outcome": "delivered"
            })
        );
        let failed: serde_json::Value = serde_json::from_str(&json_line(
            "t",
            Level::Warn,
            "x",
            "delivery hook=0 status=- latency_ms=- outcome=failed error=\"timed out\"",
        ))
        .unwrap();
        assert_eq!(failed["status"], serde_json::Value::Null);
        assert_eq!(failed["hook"], "0");
        assert_eq!(failed["error"], "timed out");
        for prose in [
            "posthook listening on 127.0.0.1:8065 for http://mm with 2 hooks",
            "Delivery hook=1",
            "reload: hooks[0] name=\"unterminated",
            "",
        ] {
            let v: serde_json::Value =
                serde_json::from_str(&json_line("t", Level::Error, "y", prose)).unwrap();
            assert_eq!(v["msg"], prose);
            assert_eq!(v.as_object().unwrap().len(), 4, "{v}");
        }
    }

    #[test]
    fn access_tokens_in_dependency_lines_are_blanked() {
        for (text, want) in [
            (
                "GET /api/v4/websocket?access_token=abc123, Host: mm",
                "GET /api/v4/websocket?access_token=<redacted>, Host: mm",
            ),
            (
                "a?x=1&access_token=abc&y=2 b access_token=def",
                "a?x=1&access_token=<redacted>&y=2 b access_token=<redacted>",
            ),
            ("access_token=", "access_token="),
            ("nothing here", "nothing here"),
        ] {
            assert_eq!(redact_access_tokens(text), want, "{text}");
        }
        let lines = Lines::default();
        let safe = SecretSafe::new(&lines);
        emit(
            &safe,
            Level::Error,
            "pingora_core::apps::http_app",
            "fails to write: GET /x?access_token=sekrit, Host: a",
        );
        assert_eq!(
            *lines.0.lock().unwrap(),
            ["ERROR pingora_core::apps::http_app fails to write: GET /x?access_token=<redacted>, Host: a"]
        );
    }
}
