//! The webhook client on the wire, against hand-written endpoints on 127.0.0.1: the request
//! Mattermost's Go client would send, gzip answers decoded inside the size bound, Go's redirect
//! rules (303 turns the POST into a GET, 307 repeats it, at most 10 hops), TLS spoken to https
//! callbacks, and the bound on Mattermost's own answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use posthook::config::{AllowEntry, ContentType};
use posthook::mattermost::{ClientLimits, MattermostClient, DEFAULT_MAX_ANSWER_BYTES};
use posthook::net::{AddressPolicy, Resolver};
use posthook::stats::Stats;
use posthook::webhook::{
    DeliveryError, SendOptions, WebhookAnswer, WebhookClient, MAX_RESPONSE_BYTES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

/// Every name is 127.0.0.1.
struct Loopback;

impl Resolver for Loopback {
    fn lookup(
        &self,
        _host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async { Ok(vec![IpAddr::from([127, 0, 0, 1])]) })
    }
}

fn client() -> WebhookClient {
    let policy = AddressPolicy::new(&[AllowEntry::Net("127.0.0.1/32".parse().unwrap())]);
    WebhookClient::new(policy, Arc::new(Loopback), Duration::from_secs(5), 8).unwrap()
}

/// The webhook client POSTing the test's form payload to `url`.
async fn post_form(url: &Url) -> Result<WebhookAnswer, DeliveryError> {
    client()
        .send(
            url,
            ContentType::Form,
            Bytes::from(PAYLOAD),
            SendOptions::NONE,
        )
        .await
}

/// One request as it arrived: head (request line and headers, as sent) and body.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn request_line(&self) -> &str {
        self.head.lines().next().unwrap()
    }

    /// Header names (lower-cased) and values, in order.
    fn headers(&self) -> Vec<(String, String)> {
        self.head
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':').unwrap();
                (k.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Reads one request (head + `Content-Length` body).
async fn read_request(s: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end - 4].to_vec()).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { head, body })
}

type Responder = Arc<dyn Fn(&Seen, u16) -> Vec<u8> + Send + Sync>;

/// An endpoint that records every request and answers with `respond(request, own port)`,
/// one request per connection.
struct Endpoint {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Endpoint {
    async fn start(respond: Responder) -> Endpoint {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let st = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let st = st.clone();
                let respond = respond.clone();
                tokio::spawn(async move {
                    if let Some(req) = read_request(&mut s).await {
                        let answer = respond(&req, port);
                        st.lock().unwrap().push(req);
                        let _ = s.write_all(&answer).await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        Endpoint { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://hooks.test:{}{path}", self.port)).unwrap()
    }
}

fn answer(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

const PAYLOAD: &str = "channel_id=c&text=%23build+now&token=t";

#[tokio::test]
async fn the_request_is_the_one_gos_client_sends() {
    let ep = Endpoint::start(Arc::new(|_, _| {
        answer("200 OK", &[("Content-Type", "application/json")], b"{}")
    }))
    .await;
    let got = post_form(&ep.url("/hook?key=v%20x")).await.unwrap();
    assert_eq!((got.status, &got.body[..]), (200, &b"{}"[..]));
    let seen = ep.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.request_line(), "POST /hook?key=v%20x HTTP/1.1");
    let mut names: Vec<String> = r.headers().into_iter().map(|(k, _)| k).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "accept",
            "accept-encoding",
            "content-length",
            "content-type",
            "host",
            "user-agent"
        ],
        "{}",
        r.head
    );
    assert_eq!(r.header("host"), Some(format!("hooks.test:{}", ep.port)));
    assert_eq!(
        r.header("user-agent").as_deref(),
        Some("Mattermost-Bot/1.1")
    );
    assert_eq!(r.header("accept").as_deref(), Some("application/json"));
    assert_eq!(r.header("accept-encoding").as_deref(), Some("gzip"));
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("content-length"), Some(PAYLOAD.len().to_string()));
    assert_eq!(r.body, PAYLOAD.as_bytes());

    client()
        .send(
            &ep.url("/json"),
            ContentType::Json,
            Bytes::from("{}"),
            SendOptions::NONE,
        )
        .await
        .unwrap();
    assert_eq!(
        ep.seen()[1].header("content-type").as_deref(),
        Some("application/json")
    );
}

#[tokio::test]
async fn a_gzip_answer_is_decoded_and_bounded() {
    let reply = br#"{"text":"zipped reply"}"#;
    let ep = Endpoint::start(Arc::new(move |_, _| {
        answer("200 OK", &[("Content-Encoding", "gzip")], &gzip(reply))
    }))
    .await;
    let got = post_form(&ep.url("/")).await.unwrap();
    assert_eq!(&got.body[..], &reply[..]);

    // 8 MiB of JSON in a few KiB of gzip: decoding stops one byte past the bound, which the
    // reply decoder reads as "too large".
    let mut big = b"{\"text\":\"".to_vec();
    big.resize(8 << 20, b'a');
    let bomb = gzip(&big);
    assert!(bomb.len() < 64 << 10);
    let ep = Endpoint::start(Arc::new(move |_, _| {
        answer("200 OK", &[("Content-Encoding", "gzip")], &bomb)
    }))
    .await;
    let got = post_form(&ep.url("/")).await.unwrap();
    assert_eq!(got.body.len(), MAX_RESPONSE_BYTES + 1);
    assert!(got.body.starts_with(b"{\"text\":\"aaaa"));

    // Not gzip at all, or cut short: an error, not a garbled answer.
    let mut cut = gzip(reply);
    cut.truncate(cut.len() - 6);
    for body in [b"plainly not gzip".to_vec(), cut] {
        let ep = Endpoint::start(Arc::new(move |_, _| {
            answer("200 OK", &[("Content-Encoding", "gzip")], &body)
        }))
        .await;
        let got = post_form(&ep.url("/")).await;
        assert!(matches!(got, Err(DeliveryError::Body(_))), "{got:?}");
    }
}

/// `/r/N` redirects with `status` to `/r/N-1`; `/r/0` answers 200 with the method it got.
fn redirector(status: &'static str) -> Responder {
    Arc::new(move |req, _| {
        let path = req.request_line().split(' ').nth(1).unwrap().to_string();
        match path.strip_prefix("/r/").and_then(|n| n.parse::<u32>().ok()) {
            Some(n) if n > 0 => answer(status, &[("Location", &format!("/r/{}", n - 1))], b""),
            _ => {
                let method = req.request_line().split(' ').next().unwrap();
                answer(
                    "200 OK",
                    &[],
                    format!("{{\"text\":\"{method}\"}}").as_bytes(),
                )
            }
        }
    })
}

#[tokio::test]
async fn see_other_turns_the_post_into_a_get_and_307_repeats_it() {
    let ep = Endpoint::start(redirector("303 See Other")).await;
    let got = post_form(&ep.url("/r/1")).await.unwrap();
    assert_eq!(&got.body[..], br#"{"text":"GET"}"#);
    let seen = ep.seen();
    assert_eq!(seen[1].request_line(), "GET /r/0 HTTP/1.1");
    assert!(seen[1].body.is_empty());
    assert_eq!(seen[1].header("content-type"), None);
    assert_eq!(
        seen[1].header("referer"),
        Some(format!("http://hooks.test:{}/r/1", ep.port))
    );
    assert_eq!(
        seen[1].header("user-agent").as_deref(),
        Some("Mattermost-Bot/1.1")
    );

    let ep = Endpoint::start(redirector("307 Temporary Redirect")).await;
    let got = post_form(&ep.url("/r/2")).await.unwrap();
    assert_eq!(&got.body[..], br#"{"text":"POST"}"#);
    for r in ep.seen() {
        assert!(r.request_line().starts_with("POST "), "{}", r.head);
        assert_eq!(r.body, PAYLOAD.as_bytes());
    }
}

#[tokio::test]
async fn ten_redirects_are_followed_and_the_eleventh_is_an_error() {
    let ep = Endpoint::start(redirector("302 Found")).await;
    let got = post_form(&ep.url("/r/10")).await.unwrap();
    assert_eq!(&got.body[..], br#"{"text":"GET"}"#);
    assert_eq!(ep.seen().len(), 11);

    let ep = Endpoint::start(redirector("308 Permanent Redirect")).await;
    let got = post_form(&ep.url("/r/11")).await;
    match got {
        Err(DeliveryError::Http(e)) => assert!(e.contains("10 redirects"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(ep.seen().len(), 11, "the 11th redirect is not followed");

    // A 3xx without a usable Location is the answer itself.
    let ep = Endpoint::start(Arc::new(|_, _| answer("302 Found", &[], b""))).await;
    let got = post_form(&ep.url("/")).await.unwrap();
    assert_eq!(got.status, 302);
}

#[tokio::test]
async fn a_redirect_to_an_internal_address_is_refused_before_connecting() {
    let target = Endpoint::start(Arc::new(|_, _| answer("200 OK", &[], b""))).await;
    let to = format!("http://127.0.0.2:{}/", target.port);
    let ep = Endpoint::start(Arc::new(move |_, _| {
        answer("307 Temporary Redirect", &[("Location", &to)], b"")
    }))
    .await;
    let got = post_form(&ep.url("/")).await;
    assert!(matches!(got, Err(DeliveryError::Refused(_))), "{got:?}");
    assert!(target.seen().is_empty());
}

#[tokio::test]
async fn https_callbacks_speak_tls_with_the_host_name() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hello = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = s.read(&mut buf).await.unwrap();
        buf.truncate(n);
        buf
    });
    let url = Url::parse(&format!("https://secure-hooks.test:{port}/hook")).unwrap();
    let got = post_form(&url).await;
    assert!(matches!(got, Err(DeliveryError::Request(_))), "{got:?}");
    let hello = hello.await.unwrap();
    assert_eq!(&hello[..2], &[0x16, 0x03], "a TLS handshake record");
    assert!(
        hello.windows(17).any(|w| w == b"secure-hooks.test"),
        "SNI names the callback host"
    );
    assert!(
        !hello.windows(5).any(|w| w == b"build"),
        "no payload byte before the handshake"
    );
}

#[tokio::test]
async fn mattermost_answers_are_bounded() {
    // 5 MiB of JSON: over the 4 MiB default bound.
    let mut big = b"{\"id\":\"".to_vec();
    big.resize(5 << 20, b'a');
    big.extend_from_slice(b"\"}");
    let ep = Endpoint::start(Arc::new(move |_, _| {
        answer("201 Created", &[("Content-Type", "application/json")], &big)
    }))
    .await;
    let mm = MattermostClient::new(
        &format!("http://127.0.0.1:{}", ep.port),
        "bottoken",
        ClientLimits {
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            cache_max_entries: 100,
            max_idle: 8,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
        },
        Arc::new(Stats::default()),
    )
    .unwrap();
    let got = mm
        .create_post::<serde::de::IgnoredAny>(&serde_json::json!({"message": "m"}))
        .await;
    let err = got.expect_err("an answer over the bound is an error");
    assert!(err.to_string().contains("larger than"), "{err}");
    let seen = ep.seen();
    assert_eq!(
        seen[0].request_line(),
        "POST /api/v4/posts?set_online=false HTTP/1.1"
    );
    assert_eq!(
        seen[0].header("authorization").as_deref(),
        Some("Bearer bottoken")
    );
}
