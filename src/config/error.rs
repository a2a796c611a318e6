//! Config errors: every one is `FILE:LINE:COL: field: message`, the field named by its full
//! path (`hooks[1].callback_urls[0]`), type errors included
//! (`settings.outgoing_integration_requests_timeout: expected a whole number of seconds, found
//! a string`). Values are never repeated in a message: a misplaced token must not reach a log.

use std::fmt;

use serde_saphyr::{Error as YamlError, Location};

/// A configuration error, already formatted as `FILE:LINE:COL: field: message` (or
/// `FILE: cannot read: …` when the file itself cannot be read).
#[derive(Debug)]
pub struct ConfigError {
    message: String,
    source: Option<std::io::Error>,
}

impl ConfigError {
    /// An error about the file's content.
    pub(super) fn new(message: String) -> ConfigError {
        ConfigError {
            message,
            source: None,
        }
    }

    /// The file `name` could not be read.
    pub(super) fn unreadable(name: &str, error: std::io::Error) -> ConfigError {
        ConfigError {
            message: format!("{name}: cannot read: {error}"),
            source: Some(error),
        }
    }

    /// The whole message, as printed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// The error of reading the YAML into the file model, at `path` (as `serde_path_to_error` saw
/// it), in the config's format. `text` is the file, read again here only to tell what kind of
/// value stands where the wrong one was found.
pub(super) fn from_yaml(file_name: &str, text: &str, path: &str, error: &YamlError) -> ConfigError {
    let error = error.without_snippet();
    let loc = error.location().unwrap_or(Location::UNKNOWN);
    let at = format!("{file_name}:{}:{}", loc.line(), loc.column());
    let segments = parse_path(path);
    match error {
        YamlError::SerdeUnknownField {
            field, expected, ..
        } => {
            // The path ends with the unknown key itself.
            let field_path = show_path(&segments, Some(field));
            ConfigError::new(format!(
                "{at}: {field_path}: unknown key (expected one of: {})",
                expected.join(", ")
            ))
        }
        YamlError::DuplicateMappingKey { key, .. } => {
            let key = key.as_deref().unwrap_or("a key");
            ConfigError::new(format!(
                "{at}: {key}: written twice (each key at most once)"
            ))
        }
        _ if !segments.is_empty() => {
            let field_path = show_path(&segments, None);
            // Where the text is no YAML at all, the reader's own words say more.
            let message = match (expected_value(&segments), found_value(text, &segments)) {
                (Some(e), Some(f)) => format!("expected {e}, found {f}"),
                _ => first_line(&error.to_string()),
            };
            ConfigError::new(format!("{at}: {field_path}: {message}"))
        }
        // Not in any field: the YAML itself is broken.
        _ => ConfigError::new(format!(
            "{at}: (document): {}",
            first_line(&error.to_string())
        )),
    }
}

/// A segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// `hooks[0].value.token.value` → [hooks, 0, token]: `serde_path_to_error`'s path without the
/// `value` members of the span-aware wrapper the file model uses, and without its `?` for a
/// position it does not know.
fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, indices) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() && key != "value" && key != "?" {
            out.push(Segment::Key(key.to_string()));
        }
        for index in indices.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

fn show_path(segments: &[Segment], last: Option<&str>) -> String {
    let mut out = String::new();
    for s in segments {
        match s {
            Segment::Key(k) if last == Some(k.as_str()) && segments.last() == Some(s) => {}
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if let Some(k) = last {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(k);
    }
    out
}

fn first_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message);
    // serde-saphyr puts its own "error: line X column Y: " in front; the prefix says it.
    let first = match first.find(": ") {
        Some(i) if first.starts_with("error: line ") => {
            let rest = &first[i + 2..];
            rest.split_once(": ").map_or(rest, |(_, m)| m)
        }
        _ => first,
    };
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// What the field at `segments` takes, in words (see [`super::file::expected`]).
fn expected_value(segments: &[Segment]) -> Option<&'static str> {
    let (last, parent) = segments.split_last()?;
    match (last, parent.last()) {
        (Segment::Key(k), _) => super::file::expected(k),
        (Segment::Index(_), Some(Segment::Key(k))) => super::file::expected_element(k),
        _ => None,
    }
}

/// The kind of value that stands at `segments` in `text`, in words.
fn found_value(text: &str, segments: &[Segment]) -> Option<&'static str> {
    let mut value: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    for s in segments {
        value = match (s, value) {
            (Segment::Key(k), serde_json::Value::Object(mut m)) => m.remove(k)?,
            (Segment::Index(i), serde_json::Value::Array(mut a)) if *i < a.len() => {
                a.swap_remove(*i)
            }
            _ => return None,
        };
    }
    Some(match value {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "true or false",
        serde_json::Value::Number(n) if n.as_i64().is_some_and(|v| v < 0) => "a negative number",
        serde_json::Value::Number(n)
            if n.as_f64().is_some_and(|f| f.fract() == 0.0 && n.is_f64()) =>
        {
            "a number out of range"
        }
        serde_json::Value::Number(n) if n.is_f64() => "a decimal number",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    })
}
