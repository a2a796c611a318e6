//! Did every matching post reach the sink exactly once and get its reply, and how fast: joins
//! the stand-in's records by post, and counts posthook's own outcome lines in its log, so the
//! report can set what posthook says beside what the sink saw.

use std::collections::HashMap;
use std::io::{self, Read, Seek};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::upstream::Upstream;

#[derive(Default, Clone, Copy, Debug)]
pub struct LogCounts {
    pub delivered: u64,
    pub delivery_failed: u64,
    pub replies_posted: u64,
    pub reply_failed: u64,
    pub queue_drops: u64,
    /// Attempts that failed and were scheduled again (`outcome=retry`).
    pub retries: u64,
    pub other_warn: u64,
    errors: u64,
}

impl LogCounts {
    fn add(&mut self, o: &LogCounts) {
        self.delivered += o.delivered;
        self.delivery_failed += o.delivery_failed;
        self.replies_posted += o.replies_posted;
        self.reply_failed += o.reply_failed;
        self.queue_drops += o.queue_drops;
        self.retries += o.retries;
        self.other_warn += o.other_warn;
        self.errors += o.errors;
    }
}

/// Counts posthook's outcome log lines written since `offset` (env_logger's default format).
pub fn read_log(path: &Path, offset: &mut u64) -> LogCounts {
    let mut c = LogCounts::default();
    let Ok(mut f) = std::fs::File::open(path) else {
        return c;
    };
    if f.seek(io::SeekFrom::Start(*offset)).is_err() {
        return c;
    }
    let mut data = Vec::new();
    let _ = f.read_to_end(&mut data);
    // Only whole lines; a line being written is read next time.
    let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
        return c;
    };
    *offset += end as u64 + 1;
    for line in String::from_utf8_lossy(&data[..=end]).lines() {
        if line.contains("outcome=delivered") {
            c.delivered += 1;
        } else if line.contains("outcome=retry") {
            c.retries += 1;
        } else if line.contains("] delivery ") && line.contains("outcome=failed") {
            c.delivery_failed += 1;
        } else if line.contains("outcome=posted") {
            c.replies_posted += 1;
        } else if line.contains("] reply ") && line.contains("outcome=failed") {
            c.reply_failed += 1;
        } else if let Some(at) = line.find("): dropped ") {
            // One line per second at most, with the count since the previous one.
            let n = line[at + "): dropped ".len()..]
                .split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(1);
            c.queue_drops += n;
        } else if line.contains(" WARN ") {
            c.other_warn += 1;
        } else if line.contains(" ERROR ") {
            c.errors += 1;
        }
    }
    c
}

#[derive(Default, Clone)]
pub struct Deliveries {
    pub expected: u64,
    pub delivered: u64,
    pub replied: u64,
    pub duplicates: u64,
    pub unknown: u64,
    pub delivery_lat: Vec<u64>,
    pub reply_lat: Vec<u64>,
    pub log: LogCounts,
    pub drain: Duration,
}

impl Deliveries {
    pub fn add(&mut self, o: Deliveries) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.replied += o.replied;
        self.duplicates += o.duplicates;
        self.unknown += o.unknown;
        self.delivery_lat.extend(o.delivery_lat);
        self.reply_lat.extend(o.reply_lat);
        self.log.add(&o.log);
        self.drain = self.drain.max(o.drain);
    }

    pub fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }
}

pub fn clear_records(up: &Upstream) {
    up.created.lock().unwrap().clear();
    up.sink.lock().unwrap().clear();
    up.replies.lock().unwrap().clear();
}

/// Waits until every matching post created since the last `clear_records` reached the sink
/// and got its reply (or nothing moved for `stall`), then joins the records by post.
/// Latencies only for posts created at or after `from_ns` (the warm-up is not counted).
pub fn collect_deliveries(up: &Upstream, from_ns: u64, stall: Duration) -> Deliveries {
    let started = Instant::now();
    let mut last = (usize::MAX, usize::MAX);
    let mut last_change = Instant::now();
    loop {
        let c = up.created.lock().unwrap().len();
        let s = up.sink.lock().unwrap().len();
        let r = up.replies.lock().unwrap().len();
        if s >= c && r >= c {
            break;
        }
        if (s, r) != last {
            last = (s, r);
            last_change = Instant::now();
        } else if last_change.elapsed() > stall {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let drain = started.elapsed();
    let created = std::mem::take(&mut *up.created.lock().unwrap());
    let sink = std::mem::take(&mut *up.sink.lock().unwrap());
    let replies = std::mem::take(&mut *up.replies.lock().unwrap());
    let created: HashMap<u64, u64> = created.into_iter().collect();
    let mut d = Deliveries {
        expected: created.len() as u64,
        drain,
        ..Default::default()
    };
    let mut answered: HashMap<u64, u64> = HashMap::new();
    for (seq, received, answered_at) in sink {
        let Some(&t201) = created.get(&seq) else {
            d.unknown += 1;
            continue;
        };
        if answered.insert(seq, answered_at).is_some() {
            d.duplicates += 1;
            continue;
        }
        d.delivered += 1;
        if t201 >= from_ns {
            d.delivery_lat.push(received.saturating_sub(t201));
        }
    }
    for (seq, received) in replies {
        if let Some(&answered_at) = answered.get(&seq) {
            d.replied += 1;
            if created.get(&seq).is_some_and(|&t| t >= from_ns) {
                d.reply_lat.push(received.saturating_sub(answered_at));
            }
        }
    }
    d
}
