//! Send: the attempts of one callback request, from the first to its end, and the hooks a
//! `410 Gone` disabled.
//!
//! The first attempt goes out at once. For a hook with `retry`, the verdict on each attempt
//! ([`super::retry`]) says whether to try again; a waiting delivery holds no permit, only its
//! body, and counts in `posthook_deliveries_pending` (at most `limits.max_pending_deliveries`:
//! beyond it, a delivery that would wait is dropped). Retry attempts take one of the retry
//! permits (half of the delivery permits) besides a delivery permit, so that a dead endpoint
//! never starves fresh posts. Nothing here survives a restart (the store is memory).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{info, warn};
use tokio::sync::OwnedSemaphorePermit;

use super::due::{DueRequest, Outcome};
use super::retry::{self, Verdict};
use super::Shared;
use crate::live::Live;
use crate::rules::Match;
use crate::stats::Stats;
use crate::webhook::DeliveryError;

impl Shared {
    /// Sends `request` — and tries again as the verdicts say — then hands the answer to the
    /// sink. `permits` are the ones its first attempt holds.
    pub(super) async fn deliver(
        self: Arc<Self>,
        mut request: DueRequest,
        url: url::Url,
        body: Bytes,
        mut permits: Vec<OwnedSemaphorePermit>,
    ) {
        let mut attempt = 1u32;
        loop {
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
            match (result, verdict) {
                (Ok(answer), Verdict::Delivered) => {
                    Stats::inc(&self.stats.attempts_delivered);
                    request.settle(Outcome::Delivered {
                        status: answer.status,
                        latency,
                    });
                    let delivery = request.delivery.clone();
                    drop(request);
                    // The permits are held through the reply, as the first attempt's always were.
                    self.sink.handle(delivery, answer).await;
                    drop(permits);
                    return;
                }
                (result, Verdict::Retry(delay)) => {
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
                    match self.wait_for_retry(&mut request, delay).await {
                        Some(p) => permits = p,
                        None => return,
                    }
                    attempt += 1;
                }
                (result, verdict) => {
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
                    request.settle(Outcome::Failed { error, latency });
                    return;
                }
            }
        }
    }

    /// Waits `delay` before the next attempt of `request`, then takes its permits; `None`
    /// (and `request` settled as dropped) when the backlog is full, the hook was disabled
    /// meanwhile, or the permits are gone.
    async fn wait_for_retry(
        &self,
        request: &mut DueRequest,
        delay: Duration,
    ) -> Option<Vec<OwnedSemaphorePermit>> {
        let waiting = Waiting::new(&self.stats);
        if waiting.count > self.max_pending as u64 {
            request.settle(Outcome::Dropped {
                reason: "backlog_full",
                error: Some("limits.max_pending_deliveries deliveries already wait for a retry"),
            });
            return None;
        }
        tokio::time::sleep(delay).await;
        if self.is_disabled(
            &request
                .delivery
                .hook
                .name(request.delivery.hook_index)
                .to_string(),
        ) {
            request.settle(Outcome::Dropped {
                reason: "hook_disabled",
                error: None,
            });
            return None;
        }
        let retry = self.retry_permits.clone().acquire_owned().await.ok();
        let delivery = self.delivery_permits.clone().acquire_owned().await.ok();
        drop(waiting);
        match (retry, delivery) {
            (Some(r), Some(d)) => Some(vec![r, d]),
            _ => {
                request.settle(Outcome::Dropped {
                    reason: "no_capacity",
                    error: None,
                });
                None
            }
        }
    }

    /// Disables the hook of `request` after a `410 Gone` (`status`) answer: logged once,
    /// counted in `posthook_hooks_disabled`, until a restart.
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
        warn!("hook {name} disabled: {reason}; it fires nothing until posthook restarts");
        disabled.insert(name, reason);
        self.stats
            .hooks_disabled
            .store(disabled.len() as u64, Ordering::Relaxed);
    }

    /// Whether the hook named `name` was disabled.
    fn is_disabled(&self, name: &str) -> bool {
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
