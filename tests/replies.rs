//! End to end: webhook answers become reply posts on Mattermost, built as Mattermost builds
//! them (spec §3–§5) and posted with the bot token straight to the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::*;
use support::*;

/// How long "nothing more happens" is watched for.
const QUIET: Duration = Duration::from_millis(400);

/// One hook entry; `fields` values are YAML scalars as written.
fn hook(display_name: &str, trigger: &str, url: &str, fields: &[(&str, &str)]) -> String {
    let display_name = format!("\"{display_name}\"");
    let trigger_words = format!("[\"{trigger}\"]");
    let callback_urls = format!("[\"{url}\"]");
    let mut all = vec![
        ("display_name", display_name.as_str()),
        ("trigger_words", trigger_words.as_str()),
        ("callback_urls", callback_urls.as_str()),
        ("token", "\"hooktokensecret\""),
    ];
    all.extend_from_slice(fields);
    hook_yaml(&all)
}

/// A catch-all hook on the public channel (no trigger words).
fn channel_hook(display_name: &str, url: &str) -> String {
    hook_yaml(&[
        ("display_name", &format!("\"{display_name}\"")),
        ("channel_id", PUBLIC),
        ("callback_urls", &format!("[\"{url}\"]")),
        ("token", "\"hooktokensecret\""),
    ])
}

/// Starts posthook in front of `upstream` with loopback webhooks allowed, `settings` lines
/// (indented, under `settings:`) and `hooks`.
async fn posthook(upstream: &str, settings: &str, hooks: &[String]) -> Posthook {
    let extra = format!("{ALLOW_LOOPBACK}{settings}hooks:\n{}", hooks.concat());
    let (text, listen) = config_text(upstream, &extra);
    start(&text, listen).await
}

/// `POST /api/v4/posts` through `addr` with an arbitrary body, as the test user.
async fn post_as_user(addr: SocketAddr, body: Value) -> Value {
    let r = post_json(addr, &body.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.body_str());
    r.json()
}

/// Posts `message` to the public channel through `addr`; returns the created post.
async fn trigger(addr: SocketAddr, message: &str) -> Value {
    let (status, post) = create_post(addr, PUBLIC, message).await;
    assert_eq!(status, 201, "{post}");
    post
}

/// Posts the bot created (the replies), in creation order.
fn replies(mm: &MattermostStandIn) -> Vec<Value> {
    mm.posts()
        .into_iter()
        .filter(|p| p["user_id"] == BOT)
        .collect()
}

/// Waits until the bot created at least `n` posts; returns them.
async fn wait_replies(mm: &MattermostStandIn, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} reply post(s)"), T, || replies(mm).len() >= n).await;
    replies(mm)
}

/// `POST /api/v4/posts` requests made with the bot token (reply attempts, failed or not).
fn reply_attempts(mm: &MattermostStandIn) -> Vec<RecordedRequest> {
    let auth = format!("Bearer {BOT_TOKEN}");
    mm.requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && r.path() == "/api/v4/posts"
                && r.header("authorization") == Some(auth.as_str())
        })
        .collect()
}

/// Asserts that the number of reply attempts stays `n` for [`QUIET`].
async fn assert_reply_attempts_stay(mm: &MattermostStandIn, n: usize, why: &str) {
    let deadline = Instant::now() + QUIET;
    loop {
        let got = reply_attempts(mm).len();
        assert_eq!(got, n, "{why}: reply POST attempts");
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Spec §3.3 and §6.4: one reply in the trigger's channel, authored by the bot, with the
/// webhook props, posted with `?set_online=false` and the bot token directly to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_is_posted_by_the_bot_straight_to_the_upstream_with_webhook_props() {
    // A team-wide hook: the reply still goes to the channel of the trigger.
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Json(r#"{"text":"pong <!here>"}"#.into()))
        .hook(|rx| hook("Ping Bot", "ping", &rx.url("/h"), &[]))
        .start()
        .await;

    let (status, trigger_post) = create_post(ph.addr, PUBLIC2, "ping me").await;
    assert_eq!(status, 201);
    let reply = &wait_replies(&mm, 1).await[0];
    assert_eq!(
        reply["channel_id"], PUBLIC2,
        "reply in the trigger's channel"
    );
    assert_eq!(reply["message"], "pong @here", "processed message");
    assert_eq!(reply["user_id"], BOT, "authored by the bot token's user");
    assert_eq!(reply["root_id"], "", "not threaded without comment");
    assert_eq!(reply["type"], "");
    assert_eq!(
        reply["props"],
        json!({"from_webhook": "true", "webhook_display_name": "Ping Bot", "from_bot": "true"}),
        "webhook props (from_bot added by Mattermost for a bot author)"
    );
    assert_ne!(reply["id"], trigger_post["id"]);

    let attempts = reply_attempts(&mm);
    assert_eq!(attempts.len(), 1, "one POST for one reply");
    let r = &attempts[0];
    assert_eq!(r.path_and_query, "/api/v4/posts?set_online=false");
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert!(
        r.header("cookie").is_none(),
        "no user credentials on the reply"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(
        r.header("x-forwarded-for").is_none(),
        "the reply did not pass through a proxy listener: {:?}",
        r.headers
    );
    let s = ph
        .wait_stats("reply counted", |s| s.replies_posted == 1)
        .await;
    assert_eq!(
        s.posts_observed, 1,
        "posthook's listener saw only the user's post"
    );
    assert_eq!(s.replies_failed, 0);
    assert_eq!(
        s.own_posts_skipped, 0,
        "the reply never reached the dispatcher"
    );
    rx.assert_quiet(QUIET).await;
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(replies(&mm).len(), 1, "exactly one reply");
}

/// Spec §3.3 steps 5–6 and 7.5–7.6, §3.4, T5 and T16: every combination of the two override
/// settings with a response that does or does not name a username and icon, and a hook that
/// does or does not provide fallbacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_icon_overrides_follow_the_settings_and_fallbacks() {
    let mm = standin().await;
    let with = WebhookReceiver::start(Responder::Json(
        r#"{"text":"sample response text from test server","username":"webhookuser","icon_url":"http://webhook/icon"}"#
            .into(),
    ))
    .await;
    let without = WebhookReceiver::start(Responder::Json(
        r#"{"text":"sample response text from test server"}"#.into(),
    ))
    .await;
    let fallback: &[(&str, &str)] = &[
        ("username", "\"some-user-name\""),
        ("icon_url", "\"http://some-icon/\""),
    ];
    // (trigger word = display name, receiver, hook fallbacks)
    let hooks = [
        hook("resp-hook", "resp-hook", &with.url("/"), fallback),
        hook("resp-nohook", "resp-nohook", &with.url("/"), &[]),
        hook("noresp-hook", "noresp-hook", &without.url("/"), fallback),
        hook("noresp-nohook", "noresp-nohook", &without.url("/"), &[]),
    ];

    // (why, username override, icon override, [(trigger, override_username, override_icon_url)])
    type Expect<'a> = (&'a str, Option<&'a str>, Option<&'a str>);
    let rows: [(&str, bool, bool, [Expect<'_>; 4]); 4] = [
        (
            "on/on (T5 rows 1 and 3, T16 MM-T584, MM-T2037)",
            true,
            true,
            [
                (
                    "resp-hook",
                    Some("webhookuser"),
                    Some("http://webhook/icon"),
                ),
                (
                    "resp-nohook",
                    Some("webhookuser"),
                    Some("http://webhook/icon"),
                ),
                (
                    "noresp-hook",
                    Some("some-user-name"),
                    Some("http://some-icon/"),
                ),
                ("noresp-nohook", Some("webhook"), None),
            ],
        ),
        (
            "on/off",
            true,
            false,
            [
                ("resp-hook", Some("webhookuser"), None),
                ("resp-nohook", Some("webhookuser"), None),
                ("noresp-hook", Some("some-user-name"), None),
                ("noresp-nohook", Some("webhook"), None),
            ],
        ),
        (
            "off/on (T16 MM-T2035)",
            false,
            true,
            [
                ("resp-hook", None, Some("http://webhook/icon")),
                ("resp-nohook", None, Some("http://webhook/icon")),
                ("noresp-hook", None, Some("http://some-icon/")),
                ("noresp-nohook", None, None),
            ],
        ),
        (
            "off/off (T5 row 2, T16 MM-T2040)",
            false,
            false,
            [
                ("resp-hook", None, None),
                ("resp-nohook", None, None),
                ("noresp-hook", None, None),
                ("noresp-nohook", None, None),
            ],
        ),
    ];
    for (why, username_on, icon_on, expectations) in rows {
        let settings = format!(
            "  enable_post_username_override: {username_on}\n  enable_post_icon_override: {icon_on}\n"
        );
        let ph = posthook(&mm.base_url(), &settings, &hooks).await;
        let before = replies(&mm).len();
        for (trigger_word, _, _) in &expectations {
            trigger(ph.addr, &format!("{trigger_word} go")).await;
        }
        let all = wait_replies(&mm, before + expectations.len()).await;
        let new = &all[before..];
        assert_eq!(
            new.len(),
            expectations.len(),
            "{why}: one reply per trigger"
        );
        for (trigger_word, username, icon) in expectations {
            let reply = new
                .iter()
                .find(|p| p["props"]["webhook_display_name"] == trigger_word)
                .unwrap_or_else(|| panic!("{why}: no reply for {trigger_word}: {new:?}"));
            let mut want = json!({
                "from_webhook": "true",
                "webhook_display_name": trigger_word,
                "from_bot": "true",
            });
            if let Some(u) = username {
                want["override_username"] = u.into();
            }
            if let Some(i) = icon {
                want["override_icon_url"] = i.into();
            }
            assert_eq!(reply["props"], want, "{why}: {trigger_word}");
            assert_eq!(
                reply["message"], "sample response text from test server",
                "{why}: {trigger_word}"
            );
        }
        drop(ph);
    }
}

/// Spec §3.3 step 1, T4 `comment` rows and posthook difference 2: `comment` threads the reply
/// under the trigger, or under the trigger's root when the trigger is itself a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_replies_go_under_the_thread_root() {
    let mm = standin().await;
    let comment = WebhookReceiver::start(Responder::Json(
        r#"{"text":"threaded","response_type":"comment"}"#.into(),
    ))
    .await;
    let plain = WebhookReceiver::start(Responder::Json(r#"{"text":"flat"}"#.into())).await;
    // Keys match case-insensitively; the value "comment" only exactly.
    let shouting = WebhookReceiver::start(Responder::Json(
        r#"{"text":"loud","RESPONSE_TYPE":"Comment"}"#.into(),
    ))
    .await;
    let ph = posthook(
        &mm.base_url(),
        "",
        &[
            hook("c", "comment", &comment.url("/"), &[]),
            hook("p", "plain", &plain.url("/"), &[]),
            hook("s", "shout", &shouting.url("/"), &[]),
        ],
    )
    .await;
    let root = mm.add_post(PUBLIC, USER, "a thread root", "");
    let root_id = root["id"].as_str().unwrap().to_string();

    // (why, trigger message, trigger's root_id, expected reply root: "trigger", "root" or "")
    let rows = [
        (
            "comment on a root post threads under it",
            "comment a",
            "",
            "trigger",
        ),
        (
            "comment on a thread reply goes under the thread root",
            "comment b",
            root_id.as_str(),
            "root",
        ),
        ("no comment: a root post", "plain c", "", ""),
        (
            "no comment on a thread reply: still a root post",
            "plain d",
            root_id.as_str(),
            "",
        ),
        ("\"Comment\" is not \"comment\"", "shout e", "", ""),
    ];
    for (i, (why, message, trigger_root, want)) in rows.into_iter().enumerate() {
        let mut body = json!({"channel_id": PUBLIC, "message": message});
        if !trigger_root.is_empty() {
            body["root_id"] = trigger_root.into();
        }
        let trigger_post = post_as_user(ph.addr, body).await;
        assert_eq!(trigger_post["root_id"], trigger_root, "{why}: trigger");
        let reply = wait_replies(&mm, i + 1).await[i].clone();
        let expected = match want {
            "trigger" => trigger_post["id"].as_str().unwrap(),
            "root" => root_id.as_str(),
            _ => "",
        };
        assert_eq!(reply["root_id"], expected, "{why}");
        assert_eq!(reply["channel_id"], PUBLIC, "{why}");
    }
    let s = ph
        .wait_stats("all replies", |s| s.replies_posted == 5)
        .await;
    assert_eq!(s.replies_failed, 0, "the stand-in accepted every root_id");
    assert_eq!(
        mm.post(&root_id).unwrap()["reply_count"],
        3,
        "thread: the trigger reply, its reply and the flat trigger reply"
    );
}

/// Spec §4.1, §4.2, T8 and T11: announcements, user mentions and links in the reply text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_markup_in_the_answer_is_translated() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Json("{}".into()))
        .hook(|rx| hook("Slack", "slack", &rx.url("/"), &[]))
        .start()
        .await;
    let rows = [
        (
            "announcement",
            "<!channel> foo <!channel>",
            "@channel foo @channel",
        ),
        ("here and all", "<!here> a <!all>", "@here a @all"),
        ("existing user", "<@user1> hello", "@alice hello"),
        (
            "unknown user stays",
            "<@nosuchuser42> hi",
            "<@nosuchuser42> hi",
        ),
        (
            "known and unknown together",
            "<@user1> and <@nosuchuser42>",
            "@alice and <@nosuchuser42>",
        ),
        ("link", "see <https://x|label>", "see [label](https://x)"),
        ("bare link untouched", "<https://x>", "<https://x>"),
        ("not handled", "<!everyone>", "<!everyone>"),
        (
            "all at once",
            "<!channel> <@user1> <@nosuchuser42> <https://x|label>",
            "@channel @alice <@nosuchuser42> [label](https://x)",
        ),
    ];
    for (i, (why, text, want)) in rows.into_iter().enumerate() {
        rx.set_responder(Responder::Json(json!({ "text": text }).to_string()));
        trigger(ph.addr, "slack").await;
        let reply = wait_replies(&mm, i + 1).await[i].clone();
        assert_eq!(reply["message"], want, "{why}");
    }
}

/// Spec §3.5 and T10: long answers are cut every `max_post_size` runes, in order, each part
/// with the same props and root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_answer_is_split_into_parts_of_max_post_size_runes() {
    // 25 runes, several of them multi-byte: runes, not bytes, are counted.
    let text = "abcdé本那本那fghij本那KLMNOpq€t";
    assert_eq!(text.chars().count(), 25);
    let Fixture { mm, rx: _rx, ph } = Fixture::builder()
        .responder(Responder::Json(
            json!({"text": text, "response_type": "comment", "props": {"k": "v"}}).to_string(),
        ))
        .setting("max_post_size: 10")
        .setting("enable_post_username_override: true")
        .hook(|rx| hook("Splitter", "split", &rx.url("/"), &[]))
        .start()
        .await;
    let trigger_post = trigger(ph.addr, "split").await;
    let parts = wait_replies(&mm, 3).await;
    let s = ph.wait_stats("reply", |s| s.replies_posted == 1).await;
    assert_eq!(s.replies_failed, 0);
    let runes: Vec<usize> = parts
        .iter()
        .map(|p| p["message"].as_str().unwrap().chars().count())
        .collect();
    assert_eq!(runes, [10, 10, 5], "part sizes in order");
    let joined: String = parts
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(joined, text, "parts are the message in order");
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(
            p["props"],
            json!({
                "k": "v",
                "from_webhook": "true",
                "webhook_display_name": "Splitter",
                "override_username": "webhook",
                "from_bot": "true",
            }),
            "part {i}: same props"
        );
        assert_eq!(p["root_id"], trigger_post["id"], "part {i}: same root");
    }
    assert_reply_attempts_stay(&mm, 3, "three parts").await;
}

/// Spec §3.3 step 4, §4.3, §4.4, T12–T15: attachments are processed and put in
/// `props.attachments` of a `slack_attachment` post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_are_processed_into_a_slack_attachment_post() {
    let answer = json!({
        "text": "with <https://m|attachments>",
        "attachments": [
            null,
            {
                "pretext": "<!channel> X <!here>",
                "text": "<@user1> see <https://a|b>",
                "Title": "<@user1> <https://t|not a link>",
                "color": "#ff0000",
                "fields": [
                    {"title": "n", "value": 42, "short": "TRUE"},
                    null,
                    {"title": "s", "value": "<!all> <https://f|g>", "short": false}
                ]
            },
            null,
            {"pretext": "pretext2", "text": "text2"}
        ]
    });
    let Fixture { mm, rx: _rx, ph } = Fixture::builder()
        .responder(Responder::Json(answer.to_string()))
        .hook(|rx| hook("Attach", "attach", &rx.url("/"), &[]))
        .start()
        .await;
    trigger(ph.addr, "attach").await;
    let posts = wait_replies(&mm, 1).await;
    ph.wait_stats("reply", |s| s.replies_posted == 1).await;
    assert_reply_attempts_stay(&mm, 1, "one post").await;
    let reply = &posts[0];
    assert_eq!(reply["type"], "slack_attachment");
    assert_eq!(reply["message"], "with [attachments](https://m)");
    assert_eq!(
        reply["props"]["attachments"],
        json!([
            {
                "pretext": "@channel X @here",
                "text": "@alice see [b](https://a)",
                "title": "@alice <https://t|not a link>",
                "color": "#ff0000",
                "fields": [
                    {"title": "n", "value": "42", "short": true},
                    {"title": "s", "value": "@all [g](https://f)", "short": false}
                ]
            },
            {"pretext": "pretext2", "text": "text2"}
        ]),
        "nulls dropped, Slack markup translated, numbers as strings, short as bool"
    );
    assert_eq!(reply["props"]["from_webhook"], "true");
    assert_eq!(reply["props"]["webhook_display_name"], "Attach");
}

/// Spec §3.1, §3.2 and T7: what posts and what does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_without_text_post_nothing_and_the_status_is_ignored() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Json("{}".into()))
        .hook(|rx| hook("Quiet", "q", &rx.url("/"), &[]))
        .start()
        .await;
    // (why, answer, posted message, or None with the stats counter that records it)
    #[derive(Clone, Copy)]
    enum Want {
        Posted(&'static str),
        NoReply,
        Failed,
    }
    let rows = [
        ("empty object", Responder::Json("{}".into()), Want::NoReply),
        ("empty body", Responder::Json(String::new()), Want::NoReply),
        (
            "whitespace body",
            Responder::Json(" \n ".into()),
            Want::NoReply,
        ),
        (
            "null text",
            Responder::Json(r#"{"text":null}"#.into()),
            Want::NoReply,
        ),
        (
            "top-level null",
            Responder::Json("null".into()),
            Want::NoReply,
        ),
        (
            "empty attachments",
            Responder::Json(r#"{"attachments":[]}"#.into()),
            Want::NoReply,
        ),
        (
            "500 still posts",
            Responder::Status(500, r#"{"text":"x"}"#.into()),
            Want::Posted("x"),
        ),
        (
            "404 with trailing garbage still posts",
            Responder::Status(404, r#"{"text":"y"} trailing"#.into()),
            Want::Posted("y"),
        ),
        ("non-JSON", Responder::Json("aaaaaaaa".into()), Want::Failed),
        (
            "top-level array",
            Responder::Json(r#"[{"text":"x"}]"#.into()),
            Want::Failed,
        ),
        (
            "wrong field type",
            Responder::Json(r#"{"text":5}"#.into()),
            Want::Failed,
        ),
        (
            "empty text still posts",
            Responder::Json(r#"{"text":""}"#.into()),
            Want::Posted(""),
        ),
    ];
    let (mut posted, mut none, mut failed) = (0, 0, 0);
    for (why, responder, want) in rows {
        rx.set_responder(responder);
        trigger(ph.addr, "q").await;
        match want {
            Want::Posted(message) => {
                posted += 1;
                let reply = wait_replies(&mm, posted).await[posted - 1].clone();
                assert_eq!(reply["message"], message, "{why}");
            }
            Want::NoReply => none += 1,
            Want::Failed => failed += 1,
        }
        let s = ph
            .wait_stats(why, |s| {
                s.replies_posted == posted as u64
                    && s.replies_none == none
                    && s.replies_failed == failed
            })
            .await;
        assert_eq!(
            s.deliveries_delivered,
            posted as u64 + none + failed,
            "{why}"
        );
        assert_eq!(reply_attempts(&mm).len(), posted, "{why}: reply POSTs");
    }
    assert_reply_attempts_stay(&mm, posted, "no late replies").await;
}

/// Spec §6.4 (posthook's replies must not trigger), with the reply passing through a second
/// posthook listener: posthook B's upstream is posthook A, both with the same catch-all hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_do_not_trigger_hooks_even_through_another_posthook() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Json(r#"{"text":"pong"}"#.into())).await;
    let hooks = [channel_hook("Echo", &rx.url("/"))];
    let a = posthook(&mm.base_url(), "", &hooks).await;
    let b = posthook(&format!("http://{}", a.addr), "", &hooks).await;

    // Through B: the post passes B and A, so each fires its hook once; B's reply then goes
    // through A's listener, and A must recognise it as its own bot's webhook post.
    let user_post = trigger(b.addr, "hello").await;
    let got = rx.wait_for(2, T).await;
    for r in &got {
        let form: std::collections::HashMap<_, _> = r.form().into_iter().collect();
        assert_eq!(form["post_id"], user_post["id"].as_str().unwrap());
    }
    let posts = wait_replies(&mm, 2).await;
    a.wait_stats("B's reply seen and skipped by A", |s| {
        s.posts_observed == 2 && s.own_posts_skipped == 1 && s.replies_posted == 1
    })
    .await;
    b.wait_stats("B replied", |s| s.replies_posted == 1).await;
    rx.assert_quiet(QUIET).await;
    assert_eq!(
        rx.requests().len(),
        2,
        "one request per posthook, none for replies"
    );
    assert_eq!(replies(&mm).len(), 2, "one reply per posthook");
    assert!(posts.iter().all(|p| p["message"] == "pong"));
    let via_a = reply_attempts(&mm)
        .iter()
        .filter(|r| r.header("x-forwarded-for").is_some())
        .count();
    assert_eq!(via_a, 1, "B's reply passed through A's listener");
    assert_eq!(b.stats().own_posts_skipped, 0, "B never saw a reply");

    // Straight through A: exactly one request and one reply for one post.
    rx.clear();
    trigger(a.addr, "again").await;
    rx.wait_for(1, T).await;
    wait_replies(&mm, 3).await;
    rx.assert_quiet(QUIET).await;
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(replies(&mm).len(), 3);

    // A user's own post that merely carries the prop still triggers (Mattermost behaviour).
    rx.clear();
    let forged = post_as_user(
        a.addr,
        json!({"channel_id": PUBLIC, "message": "forged", "props": {"from_webhook": "true"}}),
    )
    .await;
    assert_eq!(forged["props"]["from_webhook"], "true");
    let got = rx.wait_for(1, T).await;
    let form: std::collections::HashMap<_, _> = got[0].form().into_iter().collect();
    assert_eq!(form["post_id"], forged["id"].as_str().unwrap());
    assert_eq!(form["user_name"], USER_NAME);
    wait_replies(&mm, 4).await;
    rx.assert_quiet(QUIET).await;
    assert_eq!(replies(&mm).len(), 4);
    assert_eq!(a.stats().own_posts_skipped, 1, "only B's reply was skipped");
}

/// Spec §3.3 steps 7.4 and 8: a reply Mattermost would refuse is lost, not retried; the
/// parts after a refused part are not posted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_replies_are_counted_and_never_retried() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .responder(Responder::Json("{}".into()))
        .setting("max_post_size: 10")
        .hook(|rx| hook("Refused", "r", &rx.url("/"), &[]))
        .start()
        .await;
    // (why, answer, stand-in MaxPostSize, reply POST attempts)
    let rows = [
        (
            "system_ type: refused by posthook as by Mattermost",
            r#"{"text":"x","type":"system_foo"}"#,
            "16383",
            0,
        ),
        (
            "invalid type \"post\": posthook knows Mattermost would answer 400",
            r#"{"text":"x","type":"post"}"#,
            "16383",
            0,
        ),
        (
            "priority without priority.priority",
            r#"{"text":"x","priority":{"requested_ack":true}}"#,
            "16383",
            0,
        ),
        (
            "upstream 400 on the first of three parts: one attempt, no more parts",
            r#"{"text":"0123456789abcdefghijKLMNO"}"#,
            "5",
            1,
        ),
        (
            "upstream 400 on a single part",
            r#"{"text":"too long for five"}"#,
            "5",
            1,
        ),
    ];
    let mut attempts = 0;
    for (i, (why, answer, max_post_size, tries)) in rows.into_iter().enumerate() {
        mm.set_config("MaxPostSize", max_post_size);
        rx.set_responder(Responder::Json(answer.into()));
        trigger(ph.addr, "r").await;
        attempts += tries;
        ph.wait_stats(why, |s| s.replies_failed == i as u64 + 1)
            .await;
        assert_eq!(reply_attempts(&mm).len(), attempts, "{why}: reply POSTs");
    }
    // A late retry of any row would show up here.
    assert_reply_attempts_stay(&mm, attempts, "no retries").await;
    let s = ph.stats();
    assert_eq!(s.replies_posted, 0);
    assert!(replies(&mm).is_empty(), "nothing was created");

    // A server error is not retried either: the upstream fails while the webhook is answering.
    mm.set_config("MaxPostSize", "16383");
    rx.set_responder(Responder::Delay(
        Duration::from_millis(500),
        r#"{"text":"later"}"#.into(),
    ));
    let before = rx.requests().len();
    trigger(ph.addr, "r").await;
    rx.wait_for(before + 1, T).await;
    mm.set_post_failure(Some((503, "api.context.server_busy.app_error")));
    ph.wait_stats("503 reply", |s| s.replies_failed == 6).await;
    assert_reply_attempts_stay(&mm, attempts + 1, "503").await;
    mm.set_post_failure(None);
    assert_eq!(ph.stats().replies_posted, 0);
}
