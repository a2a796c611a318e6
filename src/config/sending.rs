//! Validation of a hook's keys of reliable delivery (README "Signing"): each is optional, and
//! without them the hook sends exactly Mattermost's request, once.

use super::error::ConfigError;
use super::file::{self, OneOrMany};
use super::validate::Validator;
use super::{Notify, Retry, Sending};
use std::time::Duration;

/// Most attempts a `retry` may ask for.
const MAX_ATTEMPTS: u64 = 100;
/// Longest delay, timeout or backoff bound a hook may set (a day).
const MAX_SECONDS: u64 = 86_400;
use crate::signing::Secret;

impl Validator<'_> {
    /// The delivery keys of hook `p` (`hooks[i]`).
    pub(super) fn sending(&self, p: &str, h: &file::Hook) -> Result<Sending, ConfigError> {
        // `***`: a secret as `posthook -T` prints it (checked, never run with).
        let mut masked_secrets = 0;
        let signing_secrets = match &h.signing_secret {
            None => Vec::new(),
            Some(value) => {
                let field = format!("{p}.signing_secret");
                let one;
                let texts: Vec<(&file::Str, String)> = match &value.value {
                    OneOrMany::One(s) => {
                        one = file::Str {
                            value: s.clone(),
                            referenced: value.referenced,
                            defined: value.defined,
                        };
                        vec![(&one, field.clone())]
                    }
                    OneOrMany::Many(list) => list
                        .iter()
                        .enumerate()
                        .map(|(j, s)| (s, format!("{field}[{j}]")))
                        .collect(),
                };
                if texts.is_empty() {
                    return Err(self.err(
                        value.referenced,
                        &field,
                        "must list at least one secret (leave the key out for unsigned requests)",
                    ));
                }
                let mut secrets = Vec::with_capacity(texts.len());
                for (s, at) in texts {
                    let text = self.subst(s, &at)?;
                    if text == super::MASKED {
                        masked_secrets += 1;
                        continue;
                    }
                    // The error never repeats the secret.
                    let secret =
                        Secret::parse(&text).map_err(|e| self.err(s.referenced, &at, e))?;
                    secrets.push(secret);
                }
                secrets
            }
        };
        let retry = match &h.retry {
            None => None,
            Some(r) => Some(self.retry(&format!("{p}.retry"), r)?),
        };
        let timeout = match &h.timeout_seconds {
            None => None,
            Some(t) => Some(self.seconds(&format!("{p}.timeout_seconds"), t, 1)?),
        };
        let max_in_flight = match &h.max_in_flight {
            None => None,
            Some(n) => {
                if !(1..=100_000).contains(&n.value) {
                    return Err(self.err(
                        n.referenced,
                        &format!("{p}.max_in_flight"),
                        "must be 1 to 100000",
                    ));
                }
                Some(n.value as usize)
            }
        };
        let notify = match &h.notify {
            None => None,
            Some(n) => Some(self.notify(&format!("{p}.notify"), n)?),
        };
        Ok(Sending {
            signing_secrets,
            masked_secrets,
            retry,
            timeout,
            max_in_flight,
            notify,
        })
    }

    /// `notify`: `username` required (a Mattermost username), `after_failures` 1 to 10 000,
    /// default 5.
    fn notify(
        &self,
        field: &str,
        n: &serde_saphyr::Spanned<file::Notify>,
    ) -> Result<Notify, ConfigError> {
        let Some(raw) = &n.value.username else {
            return Err(self.err(
                n.referenced,
                &format!("{field}.username"),
                "is required (the Mattermost user the bot writes to)",
            ));
        };
        let at = format!("{field}.username");
        let username = self.subst(raw, &at)?;
        let username = username.trim_start_matches('@').to_ascii_lowercase();
        if !super::is_valid_username(&username) {
            return Err(self.err(
                raw.referenced,
                &at,
                "must be a Mattermost username (letters, digits, '.', '-', '_')",
            ));
        }
        let after_failures = match &n.value.after_failures {
            None => 5,
            Some(a) => {
                if !(1..=10_000).contains(&a.value) {
                    return Err(self.err(
                        a.referenced,
                        &format!("{field}.after_failures"),
                        "must be 1 to 10000",
                    ));
                }
                a.value as u32
            }
        };
        Ok(Notify {
            username,
            after_failures,
        })
    }

    /// `retry`: `attempts` required (1 to 100), `initial_seconds` default 5, `max_seconds`
    /// default 3600 and not below `initial_seconds`.
    fn retry(
        &self,
        field: &str,
        r: &serde_saphyr::Spanned<file::Retry>,
    ) -> Result<Retry, ConfigError> {
        let Some(attempts) = &r.value.attempts else {
            return Err(self.err(
                r.referenced,
                &format!("{field}.attempts"),
                "is required (attempts in all, the first one included)",
            ));
        };
        if !(1..=MAX_ATTEMPTS).contains(&attempts.value) {
            return Err(self.err(
                attempts.referenced,
                &format!("{field}.attempts"),
                format!("must be 1 to {MAX_ATTEMPTS}"),
            ));
        }
        let initial = match &r.value.initial_seconds {
            None => Duration::from_secs(5),
            Some(s) => self.seconds(&format!("{field}.initial_seconds"), s, 1)?,
        };
        let max = match &r.value.max_seconds {
            None => Duration::from_secs(3600).max(initial),
            Some(s) => {
                let max = self.seconds(&format!("{field}.max_seconds"), s, 1)?;
                if max < initial {
                    return Err(self.err(
                        s.referenced,
                        &format!("{field}.max_seconds"),
                        "must not be below initial_seconds",
                    ));
                }
                max
            }
        };
        Ok(Retry {
            attempts: attempts.value as u32,
            initial,
            max,
        })
    }

    /// A whole number of seconds from `min` to a day.
    fn seconds(
        &self,
        field: &str,
        s: &serde_saphyr::Spanned<u64>,
        min: u64,
    ) -> Result<Duration, ConfigError> {
        if !(min..=MAX_SECONDS).contains(&s.value) {
            return Err(self.err(
                s.referenced,
                field,
                format!("must be {min} to {MAX_SECONDS} seconds"),
            ));
        }
        Ok(Duration::from_secs(s.value))
    }
}
