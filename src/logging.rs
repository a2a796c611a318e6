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
