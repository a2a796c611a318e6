//! Stats: the counters every outcome is recorded in, so that nothing disappears silently.
//!
//! Plain atomics, readable by tests, logs and (later) the Prometheus endpoint. Each callback
//! request that a matching post makes due ends in exactly one of `deliveries_delivered`,
//! `deliveries_failed` or `deliveries_dropped`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Process-wide counters. All fields count events since start.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Reads every counter (each atomically, not all at one instant).
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// `POST /api/v4/posts` exchanges whose 201 posthook saw.
    posts_observed,
    /// Post bodies not inspected because they exceeded `max_inspected_body_bytes`.
    bodies_too_large,
    /// Created posts that could not be decoded or parsed.
    posts_unparsed,
    /// Jobs dropped because the dispatch queue was full.
    jobs_dropped,
    /// Posts skipped because posthook itself created them.
    own_posts_skipped,
    /// Posts skipped as a repeat of an already handled post id.
    duplicate_posts_skipped,
    /// Posts whose channel was not public.
    non_public_skipped,
    /// Hook matches (one per hook per post).
    hook_matches,
    /// Callback requests that became due.
    deliveries_due,
    /// Callback requests that got an answer (any status).
    deliveries_delivered,
    /// Callback requests that failed (refused, timed out, connection errors).
    deliveries_failed,
    /// Callback requests never sent (look-up failed, shutdown, no capacity).
    deliveries_dropped,
    /// Webhook answers that posted a reply (one per answer, however many parts).
    replies_posted,
    /// Webhook answers whose reply could not be decoded, built or posted.
    replies_failed,
    /// Webhook answers that asked for no reply.
    replies_none,
    /// Look-ups requested (channel, team, user, me).
    lookups,
    /// Look-ups that went to the upstream.
    lookup_requests,
    /// Look-ups that failed.
    lookup_failures,
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
