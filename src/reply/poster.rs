//! Poster: turns a webhook's answer into reply posts on Mattermost (spec §3).
//!
//! Decoding and building are pure ([`super::decode`], [`super::build`]); this module adds the
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

use super::build::{build_reply_posts, HookInfo, ReplySettings, TriggerPost};
use super::decode::decode_response;
use crate::mattermost::MattermostClient;
use crate::stats::Stats;
use crate::webhook::{Delivery, WebhookAnswer};

/// Receives every webhook answer. The reply poster implements it.
pub trait AnswerSink: Send + Sync + 'static {
    /// Handles `answer` to `delivery`; runs on the dispatcher's runtime.
    fn handle(
        &self,
        delivery: Delivery,
        answer: WebhookAnswer,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
}

/// A sink that only logs answers (used where reply posting is not wanted).
pub struct LogAnswers;

impl AnswerSink for LogAnswers {
    fn handle(
        &self,
        delivery: Delivery,
        answer: WebhookAnswer,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        debug!(
            "answer to post {} from hook {}: HTTP {}, {} bytes",
            delivery.post.id,
            delivery.hook.name(delivery.hook_index),
            answer.status,
            answer.body.len()
        );
        Box::pin(async {})
    }
}

/// The reply poster: the dispatcher's [`AnswerSink`].
#[derive(Clone)]
pub struct Poster {
    inner: Arc<Inner>,
}

struct Inner {
    mm: MattermostClient,
    /// The reply settings in force: a reload changes those of the replies that follow.
    settings: Box<dyn Fn() -> ReplySettings + Send + Sync>,
    stats: Arc<Stats>,
}

impl Poster {
    /// A poster posting through `mm`, with the reply settings `settings` returns when an answer
    /// arrives (the live, reloadable ones: see [`crate::app`]).
    pub fn new(
        settings: impl Fn() -> ReplySettings + Send + Sync + 'static,
        mm: MattermostClient,
        stats: Arc<Stats>,
    ) -> Poster {
        Poster {
            inner: Arc::new(Inner {
                mm,
                settings: Box::new(settings),
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
            &(self.settings)(),
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
            // A delivery with an id (signed, retried or kept in a store) gives each part a
            // pending_post_id of its own: should the reply be posted again (after a crash,
            // from the stored answer), Mattermost answers a repeat within its 30 s window with
            // the post it already made instead of a second one.
            let keyed;
            let part = match &delivery.webhook_id {
                Some(id) => {
                    let mut p = part.clone();
                    p["pending_post_id"] = format!("{id}:{i}").into();
                    keyed = p;
                    &keyed
                }
                None => part,
            };
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
