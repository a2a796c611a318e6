//! The bench's time: `now_ns`, one monotonic clock that every latency is computed from, and
//! `unix_ms`, the wall-clock milliseconds that Mattermost's posts carry.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the bench started: one clock for the load generator, the upstream and
/// the sink, which all live in this process.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
