//! Slack → Mattermost translation (spec §4): never panics, changes nothing in text without
//! `<`, and on text made of recognised markup and plain runs changes exactly the markup.
#![no_main]

#[path = "../../tests/shared/models.rs"]
mod models;

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use models::{known_users, without, ANNOUNCEMENTS};
use posthook::reply::slack::{
    apply_attachment_links, apply_text_links, expand_announcements, go_fmt_v,
    parse_slack_attachments, process_attachments, process_slack_text, referenced_user_ids,
    replace_user_ids, user_ids_in,
};
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Piece {
    Plain(String),
    Announce(u8),
    User(u8),
    Link(String, String),
    Decoy(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    users: Vec<(String, String)>,
    pieces: Vec<Piece>,
    json: String,
}

const IDS: [&str; 3] = ["U1", "bob7", "Unknown9"];
/// Markup Mattermost leaves alone (spec §4.1–§4.2).
const DECOYS: [&str; 6] = [
    "<!everyone>",
    "<!CHANNEL>",
    "<http://x.example>",
    "<#C1>",
    "<@U1 >",
    "<@>",
];

fuzz_target!(|input: Input| {
    // 1. Arbitrary text and user map: total, and identity without `<`.
    let users: HashMap<String, String> = input.users.into_iter().collect();
    let empty = HashMap::new();
    let t = input.text.as_str();
    let outs = [
        process_slack_text(t, &users),
        process_slack_text(t, &empty),
        apply_text_links(t),
        apply_attachment_links(t),
        expand_announcements(t),
        replace_user_ids(t, &users),
        apply_text_links(&process_slack_text(t, &users)),
    ];
    let _ = user_ids_in(t);
    if !t.contains('<') {
        for out in &outs {
            assert_eq!(out, t);
        }
    }

    // 2. Recognised markup between plain runs: the output is the model's, piece by piece.
    let known = known_users();
    let mut text = String::new();
    let mut want = String::new();
    for piece in input.pieces.iter().take(32) {
        match piece {
            Piece::Plain(s) => {
                let s = without(s, &['<', '>', '|']);
                text.push_str(&s);
                want.push_str(&s);
            }
            Piece::Announce(i) => {
                let (from, to) = ANNOUNCEMENTS[*i as usize % ANNOUNCEMENTS.len()];
                text.push_str(from);
                want.push_str(to);
            }
            Piece::User(i) => {
                let id = IDS[*i as usize % IDS.len()];
                text.push_str(&format!("<@{id}>"));
                match known.get(id) {
                    Some(name) => want.push_str(&format!("@{name}")),
                    None => want.push_str(&format!("<@{id}>")),
                }
            }
            Piece::Link(url, label) => {
                let url = without(url, &['\n', '<', '|', '>']);
                let label = without(label, &['\n', '<', '|', '>']);
                if url.is_empty() || label.is_empty() {
                    continue;
                }
                text.push_str(&format!("<{url}|{label}>"));
                want.push_str(&format!("[{label}]({url})"));
            }
            Piece::Decoy(i) => {
                let d = DECOYS[*i as usize % DECOYS.len()];
                text.push_str(d);
                want.push_str(d);
            }
        }
    }
    assert_eq!(
        apply_text_links(&process_slack_text(&text, &known)),
        want,
        "{text:?}"
    );

    // 3. Attachments from arbitrary JSON: total.
    if let Ok(value) = serde_json::from_str::<Value>(&input.json) {
        let _ = go_fmt_v(&value);
        let list = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        let _ = referenced_user_ids(Some(t), &list);
        let processed = process_attachments(&list, &users);
        let _ = parse_slack_attachments("", processed);
    }
});
