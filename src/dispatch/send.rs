//! Send: the attempts of one callback request, from the first to its end, and the hooks a
//! `410 Gone` disabled.
//!
//! The first attempt goes out at once. For a hook with `retry`, the verdict on each attempt
//! ([`super::retry`]) says whether to try again; a waiting delivery holds no permit, only its
//! body, and counts in `posthook_deliveries_pending` (at most `limits.max_pending_deliveries`:
//! beyond it, a delivery that would wait is dropped). Retry attempts take one of the retry
//! permits (half of the delivery permits) besides a delivery permit, so that a dead endpoint
//! never starves fresh posts.
//!
//! With a durable store, a new delivery is written before its first attempt, each attempt and
//! its end are recorded (an answer before its reply is posted), and a waiting retry stays
//! leased to this process until its due time plus its deadline and the lease margin: should
//! the process die, any process claims it then ([`super::poller`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{info, warn};
use tokio::sync::OwnedSemaphorePermit;

use super::due::{DueRequest, Outcome};
use super::retry::{self, Verdict};
use super::Shared;
use crate::config::Event;
use crate::live::Live;
use crate::rules::Match;
use crate::stats::Stats;
use crate::store::{AttemptRecord, End, NewDelivery, Store};
use crate::webhook::{Delivery, DeliveryError};

/// What to send for a due request, and from which attempt on.
pub(super) struct Request {
    pub url: url::Url,
    pub body: Bytes,
    /// The attempt about to be made (1 for the first).
    pub attempt: u32,
    /// Claimed from the store (already written; its attempts take retry permits), not a new
    /// delivery (written by the dispatcher before it got here).
    pub claimed: bool,
}

impl Shared {
    /// Sends `request` — and tries again as the verdicts say — then hands the answer to the
    /// sink. `permits` are the ones its first attempt already holds (none: it takes them).
    pub(super) async fn deliver(
        self: Arc<Self>,
        mut request: DueRequest,
        send: Request,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) {
        let Request {
            url,
            body,
            mut attempt,
            claimed,
        } = send;
        let store = self.store().clone();
        let lease = self.lease(&request.delivery);
        let id = request.delivery.webhook_id.clone().unwrap_or_default();
        // Only a durable store has claims to guard against; the default path takes no lock.
        let _held = store.is_durable().then(|| Held::new(&self, &id));
        loop {
            if permits.is_empty() {
                let again = attempt > 1 || claimed;
                match self.take_permits(&mut request, again, &store).await {
                    Some(p) => permits = p,
                    None => return,
                }
            } else if let Some(gate) = self.hook_gate(&request.delivery) {
                // A first attempt that took its delivery permit before its hook had a bound
                // (a reload in between): take the hook's too.
                match gate.acquire_owned().await {
                    Ok(p) => permits.push(p),
                    Err(_) => return,
                }
            }
            // The latest client: a reload's address policy applies to retries too.
            let webhooks = self.live.load().webhooks.clone();
            let started = Instant::now();
            let result = webhooks
                .send(
                    &url,
                    request.delivery.hook.content_type,
                    body.clone(),
                    request.delivery.send_options(),
                )
                .await;
            let latency = started.elapsed();
            if let Ok(answer) = &result {
                if retry::is_gone(answer) {
                    self.disable(&request, answer.status);
                }
            }
            let verdict = retry::judge(result.as_ref(), &request.delivery.hook.sending, attempt);
            let record = AttemptRecord {
                n: attempt,
                status: result.as_ref().ok().map(|a| a.status),
                latency,
                error: result.as_ref().err().map(|e| e.to_string()),
            };
            match (result, verdict) {
                (Ok(answer), Verdict::Delivered) => {
                    // The answer is kept before the reply is posted; a reply is leased like a
                    // delivery, so that another process posts it should this one die first.
                    let replies = store.is_durable() && retry::yields_reply(&answer);
                    let kept = End::Delivered {
                        answer: answer.body.clone(),
                        reply_lease: replies.then_some(lease),
                    };
                    store.attempt(&id, record, kept).await;
                    Stats::inc(&self.stats.attempts_delivered);
                    self.note_outcome(&request.delivery, None);
                    request.settle(Outcome::Delivered {
                        status: answer.status,
                        latency,
                    });
                    let delivery = request.delivery.clone();
                    drop(request);
                    // The permits are held through the reply, as the first attempt's always were.
                    self.sink.handle(delivery, answer).await;
                    if replies {
                        store.reply_done(&id).await;
                    }
                    drop(permits);
                    return;
                }
                (result, Verdict::Retry(delay)) => {
                    store
                        .attempt(
                            &id,
                            record,
                            End::Retry {
                                after: delay,
                                lease,
                            },
                        )
                        .await;
                    Stats::inc(&self.stats.attempts_retry);
                    let what = match &result {
                        Ok(a) => format!("status={}", a.status),
                        Err(e) => format!("status=- error={:?}", e.to_string()),
                    };
                    info!(
                        "delivery {} attempt={attempt} {what} latency_ms={:.1} outcome=retry retry_in_ms={}",
                        request.delivery.log_fields(),
                        latency.as_secs_f64() * 1000.0,
                        delay.as_millis()
                    );
                    permits.clear();
                    if !self.wait_for_retry(&mut request, delay, &store).await {
                        return;
                    }
                    attempt += 1;
                }
                (result, verdict) => {
                    store.attempt(&id, record, End::Failed).await;
                    Stats::inc(&self.stats.attempts_failed);
                    let own;
                    let error = match (&result, verdict) {
                        (Err(e), _) => e,
                        (Ok(_), Verdict::Failed(e)) => {
                            own = e;
                            &own
                        }
                        (Ok(a), _) => {
                            own = DeliveryError::Status(a.status);
                            &own
                        }
                    };
                    self.note_outcome(&request.delivery, Some(&error.to_string()));
                    request.settle(Outcome::Failed { error, latency });
                    return;
                }
            }
        }
    }

    /// Waits `delay` before the next attempt of `request`; false (and `request` settled as
    /// dropped) when the backlog is full or the hook was disabled meanwhile.
    async fn wait_for_retry(
        &self,
        request: &mut DueRequest,
        delay: Duration,
        store: &Store,
    ) -> bool {
        let Some(_waiting) = self.wait_slot(request, store).await else {
            return false;
        };
        tokio::time::sleep(delay).await;
        let d = &request.delivery;
        if self.is_disabled(&d.hook.name(d.hook_index).to_string()) {
            let id = d.webhook_id.clone().unwrap_or_default();
            store.dropped(&id, "hook_disabled").await;
            request.settle(Outcome::Dropped {
                reason: "hook_disabled",
                error: None,
            });
            return false;
        }
        true
    }

    /// A place among the deliveries waiting in this process (`posthook_deliveries_pending`),
    /// or `None` (and `request` dropped) when `limits.max_pending_deliveries` already wait.
    async fn wait_slot(&self, request: &mut DueRequest, store: &Store) -> Option<Waiting<'_>> {
        let waiting = Waiting::new(&self.stats);
        if waiting.count <= self.max_pending as u64 {
            return Some(waiting);
        }
        let id = request.delivery.webhook_id.clone().unwrap_or_default();
        store.dropped(&id, "backlog_full").await;
        request.settle(Outcome::Dropped {
            reason: "backlog_full",
            error: Some("limits.max_pending_deliveries deliveries already wait"),
        });
        None
    }

    /// The permits the next attempt of `request` needs, taken in this order: the hook's own
    /// (`max_in_flight`; waiting for it counts as pending), one of the retry permits when it
    /// is `again` (a retry, or work claimed from the store), and a delivery permit. `None`
    /// (and `request` dropped) when one cannot be had.
    async fn take_permits(
        &self,
        request: &mut DueRequest,
        again: bool,
        store: &Store,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let mut permits = Vec::with_capacity(3);
        if let Some(gate) = self.hook_gate(&request.delivery) {
            let waiting = self.wait_slot(request, store).await?;
            let permit = gate.acquire_owned().await.ok();
            drop(waiting);
            permits.push(permit);
        }
        if again {
            permits.push(self.retry_permits.clone().acquire_owned().await.ok());
        }
        permits.push(self.delivery_permits.clone().acquire_owned().await.ok());
        let permits: Option<Vec<_>> = permits.into_iter().collect();
        if permits.is_none() {
            request.settle(Outcome::Dropped {
                reason: "no_capacity",
                error: None,
            });
        }
        permits
    }

    /// The permits of `d`'s hook when it has `max_in_flight`: one set per hook name, kept
    /// across reloads while the bound stays (a new bound starts a new set).
    fn hook_gate(&self, d: &Delivery) -> Option<Arc<tokio::sync::Semaphore>> {
        let bound = d.hook.sending.max_in_flight?;
        let name = d.hook.name(d.hook_index).to_string();
        let mut gates = self.hook_gates.lock().ok()?;
        let gate = gates
            .entry(name)
            .and_modify(|(b, g)| {
                if *b != bound {
                    *b = bound;
                    *g = Arc::new(tokio::sync::Semaphore::new(bound));
                }
            })
            .or_insert_with(|| (bound, Arc::new(tokio::sync::Semaphore::new(bound))));
        Some(gate.1.clone())
    }

    /// How long a delivery of this hook is leased: its deadline and the lease margin.
    pub(super) fn lease(&self, d: &Delivery) -> Duration {
        d.hook.sending.timeout.unwrap_or(self.default_timeout) + self.store_config.lease_margin
    }

    /// Disables the hook of `request` after a `410 Gone` (`status`) answer: logged once,
    /// counted in `posthook_hooks_disabled`, and written to the store (every process, and the
    /// next start, sees it) until `posthook hooks enable`; with the memory store, until a
    /// restart.
    fn disable(&self, request: &DueRequest, status: u16) {
        let d = &request.delivery;
        let name = d.hook.name(d.hook_index).to_string();
        let Ok(mut disabled) = self.disabled.lock() else {
            return;
        };
        if disabled.contains_key(&name) {
            return;
        }
        let reason = format!("answered {status} Gone from {}", d.callback_host);
        let until = if self.store().is_durable() {
            "until `posthook hooks enable` names it"
        } else {
            "until posthook restarts"
        };
        warn!("hook {name} disabled: {reason}; it fires nothing {until}");
        self.notify_disabled(d, &reason, until);
        disabled.insert(name.clone(), reason.clone());
        self.stats
            .hooks_disabled
            .store(disabled.len() as u64, Ordering::Relaxed);
        let store = self.store().clone();
        if store.is_durable() {
            tokio::spawn(async move { store.disable_hook(&name, &reason).await });
        }
    }

    /// Whether the hook named `name` was disabled.
    pub(super) fn is_disabled(&self, name: &str) -> bool {
        self.stats.hooks_disabled.load(Ordering::Relaxed) > 0
            && self.disabled.lock().is_ok_and(|d| d.contains_key(name))
    }

    /// Drops the matches of disabled hooks (nothing to do while none is).
    pub(super) fn drop_disabled(&self, live: &Live, matches: &mut Vec<Match<'_>>) {
        if self.stats.hooks_disabled.load(Ordering::Relaxed) == 0 {
            return;
        }
        matches.retain(|m| !self.is_disabled(&live.hooks[m.hook].name(m.hook).to_string()));
    }
}

/// The store's record of a new delivery.
pub(super) fn new_delivery(
    d: &Delivery,
    url_index: u32,
    body: &Bytes,
    event: Event,
    lease: Duration,
) -> NewDelivery {
    NewDelivery {
        id: d.webhook_id.clone().unwrap_or_default(),
        hook: d.hook.name(d.hook_index).to_string(),
        url_index,
        host: d.callback_host.clone(),
        content_type: d.hook.content_type,
        body: body.clone(),
        event,
        post_id: d.post.id.clone(),
        channel_id: d.post.channel_id.clone(),
        root_id: d.post.root_id.clone(),
        user_id: d.post.user_id.clone(),
        create_at: d.post.create_at,
        lease,
    }
}

/// A delivery this process is working on, in [`Shared::held`] while it lives.
struct Held<'a> {
    shared: &'a Shared,
    id: String,
}

impl<'a> Held<'a> {
    fn new(shared: &'a Shared, id: &str) -> Held<'a> {
        if let Ok(mut held) = shared.held.lock() {
            held.insert(id.to_string());
        }
        Held {
            shared,
            id: id.to_string(),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.shared.held.lock() {
            held.remove(&self.id);
        }
    }
}

/// One delivery counted in `posthook_deliveries_pending` while it lives.
struct Waiting<'a> {
    stats: &'a Stats,
    /// The count, this one included.
    count: u64,
}

impl<'a> Waiting<'a> {
    fn new(stats: &'a Stats) -> Waiting<'a> {
        let count = stats.deliveries_pending.fetch_add(1, Ordering::Relaxed) + 1;
        Waiting { stats, count }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.stats
            .deliveries_pending
            .fetch_sub(1, Ordering::Relaxed);
    }
}
