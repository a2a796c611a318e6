//! Webhook: the outgoing request, byte-exact as Mattermost sends it (spec §2), and the guarded
//! HTTP client that sends it.
//!
//! Encoding is pure: [`Payload::to_form`] reproduces Go's `url.Values.Encode` (sorted keys,
//! `QueryEscape`), [`Payload::to_json`] Go's `json.Marshal` (field order, HTML escaping). The
//! client refuses callback addresses that are loopback, private, link-local or unspecified
//! unless the admin allowed them; the check runs on the resolved addresses the connection is
//! made to (and on IP-literal hosts and redirect targets), so a DNS answer cannot slip past.

use std::borrow::Cow;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use url::Url;

use crate::client::{describe, read_capped, refused, BoxError, GuardedResolver, HttpClient};
use crate::config::{AllowEntry, ContentType};

/// `User-Agent` Mattermost's transport forces on integration requests.
pub const USER_AGENT: &str = "Mattermost-Bot/1.1";
pub use crate::reply::MAX_RESPONSE_BYTES;
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
}

impl Payload<'_> {
    /// The body for `content_type`.
    pub fn encode(&self, content_type: ContentType) -> String {
        match content_type {
            ContentType::Form => self.to_form(),
            ContentType::Json => self.to_json(),
        }
    }

    /// Go `url.Values.Encode()`: keys sorted, values `QueryEscape`d, `timestamp` in seconds.
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
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.push_str(k);
            out.push('=');
            query_escape_into(&mut out, v);
        }
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
        out.push('}');
        out
    }
}

fn push_go_json_field(out: &mut String, key: &str, value: &str) {
    go_json_string_into(out, key);
    out.push(':');
    go_json_string_into(out, value);
}

/// Go's `url.QueryEscape`: unreserved `A-Z a-z 0-9 - _ . ~` kept, space as `+`, every other
/// byte of the UTF-8 encoding as `%XX` with upper-case hex.
pub fn query_escape_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

/// A JSON string as Go's `encoding/json` writes it with HTML escaping on (Go ≥ 1.22):
/// `\"` `\\` `\n` `\r` `\t` `\b` `\f`, other control bytes as `\u00xx` (lower-case hex),
/// `<` `>` `&` as `\u003c` `\u003e` `\u0026`, U+2028/U+2029 escaped, everything else raw.
pub fn go_json_string_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '<' => Some("\\u003c"),
            '>' => Some("\\u003e"),
            '&' => Some("\\u0026"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            _ => None,
        };
        if esc.is_none() && (c as u32) >= 0x20 {
            continue;
        }
        out.push_str(&s[start..i]);
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let b = c as u8;
                out.push_str("\\u00");
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Why a callback request did not produce a response body.
#[derive(Debug, Error)]
pub enum DeliveryError {
    #[error("callback address refused: {0}")]
    Refused(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Http(String),
    #[error("response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// A webhook's answer: status (informational only: Mattermost ignores it) and at most
/// [`MAX_RESPONSE_BYTES`] + 1 bytes of body, so the decoder can tell "too large".
#[derive(Debug, Clone)]
pub struct WebhookAnswer {
    pub status: u16,
    pub body: Bytes,
}

/// Whether `ip` is in a range Mattermost refuses for integrations unless allowed
/// (its `reservedIPRanges`: RFC 6890 "this network", private, loopback, link-local,
/// unique-local, unspecified). IPv4-mapped IPv6 addresses are judged as the IPv4 address.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 0
                || o[0] == 10
                || o[0] == 127
                || (o[0] == 169 && o[1] == 254)
                || (o[0] == 172 && (16..=31).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// The SSRF policy: which internal destinations the admin allowed.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed_hosts: Vec<String>,
    allowed_nets: Vec<ipnet::IpNet>,
}

impl AddressPolicy {
    /// Builds the policy from `allowed_untrusted_internal_connections`.
    pub fn new(entries: &[AllowEntry]) -> AddressPolicy {
        let mut p = AddressPolicy::default();
        for e in entries {
            match e {
                AllowEntry::Host(h) => p.allowed_hosts.push(h.to_ascii_lowercase()),
                AllowEntry::Net(n) => p.allowed_nets.push(*n),
            }
        }
        p
    }

    /// Whether a connection to `ip`, reached through host name `host`, is allowed.
    pub fn allows(&self, host: &str, ip: IpAddr) -> bool {
        if !is_internal(ip) {
            return true;
        }
        let host = host.trim_end_matches('.');
        if self
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return true;
        }
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allowed_nets
            .iter()
            .any(|n| n.contains(&ip) || n.contains(&canonical))
    }
}

/// Resolves a host name to addresses; replaceable in tests.
pub trait Resolver: Send + Sync + 'static {
    /// All addresses of `host`, in the order they should be tried.
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (getaddrinfo through tokio).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
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
        config: &crate::config::Config,
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
    ) -> Result<WebhookAnswer, DeliveryError> {
        let mime = match content_type {
            ContentType::Form => "application/x-www-form-urlencoded",
            ContentType::Json => "application/json",
        };
        // Boxed: the exchange's state (request, answer, body reader) is kilobytes, and every
        // task that awaits a delivery would otherwise carry and move it inline.
        let exchange = Box::pin(async {
            // Owned only once a redirect points elsewhere.
            let mut url: Cow<'_, Url> = Cow::Borrowed(url);
            // `None` once a redirect turned the POST into a GET.
            let mut body = Some(body);
            let mut referer: Option<String> = None;
            let mut redirects = 0;
            loop {
                self.check_literal(&url)?;
                let request = build_request(&url, mime, body.as_ref(), referer.as_deref())?;
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
                let gzip = response
                    .headers()
                    .get(http::header::CONTENT_ENCODING)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
                let body = read_capped(response.into_body(), MAX_RESPONSE_BYTES + 1, gzip)
                    .await
                    .map_err(|e| DeliveryError::Http(e.to_string()))?;
                return Ok(WebhookAnswer {
                    status: status.as_u16(),
                    body,
                });
            }
        });
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Timeout(self.timeout)),
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

/// The request for one hop: POST with the payload, or GET after a 301/302/303.
fn build_request(
    url: &Url,
    mime: &str,
    body: Option<&Bytes>,
    referer: Option<&str>,
) -> Result<http::Request<crate::client::Body>, DeliveryError> {
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
        .body(crate::client::Body::new(body.cloned().unwrap_or_default()))
        .map_err(|e| DeliveryError::Http(format!("unusable request: {e}")))
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
    DeliveryError::Http(describe(&e))
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
    fn form_values_use_go_query_escape() {
        let rows: &[(&str, &str)] = &[
            ("a b", "a+b"),
            ("A-Z_a.z~09", "A-Z_a.z~09"),
            (",", "%2C"),
            ("*", "%2A"),
            ("'", "%27"),
            ("\n", "%0A"),
            ("é", "%C3%A9"),
            ("a&b=c+d", "a%26b%3Dc%2Bd"),
            ("100%", "100%25"),
            ("/?#", "%2F%3F%23"),
            ("😀", "%F0%9F%98%80"),
        ];
        for (input, want) in rows {
            let mut out = String::new();
            query_escape_into(&mut out, input);
            assert_eq!(out, *want, "escaping {input:?}");
        }
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
    fn json_strings_escape_like_go() {
        let rows: &[(&str, &str)] = &[
            ("<b>&</b>", r#""\u003cb\u003e\u0026\u003c/b\u003e""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\n\r\t", r#""\n\r\t""#),
            ("\u{8}\u{c}", r#""\b\f""#),
            ("\u{1}\u{1f}", r#""\u0001\u001f""#),
            ("\u{7f}", "\"\u{7f}\""),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("é日本😀", "\"é日本😀\""),
            ("", r#""""#),
        ];
        for (input, want) in rows {
            let mut out = String::new();
            go_json_string_into(&mut out, input);
            assert_eq!(out, *want, "encoding {input:?}");
        }
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

    #[test]
    fn internal_ranges_are_mattermosts() {
        let rows: &[(&str, bool)] = &[
            ("127.0.0.1", true),
            ("127.255.0.9", true),
            ("10.1.2.3", true),
            ("172.16.0.1", true),
            ("172.31.255.255", true),
            ("172.32.0.1", false),
            ("192.168.1.1", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("8.8.8.8", false),
            ("93.184.216.34", false),
            ("::1", true),
            ("::", true),
            ("fe80::1", true),
            ("fc00::1", true),
            ("fd12:3456::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", true),
            ("::ffff:8.8.8.8", false),
            ("2001:4860:4860::8888", false),
        ];
        for (ip, want) in rows {
            assert_eq!(is_internal(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    struct Fixed(Vec<IpAddr>);

    impl Resolver for Fixed {
        fn lookup(
            &self,
            _host: String,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let v = self.0.clone();
            Box::pin(async move { Ok(v) })
        }
    }

    /// What the guarded resolver hands the connector, for an answer of `ips` (no connection
    /// is ever made here).
    async fn guarded(ips: &[&str], allowed: &[AllowEntry]) -> Result<Vec<IpAddr>, String> {
        use hyper_util::client::legacy::connect::dns::Name;
        use std::str::FromStr;
        use tower_service::Service;
        let mut g = GuardedResolver::new(
            Arc::new(Fixed(ips.iter().map(|s| s.parse().unwrap()).collect())),
            Some(Arc::new(AddressPolicy::new(allowed))),
        );
        let name = Name::from_str("hooks.example.test").unwrap();
        match g.call(name).await {
            Ok(addrs) => Ok(addrs.map(|a| a.ip()).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[tokio::test]
    async fn guarded_resolver_hands_over_only_allowed_addresses() {
        let internal = [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "127.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.1.1.1",
            "::ffff:169.254.169.254",
        ];
        for ip in internal {
            let got = guarded(&[ip], &[]).await;
            assert!(got.is_err(), "{ip} must be refused, got {got:?}");
        }
        let got = guarded(&["10.0.0.1", "93.184.216.34", "fe80::1"], &[]).await;
        assert_eq!(
            got.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        let allowed = [AllowEntry::Net("10.0.0.0/8".parse().unwrap())];
        let got = guarded(&["10.0.0.1", "192.168.0.1"], &allowed).await;
        assert_eq!(got.unwrap(), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let by_name = [AllowEntry::Host("hooks.example.test".into())];
        let got = guarded(&["192.168.0.1"], &by_name).await;
        assert_eq!(got.unwrap(), vec!["192.168.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn allow_list_by_host_and_cidr() {
        let p = AddressPolicy::new(&[
            AllowEntry::Host("ci.internal".into()),
            AllowEntry::Net("10.0.0.0/8".parse().unwrap()),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.allows("CI.internal", ip("192.168.1.5")), "host match");
        assert!(p.allows("other", ip("10.9.9.9")), "CIDR match");
        assert!(
            p.allows("other", ip("::ffff:10.9.9.9")),
            "mapped v4 in CIDR"
        );
        assert!(!p.allows("other", ip("192.168.1.5")), "not allowed");
        assert!(p.allows("public", ip("8.8.8.8")), "public always allowed");
    }
}
