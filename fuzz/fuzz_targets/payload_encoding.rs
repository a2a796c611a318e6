//! Form and JSON payload encodings (spec §2.2–§2.3): both round-trip through a standard
//! parser, keep Go's key order, and escape exactly what Go escapes.
#![no_main]

#[path = "../../tests/shared/models.rs"]
mod models;
#[path = "../../tests/shared/ordered_json.rs"]
mod ordered_json;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use models::{model_go_json, model_query_escape, payload_of};
use ordered_json::Ordered;
use posthook::go::{json_string_into, query_escape_into};

#[derive(Arbitrary, Debug)]
struct Input {
    strings: [String; 11],
    create_at_ms: i64,
}

fuzz_target!(|input: Input| {
    let s = &input.strings;
    let p = payload_of(s, input.create_at_ms);
    // Go's integer division truncates toward zero.
    let ms = input.create_at_ms;
    let seconds = if ms < 0 {
        format!("-{}", ms.unsigned_abs() / 1000)
    } else {
        (ms / 1000).to_string()
    };
    let seconds = if seconds == "-0" {
        "0".to_string()
    } else {
        seconds
    };
    let go_order: [(&str, &str); 12] = [
        ("token", p.token),
        ("team_id", p.team_id),
        ("team_domain", p.team_domain),
        ("channel_id", p.channel_id),
        ("channel_name", p.channel_name),
        ("timestamp", ""),
        ("user_id", p.user_id),
        ("user_name", p.user_name),
        ("post_id", p.post_id),
        ("text", p.text),
        ("trigger_word", p.trigger_word),
        ("file_ids", p.file_ids),
    ];

    // Form: sorted keys, exact QueryEscape, round-trip.
    let form = p.to_form();
    let mut sorted: Vec<(String, String)> = go_order
        .iter()
        .map(|(k, v)| {
            let v = if *k == "timestamp" {
                seconds.clone()
            } else {
                v.to_string()
            };
            (k.to_string(), v)
        })
        .collect();
    sorted.sort();
    let expected_form: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", model_query_escape(v)))
        .collect();
    assert_eq!(form, expected_form.join("&"));
    let parsed: Vec<(String, String)> =
        serde_urlencoded::from_str(&form).unwrap_or_else(|e| panic!("{e}: {form}"));
    assert_eq!(parsed, sorted);

    // JSON: Go field order, HTML-safe escaping, round-trip.
    let json = p.to_json();
    assert!(
        !json.contains(
            |c: char| matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') || (c as u32) < 0x20
        ),
        "raw character Go escapes: {json:?}"
    );
    let Ordered(members) = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(members.len(), 12);
    for ((k, v), (want_k, want_v)) in members.iter().zip(go_order.iter()) {
        assert_eq!(k, want_k);
        if *want_k == "timestamp" {
            assert_eq!(v.as_i64(), Some(ms));
        } else {
            assert_eq!(v.as_str(), Some(*want_v));
        }
    }
    let mut expected_json = String::from("{");
    for (i, (k, v)) in go_order.iter().enumerate() {
        if i > 0 {
            expected_json.push(',');
        }
        expected_json.push_str(&format!("\"{k}\":"));
        if *k == "timestamp" {
            expected_json.push_str(&ms.to_string());
        } else {
            expected_json.push_str(&model_go_json(v));
        }
    }
    expected_json.push('}');
    assert_eq!(json, expected_json);

    // The public helpers on their own.
    for v in s {
        let mut q = String::new();
        query_escape_into(&mut q, v);
        assert_eq!(q, model_query_escape(v));
        let mut j = String::new();
        json_string_into(&mut j, v);
        assert_eq!(j, model_go_json(v));
    }
});
