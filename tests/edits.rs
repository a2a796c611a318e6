//! `events: [edited]` (issue 11), end to end against the stand-in: an edit through either `PUT`
//! fires the hooks that list `edited`, once per edit, with the post in Mattermost's 200; edits
//! that change no message, fail, or match nothing fire nothing; and without such a hook edits
//! are not looked at.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::time::Duration;

use harness::*;
use serde_json::{json, Value};
use support::*;

/// A form hook on `trigger` sending to `url`, with extra `key: value` lines.
fn hook(trigger: &str, url: &str, extra: &[(&str, &str)]) -> String {
    word_hook(trigger, url, extra)
}

/// A JSON hook with extras on `trigger` for edits only.
fn edit_hook(trigger: &str, url: &str) -> String {
    hook(
        trigger,
        url,
        &[
            ("events", "[edited]"),
            ("payload_extras", "true"),
            ("content_type", "application/json"),
        ],
    )
}

async fn created(ph: &Posthook, channel: &str, message: &str) -> Value {
    let (status, post) = create_post(ph.addr, channel, message).await;
    assert_eq!(status, 201, "{post}");
    post
}

async fn edited(ph: &Posthook, post: &Value, message: &str, patch: bool) -> Value {
    let (status, answer) = edit_message(ph.addr, post, message, patch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], post["id"], "an edit keeps the post's id");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_through_each_endpoint_fires_once_with_the_edited_event() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| edit_hook("#deploy", &rx.url("/edits")))
        .hook(|rx| hook("#deploy", &rx.url("/posts"), &[]))
        .hook(|rx| {
            hook(
                "#deploy",
                &rx.url("/both"),
                &[("events", "[posted, edited]")],
            )
        })
        .start()
        .await;
    let post = created(&ph, PUBLIC, "hello").await;
    rx.assert_quiet(Duration::from_millis(200)).await;

    // The whole post, as the webapp's `updatePost` sends it.
    let first = edited(&ph, &post, "#deploy prod", false).await;
    let fired = rx.wait_for(2, T).await;
    let mut paths: Vec<&str> = fired.iter().map(|r| r.path()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/both", "/edits"], "only hooks listing edited");
    let v = fired.iter().find(|r| r.path() == "/edits").unwrap().json();
    assert_eq!(v["text"], "#deploy prod", "the new message");
    assert_eq!(v["trigger_word"], "#deploy");
    assert_eq!(v["post_id"], post["id"]);
    assert_eq!(v["event"], "edited");
    assert!(first["edit_at"].as_i64().unwrap() > 0);
    assert_eq!(v["edit_at"], first["edit_at"], "a JSON number, in ms");
    assert_eq!(
        v["timestamp"], post["create_at"],
        "timestamp stays create_at"
    );
    assert_eq!(v["root_id"], "");
    assert_eq!(v["channel_type"], "O");

    // A patch of the message alone, as mmctl and the mobile app send it.
    let second = edited(&ph, &post, "#deploy staging", true).await;
    assert!(second["edit_at"].as_i64() > first["edit_at"].as_i64());
    let fired = rx.wait_for(4, T).await;
    let v = fired[2..]
        .iter()
        .find(|r| r.path() == "/edits")
        .unwrap()
        .json();
    assert_eq!(v["text"], "#deploy staging");
    assert_eq!(v["edit_at"], second["edit_at"]);
    rx.assert_quiet(Duration::from_millis(200)).await;

    let s = ph
        .wait_stats("two edits examined", |s| s.edits_observed == 2)
        .await;
    assert_eq!(s.posts_observed, 1, "{s:#?}");
    assert_eq!((s.hook_matches, s.deliveries_due), (4, 4), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_that_changes_no_message_fires_nothing_and_a_repeat_fires_once() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .hook(|rx| edit_hook("#deploy", &rx.url("/edits")))
        .start()
        .await;
    // Never edited: a pin (a patch without a message) answers 200 with edit_at 0.
    let post = created(&ph, PUBLIC, "#deploy now").await;
    let r = edit_as(
        ph.addr,
        USER_TOKEN,
        post["id"].as_str().unwrap(),
        true,
        &json!({"is_pinned": true}),
    )
    .await;
    assert_eq!(r.status, 200);
    ph.wait_stats("the pin examined", |s| s.edits_observed == 1)
        .await;
    rx.assert_quiet(Duration::from_millis(300)).await;

    // Repeating the current message is no edit either: edit_at stays 0.
    edited(&ph, &post, "#deploy now", true).await;
    rx.assert_quiet(Duration::from_millis(300)).await;

    // A real edit fires; the same message again (edit_at unchanged) and a pin do not.
    let changed = edited(&ph, &post, "#deploy later", false).await;
    rx.wait_for(1, T).await;
    let again = edited(&ph, &changed, "#deploy later", false).await;
    assert_eq!(again["edit_at"], changed["edit_at"], "no new edit");
    let pinned = edit_as(
        ph.addr,
        USER_TOKEN,
        post["id"].as_str().unwrap(),
        true,
        &json!({"is_pinned": false}),
    )
    .await;
    assert_eq!(pinned.status, 200);
    let s = ph
        .wait_stats("the repeats skipped", |s| s.duplicate_posts_skipped == 2)
        .await;
    assert_eq!(s.edits_observed, 5, "{s:#?}");
    rx.assert_quiet(Duration::from_millis(200)).await;
    assert_eq!(rx.requests().len(), 1, "one edit, one request");

    // The answer compressed, as Mattermost's gzip setting sends it: the same post decides.
    mm.set_gzip(true);
    let r = edit_as(
        ph.addr,
        USER_TOKEN,
        post["id"].as_str().unwrap(),
        true,
        &json!({"message": "#deploy gzip"}),
    )
    .await;
    assert_eq!(r.header("content-encoding"), None, "not asked for gzip");
    let auth = format!("Bearer {USER_TOKEN}");
    let path = format!("/api/v4/posts/{}/patch", post["id"].as_str().unwrap());
    let r = http_request(
        ph.addr,
        "PUT",
        &path,
        &[
            ("Authorization", auth.as_str()),
            ("Accept-Encoding", "gzip"),
        ],
        br##"{"message":"#deploy zipped"}"##,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let fired = rx.wait_for(3, T).await;
    let texts: Vec<String> = fired[1..]
        .iter()
        .map(|r| r.json()["text"].as_str().unwrap().to_string())
        .collect();
    assert!(texts.contains(&"#deploy zipped".to_string()), "{texts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_matching_and_rejected_edits_fire_nothing() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .hook(|rx| edit_hook("#deploy", &rx.url("/edits")))
        .start()
        .await;
    let post = created(&ph, PUBLIC, "#deploy first").await;
    edited(&ph, &post, "never mind", true).await;
    rx.assert_quiet(Duration::from_millis(300)).await;

    // Another user's post: Mattermost refuses the edit (403) and nothing changes.
    let theirs = mm.add_post(PUBLIC, BOT, "status", "");
    let (status, _) = edit_message(ph.addr, &theirs, "#deploy hijack", true).await;
    assert_eq!(status, 403);
    // An unknown post id is a 403 too, not a 404.
    let unknown = json!({"id": random_id(), "message": "x"});
    let (status, _) = edit_message(ph.addr, &unknown, "#deploy ghost", false).await;
    assert_eq!(status, 403);
    // A whole-post PUT whose id differs from the path's: 400.
    let r = edit_as(
        ph.addr,
        USER_TOKEN,
        post["id"].as_str().unwrap(),
        false,
        &json!({"id": random_id(), "message": "#deploy mismatch"}),
    )
    .await;
    assert_eq!(r.status, 400);
    rx.assert_quiet(Duration::from_millis(300)).await;
    let s = ph.stats();
    assert_eq!(s.edits_observed, 1, "only the 200 counts: {s:#?}");
    assert_eq!(s.hook_matches, 0, "{s:#?}");
    assert_eq!(
        mm.post(post["id"].as_str().unwrap()).unwrap()["message"],
        "never mind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_edited_hook_edits_are_not_looked_at() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#deploy", &rx.url("/posts"), &[]))
        .hook(|rx| {
            hook(
                "#deploy",
                &rx.url("/off"),
                &[("events", "[edited]"), ("enabled", "false")],
            )
        })
        .start()
        .await;
    let post = created(&ph, PUBLIC, "hello").await;
    edited(&ph, &post, "#deploy prod", true).await;
    edited(&ph, &post, "#deploy prod again", false).await;
    rx.assert_quiet(Duration::from_millis(300)).await;
    let s = ph.stats();
    assert_eq!((s.posts_observed, s.edits_observed), (1, 0), "{s:#?}");
    // Posts fire as before.
    created(&ph, PUBLIC, "#deploy now").await;
    assert_eq!(rx.wait_for(1, T).await[0].path(), "/posts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_follow_the_other_filters_and_never_fire_on_the_bots_own_posts() {
    let reply = r#"{"response_type":"comment","text":"on it"}"#;
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Json(reply.to_string()))
        .hook(|rx| {
            hook(
                "#deploy",
                &rx.url("/private"),
                &[("events", "[edited]"), ("channel_types", "[P]")],
            )
        })
        .hook(|rx| {
            hook(
                "#deploy",
                &rx.url("/public"),
                &[("events", "[edited]"), ("thread", "root")],
            )
        })
        .start()
        .await;
    let public = created(&ph, PUBLIC, "draft").await;
    let private = created(&ph, PRIVATE, "draft").await;
    edited(&ph, &private, "#deploy secret", true).await;
    let fired = rx.wait_for(1, T).await;
    assert_eq!(fired[0].path(), "/private", "channel_types apply to edits");

    // The answer is a comment: it lands in the edited post's thread, like a post's.
    edited(&ph, &public, "#deploy open", true).await;
    let fired = rx.wait_for(2, T).await;
    assert_eq!(fired[1].path(), "/public");
    let replies = mm.wait_for_posts(4, T).await;
    let in_thread: Vec<&Value> = replies
        .iter()
        .filter(|p| p["root_id"] == public["id"])
        .collect();
    assert_eq!(in_thread.len(), 1, "{replies:#?}");
    let answer = in_thread[0].clone();
    assert_eq!(answer["message"], "on it");
    assert_eq!(answer["user_id"], BOT);

    // The bot edits its own reply into a trigger: posthook's own posts never fire.
    let r = edit_as(
        ph.addr,
        BOT_TOKEN,
        answer["id"].as_str().unwrap(),
        true,
        &json!({"message": "#deploy loop"}),
    )
    .await;
    assert_eq!(r.status, 200);
    ph.wait_stats("the bot's edit skipped", |s| s.own_posts_skipped == 1)
        .await;
    rx.assert_quiet(Duration::from_millis(300)).await;

    // A reply in a thread is not a root: `thread: root` holds for edits too.
    let body = json!({"channel_id": PUBLIC, "root_id": public["id"], "message": "draft"});
    let r = post_json(ph.addr, &body.to_string()).await;
    let in_reply: Value = serde_json::from_slice(&r.decoded_body()).unwrap();
    edited(&ph, &in_reply, "#deploy reply", true).await;
    rx.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 2);
}
