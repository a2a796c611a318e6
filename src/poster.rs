//! Poster: turns a webhook's answer into reply posts on Mattermost (spec §3).
//!
//! Decoding and building are pure ([`crate::reply`], [`crate::slack`]); this module adds the
//! I/O around them: the user look-ups that `<@ID>` mentions need, and `POST
//! /api/v4/posts?set_online=false` with the bot token for each part, in order. A reply is
//! never retried: a failed part is logged with Mattermost's AppError and counted, and the
//! remaining parts are not posted (as Mattermost stops at the first failed part).
//!
//! Each answer ends in one `reply` log line in the delivery lines' key=value format
//! ([`Delivery::log_fields`]), with `outcome=posted|failed|none`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use log::{debug, info, warn};

use crate::config::Config;
use crate::dispatch::{AnswerSink, Delivery};
use crate::live::LiveConfig;
use crate::mattermost::MattermostClient;
use crate::reply::{build_reply_posts, decode_response, HookInfo, ReplySettings, TriggerPost};
use crate::stats::Stats;
use crate::webhook::WebhookAnswer;

/// Where replies are posted.
pub const REPLY_PATH: &str = "/api/v4/posts?set_online=false";

/// The reply poster: the dispatcher's [`AnswerSink`].
#[derive(Clone)]
pub struct Poster {
    inner: Arc<Inner>,
}

struct Inner {
    mm: MattermostClient,
    settings: Settings,
    stats: Arc<Stats>,
}

/// Where the reply settings come from.
enum Settings {
    Fixed(ReplySettings),
    /// The live snapshot: a reload changes the settings of the replies that follow.
    Live(LiveConfig),
}

impl Settings {
    fn get(&self) -> ReplySettings {
        match self {
            Settings::Fixed(s) => *s,
            Settings::Live(live) => live.load().reply,
        }
    }
}

impl Poster {
    /// A poster with the reply settings of `config`.
    pub fn new(config: &Config, mm: MattermostClient, stats: Arc<Stats>) -> Poster {
        Poster {
            inner: Arc::new(Inner {
                mm,
                settings: Settings::Fixed(ReplySettings {
                    enable_post_username_override: config.settings.enable_post_username_override,
                    enable_post_icon_override: config.settings.enable_post_icon_override,
                    max_post_size: config.settings.max_post_size,
                }),
                stats,
            }),
        }
    }

    /// A poster reading the reply settings from the live, reloadable snapshot.
    pub fn with_live(live: LiveConfig, mm: MattermostClient, stats: Arc<Stats>) -> Poster {
        Poster {
            inner: Arc::new(Inner {
                mm,
                settings: Settings::Live(live),
                stats,
            }),
        }
    }
}

impl AnswerSink for Poster {
    fn handle(
        &self,
        delivery: Delivery,
        answer: WebhookAnswer,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let inner = self.inner.clone();
        Box::pin(async move { inner.reply(delivery, answer).await })
    }
}

impl Inner {
    async fn reply(&self, delivery: Delivery, answer: WebhookAnswer) {
        let post = &delivery.post;
        let fields = delivery.log_fields();
        let response = match decode_response(&answer.body) {
            Ok(Some(r)) if r.wants_reply() => r,
            Ok(_) => {
                Stats::inc(&self.stats.replies_none);
                debug!("reply {fields} outcome=none");
                return;
            }
            Err(e) => {
                Stats::inc(&self.stats.replies_failed);
                warn!(
                    "reply {fields} outcome=failed error={:?}",
                    format!("undecodable answer: {e}")
                );
                return;
            }
        };
        let ids = response.referenced_user_ids();
        let users = if ids.is_empty() {
            Default::default()
        } else {
            self.mm.usernames(&ids).await
        };
        let hook = &delivery.hook;
        let parts = match build_reply_posts(
            &response,
            &HookInfo {
                display_name: &hook.display_name,
                username: &hook.username,
                icon_url: &hook.icon_url,
            },
            &TriggerPost {
                id: &post.id,
                root_id: &post.root_id,
                channel_id: &post.channel_id,
            },
            &self.settings.get(),
            &users,
        ) {
            Ok(parts) => parts,
            Err(e) => {
                Stats::inc(&self.stats.replies_failed);
                warn!("reply {fields} outcome=failed error={:?}", e.to_string());
                return;
            }
        };
        let total = parts.len();
        for (i, part) in parts.iter().enumerate() {
            if let Err(e) = self.mm.create_post::<serde::de::IgnoredAny>(part).await {
                Stats::inc(&self.stats.replies_failed);
                warn!(
                    "reply {fields} part={}/{total} outcome=failed error={:?}",
                    i + 1,
                    e.to_string()
                );
                return;
            }
        }
        Stats::inc(&self.stats.replies_posted);
        info!("reply {fields} parts={total} outcome=posted");
    }
}
