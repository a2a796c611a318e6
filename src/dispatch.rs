//! Dispatch: the background service that turns an observed 201 into webhook deliveries.
//!
//! The proxy hands over the raw (possibly compressed) body of the created post with
//! [`DispatchHandle::submit`], which never waits: the queue is bounded and a full queue drops
//! the job (counted, logged). The service then, off the request path: decodes and parses the
//! post, skips repeats and posthook's own posts, checks the hook index, looks up the channel
//! (public only), its team and the author, and sends one request per matching hook per callback
//! URL, all concurrently under a global bound. Each answer is handed to an [`AnswerSink`]
//! (the reply poster).
//!
//! Accounting: every callback request that becomes due is a `DueRequest`, which counts it
//! due when created and ends it exactly once as delivered, failed or dropped, with one log
//! line. Dropping one unsettled (an early return, a panic, or its task being cancelled when
//! the runtime ends at shutdown) counts and logs it as dropped, so the identity
//! `due == delivered + failed + dropped` holds whenever nothing is in flight. What cannot be
//! counted: a process killed outright (SIGKILL, abort). And what is counted while the
//! runtimes stop at shutdown reaches the logs but no scrape: the metrics endpoint stops with
//! them.

use std::fmt;
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use log::{debug, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;
use tokio::sync::{mpsc, Mutex, Semaphore};

use crate::config::{Config, HookConfig};
use crate::live::{Live, LiveConfig};
use crate::mattermost::MattermostClient;
use crate::rules::HookIndex;
use crate::stats::Stats;
use crate::webhook::{DeliveryError, Payload, WebhookAnswer, WebhookClient};

/// How the upstream encoded the body of its 201.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Gzip,
    Deflate,
}

/// A created post seen by the proxy, not yet decoded.
#[derive(Debug)]
pub struct Job {
    /// The upstream's response body exactly as received (all of it, or the part read).
    pub body: Bytes,
    pub encoding: BodyEncoding,
    /// The whole body was read; otherwise the post is recovered by its id.
    pub complete: bool,
}

/// The created post, as Mattermost's 201 returns it (only what webhooks use).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreatedPost {
    pub id: String,
    #[serde(default)]
    pub create_at: i64,
    #[serde(default)]
    pub user_id: String,
    pub channel_id: String,
    #[serde(default)]
    pub root_id: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub file_ids: Option<Vec<String>>,
    /// Only `props.from_webhook` matters here; everything else in `props` is skipped
    /// without being built, so deep nesting (Go accepts 10 000 levels) cannot fail the parse.
    #[serde(default)]
    pub props: Option<PostProps>,
}

/// The part of a post's `props` that posthook reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PostProps {
    /// `props.from_webhook == "true"` (the string; any other value is false).
    #[serde(default)]
    pub from_webhook: StringIsTrue,
}

/// A JSON value that is true only when it is the string `"true"`; any other value is skipped
/// without being built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StringIsTrue(pub bool);

impl<'de> Deserialize<'de> for StringIsTrue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringIsTrue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(v == "true"))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_unit<E>(self) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_none<E>(self) -> Result<StringIsTrue, E> {
                Ok(StringIsTrue(false))
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<StringIsTrue, D::Error> {
                StringIsTrue::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StringIsTrue, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(StringIsTrue(false))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StringIsTrue, A::Error> {
                while a
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(StringIsTrue(false))
            }
        }
        d.deserialize_any(V)
    }
}

impl CreatedPost {
    fn has_from_webhook_prop(&self) -> bool {
        self.props.as_ref().is_some_and(|p| p.from_webhook.0)
    }
}

/// One webhook request that got an answer, with what a reply needs to know.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub post: Arc<CreatedPost>,
    pub hook_index: usize,
    pub hook: Arc<HookConfig>,
    pub callback_host: String,
}

impl Delivery {
    /// `hook=0 name="Build" post=… host=…`: the fields that open every delivery and reply
    /// log line. Only the callback's host is ever shown, never its URL (a query may carry a
    /// secret), and never the hook's token.
    pub fn log_fields(&self) -> LogFields<'_> {
        LogFields(self)
    }
}

/// See [`Delivery::log_fields`].
pub struct LogFields<'a>(&'a Delivery);

impl fmt::Display for LogFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "hook={} name={:?} post={} host={}",
            d.hook_index, d.hook.display_name, d.post.id, d.callback_host
        )
    }
}

/// How a due callback request ended.
enum Outcome<'a> {
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
struct DueRequest {
    delivery: Delivery,
    stats: Arc<Stats>,
    settled: bool,
}

impl DueRequest {
    /// Counts a new due request.
    fn new(delivery: Delivery, stats: Arc<Stats>) -> DueRequest {
        Stats::inc(&stats.deliveries_due);
        DueRequest {
            delivery,
            stats,
            settled: false,
        }
    }

    /// Counts and logs how the request ended; only the first call counts.
    fn settle(&mut self, outcome: Outcome<'_>) {
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
            delivery.hook_index,
            answer.status,
            answer.body.len()
        );
        Box::pin(async {})
    }
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

/// Tells whether the dispatcher is idle: no job queued or being processed, and no delivery
/// (or its reply) in flight. Used to end a graceful shutdown as soon as the work is done.
#[derive(Clone)]
pub struct IdleProbe {
    shared: Arc<Shared>,
}

impl IdleProbe {
    /// True when no job and no delivery is pending.
    pub fn is_idle(&self) -> bool {
        self.shared.pending_jobs.load(Ordering::SeqCst) == 0
            && self.shared.delivery_permits.available_permits()
                == self.shared.max_concurrent_deliveries
    }
}

/// Decrements the pending-job count when a job is done, however it ends.
struct PendingJob(Arc<AtomicUsize>);

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
struct QueueEnd {
    rx: mpsc::Receiver<Job>,
    stats: Arc<Stats>,
    pending_jobs: Arc<AtomicUsize>,
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

/// The background dispatcher service.
pub struct Dispatcher {
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    shared: Arc<Shared>,
}

struct Shared {
    live: LiveConfig,
    mm: MattermostClient,
    stats: Arc<Stats>,
    /// Jobs submitted and not yet fully processed (queued or being looked up and matched).
    pending_jobs: Arc<AtomicUsize>,
    max_concurrent_deliveries: usize,
    max_decoded: usize,
    job_permits: Arc<Semaphore>,
    delivery_permits: Arc<Semaphore>,
    seen: moka::future::Cache<String, ()>,
    sink: Arc<dyn AnswerSink>,
}

impl Dispatcher {
    /// Builds the dispatcher and the handle the proxy submits to, with a fixed set of hooks
    /// (`index` must be compiled from `config.hooks`).
    pub fn new(
        config: &Config,
        index: Arc<HookIndex>,
        mm: MattermostClient,
        webhooks: WebhookClient,
        stats: Arc<Stats>,
        sink: Arc<dyn AnswerSink>,
    ) -> (Dispatcher, DispatchHandle) {
        let live = Live {
            hooks: config.hooks.iter().cloned().map(Arc::new).collect(),
            index: Arc::unwrap_or_clone(index),
            webhooks,
            reply: crate::reply::ReplySettings {
                enable_post_username_override: config.settings.enable_post_username_override,
                enable_post_icon_override: config.settings.enable_post_icon_override,
                max_post_size: config.settings.max_post_size,
            },
        };
        Dispatcher::with_live(config, live.shared(), mm, stats, sink)
    }

    /// Builds the dispatcher on a swappable snapshot of the hooks (see [`crate::live`]).
    pub fn with_live(
        config: &Config,
        live: LiveConfig,
        mm: MattermostClient,
        stats: Arc<Stats>,
        sink: Arc<dyn AnswerSink>,
    ) -> (Dispatcher, DispatchHandle) {
        let (tx, rx) = mpsc::channel(config.limits.queue_capacity);
        let pending_jobs = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            live,
            mm,
            stats: stats.clone(),
            pending_jobs: pending_jobs.clone(),
            max_concurrent_deliveries: config.limits.max_concurrent_deliveries,
            max_decoded: config.limits.max_decoded_body_bytes,
            job_permits: Arc::new(Semaphore::new(config.limits.max_concurrent_jobs)),
            delivery_permits: Arc::new(Semaphore::new(config.limits.max_concurrent_deliveries)),
            // Mattermost answers a retried post (same pending_post_id) with the same post: fire once.
            seen: moka::future::Cache::builder()
                .max_capacity(config.limits.queue_capacity.max(10_000) as u64)
                .time_to_live(Duration::from_secs(300))
                .build(),
            sink,
        };
        (
            Dispatcher {
                rx: Mutex::new(Some(rx)),
                shared: Arc::new(shared),
            },
            DispatchHandle {
                tx,
                stats,
                pending_jobs,
                drops: Arc::new(DropLog::new(Duration::from_secs(1))),
            },
        )
    }

    /// A probe telling whether the dispatcher has nothing left to do.
    pub fn idle_probe(&self) -> IdleProbe {
        IdleProbe {
            shared: self.shared.clone(),
        }
    }

    /// Processes jobs until the queue closes. Exposed for tests and benches.
    pub async fn run(&self) {
        let Some(rx) = self.rx.lock().await.take() else {
            warn!("dispatcher started twice; the second start does nothing");
            return;
        };
        let mut queue = QueueEnd {
            rx,
            stats: self.shared.stats.clone(),
            pending_jobs: self.shared.pending_jobs.clone(),
        };
        while let Some(job) = queue.rx.recv().await {
            let pending = PendingJob(self.shared.pending_jobs.clone());
            let Ok(permit) = self.shared.job_permits.clone().acquire_owned().await else {
                // Never closed; should it be, the job in hand is counted with the queued ones.
                Stats::inc(&self.shared.stats.jobs_dropped);
                break;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _pending = pending;
                shared.process(job).await;
            });
        }
    }
}

#[async_trait]
impl BackgroundService for Dispatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.run() => {}
            // Keep delivering through the grace period; the runtime ends with it.
            _ = async { while !*shutdown.borrow() { if shutdown.changed().await.is_err() { break; } } std::future::pending::<()>().await } => {}
        }
    }
}

/// Decodes as much of the beginning of `body` as it can (at most `limit` bytes): what a cut
/// short (possibly compressed) 201 still tells.
pub fn decode_prefix(body: &[u8], encoding: BodyEncoding, limit: usize) -> Vec<u8> {
    fn partial(mut r: impl Read, limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while out.len() < limit {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n.min(limit - out.len())]),
            }
        }
        out
    }
    match encoding {
        BodyEncoding::Identity => body[..body.len().min(limit)].to_vec(),
        BodyEncoding::Gzip => partial(flate2::read::MultiGzDecoder::new(body), limit),
        BodyEncoding::Deflate => {
            let zlib = partial(flate2::read::ZlibDecoder::new(body), limit);
            if zlib.is_empty() {
                partial(flate2::read::DeflateDecoder::new(body), limit)
            } else {
                zlib
            }
        }
    }
}

/// The post id at the start of a Mattermost post object (`{"id":"…"` comes first in every
/// version's field order), if the beginning of `json` shows it.
pub fn leading_post_id(json: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(json)
        .or_else(|e| std::str::from_utf8(&json[..e.valid_up_to()]))
        .ok()?;
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"id\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let id = &rest[..rest.find('"')?];
    crate::mattermost::is_valid_id(id).then_some(id)
}

/// Decodes `body` per `encoding`, reading at most `limit` decoded bytes.
pub fn decode_body(body: &[u8], encoding: BodyEncoding, limit: usize) -> Option<Vec<u8>> {
    fn bounded(mut r: impl Read, limit: usize) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        r.by_ref()
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .ok()?;
        (out.len() <= limit).then_some(out)
    }
    match encoding {
        BodyEncoding::Identity => (body.len() <= limit).then(|| body.to_vec()),
        BodyEncoding::Gzip => bounded(flate2::read::MultiGzDecoder::new(body), limit),
        // HTTP "deflate" is a zlib stream; some servers send raw deflate instead.
        BodyEncoding::Deflate => bounded(flate2::read::ZlibDecoder::new(body), limit)
            .or_else(|| bounded(flate2::read::DeflateDecoder::new(body), limit)),
    }
}

impl Shared {
    async fn process(self: Arc<Self>, job: Job) {
        if !job.complete {
            return self.recover(job).await;
        }
        let Some(decoded) = decode_body(&job.body, job.encoding, self.max_decoded) else {
            Stats::inc(&self.stats.posts_unparsed);
            warn!(
                "created post not decodable ({:?}, {} bytes); no webhooks",
                job.encoding,
                job.body.len()
            );
            return;
        };
        let post: CreatedPost = match serde_json::from_slice(&decoded) {
            Ok(p) => p,
            Err(e) => {
                Stats::inc(&self.stats.posts_unparsed);
                warn!("created post not parseable: {e}; no webhooks");
                return;
            }
        };
        self.handle_post(post).await;
    }

    /// A 201 whose body was cut short: the post exists; fetch it by the id its beginning shows.
    async fn recover(self: Arc<Self>, job: Job) {
        let prefix = decode_prefix(&job.body, job.encoding, self.max_decoded);
        let Some(id) = leading_post_id(&prefix) else {
            Stats::inc(&self.stats.posts_unparsed);
            warn!(
                "created post cut short before its id ({} bytes read); no webhooks",
                job.body.len()
            );
            return;
        };
        match self.mm.post(id).await {
            Ok(post) => self.handle_post(post).await,
            Err(e) => {
                Stats::inc(&self.stats.posts_unparsed);
                warn!("created post {id} cut short and not fetched: {e}; no webhooks");
            }
        }
    }

    async fn handle_post(self: Arc<Self>, post: CreatedPost) {
        // One snapshot of the hooks for the whole job, however a reload happens meanwhile.
        let live = self.live.load_full();
        if !live.index.could_match(&post.channel_id, &post.message) {
            return;
        }
        if !self
            .seen
            .entry(post.id.clone())
            .or_insert(())
            .await
            .is_fresh()
        {
            Stats::inc(&self.stats.duplicate_posts_skipped);
            debug!("post {} seen before; no webhooks", post.id);
            return;
        }
        if post.has_from_webhook_prop() {
            match self.mm.me().await {
                Ok(me) if me.id == post.user_id => {
                    Stats::inc(&self.stats.own_posts_skipped);
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    // Without knowing the bot's id a loop cannot be ruled out: skip.
                    Stats::inc(&self.stats.own_posts_skipped);
                    warn!(
                        "cannot look up the bot account ({e}); skipping webhook-made post {}",
                        post.id
                    );
                    return;
                }
            }
        }
        let channel = match self.mm.channel(&post.channel_id).await {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    "channel look-up for post {} failed: {e}; no webhooks",
                    post.id
                );
                return;
            }
        };
        if channel.channel_type != "O" {
            Stats::inc(&self.stats.non_public_skipped);
            return;
        }
        let matches = live
            .index
            .matches(&post.channel_id, &channel.team_id, &post.message);
        if matches.is_empty() {
            return;
        }
        Stats::add(&self.stats.hook_matches, matches.len() as u64);
        // From here on every callback request is due and accounted for by its DueRequest.
        // Bounded by the config: hooks × callback URLs.
        let post = Arc::new(post);
        let mut due: Vec<Vec<(DueRequest, &url::Url)>> = matches
            .iter()
            .map(|m| {
                let hook = &live.hooks[m.hook];
                hook.callback_urls
                    .iter()
                    .map(|url| {
                        let delivery = Delivery {
                            post: post.clone(),
                            hook_index: m.hook,
                            hook: hook.clone(),
                            callback_host: url.host_str().unwrap_or_default().to_string(),
                        };
                        (DueRequest::new(delivery, self.stats.clone()), url)
                    })
                    .collect()
            })
            .collect();

        let (user, team) =
            tokio::join!(self.mm.user(&post.user_id), self.mm.team(&channel.team_id));
        let (user, team) = match (user, team) {
            (Ok(u), Ok(t)) => (u, t),
            (u, t) => {
                let what = u
                    .err()
                    .or(t.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                for (d, _) in due.iter_mut().flatten() {
                    d.settle(Outcome::Dropped {
                        reason: "lookup_failed",
                        error: Some(&what),
                    });
                }
                return;
            }
        };

        let file_ids = post.file_ids.as_deref().unwrap_or_default().join(",");
        for (m, requests) in matches.iter().zip(due) {
            let hook = &live.hooks[m.hook];
            let payload = Payload {
                token: &hook.token,
                team_id: hook.team_id.as_deref().unwrap_or(&channel.team_id),
                team_domain: &team.name,
                channel_id: &post.channel_id,
                channel_name: &channel.name,
                create_at_ms: post.create_at,
                user_id: &post.user_id,
                user_name: &user.username,
                post_id: &post.id,
                text: &post.message,
                trigger_word: m.trigger_word,
                file_ids: &file_ids,
            };
            // Encoded once per hook; each URL gets its own cheap clone.
            let body = Bytes::from(payload.encode(hook.content_type));
            for (mut request, url) in requests {
                let Ok(permit) = self.delivery_permits.clone().acquire_owned().await else {
                    request.settle(Outcome::Dropped {
                        reason: "no_capacity",
                        error: None,
                    });
                    continue;
                };
                let shared = self.clone();
                let webhooks = live.webhooks.clone();
                let url = url.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    shared.deliver(&webhooks, request, url, body).await;
                });
            }
        }
    }

    async fn deliver(
        &self,
        webhooks: &WebhookClient,
        mut request: DueRequest,
        url: url::Url,
        body: Bytes,
    ) {
        let started = Instant::now();
        let result = webhooks
            .send(&url, request.delivery.hook.content_type, body)
            .await;
        let latency = started.elapsed();
        match result {
            Ok(answer) => {
                request.settle(Outcome::Delivered {
                    status: answer.status,
                    latency,
                });
                let delivery = request.delivery.clone();
                drop(request);
                self.sink.handle(delivery, answer).await;
            }
            Err(error) => request.settle(Outcome::Failed {
                error: &error,
                latency,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
    fn compressed_bodies_decode_within_the_bound() {
        let plain = br#"{"id":"p1","channel_id":"c1","message":"hi"}"#.to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zl.write_all(&plain).unwrap();
        let zl = zl.finish().unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(&plain).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(decode_body(&gz, BodyEncoding::Gzip, 1024).unwrap(), plain);
        assert_eq!(
            decode_body(&zl, BodyEncoding::Deflate, 1024).unwrap(),
            plain
        );
        assert_eq!(
            decode_body(&raw, BodyEncoding::Deflate, 1024).unwrap(),
            plain
        );
        assert_eq!(
            decode_body(&plain, BodyEncoding::Identity, 1024).unwrap(),
            plain
        );
        assert!(
            decode_body(&gz, BodyEncoding::Gzip, 10).is_none(),
            "over the bound"
        );
        assert!(decode_body(b"not gzip", BodyEncoding::Gzip, 1024).is_none());
    }

    #[test]
    fn a_cut_short_201_still_shows_its_post_id() {
        let full = br#"{"id":"4xp9fdt8zjbqfy5pnkb8bq7xyo","create_at":1,"message":"hi"}"#;
        let rows: &[(&[u8], Option<&str>, &str)] = &[
            (&full[..], Some("4xp9fdt8zjbqfy5pnkb8bq7xyo"), "whole"),
            (
                &full[..40],
                Some("4xp9fdt8zjbqfy5pnkb8bq7xyo"),
                "cut after the id",
            ),
            (&full[..20], None, "cut inside the id"),
            (b" {\n \"id\" : \"abc\" ,", Some("abc"), "spaces"),
            (br#"{"create_at":1,"id":"abc"}"#, None, "id not first"),
            (br#"{"id":"../x"}"#, None, "not an id"),
            (b"", None, "nothing"),
        ];
        for (json, want, what) in rows {
            assert_eq!(leading_post_id(json), *want, "{what}");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(full).unwrap();
        let gz = gz.finish().unwrap();
        let prefix = decode_prefix(&gz[..gz.len() - 12], BodyEncoding::Gzip, 1024);
        assert_eq!(
            leading_post_id(&prefix),
            Some("4xp9fdt8zjbqfy5pnkb8bq7xyo"),
            "cut gzip"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 1024 * 1024);
        assert!(decode_body(&bomb, BodyEncoding::Gzip, 4 * 1024 * 1024).is_none());
    }

    fn delivery() -> Delivery {
        let config = Config::from_yaml(
            "t.yaml",
            "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\nbot_token: b\nhooks:\n  - display_name: \"Build it\"\n    trigger_words: [a]\n    callback_urls: [\"http://ci.example/h?secret=s\"]\n    token: t\n",
            &|_| None,
        )
        .unwrap();
        Delivery {
            post: Arc::new(CreatedPost {
                id: "post1".into(),
                ..Default::default()
            }),
            hook_index: 0,
            hook: Arc::new(config.hooks[0].clone()),
            callback_host: "ci.example".into(),
        }
    }

    #[test]
    fn a_due_request_ends_exactly_once_even_when_dropped_unsettled() {
        let stats = Arc::new(Stats::default());
        let mut d = DueRequest::new(delivery(), stats.clone());
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
        drop(DueRequest::new(delivery(), stats.clone()));
        let refused = DeliveryError::Refused("127.0.0.1 is internal".into());
        DueRequest::new(delivery(), stats.clone()).settle(Outcome::Failed {
            error: &refused,
            latency: Duration::from_millis(1),
        });
        let timeout = DeliveryError::Timeout(Duration::from_secs(30));
        DueRequest::new(delivery(), stats.clone()).settle(Outcome::Failed {
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

    #[test]
    fn log_fields_show_the_host_and_never_the_url_or_token() {
        let shown = delivery().log_fields().to_string();
        assert_eq!(shown, "hook=0 name=\"Build it\" post=post1 host=ci.example");
    }

    #[test]
    fn queue_gauge_reads_the_depth_and_abandoned_jobs_are_counted() {
        let stats = Arc::new(Stats::default());
        let (tx, rx) = mpsc::channel(4);
        let pending = Arc::new(AtomicUsize::new(0));
        let handle = DispatchHandle {
            tx,
            stats: stats.clone(),
            pending_jobs: pending.clone(),
            drops: Arc::new(DropLog::new(Duration::from_secs(1))),
        };
        let gauge = handle.queue_gauge();
        assert_eq!((gauge.depth(), gauge.capacity()), (0, 4));
        for _ in 0..3 {
            handle.submit(Job {
                body: Bytes::new(),
                encoding: BodyEncoding::Identity,
                complete: true,
            });
        }
        assert_eq!(gauge.depth(), 3);
        assert_eq!(pending.load(Ordering::SeqCst), 3, "pending while queued");
        drop(QueueEnd {
            rx,
            stats: stats.clone(),
            pending_jobs: pending.clone(),
        });
        assert_eq!(stats.snapshot().jobs_dropped, 3, "still queued at the end");
        assert_eq!(pending.load(Ordering::SeqCst), 0, "no longer pending");
        drop(handle);
        assert_eq!(gauge.depth(), 0, "the gauge does not keep the queue alive");
    }

    #[test]
    fn created_post_parses_real_shapes() {
        let p: CreatedPost = serde_json::from_str(
            r#"{"id":"p","create_at":1,"update_at":1,"user_id":"u","channel_id":"c","root_id":"","message":"m","type":"","props":{"from_webhook":"true"},"hashtags":"","file_ids":null,"metadata":{}}"#,
        )
        .unwrap();
        assert!(p.has_from_webhook_prop());
        assert!(p.file_ids.is_none());
        let p: CreatedPost =
            serde_json::from_str(r#"{"id":"p","channel_id":"c","props":{"from_webhook":true}}"#)
                .unwrap();
        assert!(
            !p.has_from_webhook_prop(),
            "only the string \"true\" counts"
        );
    }
}
