//! First-word extraction and hook matching against a naive linear model of spec §1.3–§1.4.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use posthook::config::{ContentType, HookConfig, TriggerWhen};
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

/// Go's `unicode.IsSpace`, written out (spec §1.3).
fn go_is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{B}' | '\u{C}' | '\r' | ' ' | '\u{85}' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// `strings.Fields(message)[0]` or `""`.
fn naive_first_word(message: &str) -> &str {
    message
        .split(go_is_space)
        .find(|w| !w.is_empty())
        .unwrap_or("")
}

struct Model {
    team: Option<&'static str>,
    channel: Option<&'static str>,
    words: Vec<String>,
    when: TriggerWhen,
}

fn model_trigger<'a>(h: &'a Model, word: &str) -> Option<&'a str> {
    if word.is_empty() {
        return None;
    }
    h.words
        .iter()
        .find(|t| match h.when {
            TriggerWhen::Exact => t.as_str() == word,
            TriggerWhen::StartsWith => word.starts_with(t.as_str()),
        })
        .map(String::as_str)
}

fuzz_target!(|input: Input| {
    let models: Vec<Model> = input
        .hooks
        .iter()
        .take(30)
        .map(|h| Model {
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

    let url = url::Url::parse("http://x.example/").unwrap_or_else(|_| unreachable!());
    let configs: Vec<HookConfig> = models
        .iter()
        .map(|m| HookConfig {
            display_name: String::new(),
            description: String::new(),
            team_id: m.team.map(String::from),
            channel_id: m.channel.map(String::from),
            trigger_words: m.words.clone(),
            trigger_when: m.when,
            callback_urls: vec![url.clone()],
            content_type: ContentType::Form,
            token: "t".into(),
            username: String::new(),
            icon_url: String::new(),
        })
        .collect();
    let index = HookIndex::new(&configs);
    let channel = CHANNELS[input.channel as usize % CHANNELS.len()];
    let team = TEAMS[input.team as usize % TEAMS.len()];
    let word = naive_first_word(&message);

    let want: Vec<(usize, &str)> = models
        .iter()
        .enumerate()
        .filter(|(_, h)| h.team.is_none_or(|t| t == team))
        .filter_map(|(i, h)| match h.channel {
            Some(c) if c != channel => None,
            Some(_) if h.words.is_empty() => Some((i, "")),
            _ => model_trigger(h, word).map(|t| (i, t)),
        })
        .collect();
    let got: Vec<(usize, &str)> = index
        .matches(channel, team, &message)
        .iter()
        .map(|m| (m.hook, m.trigger_word))
        .collect();
    assert_eq!(got, want, "{message:?} in {channel}/{team}");

    // could_match: any hook bound to the channel, or a team-wide hook the first word triggers.
    let could = models.iter().any(|h| h.channel == Some(channel))
        || models
            .iter()
            .any(|h| h.channel.is_none() && model_trigger(h, word).is_some());
    assert_eq!(index.could_match(channel, &message), could, "{message:?}");
    if !got.is_empty() {
        assert!(index.could_match(channel, &message));
    }
});
