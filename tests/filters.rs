//! Filter tests: posthook's `ProxyHttp` phases driven one at a time on a mock Pingora
//! `Session` (`tokio_test::io::Mock`, or a `tokio::io::duplex` pipe where what the proxy writes
//! must be read back), without an upstream.
//!
//! What a phase decides lives in the private `Ctx`, so it is observed the way the running proxy
//! shows it:
//! * the request-side decision ("could a hook match"): a following 201 is copied and handed to
//!   the dispatcher only when the request body said yes (`posts_observed` counts every 201 of
//!   post creation, matching or not);
//! * the start of the 201 copy: a `logging` call hands a job to the dispatcher only when the copy
//!   was started and completed. The fixture drops the `Dispatcher`, so the queue is closed and
//!   every submitted job is counted in `jobs_dropped`, one per job;
//! * what was copied: one test runs the dispatcher on the copy and sees it decode and parse
//!   (it reaches the channel look-up, which fails at once on an unused loopback port).
//!
//! Three tests here are regressions for bugs this layer found: an interim `100 Continue` ended
//! the observation, bodies Go's decoder accepts (invalid UTF-8, lone surrogates, keys in
//! another case, duplicate keys) were not inspected, and extra `X-Forwarded-For` lines were lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "shared/wiring.rs"]
mod wiring;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::SocketDigest;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};
use posthook::config::Config;
use posthook::dispatch::Dispatcher;
use posthook::proxy::{add_forwarded_headers, app_error_body, Ctx, Proxy};
use posthook::stats::{Snapshot, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A channel that the channel-only hook is bound to.
const CHANNEL_ONLY: &str = "chanonly";
/// Any other channel.
const CHANNEL: &str = "chan1";
/// The trigger word of the team-wide hook.
const TRIGGER: &str = "deploy";
/// `limits.max_inspected_body_bytes` of the standard fixture (the smallest the config allows).
const MAX_INSPECTED: usize = 1024;

/// A team-wide exact-mode hook on [`TRIGGER`] and a channel-only hook on [`CHANNEL_ONLY`].
fn standard_hooks() -> String {
    let url = format!("http://127.0.0.1:{}/hook", unused_port());
    format!(
        "hooks:\n  - trigger_words: [\"{TRIGGER}\"]\n    callback_urls: [\"{url}\"]\n    token: t1\n  - channel_id: {CHANNEL_ONLY}\n    callback_urls: [\"{url}\"]\n    token: t2\n"
    )
}

/// A loopback port nothing listens on (bound and released at once).
fn unused_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The proxy under test with its counters. `dispatcher` is `Some` only when asked to keep the
/// queue open; otherwise it is dropped and every submitted job counts in `jobs_dropped`.
struct Fixture {
    proxy: Proxy,
    stats: Arc<Stats>,
    dispatcher: Option<Dispatcher>,
}

impl Fixture {
    /// The standard hooks, the queue closed.
    fn new() -> Fixture {
        Fixture::with(&standard_hooks(), false)
    }

    /// `hooks` is appended to the config verbatim (a `hooks:` section, or nothing).
    fn with(hooks: &str, keep_dispatcher: bool) -> Fixture {
        let port = unused_port();
        let text = format!(
            "listen: \"127.0.0.1:0\"\nupstream: \"http://127.0.0.1:{port}\"\nbot_token: \"bottoken\"\nlimits:\n  max_inspected_body_bytes: {MAX_INSPECTED}\n  lookup_timeout_seconds: 2\n{hooks}"
        );
        let config =
            Config::from_yaml("t.yaml", &text, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let stats = Arc::new(Stats::default());
        let (proxy, _, dispatcher) = wiring::wire(&config, stats.clone());
        Fixture {
            proxy,
            stats,
            dispatcher: keep_dispatcher.then_some(dispatcher),
        }
    }

    fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }

    /// Runs `request_filter` on a session that read `head`; it must never answer by itself.
    async fn request(&self, head: &str) -> (Session, Ctx) {
        self.filter(session(head).await).await
    }

    /// Runs `request_filter` on `session`; it must never answer by itself.
    async fn filter(&self, mut session: Session) -> (Session, Ctx) {
        let mut ctx = self.proxy.new_ctx();
        let responded = self
            .proxy
            .request_filter(&mut session, &mut ctx)
            .await
            .unwrap();
        assert!(
            !responded,
            "request_filter answered by itself: {:?}",
            session.req_header().uri
        );
        (session, ctx)
    }

    /// Streams `chunks` through `request_body_filter` (end of stream on the last chunk, or as a
    /// separate `None` when `eos_apart`), checking that no chunk is altered or held back.
    async fn request_body(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        chunks: &[Bytes],
        eos_apart: bool,
        what: &str,
    ) {
        for (i, chunk) in chunks.iter().enumerate() {
            let eos = !eos_apart && i + 1 == chunks.len();
            let mut body = Some(chunk.clone());
            self.proxy
                .request_body_filter(session, &mut body, eos, ctx)
                .await
                .unwrap();
            assert_eq!(
                body.as_ref(),
                Some(chunk),
                "{what}: request chunk {i} was altered or held back"
            );
        }
        if eos_apart || chunks.is_empty() {
            let mut body = None;
            self.proxy
                .request_body_filter(session, &mut body, true, ctx)
                .await
                .unwrap();
            assert_eq!(body, None, "{what}: the end of stream gained a body");
        }
    }

    /// `request_filter` on `head`, then `body` in one chunk that ends the stream, each checked as
    /// above: the request side of a whole request.
    async fn whole_request(&self, head: &str, body: &[u8], what: &str) -> (Session, Ctx) {
        let (mut session, mut ctx) = self.request(head).await;
        let chunks = [Bytes::copy_from_slice(body)];
        self.request_body(&mut session, &mut ctx, &chunks, false, what)
            .await;
        (session, ctx)
    }

    /// Runs `upstream_response_filter`, checking that the header is left as the upstream sent it.
    async fn response(&self, session: &mut Session, ctx: &mut Ctx, resp: &ResponseHeader) {
        let mut passed = resp.clone();
        self.proxy
            .upstream_response_filter(session, &mut passed, ctx)
            .await
            .unwrap();
        assert_eq!(passed.status, resp.status, "response status changed");
        assert_eq!(passed.headers, resp.headers, "response headers changed");
    }

    /// Streams `chunks` through `upstream_response_body_filter`, checking that none is altered.
    fn response_body(&self, session: &mut Session, ctx: &mut Ctx, chunks: &[Bytes], what: &str) {
        for (i, chunk) in chunks.iter().enumerate() {
            let eos = i + 1 == chunks.len();
            let mut body = Some(chunk.clone());
            let delay = self
                .proxy
                .upstream_response_body_filter(session, &mut body, eos, ctx)
                .unwrap();
            assert_eq!(delay, None, "{what}: response chunk {i} delayed");
            assert_eq!(
                body.as_ref(),
                Some(chunk),
                "{what}: response chunk {i} was altered or held back"
            );
        }
    }

    /// The whole exchange of `POST /api/v4/posts` with `body` in `chunks`, answered by a created
    /// post: returns whether the proxy handed the post to the dispatcher (counted in
    /// `jobs_dropped`, the queue being closed), i.e. whether it decided that a hook could match.
    async fn decides(&self, chunks: &[Bytes], eos_apart: bool, what: &str) -> bool {
        let before = self.stats().jobs_dropped;
        let (mut session, mut ctx) = self.request(&post_head(&[])).await;
        self.request_body(&mut session, &mut ctx, chunks, eos_apart, what)
            .await;
        self.response(&mut session, &mut ctx, &bare(201)).await;
        let answer = Bytes::from(created_post(CHANNEL, "deploy now"));
        self.response_body(&mut session, &mut ctx, &[answer], what);
        self.proxy.logging(&mut session, None, &mut ctx).await;
        self.stats().jobs_dropped - before == 1
    }
}

/// A response header with `status` and nothing else.
fn bare(status: u16) -> ResponseHeader {
    ResponseHeader::build(status, None).unwrap()
}

/// The counters after one created post that nothing was done with.
fn created_only() -> Snapshot {
    Snapshot {
        posts_observed: 1,
        ..Snapshot::default()
    }
}

/// A session that has read the request `head` (which must be complete) from a mock client.
async fn session(head: &str) -> Session {
    let mock = tokio_test::io::Builder::new().read(head.as_bytes()).build();
    let mut session = Session::new_h1(Box::new(mock));
    assert!(session.read_request().await.unwrap(), "{head:?}");
    session
}

/// `POST /api/v4/posts` request head with `extra` header lines.
fn post_head(extra: &[&str]) -> String {
    head("POST", "/api/v4/posts", extra)
}

fn head(method: &str, target: &str, extra: &[&str]) -> String {
    let mut h = format!("{method} {target} HTTP/1.1\r\nHost: chat.example.com\r\nContent-Type: application/json\r\nContent-Length: 10\r\n");
    for line in extra {
        h.push_str(line);
        h.push_str("\r\n");
    }
    h.push_str("\r\n");
    h
}

/// A post-creation body.
fn post_body(channel_id: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "channel_id": channel_id, "message": message })
        .to_string()
        .into_bytes()
}

/// `body` cut at each offset in `cuts` (ascending).
fn split(body: &[u8], cuts: &[usize]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        out.push(Bytes::copy_from_slice(&body[start..cut]));
        start = cut;
    }
    out
}

/// Offset of the `n`th byte of the first `needle` in `body`.
fn at(body: &[u8], needle: &[u8], n: usize) -> usize {
    body.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not in body"))
        + n
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A 201 body as Mattermost returns it for a created post.
fn created_post(channel_id: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "id": "post1", "create_at": 1, "update_at": 1, "user_id": "user1",
        "channel_id": channel_id, "root_id": "", "message": message, "type": "",
        "props": {}, "hashtags": "", "file_ids": null, "metadata": {},
    })
    .to_string()
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// 1. request_filter
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn only_post_to_the_posts_route_is_observed() {
    let matching = post_body(CHANNEL, "deploy now");
    let cases: &[(&str, &str, &[&str], bool, &str)] = &[
        ("POST", "/api/v4/posts", &[], true, "post creation"),
        (
            "POST",
            "/api/v4/posts?set_online=true",
            &[],
            true,
            "any query string",
        ),
        ("POST", "/api/v4/posts?", &[], true, "empty query string"),
        ("GET", "/api/v4/posts", &[], false, "GET"),
        ("PUT", "/api/v4/posts", &[], false, "PUT"),
        ("PATCH", "/api/v4/posts", &[], false, "PATCH"),
        ("POST", "/api/v4/posts/abc/patch", &[], false, "a sub-route"),
        (
            "POST",
            "/api/v4/posts/",
            &[],
            false,
            "trailing slash (another route for Mattermost)",
        ),
        ("POST", "/api/v4/postsx", &[], false, "a longer path"),
        (
            "POST",
            "/api/v4/Posts",
            &[],
            false,
            "paths are case-sensitive",
        ),
        (
            "POST",
            "/api/v4/posts/ids",
            &[],
            false,
            "the search-by-ids route",
        ),
        (
            "POST",
            "/api/v4/posts",
            &["Content-Encoding: gzip"],
            false,
            "a compressed request body",
        ),
        (
            "POST",
            "/api/v4/posts",
            &["Content-Encoding: identity"],
            false,
            "any Content-Encoding at all",
        ),
    ];
    for &(method, target, extra, want, what) in cases {
        let fx = Fixture::new();
        let (mut session, mut ctx) = fx
            .whole_request(&head(method, target, extra), &matching, what)
            .await;
        fx.response(&mut session, &mut ctx, &bare(201)).await;
        // Every post created through posthook counts; only the routes that create one do.
        let creates = method == "POST" && target.split('?').next() == Some("/api/v4/posts");
        assert_eq!(
            fx.stats().posts_observed,
            u64::from(creates),
            "{what}: {method} {target} {extra:?}: counted as created"
        );
        let answer = Bytes::from(created_post(CHANNEL, "deploy now"));
        fx.response_body(&mut session, &mut ctx, &[answer], what);
        fx.proxy.logging(&mut session, None, &mut ctx).await;
        let inspected = fx.stats().jobs_dropped == 1;
        assert_eq!(
            inspected, want,
            "{what}: {method} {target} {extra:?}: inspected"
        );
    }
}

#[tokio::test]
async fn nothing_is_inspected_without_hooks() {
    for (hooks, what) in [("", "no hooks key"), ("hooks: []\n", "an empty hooks list")] {
        let fx = Fixture::with(hooks, false);
        let body = [Bytes::from(post_body(CHANNEL, "deploy now"))];
        assert!(!fx.decides(&body, false, what).await, "{what}");
        assert_eq!(
            fx.stats(),
            created_only(),
            "{what}: no counter moves but the created post's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. request_body_filter
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn request_body_is_never_altered_and_decides_at_its_end() {
    struct Row {
        what: &'static str,
        body: Vec<u8>,
        /// Where to cut the body into chunks (byte offsets).
        cuts: Vec<usize>,
        could_match: bool,
    }
    let row = |what, body: Vec<u8>, cuts: Vec<usize>, could_match| Row {
        what,
        body,
        cuts,
        could_match,
    };
    let cafe = post_body(CHANNEL, "deploy caf\u{e9} \u{2713}");
    let nbsp = post_body(CHANNEL, "\u{a0}deploy now");
    let mut non_utf8_first = br#"{"channel_id":"chan1","message":"#.to_vec();
    non_utf8_first.extend_from_slice(b"\"\xffdeploy now\"}");
    let mut non_utf8_channel = br#"{"channel_id":"chan"#.to_vec();
    non_utf8_channel.extend_from_slice(b"\xff\",\"message\":\"\"}");
    let rows = vec![
        row("matching first word, one chunk", post_body(CHANNEL, "deploy now"), vec![], true),
        row(
            "matching first word, split inside the word",
            post_body(CHANNEL, "deploy now"),
            vec![3, at(&post_body(CHANNEL, "deploy now"), b"deploy", 3)],
            true,
        ),
        row(
            "matching, split inside a multi-byte character",
            cafe.clone(),
            vec![at(&cafe, "\u{e9}".as_bytes(), 1), at(&cafe, "\u{2713}".as_bytes(), 2)],
            true,
        ),
        row(
            "matching, byte by byte",
            post_body(CHANNEL, "deploy"),
            (1..post_body(CHANNEL, "deploy").len()).collect(),
            true,
        ),
        row("the only word", post_body(CHANNEL, "deploy"), vec![], true),
        row("trigger word not first", post_body(CHANNEL, "hello deploy"), vec![10], false),
        row("a longer first word (exact mode)", post_body(CHANNEL, "deployed"), vec![], false),
        row("trigger words are case-sensitive", post_body(CHANNEL, "Deploy"), vec![], false),
        row("empty message", post_body(CHANNEL, ""), vec![], false),
        row("message missing", br#"{"channel_id":"chan1"}"#.to_vec(), vec![], false),
        row("message null", br#"{"channel_id":"chan1","message":null}"#.to_vec(), vec![], false),
        row(
            "channel-only hook's channel, empty message",
            post_body(CHANNEL_ONLY, ""),
            vec![5],
            true,
        ),
        row(
            "channel-only hook's channel, message missing",
            br#"{"channel_id":"chanonly"}"#.to_vec(),
            vec![],
            true,
        ),
        row(
            "channel-only hook's channel, any message",
            post_body(CHANNEL_ONLY, "hello"),
            vec![],
            true,
        ),
        row(
            // Mattermost answers 403 without a channel, and a non-201 gives up (see the
            // response tests): saying yes here costs only the copy of a small body.
            "channel_id missing, matching word: the pre-check cannot rule it out",
            br#"{"message":"deploy now"}"#.to_vec(),
            vec![],
            true,
        ),
        row(
            "channel_id missing, no matching word",
            br#"{"message":"hello"}"#.to_vec(),
            vec![],
            false,
        ),
        row(
            // Go reads null as "no value": the same as a missing channel_id.
            "channel_id null, matching word: the pre-check cannot rule it out",
            br#"{"channel_id":null,"message":"deploy"}"#.to_vec(),
            vec![],
            true,
        ),
        row(
            "invalid JSON (cut short)",
            br#"{"channel_id":"chan1","message":"deploy now"#.to_vec(),
            vec![8],
            false,
        ),
        row("invalid JSON (not JSON)", b"deploy now".to_vec(), vec![], false),
        row("a JSON array", br#"["deploy"]"#.to_vec(), vec![], false),
        row("an empty body", Vec::new(), vec![], false),
        row(
            // Mattermost's decoder makes U+FFFD of it, which is not whitespace: no match there.
            "non-UTF-8 byte glued to the trigger word",
            non_utf8_first,
            vec![],
            false,
        ),
        row(
            "non-UTF-8 byte in channel_id (no such channel in Mattermost)",
            non_utf8_channel,
            vec![],
            false,
        ),
        row(
            "leading NBSP before the trigger word",
            nbsp.clone(),
            vec![at(&nbsp, "\u{a0}".as_bytes(), 1)],
            true,
        ),
        row(
            "NBSP written as a JSON escape",
            br#"{"channel_id":"chan1","message":"\u00a0deploy now"}"#.to_vec(),
            vec![],
            true,
        ),
        row(
            "ideographic space and newline before the trigger word",
            post_body(CHANNEL, "\u{3000}\n\tdeploy now"),
            vec![],
            true,
        ),
        row(
            "NBSP after the trigger word ends it",
            post_body(CHANNEL, "deploy\u{a0}now"),
            vec![],
            true,
        ),
        row(
            // Not whitespace for Go's strings.Fields either.
            "zero-width space before the trigger word",
            post_body(CHANNEL, "\u{200b}deploy now"),
            vec![],
            false,
        ),
        row(
            "other fields around the ones that matter",
            br#"{"root_id":"","props":{"a":[1,{"message":"x"}]},"channel_id":"chan1","file_ids":[],"message":"deploy it","pending_post_id":"p"}"#.to_vec(),
            vec![17, 40],
            true,
        ),
    ];
    // One proxy for every row: each decision is read as the change in `jobs_dropped`.
    let fx = Fixture::new();
    for r in rows {
        for eos_apart in [false, true] {
            let what = format!("{} (end of stream apart: {eos_apart})", r.what);
            let chunks = split(&r.body, &r.cuts);
            let decided = fx.decides(&chunks, eos_apart, &what).await;
            assert_eq!(
                decided,
                r.could_match,
                "{what}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(fx.stats().bodies_too_large, 0, "{what}");
        }
    }
}

/// A matching post body padded with JSON whitespace to exactly `len` bytes.
fn padded_post(len: usize) -> Vec<u8> {
    let mut body = post_body(CHANNEL, "deploy now");
    let close = body.pop().unwrap();
    body.resize(len - 1, b' ');
    body.push(close);
    body
}

#[tokio::test]
async fn oversized_request_body_passes_through_untouched_and_is_not_inspected() {
    let big = post_body(
        CHANNEL,
        &format!("deploy {}", "x".repeat(2 * MAX_INSPECTED)),
    );
    let cases: &[(&str, Vec<u8>, Vec<usize>, bool)] = &[
        (
            "exactly the bound, one chunk",
            padded_post(MAX_INSPECTED),
            vec![],
            true,
        ),
        (
            "exactly the bound, two chunks",
            padded_post(MAX_INSPECTED),
            vec![500],
            true,
        ),
        (
            "one byte over, one chunk",
            padded_post(MAX_INSPECTED + 1),
            vec![],
            false,
        ),
        (
            "one byte over, in the last chunk",
            padded_post(MAX_INSPECTED + 1),
            vec![MAX_INSPECTED],
            false,
        ),
        (
            "far over, the bound passed mid-stream",
            big.clone(),
            vec![100, MAX_INSPECTED - 10, MAX_INSPECTED + 10],
            false,
        ),
        ("far over, one chunk", big, vec![], false),
    ];
    for (what, body, cuts, inspected) in cases {
        // The request_body helper checks that every chunk still passes unaltered.
        let fx = Fixture::new();
        let decided = fx.decides(&split(body, cuts), false, what).await;
        assert_eq!(decided, *inspected, "{what}: decision");
        let too_large = u64::from(!inspected);
        assert_eq!(
            fx.stats().bodies_too_large,
            too_large,
            "{what}: counted once"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. upstream_response_filter + upstream_response_body_filter
// ---------------------------------------------------------------------------------------------

/// The request side of a post that could trigger a hook.
async fn interested(fx: &Fixture) -> (Session, Ctx) {
    let body = post_body(CHANNEL, "deploy now");
    fx.whole_request(&post_head(&[]), &body, "request").await
}

#[tokio::test]
async fn only_a_201_in_a_decodable_encoding_is_copied_and_handed_over() {
    struct Row {
        what: &'static str,
        status: u16,
        encoding: Option<&'static str>,
        observed: u64,
        unparsed: u64,
        handed_over: u64,
    }
    let row = |what, status, encoding, observed, unparsed, handed_over| Row {
        what,
        status,
        encoding,
        observed,
        unparsed,
        handed_over,
    };
    let rows = [
        row("201, no Content-Encoding", 201, None, 1, 0, 1),
        row("201, identity", 201, Some("identity"), 1, 0, 1),
        row("201, gzip", 201, Some("gzip"), 1, 0, 1),
        row("201, x-gzip", 201, Some("x-gzip"), 1, 0, 1),
        row("201, GZIP with spaces", 201, Some(" GZIP "), 1, 0, 1),
        row("201, deflate", 201, Some("deflate"), 1, 0, 1),
        row("201, br is not decodable", 201, Some("br"), 1, 1, 0),
        row("201, zstd is not decodable", 201, Some("zstd"), 1, 1, 0),
        row(
            "201, stacked codings are not decodable",
            201,
            Some("gzip, br"),
            1,
            1,
            0,
        ),
        row("200", 200, None, 0, 0, 0),
        row("200, gzip", 200, Some("gzip"), 0, 0, 0),
        row("400", 400, None, 0, 0, 0),
        row("403", 403, None, 0, 0, 0),
        row("500", 500, None, 0, 0, 0),
        row("502", 502, None, 0, 0, 0),
    ];
    let plain = created_post(CHANNEL, "deploy now");
    for r in rows {
        let fx = Fixture::new();
        let (mut session, mut ctx) = interested(&fx).await;
        let mut resp = ResponseHeader::build(r.status, None).unwrap();
        let body = match r.encoding {
            Some(e) => {
                resp.insert_header("Content-Encoding", e).unwrap();
                match e.trim().to_ascii_lowercase().as_str() {
                    "gzip" | "x-gzip" => gzip(&plain),
                    "deflate" => zlib(&plain),
                    _ => plain.clone(),
                }
            }
            None => plain.clone(),
        };
        fx.response(&mut session, &mut ctx, &resp).await;
        let cut = body.len() / 2;
        fx.response_body(&mut session, &mut ctx, &split(&body, &[1, cut]), r.what);
        fx.proxy.logging(&mut session, None, &mut ctx).await;
        let s = fx.stats();
        assert_eq!(s.posts_observed, r.observed, "{}: posts_observed", r.what);
        assert_eq!(s.posts_unparsed, r.unparsed, "{}: posts_unparsed", r.what);
        assert_eq!(s.jobs_dropped, r.handed_over, "{}: handed over", r.what);
        assert_eq!(s.bodies_too_large, 0, "{}", r.what);
    }
}

#[tokio::test]
async fn a_201_is_not_copied_when_no_hook_could_match() {
    let cases: &[(&str, Vec<u8>, &[&str])] = &[
        ("no matching word", post_body(CHANNEL, "hello"), &[]),
        (
            "not observed at all",
            post_body(CHANNEL, "deploy"),
            &["Content-Encoding: gzip"],
        ),
    ];
    for (what, req, extra) in cases {
        let fx = Fixture::new();
        let (mut session, mut ctx) = fx.whole_request(&post_head(extra), req, what).await;
        fx.response(&mut session, &mut ctx, &bare(201)).await;
        let body = created_post(CHANNEL, "hello");
        fx.response_body(&mut session, &mut ctx, &split(&body, &[7]), what);
        fx.proxy.logging(&mut session, None, &mut ctx).await;
        assert_eq!(
            fx.stats(),
            created_only(),
            "{what}: counted as created, nothing else"
        );
    }
}

#[tokio::test]
async fn a_201_is_handed_over_whole_or_as_far_as_it_was_read() {
    let body = created_post(CHANNEL, "deploy now");
    let over = created_post(CHANNEL, &format!("deploy {}", "x".repeat(MAX_INSPECTED)));
    struct Row<'a> {
        what: &'a str,
        body: &'a [u8],
        /// The upstream's body reached its end.
        complete: bool,
        /// `logging` reports an error for the exchange.
        failed: bool,
        handed_over: u64,
        too_large: u64,
    }
    let row = |what, body, complete, failed, handed_over, too_large| Row {
        what,
        body,
        complete,
        failed,
        handed_over,
        too_large,
    };
    let rows = [
        row("complete, no error", &body[..], true, false, 1, 0),
        // The post exists: the part read is handed over, and the dispatcher recovers the post
        // by the id it shows.
        row("cut short (no end of stream)", &body, false, false, 1, 0),
        // The post exists in Mattermost, which fires its hooks whatever the client does.
        row(
            "complete, but the client went away",
            &body,
            true,
            true,
            1,
            0,
        ),
        row("201 body over the bound", &over, true, false, 0, 1),
    ];
    for r in rows {
        let what = r.what;
        let fx = Fixture::new();
        let (mut session, mut ctx) = interested(&fx).await;
        let created = ResponseHeader::build(201, None).unwrap();
        fx.response(&mut session, &mut ctx, &created).await;
        let chunks = split(r.body, &[r.body.len() / 3]);
        if r.complete {
            fx.response_body(&mut session, &mut ctx, &chunks, what);
        } else {
            for (i, chunk) in chunks.iter().enumerate() {
                let mut b = Some(chunk.clone());
                fx.proxy
                    .upstream_response_body_filter(&mut session, &mut b, false, &mut ctx)
                    .unwrap();
                assert_eq!(b.as_ref(), Some(chunk), "{what}: chunk {i}");
            }
        }
        let err = Error::explain(ErrorType::ConnectionClosed, "client went away");
        let e = r.failed.then_some(err.as_ref());
        fx.proxy.logging(&mut session, e, &mut ctx).await;
        let s = fx.stats();
        assert_eq!(s.jobs_dropped, r.handed_over, "{what}: handed over");
        assert_eq!(s.bodies_too_large, r.too_large, "{what}: bodies_too_large");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copied_201_reaches_the_dispatcher_byte_exact() {
    // gzip and zlib carry checksums: a single byte lost or changed makes the job undecodable.
    let plain = created_post(CHANNEL, "deploy now");
    let cases: &[(&str, Option<&str>, Vec<u8>)] = &[
        ("identity", None, plain.clone()),
        ("gzip", Some("gzip"), gzip(&plain)),
        ("deflate", Some("deflate"), zlib(&plain)),
    ];
    for (what, encoding, body) in cases {
        let mut fx = Fixture::with(&standard_hooks(), true);
        let dispatcher = Arc::new(fx.dispatcher.take().unwrap());
        let runner = tokio::spawn({
            let d = dispatcher.clone();
            async move { d.run().await }
        });
        let (mut session, mut ctx) = interested(&fx).await;
        let mut resp = ResponseHeader::build(201, None).unwrap();
        if let Some(e) = encoding {
            resp.insert_header("Content-Encoding", *e).unwrap();
        }
        fx.response(&mut session, &mut ctx, &resp).await;
        let cuts: Vec<usize> = (1..body.len()).step_by(7).collect();
        fx.response_body(&mut session, &mut ctx, &split(body, &cuts), what);
        fx.proxy.logging(&mut session, None, &mut ctx).await;

        // Decoded and parsed, the post matches and the dispatcher looks up its channel, which
        // fails at once: the "Mattermost" is an unused loopback port.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = fx.stats();
            assert_eq!(s.posts_unparsed, 0, "{what}: the job did not decode");
            if s.lookup_failures >= 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no look-up; stats {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(fx.stats().jobs_dropped, 0, "{what}");
        runner.abort();
    }
}

#[tokio::test]
async fn an_interim_100_continue_does_not_end_the_observation() {
    // Mattermost (Go net/http) answers `Expect: 100-continue` with an interim 100 before its
    // 201, and Pingora runs the response filters on every response header, interim ones
    // included. curl sends the Expect header for larger bodies. (Regression: such posts fired
    // no webhook.)
    let fx = Fixture::new();
    let body = post_body(CHANNEL, "deploy now");
    let (mut session, mut ctx) = fx
        .whole_request(&post_head(&["Expect: 100-continue"]), &body, "request")
        .await;
    fx.response(&mut session, &mut ctx, &bare(100)).await;
    fx.response(&mut session, &mut ctx, &bare(201)).await;
    fx.response_body(
        &mut session,
        &mut ctx,
        &[Bytes::from(created_post(CHANNEL, "deploy now"))],
        "201",
    );
    fx.proxy.logging(&mut session, None, &mut ctx).await;
    let s = fx.stats();
    assert_eq!(s.posts_observed, 1, "the 201 after the 100 is observed");
    assert_eq!(s.jobs_dropped, 1, "and handed over");
}

#[tokio::test]
async fn request_bodies_that_mattermost_accepts_are_inspected_like_mattermost_reads_them() {
    // Go's encoding/json, which Mattermost decodes the post with, replaces invalid UTF-8 and
    // lone surrogates with U+FFFD, matches keys case-insensitively and lets the last duplicate
    // key win. serde_json rejects the first two, ignores unknown-case keys and fails on
    // duplicates, so posthook decides "no hook" for posts Mattermost creates and would fire on.
    let mut invalid_utf8 = br#"{"channel_id":"chan1","message":"deploy "#.to_vec();
    invalid_utf8.extend_from_slice(b"caf\xe9\"}");
    let cases: &[(&str, Vec<u8>)] = &[
        ("a Latin-1 byte after the trigger word", invalid_utf8),
        (
            "a lone surrogate escape after the trigger word",
            br#"{"channel_id":"chan1","message":"deploy \ud800"}"#.to_vec(),
        ),
        (
            "keys in another case",
            br#"{"Channel_Id":"chan1","Message":"deploy now"}"#.to_vec(),
        ),
        (
            "a duplicate message key (the last wins)",
            br#"{"channel_id":"chan1","message":"x","message":"deploy now"}"#.to_vec(),
        ),
    ];
    let mut wrong = Vec::new();
    for (what, body) in cases {
        let fx = Fixture::new();
        if !fx.decides(&[Bytes::from(body.clone())], false, what).await {
            wrong.push(*what);
        }
    }
    assert!(wrong.is_empty(), "no hook considered for: {wrong:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. upstream_request_filter / add_forwarded_headers
// ---------------------------------------------------------------------------------------------

/// Makes `session` report `peer` as the client address, as a real TCP connection would.
fn set_client_addr(session: &mut Session, peer: SocketAddr) {
    let digest = SocketDigest::from_raw_fd(-1);
    digest.peer_addr.set(Some(PingoraAddr::Inet(peer))).unwrap();
    session.digest_mut().unwrap().socket_digest = Some(Arc::new(digest));
}

#[tokio::test]
async fn x_forwarded_for_is_added_and_nothing_else_is_touched() {
    let v4: SocketAddr = "10.0.0.7:40000".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1]:40000".parse().unwrap();
    struct Row {
        what: &'static str,
        client: Option<SocketAddr>,
        /// Request header lines besides the common ones.
        extra: &'static [&'static str],
        /// The upstream's X-Forwarded-For (`None`: absent).
        xff: Option<&'static str>,
    }
    let rows = [
        Row {
            what: "no headers yet",
            client: Some(v4),
            extra: &[],
            xff: Some("10.0.0.7"),
        },
        Row {
            what: "IPv6 client, no brackets",
            client: Some(v6),
            extra: &[],
            xff: Some("2001:db8::1"),
        },
        Row {
            what: "an existing chain is kept",
            client: Some(v4),
            extra: &["X-Forwarded-For: 203.0.113.9, 198.51.100.2"],
            xff: Some("203.0.113.9, 198.51.100.2, 10.0.0.7"),
        },
        Row {
            what: "an empty X-Forwarded-For is replaced",
            client: Some(v4),
            extra: &["X-Forwarded-For: "],
            xff: Some("10.0.0.7"),
        },
        Row {
            what: "X-Forwarded-Proto from a front proxy passes as sent",
            client: Some(v4),
            extra: &["X-Forwarded-Proto: https", "x-forwarded-for: 203.0.113.9"],
            xff: Some("203.0.113.9, 10.0.0.7"),
        },
        Row {
            what: "no client address: X-Forwarded-For left alone",
            client: None,
            extra: &["X-Forwarded-For: 203.0.113.9"],
            xff: Some("203.0.113.9"),
        },
        Row {
            what: "no client address, no chain",
            client: None,
            extra: &[],
            xff: None,
        },
    ];
    let common = [
        "Authorization: Bearer usertokensecret",
        "Cookie: MMAUTHTOKEN=abc; MMCSRF=def",
        "X-Requested-With: XMLHttpRequest",
        "x-dup: one",
        "x-dup: two",
        "Forwarded: for=192.0.2.60",
        "X-Real-IP: 192.0.2.61",
    ];
    for Row {
        what,
        client,
        extra,
        xff,
    } in rows
    {
        let fx = Fixture::new();
        let lines: Vec<&str> = common.iter().chain(extra).copied().collect();
        let mut session = session(&post_head(&lines)).await;
        if let Some(peer) = client {
            set_client_addr(&mut session, peer);
        }
        let before = session.req_header().clone();
        let (mut session, mut ctx) = fx.filter(session).await;
        // Pingora sends upstream a copy of the request as the filters left it.
        let mut upstream = session.req_header().clone();
        fx.proxy
            .upstream_request_filter(&mut session, &mut upstream, &mut ctx)
            .await
            .unwrap();

        let mut expected = before.headers.clone();
        expected.remove("x-forwarded-for");
        if let Some(v) = xff {
            expected.insert("x-forwarded-for", v.parse().unwrap());
        }
        assert_eq!(upstream.headers, expected, "{what}: headers");
        assert_eq!(upstream.method, before.method, "{what}: method");
        assert_eq!(upstream.uri, before.uri, "{what}: uri");
        assert_eq!(upstream.version, before.version, "{what}: version");
        let mut wire = Vec::new();
        upstream.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        for line in lines
            .iter()
            .filter(|l| !l.to_ascii_lowercase().starts_with("x-forwarded-for"))
        {
            assert!(
                wire.contains(&format!("{line}\r\n")),
                "{what}: {line:?} kept as sent in {wire:?}"
            );
        }

        // The public helper does the same on its own.
        let mut direct = before.clone();
        let peer = client.map(PingoraAddr::Inet);
        add_forwarded_headers(&mut direct, peer.as_ref()).unwrap();
        assert_eq!(direct.headers, expected, "{what}: add_forwarded_headers");
    }
}

#[test]
fn every_x_forwarded_for_line_is_kept() {
    // nginx's $proxy_add_x_forwarded_for joins repeated X-Forwarded-For headers; posthook reads
    // only the first and then replaces them all, so part of the chain is lost.
    let mut req = RequestHeader::build("POST", b"/api/v4/posts", None).unwrap();
    req.append_header("X-Forwarded-For", "203.0.113.9").unwrap();
    req.append_header("X-Forwarded-For", "198.51.100.2")
        .unwrap();
    let client = PingoraAddr::Inet("10.0.0.7:1".parse().unwrap());
    add_forwarded_headers(&mut req, Some(&client)).unwrap();
    let chain: Vec<&str> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(chain, ["203.0.113.9, 198.51.100.2, 10.0.0.7"]);
}

// ---------------------------------------------------------------------------------------------
// 5. fail_to_proxy
// ---------------------------------------------------------------------------------------------

/// Runs `fail_to_proxy` with `err` on a session over a pipe; returns the error code and the
/// raw bytes the client received.
async fn fail(err: &Error) -> (u16, bool, Vec<u8>) {
    let fx = Fixture::new();
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(post_head(&[]).as_bytes()).await.unwrap();
    let mut session = Session::new_h1(Box::new(server));
    assert!(session.read_request().await.unwrap());
    let mut ctx = fx.proxy.new_ctx();
    let outcome = fx.proxy.fail_to_proxy(&mut session, err, &mut ctx).await;
    drop(session);
    let mut written = Vec::new();
    client.read_to_end(&mut written).await.unwrap();
    (outcome.error_code, outcome.can_reuse_downstream, written)
}

/// Splits a raw HTTP/1.1 response into status, headers (lower-cased names) and body.
fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = at(raw, b"\r\n\r\n", 0);
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

#[tokio::test]
async fn upstream_failures_answer_with_an_app_error() {
    // What Pingora hands fail_to_proxy when the upstream cannot be reached: the connector's
    // error, marked as coming from the upstream (pingora-proxy marks it with `as_up`).
    let cases: Vec<(&str, Box<Error>, u16, &str)> = vec![
        (
            "connection refused",
            Error::explain(ErrorType::ConnectRefused, "127.0.0.1:1").into_up(),
            502,
            "posthook.upstream.unreachable.app_error",
        ),
        (
            "connect timeout",
            Error::new_up(ErrorType::ConnectTimedout),
            502,
            "posthook.upstream.unreachable.app_error",
        ),
        (
            "upstream closed mid-response",
            Error::new_up(ErrorType::ConnectionClosed),
            502,
            "posthook.upstream.unreachable.app_error",
        ),
        (
            "unreadable request",
            Error::explain(ErrorType::InvalidHTTPHeader, "bad").into_down(),
            400,
            "posthook.request.bad.app_error",
        ),
        (
            "an internal error",
            Error::new_in(ErrorType::InternalError),
            500,
            "posthook.proxy.error.app_error",
        ),
    ];
    for (what, err, code, id) in cases {
        let (error_code, reuse, raw) = fail(&err).await;
        assert_eq!(error_code, code, "{what}: error code");
        assert!(!reuse, "{what}: the client connection is not reused");
        let (status, headers, body) = parse_response(&raw);
        assert_eq!(
            status,
            code,
            "{what}: status; {}",
            String::from_utf8_lossy(&raw)
        );
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/json"), "{what}");
        assert_eq!(header("cache-control"), Some("no-store"), "{what}");
        assert_eq!(
            header("content-length"),
            Some(body.len().to_string().as_str()),
            "{what}: content-length"
        );
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let obj = json.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "detailed_error",
                "id",
                "is_oauth",
                "message",
                "request_id",
                "status_code"
            ],
            "{what}: AppError fields"
        );
        assert_eq!(json["id"], id, "{what}");
        assert!(!json["message"].as_str().unwrap().is_empty(), "{what}");
        assert_eq!(json["detailed_error"], "", "{what}: no internals leak");
        assert_eq!(json["request_id"], "", "{what}");
        assert_eq!(json["status_code"], code, "{what}");
        assert_eq!(json["is_oauth"], false, "{what}");
        assert_eq!(
            Bytes::from(body),
            app_error_body(code, id, json["message"].as_str().unwrap()),
            "{what}: the body is app_error_body's"
        );
    }
}

#[tokio::test]
async fn a_client_that_went_away_gets_no_error_response() {
    for etype in [
        ErrorType::ConnectionClosed,
        ErrorType::ReadError,
        ErrorType::WriteError,
    ] {
        let err = Error::new_down(etype.clone());
        let (code, reuse, raw) = fail(&err).await;
        assert_eq!(code, 0, "{etype:?}: no status to log");
        assert!(!reuse, "{etype:?}");
        assert!(raw.is_empty(), "{etype:?}: nothing written: {raw:?}");
    }
}
