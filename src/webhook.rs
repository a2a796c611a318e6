//! Webhook: the outgoing request, byte-exact as Mattermost sends it (spec §2), and the guarded
//! HTTP client that sends it.
//!
//! Encoding is pure: [`Payload::to_form`] reproduces Go's `url.Values.Encode` (sorted keys,
//! `QueryEscape`), [`Payload::to_json`] Go's `json.Marshal` (field order, HTML escaping). The
//! client refuses callback addresses that are loopback, private, link-local or unspecified
//! unless the admin allowed them; the check runs on the resolved addresses the connection is
//! made to (see [`crate::net::guard`]) and on IP-literal hosts and redirect targets here, so a
//! DNS answer cannot slip past.
//!
//! A [`Delivery`] names one callback request (hook, post, host): the unit that the dispatcher
//! accounts for and that the reply stage answers.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use url::Url;

use crate::config::{Config, ContentType, HookConfig};
use crate::go::{json_string_into, query_escape_into};
use crate::mattermost::model::CreatedPost;
use crate::net::client::{describe, read_capped, refused, Body, BodyError, HttpClient};
use crate::net::guard::{AddressPolicy, BoxError, GuardedResolver, Resolver};
use crate::signing::{self, Secret};

/// `User-Agent` Mattermost's transport forces on integration requests.
pub const USER_AGENT: &str = "Mattermost-Bot/1.1";
/// Mattermost reads at most this many bytes of a webhook response
/// (`MaxIntegrationResponseSize`); a JSON value that does not end within them is an error.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Mattermost's connect (and TLS handshake) timeout for integration requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Go's `http.Client` follows at most this many redirects.
pub const MAX_REDIRECTS: usize = 10;

/// The 12 fields of an outgoing webhook payload (spec §2.2), all always present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload<'a> {
    pub token: &'a str,
    pub team_id: &'a str,
    pub team_domain: &'a str,
    pub channel_id: &'a str,
    pub channel_name: &'a str,
    /// The post's `create_at`, in milliseconds.
    pub create_at_ms: i64,
    pub user_id: &'a str,
    pub user_name: &'a str,
    pub post_id: &'a str,
    pub text: &'a str,
    pub trigger_word: &'a str,
    /// `file_ids` joined with `,`.
    pub file_ids: &'a str,
    /// posthook's fields after Mattermost's twelve, for a hook with `payload_extras: true`.
    pub extras: Option<Extras<'a>>,
}

/// The four fields `payload_extras: true` adds (README "Beyond Mattermost").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extras<'a> {
    /// The thread root, `""` for a root post.
    pub root_id: &'a str,
    /// `O`, `P`, `D` or `G`.
    pub channel_type: &'a str,
    /// `posted` or `edited`.
    pub event: &'a str,
    /// When the post was last edited, in milliseconds; `0` for `posted`.
    pub edit_at: i64,
}

impl Payload<'_> {
    /// The body for `content_type`.
    pub fn encode(&self, content_type: ContentType) -> String {
        match content_type {
            ContentType::Form => self.to_form(),
            ContentType::Json => self.to_json(),
        }
    }

    /// Go `url.Values.Encode()`: keys sorted, values `QueryEscape`d, `timestamp` in seconds;
    /// the extras, when asked for, sorted in among them.
    pub fn to_form(&self) -> String {
        let seconds = (self.create_at_ms / 1000).to_string();
        // Already in sorted order.
        let fields: [(&str, &str); 12] = [
            ("channel_id", self.channel_id),
            ("channel_name", self.channel_name),
            ("file_ids", self.file_ids),
            ("post_id", self.post_id),
            ("team_domain", self.team_domain),
            ("team_id", self.team_id),
            ("text", self.text),
            ("timestamp", &seconds),
            ("token", self.token),
            ("trigger_word", self.trigger_word),
            ("user_id", self.user_id),
            ("user_name", self.user_name),
        ];
        let mut out = String::with_capacity(256 + self.text.len() * 3);
        let Some(x) = &self.extras else {
            write_form(&mut out, &fields);
            return out;
        };
        let edit_at = x.edit_at.to_string();
        let mut all = fields.to_vec();
        all.extend([
            ("root_id", x.root_id),
            ("channel_type", x.channel_type),
            ("event", x.event),
            ("edit_at", edit_at.as_str()),
        ]);
        all.sort_unstable_by_key(|&(k, _)| k);
        write_form(&mut out, &all);
        out
    }

    /// Go `json.Marshal`: struct field order, compact, HTML-escaped, `timestamp` in ms.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(320 + self.text.len() * 2);
        let strings: [(&str, &str); 5] = [
            ("token", self.token),
            ("team_id", self.team_id),
            ("team_domain", self.team_domain),
            ("channel_id", self.channel_id),
            ("channel_name", self.channel_name),
        ];
        out.push('{');
        for (i, (k, v)) in strings.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_go_json_field(&mut out, k, v);
        }
        out.push_str(",\"timestamp\":");
        out.push_str(&self.create_at_ms.to_string());
        for (k, v) in [
            ("user_id", self.user_id),
            ("user_name", self.user_name),
            ("post_id", self.post_id),
            ("text", self.text),
            ("trigger_word", self.trigger_word),
            ("file_ids", self.file_ids),
        ] {
            out.push(',');
            push_go_json_field(&mut out, k, v);
        }
        if let Some(x) = &self.extras {
            for (k, v) in [
                ("root_id", x.root_id),
                ("channel_type", x.channel_type),
                ("event", x.event),
            ] {
                out.push(',');
                push_go_json_field(&mut out, k, v);
            }
            out.push_str(",\"edit_at\":");
            out.push_str(&x.edit_at.to_string());
        }
        out.push('}');
        out
    }
}

/// `k=v&k=v…`, each value `QueryEscape`d.
fn write_form(out: &mut String, fields: &[(&str, &str)]) {
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        query_escape_into(out, v);
    }
}

fn push_go_json_field(out: &mut String, key: &str, value: &str) {
    json_string_into(out, key);
    out.push(':');
    json_string_into(out, value);
}

/// Why a callback request did not produce a response body.
#[derive(Debug, Error)]
pub enum DeliveryError {
    #[error("callback address refused: {0}")]
    Refused(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Posthook could not make or follow the request (an unusable URL, too many redirects).
    #[error("request failed: {0}")]
    Http(String),
    /// The request could not be sent or its answer's head not read (connect, TLS, reset); the
    /// text is the whole chain of causes (hyper's errors never carry the URL).
    #[error("request failed: {}", describe(.0))]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The answer's body could not be read (cut, corrupt gzip).
    #[error("request failed: {0}")]
    Body(#[source] BodyError),
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// An answer that counts as a failure for a hook with `retry` (5xx, 429, 410, or another
    /// status without a reply on the last attempt).
    #[error("answered HTTP {0}")]
    Status(u16),
}

/// A webhook's answer: status (informational only: Mattermost ignores it) and at most
/// [`MAX_RESPONSE_BYTES`] + 1 bytes of body, so the decoder can tell "too large".
#[derive(Debug, Clone)]
pub struct WebhookAnswer {
    pub status: u16,
    pub body: Bytes,
    /// What the answer's `Retry-After` asks (only retries look at it).
    pub retry_after: Option<Duration>,
}

/// One webhook request that got an answer, with what a reply needs to know.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub post: Arc<CreatedPost>,
    pub hook_index: usize,
    pub hook: Arc<HookConfig>,
    pub callback_host: String,
    /// `webhook-id` (`msg_…`) for a hook that is signed; `None`: Mattermost's request.
    pub webhook_id: Option<String>,
}

impl Delivery {
    /// How this delivery's requests are sent: the Standard Webhooks headers they carry and
    /// the hook's deadline.
    pub fn send_options(&self) -> SendOptions<'_> {
        SendOptions {
            // The store keys every delivery by an id; the header goes only with the hooks that
            // ask for it (signed or retried), so that the others send Mattermost's request.
            webhook_id: self
                .webhook_id
                .as_deref()
                .filter(|_| self.hook.sending.has_webhook_id()),
            secrets: &self.hook.sending.signing_secrets,
            timeout: self.hook.sending.timeout,
        }
    }

    /// `hook=0 name="Build" post=… host=…` (and `webhook_id=msg_…` when the request has one):
    /// the fields that open every delivery and reply log line; the hook is named by its `id`,
    /// or by its position when it has none. Only the callback's host is ever shown, never its
    /// URL (a query may carry a secret), and never the hook's token or signing secrets.
    pub fn log_fields(&self) -> LogFields<'_> {
        LogFields(self)
    }
}

#[cfg(test)]
impl Delivery {
    /// A delivery of hook 0 ("Build it", callback `http://ci.example/h?secret=s`, token `t`)
    /// for post `post1`.
    pub(crate) fn sample() -> Delivery {
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
            webhook_id: None,
        }
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
            d.hook.name(d.hook_index),
            d.hook.display_name,
            d.post.id,
            d.callback_host
        )?;
        match &d.webhook_id {
            Some(id) => write!(f, " webhook_id={id}"),
            None => Ok(()),
        }
    }
}

/// How one request is sent beyond Mattermost's: the Standard Webhooks headers — `webhook-id`
/// when there is one; with secrets, also `webhook-timestamp` (this attempt's, in seconds) and
/// `webhook-signature` (one `v1` entry per secret over the bytes actually sent) — and the
/// hook's own deadline.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendOptions<'a> {
    pub webhook_id: Option<&'a str>,
    pub secrets: &'a [Secret],
    /// The whole-request deadline; `None`: the client's (the settings').
    pub timeout: Option<Duration>,
}

impl SendOptions<'_> {
    /// Mattermost's request: no such header, the settings' deadline.
    pub const NONE: SendOptions<'static> = SendOptions {
        webhook_id: None,
        secrets: &[],
        timeout: None,
    };
}

/// The client that sends webhook requests. Cheap to clone.
#[derive(Clone)]
pub struct WebhookClient {
    http: HttpClient,
    policy: Arc<AddressPolicy>,
    timeout: Duration,
}

impl WebhookClient {
    /// The client `config` describes (its SSRF allow list, timeout and idle connection bound),
    /// resolving names with `resolver`.
    pub fn from_config(
        config: &Config,
        resolver: Arc<dyn Resolver>,
    ) -> Result<WebhookClient, BoxError> {
        WebhookClient::new(
            AddressPolicy::new(&config.settings.allowed_untrusted_internal_connections),
            resolver,
            config.settings.outgoing_integration_requests_timeout,
            config.limits.max_idle_connections_per_host,
        )
    }

    /// A client with the given SSRF policy, resolver and whole-request timeout, keeping at
    /// most `max_idle_per_host` idle connections to each webhook host.
    pub fn new(
        policy: AddressPolicy,
        resolver: Arc<dyn Resolver>,
        timeout: Duration,
        max_idle_per_host: usize,
    ) -> Result<WebhookClient, BoxError> {
        let policy = Arc::new(policy);
        let http = HttpClient::new(
            GuardedResolver::new(resolver, Some(policy.clone())),
            CONNECT_TIMEOUT,
            max_idle_per_host,
            Duration::from_secs(30),
        )?;
        Ok(WebhookClient {
            http,
            policy,
            timeout,
        })
    }

    /// POSTs `body` to `url` and reads the answer, all under the whole-request timeout.
    ///
    /// As Go's client does for Mattermost: `Accept-Encoding: gzip` with the answer decoded,
    /// up to [`MAX_REDIRECTS`] redirects followed (301/302/303 turn the POST into a GET
    /// without a body, 307/308 repeat it; `Referer` set, except from https to http), every
    /// target checked against the SSRF policy before it is connected to.
    pub async fn send(
        &self,
        url: &Url,
        content_type: ContentType,
        body: Bytes,
        options: SendOptions<'_>,
    ) -> Result<WebhookAnswer, DeliveryError> {
        let mime = mime(content_type);
        // Boxed: the exchange's state (request, answer, body reader) is kilobytes, and every
        // task that awaits a delivery would otherwise carry and move it inline.
        let exchange = Box::pin(async {
            // Owned only once a redirect points elsewhere.
            let mut url: Cow<'_, Url> = Cow::Borrowed(url);
            // `None` once a redirect turned the POST into a GET.
            let mut body = Some(body);
            let mut referer: Option<String> = None;
            let mut redirects = 0;
            let timestamp = signing::unix_seconds();
            loop {
                self.check_literal(&url)?;
                let mut request = build_request(&url, mime, body.as_ref(), referer.as_deref())?;
                add_signing(
                    &mut request,
                    options,
                    timestamp,
                    body.as_deref().unwrap_or(&[]),
                )?;
                let response = self.http.send(request).await.map_err(classify)?;
                let status = response.status();
                if let Some(next) = redirect_target(&response, &url) {
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(DeliveryError::Http(format!(
                            "stopped after {MAX_REDIRECTS} redirects"
                        )));
                    }
                    if matches!(status.as_u16(), 301..=303) {
                        body = None;
                    }
                    referer = make_referer(&next, &url);
                    url = Cow::Owned(next);
                    continue;
                }
                let retry_after = retry_after(response.headers());
                let gzip = response
                    .headers()
                    .get(http::header::CONTENT_ENCODING)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
                let body = read_capped(response.into_body(), MAX_RESPONSE_BYTES + 1, gzip)
                    .await
                    .map_err(DeliveryError::Body)?;
                return Ok(WebhookAnswer {
                    status: status.as_u16(),
                    body,
                    retry_after,
                });
            }
        });
        let timeout = options.timeout.unwrap_or(self.timeout);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout(timeout)),
        }
    }

    /// IP-literal hosts never reach the resolver: the policy is applied here.
    fn check_literal(&self, url: &Url) -> Result<(), DeliveryError> {
        match literal_ip(url) {
            Some((host, ip)) if !self.policy.allows(&host, ip) => Err(DeliveryError::Refused(
                format!("{ip} is an untrusted internal address"),
            )),
            _ => Ok(()),
        }
    }
}

/// The `Content-Type` of `content_type`'s payloads.
pub(crate) fn mime(content_type: ContentType) -> &'static str {
    match content_type {
        ContentType::Form => "application/x-www-form-urlencoded",
        ContentType::Json => "application/json",
    }
}

/// The request for one hop: POST with the payload, or GET after a 301/302/303.
pub(crate) fn build_request(
    url: &Url,
    mime: &str,
    body: Option<&Bytes>,
    referer: Option<&str>,
) -> Result<http::Request<Body>, DeliveryError> {
    let uri: http::Uri = url
        .as_str()
        .parse()
        .map_err(|e| DeliveryError::Http(format!("unusable URL: {e}")))?;
    let mut request = http::Request::builder()
        .method(if body.is_some() {
            http::Method::POST
        } else {
            http::Method::GET
        })
        .uri(uri)
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::ACCEPT_ENCODING, "gzip");
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, mime);
    }
    if let Some(r) = referer {
        request = request.header(http::header::REFERER, r);
    }
    request
        .body(Body::new(body.cloned().unwrap_or_default()))
        .map_err(|e| DeliveryError::Http(format!("unusable request: {e}")))
}

/// Adds `signing`'s headers to `request`, whose body is `body`.
pub(crate) fn add_signing(
    request: &mut http::Request<Body>,
    signing: SendOptions<'_>,
    timestamp: i64,
    body: &[u8],
) -> Result<(), DeliveryError> {
    let Some(id) = signing.webhook_id else {
        return Ok(());
    };
    let value = |v: String| {
        http::HeaderValue::try_from(v)
            .map_err(|e| DeliveryError::Http(format!("unusable signing header: {e}")))
    };
    let headers = request.headers_mut();
    headers.insert("webhook-id", value(id.to_string())?);
    if !signing.secrets.is_empty() {
        headers.insert("webhook-timestamp", value(timestamp.to_string())?);
        let signature = signing::signature(signing.secrets, id, timestamp, body);
        headers.insert("webhook-signature", value(signature)?);
    }
    Ok(())
}

/// How long `Retry-After` asks to wait: delay-seconds, or an HTTP date (from now; a date in
/// the past is no wait). `None` when absent or unreadable.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Where a redirect answer points, when it is one to follow: 301, 302, 303, 307 or 308 with
/// a `Location` that resolves against `from` to an http(s) URL. Anything else is the answer.
fn redirect_target<B>(response: &http::Response<B>, from: &Url) -> Option<Url> {
    if !matches!(response.status().as_u16(), 301..=303 | 307 | 308) {
        return None;
    }
    let location = response
        .headers()
        .get(http::header::LOCATION)?
        .to_str()
        .ok()?;
    let next = from.join(location).ok()?;
    matches!(next.scheme(), "http" | "https").then_some(next)
}

/// The `Referer` of a redirected request: the previous URL without credentials and
/// fragment; none from https to http (Go and reqwest alike).
fn make_referer(next: &Url, previous: &Url) -> Option<String> {
    if next.scheme() == "http" && previous.scheme() == "https" {
        return None;
    }
    let mut r = previous.clone();
    let _ = r.set_username("");
    let _ = r.set_password(None);
    r.set_fragment(None);
    Some(r.into())
}

fn literal_ip(url: &Url) -> Option<(String, IpAddr)> {
    match url.host()? {
        url::Host::Ipv4(a) => Some((a.to_string(), IpAddr::V4(a))),
        url::Host::Ipv6(a) => Some((a.to_string(), IpAddr::V6(a))),
        url::Host::Domain(_) => None,
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> DeliveryError {
    if let Some(r) = refused(&e) {
        return DeliveryError::Refused(r.0.clone());
    }
    DeliveryError::Request(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t1() -> Payload<'static> {
        Payload {
            token: "Token",
            team_id: "TeamId",
            team_domain: "TeamDomain",
            channel_id: "ChannelId",
            channel_name: "ChannelName",
            create_at_ms: 123000,
            user_id: "UserId",
            user_name: "UserName",
            post_id: "PostId",
            text: "Text",
            trigger_word: "TriggerWord",
            file_ids: "FileIds",
            extras: None,
        }
    }

    /// Spec §5.1 T1: `TestOutgoingWebhookPayloadToFormValues`, and its JSON twin.
    #[test]
    fn t1_payload_encodings_are_byte_exact() {
        assert_eq!(
            t1().to_form(),
            "channel_id=ChannelId&channel_name=ChannelName&file_ids=FileIds&post_id=PostId&team_domain=TeamDomain&team_id=TeamId&text=Text&timestamp=123&token=Token&trigger_word=TriggerWord&user_id=UserId&user_name=UserName"
        );
        assert_eq!(
            t1().to_json(),
            r#"{"token":"Token","team_id":"TeamId","team_domain":"TeamDomain","channel_id":"ChannelId","channel_name":"ChannelName","timestamp":123000,"user_id":"UserId","user_name":"UserName","post_id":"PostId","text":"Text","trigger_word":"TriggerWord","file_ids":"FileIds"}"#
        );
    }

    #[test]
    fn form_timestamp_is_truncated_seconds() {
        let p = Payload {
            create_at_ms: 1445532266999,
            ..t1()
        };
        assert!(p.to_form().contains("&timestamp=1445532266&"));
        assert!(p.to_json().contains(",\"timestamp\":1445532266999,"));
    }

    #[test]
    fn json_payload_round_trips_through_a_json_parser() {
        let p = Payload {
            text: "multi\nline <tag> & \"quotes\" \u{2028} é",
            ..t1()
        };
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(v["text"], p.text);
        assert_eq!(v["timestamp"], 123000);
    }

    /// `payload_extras: true`: form keys stay sorted with the four extras among them; JSON
    /// appends them after `file_ids`, `edit_at` a number.
    #[test]
    fn payload_extras_are_byte_exact_in_both_encodings() {
        let p = Payload {
            extras: Some(Extras {
                root_id: "RootId",
                channel_type: "P",
                event: "edited",
                edit_at: 1445532266999,
            }),
            ..t1()
        };
        assert_eq!(
            p.to_form(),
            "channel_id=ChannelId&channel_name=ChannelName&channel_type=P&edit_at=1445532266999&event=edited&file_ids=FileIds&post_id=PostId&root_id=RootId&team_domain=TeamDomain&team_id=TeamId&text=Text&timestamp=123&token=Token&trigger_word=TriggerWord&user_id=UserId&user_name=UserName"
        );
        assert_eq!(
            p.to_json(),
            r#"{"token":"Token","team_id":"TeamId","team_domain":"TeamDomain","channel_id":"ChannelId","channel_name":"ChannelName","timestamp":123000,"user_id":"UserId","user_name":"UserName","post_id":"PostId","text":"Text","trigger_word":"TriggerWord","file_ids":"FileIds","root_id":"RootId","channel_type":"P","event":"edited","edit_at":1445532266999}"#
        );
        // Without extras, the twelve fields only (Mattermost's bytes).
        assert!(!t1().to_form().contains("event="));
        assert!(!t1().to_json().contains("\"event\""));
    }

    #[test]
    fn log_fields_show_the_host_and_never_the_url_or_token() {
        let shown = Delivery::sample().log_fields().to_string();
        assert_eq!(shown, "hook=0 name=\"Build it\" post=post1 host=ci.example");
        let mut named = Delivery::sample();
        let mut hook = (*named.hook).clone();
        hook.beyond.id = Some("ci-build".into());
        named.hook = Arc::new(hook);
        assert_eq!(
            named.log_fields().to_string(),
            "hook=ci-build name=\"Build it\" post=post1 host=ci.example",
            "a hook with an id is named by it"
        );
    }
}
