//! Bad input on the post path (malformed, truncated, deeply nested, huge, non-UTF-8 JSON, wrong
//! Content-Type, duplicate keys, control characters): passed through byte-exact both ways, and a
//! delivery exactly when Mattermost (the stand-in, or a raw upstream for what only Go accepts)
//! created a matching post.

use super::upstream::{json_answer, posthook_before, PostMode, RawUpstream};
use super::wire::{assert_same_answer, exchange, post_request, Exchange};
use super::*;

struct BadRow {
    name: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// The message of the created post when the stand-in (as Mattermost) creates a matching
    /// post; `None`: nothing may fire.
    fires: Option<&'static str>,
}

fn post_body(message: &str) -> Vec<u8> {
    serde_json::json!({"channel_id": PUBLIC, "message": message})
        .to_string()
        .into_bytes()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut body =
        format!(r##"{{"channel_id":"{PUBLIC}","message":"#build nested","props":{{"deep":"##)
            .into_bytes();
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.extend_from_slice(b"}}");
    body
}

/// An answer without what differs between two identical requests: the date, the request id,
/// and the created post's id and times.
fn normalized(e: &Exchange) -> (String, Vec<(String, String)>, serde_json::Value) {
    let status_line =
        String::from_utf8_lossy(&e.raw[..find(&e.raw, b"\r\n").unwrap()]).into_owned();
    let headers = e
        .headers()
        .into_iter()
        .filter(|(n, _)| {
            !["connection", "date", "keep-alive", "x-request-id"]
                .contains(&n.to_ascii_lowercase().as_str())
        })
        .collect();
    let mut body: serde_json::Value = serde_json::from_slice(e.body())
        .unwrap_or_else(|err| panic!("{err}: {:?}", String::from_utf8_lossy(e.body())));
    if let Some(o) = body.as_object_mut() {
        for volatile in ["id", "create_at", "update_at", "request_id"] {
            o.remove(volatile);
        }
    }
    (status_line, headers, body)
}

/// Malformed, truncated, deeply nested, huge and non-UTF-8 JSON, missing or wrong
/// Content-Type, duplicate keys, control characters: the upstream gets the exact bytes, the
/// client gets the upstream's exact answer, posthook stays up, and a delivery happens exactly
/// when Mattermost (the stand-in) created a matching post, with nothing injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_post_bodies_pass_through_exactly_and_fire_only_for_a_created_match() {
    let _gate = MEMORY_GATE.read().await;
    const INJECTION: &str = "#build a\r\nX-Injected: 1\r\n\r\nb=c&token=evil";
    const CONTROLS: &str = "#build \u{0}\u{7}\u{1b}[31m\tred\u{7f}\u{85}\u{2028}end";
    let huge = format!("#build {}", "a".repeat(2 * 1024 * 1024));
    let rows = vec![
        BadRow {
            name: "missing Content-Type",
            content_type: None,
            body: post_body("#build no type"),
            fires: Some("#build no type"),
        },
        BadRow {
            name: "wrong Content-Type",
            content_type: Some("text/plain; charset=latin1"),
            body: post_body("#build text plain"),
            fires: Some("#build text plain"),
        },
        BadRow {
            name: "form Content-Type",
            content_type: Some("application/x-www-form-urlencoded"),
            body: post_body("#build form type"),
            fires: Some("#build form type"),
        },
        BadRow {
            name: "malformed",
            content_type: Some("application/json"),
            body: format!(r##"{{"channel_id":"{PUBLIC}",,"message":"#build x"}}"##).into_bytes(),
            fires: None,
        },
        BadRow {
            name: "truncated",
            content_type: Some("application/json"),
            body: format!(r##"{{"channel_id":"{PUBLIC}","message":"#build trunc"##).into_bytes(),
            fires: None,
        },
        BadRow {
            name: "not an object",
            content_type: Some("application/json"),
            body: br##"["#build", "chanpub"]"##.to_vec(),
            fires: None,
        },
        BadRow {
            name: "empty",
            content_type: Some("application/json"),
            body: Vec::new(),
            fires: None,
        },
        BadRow {
            name: "wrong types",
            content_type: Some("application/json"),
            body: format!(r##"{{"channel_id":"{PUBLIC}","message":["#build"]}}"##).into_bytes(),
            fires: None,
        },
        BadRow {
            name: "nested 100 deep",
            content_type: Some("application/json"),
            body: nested(100),
            fires: Some("#build nested"),
        },
        BadRow {
            name: "nested 100 000 deep",
            content_type: Some("application/json"),
            body: nested(100_000),
            fires: None,
        },
        BadRow {
            name: "huge (2 MiB message)",
            content_type: Some("application/json"),
            body: post_body(&huge),
            fires: None,
        },
        BadRow {
            name: "non-UTF-8 (refused by the stand-in)",
            content_type: Some("application/json"),
            body: [
                format!(r##"{{"channel_id":"{PUBLIC}","message":"#build "##).as_bytes(),
                b"\xff\xfe\xc3(",
                b"\"}",
            ]
            .concat(),
            fires: None,
        },
        BadRow {
            name: "duplicate keys, the last matching",
            content_type: Some("application/json"),
            body: format!(
                "{{\"channel_id\":\"nosuchchannel\",\"message\":\"hello\",\
                 \"channel_id\":\"{PUBLIC}\",\"message\":\"#build second\"}}"
            )
            .into_bytes(),
            fires: Some("#build second"),
        },
        BadRow {
            name: "duplicate keys, the first matching",
            content_type: Some("application/json"),
            body: format!(
                "{{\"channel_id\":\"{PUBLIC}\",\"message\":\"#build first\",\"message\":\"plain\"}}"
            )
            .into_bytes(),
            fires: None,
        },
        BadRow {
            name: "header and form injection",
            content_type: Some("application/json"),
            body: post_body(INJECTION),
            fires: Some(INJECTION),
        },
        BadRow {
            name: "control characters",
            content_type: Some("application/json"),
            body: post_body(CONTROLS),
            fires: Some(CONTROLS),
        },
    ];

    let (fired, s) = bad_input_rows(&rows).await;
    assert_eq!(s.deliveries_delivered, fired);
}

/// Runs `rows` through one posthook in front of the stand-in; returns the deliveries and the
/// final counters.
async fn bad_input_rows(rows: &[BadRow]) -> (u64, Snapshot) {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before_standin(&mm, &rx).await;
    let base = baseline(ph.addr).await;
    let mut fired = 0;
    // The headers of an ordinary delivery, the reference for every other.
    let mut reference: Option<Vec<(String, String)>> = None;
    for row in rows {
        let what = row.name;
        let headers: Vec<(&str, &str)> = row
            .content_type
            .map(|ct| ("Content-Type", ct))
            .into_iter()
            .collect();
        let request = post_request(&row.body, &headers);
        let direct = exchange(mm.addr(), &request).await;
        let created_match = direct.status == 201
            && serde_json::from_slice::<serde_json::Value>(direct.body()).unwrap()["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("#build"));
        assert_eq!(
            row.fires.is_some(),
            created_match,
            "{what}: the table agrees with the stand-in ({})",
            direct.status
        );

        let too_large = ph.stats().bodies_too_large;
        let proxied = exchange(ph.addr, &request).await;
        let seen = mm
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST")
            .unwrap();
        assert_eq!(
            seen.body_len,
            row.body.len() as u64,
            "{what}: body length upstream"
        );
        assert!(
            row.body.starts_with(&seen.body)
                && seen.body.len() == row.body.len().min(RECORD_BODY_LIMIT),
            "{what}: the upstream got the exact bytes"
        );
        assert!(proxied.complete, "{what}");
        assert_eq!(
            normalized(&proxied),
            normalized(&direct),
            "{what}: the upstream's answer"
        );
        let n = not_delayed(what, base.max(direct.took), proxied.took, || async {
            exchange(ph.addr, &request).await.took
        })
        .await;
        if proxied.status == 201 {
            let post: serde_json::Value = serde_json::from_slice(proxied.body()).unwrap();
            assert_eq!(
                post,
                mm.post(post["id"].as_str().unwrap()).unwrap(),
                "{what}"
            );
        }

        if let Some(message) = row.fires {
            fired += n as usize;
            let got = rx.wait_for(fired, T).await;
            let post: serde_json::Value = serde_json::from_slice(proxied.body()).unwrap();
            let id = post["id"].as_str().unwrap();
            let hook = got
                .iter()
                .find(|h| h.form().contains(&("post_id".to_string(), id.to_string())))
                .unwrap_or_else(|| panic!("{what}: no delivery for {id}"));
            let form = hook.form();
            let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                keys,
                [
                    "channel_id",
                    "channel_name",
                    "file_ids",
                    "post_id",
                    "team_domain",
                    "team_id",
                    "text",
                    "timestamp",
                    "token",
                    "trigger_word",
                    "user_id",
                    "user_name"
                ],
                "{what}: exactly the 12 fields, once each"
            );
            let form: std::collections::HashMap<_, _> = form.into_iter().collect();
            assert_eq!(form["text"], message, "{what}: the exact message");
            assert_eq!(form["token"], HOOK_TOKEN, "{what}: the hook's token only");
            assert_eq!(form["post_id"], post["id"].as_str().unwrap(), "{what}");
            assert_eq!(form["trigger_word"], "#build", "{what}");
            // Exactly the headers of an ordinary delivery, whatever the message holds.
            let headers: Vec<(String, String)> = hook
                .headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("content-length"))
                .cloned()
                .collect();
            assert_eq!(
                hook.header("content-length"),
                Some(hook.body.len().to_string().as_str()),
                "{what}"
            );
            assert!(hook.header("x-injected").is_none(), "{what}");
            match &reference {
                None => {
                    assert_eq!(
                        hook.header("content-type"),
                        Some("application/x-www-form-urlencoded")
                    );
                    assert_eq!(hook.header("user-agent"), Some("Mattermost-Bot/1.1"));
                    assert_eq!(hook.header("accept"), Some("application/json"));
                    reference = Some(headers);
                }
                Some(want) => assert_eq!(&headers, want, "{what}: the webhook request's headers"),
            }
        }
        let s = settle(&ph, what).await;
        assert_eq!(s.deliveries_due, fired as u64, "{what}: {s:#?}");
        // A body over `limits.max_inspected_body_bytes` (1 MiB) is passed on uninspected.
        let over = if row.body.len() > 1024 * 1024 { n } else { 0 };
        assert_eq!(s.bodies_too_large - too_large, over, "{what}: {s:#?}");
        assert_eq!(rx.requests().len(), fired, "{what}: nothing else fired");
        assert_up(ph.addr, what).await;
    }
    let s = settle(&ph, "all rows").await;
    rx.assert_quiet(Duration::from_millis(200)).await;
    (fired as u64, s)
}

/// Go's decoder reads the first JSON value of the body and ignores what follows, so
/// Mattermost creates this post (the stand-in does too) and fires its hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_with_trailing_bytes_fires_like_mattermost() {
    let _gate = MEMORY_GATE.read().await;
    let rows = [BadRow {
        name: "trailing bytes after the object",
        content_type: Some("application/json"),
        body: [
            post_body("#build trailing").as_slice(),
            b" {\"message\":\"x\"} trailing",
        ]
        .concat(),
        fires: Some("#build trailing"),
    }];
    let (fired, s) = bad_input_rows(&rows).await;
    assert!(fired >= 1);
    assert_eq!(s.deliveries_delivered, fired);
}

/// A post body the stand-in refuses but Mattermost (Go) accepts: a raw upstream answers the
/// 201 Mattermost would; the client gets it exactly and the hook fires with `text`.
async fn accepted_by_mattermost(what: &str, body: &[u8], created: &str, text: &str) {
    let up = RawUpstream::start(PostMode::Answer(json_answer("201 Created", created))).await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let ph = posthook_before(&up, &rx, "").await;
    let base = baseline(ph.addr).await;
    let request = post_request(body, &[("Content-Type", "application/json")]);
    let got = exchange(ph.addr, &request).await;
    assert_eq!(
        up.last_post(),
        body,
        "{what}: the upstream got the exact bytes"
    );
    assert_same_answer(what, &got, &up.last_answer(), false);
    // A repeat is answered with the same post (the upstream's answer is fixed): fired once.
    let n = not_delayed(what, base, got.took, || async {
        exchange(ph.addr, &request).await.took
    })
    .await;
    judged(&ph, what, n).await;
    let s = settle(&ph, what).await;
    assert_eq!(
        (
            s.posts_observed,
            s.posts_unparsed,
            s.duplicate_posts_skipped,
            s.deliveries_due,
            s.deliveries_delivered
        ),
        (BASELINE_POSTS + n, 0, n - 1, 1, 1),
        "{what}: (observed, unparsed, repeated, due, delivered): {s:#?}"
    );
    let hooks = rx.wait_for(1, T).await;
    let form: std::collections::HashMap<_, _> = hooks[0].form().into_iter().collect();
    assert_eq!(form["text"], text, "{what}");
    assert_up(ph.addr, what).await;
}

/// Go replaces invalid UTF-8 with U+FFFD: Mattermost creates the post, and it fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_post_that_mattermost_accepts_fires() {
    let _gate = MEMORY_GATE.read().await;
    let body = [
        format!(r##"{{"channel_id":"{PUBLIC}","message":"#build caf"##).as_bytes(),
        b"\xe9 \xff",
        b"\"}",
    ]
    .concat();
    let text = "#build caf\u{fffd} \u{fffd}";
    let created = created_post_json(PUBLIC, text, "{}");
    accepted_by_mattermost("non-UTF-8", &body, &created, text).await;
}

/// Go's decoder nests up to 10 000 levels: Mattermost creates a post whose props nest 200
/// deep (far under its 800 000-rune props bound) and fires its hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deeply_nested_post_that_mattermost_accepts_fires() {
    let _gate = MEMORY_GATE.read().await;
    let depth = 200;
    let body = nested(depth);
    let deep = format!(r#"{{"deep":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
    let created = created_post_json(PUBLIC, "#build nested", &deep);
    accepted_by_mattermost("nested 200 deep", &body, &created, "#build nested").await;
}
