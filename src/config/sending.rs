//! Validation of a hook's keys of reliable delivery (README "Signing"): each is optional, and
//! without them the hook sends exactly Mattermost's request, once.

use super::error::ConfigError;
use super::file::{self, OneOrMany};
use super::validate::Validator;
use super::Sending;
use crate::signing::Secret;

impl Validator<'_> {
    /// The delivery keys of hook `p` (`hooks[i]`).
    pub(super) fn sending(&self, p: &str, h: &file::Hook) -> Result<Sending, ConfigError> {
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
                    // The error never repeats the secret.
                    let secret = Secret::parse(&self.subst(s, &at)?)
                        .map_err(|e| self.err(s.referenced, &at, e))?;
                    secrets.push(secret);
                }
                secrets
            }
        };
        Ok(Sending { signing_secrets })
    }
}
