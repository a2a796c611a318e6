//! Webhook response decoding (spec §3.1) and reply building (§3.3, §3.5): never panics on any
//! body, ignores what follows a decoded object, and splits the processed message without
//! losing or reordering a rune. Bodies past the 1 MiB cap: `response_decoding_cap`.
//!
//! Input layout: byte 0 = max_post_size (1..=50), byte 1 = where to split the body from
//! trailing bytes, the rest = body.
#![no_main]

#[path = "../../tests/shared/models.rs"]
mod models;

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use models::same_outcome;
use posthook::reply::{
    build_reply_posts, decode_response, HookInfo, ReplySettings, TriggerPost, WebhookResponse,
};
use posthook::reply::slack::{apply_text_links, process_slack_text};

fn check_reply(resp: &WebhookResponse, max: usize) {
    let users: HashMap<String, String> = [("U1", "alice")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let hook = HookInfo {
        display_name: "Hook",
        username: "hookuser",
        icon_url: "http://icon.example/",
    };
    let trigger = TriggerPost {
        id: "post1",
        root_id: "",
        channel_id: "chan1",
    };
    let settings = ReplySettings {
        enable_post_username_override: max % 2 == 0,
        enable_post_icon_override: max % 3 == 0,
        max_post_size: max,
    };
    let Ok(posts) = build_reply_posts(resp, &hook, &trigger, &settings, &users) else {
        return;
    };
    let want = apply_text_links(&process_slack_text(
        resp.text.as_deref().unwrap_or(""),
        &users,
    ));
    assert!(!posts.is_empty());
    let mut joined = String::new();
    for post in &posts {
        let message = post["message"].as_str().unwrap_or_else(|| unreachable!());
        assert!(message.chars().count() <= max);
        assert_eq!(post["channel_id"], "chan1");
        assert_eq!(post["props"]["from_webhook"], "true");
        joined.push_str(message);
    }
    assert_eq!(joined, want);
}

fuzz_target!(|data: &[u8]| {
    let [max, split, rest @ ..] = data else {
        let _ = decode_response(data);
        return;
    };
    let max = 1 + (*max as usize % 50);

    let at = (*split as usize).min(rest.len());
    let (body, tail) = rest.split_at(at);
    let first = decode_response(body);
    if let Ok(Some(resp)) = &first {
        assert!(resp.wants_reply());
        check_reply(resp, max);
        // Whatever follows a complete object is never read.
        assert!(
            same_outcome(&first, &decode_response(rest)),
            "{body:?} + {tail:?}"
        );
    }
    if let Ok(Some(resp)) = decode_response(rest) {
        check_reply(&resp, max);
    }
});
