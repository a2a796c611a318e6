//! Dispatch: the background service that turns an observed 201 into webhook deliveries.
//!
//! The proxy hands over the raw (possibly compressed) body of the created post with
//! [`DispatchHandle::submit`], which never waits: the queue is bounded and a full queue drops
//! the job (counted, logged). The service then, off the request path: decodes and parses the
//! post, skips repeats and posthook's own posts, checks the hook index, looks up the channel
//! (public only), its team and the author, and sends one request per matching hook per callback
//! URL, all concurrently under a global bound. Each answer is handed to an [`AnswerSink`]
//! (the reply poster).

use std::future::Future;
use std::io::Read;
use std::pin::Pin;
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
use crate::mattermost::MattermostClient;
use crate::rules::HookIndex;
use crate::stats::Stats;
use crate::webhook::{Payload, WebhookAnswer, WebhookClient};

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
    /// The upstream's response body exactly as received.
    pub body: Bytes,
    pub encoding: BodyEncoding,
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
    #[serde(default)]
    pub props: Option<serde_json::Map<String, serde_json::Value>>,
}

impl CreatedPost {
    fn has_from_webhook_prop(&self) -> bool {
        self.props
            .as_ref()
            .and_then(|p| p.get("from_webhook"))
            .and_then(|v| v.as_str())
            == Some("true")
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
}

impl DispatchHandle {
    /// Queues `job` without waiting; a full or closed queue drops it (counted and logged).
    pub fn submit(&self, job: Job) {
        if let Err(e) = self.tx.try_send(job) {
            Stats::inc(&self.stats.jobs_dropped);
            warn!("webhook queue full or closed, dropping a created post: {e}");
        }
    }
}

/// The background dispatcher service.
pub struct Dispatcher {
    rx: Mutex<Option<mpsc::Receiver<Job>>>,
    shared: Arc<Shared>,
}

struct Shared {
    hooks: Vec<Arc<HookConfig>>,
    index: Arc<HookIndex>,
    mm: MattermostClient,
    webhooks: WebhookClient,
    stats: Arc<Stats>,
    max_decoded: usize,
    job_permits: Arc<Semaphore>,
    delivery_permits: Arc<Semaphore>,
    seen: moka::future::Cache<String, ()>,
    sink: Arc<dyn AnswerSink>,
}

impl Dispatcher {
    /// Builds the dispatcher and the handle the proxy submits to.
    pub fn new(
        config: &Config,
        index: Arc<HookIndex>,
        mm: MattermostClient,
        webhooks: WebhookClient,
        stats: Arc<Stats>,
        sink: Arc<dyn AnswerSink>,
    ) -> (Dispatcher, DispatchHandle) {
        let (tx, rx) = mpsc::channel(config.limits.queue_capacity);
        let shared = Shared {
            hooks: config.hooks.iter().cloned().map(Arc::new).collect(),
            index,
            mm,
            webhooks,
            stats: stats.clone(),
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
            DispatchHandle { tx, stats },
        )
    }

    /// Processes jobs until the queue closes. Exposed for tests and benches.
    pub async fn run(&self) {
        let Some(mut rx) = self.rx.lock().await.take() else {
            warn!("dispatcher started twice; the second start does nothing");
            return;
        };
        while let Some(job) = rx.recv().await {
            let Ok(permit) = self.shared.job_permits.clone().acquire_owned().await else {
                break;
            };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let _permit = permit;
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
        if !self.index.could_match(&post.channel_id, &post.message) {
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
        let matches = self
            .index
            .matches(&post.channel_id, &channel.team_id, &post.message);
        if matches.is_empty() {
            return;
        }
        Stats::add(&self.stats.hook_matches, matches.len() as u64);
        let due: u64 = matches
            .iter()
            .map(|m| self.hooks[m.hook].callback_urls.len() as u64)
            .sum();
        Stats::add(&self.stats.deliveries_due, due);

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
                Stats::add(&self.stats.deliveries_dropped, due);
                warn!(
                    "look-up for post {} failed: {what}; {due} webhook request(s) dropped",
                    post.id
                );
                return;
            }
        };

        let post = Arc::new(post);
        let file_ids = post.file_ids.as_deref().unwrap_or_default().join(",");
        for m in matches {
            let hook = self.hooks[m.hook].clone();
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
            for url in &hook.callback_urls {
                let Ok(permit) = self.delivery_permits.clone().acquire_owned().await else {
                    Stats::inc(&self.stats.deliveries_dropped);
                    continue;
                };
                let shared = self.clone();
                let delivery = Delivery {
                    post: post.clone(),
                    hook_index: m.hook,
                    hook: hook.clone(),
                    callback_host: url.host_str().unwrap_or_default().to_string(),
                };
                let url = url.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    shared.deliver(delivery, url, body).await;
                });
            }
        }
    }

    async fn deliver(&self, delivery: Delivery, url: reqwest::Url, body: Bytes) {
        let started = Instant::now();
        let result = self
            .webhooks
            .send(&url, delivery.hook.content_type, body)
            .await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(answer) => {
                Stats::inc(&self.stats.deliveries_delivered);
                info!(
                    "delivery hook={} post={} host={} status={} latency_ms={ms:.1} outcome=delivered",
                    delivery.hook_index, delivery.post.id, delivery.callback_host, answer.status
                );
                self.sink.handle(delivery, answer).await;
            }
            Err(e) => {
                Stats::inc(&self.stats.deliveries_failed);
                warn!(
                    "delivery hook={} post={} host={} status=- latency_ms={ms:.1} outcome=failed error={e}",
                    delivery.hook_index, delivery.post.id, delivery.callback_host
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
