//! Validation of `store` (README "The delivery store").

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::file;
use super::validate::Validator;
use super::{StoreConfig, StoreUrl};

/// Longest `commit_interval_ms`: a delivery waits up to this for its intake's commit.
const MAX_COMMIT_INTERVAL_MS: u64 = 100;
/// Longest `retention_days`.
const MAX_RETENTION_DAYS: u64 = 3650;

impl Validator<'_> {
    /// `store`: absent is `memory`; `url` is `memory` or `sqlite:PATH` (a relative path is
    /// from the config file's directory); `retention_days` default 7.
    pub(super) fn store(
        &self,
        raw: Option<&Spanned<file::Store>>,
    ) -> Result<StoreConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(StoreConfig::default());
        };
        let url = match &raw.value.url {
            None => {
                return Err(self.err(
                    raw.referenced,
                    "store.url",
                    "is required (memory, sqlite:PATH or postgres://USER:PASS@HOST/DB)",
                ))
            }
            Some(s) => {
                let text = self.subst(s, "store.url")?;
                if text == "memory" {
                    StoreUrl::Memory
                } else if let Some(path) = text.strip_prefix("sqlite:") {
                    // `sqlite:///abs` and `sqlite://rel` as sqlx and others write them, too.
                    let path = path.strip_prefix("//").unwrap_or(path);
                    if path.is_empty() {
                        return Err(self.err(
                            s.referenced,
                            "store.url",
                            "sqlite: needs a file path",
                        ));
                    }
                    StoreUrl::Sqlite(self.beside_config(Path::new(path)))
                } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
                    if url::Url::parse(&text).is_err() {
                        return Err(self.err(
                            s.referenced,
                            "store.url",
                            "is not a usable postgres:// URL (user, password and database name are written postgres://USER:PASS@HOST/DB)",
                        ));
                    }
                    StoreUrl::Postgres(text)
                } else {
                    // Never repeat the value: a database URL may carry a password.
                    return Err(self.err(
                        s.referenced,
                        "store.url",
                        "must be memory, sqlite:PATH or postgres://USER:PASS@HOST/DB",
                    ));
                }
            }
        };
        let retention = match &raw.value.retention_days {
            None => StoreConfig::default().retention,
            Some(d) => {
                if !(1..=MAX_RETENTION_DAYS).contains(&d.value) {
                    return Err(self.err(
                        d.referenced,
                        "store.retention_days",
                        format!("must be 1 to {MAX_RETENTION_DAYS} days"),
                    ));
                }
                Duration::from_secs(d.value * 86_400)
            }
        };
        let lease_margin = match &raw.value.lease_margin_seconds {
            None => StoreConfig::default().lease_margin,
            Some(s) => {
                if !(1..=3600).contains(&s.value) {
                    return Err(self.err(
                        s.referenced,
                        "store.lease_margin_seconds",
                        "must be 1 to 3600 seconds",
                    ));
                }
                Duration::from_secs(s.value)
            }
        };
        let max_connections = match &raw.value.max_connections {
            None => StoreConfig::default().max_connections,
            Some(n) => {
                if !(1..=1000).contains(&n.value) {
                    return Err(self.err(
                        n.referenced,
                        "store.max_connections",
                        "must be 1 to 1000",
                    ));
                }
                n.value as u32
            }
        };
        let commit_interval = match &raw.value.commit_interval_ms {
            None => StoreConfig::default().commit_interval,
            Some(n) => {
                if n.value > MAX_COMMIT_INTERVAL_MS {
                    return Err(self.err(
                        n.referenced,
                        "store.commit_interval_ms",
                        format!("must be 0 to {MAX_COMMIT_INTERVAL_MS} milliseconds"),
                    ));
                }
                Duration::from_millis(n.value)
            }
        };
        let sqlite_sync_full = match &raw.value.sqlite_synchronous {
            None => StoreConfig::default().sqlite_sync_full,
            Some(s) => match s.value.as_str() {
                "full" => true,
                "normal" => false,
                _ => {
                    return Err(self.err(
                        s.referenced,
                        "store.sqlite_synchronous",
                        "must be full or normal",
                    ))
                }
            },
        };
        Ok(StoreConfig {
            url,
            retention,
            lease_margin,
            max_connections,
            commit_interval,
            sqlite_sync_full,
        })
    }

    /// `path`, from the config file's directory when relative.
    fn beside_config(&self, path: &Path) -> PathBuf {
        match Path::new(self.file_name).parent() {
            Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}
