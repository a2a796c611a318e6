//! Beyond Mattermost (issue 11), end to end against the stand-in: the opt-in keys of a hook
//! (`id`, `enabled`, `thread`, `payload_extras`, …; edits are in `edits.rs`) change what fires and what is sent only for the
//! hooks that set them; a hook without them behaves and encodes exactly as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::time::Duration;

use harness::*;
use posthook::config::Config;
use support::*;

/// A form hook on `trigger` sending to `url`, with extra `key: value` lines.
fn hook(trigger: &str, url: &str, extra: &[(&str, &str)]) -> String {
    word_hook(trigger, url, extra)
}

/// The paths of the requests `rx` received after the first `from`, once there are `to` in
/// all, sorted (concurrent deliveries arrive in any order).
async fn sorted_paths(rx: &WebhookReceiver, from: usize, to: usize) -> Vec<String> {
    let mut paths: Vec<String> = rx.wait_for(to, T).await[from..]
        .iter()
        .map(|r| r.path().to_string())
        .collect();
    paths.sort();
    paths
}

/// Creates a reply to `root` in the public channel; returns the created post.
async fn reply(ph: &Posthook, root: &str, message: &str) -> serde_json::Value {
    let body = serde_json::json!({"channel_id": PUBLIC, "root_id": root, "message": message});
    let r = post_json(ph.addr, &body.to_string()).await;
    assert_eq!(
        r.status,
        201,
        "{}",
        String::from_utf8_lossy(&r.decoded_body())
    );
    serde_json::from_slice(&r.decoded_body()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_hook_fires_nothing() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#build", &rx.url("/off"), &[("enabled", "false")]))
        .hook(|rx| hook("#deploy", &rx.url("/on"), &[("enabled", "true")]))
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#build now").await.0, 201);
    assert_eq!(create_post(ph.addr, PUBLIC, "#deploy now").await.0, 201);
    let fired = rx.wait_for(1, T).await;
    assert_eq!(fired[0].path(), "/on");
    rx.assert_quiet(Duration::from_millis(200)).await;
    let s = ph
        .wait_stats("both posts counted", |s| s.posts_observed == 2)
        .await;
    assert_eq!((s.hook_matches, s.deliveries_due), (1, 1), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_root_and_reply_choose_the_posts_of_a_thread() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#t", &rx.url("/root"), &[("thread", "root")]))
        .hook(|rx| hook("#t", &rx.url("/reply"), &[("thread", "reply")]))
        .hook(|rx| hook("#t", &rx.url("/any"), &[("thread", "any")]))
        .hook(|rx| hook("#t", &rx.url("/default"), &[]))
        .start()
        .await;
    let (status, root) = create_post(ph.addr, PUBLIC, "#t root").await;
    assert_eq!(status, 201);
    let paths = sorted_paths(&rx, 0, 3).await;
    assert_eq!(paths, ["/any", "/default", "/root"], "a root post");
    reply(&ph, root["id"].as_str().unwrap(), "#t in the thread").await;
    let paths = sorted_paths(&rx, 3, 6).await;
    assert_eq!(paths, ["/any", "/default", "/reply"], "a reply");
    rx.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_extras_reach_the_wire_in_both_encodings() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#x", &rx.url("/form"), &[("payload_extras", "true")]))
        .hook(|rx| {
            hook(
                "#x",
                &rx.url("/json"),
                &[
                    ("payload_extras", "true"),
                    ("content_type", "application/json"),
                ],
            )
        })
        .hook(|rx| hook("#x", &rx.url("/plain"), &[("payload_extras", "false")]))
        .start()
        .await;
    let (_, root) = create_post(ph.addr, PUBLIC, "root").await;
    let root_id = root["id"].as_str().unwrap().to_string();
    let post = reply(&ph, &root_id, "#x extras").await;
    let fired = rx.wait_for(3, T).await;
    let by_path = |p: &str| fired.iter().find(|r| r.path() == p).unwrap();

    let form: Vec<(String, String)> = by_path("/form").form();
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted, "form keys stay sorted");
    assert_eq!(keys.len(), 16);
    let get = |k: &str| form.iter().find(|(key, _)| key == k).unwrap().1.clone();
    assert_eq!(get("root_id"), root_id);
    assert_eq!(get("channel_type"), "O");
    assert_eq!(get("event"), "posted");
    assert_eq!(get("edit_at"), "0");

    let json = by_path("/json").body_str();
    let tail = format!(
        r#""file_ids":"","root_id":"{root_id}","channel_type":"O","event":"posted","edit_at":0}}"#
    );
    assert!(json.ends_with(&tail), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["post_id"], post["id"]);

    // Without extras: Mattermost's twelve fields, nothing more.
    assert_eq!(by_path("/plain").form().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_the_beyond_keys() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let url = rx.url("/h");
    let build = |extra: &[(&str, &str)]| hook("#build", &url, extra);
    let config = |entry: &str| format!("{ALLOW_LOOPBACK}hooks:\n{entry}");
    let (text, listen) = config_text(&mm.base_url(), &config(&build(&[])));
    let ph = start(&text, listen).await;
    let handle = ph.running.as_ref().unwrap().handle.clone();
    let reload_entry = |entry: &str| {
        let (text, _) = config_text(&mm.base_url(), &config(entry));
        // Same listen address: only the hooks change.
        let text = text.replace(
            &text[..text.find('\n').unwrap()],
            &format!("listen: \"{listen}\""),
        );
        let c = Config::from_yaml("reload.yaml", &text, &|_| None).unwrap();
        assert!(handle.reload(&c).unwrap().is_empty(), "only hooks changed");
    };
    let reload = |extra: &[(&str, &str)]| reload_entry(&build(extra));
    let mut seen = 0;

    assert_eq!(create_post(ph.addr, PUBLIC, "#build 1").await.0, 201);
    seen += 1;
    assert_eq!(rx.wait_for(seen, T).await[seen - 1].form().len(), 12);

    reload(&[("enabled", "false")]);
    assert_eq!(create_post(ph.addr, PUBLIC, "#build 2").await.0, 201);
    rx.assert_quiet(Duration::from_millis(300)).await;

    reload(&[("thread", "reply"), ("payload_extras", "true")]);
    let (_, root) = create_post(ph.addr, PUBLIC, "#build 3").await;
    rx.assert_quiet(Duration::from_millis(300)).await;
    reply(&ph, root["id"].as_str().unwrap(), "#build 4").await;
    seen += 1;
    let r = &rx.wait_for(seen, T).await[seen - 1];
    assert_eq!(r.form().len(), 16, "extras after the reload");

    reload(&[]);
    assert_eq!(create_post(ph.addr, PUBLIC, "#build 5").await.0, 201);
    seen += 1;
    let r = &rx.wait_for(seen, T).await[seen - 1];
    assert_eq!(r.form().len(), 12, "back to Mattermost's payload");

    reload(&[("channel_types", "[P]")]);
    assert_eq!(create_post(ph.addr, PUBLIC, "#build 6").await.0, 201);
    rx.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(create_post(ph.addr, PRIVATE, "#build 7").await.0, 201);
    seen += 1;
    let r = &rx.wait_for(seen, T).await[seen - 1];
    let form: std::collections::HashMap<String, String> = r.form().into_iter().collect();
    assert_eq!(
        form["channel_id"], PRIVATE,
        "private channels after the reload"
    );

    reload(&[("from_users", "[nobody]")]);
    assert_eq!(create_post(ph.addr, PUBLIC, "#build 8").await.0, 201);
    rx.assert_quiet(Duration::from_millis(300)).await;
    reload(&[("exclude_bots", "true")]);
    assert_eq!(create_post(ph.addr, PUBLIC, "#build 9").await.0, 201);
    seen += 1;
    rx.wait_for(seen, T).await;

    reload_entry(&hook_yaml(&[
        ("trigger_pattern", "\"bu[a-z]+d\""),
        ("callback_urls", &format!("[\"{url}\"]")),
        ("token", "\"tok\""),
    ]));
    assert_eq!(create_post(ph.addr, PUBLIC, "we rebuild now").await.0, 201);
    seen += 1;
    let r = &rx.wait_for(seen, T).await[seen - 1];
    let form: std::collections::HashMap<String, String> = r.form().into_iter().collect();
    assert_eq!(form["trigger_word"], "build", "a pattern after the reload");

    reload(&[]);
    assert_eq!(
        create_post(ph.addr, PUBLIC, "we rebuild again").await.0,
        201
    );
    rx.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#build 10").await.0, 201);
    seen += 1;
    assert_eq!(
        rx.wait_for(seen, T).await.len(),
        seen,
        "trigger words again"
    );

    reload(&[("events", "[edited]")]);
    let (_, post) = create_post(ph.addr, PUBLIC, "#build 11").await;
    rx.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(edit_message(ph.addr, &post, "#build 12", true).await.0, 200);
    seen += 1;
    let r = &rx.wait_for(seen, T).await[seen - 1];
    let form: std::collections::HashMap<String, String> = r.form().into_iter().collect();
    assert_eq!(form["text"], "#build 12", "edits after the reload");
    reload(&[]);
    assert_eq!(edit_message(ph.addr, &post, "#build 13", true).await.0, 200);
    rx.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_direct_and_group_messages_fire_only_for_hooks_that_list_their_type() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#t", &rx.url("/default"), &[("payload_extras", "true")]))
        .hook(|rx| hook("#t", &rx.url("/P"), &[("channel_types", "[P]")]))
        .hook(|rx| hook("#t", &rx.url("/DG"), &[("channel_types", "[D, G]")]))
        .hook(|rx| {
            hook(
                "#t",
                &rx.url("/all"),
                &[
                    ("channel_types", "[O, P, D, G]"),
                    ("payload_extras", "true"),
                ],
            )
        })
        .hook(|rx| {
            hook(
                "#t",
                &rx.url("/team"),
                &[("channel_types", "[O, P, D, G]"), ("team_id", TEAM)],
            )
        })
        .start()
        .await;
    let rows: &[(&str, &str, &str, &[&str])] = &[
        (PUBLIC, "O", PUBLIC_NAME, &["/all", "/default", "/team"]),
        (PRIVATE, "P", "secret", &["/P", "/all", "/team"]),
        (DM, "D", "botuser__user1", &["/DG", "/all"]),
        (GROUP, "G", GROUP_NAME, &["/DG", "/all"]),
    ];
    let mut seen = 0;
    for &(channel, kind, name, want) in rows {
        let (status, post) = create_post(ph.addr, channel, "#t hello").await;
        assert_eq!(status, 201, "{kind}");
        let fired = rx.wait_for(seen + want.len(), T).await;
        let fired = &fired[seen..];
        seen += want.len();
        let mut paths: Vec<&str> = fired.iter().map(|r| r.path()).collect();
        paths.sort_unstable();
        assert_eq!(paths, want, "{kind}: the hooks that list {kind}");
        for r in fired {
            let form: std::collections::HashMap<String, String> = r.form().into_iter().collect();
            assert_eq!(form["post_id"], post["id"].as_str().unwrap(), "{kind}");
            assert_eq!(form["channel_id"], channel, "{kind}");
            assert_eq!(form["channel_name"], name, "{kind}");
            let team = if matches!(kind, "D" | "G") { "" } else { TEAM };
            assert_eq!(form["team_id"], team, "{kind}: {}", r.path());
            let domain = if team.is_empty() { "" } else { TEAM_NAME };
            assert_eq!(form["team_domain"], domain, "{kind}: {}", r.path());
            if r.path() == "/all" || r.path() == "/default" {
                assert_eq!(form["channel_type"], kind, "{kind}");
            }
        }
    }
    rx.assert_quiet(Duration::from_millis(200)).await;
    let s = ph.stats();
    assert_eq!(s.non_public_skipped, 0, "every type had a hook: {s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_no_hook_fires_outside_public_channels() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#t", &rx.url("/default"), &[]))
        .hook(|rx| hook("#t", &rx.url("/listed"), &[("channel_types", "[O]")]))
        .start()
        .await;
    for channel in [PRIVATE, DM, GROUP] {
        assert_eq!(create_post(ph.addr, channel, "#t hello").await.0, 201);
    }
    let s = ph
        .wait_stats("three posts skipped at the channel look-up", |s| {
            s.non_public_skipped == 3
        })
        .await;
    assert_eq!((s.hook_matches, s.deliveries_due), (0, 0), "{s:#?}");
    rx.assert_quiet(Duration::from_millis(200)).await;
    assert_eq!(create_post(ph.addr, PUBLIC, "#t hello").await.0, 201);
    assert_eq!(rx.wait_for(2, T).await.len(), 2);
}

/// Posts `message` in the public channel as the bot account (a plain post, not a reply of
/// posthook's: no `from_webhook`), as a CI bot answering in the channel would.
async fn post_as_bot(ph: &Posthook, message: &str) {
    let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
    let auth = format!("Bearer {BOT_TOKEN}");
    let r = http_request(
        ph.addr,
        "POST",
        "/api/v4/posts",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_filters_choose_authors_by_id_or_name_and_can_skip_bots() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| {
            hook(
                "#t",
                &rx.url("/by-id"),
                &[("from_users", &format!("[{USER}]"))],
            )
        })
        .hook(|rx| {
            hook(
                "#t",
                &rx.url("/by-name"),
                &[("from_users", &format!("[{BOT_NAME}]"))],
            )
        })
        .hook(|rx| hook("#t", &rx.url("/no-bots"), &[("exclude_bots", "true")]))
        .hook(|rx| hook("#t", &rx.url("/default"), &[]))
        .start()
        .await;
    assert_eq!(
        create_post(ph.addr, PUBLIC, "#t from a person").await.0,
        201
    );
    let paths = sorted_paths(&rx, 0, 3).await;
    assert_eq!(
        paths,
        ["/by-id", "/default", "/no-bots"],
        "the person's post"
    );

    // Mattermost fires for bots, and so does posthook unless a hook says otherwise.
    post_as_bot(&ph, "#t from a bot").await;
    let fired = rx.wait_for(5, T).await;
    let mut paths: Vec<&str> = fired[3..].iter().map(|r| r.path()).collect();
    paths.sort_unstable();
    assert_eq!(paths, ["/by-name", "/default"], "the bot's post");
    let form: std::collections::HashMap<String, String> = fired[3].form().into_iter().collect();
    assert_eq!(form["user_name"], BOT_NAME);
    rx.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_hook_fires_on_a_match_anywhere_and_reports_it() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| {
            hook_yaml(&[
                ("trigger_pattern", r#""(?i)deploy(ed)? to \\w+""#),
                ("callback_urls", &format!("[\"{}\"]", rx.url("/p"))),
                ("token", "\"tok\""),
            ])
        })
        .start()
        .await;
    assert_eq!(create_post(ph.addr, PUBLIC, "nothing to see").await.0, 201);
    let (status, post) = create_post(ph.addr, PUBLIC, "we DEPLOYED to staging, then prod").await;
    assert_eq!(status, 201);
    let fired = rx.wait_for(1, T).await;
    let form: std::collections::HashMap<String, String> = fired[0].form().into_iter().collect();
    assert_eq!(form["trigger_word"], "DEPLOYED to staging");
    assert_eq!(form["post_id"], post["id"].as_str().unwrap());
    rx.assert_quiet(Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_bot_may_not_read_is_skipped_counted_and_fires_nothing() {
    let Fixture { mm, rx, ph } = Fixture::builder()
        .hook(|rx| hook("#t", &rx.url("/P"), &[("channel_types", "[O, P]")]))
        .start()
        .await;
    // The bot is not a member: Mattermost answers the look-up 403.
    mm.refuse_channel_lookups(PRIVATE);
    assert_eq!(create_post(ph.addr, PRIVATE, "#t secret").await.0, 201);
    let s = ph
        .wait_stats("the refused look-up counted", |s| s.lookup_failures >= 1)
        .await;
    assert_eq!((s.hook_matches, s.deliveries_due), (0, 0), "{s:#?}");
    rx.assert_quiet(Duration::from_millis(200)).await;
    // Other channels are not affected.
    assert_eq!(create_post(ph.addr, PUBLIC, "#t open").await.0, 201);
    assert_eq!(rx.wait_for(1, T).await[0].path(), "/P");
}
