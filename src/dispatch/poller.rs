//! Poller: with a durable store, the dispatcher's side of it that runs on a clock — once a
//! second it claims the deliveries that are due and held by no process (a retry whose process
//! died, a replay from `posthook deliveries replay`) and sends them, and it reads which hooks
//! are disabled (`posthook hooks enable` takes effect within a second); once a minute it
//! deletes finished deliveries past `store.retention_days`, in batches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::due::{DueRequest, Outcome};
use super::send::Request;
use super::Shared;
use crate::mattermost::model::CreatedPost;
use crate::store::{Claimed, ClaimedReply, Store};
use crate::webhook::{Delivery, WebhookAnswer};

/// How often due work is looked for.
const TICK: Duration = Duration::from_secs(1);
/// How often old deliveries are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Deliveries deleted per transaction.
const PURGE_BATCH: u32 = 1000;
/// Replies of dead processes taken over per tick.
const REPLY_BATCH: u32 = 64;

/// The memory store, until (or unless) a durable one is opened.
static MEMORY: Store = Store::MEMORY;

impl Shared {
    /// The store in use.
    pub(super) fn store(&self) -> &Store {
        self.store.get().unwrap_or(&MEMORY)
    }

    /// Opens the configured store on this runtime and, when it is durable, starts the poller.
    /// A store that cannot be opened leaves the memory store in place (logged, counted): the
    /// proxy and the deliveries go on.
    pub(super) async fn open_store(self: Arc<Self>) {
        let store = match Store::open(&self.store_config, self.stats.clone()).await {
            Ok(s) => s,
            Err(e) => {
                crate::stats::Stats::inc(&self.stats.store_errors);
                warn!("store: cannot open it ({e}); deliveries are kept in memory only");
                Store::memory()
            }
        };
        let durable = store.is_durable();
        let _ = self.store.set(store);
        if durable {
            self.refresh_disabled().await;
            tokio::spawn(self.poll());
        }
    }

    /// Claims and sends due work every [`TICK`]; purges every [`PURGE_EVERY`].
    async fn poll(self: Arc<Self>) {
        let mut last_purge = Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            self.refresh_disabled().await;
            let free = self.retry_permits.available_permits() as u32;
            let lease = self.default_timeout + self.store_config.lease_margin;
            if free > 0 {
                for claimed in self.store().claim(free, lease).await {
                    self.clone().resume(claimed).await;
                }
            }
            for reply in self.store().claim_replies(REPLY_BATCH, lease).await {
                self.clone().post_reply(reply);
            }
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = Instant::now();
                let n = self
                    .store()
                    .purge(self.store_config.retention, PURGE_BATCH)
                    .await;
                if n > 0 {
                    info!("store: deleted {n} finished deliveries past store.retention_days");
                }
            }
        }
    }

    /// Reads the disabled hooks from the store (every process's 410s, and `hooks enable`).
    async fn refresh_disabled(&self) {
        let Some(hooks) = self.store().disabled_hooks().await else {
            return;
        };
        if let Ok(mut disabled) = self.disabled.lock() {
            *disabled = hooks.into_iter().map(|h| (h.hook, h.reason)).collect();
            self.stats
                .hooks_disabled
                .store(disabled.len() as u64, Ordering::Relaxed);
        }
    }

    /// Posts the reply of a delivered request whose process died before recording it done,
    /// from the kept answer. Each part carries its deterministic `pending_post_id`: a part
    /// the dead process had already posted less than 30 s before is answered by Mattermost
    /// with that post, not made twice.
    fn post_reply(self: Arc<Self>, claimed: ClaimedReply) {
        let ClaimedReply {
            delivery: d,
            status,
            answer,
        } = claimed;
        let Some(delivery) = self.rebuild(&d) else {
            let store = self.store().clone();
            tokio::spawn(async move { store.reply_done(&d.id).await });
            return;
        };
        let answer = WebhookAnswer {
            status,
            body: answer,
            retry_after: None,
        };
        tokio::spawn(async move {
            self.sink.handle(delivery, answer).await;
            self.store().reply_done(&d.id).await;
        });
    }

    /// The delivery of `d` with the hook of the configuration in force (`None` when the hook
    /// is gone).
    fn rebuild(&self, d: &crate::store::NewDelivery) -> Option<Delivery> {
        let live = self.live.load_full();
        let (index, hook) = live
            .hooks
            .iter()
            .enumerate()
            .find(|(i, h)| h.name(*i).to_string() == d.hook)?;
        Some(Delivery {
            post: Arc::new(CreatedPost {
                id: d.post_id.clone(),
                create_at: d.create_at,
                user_id: d.user_id.clone(),
                channel_id: d.channel_id.clone(),
                root_id: d.root_id.clone(),
                ..CreatedPost::default()
            }),
            hook_index: index,
            hook: hook.clone(),
            callback_host: d.host.clone(),
            webhook_id: Some(d.id.clone()),
        })
    }

    /// Sends a claimed delivery again, from its next attempt, with the hook and URL of the
    /// configuration in force; one whose hook or URL is gone is dropped (recorded).
    async fn resume(self: Arc<Self>, claimed: Claimed) {
        let Claimed {
            delivery: d,
            attempts,
        } = claimed;
        if self.held.lock().is_ok_and(|h| h.contains(&d.id)) {
            // Still being worked on here (it waited for a permit past its lease): the claim
            // only renewed the lease.
            return;
        }
        let Some(delivery) = self.rebuild(&d) else {
            warn!(
                "delivery webhook_id={} of hook {}: the hook is no longer in the configuration; dropped",
                d.id, d.hook
            );
            self.store().dropped(&d.id, "hook_removed").await;
            return;
        };
        let hook = delivery.hook.clone();
        // A resumed delivery is due again here (it ended, or never ended, elsewhere).
        let mut request = DueRequest::new(delivery, self.stats.clone());
        let Some(url) = hook.callback_urls.get(d.url_index as usize).cloned() else {
            self.store().dropped(&d.id, "url_removed").await;
            request.settle(Outcome::Dropped {
                reason: "url_removed",
                error: None,
            });
            return;
        };
        if self.is_disabled(&d.hook) {
            self.store().dropped(&d.id, "hook_disabled").await;
            request.settle(Outcome::Dropped {
                reason: "hook_disabled",
                error: None,
            });
            return;
        }
        let send = Request {
            url,
            body: d.body,
            attempt: attempts + 1,
            claimed: true,
        };
        // The attempt loop takes the permits (a retry permit: claimed work never starves
        // fresh posts).
        tokio::spawn(self.deliver(request, send, Vec::new()));
    }
}
