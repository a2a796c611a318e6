//! Names in the config: a hook's `team: "team-name"` and `channel: "team-name/channel-name"`,
//! alternatives to `team_id` and `channel_id`, resolved with the bot token
//! (`GET /api/v4/teams/name/{name}`, `GET /api/v4/teams/{team_id}/channels/name/{name}`) at
//! start, at each reload and every `limits.name_refresh_seconds`, so that renames are followed:
//! the name in the config wins. A hook whose name does not resolve is inactive (an error line
//! names the hook and the name; `posthook_name_failures_total` counts it) until it resolves;
//! at start the proxy starts anyway and resolution is retried every [`RETRY`] at most; a reload
//! whose names do not resolve is rejected as an invalid file is.
//!
//! A config without names never asks anything here: no thread, no request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, HookConfig};
use crate::mattermost::MattermostClient;
use crate::stats::Stats;

/// The longest wait before names that did not resolve are tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// A name that did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// The hook: its `id`, else `hooks[i]`.
    pub hook: String,
    /// `team "name"` or `channel "team/name"`.
    pub name: String,
    pub error: String,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hook {}: {} does not resolve: {}",
            self.hook, self.name, self.error
        )
    }
}

/// Whether any hook names its team or channel.
pub fn has_names(hooks: &[HookConfig]) -> bool {
    hooks
        .iter()
        .any(|h| h.beyond.team_name.is_some() || h.beyond.channel_name.is_some())
}

/// `hooks` as they run before their names are resolved: every named hook inactive.
pub fn inactive(hooks: &[HookConfig]) -> Vec<HookConfig> {
    hooks
        .iter()
        .map(|h| {
            let mut h = h.clone();
            if h.beyond.team_name.is_some() || h.beyond.channel_name.is_some() {
                h.beyond.enabled = false;
            }
            h
        })
        .collect()
}

fn hook_name(h: &HookConfig, i: usize) -> String {
    match &h.beyond.id {
        Some(id) => id.clone(),
        None => format!("hooks[{i}]"),
    }
}

/// `hooks` with each name resolved into its id; a hook whose name does not resolve is
/// inactive in the copy, and reported. Each team name is asked once per pass.
pub async fn resolve(
    mm: &MattermostClient,
    hooks: &[HookConfig],
) -> (Vec<HookConfig>, Vec<Unresolved>) {
    let mut teams: HashMap<String, Result<String, String>> = HashMap::new();
    let mut out = Vec::with_capacity(hooks.len());
    let mut failed = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let mut h = h.clone();
        let who = hook_name(&h, i);
        let mut fail = |name: String, error: String| {
            failed.push(Unresolved {
                hook: who.clone(),
                name,
                error,
            })
        };
        let mut ok = true;
        let wanted: Vec<&str> = h
            .beyond
            .team_name
            .iter()
            .map(String::as_str)
            .chain(h.beyond.channel_name.iter().map(|(t, _)| t.as_str()))
            .collect();
        for team in wanted {
            if !teams.contains_key(team) {
                let id = mm
                    .team_by_name(team)
                    .await
                    .map(|t| t.id)
                    .map_err(|e| e.to_string());
                teams.insert(team.to_string(), id);
            }
        }
        if let Some(team) = h.beyond.team_name.clone() {
            match &teams[&team] {
                Ok(id) => h.team_id = Some(id.clone()),
                Err(e) => {
                    fail(format!("team {team:?}"), e.clone());
                    ok = false;
                }
            }
        }
        if let Some((team, channel)) = h.beyond.channel_name.clone() {
            let name = format!("channel \"{team}/{channel}\"");
            match &teams[&team] {
                Ok(team_id) => match mm.channel_by_name(team_id, &channel).await {
                    Ok(c) => h.channel_id = Some(c.id),
                    Err(e) => {
                        fail(name, e.to_string());
                        ok = false;
                    }
                },
                Err(e) => {
                    fail(name, e.clone());
                    ok = false;
                }
            }
        }
        if !ok {
            h.beyond.enabled = false;
        }
        out.push(h);
    }
    (out, failed)
}

/// Resolves `config`'s names on a thread and runtime of its own (with a client of its own), so
/// that it works from any caller: the reloader's thread, `-t --resolve`, a test's runtime.
pub fn resolve_blocking(
    config: &Config,
    nodes: Option<Arc<crate::upstreams::Nodes>>,
) -> Result<(Vec<HookConfig>, Vec<Unresolved>), String> {
    let config = config.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let mut mm = MattermostClient::from_config(&config, Arc::new(Stats::default()))
            .map_err(|e| e.to_string())?;
        if let Some(nodes) = nodes {
            mm = mm.with_nodes(nodes);
        }
        Ok(rt.block_on(resolve(&mm, &config.hooks)))
    })
    .join()
    .unwrap_or_else(|_| Err("name resolution panicked".into()))
}

/// The ids a resolution gave each hook (to tell whether anything changed).
pub fn resolved_ids(hooks: &[HookConfig]) -> Vec<(Option<String>, Option<String>, bool)> {
    hooks
        .iter()
        .map(|h| (h.team_id.clone(), h.channel_id.clone(), h.beyond.enabled))
        .collect()
}
