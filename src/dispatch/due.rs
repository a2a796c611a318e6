//! Due requests: the exactly-once accounting of every callback request.
//!
//! A [`DueRequest`] counts one request as due when it is created and ends it exactly once as
//! delivered, failed or dropped, with one log line in the `delivery hook=… outcome=…` format.
//! Dropping one unsettled (an early return, a panic, or its task being cancelled when the
//! runtime ends at shutdown) counts and logs it as dropped, so the identity
//! `due == delivered + failed + dropped` holds whenever nothing is in flight.

use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};

use crate::stats::Stats;
use crate::webhook::{Delivery, DeliveryError};

/// How a due callback request ended.
pub(super) enum Outcome<'a> {
    /// An answer arrived (any status).
    Delivered { status: u16, latency: Duration },
    /// Sent (or refused by the address guard) and failed.
    Failed {
        error: &'a DeliveryError,
        latency: Duration,
    },
    /// Never sent, or cut off in flight (its task cancelled at shutdown).
    Dropped {
        reason: &'static str,
        error: Option<&'a str>,
    },
}

/// One callback request that became due; see the module's "Accounting" paragraph.
pub(super) struct DueRequest {
    pub(super) delivery: Delivery,
    stats: Arc<Stats>,
    settled: bool,
}

impl DueRequest {
    /// Counts a new due request.
    pub(super) fn new(delivery: Delivery, stats: Arc<Stats>) -> DueRequest {
        Stats::inc(&stats.deliveries_due);
        DueRequest {
            delivery,
            stats,
            settled: false,
        }
    }

    /// Counts and logs how the request ended; only the first call counts.
    pub(super) fn settle(&mut self, outcome: Outcome<'_>) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let stats = &self.stats;
        let fields = self.delivery.log_fields();
        // The duration goes in before the outcome counter, so whoever sees the outcome
        // counted also sees its duration.
        match outcome {
            Outcome::Delivered { status, latency } => {
                stats.delivery_duration.observe(latency);
                Stats::inc(&stats.deliveries_delivered);
                info!(
                    "delivery {fields} status={status} latency_ms={:.1} outcome=delivered",
                    millis(latency)
                );
            }
            Outcome::Failed { error, latency } => {
                if matches!(error, DeliveryError::Refused(_)) {
                    Stats::inc(&stats.deliveries_refused);
                } else {
                    stats.delivery_duration.observe(latency);
                }
                Stats::inc(&stats.deliveries_failed);
                warn!(
                    "delivery {fields} status=- latency_ms={:.1} outcome=failed error={:?}",
                    millis(latency),
                    error.to_string()
                );
            }
            Outcome::Dropped { reason, error } => {
                Stats::inc(&stats.deliveries_dropped);
                match error {
                    Some(e) => warn!(
                        "delivery {fields} status=- latency_ms=- outcome=dropped reason={reason} error={e:?}"
                    ),
                    None => warn!(
                        "delivery {fields} status=- latency_ms=- outcome=dropped reason={reason}"
                    ),
                }
            }
        }
    }
}

impl Drop for DueRequest {
    fn drop(&mut self) {
        if !self.settled {
            // Unwinding from a panic, or the task was dropped: at shutdown, the runtime ending.
            let reason = if std::thread::panicking() {
                "panic"
            } else {
                "cancelled"
            };
            self.settle(Outcome::Dropped {
                reason,
                error: None,
            });
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_request_ends_exactly_once_even_when_dropped_unsettled() {
        let stats = Arc::new(Stats::default());
        let mut d = DueRequest::new(Delivery::sample(), stats.clone());
        d.settle(Outcome::Delivered {
            status: 200,
            latency: Duration::from_millis(20),
        });
        d.settle(Outcome::Dropped {
            reason: "again",
            error: None,
        });
        drop(d);
        // Left unsettled: an early return, or a task cancelled when the runtime ends.
        drop(DueRequest::new(Delivery::sample(), stats.clone()));
        let refused = DeliveryError::Refused("127.0.0.1 is internal".into());
        DueRequest::new(Delivery::sample(), stats.clone()).settle(Outcome::Failed {
            error: &refused,
            latency: Duration::from_millis(1),
        });
        let timeout = DeliveryError::Timeout(Duration::from_secs(30));
        DueRequest::new(Delivery::sample(), stats.clone()).settle(Outcome::Failed {
            error: &timeout,
            latency: Duration::from_secs(30),
        });
        let s = stats.snapshot();
        assert_eq!(s.deliveries_due, 4);
        assert_eq!(
            s.deliveries_delivered, 1,
            "the second settle does not count"
        );
        assert_eq!(s.deliveries_dropped, 1, "dropped unsettled");
        assert_eq!(s.deliveries_failed, 2);
        assert_eq!(s.deliveries_refused, 1);
        assert_eq!(
            s.delivery_duration.count(),
            2,
            "timed: the delivered one and the timed-out one, not the refused one"
        );
    }
}
