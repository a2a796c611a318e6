//! Live: the part of the configuration that a reload (SIGHUP) swaps while traffic flows.
//!
//! Hooks, their compiled index, the webhook client (timeout and SSRF allow-list) and the reply
//! settings sit behind one `ArcSwap`: a request or a job loads one snapshot and uses it
//! throughout, so a reload is atomic for each of them and never blocks them. What a reload
//! cannot change without a restart (listen addresses, upstream, bot token, server and limits
//! sections) is reported and kept as it was.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ChannelTypes, Config, Event, HookConfig};
use crate::net::guard::{BoxError, Resolver};
use crate::reply::ReplySettings;
use crate::rules::{HookIndex, Match};
use crate::webhook::WebhookClient;

/// One consistent snapshot of the reloadable configuration.
pub struct Live {
    pub hooks: Vec<Arc<HookConfig>>,
    /// The channel types some enabled hook fires in: posts in other channels stop at the
    /// channel look-up.
    pub channel_types: ChannelTypes,
    /// The hooks that fire on new posts (`events` lists `posted`, the default).
    pub index: HookIndex,
    /// The hooks that fire on edits (`events` lists `edited`); when none does, edits are not
    /// looked at.
    pub edits: HookIndex,
    pub webhooks: WebhookClient,
    pub reply: ReplySettings,
}

/// The shared, swappable snapshot.
pub type LiveConfig = Arc<ArcSwap<Live>>;

impl Live {
    /// Builds the reloadable part of `config`.
    pub fn build(config: &Config, resolver: Arc<dyn Resolver>) -> Result<Live, BoxError> {
        Ok(Live {
            hooks: config.hooks.iter().cloned().map(Arc::new).collect(),
            channel_types: config
                .hooks
                .iter()
                .filter(|h| h.beyond.enabled)
                .fold(ChannelTypes::default(), |all, h| {
                    all.union(h.beyond.channel_types)
                }),
            index: HookIndex::new(&config.hooks),
            edits: HookIndex::for_event(&config.hooks, Event::Edited),
            webhooks: WebhookClient::from_config(config, resolver)?,
            reply: ReplySettings::from(&config.settings),
        })
    }

    /// The hooks that fire on `event`.
    pub fn hooks_for(&self, event: Event) -> &HookIndex {
        match event {
            Event::Posted => &self.index,
            Event::Edited => &self.edits,
        }
    }

    /// The hooks a post fires, in configuration order, by Mattermost's rules (trigger words or
    /// pattern, channel and team) and the opt-in filters its channel decides (channel types,
    /// thread). Disabled hooks and the author filters are the caller's. The dispatcher and
    /// `posthook match` both decide with this.
    pub fn matches<'s>(
        &'s self,
        event: Event,
        (channel_id, team_id, channel_type): (&str, &str, &str),
        root_id: &str,
        message: &'s str,
    ) -> Vec<Match<'s>> {
        let mut matches = self.hooks_for(event).matches(channel_id, team_id, message);
        matches.retain(|m| {
            let beyond = &self.hooks[m.hook].beyond;
            beyond.channel_types.contains(channel_type) && beyond.thread.admits(root_id)
        });
        matches
    }

    /// A swappable snapshot holding `self`.
    pub fn shared(self) -> LiveConfig {
        Arc::new(ArcSwap::from_pointee(self))
    }
}

/// What differs between `old` and `new` that only a restart applies, one line each.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.metrics_listen != new.metrics_listen {
        changed.push("metrics_listen");
    }
    if old.upstreams != new.upstreams {
        changed.push("upstream");
    }
    if old.bot_token != new.bot_token {
        changed.push("bot_token");
    }
    if old.server != new.server {
        changed.push("server");
    }
    if old.limits != new.limits {
        changed.push("limits");
    }
    if old.store != new.store {
        changed.push("store");
    }
    if old.log_format != new.log_format {
        changed.push("log_format");
    }
    changed
}
