//! First-word extraction and hook matching against a naive linear model of spec §1.3–§1.4.
#![no_main]

#[path = "../../tests/shared/models.rs"]
mod models;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use models::{go_is_space, hook_config, model_could_match, model_matches, HookSpec};
use posthook::config::{HookConfig, TriggerWhen};
use posthook::rules::{first_word, HookIndex};

const CHANNELS: [&str; 4] = ["c1", "c2", "c3", "c4"];
const TEAMS: [&str; 3] = ["t1", "t2", "t3"];

#[derive(Arbitrary, Debug)]
struct Hook {
    team: Option<u8>,
    channel: Option<u8>,
    words: Vec<String>,
    starts_with: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    hooks: Vec<Hook>,
    channel: u8,
    team: u8,
    /// When set, the message starts with this hook's trigger word (index taken modulo the
    /// number of words), then `message`; otherwise the message is `message` alone.
    lead: Option<(u8, u8, String)>,
    message: String,
}

/// `strings.Fields(message)[0]` or `""`.
fn naive_first_word(message: &str) -> &str {
    message
        .split(go_is_space)
        .find(|w| !w.is_empty())
        .unwrap_or("")
}

fuzz_target!(|input: Input| {
    let models: Vec<HookSpec> = input
        .hooks
        .iter()
        .take(30)
        .map(|h| HookSpec {
            team: h.team.map(|t| TEAMS[t as usize % 2]),
            channel: h.channel.map(|c| CHANNELS[c as usize % 3]),
            // Mattermost and the config both refuse empty trigger words.
            words: h
                .words
                .iter()
                .take(6)
                .filter(|w| !w.is_empty())
                .cloned()
                .collect(),
            when: if h.starts_with {
                TriggerWhen::StartsWith
            } else {
                TriggerWhen::Exact
            },
        })
        .collect();
    let mut message = String::new();
    if let Some((hook, word, sep)) = &input.lead {
        if let Some(h) = models.get(*hook as usize % models.len().max(1)) {
            if let Some(w) = h.words.get(*word as usize % h.words.len().max(1)) {
                message.push_str(w);
            }
        }
        message.push_str(sep);
    }
    message.push_str(&input.message);

    assert_eq!(
        first_word(&message),
        naive_first_word(&message),
        "{message:?}"
    );

    let configs: Vec<HookConfig> = models.iter().map(hook_config).collect();
    let index = HookIndex::new(&configs);
    let channel = CHANNELS[input.channel as usize % CHANNELS.len()];
    let team = TEAMS[input.team as usize % TEAMS.len()];
    let word = naive_first_word(&message);

    let want = model_matches(&models, channel, team, word);
    let got: Vec<(usize, &str)> = index
        .matches(channel, team, &message)
        .iter()
        .map(|m| (m.hook, m.trigger_word))
        .collect();
    assert_eq!(got, want, "{message:?} in {channel}/{team}");

    // could_match: any hook bound to the channel, or a team-wide hook the first word triggers.
    let could = model_could_match(&models, channel, word);
    assert_eq!(index.could_match(channel, &message), could, "{message:?}");
    if !got.is_empty() {
        assert!(index.could_match(channel, &message));
    }
});
