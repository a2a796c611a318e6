//! Tests of the reply stage's pure parts: decoding (Go's decoder, Mattermost's vectors) and
//! building (props, overrides, splitting), spec §3 and §5.

use super::build::*;
use super::decode::*;
use crate::webhook::MAX_RESPONSE_BYTES;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

const HOOK: HookInfo<'static> = HookInfo {
    display_name: "Hook",
    username: "some-user-name",
    icon_url: "http://some-icon/",
};
const ROOT_TRIGGER: TriggerPost<'static> = TriggerPost {
    id: "triggerpostid",
    root_id: "",
    channel_id: "channelid",
};
const SETTINGS: ReplySettings = ReplySettings {
    enable_post_username_override: false,
    enable_post_icon_override: false,
    max_post_size: 16383,
};

fn decode(body: &str) -> WebhookResponse {
    match decode_response(body.as_bytes()) {
        Ok(Some(resp)) => resp,
        other => panic!("{body:?} should decode to a reply, got {other:?}"),
    }
}

fn build(resp: &WebhookResponse, settings: &ReplySettings) -> Vec<Value> {
    match build_reply_posts(resp, &HOOK, &ROOT_TRIGGER, settings, &HashMap::new()) {
        Ok(posts) => posts,
        Err(e) => panic!("building {resp:?} failed: {e}"),
    }
}

fn only_post(body: &str) -> Value {
    let posts = build(&decode(body), &SETTINGS);
    assert_eq!(posts.len(), 1, "{body} should make one post");
    posts.into_iter().next().unwrap_or_default()
}

#[test]
fn decoding_follows_go_json_decoder() {
    // T7 decoding rows plus §3.1/§3.2 cases. `None` = no reply, `Err` = error.
    let endless_string = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_RESPONSE_BYTES + 10));
    let endless_a = "a".repeat(MAX_RESPONSE_BYTES + 10);
    let late_garbage = format!(r#"{{"text":"ok"}}{}"#, " x".repeat(MAX_RESPONSE_BYTES));
    // (why, body, expected text or no reply, or an error)
    type Row<'a> = (&'a str, &'a str, Result<Option<&'a str>, ()>);
    let rows: Vec<Row<'_>> = vec![
        (
            "T7 valid text",
            r#"{"text": "Hello, World!"}"#,
            Ok(Some("Hello, World!")),
        ),
        ("T7 not JSON", "aaaaaaaa", Err(())),
        ("T7 endless string past 1 MiB", &endless_string, Err(())),
        ("T7 endless a", &endless_a, Err(())),
        ("T7 empty body", "", Ok(None)),
        ("whitespace only", " \r\n\t ", Ok(None)),
        ("empty object", "{}", Ok(None)),
        ("top-level null", "null", Ok(None)),
        ("top-level null with trailing bytes", "nullx", Ok(None)),
        ("text null", r#"{"text":null}"#, Ok(None)),
        ("empty attachments", r#"{"attachments":[]}"#, Ok(None)),
        ("empty text still replies", r#"{"text":""}"#, Ok(Some(""))),
        (
            "keys are case-insensitive",
            r#"{"TEXT":"x","Response_Type":"comment"}"#,
            Ok(Some("x")),
        ),
        (
            "first value only",
            r#"{"text":"a"}{"text":"b"}"#,
            Ok(Some("a")),
        ),
        (
            "trailing bytes ignored",
            r#"{"text":"a"} trailing"#,
            Ok(Some("a")),
        ),
        (
            "bytes past the limit never read",
            &late_garbage,
            Ok(Some("ok")),
        ),
        (
            "later duplicate wins",
            r#"{"text":"a","Text":"b"}"#,
            Ok(Some("b")),
        ),
        ("null resets text", r#"{"text":"a","text":null}"#, Ok(None)),
        (
            "unknown keys ignored",
            r#"{"text":"a","icon_emoji":":x:","extra":[1,{}]}"#,
            Ok(Some("a")),
        ),
        ("top-level array", r#"[{"text":"a"}]"#, Err(())),
        ("top-level string", r#""text""#, Err(())),
        ("top-level number", "1", Err(())),
        ("text of wrong type", r#"{"text":1}"#, Err(())),
        (
            "username of wrong type",
            r#"{"text":"a","username":true}"#,
            Err(()),
        ),
        ("props not an object", r#"{"text":"a","props":[]}"#, Err(())),
        ("attachments not an array", r#"{"attachments":{}}"#, Err(())),
        (
            "priority not an object",
            r#"{"text":"a","priority":"high"}"#,
            Err(()),
        ),
        (
            "priority.requested_ack not a bool",
            r#"{"text":"a","priority":{"priority":"","requested_ack":"yes"}}"#,
            Err(()),
        ),
        (
            "short null fails everything",
            r#"{"text":"a","attachments":[{"fields":[{"short":null}]}]}"#,
            Err(()),
        ),
        (
            "short 1 fails everything",
            r#"{"text":"a","attachments":[{"fields":[{"short":1}]}]}"#,
            Err(()),
        ),
        ("truncated object", r#"{"text":"a""#, Err(())),
    ];
    for (why, body, want) in rows {
        let got = decode_response(body.as_bytes())
            .map(|r| r.map(|r| r.text.unwrap_or_else(|| "<no text>".to_owned())))
            .map_err(|_| ());
        assert_eq!(got, want.map(|t| t.map(str::to_owned)), "{why}");
    }
}

#[test]
fn value_cut_by_the_limit_reports_the_limit() {
    let body = format!(r#"{{"text": "{}"}}"#, "a".repeat(MAX_RESPONSE_BYTES));
    assert!(matches!(
        decode_response(body.as_bytes()),
        Err(DecodeError::TooLarge {
            limit: MAX_RESPONSE_BYTES
        })
    ));
}

#[test]
fn decoded_members_keep_their_values() {
    let resp = decode(
        r#"{"text":"t","username":"u","ICON_URL":"i","type":"custom_x","response_type":"comment",
            "props":{"a":1},"PROPS":{"b":null},"attachments":[null,{"Text":"x"}],
            "priority":{"priority":"urgent"},"priority":{"requested_ack":true}}"#,
    );
    let want = WebhookResponse {
        text: Some("t".into()),
        username: "u".into(),
        icon_url: "i".into(),
        props: Map::from_iter([("a".to_owned(), json!(1)), ("b".to_owned(), Value::Null)]),
        attachments: Some(vec![Value::Null, json!({"text": "x"})]),
        r#type: "custom_x".into(),
        response_type: "comment".into(),
        priority: Some(Priority {
            priority: Some("urgent".into()),
            requested_ack: Some(true),
            persistent_notifications: None,
        }),
    };
    assert_eq!(resp, want, "repeated props/priority merge like Go");
    assert_eq!(
        decode(r#"{"text":"a","props":null}"#).props,
        Map::new(),
        "null props"
    );
    assert_eq!(
        decode(r#"{"text":"a","username":"u","username":null}"#).username,
        "u",
        "null keeps a string"
    );
}

#[test]
fn broken_utf8_and_lone_surrogates_become_replacement_characters() {
    let rows: [(&[u8], &str, &str); 5] = [
        (b"{\"text\":\"a\xffb\"}", "a\u{FFFD}b", "invalid byte"),
        (
            b"{\"text\":\"\xe2\x82a\"}",
            "\u{FFFD}\u{FFFD}a",
            "one U+FFFD per byte of a cut sequence",
        ),
        (br#"{"text":"\ud800x"}"#, "\u{FFFD}x", "lone high surrogate"),
        (
            br#"{"text":"\udc00\ud800\u0041"}"#,
            "\u{FFFD}\u{FFFD}A",
            "lone low, then high without low",
        ),
        (
            br#"{"text":"\ud83d\ude00 \u00e9"}"#,
            "\u{1F600} \u{e9}",
            "valid pair and escapes untouched",
        ),
    ];
    for (body, want, why) in rows {
        let got = decode_response(body).ok().flatten().and_then(|r| r.text);
        assert_eq!(got.as_deref(), Some(want), "{why}");
    }
}

#[test]
fn overrides_follow_settings_and_fallbacks() {
    // T5 rows and the two mixed settings; the hook has a username and an icon.
    let text_only = r#"{"text": "sample response text from test server"}"#;
    let with_overrides = r#"{"text":"sample response text from test server","username":"webhookuser","icon_url":"http://webhook/icon"}"#;
    let rows = [
        (
            "T5 on/on",
            text_only,
            true,
            true,
            Some("some-user-name"),
            Some("http://some-icon/"),
        ),
        ("T5 off/off", text_only, false, false, None, None),
        (
            "T5 response wins",
            with_overrides,
            true,
            true,
            Some("webhookuser"),
            Some("http://webhook/icon"),
        ),
        (
            "username only",
            text_only,
            true,
            false,
            Some("some-user-name"),
            None,
        ),
        (
            "icon only",
            text_only,
            false,
            true,
            None,
            Some("http://some-icon/"),
        ),
        (
            "response values ignored when off",
            with_overrides,
            false,
            false,
            None,
            None,
        ),
    ];
    for (why, body, user_on, icon_on, want_user, want_icon) in rows {
        let settings = ReplySettings {
            enable_post_username_override: user_on,
            enable_post_icon_override: icon_on,
            ..SETTINGS
        };
        let posts = build(&decode(body), &settings);
        let props = &posts[0]["props"];
        assert_eq!(
            props.get("override_username").and_then(Value::as_str),
            want_user,
            "{why}: username"
        );
        assert_eq!(
            props.get("override_icon_url").and_then(Value::as_str),
            want_icon,
            "{why}: icon"
        );
        assert_eq!(props["from_webhook"], "true", "{why}: from_webhook");
        assert_eq!(
            posts[0]["message"], "sample response text from test server",
            "{why}: message"
        );
    }
}

#[test]
fn overrides_without_hook_values_use_defaults() {
    let hook = HookInfo {
        display_name: "",
        username: "",
        icon_url: "",
    };
    let settings = ReplySettings {
        enable_post_username_override: true,
        enable_post_icon_override: true,
        ..SETTINGS
    };
    let posts = build_reply_posts(
        &decode(r#"{"text":"x"}"#),
        &hook,
        &ROOT_TRIGGER,
        &settings,
        &HashMap::new(),
    );
    let props = posts
        .ok()
        .and_then(|p| p.into_iter().next())
        .map(|p| p["props"].clone());
    assert_eq!(
        props,
        Some(
            json!({"override_username": "webhook", "from_webhook": "true", "webhook_display_name": ""})
        ),
        "username falls back to `webhook`, no icon prop (MM-T584)"
    );
}

#[test]
fn reply_body_has_the_documented_shape() {
    let post = only_post(r#"{"text":"hi <!here> <https://x|X>"}"#);
    assert_eq!(
        post,
        json!({
            "channel_id": "channelid",
            "message": "hi @here [X](https://x)",
            "props": {"from_webhook": "true", "webhook_display_name": "Hook"},
        })
    );
    assert_eq!(
        only_post(r#"{"text":""}"#)["message"],
        "",
        "an empty text still makes one (empty) post"
    );
}

#[test]
fn user_ids_in_text_are_replaced_with_usernames() {
    let resp = decode(r#"{"text":"<@u1> and <@u2>","attachments":[{"text":"<@u2>"}]}"#);
    assert_eq!(resp.referenced_user_ids(), vec!["u1", "u2"]);
    let users = HashMap::from([("u1".to_owned(), "alice".to_owned())]);
    let posts =
        build_reply_posts(&resp, &HOOK, &ROOT_TRIGGER, &SETTINGS, &users).unwrap_or_default();
    assert_eq!(posts[0]["message"], "@alice and <@u2>");
}

#[test]
fn comment_replies_go_under_the_thread_root() {
    let rows = [
        (
            "comment on a root post",
            "comment",
            "",
            Some("triggerpostid"),
        ),
        (
            "comment on a thread reply (posthook difference)",
            "comment",
            "rootpostid",
            Some("rootpostid"),
        ),
        ("no comment on a thread reply", "", "rootpostid", None),
        ("response_type is case-sensitive", "Comment", "", None),
    ];
    for (why, response_type, root, want) in rows {
        let resp = WebhookResponse {
            text: Some("x".into()),
            response_type: response_type.into(),
            ..WebhookResponse::default()
        };
        let trigger = TriggerPost {
            root_id: root,
            ..ROOT_TRIGGER
        };
        let posts = build_reply_posts(&resp, &HOOK, &trigger, &SETTINGS, &HashMap::new())
            .unwrap_or_default();
        assert_eq!(
            posts[0].get("root_id").and_then(Value::as_str),
            want,
            "{why}"
        );
    }
}

#[test]
fn reserved_props_are_discarded_and_display_name_overwritten() {
    let post = only_post(
        r#"{"text":"x","props":{"override_username":"evil","override_icon_url":"evil","from_webhook":"false",
            "webhook_display_name":"spoof","attachments":[{"text":"raw"}],"from_bot":"true","override_icon_emoji":"e","k":[1]}}"#,
    );
    assert_eq!(
        post["props"],
        json!({
            "from_webhook": "true",
            "webhook_display_name": "Hook",
            "from_bot": "true",
            "override_icon_emoji": "e",
            "k": [1],
        }),
        "reserved keys and raw props.attachments are dropped, others copied"
    );
    assert!(
        post.get("type").is_none(),
        "raw props.attachments does not set a type"
    );
}

#[test]
fn post_types_are_checked_like_mattermost() {
    // T8 system_generic, §3.3 step 8 and §4.4.
    // (why, body, expected post type, or the error)
    type Row<'a> = (&'a str, &'a str, Result<Option<&'a str>, ReplyError>);
    let rows: [Row<'_>; 9] = [
        (
            "T8 system type",
            r#"{"text":"x","type":"system_generic"}"#,
            Err(ReplyError::SystemPostType("system_generic".into())),
        ),
        (
            "T4 custom type",
            r#"{"text":"x","type":"custom_as"}"#,
            Ok(Some("custom_as")),
        ),
        ("default type", r#"{"text":"x"}"#, Ok(None)),
        ("me", r#"{"text":"x","type":"me"}"#, Ok(Some("me"))),
        (
            "unknown type would be a 400",
            r#"{"text":"x","type":"post"}"#,
            Err(ReplyError::InvalidPostType("post".into())),
        ),
        (
            "attachments give slack_attachment",
            r#"{"attachments":[{"text":"a"}]}"#,
            Ok(Some("slack_attachment")),
        ),
        (
            "attachments keep a custom type",
            r#"{"attachments":[{"text":"a"}],"type":"custom_x"}"#,
            Ok(Some("custom_x")),
        ),
        (
            "null-only attachments set no type",
            r#"{"attachments":[null]}"#,
            Ok(None),
        ),
        (
            "priority is checked before type",
            r#"{"text":"x","type":"system_x","priority":{}}"#,
            Err(ReplyError::MissingPriority),
        ),
    ];
    for (why, body, want) in rows {
        let got = build_reply_posts(
            &decode(body),
            &HOOK,
            &ROOT_TRIGGER,
            &SETTINGS,
            &HashMap::new(),
        )
        .map(|posts| {
            posts[0]
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        assert_eq!(got, want.map(|t| t.map(str::to_owned)), "{why}");
    }
}

#[test]
fn attachments_land_in_props_translated() {
    let post = only_post(
        r#"{"text":"t","attachments":[null,{"pretext":"<!here> <a|b>","Title":"<c|d>","fields":[{"value":42,"short":"True"}],"x":1}]}"#,
    );
    assert_eq!(
        post["props"]["attachments"],
        json!([{"pretext": "@here [b](a)", "title": "<c|d>", "fields": [{"value": "42", "short": true}], "x": 1}]),
    );
    assert_eq!(post["type"], "slack_attachment");
}

#[test]
fn null_only_attachments_make_an_empty_post_without_attachments() {
    // §3.2: `[null]` passes the gate; the processed list is empty, so TriggerWebhook sets
    // no props.attachments and ParseSlackAttachment (T14) never runs.
    let post = only_post(r#"{"attachments":[null]}"#);
    assert_eq!(
        post,
        json!({
            "channel_id": "channelid",
            "message": "",
            "props": {"from_webhook": "true", "webhook_display_name": "Hook"},
        })
    );
}

#[test]
fn priority_is_kept_exactly_and_required() {
    // T9.
    let rows = [
        (
            r#"{"priority":"high","requested_ack":true,"persistent_notifications":false}"#,
            json!({"priority": "high", "requested_ack": true, "persistent_notifications": false}),
        ),
        (
            r#"{"priority":"","requested_ack":true,"persistent_notifications":false}"#,
            json!({"priority": "", "requested_ack": true, "persistent_notifications": false}),
        ),
        (
            r#"{"priority":"urgent","requested_ack":false,"persistent_notifications":true}"#,
            json!({"priority": "urgent", "requested_ack": false, "persistent_notifications": true}),
        ),
        (
            r#"{"PRIORITY":"important"}"#,
            json!({"priority": "important", "requested_ack": null, "persistent_notifications": null}),
        ),
    ];
    for (priority, want) in rows {
        let body = format!(r#"{{"text":"foo @user","priority":{priority}}}"#);
        let post = only_post(&body);
        assert_eq!(post["metadata"]["priority"], want, "T9 {priority}");
        assert_eq!(post["message"], "foo @user", "T9 message unchanged");
    }
    for priority in [r#"{}"#, r#"{"requested_ack":true}"#, r#"{"priority":null}"#] {
        let body = format!(r#"{{"text":"x","priority":{priority}}}"#);
        let got = build_reply_posts(
            &decode(&body),
            &HOOK,
            &ROOT_TRIGGER,
            &SETTINGS,
            &HashMap::new(),
        );
        assert_eq!(
            got,
            Err(ReplyError::MissingPriority),
            "missing priority.priority in {priority}"
        );
    }
    assert!(
        only_post(r#"{"text":"x","priority":null}"#)
            .get("metadata")
            .is_none(),
        "null priority"
    );
}

fn cjk(runes: usize) -> String {
    "本那".chars().cycle().take(runes).collect()
}

fn attachment_with_text(runes: usize) -> Value {
    json!({"text": cjk(runes)})
}

/// (message runes, attachment text runes) of each part.
fn shape(posts: &[Value]) -> Vec<(usize, Vec<usize>)> {
    posts
        .iter()
        .map(|p| {
            let message = p["message"].as_str().unwrap_or_default().chars().count();
            let texts = p["props"]
                .get("attachments")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|a| a["text"].as_str().unwrap_or_default().chars().count())
                        .collect()
                })
                .unwrap_or_default();
            (message, texts)
        })
        .collect()
}

#[test]
fn long_replies_split_like_split_webhook_post() {
    // T10 with maxPostSize 10000 and CJK runes.
    let settings = ReplySettings {
        max_post_size: 10_000,
        ..SETTINGS
    };
    type Shape = Vec<(usize, Vec<usize>)>;
    let rows: [(&str, usize, &[usize], Shape); 6] = [
        (
            "message only",
            15_000,
            &[],
            vec![(10_000, vec![]), (5_000, vec![])],
        ),
        (
            "attachments follow the last part",
            15_000,
            &[1_000, 2_000, 759_000],
            vec![
                (10_000, vec![]),
                (5_000, vec![1_000, 2_000]),
                (0, vec![759_000]),
            ],
        ),
        (
            "everything fits",
            10,
            &[100, 150, 200],
            vec![(10, vec![100, 150, 200])],
        ),
        (
            "second attachment opens a part",
            9_999,
            &[570_000, 190_000],
            vec![(9_999, vec![570_000]), (0, vec![190_000])],
        ),
        (
            "MM-24644",
            15_000,
            &[5_150, 2_000, 759_000],
            vec![
                (10_000, vec![]),
                (5_000, vec![5_150, 2_000]),
                (0, vec![759_000]),
            ],
        ),
        (
            "exactly max runes is one part",
            10_000,
            &[],
            vec![(10_000, vec![])],
        ),
    ];
    for (why, message, texts, want) in rows {
        let resp = WebhookResponse {
            text: Some(cjk(message)),
            attachments: Some(texts.iter().map(|&n| attachment_with_text(n)).collect()),
            ..WebhookResponse::default()
        };
        let posts = build(&resp, &settings);
        assert_eq!(shape(&posts), want, "T10 {why}");
        for post in &posts {
            assert_eq!(
                post["props"]["from_webhook"], "true",
                "{why}: every part is a webhook post"
            );
            let expected_type = if texts.is_empty() {
                None
            } else {
                Some("slack_attachment")
            };
            assert_eq!(
                post.get("type").and_then(Value::as_str),
                expected_type,
                "{why}: every part has the type"
            );
        }
    }
}

#[test]
fn split_parts_are_the_message_in_order() {
    let text = format!("{}{}", cjk(10_000), "tail");
    let settings = ReplySettings {
        max_post_size: 10_000,
        ..SETTINGS
    };
    let resp = WebhookResponse {
        text: Some(text.clone()),
        response_type: "comment".into(),
        ..WebhookResponse::default()
    };
    let posts = build(&resp, &settings);
    let joined: String = posts.iter().filter_map(|p| p["message"].as_str()).collect();
    assert_eq!(joined, text);
    assert!(
        posts.iter().all(|p| p["root_id"] == "triggerpostid"),
        "every part in the thread"
    );
}

#[test]
fn oversized_props_fail_and_oversized_attachments_are_trimmed() {
    // T10 error row: props `foo` of 1,520,000 × "x".
    let mut resp = decode(r#"{"text":"foo"}"#);
    resp.props
        .insert("foo".into(), "x".repeat(1_520_000).into());
    let got = build_reply_posts(&resp, &HOOK, &ROOT_TRIGGER, &SETTINGS, &HashMap::new());
    assert!(
        matches!(got, Err(ReplyError::PropsTooLarge { .. })),
        "T10 huge props: {got:?}"
    );

    let resp = WebhookResponse {
        text: Some("m".into()),
        attachments: Some(vec![attachment_with_text(800_000)]),
        ..WebhookResponse::default()
    };
    let posts = build(&resp, &SETTINGS);
    let props_runes = go_json_runes(&posts[0]["props"]);
    assert_eq!(
        posts.len(),
        1,
        "a lone oversized attachment is trimmed in place"
    );
    assert!(
        props_runes <= PROPS_MAX_USER_RUNES,
        "trimmed props fit: {props_runes}"
    );

    let resp = WebhookResponse {
        text: Some("m".into()),
        attachments: Some(vec![json!({"text": "short", "title": cjk(770_000)})]),
        ..WebhookResponse::default()
    };
    let got = build_reply_posts(&resp, &HOOK, &ROOT_TRIGGER, &SETTINGS, &HashMap::new());
    assert!(
        matches!(got, Err(ReplyError::AttachmentTooLarge { index: 0, .. })),
        "text too short to trim: {got:?}"
    );
}

#[test]
fn no_reply_and_zero_size_are_handled() {
    let empty = WebhookResponse::default();
    assert_eq!(
        build(&empty, &SETTINGS),
        Vec::<Value>::new(),
        "no text, no attachments"
    );
    let settings = ReplySettings {
        max_post_size: 0,
        ..SETTINGS
    };
    let got = build_reply_posts(
        &decode(r#"{"text":"x"}"#),
        &HOOK,
        &ROOT_TRIGGER,
        &settings,
        &HashMap::new(),
    );
    assert_eq!(got, Err(ReplyError::ZeroMaxPostSize));
}

#[test]
fn go_json_rune_count_matches_go_marshal() {
    let rows = [
        (
            json!("a<b>&\u{2028}"),
            r#""a\u003cb\u003e\u0026\u2028""#,
            "HTML-safe escapes",
        ),
        (
            json!("\"\\\n\r\t\u{8}\u{c}\u{1}"),
            r#""\"\\\n\r\t\b\f\u0001""#,
            "control characters",
        ),
        (json!("本"), "\"本\"", "runes, not bytes"),
        (json!(12345678), "12345678", "plain float below 1e21"),
        (json!(1e21), "1e+21", "exponent from 1e21"),
        (json!(0.000001), "0.000001", "plain from 1e-6"),
        (json!(0.0000001), "1e-7", "e-07 shortened"),
        (json!(1.5e-10), "1.5e-10", "two-digit negative exponent"),
        (
            json!({"b": [true, null], "a": 1.5}),
            r#"{"a":1.5,"b":[true,null]}"#,
            "nested",
        ),
    ];
    for (value, go_text, why) in rows {
        assert_eq!(go_json_runes(&value), go_text.chars().count(), "{why}");
    }
    assert_eq!(go_json_float(1e-7), "1e-7");
    assert_eq!(go_json_float(-2.5e22), "-2.5e+22");
}

#[test]
fn typed_attachment_count_includes_every_go_member() {
    // Go prints all 16 members of an empty MessageAttachment (actions is omitempty).
    let go_empty = r#"{"id":0,"fallback":"","color":"","pretext":"","author_name":"","author_link":"","author_icon":"","title":"","title_link":"","text":"","fields":null,"image_url":"","thumb_url":"","footer":"","footer_icon":"","ts":null}"#;
    assert_eq!(go_attachment_runes(&Map::new()), go_empty.chars().count());
    let with_field = json!({"x_unknown": "ignored", "fields": [{"value": "v", "short": true}]});
    let go_field = go_empty.replace(
        r#""fields":null"#,
        r#""fields":[{"title":"","value":"v","short":true}]"#,
    );
    let Value::Object(map) = with_field else {
        panic!("object literal")
    };
    assert_eq!(go_attachment_runes(&map), go_field.chars().count());
}
