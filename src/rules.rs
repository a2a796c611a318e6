//! Rules: which hooks a post triggers, exactly as Mattermost decides it (spec §1.2–1.4), with
//! posthook's one documented difference: `trigger_word` is computed per hook (spec §1.5).
//!
//! The hooks are compiled once into an index so that the cost per post does not grow with the
//! number of hooks: channel-bound hooks are found by channel id, team-wide hooks by hashing the
//! post's first word (exact mode) or each of its prefixes whose length some starts-with trigger
//! word has. Team-wide `trigger_pattern` hooks are compiled into one `RegexSet`, so a post is
//! scanned once for all of them. Nothing here does I/O; the channel's type and team come from
//! the caller.

use std::collections::HashMap;

/// ahash: several times faster than SipHash on short keys, and still keyed per process, so
/// first words chosen by users cannot be crafted to collide.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

use crate::config::{Event, HookConfig, TriggerWhen};

/// The first word of a message as Go's `strings.Fields(message)[0]` gives it, or `""`.
///
/// Go splits on `unicode.IsSpace`, which is exactly Unicode's White_Space property, the same
/// set as Rust's `char::is_whitespace` (incl. NEL, NBSP, U+1680, U+2000–U+200A, U+2028, U+2029,
/// U+202F, U+205F, U+3000; not U+200B or U+FEFF).
pub fn first_word(message: &str) -> &str {
    let trimmed = message.trim_start_matches(char::is_whitespace);
    match trimmed.find(char::is_whitespace) {
        Some(end) => &trimmed[..end],
        None => trimmed,
    }
}

/// A hook that a post triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<'a> {
    /// Index of the hook in the configuration.
    pub hook: usize,
    /// The trigger word reported in the payload (`""` for channel-only hooks; for a pattern
    /// hook, the text of the pattern's first match in the message).
    pub trigger_word: &'a str,
}

/// Position of a trigger word: which hook, and where in that hook's list.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hook: u32,
    pos: u32,
}

/// The compiled hook index. Built once per configuration; immutable afterwards.
#[derive(Debug, Default, Clone)]
pub struct HookIndex {
    hooks: Vec<IndexedHook>,
    /// Hooks that may fire (`enabled`); the others are kept in place but in no map.
    enabled: usize,
    /// Channel-bound hooks by channel id, in configuration order.
    by_channel: Map<Box<str>, Vec<u32>>,
    /// Team-wide exact-mode trigger words.
    exact: Map<Box<str>, Vec<Entry>>,
    /// Team-wide starts-with trigger words.
    prefix: Map<Box<str>, Vec<Entry>>,
    /// Distinct byte lengths of the starts-with trigger words, ascending.
    prefix_lens: Vec<usize>,
    /// Which first two bytes (one byte for one-byte words) starts-with trigger words begin
    /// with: most first words are rejected here without hashing any prefix.
    prefix_starts: StartSet,
    /// Team-wide pattern hooks: one scan of the message finds all that match.
    team_patterns: Patterns,
}

/// Team-wide `trigger_pattern` hooks, compiled together.
#[derive(Debug, Clone, Default)]
struct Patterns {
    /// The hooks, in configuration order, and their patterns (for the text of the match).
    hooks: Vec<(u32, regex::Regex)>,
    /// All of them in one set; `None` when there are none, or when the set would be over
    /// regex's size limit (then each is tried in turn: slower, never wrong).
    set: Option<regex::RegexSet>,
}

impl Patterns {
    fn build(hooks: Vec<(u32, regex::Regex)>) -> Patterns {
        let set = if hooks.is_empty() {
            None
        } else {
            regex::RegexSet::new(hooks.iter().map(|(_, r)| r.as_str())).ok()
        };
        Patterns { hooks, set }
    }

    fn is_match(&self, message: &str) -> bool {
        match &self.set {
            Some(set) => set.is_match(message),
            None => self.hooks.iter().any(|(_, r)| r.is_match(message)),
        }
    }

    /// Each matching hook with the text of its pattern's first match.
    fn matches<'m>(&self, message: &'m str, out: &mut Vec<(u32, Found<'m>)>) {
        let mut found = |(id, r): &(u32, regex::Regex)| {
            if let Some(m) = r.find(message) {
                out.push((*id, Found::Text(m.as_str())));
            }
        };
        match &self.set {
            Some(set) => set
                .matches(message)
                .iter()
                .for_each(|i| found(&self.hooks[i])),
            None => self.hooks.iter().for_each(found),
        }
    }
}

/// How a found hook was triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Found<'m> {
    /// Channel-only: no trigger word.
    Channel,
    /// The trigger word at this position of the hook's list.
    Word(u32),
    /// A pattern's match in the message.
    Text(&'m str),
}

/// A set of one- and two-byte beginnings, as bitmaps (8 KiB).
#[derive(Debug, Clone)]
struct StartSet {
    one: [u64; 4],
    two: Box<[u64; 1024]>,
}

impl Default for StartSet {
    fn default() -> Self {
        StartSet {
            one: [0; 4],
            two: Box::new([0; 1024]),
        }
    }
}

impl StartSet {
    fn insert(&mut self, word: &[u8]) {
        match word {
            [a] => self.one[(*a >> 6) as usize] |= 1 << (a & 63),
            [a, b, ..] => {
                let i = u16::from_be_bytes([*a, *b]) as usize;
                self.two[i >> 6] |= 1 << (i & 63);
            }
            [] => {}
        }
    }

    /// Whether some inserted word could be a prefix of `word`.
    fn may_prefix(&self, word: &[u8]) -> bool {
        let one = word
            .first()
            .is_some_and(|a| self.one[(*a >> 6) as usize] & (1 << (a & 63)) != 0);
        let two = match word {
            [a, b, ..] => {
                let i = u16::from_be_bytes([*a, *b]) as usize;
                self.two[i >> 6] & (1 << (i & 63)) != 0
            }
            _ => false,
        };
        one || two
    }
}

#[derive(Debug, Clone)]
struct IndexedHook {
    team_id: Option<Box<str>>,
    /// `trigger_pattern`, for a channel-bound pattern hook (team-wide ones are in the set).
    pattern: Option<regex::Regex>,
    channel_bound: bool,
    trigger_words: Vec<Box<str>>,
    trigger_when: TriggerWhen,
}

impl IndexedHook {
    /// How this channel-bound hook matches a post in its channel with `message` (first word
    /// `word`), if it does.
    fn bound_match<'m>(&self, word: &str, message: &'m str) -> Option<Found<'m>> {
        if let Some(p) = &self.pattern {
            return p.find(message).map(|m| Found::Text(m.as_str()));
        }
        if self.trigger_words.is_empty() {
            return Some(Found::Channel);
        }
        if word.is_empty() {
            return None;
        }
        self.trigger_words
            .iter()
            .position(|t| match self.trigger_when {
                TriggerWhen::Exact => t.as_ref() == word,
                TriggerWhen::StartsWith => word.starts_with(t.as_ref()),
            })
            .map(|pos| Found::Word(pos as u32))
    }
}

impl HookIndex {
    /// Compiles `hooks` (in configuration order, which plays the role of Mattermost's store
    /// order) for new posts: the hooks whose `events` list `posted` (all, by default).
    pub fn new(hooks: &[HookConfig]) -> HookIndex {
        HookIndex::for_event(hooks, Event::Posted)
    }

    /// Compiles the hooks that fire on `event`; the others keep their positions but are in no
    /// map, as disabled hooks are.
    pub fn for_event(hooks: &[HookConfig], event: Event) -> HookIndex {
        let mut index = HookIndex::default();
        let mut team_patterns = Vec::new();
        for (i, h) in hooks.iter().enumerate() {
            let id = i as u32;
            let pattern = h.beyond.trigger_pattern.as_ref().map(|p| p.0.clone());
            index.hooks.push(IndexedHook {
                team_id: h.team_id.as_deref().map(Box::from),
                pattern: pattern.clone().filter(|_| h.channel_id.is_some()),
                channel_bound: h.channel_id.is_some(),
                trigger_words: h
                    .trigger_words
                    .iter()
                    .map(|w| Box::from(w.as_str()))
                    .collect(),
                trigger_when: h.trigger_when,
            });
            if !h.beyond.enabled || !h.beyond.events.contains(event) {
                continue;
            }
            index.enabled += 1;
            if let Some(channel) = &h.channel_id {
                index
                    .by_channel
                    .entry(Box::from(channel.as_str()))
                    .or_default()
                    .push(id);
                continue;
            }
            if let Some(p) = pattern {
                team_patterns.push((id, p));
                continue;
            }
            let map = match h.trigger_when {
                TriggerWhen::Exact => &mut index.exact,
                TriggerWhen::StartsWith => &mut index.prefix,
            };
            for (pos, w) in h.trigger_words.iter().enumerate() {
                let entries = map.entry(Box::from(w.as_str())).or_default();
                // A word listed twice in one hook adds nothing: its first position wins.
                if entries.last().is_none_or(|e| e.hook != id) {
                    entries.push(Entry {
                        hook: id,
                        pos: pos as u32,
                    });
                }
            }
        }
        for k in index.prefix.keys() {
            index.prefix_starts.insert(k.as_bytes());
        }
        let mut lens: Vec<usize> = index.prefix.keys().map(|k| k.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        index.prefix_lens = lens;
        index.team_patterns = Patterns::build(team_patterns);
        index
    }

    /// Number of hooks compiled.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    /// Whether no hook may fire (none at all, or none enabled): nothing needs to be watched.
    pub fn is_empty(&self) -> bool {
        self.enabled == 0
    }

    /// Cheap pre-check used on the request path: could a post with this channel and message
    /// trigger any hook, before the channel's type and team are known?
    pub fn could_match(&self, channel_id: &str, message: &str) -> bool {
        if self.by_channel.contains_key(channel_id) {
            return true;
        }
        let word = first_word(message);
        if !word.is_empty()
            && (self.exact.contains_key(word) || self.prefixes(word).next().is_some())
        {
            return true;
        }
        self.team_patterns.is_match(message)
    }

    /// The pre-check for an edit, whose channel the request does not tell (a patch names only
    /// the post): could `message` trigger a hook in some channel? Channel-bound hooks are tried
    /// one by one, so this costs more with many of them; it runs only for edits, and only while
    /// some hook lists `edited`.
    pub fn could_match_in_any_channel(&self, message: &str) -> bool {
        let word = first_word(message);
        let bound = self.by_channel.values().flatten();
        if bound
            .map(|&id| &self.hooks[id as usize])
            .any(|h| h.bound_match(word, message).is_some())
        {
            return true;
        }
        self.could_match("", message)
    }

    /// Every prefix of `word` that is a starts-with trigger word, with its entries.
    fn prefixes<'s>(&'s self, word: &'s str) -> impl Iterator<Item = &'s [Entry]> + 's {
        let lens: &[usize] = if self.prefix_starts.may_prefix(word.as_bytes()) {
            &self.prefix_lens
        } else {
            &[]
        };
        lens.iter()
            .take_while(move |&&n| n <= word.len())
            .filter(move |&&n| word.is_char_boundary(n))
            .filter_map(move |&n| self.prefix.get(&word[..n]).map(Vec::as_slice))
    }

    /// The hooks that a post in channel `channel_id` of team `team_id` with `message`
    /// triggers, in configuration order (spec §1.4, trigger word per hook). The channel's type
    /// and the other opt-in filters are the caller's.
    pub fn matches<'s>(
        &'s self,
        channel_id: &str,
        team_id: &str,
        message: &'s str,
    ) -> Vec<Match<'s>> {
        let word = first_word(message);
        let mut found: Vec<(u32, Found<'s>)> = Vec::new();

        if let Some(ids) = self.by_channel.get(channel_id) {
            for &id in ids {
                if let Some(how) = self.hooks[id as usize].bound_match(word, message) {
                    found.push((id, how));
                }
            }
        }
        if !word.is_empty() {
            if let Some(entries) = self.exact.get(word) {
                found.extend(entries.iter().map(|e| (e.hook, Found::Word(e.pos))));
            }
            for entries in self.prefixes(word) {
                found.extend(entries.iter().map(|e| (e.hook, Found::Word(e.pos))));
            }
        }
        self.team_patterns.matches(message, &mut found);
        // Several prefixes of one hook may match: the first in the hook's list wins.
        found.sort_unstable();
        found.dedup_by_key(|(id, _)| *id);

        found
            .into_iter()
            .filter(|&(id, _)| {
                let h = &self.hooks[id as usize];
                h.team_id.as_deref().is_none_or(|t| t == team_id)
            })
            .map(|(id, how)| {
                let h = &self.hooks[id as usize];
                Match {
                    hook: id as usize,
                    trigger_word: match how {
                        Found::Channel => "",
                        Found::Word(p) => &h.trigger_words[p as usize],
                        Found::Text(t) => t,
                    },
                }
            })
            .collect()
    }

    /// Whether hook `i` is bound to one channel.
    pub fn is_channel_bound(&self, i: usize) -> bool {
        self.hooks.get(i).is_some_and(|h| h.channel_bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ContentType;

    fn hook(
        channel: Option<&str>,
        team: Option<&str>,
        words: &[&str],
        when: TriggerWhen,
    ) -> HookConfig {
        HookConfig {
            display_name: String::new(),
            description: String::new(),
            team_id: team.map(String::from),
            channel_id: channel.map(String::from),
            trigger_words: words.iter().map(|w| w.to_string()).collect(),
            trigger_when: when,
            callback_urls: vec![url::Url::parse("http://x").unwrap()],
            content_type: ContentType::Form,
            token: "t".into(),
            username: String::new(),
            icon_url: String::new(),
            beyond: Default::default(),
            sending: Default::default(),
        }
    }

    #[test]
    fn first_word_follows_go_strings_fields() {
        let rows: &[(&str, &str, &str)] = &[
            ("foo bar", "foo", "plain space"),
            ("  \t\nfoo bar", "foo", "leading whitespace skipped"),
            ("", "", "empty message"),
            (" \t\r\n ", "", "whitespace only"),
            ("foo: bar", "foo:", "punctuation stays"),
            ("**foo** bar", "**foo**", "markdown stays"),
            ("foo\u{00A0}bar", "foo", "NBSP splits"),
            ("foo\u{0085}bar", "foo", "NEL splits"),
            ("foo\u{1680}bar", "foo", "U+1680 splits"),
            ("foo\u{2000}bar", "foo", "U+2000 splits"),
            ("foo\u{200A}bar", "foo", "U+200A splits"),
            ("foo\u{2028}bar", "foo", "U+2028 splits"),
            ("foo\u{2029}bar", "foo", "U+2029 splits"),
            ("foo\u{202F}bar", "foo", "U+202F splits"),
            ("foo\u{205F}bar", "foo", "U+205F splits"),
            ("foo\u{3000}bar", "foo", "U+3000 splits"),
            ("foo\u{000B}bar", "foo", "vertical tab splits"),
            ("foo\u{000C}bar", "foo", "form feed splits"),
            (
                "foo\u{200B}bar",
                "foo\u{200B}bar",
                "zero-width space does not split",
            ),
            ("foo\u{FEFF}bar", "foo\u{FEFF}bar", "BOM does not split"),
            ("foo,bar", "foo,bar", "comma does not split"),
            ("#build now", "#build", "hash word"),
            ("ünï cödé", "ünï", "non-ASCII word"),
        ];
        for (msg, want, why) in rows {
            assert_eq!(first_word(msg), *want, "{why}: {msg:?}");
        }
    }

    /// Spec §5.1 T2: `TestOutgoingWebhookTriggerWordStartsWith`.
    #[test]
    fn t2_starts_with() {
        let idx = HookIndex::new(&[hook(None, None, &["foo"], TriggerWhen::StartsWith)]);
        assert_eq!(
            idx.matches("c", "team", "foobar").len(),
            1,
            "foobar starts with foo"
        );
        assert!(
            idx.matches("c", "team", "barfoo").is_empty(),
            "barfoo does not"
        );
    }

    /// Spec §5.1 T4 (the matching half: which trigger_word each row reports).
    #[test]
    fn t4_trigger_word_table() {
        use TriggerWhen::*;
        let rows: &[(&str, &[&str], TriggerWhen, Option<&str>)] = &[
            (
                "triggerword lorem ipsum",
                &["triggerword"],
                Exact,
                Some("triggerword"),
            ),
            (
                "triggerwordaaazzz lorem ipsum",
                &["triggerword"],
                StartsWith,
                Some("triggerword"),
            ),
            ("", &[], Exact, Some("")),
            ("", &[], StartsWith, Some("")),
            ("triggerword lorem ipsum", &[], Exact, Some("")),
            ("triggerwordaaazzz lorem ipsum", &[], StartsWith, Some("")),
            (
                "triggerwordaaazzz lorem ipsum",
                &["triggerword"],
                Exact,
                None,
            ),
        ];
        for (msg, words, when, want) in rows {
            let idx = HookIndex::new(&[hook(Some("chan"), None, words, *when)]);
            let got = idx.matches("chan", "team", msg);
            match want {
                Some(w) => {
                    assert_eq!(got.len(), 1, "{msg:?} {words:?} {when:?} should fire");
                    assert_eq!(got[0].trigger_word, *w, "{msg:?} {words:?} {when:?}");
                }
                None => assert!(got.is_empty(), "{msg:?} {words:?} {when:?} should not fire"),
            }
        }
    }

    #[test]
    fn matching_rules_of_spec_1_4() {
        use TriggerWhen::*;
        // (hooks, channel, team, message, expected (hook, trigger_word), why)
        type Row<'a> = (
            Vec<HookConfig>,
            &'a str,
            &'a str,
            &'a str,
            Vec<(usize, &'a str)>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                vec![hook(None, None, &["Foo"], Exact)],
                "c",
                "t",
                "foo bar",
                vec![],
                "case-sensitive",
            ),
            (
                vec![hook(None, None, &["foo"], Exact)],
                "c",
                "t",
                "bar foo",
                vec![],
                "only the first word",
            ),
            (
                vec![hook(None, None, &["foo"], StartsWith)],
                "c",
                "t",
                "foo",
                vec![(0, "foo")],
                "starts-with includes equality",
            ),
            (
                vec![hook(None, None, &["foo", "foobar"], StartsWith)],
                "c",
                "t",
                "foobarbaz",
                vec![(0, "foo")],
                "first prefix in list order wins",
            ),
            (
                vec![hook(None, None, &["foobar", "foo"], StartsWith)],
                "c",
                "t",
                "foobarbaz",
                vec![(0, "foobar")],
                "list order, not length",
            ),
            (
                vec![hook(None, None, &["foo bar"], StartsWith)],
                "c",
                "t",
                "foo bar",
                vec![],
                "trigger with a space never matches",
            ),
            (
                vec![hook(Some("c1"), None, &["foo"], Exact)],
                "c2",
                "t",
                "foo",
                vec![],
                "other channel",
            ),
            (
                vec![hook(Some("c1"), None, &["foo"], Exact)],
                "c1",
                "t",
                "bar",
                vec![],
                "channel and word must both hold",
            ),
            (
                vec![hook(Some("c1"), None, &[], Exact)],
                "c1",
                "t",
                "   ",
                vec![(0, "")],
                "channel-only fires on whitespace",
            ),
            (
                vec![hook(None, Some("t1"), &["foo"], Exact)],
                "c",
                "t2",
                "foo",
                vec![],
                "other team",
            ),
            (
                vec![hook(None, Some("t1"), &["foo"], Exact)],
                "c",
                "t1",
                "foo",
                vec![(0, "foo")],
                "same team",
            ),
            (
                vec![hook(Some("c"), Some("t1"), &[], Exact)],
                "c",
                "t2",
                "x",
                vec![],
                "channel hook of another team",
            ),
            (
                vec![
                    hook(Some("c"), None, &[], Exact),
                    hook(None, None, &["foo"], Exact),
                ],
                "c",
                "t",
                "foo bar",
                vec![(0, ""), (1, "foo")],
                "per-hook trigger word (posthook difference 1)",
            ),
            (
                vec![hook(None, None, &["é"], StartsWith)],
                "c",
                "t",
                "éa",
                vec![(0, "é")],
                "multi-byte prefix",
            ),
            (
                vec![hook(None, None, &["ab"], StartsWith)],
                "c",
                "t",
                "é",
                vec![],
                "word shorter than trigger",
            ),
            (
                vec![
                    hook(None, None, &["foo"], Exact),
                    hook(None, None, &["fo"], StartsWith),
                    hook(None, None, &["foo"], StartsWith),
                ],
                "c",
                "t",
                "foo",
                vec![(0, "foo"), (1, "fo"), (2, "foo")],
                "all matching hooks, in config order",
            ),
        ];
        for (hooks, chan, team, msg, want, why) in rows {
            let idx = HookIndex::new(&hooks);
            let got: Vec<(usize, &str)> = idx
                .matches(chan, team, msg)
                .iter()
                .map(|m| (m.hook, m.trigger_word))
                .collect();
            assert_eq!(got, want, "{why}");
            if !want.is_empty() {
                assert!(idx.could_match(chan, msg), "pre-check must pass: {why}");
            }
        }
    }

    #[test]
    fn pre_check_rejects_posts_no_hook_could_take() {
        let idx = HookIndex::new(&[
            hook(None, None, &["#build"], TriggerWhen::Exact),
            hook(None, None, &["!dep"], TriggerWhen::StartsWith),
            hook(Some("ops"), None, &[], TriggerWhen::Exact),
        ]);
        assert!(!idx.could_match("town", "hello #build"));
        assert!(!idx.could_match("town", "#buildx"));
        assert!(!idx.could_match("town", ""));
        assert!(idx.could_match("town", "#build"));
        assert!(idx.could_match("town", "!deploy now"));
        assert!(idx.could_match("ops", ""));
    }

    #[test]
    fn many_hooks_stay_exact() {
        let hooks: Vec<HookConfig> = (0..10_000)
            .map(|i| {
                let w = format!("#w{i}");
                hook(
                    None,
                    None,
                    &[w.as_str()],
                    if i % 2 == 0 {
                        TriggerWhen::Exact
                    } else {
                        TriggerWhen::StartsWith
                    },
                )
            })
            .collect();
        let idx = HookIndex::new(&hooks);
        // "#w1234" equals exact trigger 1234 and starts with starts-with triggers "#w1", "#w123".
        let got: Vec<usize> = idx
            .matches("c", "t", "#w1234 go")
            .iter()
            .map(|m| m.hook)
            .collect();
        assert_eq!(got, vec![1, 123, 1234]);
        // Starts-with triggers are the odd ones: "#w1" and "#w123" are prefixes of "#w12345";
        // "#w12" and "#w1234" are exact-mode and not equal to it.
        let got: Vec<usize> = idx
            .matches("c", "t", "#w12345")
            .iter()
            .map(|m| m.hook)
            .collect();
        assert_eq!(got, vec![1, 123]);
    }

    #[test]
    fn a_disabled_hook_is_kept_in_place_but_never_matches() {
        let mut off = hook(None, None, &["#build"], TriggerWhen::Exact);
        off.beyond.enabled = false;
        let mut off_channel = hook(Some("c1"), None, &[], TriggerWhen::Exact);
        off_channel.beyond.enabled = false;
        let on = hook(None, None, &["#deploy"], TriggerWhen::StartsWith);
        let idx = HookIndex::new(&[off.clone(), off_channel.clone(), on]);
        assert_eq!(idx.len(), 3, "positions are kept");
        assert!(!idx.is_empty());
        assert!(
            !idx.could_match("c9", "#build now"),
            "no 201 copy for a disabled hook"
        );
        assert!(
            !idx.could_match("c1", "anything"),
            "nor for a disabled channel hook"
        );
        assert!(idx.matches("c1", "team", "#build now").is_empty());
        let got = idx.matches("c9", "team", "#deploying");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].hook, 2, "the enabled hook keeps its position");
        let all_off = HookIndex::new(&[off, off_channel]);
        assert!(
            all_off.is_empty(),
            "nothing to watch when every hook is disabled"
        );
    }

    fn pattern_hook(channel: Option<&str>, pattern: &str) -> HookConfig {
        let mut h = hook(channel, None, &[], TriggerWhen::Exact);
        h.beyond.trigger_pattern =
            Some(crate::config::Pattern(regex::Regex::new(pattern).unwrap()));
        h
    }

    #[test]
    fn pattern_hooks_match_anywhere_and_report_the_first_match() {
        let words = hook(None, None, &["#build"], TriggerWhen::Exact);
        let team_wide = pattern_hook(None, r"deploy to (\w+)");
        let bound = pattern_hook(Some("c1"), r"#\d+");
        let mut off = pattern_hook(None, "deploy");
        off.beyond.enabled = false;
        let idx = HookIndex::new(&[words, team_wide, bound, off]);
        let m = idx.matches("c9", "team", "please deploy to prod and deploy to test");
        assert_eq!(
            m,
            vec![Match {
                hook: 1,
                trigger_word: "deploy to prod"
            }],
            "the first match's text; the disabled pattern hook never matches"
        );
        assert!(
            idx.could_match("c9", "please deploy to prod"),
            "found anywhere"
        );
        assert!(
            !idx.could_match("c9", "nothing here"),
            "no pattern, no word: no copy"
        );
        let m = idx.matches("c1", "team", "#build fixes #12 and #13");
        let got: Vec<(usize, &str)> = m.iter().map(|m| (m.hook, m.trigger_word)).collect();
        assert_eq!(got, [(0, "#build"), (2, "#12")], "configuration order");
        assert!(
            idx.matches("c9", "team", "fixes #12").is_empty(),
            "bound to c1"
        );
        let empty = HookIndex::new(&[pattern_hook(None, "x*")]);
        assert_eq!(
            empty.matches("c", "t", "   "),
            vec![Match {
                hook: 0,
                trigger_word: ""
            }],
            "a pattern matching the empty string fires with an empty trigger word"
        );
    }

    #[test]
    fn each_event_has_its_own_index_and_edits_are_prechecked_in_any_channel() {
        let posted = hook(None, None, &["#build"], TriggerWhen::Exact);
        let mut edited = hook(None, None, &["#deploy"], TriggerWhen::Exact);
        edited.beyond.events = crate::config::Events::default().with("edited").unwrap();
        let mut both = hook(Some("c1"), None, &["fix"], TriggerWhen::StartsWith);
        both.beyond.events = edited.beyond.events.with("posted").unwrap();
        let hooks = [posted, edited, both];
        let posts = HookIndex::new(&hooks);
        let edits = HookIndex::for_event(&hooks, Event::Edited);
        let fired = |idx: &HookIndex, channel: &str, msg: &str| -> Vec<usize> {
            idx.matches(channel, "team", msg)
                .iter()
                .map(|m| m.hook)
                .collect()
        };
        assert_eq!(fired(&posts, "c9", "#build now"), [0]);
        assert!(fired(&posts, "c9", "#deploy now").is_empty(), "edits only");
        assert_eq!(fired(&edits, "c9", "#deploy now"), [1]);
        assert!(fired(&edits, "c9", "#build now").is_empty(), "posts only");
        assert_eq!(fired(&posts, "c1", "fixes"), [2], "both events");
        assert_eq!(fired(&edits, "c1", "fixes"), [2], "both events");
        assert!(
            HookIndex::for_event(&hooks[..1], Event::Edited).is_empty(),
            "no hook lists edited: nothing to watch"
        );

        // The channel of an edit is unknown on the request side: channel-bound hooks count
        // wherever they are bound.
        assert!(edits.could_match_in_any_channel("fixed it"), "bound word");
        assert!(
            edits.could_match_in_any_channel("#deploy prod"),
            "team word"
        );
        assert!(!edits.could_match_in_any_channel("#build"), "posted only");
        assert!(!edits.could_match_in_any_channel("hello"), "no word");
        let mut wordless = hook(Some("c2"), None, &[], TriggerWhen::Exact);
        wordless.beyond.events = crate::config::Events::default().with("edited").unwrap();
        let any = HookIndex::for_event(&[wordless], Event::Edited);
        assert!(any.could_match_in_any_channel("anything at all"));
        let mut pattern = pattern_hook(Some("c3"), r"v\d+\.\d+");
        pattern.beyond.events = crate::config::Events::default().with("edited").unwrap();
        let by_pattern = HookIndex::for_event(&[pattern], Event::Edited);
        assert!(by_pattern.could_match_in_any_channel("ship v1.2"));
        assert!(!by_pattern.could_match_in_any_channel("ship it"));
    }
}
