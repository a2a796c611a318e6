//! Validation of a hook's keys beyond Mattermost's model (README "Beyond Mattermost"): each is
//! optional, and its default keeps Mattermost's behaviour.

use serde_saphyr::Spanned;

use super::error::ConfigError;
use super::file;
use super::validate::Validator;
use super::{Beyond, ChannelTypes, Events, HookConfig, Pattern, Thread, MAX_PATTERN_BYTES};

/// Longest `id`.
const MAX_ID_LEN: usize = 64;

impl Validator<'_> {
    /// The opt-in keys of hook `p` (`hooks[i]`).
    pub(super) fn beyond(&self, p: &str, h: &file::Hook) -> Result<Beyond, ConfigError> {
        let id = match &h.id {
            None => None,
            Some(s) => {
                let field = format!("{p}.id");
                let id = self.subst(s, &field)?;
                let valid = !id.is_empty()
                    && id.len() <= MAX_ID_LEN
                    && id.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !valid {
                    return Err(self.err(
                        s.referenced,
                        &field,
                        format!("must be 1 to {MAX_ID_LEN} characters of a-z, 0-9, '_' and '-'"),
                    ));
                }
                Some(id)
            }
        };
        let thread = match &h.thread {
            None => Thread::Any,
            Some(s) => {
                let field = format!("{p}.thread");
                match self.subst(s, &field)?.as_str() {
                    "any" => Thread::Any,
                    "root" => Thread::Root,
                    "reply" => Thread::Reply,
                    _ => return Err(self.err(s.referenced, &field, "must be any, root or reply")),
                }
            }
        };
        let channel_types = match &h.channel_types {
            None => ChannelTypes::PUBLIC,
            Some(list) => {
                let mut types = ChannelTypes::default();
                for (j, s) in list.value.iter().enumerate() {
                    let field = format!("{p}.channel_types[{j}]");
                    types = types
                        .with(&self.subst(s, &field)?)
                        .ok_or_else(|| self.err(s.referenced, &field, "must be O, P, D or G"))?;
                }
                if types.is_empty() {
                    // A hook that could never fire is a mistake, not a way to park it (`enabled`).
                    return Err(self.err(
                        list.referenced,
                        &format!("{p}.channel_types"),
                        "must list at least one of O, P, D, G",
                    ));
                }
                types
            }
        };
        let events = match &h.events {
            None => Events::POSTED,
            Some(list) => {
                let mut events = Events::default();
                for (j, s) in list.value.iter().enumerate() {
                    let field = format!("{p}.events[{j}]");
                    events = events.with(&self.subst(s, &field)?).ok_or_else(|| {
                        self.err(s.referenced, &field, "must be posted or edited")
                    })?;
                }
                if events.is_empty() {
                    return Err(self.err(
                        list.referenced,
                        &format!("{p}.events"),
                        "must list at least one of posted, edited",
                    ));
                }
                events
            }
        };
        let from_users = match &h.from_users {
            None => None,
            Some(list) => {
                let mut users = Vec::with_capacity(list.value.len());
                for (j, s) in list.value.iter().enumerate() {
                    let field = format!("{p}.from_users[{j}]");
                    let user = self.subst(s, &field)?;
                    if user.is_empty() {
                        return Err(self.err(s.referenced, &field, "must not be empty"));
                    }
                    users.push(user);
                }
                if users.is_empty() {
                    return Err(self.err(
                        list.referenced,
                        &format!("{p}.from_users"),
                        "must list at least one user id or username",
                    ));
                }
                Some(users)
            }
        };
        let trigger_pattern = match &h.trigger_pattern {
            None => None,
            Some(s) => Some(self.pattern(p, h, s)?),
        };
        let (team_name, channel_name) = self.names(p, h)?;
        Ok(Beyond {
            id,
            team_name,
            channel_name,
            enabled: h.enabled.unwrap_or(true),
            channel_types,
            events,
            from_users,
            exclude_bots: h.exclude_bots.unwrap_or(false),
            thread,
            payload_extras: h.payload_extras.unwrap_or(false),
            trigger_pattern,
        })
    }

    /// `team` and `channel`: names instead of `team_id` and `channel_id` (each pair exclusive).
    #[allow(clippy::type_complexity)]
    fn names(
        &self,
        p: &str,
        h: &file::Hook,
    ) -> Result<(Option<String>, Option<(String, String)>), ConfigError> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let team = match (&h.team, &h.team_id) {
            (None, _) => None,
            (Some(s), Some(_)) => {
                return Err(self.err(
                    s.referenced,
                    &format!("{p}.team"),
                    "cannot be used with team_id: name the team one way",
                ))
            }
            (Some(s), None) => {
                let field = format!("{p}.team");
                let name = self.subst(s, &field)?;
                if !name_ok(&name) {
                    return Err(self.err(
                        s.referenced,
                        &field,
                        "not a team name (letters, digits, '_' or '-')",
                    ));
                }
                Some(name)
            }
        };
        let channel = match (&h.channel, &h.channel_id) {
            (None, _) => None,
            (Some(s), Some(_)) => {
                return Err(self.err(
                    s.referenced,
                    &format!("{p}.channel"),
                    "cannot be used with channel_id: name the channel one way",
                ))
            }
            (Some(s), None) => {
                let field = format!("{p}.channel");
                let name = self.subst(s, &field)?;
                match name.split_once('/') {
                    Some((t, c)) if name_ok(t) && name_ok(c) => {
                        Some((t.to_string(), c.to_string()))
                    }
                    _ => {
                        return Err(self.err(
                            s.referenced,
                            &field,
                            "must be team-name/channel-name",
                        ))
                    }
                }
            }
        };
        Ok((team, channel))
    }

    /// `trigger_pattern`, compiled; it excludes `trigger_words` and `trigger_when` (the
    /// conflict is reported at whichever comes later in the file).
    fn pattern(&self, p: &str, h: &file::Hook, s: &file::Str) -> Result<Pattern, ConfigError> {
        let field = format!("{p}.trigger_pattern");
        let at = s.referenced;
        let others = [
            h.trigger_words
                .as_ref()
                .map(|w| ("trigger_words", w.referenced)),
            h.trigger_when
                .as_ref()
                .map(|w| ("trigger_when", w.referenced)),
        ];
        if let Some((name, loc)) = others.into_iter().flatten().next() {
            let later = (loc.line(), loc.column()) > (at.line(), at.column());
            let why = |other: &str| {
                format!("cannot be used with {other}: a hook fires either on trigger words or on a pattern")
            };
            return Err(if later {
                self.err(loc, &format!("{p}.{name}"), why("trigger_pattern"))
            } else {
                self.err(at, &field, why(name))
            });
        }
        let source = self.subst(s, &field)?;
        regex::RegexBuilder::new(&source)
            .size_limit(MAX_PATTERN_BYTES)
            .build()
            .map(Pattern)
            .map_err(|e| {
                let why = match &e {
                    regex::Error::CompiledTooBig(limit) => {
                        format!("pattern too large (over {limit} bytes compiled)")
                    }
                    // The syntax error's last line says what is wrong; the lines before it
                    // repeat the pattern with a caret.
                    other => {
                        let text = other.to_string();
                        let last = text.lines().last().unwrap_or_default().trim();
                        format!("invalid pattern: {}", last.trim_start_matches("error: "))
                    }
                };
                self.err(at, &field, why)
            })
    }

    /// Every hook's name in logs is its own: an `id` given twice, or one that is another hook's
    /// position while that hook has no `id` (it is named by its position), is an error at the
    /// later place.
    pub(super) fn unique_ids(
        &self,
        raw: &[Spanned<file::Hook>],
        hooks: &[HookConfig],
    ) -> Result<(), ConfigError> {
        let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, h) in hooks.iter().enumerate() {
            let name = h.name(i).to_string();
            let Some(first) = seen.insert(name.clone(), i) else {
                continue;
            };
            // Report at the hook whose `id` makes the clash: the later one when both have an
            // id, else the one that has it (the other is named by its position).
            let (at, other) = if hooks[i].beyond.id.is_some() {
                (i, first)
            } else {
                (first, i)
            };
            let why = if hooks[other].beyond.id.is_some() {
                format!("{name:?} is already the id of hooks[{other}]")
            } else {
                format!(
                    "{name:?} is already the name of hooks[{other}], which has no id and is named by its position"
                )
            };
            let loc = raw[at]
                .value
                .id
                .as_ref()
                .map_or(raw[at].referenced, |s| s.referenced);
            return Err(self.err(loc, &format!("hooks[{at}].id"), why));
        }
        Ok(())
    }
}
