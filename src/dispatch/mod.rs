//! Dispatch: the background service that turns an observed 201 (a created post) or 200 (an
//! edited one) into webhook deliveries.
//!
//! The proxy hands over the raw (possibly compressed) body of the post with
//! [`DispatchHandle::submit`], which never waits ([`queue`]). Off the request path, each job
//! then goes through named stages, in the order of the README's flow:
//!
//! ```text
//!  created ─► admit ─► resolve channel ─► match ─► fan out ─► resolve names ─► deliver
//!  (decode    (could    (look-up;          (hook    (one due    (author, team   (payload per
//!   the 201    match,    public only)       index    request     look-ups)       hook, one task
//!   or 200)    repeat,                      of the   per URL)                    per URL)
//!              own post,                    event)
//!              an edit?)
//! ```
//!
//! Every callback request that becomes due in "fan out" is a `due::DueRequest`, which ends
//! exactly once as delivered, failed or dropped, so that `due == delivered + failed + dropped`
//! holds whenever nothing is in flight. What cannot be counted: a process killed outright
//! (SIGKILL, abort). And what is counted while the runtimes stop at shutdown reaches the logs
//! but no scrape: the metrics endpoint stops with them. Each answer goes to an
//! [`AnswerSink`] (the reply poster).

mod created;
mod due;
mod notify;
mod poller;
pub mod queue;
mod retry;
mod send;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use log::{debug, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::{Mutex, Semaphore};

pub use created::{decode_body, decode_prefix, leading_post_id};
use due::{DueRequest, Outcome};
use queue::QueueEnd;
pub use queue::{BodyEncoding, DispatchHandle, Job, QueueGauge};

use crate::config::{Beyond, Config, Event, StoreConfig};
use crate::live::{Live, LiveConfig};
use crate::mattermost::model::{Channel, CreatedPost, Team, User};
use crate::mattermost::MattermostClient;
use crate::reply::AnswerSink;
use crate::rules::Match;
use crate::signing;
use crate::stats::Stats;
use crate::store::Store;
use crate::webhook::{Delivery, Extras, Payload};

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

/// The background dispatcher service.
pub struct Dispatcher {
    queue: Mutex<Option<QueueEnd>>,
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
    /// Retry attempts also take one of these: at most half of the delivery permits, so that
    /// retries never starve fresh posts.
    retry_permits: Arc<Semaphore>,
    /// Deliveries waiting for a retry, at most.
    max_pending: usize,
    /// Hooks a `410 Gone` disabled (by name), with the reason: until a restart with the
    /// memory store; with a durable one, as the store says (refreshed every second).
    disabled: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Where deliveries are kept; opened when the dispatcher starts (memory until then).
    store: std::sync::OnceLock<Store>,
    /// The ids of the deliveries this process is working on (sending, or waiting to retry):
    /// a claim of one of them (its lease ran out while it waited for a permit) is not sent
    /// twice from here.
    held: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Each hook with `max_in_flight`: its bound and its permits, by name (kept across reloads
    /// while the bound stays).
    hook_gates: std::sync::Mutex<std::collections::HashMap<String, (usize, Arc<Semaphore>)>>,
    /// `notify`'s counts and limits.
    notifications: notify::Notifications,
    store_config: StoreConfig,
    /// The settings' request deadline, for a hook without `timeout_seconds` (leases).
    default_timeout: Duration,
    seen: moka::future::Cache<String, ()>,
    sink: Arc<dyn AnswerSink>,
}

/// The matched hooks' callback requests, per match: each one due, with its URL.
type DueRequests<'a> = Vec<Vec<(DueRequest, &'a url::Url, u32)>>;

impl Dispatcher {
    /// Builds the dispatcher on the swappable snapshot of the hooks (see [`crate::live`]),
    /// with the bounds of `config.limits`, and the handle the proxy submits to.
    pub fn new(
        config: &Config,
        live: LiveConfig,
        mm: MattermostClient,
        stats: Arc<Stats>,
        sink: Arc<dyn AnswerSink>,
    ) -> (Dispatcher, DispatchHandle) {
        let limits = &config.limits;
        let (handle, queue) = queue::bounded(limits.queue_capacity, stats.clone());
        let shared = Shared {
            live,
            mm,
            stats,
            pending_jobs: queue.pending_jobs(),
            max_concurrent_deliveries: limits.max_concurrent_deliveries,
            max_decoded: limits.max_decoded_body_bytes,
            job_permits: Arc::new(Semaphore::new(limits.max_concurrent_jobs)),
            delivery_permits: Arc::new(Semaphore::new(limits.max_concurrent_deliveries)),
            retry_permits: Arc::new(Semaphore::new(
                (limits.max_concurrent_deliveries / 2).max(1),
            )),
            max_pending: limits.max_pending_deliveries,
            disabled: Default::default(),
            store: std::sync::OnceLock::new(),
            held: Default::default(),
            hook_gates: Default::default(),
            notifications: Default::default(),
            store_config: config.store.clone(),
            default_timeout: config.settings.outgoing_integration_requests_timeout,
            // Mattermost answers a retried post (same pending_post_id) with the same post: fire once.
            seen: moka::future::Cache::builder()
                .max_capacity(limits.queue_capacity.max(10_000) as u64)
                .time_to_live(Duration::from_secs(300))
                .build(),
            sink,
        };
        let dispatcher = Dispatcher {
            queue: Mutex::new(Some(queue)),
            shared: Arc::new(shared),
        };
        (dispatcher, handle)
    }

    /// A probe telling whether the dispatcher has nothing left to do.
    pub fn idle_probe(&self) -> IdleProbe {
        IdleProbe {
            shared: self.shared.clone(),
        }
    }

    /// Processes jobs until the queue closes, at most `limits.max_concurrent_jobs` at once.
    /// Exposed for tests and benches.
    pub async fn run(&self) {
        let Some(mut queue) = self.queue.lock().await.take() else {
            warn!("dispatcher started twice; the second start does nothing");
            return;
        };
        self.shared.clone().open_store().await;
        while let Some((job, pending)) = queue.next().await {
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

impl Shared {
    /// The created post of `job`: the 201 decoded and parsed, or, when the exchange ended
    /// before the body did, fetched by the id its beginning shows.
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
                warn!(
                    "{} post not parseable: {e}; no webhooks",
                    job.event.as_str()
                );
                return;
            }
        };
        self.handle_post(post, job.event).await;
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
            Ok(post) => self.handle_post(post, job.event).await,
            Err(e) => {
                Stats::inc(&self.stats.posts_unparsed);
                warn!("created post {id} cut short and not fetched: {e}; no webhooks");
            }
        }
    }

    /// The stages a created or edited post goes through (see the module's diagram).
    async fn handle_post(self: Arc<Self>, post: CreatedPost, event: Event) {
        // One snapshot of the hooks for the whole job, however a reload happens meanwhile.
        let live = self.live.load_full();
        // Shared from here: matches borrow the message, due requests hold the post.
        let post = Arc::new(post);
        if !self.admit(&live, &post, event).await {
            return;
        }
        let Some(channel) = self.resolve_channel(&live, &post).await else {
            return;
        };
        let where_ = (
            post.channel_id.as_str(),
            channel.team_id.as_str(),
            channel.channel_type.as_str(),
        );
        let mut matches = live.matches(event, where_, &post.root_id, &post.message);
        self.drop_disabled(&live, &mut matches);
        self.filter_by_author(&live, &post, &mut matches).await;
        if matches.is_empty() {
            return;
        }
        Stats::add(&self.stats.hook_matches, matches.len() as u64);
        // From here on every callback request is due and accounted for by its DueRequest.
        let mut due = self.fan_out(&live, &post, &matches);
        let Some((user, team)) = self.resolve_names(&post, &channel, &mut due).await else {
            return;
        };
        let names = Names {
            channel: &channel,
            team: team.as_deref(),
            user: &user,
        };
        self.deliver_all(&live, (&post, event), names, &matches, due)
            .await;
    }

    /// Whether `post` may fire anything: it is an edit if `event` says so (a 200 with the
    /// `edit_at` of a changed message, not a pin or a props-only change), some hook of the
    /// event could match its channel and first word, it was not seen before (a retried create,
    /// a repeated edit), and it is not posthook's own reply.
    async fn admit(&self, live: &Live, post: &CreatedPost, event: Event) -> bool {
        let key = match event {
            Event::Posted => post.id.clone(),
            Event::Edited if is_new_edit(post) => format!("{}@{}", post.id, post.edit_at),
            Event::Edited => {
                debug!("post {} updated without an edit; no webhooks", post.id);
                return false;
            }
        };
        if !live
            .hooks_for(event)
            .could_match(&post.channel_id, &post.message)
        {
            return false;
        }
        if !self.seen.entry(key).or_insert(()).await.is_fresh() {
            Stats::inc(&self.stats.duplicate_posts_skipped);
            debug!(
                "{} post {} seen before; no webhooks",
                event.as_str(),
                post.id
            );
            return false;
        }
        if post.has_from_webhook_prop() {
            match self.mm.me().await {
                Ok(me) if me.id == post.user_id => {
                    Stats::inc(&self.stats.own_posts_skipped);
                    return false;
                }
                Ok(_) => {}
                Err(e) => {
                    // Without knowing the bot's id a loop cannot be ruled out: skip.
                    Stats::inc(&self.stats.own_posts_skipped);
                    warn!(
                        "cannot look up the bot account ({e}); skipping webhook-made post {}",
                        post.id
                    );
                    return false;
                }
            }
        }
        true
    }

    /// The post's channel, when it can be looked up and some hook fires in its type (by default
    /// public channels only, as in Mattermost).
    async fn resolve_channel(&self, live: &Live, post: &CreatedPost) -> Option<Arc<Channel>> {
        let channel = match self.mm.channel(&post.channel_id).await {
            Ok(c) => c,
            Err(e) => {
                warn!(
                    "channel look-up for post {} failed: {e}; no webhooks",
                    post.id
                );
                return None;
            }
        };
        if !live.channel_types.contains(&channel.channel_type) {
            Stats::inc(&self.stats.non_public_skipped);
            return None;
        }
        Some(channel)
    }

    /// Drops the matched hooks whose `from_users` or `exclude_bots` the post's author fails,
    /// looking the author up (cached) only when such a hook matched. When the look-up fails,
    /// only what the user id alone proves passes (logged).
    async fn filter_by_author(
        &self,
        live: &Live,
        post: &CreatedPost,
        matches: &mut Vec<Match<'_>>,
    ) {
        if !matches
            .iter()
            .any(|m| live.hooks[m.hook].beyond.needs_author())
        {
            return;
        }
        let author = match self.mm.user(&post.user_id).await {
            Ok(u) => Some(u),
            Err(e) => {
                warn!(
                    "author look-up for post {} failed: {e}; hooks with from_users or exclude_bots decide by the user id alone",
                    post.id
                );
                None
            }
        };
        matches.retain(|m| {
            admits_author(&live.hooks[m.hook].beyond, &post.user_id, author.as_deref())
        });
    }

    /// One due request per callback URL of each matched hook. Bounded by the config: hooks ×
    /// callback URLs.
    fn fan_out<'l>(
        &self,
        live: &'l Live,
        post: &Arc<CreatedPost>,
        matches: &[Match<'_>],
    ) -> DueRequests<'l> {
        matches
            .iter()
            .map(|m| {
                let hook = &live.hooks[m.hook];
                hook.callback_urls
                    .iter()
                    .enumerate()
                    .map(|(i, url)| {
                        let delivery = Delivery {
                            post: post.clone(),
                            hook_index: m.hook,
                            hook: hook.clone(),
                            callback_host: url.host_str().unwrap_or_default().to_string(),
                            // One id per callback request, kept by all its attempts (the
                            // store's key too; sent only when the hook is signed or retried).
                            webhook_id: (hook.sending.has_webhook_id()
                                || self.store().is_durable())
                            .then(signing::new_message_id),
                        };
                        (DueRequest::new(delivery, self.stats.clone()), url, i as u32)
                    })
                    .collect()
            })
            .collect()
    }

    /// The author and the team, looked up together; when either fails, every due request is
    /// dropped (counted, logged) and `None` returned.
    async fn resolve_names(
        &self,
        post: &CreatedPost,
        channel: &Channel,
        due: &mut DueRequests<'_>,
    ) -> Option<(Arc<User>, Option<Arc<Team>>)> {
        // A direct or group message has no team (`team_id` is "").
        let team = async {
            match channel.team_id.as_str() {
                "" => Ok(None),
                id => self.mm.team(id).await.map(Some),
            }
        };
        let (user, team) = tokio::join!(self.mm.user(&post.user_id), team);
        match (user, team) {
            (Ok(u), Ok(t)) => Some((u, t)),
            (u, t) => {
                let what = u
                    .err()
                    .or(t.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                for (d, _, _) in due.iter_mut().flatten() {
                    d.settle(Outcome::Dropped {
                        reason: "lookup_failed",
                        error: Some(&what),
                    });
                }
                None
            }
        }
    }

    /// Encodes each matched hook's payload once and sends it to each of its URLs, one task per
    /// request, at most `limits.max_concurrent_deliveries` at once.
    async fn deliver_all(
        self: &Arc<Self>,
        live: &Arc<Live>,
        (post, event): (&CreatedPost, Event),
        names: Names<'_>,
        matches: &[Match<'_>],
        due: DueRequests<'_>,
    ) {
        let file_ids = post.file_ids.as_deref().unwrap_or_default().join(",");
        let mut ready = Vec::with_capacity(due.iter().map(Vec::len).sum());
        for (m, requests) in matches.iter().zip(due) {
            let hook = &live.hooks[m.hook];
            let payload = Payload {
                token: &hook.token,
                team_id: hook.team_id.as_deref().unwrap_or(&names.channel.team_id),
                team_domain: names.team.map_or("", |t| t.name.as_str()),
                channel_id: &post.channel_id,
                channel_name: &names.channel.name,
                create_at_ms: post.create_at,
                user_id: &post.user_id,
                user_name: &names.user.username,
                post_id: &post.id,
                text: &post.message,
                trigger_word: m.trigger_word,
                file_ids: &file_ids,
                extras: hook.beyond.payload_extras.then_some(Extras {
                    root_id: &post.root_id,
                    channel_type: &names.channel.channel_type,
                    event: event.as_str(),
                    edit_at: match event {
                        Event::Posted => 0,
                        Event::Edited => post.edit_at,
                    },
                }),
            };
            // Encoded once per hook; each URL gets its own cheap clone.
            let body = Bytes::from(payload.encode(hook.content_type));
            for (request, url, url_index) in requests {
                ready.push((request, url.clone(), url_index, body.clone()));
            }
        }
        // With a durable store every request of the post is written before any waits for a
        // permit, in one group commit: a crash while deliveries queue for permits loses none.
        let store = self.store().clone();
        if store.is_durable() {
            let records = ready
                .iter()
                .map(|(r, _, i, b)| {
                    send::new_delivery(&r.delivery, *i, b, event, self.lease(&r.delivery))
                })
                .collect();
            store.intake_all(records).await;
        }
        for (mut request, url, _, body) in ready {
            // A hook with its own bound waits for it first, holding no delivery permit
            // meanwhile (the attempt loop takes both); the others take theirs here.
            let permits = if request.delivery.hook.sending.max_in_flight.is_some() {
                Vec::new()
            } else {
                let Ok(permit) = self.delivery_permits.clone().acquire_owned().await else {
                    request.settle(Outcome::Dropped {
                        reason: "no_capacity",
                        error: None,
                    });
                    continue;
                };
                vec![permit]
            };
            let shared = self.clone();
            let request_to_send = send::Request {
                url,
                body,
                attempt: 1,
                claimed: false,
            };
            tokio::spawn(async move {
                shared.deliver(request, request_to_send, permits).await;
            });
        }
    }
}

/// Whether a post by `user_id` may fire a hook with `beyond`'s author filters, given the
/// author's record (`None` when the look-up failed: then only what the id alone proves
/// passes; a bot cannot be ruled out).
pub fn admits_author(beyond: &Beyond, user_id: &str, author: Option<&User>) -> bool {
    if beyond.exclude_bots && author.is_none_or(|a| a.is_bot) {
        return false;
    }
    match &beyond.from_users {
        None => true,
        Some(users) => users
            .iter()
            .any(|u| u == user_id || author.is_some_and(|a| a.username == *u)),
    }
}

/// Whether the post in an edit's 200 shows an edit made by that request: `edit_at` set, and
/// set by this update — Mattermost sets `edit_at` and `update_at` together when the message
/// changes, so a pin or a props-only change of a post edited earlier (minutes ago, past the
/// memory of repeats) keeps an `edit_at` far older than its `update_at`.
fn is_new_edit(post: &CreatedPost) -> bool {
    /// Most that `update_at` may follow `edit_at` in one update (two clock readings apart).
    const SAME_UPDATE_MS: i64 = 5_000;
    post.edit_at > 0 && (post.update_at == 0 || post.update_at - post.edit_at <= SAME_UPDATE_MS)
}

/// What the look-ups found, for the payload.
#[derive(Clone, Copy)]
struct Names<'a> {
    channel: &'a Channel,
    /// `None` in a direct or group message.
    team: Option<&'a Team>,
    user: &'a User,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, is_bot: bool) -> User {
        User {
            id: "u1".into(),
            username: name.into(),
            is_bot,
        }
    }

    #[test]
    fn an_edit_is_a_new_edit_at_set_by_this_update() {
        let post = |edit_at: i64, update_at: i64| CreatedPost {
            edit_at,
            update_at,
            ..CreatedPost::default()
        };
        let rows: &[(CreatedPost, bool, &str)] = &[
            (
                post(0, 1_000),
                false,
                "never edited: a pin or a props change",
            ),
            (post(1_000, 1_001), true, "edited by this update"),
            (post(1_000, 1_000), true, "one clock reading"),
            (post(1_000, 0), true, "no update_at in the answer"),
            (
                post(1_000, 1_000 + 600_000),
                false,
                "edited ten minutes earlier, pinned now",
            ),
        ];
        for (p, want, what) in rows {
            assert_eq!(is_new_edit(p), *want, "{what}");
        }
    }

    #[test]
    fn author_filters_match_ids_and_names_and_skip_bots() {
        let anyone = Beyond::default();
        let listed = Beyond {
            from_users: Some(vec!["u1".into(), "bob".into()]),
            ..Beyond::default()
        };
        let no_bots = Beyond {
            exclude_bots: true,
            ..Beyond::default()
        };
        let (alice, bob, bot) = (user("alice", false), user("bob", false), user("ci", true));
        let rows: &[(&Beyond, &str, Option<&User>, bool, &str)] = &[
            (&anyone, "u9", None, true, "no filter, no look-up"),
            (&listed, "u1", Some(&alice), true, "listed by id"),
            (&listed, "u2", Some(&bob), true, "listed by username"),
            (
                &listed,
                "u2",
                Some(&alice),
                false,
                "neither id nor name listed",
            ),
            (
                &listed,
                "u1",
                None,
                true,
                "look-up failed: the id alone proves it",
            ),
            (
                &listed,
                "u2",
                None,
                false,
                "look-up failed: a name cannot be checked",
            ),
            (&no_bots, "u1", Some(&alice), true, "a person"),
            (&no_bots, "u1", Some(&bot), false, "a bot"),
            (
                &no_bots,
                "u1",
                None,
                false,
                "look-up failed: a bot is not ruled out",
            ),
        ];
        for (beyond, id, author, want, what) in rows {
            assert_eq!(admits_author(beyond, id, *author), *want, "{what}");
        }
    }
}
