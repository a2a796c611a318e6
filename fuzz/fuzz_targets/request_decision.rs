//! The request-side decision of the proxy (`Proxy::request_could_match`, spec §1.3–§1.4 on a
//! `POST /api/v4/posts` body as Go's decoder reads it): never panics, and whenever the body
//! starts with a JSON object that serde_json reads (valid UTF-8, no lone surrogates, trailing
//! bytes allowed) it agrees with `HookIndex::could_match` on Go's view of the two fields.
#![no_main]

#[path = "../../tests/shared/ordered_json.rs"]
mod ordered_json;
#[path = "../../tests/shared/wiring.rs"]
mod wiring;

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ordered_json::Ordered;
use posthook::config::Config;
use posthook::proxy::Proxy;
use posthook::rules::HookIndex;
use posthook::go::key_matches;
use posthook::stats::Stats;
use serde::de::Deserialize;
use serde_json::Value;

const CONFIG: &str = r##"
listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:9"
bot_token: "bottoken"
hooks:
  - channel_id: chanbound
    callback_urls: ["http://x.example/"]
    token: t
  - trigger_words: ["#build", "a", "é"]
    callback_urls: ["http://x.example/"]
    token: t
  - trigger_words: ["!dep", "ab", "😀"]
    trigger_when: starts_with
    callback_urls: ["http://x.example/"]
    token: t
  - channel_id: other
    trigger_words: ["x"]
    callback_urls: ["http://x.example/"]
    token: t
"##;

struct Fixture {
    proxy: Proxy,
    index: Arc<HookIndex>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = Config::from_yaml("fuzz.yaml", CONFIG, &|_| None)
            .unwrap_or_else(|e| panic!("fuzz config: {e}"));
        // The dispatcher is dropped: nothing here submits a job.
        let (proxy, index, _dispatcher) = wiring::wire(&config, Arc::new(Stats::default()));
        Fixture { proxy, index }
    })
}

/// What Go's decoder makes of the two fields: the last string wins, `null` leaves the field
/// alone, any other type is a decode error (`None`: Mattermost answers 400, nothing fires).
fn model(members: &[(String, Value)]) -> Option<(String, String)> {
    let (mut channel, mut message) = (String::new(), String::new());
    for (k, v) in members {
        let slot = if key_matches(k, "channel_id") {
            &mut channel
        } else if key_matches(k, "message") {
            &mut message
        } else {
            continue;
        };
        match v {
            Value::String(s) => *slot = s.clone(),
            Value::Null => {}
            _ => return None,
        }
    }
    Some((channel, message))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let got = f.proxy.request_could_match(data);
    // The first JSON value only, as Mattermost's `json.NewDecoder(r.Body).Decode(&post)`
    // reads it: whatever follows is never looked at.
    let mut de = serde_json::Deserializer::from_slice(data);
    if let Ok(Ordered(members)) = Ordered::deserialize(&mut de) {
        let want = model(&members).is_some_and(|(c, m)| f.index.could_match(&c, &m));
        assert_eq!(got, want, "{:?}", String::from_utf8_lossy(data));
    }
});
