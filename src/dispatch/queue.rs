//! The queue between the proxy and the dispatcher: bounded, never waited on by the proxy.
//!
//! [`DispatchHandle::submit`] queues a job or drops it at once (counted in
//! `posthook_jobs_dropped_total`, logged at most once a second); jobs still queued when the
//! dispatcher stops are counted the same way. Jobs are counted as pending from submission until
//! the dispatcher is done with them, so that a graceful shutdown can wait for exactly that.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::warn;
use tokio::sync::mpsc;

use crate::config::Event;
use crate::stats::Stats;

/// A bounded queue of `capacity` jobs: the proxy's handle and the dispatcher's end.
pub(super) fn bounded(capacity: usize, stats: Arc<Stats>) -> (DispatchHandle, QueueEnd) {
    let (tx, rx) = mpsc::channel(capacity);
    let pending_jobs = Arc::new(AtomicUsize::new(0));
    let handle = DispatchHandle {
        tx,
        stats: stats.clone(),
        pending_jobs: pending_jobs.clone(),
        drops: Arc::new(DropLog::new(Duration::from_secs(1))),
    };
    let end = QueueEnd {
        rx,
        stats,
        pending_jobs,
    };
    (handle, end)
}

/// How the upstream encoded the body of its 201.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Gzip,
    Deflate,
}

/// A created (201) or edited (200) post seen by the proxy, not yet decoded.
#[derive(Debug)]
pub struct Job {
    /// Which exchange the body answers: a new post or an edit.
    pub event: Event,
    /// The upstream's response body exactly as received (all of it, or the part read).
    pub body: Bytes,
    pub encoding: BodyEncoding,
    /// The whole body was read; otherwise the post is recovered by its id.
    pub complete: bool,
}

/// The proxy's side of the queue. Cheap to clone.
#[derive(Clone)]
pub struct DispatchHandle {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    pending_jobs: Arc<AtomicUsize>,
    drops: Arc<DropLog>,
}

/// Logs dropped posts at most once a second, with the count since the last line:
/// a dead webhook fills the queue and then every post is dropped, which at one line each
/// wrote over 10 000 lines per second. The exact count is `posthook_jobs_dropped_total`.
struct DropLog {
    every_ms: u64,
    started: Instant,
    /// Milliseconds after `started` of the last line, `u64::MAX` before the first.
    last_ms: AtomicU64,
    /// Drops not yet in a line.
    unlogged: AtomicU64,
}

impl DropLog {
    fn new(every: Duration) -> DropLog {
        DropLog {
            every_ms: every.as_millis() as u64,
            started: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Counts one drop; logs the drops so far (and returns how many) when no line was written
    /// for the interval.
    fn note(&self, reason: &dyn fmt::Display) -> Option<u64> {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != u64::MAX && now < last.saturating_add(self.every_ms) {
            return None;
        }
        // One caller wins the line; the others' drops go into the next one.
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        let n = self.unlogged.swap(0, Ordering::Relaxed);
        (n > 0).then(|| {
            warn!(
                "webhook queue full or closed ({reason}): dropped {n} created post(s) since the last such line (at most one line per second; all are counted in posthook_jobs_dropped_total)"
            );
            n
        })
    }
}

/// Decrements the pending-job count when a job is done, however it ends.
pub(super) struct PendingJob(Arc<AtomicUsize>);

impl Drop for PendingJob {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads how many jobs wait in the dispatch queue, without keeping the queue open.
#[derive(Clone)]
pub struct QueueGauge {
    tx: mpsc::WeakSender<Job>,
    capacity: usize,
}

impl QueueGauge {
    /// Jobs queued and not yet taken by the dispatcher (0 once the queue is gone).
    pub fn depth(&self) -> usize {
        self.tx
            .upgrade()
            .map_or(0, |tx| tx.max_capacity().saturating_sub(tx.capacity()))
    }

    /// The queue's bound (`limits.queue_capacity`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl DispatchHandle {
    /// Queues `job` without waiting; a full or closed queue drops it (counted and logged).
    pub fn submit(&self, job: Job) {
        // Counted before it is visible to the dispatcher, so the count never dips below zero.
        self.pending_jobs.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.tx.try_send(job) {
            self.pending_jobs.fetch_sub(1, Ordering::SeqCst);
            Stats::inc(&self.stats.jobs_dropped);
            self.drops.note(&e);
        }
    }

    /// A gauge on this queue's depth, for the metrics endpoint.
    pub fn queue_gauge(&self) -> QueueGauge {
        QueueGauge {
            tx: self.tx.downgrade(),
            capacity: self.tx.max_capacity(),
        }
    }
}

/// The dispatcher's end of the queue. Jobs still queued when it is dropped (the dispatcher
/// stopping at shutdown) never became due; they are counted in `jobs_dropped` and logged.
pub(super) struct QueueEnd {
    rx: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
    pending_jobs: Arc<AtomicUsize>,
}

impl QueueEnd {
    /// The next job, counted as pending until the returned guard is dropped; `None` once the
    /// queue is closed and empty.
    pub(super) async fn next(&mut self) -> Option<(Job, PendingJob)> {
        let job = self.rx.recv().await?;
        Some((job, PendingJob(self.pending_jobs.clone())))
    }

    /// The count of jobs submitted and not yet done (queued or being processed).
    pub(super) fn pending_jobs(&self) -> Arc<AtomicUsize> {
        self.pending_jobs.clone()
    }
}

impl Drop for QueueEnd {
    fn drop(&mut self) {
        self.rx.close();
        let mut abandoned = 0u64;
        while self.rx.try_recv().is_ok() {
            abandoned += 1;
        }
        if abandoned > 0 {
            self.pending_jobs
                .fetch_sub(abandoned as usize, Ordering::SeqCst);
            Stats::add(&self.stats.jobs_dropped, abandoned);
            warn!("dispatcher stopped with {abandoned} created post(s) still queued; not examined");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_logged_at_most_once_per_interval_and_none_is_lost() {
        let log = DropLog::new(Duration::from_millis(200));
        let reason = "no available capacity";
        // The first drop is logged at once.
        assert_eq!(log.note(&reason), Some(1));
        // A burst within the interval writes no line.
        let burst: Vec<Option<u64>> = (0..10_000).map(|_| log.note(&reason)).collect();
        assert!(
            burst.iter().all(Option::is_none),
            "a line within the interval"
        );
        std::thread::sleep(Duration::from_millis(250));
        // The next drop after the interval reports the burst and itself.
        assert_eq!(log.note(&reason), Some(10_001));
        assert_eq!(log.note(&reason), None);
    }

    #[test]
    fn queue_gauge_reads_the_depth_and_abandoned_jobs_are_counted() {
        let stats = Arc::new(Stats::default());
        let (handle, end) = bounded(4, stats.clone());
        let pending = end.pending_jobs();
        let gauge = handle.queue_gauge();
        assert_eq!((gauge.depth(), gauge.capacity()), (0, 4));
        for _ in 0..3 {
            handle.submit(Job {
                event: Event::Posted,
                body: Bytes::new(),
                encoding: BodyEncoding::Identity,
                complete: true,
            });
        }
        assert_eq!(gauge.depth(), 3);
        assert_eq!(pending.load(Ordering::SeqCst), 3, "pending while queued");
        drop(end);
        assert_eq!(stats.snapshot().jobs_dropped, 3, "still queued at the end");
        assert_eq!(pending.load(Ordering::SeqCst), 0, "no longer pending");
        drop(handle);
        assert_eq!(gauge.depth(), 0, "the gauge does not keep the queue alive");
    }
}
