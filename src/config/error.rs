//! Config errors: every one is `FILE:LINE:COL: field: message`, the field named by its full
//! path (`hooks[1].callback_urls[0]`), type errors included.

use std::fmt;

/// A configuration error, already formatted as `file:line:col: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}
