//! Stats: the counters every outcome is recorded in, so that nothing disappears silently.
//!
//! Plain atomics, readable by tests, logs and the Prometheus endpoint ([`crate::metrics`]).
//! Each callback request that a matching post makes due ends in exactly one of
//! `deliveries_delivered`, `deliveries_failed` or `deliveries_dropped` (the dispatcher's
//! `DueRequest` guard enforces it), so `due == delivered + failed + dropped` once nothing is
//! in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Process-wide counters. All fields count events since start.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// How long each delivery that was sent took, send to answer (or failure).
            pub delivery_duration: Histogram,
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
            pub delivery_duration: HistogramSnapshot,
        }

        impl Stats {
            /// Reads every counter (each atomically, not all at one instant).
            pub fn snapshot(&self) -> Snapshot {
                Snapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    delivery_duration: self.delivery_duration.snapshot(),
                }
            }
        }
    };
}

counters! {
    /// Posts created through posthook: `POST /api/v4/posts` exchanges that Mattermost
    /// answered 201, whether or not a hook could match them.
    posts_observed,
    /// Edits examined: `PUT /api/v4/posts/{id}` and `…/patch` exchanges that Mattermost
    /// answered 200 while some hook listed `edited` (otherwise edits are not looked at).
    edits_observed,
    /// Post bodies not inspected because they exceeded `max_inspected_body_bytes`.
    bodies_too_large,
    /// Created posts that could not be decoded or parsed.
    posts_unparsed,
    /// Jobs dropped before the dispatcher looked at them: the queue was full or closed, or
    /// they were still queued when the dispatcher stopped at shutdown.
    jobs_dropped,
    /// Posts skipped because posthook itself created them.
    own_posts_skipped,
    /// Posts skipped as a repeat of an already handled post id (an edit: of an already
    /// handled post id and `edit_at`).
    duplicate_posts_skipped,
    /// Posts in a channel type no enabled hook fires in (by default: not public).
    non_public_skipped,
    /// Hook matches (one per hook per post).
    hook_matches,
    /// Callback requests that became due.
    deliveries_due,
    /// Callback requests that got an answer (any status).
    deliveries_delivered,
    /// Callback requests that failed (refused, timed out, connection errors).
    deliveries_failed,
    /// Of `deliveries_failed`: refused by the address guard, so never sent (or, on a
    /// redirect to a refused address, not followed).
    deliveries_refused,
    /// Callback requests never sent (look-up failed, no capacity) or cut off in flight
    /// (cancelled at shutdown, panic).
    deliveries_dropped,
    /// Webhook answers that posted a reply (one per answer, however many parts).
    replies_posted,
    /// Attempts of callback requests, by how each ended: the last of a delivered request, one
    /// that will be tried again, the last of a failed one.
    attempts_delivered,
    attempts_retry,
    attempts_failed,
    /// Gauge: deliveries waiting for a retry.
    deliveries_pending,
    /// Gauge: hooks disabled by a `410 Gone` answer.
    hooks_disabled,
    /// Store operations that failed (writes, claims, reads).
    store_errors,
    /// Deliveries sent without having been written to the store (it failed or was slow).
    deliveries_undurable,
    /// `notify` direct messages sent, and those that could not be.
    notifications_sent,
    notifications_failed,
    /// Webhook answers whose reply could not be decoded, built or posted.
    replies_failed,
    /// Webhook answers that asked for no reply.
    replies_none,
    /// Look-ups requested (channel, team, user, me; each id of a batched user look-up).
    lookups,
    /// Requests sent to the upstream for look-ups (a batched user look-up is one).
    lookup_requests,
    /// Look-ups that failed (with or without a request of their own).
    lookup_failures,
    /// Look-ups answered without a request of their own that succeeded: from the cache, or
    /// by joining an identical request already in flight.
    lookup_cache_hits,
    /// Hook names (`team`, `channel`) that did not resolve, one per name per attempt.
    name_failures,
    /// Client connections open now (a level, not a total: up one when accepted, down one
    /// when closed).
    connections_open,
    /// Client connections closed at once because `limits.max_connections` were open.
    connections_refused,
    /// Client connections closed because their request head was not complete within
    /// `server.header_timeout_seconds`.
    header_timeouts,
    /// Client connections closed after waiting `server.keepalive_timeout_seconds` for their
    /// next request.
    keepalive_timeouts,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Upper bounds of the delivery-duration buckets, from 5 ms to 30 s (Mattermost's default
/// whole-request timeout); durations above the last fall in `+Inf` only.
pub const DURATION_BUCKETS: [Duration; 12] = [
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// A fixed-bucket duration histogram on atomics (Prometheus semantics: `le` is inclusive).
///
/// Each slot counts the observations of its own bucket only; [`HistogramSnapshot`] makes them
/// cumulative. The last slot is the overflow above the largest bound.
#[derive(Debug, Default)]
pub struct Histogram {
    slots: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let slot = DURATION_BUCKETS
            .iter()
            .position(|b| d <= *b)
            .unwrap_or(DURATION_BUCKETS.len());
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Reads the histogram (each slot atomically, not all at one instant).
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            slots: std::array::from_fn(|i| self.slots[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per-bucket (not cumulative) counts; the last is above every bound.
    pub slots: [u64; DURATION_BUCKETS.len() + 1],
    /// Sum of all observations, in nanoseconds.
    pub sum_nanos: u64,
}

impl HistogramSnapshot {
    /// Observations in total (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.slots.iter().sum()
    }

    /// `(upper bound, cumulative count)` per bucket, `None` standing for `+Inf`.
    pub fn cumulative(&self) -> Vec<(Option<Duration>, u64)> {
        let mut total = 0;
        self.slots
            .iter()
            .enumerate()
            .map(|(i, n)| {
                total += n;
                (DURATION_BUCKETS.get(i).copied(), total)
            })
            .collect()
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::default();
        for ms in [1, 5, 6, 10, 2500, 30_000, 31_000] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 7);
        let c = s.cumulative();
        assert_eq!(c.len(), DURATION_BUCKETS.len() + 1);
        assert_eq!(
            c[0],
            (Some(Duration::from_millis(5)), 2),
            "5 ms is in le=0.005"
        );
        assert_eq!(c[1], (Some(Duration::from_millis(10)), 4));
        assert_eq!(c[8], (Some(Duration::from_millis(2500)), 5));
        assert_eq!(
            c[11],
            (Some(Duration::from_secs(30)), 6),
            "30 s is in le=30"
        );
        assert_eq!(c[12], (None, 7), "+Inf holds everything");
        assert_eq!(s.sum_nanos, 63_522 * 1_000_000);
    }
}
