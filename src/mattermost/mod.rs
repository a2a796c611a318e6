//! Mattermost: the REST client posthook uses toward the upstream, always with the bot token
//! (`Authorization: Bearer`), never with a user's credentials; [`model`] holds Mattermost's own
//! shapes and paths.
//!
//! Look-ups (channel, team, user, the bot itself) go through bounded caches with expiry;
//! concurrent look-ups of one key are coalesced into one request, and failures are not cached.
//! Only API v4 endpoints that exist are called (see the spec §6.3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::warn;
use moka::future::Cache;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use thiserror::Error;

pub mod model;

use crate::config::{Config, Limits};
use crate::net::client::{describe, read_capped, Body, BodyError, HttpClient};
use crate::net::guard::{BoxError, GuardedResolver, SystemResolver};
use crate::stats::Stats;
use model::{is_valid_id, Channel, CreatedPost, Team, User, REPLY_PATH};

/// `User-Agent` of posthook's own calls to Mattermost.
const CLIENT_USER_AGENT: &str = concat!("posthook/", env!("CARGO_PKG_VERSION"));
/// Default bound on an answer from Mattermost (`limits.max_decoded_body_bytes` sets it).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 4 << 20;

/// Why a call to the upstream failed.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0:?} is not a Mattermost id")]
    InvalidId(String),
    #[error("request failed: {0}")]
    Transport(String),
    /// The HTTP client could not be built (TLS roots).
    #[error("HTTP client: {}", describe(.0.as_ref()))]
    Client(#[source] BoxError),
    /// The request could not be sent or its answer's head not read; the text is the whole chain
    /// of causes (hyper's errors never carry the URL).
    #[error("request failed: {}", describe(.0))]
    Request(#[source] hyper_util::client::legacy::Error),
    #[error("request failed: {0}")]
    Body(#[from] BodyError),
    #[error("HTTP {status}: {id}: {message}")]
    Status {
        status: u16,
        /// The AppError id, e.g. `api.post.create_post.root_id.app_error`.
        id: String,
        message: String,
    },
    #[error("unexpected answer: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The upstream REST client. Cheap to clone.
#[derive(Clone)]
pub struct MattermostClient {
    inner: Arc<Inner>,
    /// With several Mattermost nodes: each request goes to the next healthy one.
    nodes: Option<Arc<crate::upstreams::Nodes>>,
}

struct Inner {
    http: HttpClient,
    base_url: String,
    /// `POST /api/v4/posts?set_online=false`, parsed once: replies are the hot path.
    create_post_url: http::Uri,
    auth: http::HeaderValue,
    /// Whole-request deadline: connect, send and read the answer.
    timeout: Duration,
    /// Answers are read up to this many bytes; a longer one is an error.
    max_answer_bytes: usize,
    stats: Arc<Stats>,
    channels: Cache<String, Arc<Channel>>,
    teams: Cache<String, Arc<Team>>,
    users: Cache<String, Arc<User>>,
    me: Cache<(), Arc<User>>,
}

/// The bounds of the Mattermost client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Whole-request deadline: connect, send and read the answer.
    pub timeout: Duration,
    /// How long a look-up stays cached.
    pub cache_ttl: Duration,
    /// Entries per look-up cache (channels, teams, users).
    pub cache_max_entries: u64,
    /// Idle keep-alive connections kept to Mattermost.
    pub max_idle: usize,
    /// Answers are read up to this many bytes; a longer one is an error.
    pub max_answer_bytes: usize,
}

impl From<&Limits> for ClientLimits {
    fn from(l: &Limits) -> ClientLimits {
        ClientLimits {
            timeout: l.lookup_timeout,
            cache_ttl: l.lookup_cache_ttl,
            cache_max_entries: l.lookup_cache_max_entries,
            max_idle: l.max_idle_connections_per_host,
            max_answer_bytes: l.max_decoded_body_bytes,
        }
    }
}

impl MattermostClient {
    /// The client `config` describes: its upstream, bot token and limits.
    pub fn from_config(config: &Config, stats: Arc<Stats>) -> Result<MattermostClient, ApiError> {
        MattermostClient::new(
            &config.upstream.base_url,
            &config.bot_token,
            ClientLimits::from(&config.limits),
            stats,
        )
    }

    /// A client for `base_url` (no trailing slash) authenticating with `bot_token`.
    pub fn new(
        base_url: &str,
        bot_token: &str,
        limits: ClientLimits,
        stats: Arc<Stats>,
    ) -> Result<MattermostClient, ApiError> {
        let http = HttpClient::new(
            GuardedResolver::new(Arc::new(SystemResolver), None),
            limits.timeout.min(Duration::from_secs(5)),
            limits.max_idle,
            Duration::from_secs(90),
        )
        .map_err(ApiError::Client)?;
        fn cache<V: Clone + Send + Sync + 'static, K>(ttl: Duration, max: u64) -> Cache<K, V>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
        {
            Cache::builder().max_capacity(max).time_to_live(ttl).build()
        }
        let create_post_url: http::Uri = format!("{base_url}{REPLY_PATH}")
            .parse()
            .map_err(|e| ApiError::Transport(format!("bad Mattermost URL: {e}")))?;
        let auth = http::HeaderValue::try_from(format!("Bearer {bot_token}"))
            .map_err(|_| ApiError::Transport("the bot token is not a valid header value".into()))?;
        let (ttl, max) = (limits.cache_ttl, limits.cache_max_entries);
        let inner = Inner {
            http,
            base_url: base_url.to_string(),
            create_post_url,
            auth,
            timeout: limits.timeout,
            max_answer_bytes: limits.max_answer_bytes,
            stats,
            channels: cache(ttl, max),
            teams: cache(ttl, max),
            users: cache(ttl, max),
            me: cache(ttl.max(Duration::from_secs(300)), 1),
        };
        Ok(MattermostClient {
            inner: Arc::new(inner),
            nodes: None,
        })
    }

    /// The same client, sending each request to the next healthy node of `nodes` (a cluster)
    /// rather than to its one base URL.
    pub fn with_nodes(mut self, nodes: Arc<crate::upstreams::Nodes>) -> MattermostClient {
        self.nodes = Some(nodes);
        self
    }

    /// `GET /api/v4/channels/{id}`, cached.
    pub async fn channel(&self, id: &str) -> Result<Arc<Channel>, Arc<ApiError>> {
        let path = format!("/api/v4/channels/{id}");
        self.cached(&self.inner.channels, id, path).await
    }

    /// `GET /api/v4/teams/{id}`, cached.
    pub async fn team(&self, id: &str) -> Result<Arc<Team>, Arc<ApiError>> {
        let path = format!("/api/v4/teams/{id}");
        self.cached(&self.inner.teams, id, path).await
    }

    /// `GET /api/v4/users/{id}`, cached.
    pub async fn user(&self, id: &str) -> Result<Arc<User>, Arc<ApiError>> {
        let path = format!("/api/v4/users/{id}");
        self.cached(&self.inner.users, id, path).await
    }

    /// Usernames of the users among `ids` that exist, by id: cached ones first, then one
    /// `GET /api/v4/users/{id}` for a single missing id or one `POST /api/v4/users/ids` for
    /// several. A failed look-up leaves those ids out (their mentions stay as written).
    pub async fn usernames(&self, ids: &[String]) -> HashMap<String, String> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        for id in ids.iter().filter(|id| is_valid_id(id)) {
            Stats::inc(&self.inner.stats.lookups);
            match self.inner.users.get(id).await {
                Some(u) => {
                    Stats::inc(&self.inner.stats.lookup_cache_hits);
                    found.insert(u.id.clone(), u.username.clone());
                }
                None => missing.push(id.clone()),
            }
        }
        match missing.as_slice() {
            [] => {}
            [one] => {
                // Counted once more by `user`; undo the double count of the look-up itself.
                self.inner.stats.lookups.fetch_sub(1, Ordering::Relaxed);
                if let Ok(u) = self.user(one).await {
                    found.insert(u.id.clone(), u.username.clone());
                }
            }
            several => {
                Stats::inc(&self.inner.stats.lookup_requests);
                let body = serde_json::Value::from(several.to_vec());
                match self
                    .post_json::<Vec<User>>("/api/v4/users/ids", &body)
                    .await
                {
                    Ok(users) => {
                        for u in users {
                            found.insert(u.id.clone(), u.username.clone());
                            self.inner.users.insert(u.id.clone(), Arc::new(u)).await;
                        }
                    }
                    Err(e) => {
                        Stats::inc(&self.inner.stats.lookup_failures);
                        warn!("user look-up for {} ids failed: {e}", several.len());
                    }
                }
            }
        }
        found
    }

    /// `GET /api/v4/posts/{id}`, not cached: recovers a created post whose 201 was cut short.
    pub async fn post(&self, id: &str) -> Result<CreatedPost, ApiError> {
        if !is_valid_id(id) {
            return Err(ApiError::InvalidId(id.to_string()));
        }
        Stats::inc(&self.inner.stats.lookups);
        Stats::inc(&self.inner.stats.lookup_requests);
        let result = self.get_json(&format!("/api/v4/posts/{id}")).await;
        if result.is_err() {
            Stats::inc(&self.inner.stats.lookup_failures);
        }
        result
    }

    /// `GET /api/v4/users/username/{name}`: the account named `name` (not cached: used for the
    /// rare notifications).
    pub async fn user_by_username(&self, name: &str) -> Result<User, ApiError> {
        // A name that could change the request path never reaches a URL.
        if !crate::config::is_valid_username(name) {
            return Err(ApiError::Transport(format!("{name:?} is not a username")));
        }
        self.get_json::<User>(&format!("/api/v4/users/username/{name}"))
            .await
    }

    /// `GET /api/v4/teams/name/{name}`: the team with that URL name (not cached).
    pub async fn team_by_name(&self, name: &str) -> Result<Team, ApiError> {
        if !is_valid_id(name) {
            return Err(ApiError::Transport(format!("{name:?} is not a team name")));
        }
        self.get_json::<Team>(&format!("/api/v4/teams/name/{name}"))
            .await
    }

    /// `GET /api/v4/teams/{team_id}/channels/name/{name}`: the team's channel with that URL
    /// name (not cached).
    pub async fn channel_by_name(&self, team_id: &str, name: &str) -> Result<Channel, ApiError> {
        if !is_valid_id(team_id) || !is_valid_id(name) {
            return Err(ApiError::Transport(format!(
                "{team_id:?}/{name:?} is not a team id and channel name"
            )));
        }
        self.get_json::<Channel>(&format!("/api/v4/teams/{team_id}/channels/name/{name}"))
            .await
    }

    /// `POST /api/v4/channels/direct`: the direct-message channel of users `a` and `b`
    /// (Mattermost creates it the first time, and answers with the same one after).
    pub async fn direct_channel(&self, a: &str, b: &str) -> Result<Channel, ApiError> {
        self.post_json("/api/v4/channels/direct", &serde_json::json!([a, b]))
            .await
    }

    /// `GET /api/v4/users/me`: the bot account itself, cached.
    pub async fn me(&self) -> Result<Arc<User>, Arc<ApiError>> {
        Stats::inc(&self.inner.stats.lookups);
        let fetched = AtomicBool::new(false);
        let result = self
            .inner
            .me
            .try_get_with((), async {
                fetched.store(true, Ordering::Relaxed);
                self.get_json::<User>("/api/v4/users/me")
                    .await
                    .map(Arc::new)
            })
            .await;
        self.after_lookup(&result, &fetched);
        result
    }

    async fn cached<V>(
        &self,
        cache: &Cache<String, Arc<V>>,
        id: &str,
        path: String,
    ) -> Result<Arc<V>, Arc<ApiError>>
    where
        V: for<'de> Deserialize<'de> + Send + Sync + 'static,
    {
        Stats::inc(&self.inner.stats.lookups);
        if !is_valid_id(id) {
            Stats::inc(&self.inner.stats.lookup_failures);
            return Err(Arc::new(ApiError::InvalidId(id.to_string())));
        }
        let fetched = AtomicBool::new(false);
        let result = cache
            .try_get_with(id.to_string(), async {
                fetched.store(true, Ordering::Relaxed);
                self.get_json::<V>(&path).await.map(Arc::new)
            })
            .await;
        self.after_lookup(&result, &fetched);
        result
    }

    fn after_lookup<T>(&self, result: &Result<T, Arc<ApiError>>, fetched: &AtomicBool) {
        let fetched = fetched.load(Ordering::Relaxed);
        if fetched {
            Stats::inc(&self.inner.stats.lookup_requests);
        }
        if result.is_err() {
            Stats::inc(&self.inner.stats.lookup_failures);
        } else if !fetched {
            // From the cache, or shared with an identical request another caller made.
            Stats::inc(&self.inner.stats.lookup_cache_hits);
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, ApiError> {
        let uri = self.uri(path)?;
        self.exchange(http::Method::GET, uri, None).await
    }

    /// `POST path` with a JSON body; returns the decoded JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path_and_query: &str,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let uri = self.uri(path_and_query)?;
        self.exchange(http::Method::POST, uri, Some(body)).await
    }

    /// Creates a post (`POST /api/v4/posts?set_online=false`, so that the bot does not show
    /// as online); `T` is what of the created post the caller wants (`IgnoredAny`: nothing,
    /// but it must be JSON).
    pub async fn create_post<T: DeserializeOwned>(
        &self,
        body: &serde_json::Value,
    ) -> Result<T, ApiError> {
        let uri = match &self.nodes {
            None => self.inner.create_post_url.clone(),
            Some(_) => self.uri(REPLY_PATH)?,
        };
        self.exchange(http::Method::POST, uri, Some(body)).await
    }

    fn uri(&self, path_and_query: &str) -> Result<http::Uri, ApiError> {
        let base = match &self.nodes {
            Some(nodes) => nodes.node(nodes.pick()).base_url.as_str(),
            None => self.inner.base_url.as_str(),
        };
        format!("{base}{path_and_query}")
            .parse()
            .map_err(|e| ApiError::Transport(format!("bad Mattermost URL: {e}")))
    }

    /// One request with the bot's token, under the whole-request timeout; a 2xx answer's JSON
    /// decoded into `T`, anything else read as Mattermost's AppError.
    async fn exchange<T: DeserializeOwned>(
        &self,
        method: http::Method,
        uri: http::Uri,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ApiError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::AUTHORIZATION, self.inner.auth.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, CLIENT_USER_AGENT);
        let bytes = match body {
            Some(b) => {
                request = request.header(http::header::CONTENT_TYPE, "application/json");
                serde_json::to_vec(b)?
            }
            None => Vec::new(),
        };
        let request = request
            .body(Body::new(bytes.into()))
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        let cap = self.inner.max_answer_bytes;
        // Boxed, as in the webhook client: look-ups and replies await it inside larger tasks.
        let exchange = Box::pin(async {
            let response = self
                .inner
                .http
                .send(request)
                .await
                .map_err(ApiError::Request)?;
            let status = response.status();
            let body = read_capped(response.into_body(), cap + 1, false).await?;
            if body.len() > cap {
                return Err(ApiError::Transport(format!(
                    "answer larger than {cap} bytes"
                )));
            }
            Ok((status, body))
        });
        let (status, body) = match tokio::time::timeout(self.inner.timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ApiError::Transport(format!(
                    "timed out after {:?}",
                    self.inner.timeout
                )))
            }
        };
        if !status.is_success() {
            return Err(app_error(status.as_u16(), &body));
        }
        Ok(serde_json::from_slice(&body)?)
    }
}

/// Reads an AppError body (`{"id","message",…}`) into [`ApiError::Status`].
fn app_error(status: u16, body: &[u8]) -> ApiError {
    #[derive(Deserialize, Default)]
    struct AppError {
        #[serde(default)]
        id: String,
        #[serde(default)]
        message: String,
    }
    let e: AppError = serde_json::from_slice(body).unwrap_or_default();
    ApiError::Status {
        status,
        id: e.id,
        message: e.message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_change_the_path_are_refused() {
        for (id, ok) in [
            ("hawos4dqtby53pd64o4a4cmeoo", true),
            ("me", true),
            ("", false),
            ("../users", false),
            ("a/b", false),
            ("a?b", false),
            ("a b", false),
            ("a%2F", false),
        ] {
            assert_eq!(is_valid_id(id), ok, "{id:?}");
        }
    }

    #[test]
    fn app_error_bodies_are_read() {
        let e = app_error(
            400,
            br#"{"id":"api.post.create_post.root_id.app_error","message":"Invalid RootId parameter","status_code":400}"#,
        );
        assert_eq!(
            e.to_string(),
            "HTTP 400: api.post.create_post.root_id.app_error: Invalid RootId parameter"
        );
        assert_eq!(app_error(502, b"<html>").to_string(), "HTTP 502: : ");
    }
}
