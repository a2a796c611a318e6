//! Slack → Mattermost translation of a webhook reply, reproducing Mattermost's
//! `ProcessSlackText`, `ProcessSlackAttachments` and `ParseSlackAttachment` (spec §4).
//! Everything here is pure: user ids are resolved from a map the caller fills beforehand
//! (see [`referenced_user_ids`]), so one batch look-up serves a whole response.
//! Attachments stay `serde_json` objects rather than a typed struct so that keys posthook
//! does not know survive the trip; the decoding half (`Attachments`, used by [`super::decode`]) still
//! matches and type-checks the keys Mattermost knows the way Go's `encoding/json` would,
//! because a mistyped attachment makes Mattermost drop the whole reply.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::go;

/// The post type Mattermost gives a reply that carries attachments and no type of its own.
pub const SLACK_ATTACHMENT_POST_TYPE: &str = "slack_attachment";

/// Link syntax of the reply *message* in current Mattermost (§4.2): the label may contain `<`
/// but neither `|`, `>` nor a newline.
const TEXT_LINK_PATTERN: &str = r"<([^\n<|>]+)\|([^|\n>]+)>";
/// Link syntax inside attachments (§4.2): an older, looser pattern that spans newlines.
const ATTACHMENT_LINK_PATTERN: &str = r"<([^<|]+)\|([^>]+)>";
const USER_ID_PATTERN: &str = r"<@([a-zA-Z0-9]+)>";

// The patterns are constants, so compiling cannot fail at run time (the test
// `link_and_user_patterns_compile` proves it). Holding an `Option` instead of panicking keeps
// every function here total: a `None` would only mean "leave the text as it is".
static TEXT_LINK: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(TEXT_LINK_PATTERN).ok());
static ATTACHMENT_LINK: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(ATTACHMENT_LINK_PATTERN).ok());
static USER_ID: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(USER_ID_PATTERN).ok());

/// Attachment keys Mattermost decodes as plain strings (`MessageAttachment`).
pub(crate) const ATTACHMENT_STRING_KEYS: [&str; 13] = [
    "fallback",
    "color",
    "pretext",
    "author_name",
    "author_link",
    "author_icon",
    "title",
    "title_link",
    "text",
    "image_url",
    "thumb_url",
    "footer",
    "footer_icon",
];

/// Replaces Slack's `<!channel>`, `<!here>` and `<!all>` with Mattermost mentions (§4.1 step 1).
///
/// The replacement is literal, case-sensitive and done in that order; `<!everyone>` and the
/// `<!here|here>` forms are left alone, exactly as Mattermost leaves them.
pub fn expand_announcements(text: &str) -> String {
    text.replace("<!channel>", "@channel")
        .replace("<!here>", "@here")
        .replace("<!all>", "@all")
}

/// Returns the user ids referenced as `<@ID>` in `text`, in order of first appearance and
/// without duplicates.
///
/// The `<@U123|name>` form is not a reference here (Mattermost turns it into a link instead).
pub fn user_ids_in(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    collect_user_ids(text, &mut ids, &mut seen);
    ids
}

/// Replaces every `<@ID>` whose id is a key of `users` (id → username) with `@username`.
///
/// Ids missing from `users` stay as they are, as Mattermost does for unknown users.
pub fn replace_user_ids(text: &str, users: &HashMap<String, String>) -> String {
    let Some(re) = USER_ID.as_ref() else {
        return text.to_owned();
    };
    re.replace_all(text, |caps: &Captures<'_>| {
        let whole = caps.get(0).map_or("", |m| m.as_str());
        let id = caps.get(1).map_or("", |m| m.as_str());
        match users.get(id) {
            Some(username) => format!("@{username}"),
            None => whole.to_owned(),
        }
    })
    .into_owned()
}

/// Mattermost's `ProcessSlackText` (§4.1): announcements first, then user ids.
///
/// The order matters: `<<!channel>>` becomes `<@channel>`, which is then looked up as a user id.
/// HTML entities, channel references and bare `<url>` are not touched.
pub fn process_slack_text(text: &str, users: &HashMap<String, String>) -> String {
    replace_user_ids(&expand_announcements(text), users)
}

/// Rewrites Slack links `<url|label>` in a reply *message* to Markdown `[label](url)`, with the
/// current Mattermost pattern `<([^\n<|>]+)\|([^|\n>]+)>` (§4.2).
pub fn apply_text_links(text: &str) -> String {
    replace_links(&TEXT_LINK, text)
}

/// Rewrites Slack links `<url|label>` inside attachments to Markdown `[label](url)`, with the
/// attachment pattern `<([^<|]+)\|([^>]+)>`, which (unlike the message one) spans newlines and
/// lets the label contain `|` and `<` (§4.2).
pub fn apply_attachment_links(text: &str) -> String {
    replace_links(&ATTACHMENT_LINK, text)
}

fn replace_links(re: &LazyLock<Option<Regex>>, text: &str) -> String {
    match re.as_ref() {
        // Go's `ReplaceAllString(text, "[${2}](${1})")`: leftmost-first, non-overlapping.
        Some(re) => re.replace_all(text, "[${2}](${1})").into_owned(),
        None => text.to_owned(),
    }
}

/// Formats a decoded JSON value the way Go's `fmt.Sprintf("%v", v)` prints the `interface{}`
/// `encoding/json` would have produced for it (§4.3 step 1).
///
/// Strings print as they are, numbers as Go `float64` (`42`, `1.5`, `1.2345678e+07`,
/// `1e-05`), `true`/`false`, `null` as `<nil>`, arrays as `[1 a]` and objects as `map[k:v]`
/// with keys sorted bytewise, recursively.
pub fn go_fmt_v(value: &Value) -> String {
    let mut out = String::new();
    write_go_v(value, &mut out);
    out
}

fn write_go_v(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_format_float_v(number_as_f64(n))),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_go_v(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            // serde_json's map is ordered by key bytes, the order Go's fmt prints map keys in.
            out.push_str("map[");
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(key);
                out.push(':');
                write_go_v(item, out);
            }
            out.push(']');
        }
    }
}

/// Go's `encoding/json` turns every JSON number into a `float64`; so does this.
pub(crate) fn number_as_f64(n: &serde_json::Number) -> f64 {
    // `as_f64` is `Some` for every number serde_json can hold without `arbitrary_precision`.
    n.as_f64().unwrap_or(f64::NAN)
}

/// Shortest round-tripping decimal digits of a finite, non-zero `f`, with the decimal exponent
/// of the first digit: `12345678.0` → `("12345678", 7)`, `0.0001` → `("1", -4)`.
/// Rust and Go both pick the shortest digit string that reads back to the same `f64`.
pub(crate) fn shortest_digits(f: f64) -> (String, i32) {
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

/// Go's `%v` for a `float64`: strconv's shortest `'g'` format, which switches to exponent form
/// when the exponent is below -4 or at least 6 (not 21: that threshold belongs to
/// `encoding/json`), with at least two exponent digits.
fn go_format_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0");
    }
    let (digits, exp) = shortest_digits(f);
    if !(-4..6).contains(&exp) {
        format!("{sign}{}", exponent_form(&digits, exp))
    } else {
        format!("{sign}{}", fixed_form(&digits, exp))
    }
}

/// `d.ddde±XX` with at least two exponent digits, as strconv prints `'e'`.
pub(crate) fn exponent_form(digits: &str, exp: i32) -> String {
    let (first, rest) = digits.split_at(digits.len().min(1));
    let dot = if rest.is_empty() { "" } else { "." };
    let exp_sign = if exp < 0 { '-' } else { '+' };
    format!("{first}{dot}{rest}e{exp_sign}{:02}", exp.unsigned_abs())
}

/// Plain decimal notation of `digits` × 10^(exp - len + 1), as strconv prints `'f'` with the
/// shortest precision.
pub(crate) fn fixed_form(digits: &str, exp: i32) -> String {
    if exp < 0 {
        let zeros = "0".repeat(exp.unsigned_abs() as usize - 1);
        return format!("0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        let (int, frac) = digits.split_at(int_len);
        format!("{int}.{frac}")
    }
}

/// Mattermost's `ProcessSlackAttachments` (§4.3) on decoded attachments.
///
/// `null` attachments and `null` entries of `fields` are dropped (a `fields` list left empty
/// becomes `null`, as Go marshals a nil slice). Every non-null field `value` becomes its Go
/// `%v` string, then [`process_slack_text`] runs on `pretext`, `text`, `title` and those values.
/// Other keys, known or not, pass through untouched. Entries that are not objects are dropped
/// too; decoding never produces them.
pub fn process_attachments(
    attachments: &[Value],
    users: &HashMap<String, String>,
) -> Vec<Map<String, Value>> {
    attachments
        .iter()
        .filter_map(Value::as_object)
        .map(|attachment| {
            let mut attachment = attachment.clone();
            for key in ["pretext", "text", "title"] {
                if let Some(Value::String(s)) = attachment.get_mut(key) {
                    *s = process_slack_text(s, users);
                }
            }
            if let Some(fields) = attachment.get_mut("fields") {
                *fields = process_fields(fields, users);
            }
            attachment
        })
        .collect()
}

fn process_fields(fields: &Value, users: &HashMap<String, String>) -> Value {
    let Value::Array(entries) = fields else {
        return fields.clone();
    };
    let kept: Vec<Value> = entries
        .iter()
        .filter_map(Value::as_object)
        .map(|field| {
            let mut field = field.clone();
            if let Some(value) = field.get_mut("value") {
                if !value.is_null() {
                    *value = Value::String(process_slack_text(&go_fmt_v(value), users));
                }
            }
            Value::Object(field)
        })
        .collect();
    if kept.is_empty() {
        Value::Null
    } else {
        Value::Array(kept)
    }
}

/// Mattermost's `ParseSlackAttachment` (§4.4): returns the post type to use (`post_type`, or
/// [`SLACK_ATTACHMENT_POST_TYPE`] when it is empty) and the attachments with the attachment
/// link pattern applied to `text`, `pretext` and string field values.
///
/// An empty list still yields `slack_attachment` and `[]` (T14). Note that Mattermost calls
/// this for a webhook reply only when [`process_attachments`] left at least one attachment.
pub fn parse_slack_attachments(
    post_type: &str,
    attachments: Vec<Map<String, Value>>,
) -> (String, Vec<Map<String, Value>>) {
    let post_type = if post_type.is_empty() {
        SLACK_ATTACHMENT_POST_TYPE.to_owned()
    } else {
        post_type.to_owned()
    };
    let attachments = attachments
        .into_iter()
        .map(|mut attachment| {
            for key in ["text", "pretext"] {
                if let Some(Value::String(s)) = attachment.get_mut(key) {
                    *s = apply_attachment_links(s);
                }
            }
            if let Some(Value::Array(fields)) = attachment.get_mut("fields") {
                for field in fields.iter_mut() {
                    if let Some(Value::String(s)) = field.get_mut("value") {
                        *s = apply_attachment_links(s);
                    }
                }
            }
            attachment
        })
        .collect();
    (post_type, attachments)
}

/// Every user id a reply will look up: `<@ID>` references in the message `text` and in the
/// attachments' `pretext`, `text`, `title` and field values, in order of first appearance and
/// without duplicates.
///
/// The search runs on the text as [`process_slack_text`] will see it: after announcement
/// expansion and, for field values, after Go `%v` formatting. Resolve these ids in one batch
/// and pass the result as the `users` map of the other functions.
pub fn referenced_user_ids(text: Option<&str>, attachments: &[Value]) -> Vec<String> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut scan = |s: &str| collect_user_ids(&expand_announcements(s), &mut ids, &mut seen);
    if let Some(text) = text {
        scan(text);
    }
    for attachment in attachments.iter().filter_map(Value::as_object) {
        for key in ["pretext", "text", "title"] {
            if let Some(Value::String(s)) = attachment.get(key) {
                scan(s);
            }
        }
        if let Some(Value::Array(fields)) = attachment.get("fields") {
            for value in fields.iter().filter_map(|f| f.get("value")) {
                if !value.is_null() {
                    scan(&go_fmt_v(value));
                }
            }
        }
    }
    ids
}

fn collect_user_ids(text: &str, ids: &mut Vec<String>, seen: &mut HashSet<String>) {
    let Some(re) = USER_ID.as_ref() else {
        return;
    };
    for caps in re.captures_iter(text) {
        if let Some(id) = caps.get(1) {
            if seen.insert(id.as_str().to_owned()) {
                ids.push(id.as_str().to_owned());
            }
        }
    }
}

/// The `attachments` array of a webhook response, decoded the way Mattermost's Go decoder
/// reads `[]*MessageAttachment`, but kept as JSON.
///
/// `null` → `None`; entries are `Value::Null` or an object in which the keys Mattermost knows
/// are renamed to their canonical spelling (keys match case-insensitively; the last of two
/// spellings wins, as in Go) and type-checked: string keys take a string (`null` leaves them
/// unset), `id` an integer in `i64`, `fields` an array of objects or nulls, `actions` an array
/// of objects or nulls, `ts` anything. In each field, `title` takes a string, `value` anything
/// and `short` must be a Slack-compatible bool (`true`/`false` or those words as strings in any
/// letter case), normalised to a JSON bool. Unknown keys are kept verbatim. Any mismatch is a
/// decode error, which fails the whole response as in Mattermost.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Attachments(pub(crate) Option<Vec<Value>>);

impl<'de> Deserialize<'de> for Attachments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Option::<Vec<Option<AttachmentObject>>>::deserialize(deserializer)?;
        Ok(Attachments(list.map(|entries| {
            entries
                .into_iter()
                .map(|entry| entry.map_or(Value::Null, |a| Value::Object(a.0)))
                .collect()
        })))
    }
}

struct AttachmentObject(Map<String, Value>);

impl<'de> Deserialize<'de> for AttachmentObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(AttachmentVisitor)
    }
}

struct AttachmentVisitor;

impl<'de> Visitor<'de> for AttachmentVisitor {
    type Value = AttachmentObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message attachment object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if go::key_matches(&key, "id") {
                if let Some(id) = map.next_value::<Option<i64>>()? {
                    out.insert("id".to_owned(), Value::from(id));
                }
            } else if let Some(name) = ATTACHMENT_STRING_KEYS
                .iter()
                .find(|name| go::key_matches(&key, name))
            {
                if let Some(s) = map.next_value::<Option<String>>()? {
                    out.insert((*name).to_owned(), Value::String(s));
                }
            } else if go::key_matches(&key, "fields") {
                let fields = map.next_value::<Option<Vec<Option<FieldObject>>>>()?;
                let fields = fields.map_or(Value::Null, |fields| {
                    Value::Array(
                        fields
                            .into_iter()
                            .map(|f| f.map_or(Value::Null, |f| Value::Object(f.0)))
                            .collect(),
                    )
                });
                out.insert("fields".to_owned(), fields);
            } else if go::key_matches(&key, "actions") {
                let actions = map.next_value::<Option<Vec<Option<Map<String, Value>>>>>()?;
                let actions = actions.map_or(Value::Null, |actions| {
                    Value::Array(
                        actions
                            .into_iter()
                            .map(|a| a.map_or(Value::Null, Value::Object))
                            .collect(),
                    )
                });
                out.insert("actions".to_owned(), actions);
            } else if go::key_matches(&key, "ts") {
                out.insert("ts".to_owned(), map.next_value::<Value>()?);
            } else {
                out.insert(key, map.next_value::<Value>()?);
            }
        }
        Ok(AttachmentObject(out))
    }
}

struct FieldObject(Map<String, Value>);

impl<'de> Deserialize<'de> for FieldObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = FieldObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message attachment field object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if go::key_matches(&key, "title") {
                if let Some(s) = map.next_value::<Option<String>>()? {
                    out.insert("title".to_owned(), Value::String(s));
                }
            } else if go::key_matches(&key, "value") {
                out.insert("value".to_owned(), map.next_value::<Value>()?);
            } else if go::key_matches(&key, "short") {
                let SlackBool(short) = map.next_value()?;
                out.insert("short".to_owned(), Value::Bool(short));
            } else {
                out.insert(key, map.next_value::<Value>()?);
            }
        }
        Ok(FieldObject(out))
    }
}

/// Mattermost's `SlackCompatibleBool`: `true`, `false`, or the strings `"true"`/`"false"` in
/// any letter case. Anything else, `null` included, is an error.
struct SlackBool(bool);

impl<'de> Deserialize<'de> for SlackBool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SlackBoolVisitor)
    }
}

struct SlackBoolVisitor;

impl<'de> Visitor<'de> for SlackBoolVisitor {
    type Value = SlackBool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true, false, \"true\" or \"false\" for an attachment field's `short`")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(SlackBool(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        if v.eq_ignore_ascii_case("true") {
            Ok(SlackBool(true))
        } else if v.eq_ignore_ascii_case("false") {
            Ok(SlackBool(false))
        } else {
            Err(E::invalid_value(de::Unexpected::Str(v), &self))
        }
    }

    // Mattermost rejects a JSON array here too; spelling it out gives a clearer message than
    // serde's default for sequences.
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<Self::Value, A::Error> {
        Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn users() -> HashMap<String, String> {
        HashMap::from([
            ("existinguserid0000000000a".to_owned(), "alice".to_owned()),
            ("U1".to_owned(), "bob".to_owned()),
        ])
    }

    fn decode_attachments(json: &str) -> Result<Option<Vec<Value>>, serde_json::Error> {
        serde_json::from_str::<Attachments>(json).map(|a| a.0)
    }

    fn decoded(json: &str) -> Vec<Value> {
        match decode_attachments(json) {
            Ok(Some(list)) => list,
            other => panic!("{json} should decode to a list, got {other:?}"),
        }
    }

    #[test]
    fn link_and_user_patterns_compile() {
        assert!(TEXT_LINK.is_some(), "text link pattern");
        assert!(ATTACHMENT_LINK.is_some(), "attachment link pattern");
        assert!(USER_ID.is_some(), "user id pattern");
    }

    #[test]
    fn slack_text_expands_announcements_and_known_user_ids() {
        // T11, plus the cases §4.1 says stay untouched.
        let rows = [
            (
                "<!channel> foo <!channel>",
                "@channel foo @channel",
                "T11 channel",
            ),
            ("<!here> bar <!here>", "@here bar @here", "T11 here"),
            ("<!all> bar <!all>", "@all bar @all", "T11 all"),
            (
                "<@existinguserid0000000000a> hello",
                "@alice hello",
                "T11 user id",
            ),
            ("<@nobody> hi", "<@nobody> hi", "unknown ids stay"),
            (
                "<@U1|bob>",
                "<@U1|bob>",
                "the |name form is not a user reference",
            ),
            (
                "<!everyone> <!CHANNEL> <!here|here>",
                "<!everyone> <!CHANNEL> <!here|here>",
                "not handled forms",
            ),
            ("&amp; &lt;", "&amp; &lt;", "entities are not decoded"),
            (
                "<<!channel>>",
                "<@channel>",
                "expansion runs before user ids (no user `channel`)",
            ),
            (
                "<@U1><@U1> <@u1>",
                "@bob@bob <@u1>",
                "ids are case-sensitive, every occurrence replaced",
            ),
        ];
        for (input, want, why) in rows {
            assert_eq!(process_slack_text(input, &users()), want, "{why}");
        }
    }

    #[test]
    fn user_ids_are_listed_once_in_order_of_appearance() {
        assert_eq!(
            user_ids_in("<@b1> <@a2> <@b1> <@x|y> <@bad-id>"),
            vec!["b1", "a2"]
        );
        assert!(user_ids_in("no ids").is_empty());
    }

    #[test]
    fn text_links_follow_the_current_message_pattern() {
        // T8 link rows, plus §4.2 examples.
        let git_log = "commit 1234\nAuthor: foo <foo@example.org>\nDate: today\n\n test | 1 +\n 1 file changed";
        let rows = [
            ("`<>|<>|`", "`<>|<>|`", "T8 brackets and pipes"),
            ("< | \n|\n>", "< | \n|\n>", "T8 newlines break a link"),
            (git_log, git_log, "T8 git log"),
            (
                "`if(status_int < QUERY_UNKNOWN || status_int >= QUERY_STATUS_MAX)`",
                "`if(status_int < QUERY_UNKNOWN || status_int >= QUERY_STATUS_MAX)`",
                "T8 comparison operators",
            ),
            (
                "<https://mattermost.com|Mattermost>",
                "[Mattermost](https://mattermost.com)",
                "T8 link",
            ),
            ("<http://x>", "<http://x>", "bare url stays"),
            (
                "<#C123|general>",
                "[general](#C123)",
                "channel reference becomes a broken link",
            ),
            ("<@U1|bob>", "[bob](@U1)", "user|name form becomes a link"),
            ("<a|b<c>", "[b<c](a)", "label may contain <"),
            ("<a|b|c>", "<a|b|c>", "label may not contain |"),
            (
                "<a|x> and <b|y>",
                "[x](a) and [y](b)",
                "all matches, leftmost first",
            ),
        ];
        for (input, want, why) in rows {
            assert_eq!(apply_text_links(input), want, "{why}");
        }
    }

    #[test]
    fn attachment_links_follow_the_looser_attachment_pattern() {
        let rows = [
            ("<https://x|X>", "[X](https://x)", "plain link"),
            ("<a\nb|c\nd>", "[c\nd](a\nb)", "spans newlines"),
            ("<a|b|c>", "[b|c](a)", "label may contain |"),
            ("<a|b<c>", "[b<c](a)", "label may contain <"),
            ("<http://x>", "<http://x>", "bare url stays"),
        ];
        for (input, want, why) in rows {
            assert_eq!(apply_attachment_links(input), want, "{why}");
        }
    }

    #[test]
    fn field_values_format_like_go_percent_v() {
        let rows = [
            (json!(42), "42", "integer"),
            (json!(1.5), "1.5", "fraction"),
            (
                json!(12345678),
                "1.2345678e+07",
                "exponent from 1e6 on (strconv 'g', eprec 6)",
            ),
            (json!(123456), "123456", "below 1e6 stays plain"),
            (json!(1000000), "1e+06", "1e6 switches to exponent form"),
            (json!(1e21), "1e+21", "1e21"),
            (json!(0.0001), "0.0001", "exponent -4 stays plain"),
            (
                json!(0.00001),
                "1e-05",
                "exponent -5 switches, two exponent digits",
            ),
            (json!(-3), "-3", "negative"),
            (
                json!(123456789012_i64),
                "1.23456789012e+11",
                "large integer",
            ),
            (json!(1e100), "1e+100", "three exponent digits"),
            (json!(true), "true", "bool"),
            (json!("<@U1> s"), "<@U1> s", "string as is"),
            (Value::Null, "<nil>", "null"),
            (json!([1, "a"]), "[1 a]", "array"),
            (json!({"k": "v"}), "map[k:v]", "object"),
            (
                json!({"b": [null, 2.5], "a": {}}),
                "map[a:map[] b:[<nil> 2.5]]",
                "nested, keys sorted",
            ),
        ];
        for (value, want, why) in rows {
            assert_eq!(go_fmt_v(&value), want, "{why}");
        }
    }

    #[test]
    fn json_minus_zero_keeps_its_sign_like_go() {
        for text in ["-0.0", "-0"] {
            let value: Value = match serde_json::from_str(text) {
                Ok(v) => v,
                Err(e) => panic!("{text}: {e}"),
            };
            assert_eq!(go_fmt_v(&value), "-0", "{text}");
        }
    }

    #[test]
    fn attachment_processing_drops_nulls_and_translates_text_fields() {
        // T12 and T13.
        let raw = decoded(
            r#"[null,
                {"pretext":"<!channel> X <!here>","text":"<!channel> X <!here>","title":"<!channel> X <!here>",
                 "fields":[{"title":"<!channel>","value":"<!channel> X <!here>","short":true}]},
                null,
                {"pretext":"<@existinguserid0000000000a> X","text":"<@existinguserid0000000000a> X",
                 "title":"<@existinguserid0000000000a> X",
                 "fields":[null,{"value":"<@existinguserid0000000000a> X","short":"TRUE"},{"value":12345678},{"value":null}]}]"#,
        );
        let got = process_attachments(&raw, &users());
        assert_eq!(got.len(), 2, "T13: null attachments are dropped");
        let want0 = json!({
            "pretext": "@channel X @here", "text": "@channel X @here", "title": "@channel X @here",
            "fields": [{"title": "<!channel>", "value": "@channel X @here", "short": true}],
        });
        let want1 = json!({
            "pretext": "@alice X", "text": "@alice X", "title": "@alice X",
            "fields": [
                {"value": "@alice X", "short": true},
                {"value": "1.2345678e+07"},
                {"value": null},
            ],
        });
        assert_eq!(
            Value::Object(got[0].clone()),
            want0,
            "T12 announcements; field titles untouched"
        );
        assert_eq!(
            Value::Object(got[1].clone()),
            want1,
            "T12 user ids; null fields dropped, numbers stringified"
        );
    }

    #[test]
    fn attachment_processing_keeps_order_and_passes_nulls_between() {
        // T13 exactly.
        let raw = decoded(
            r#"[null,{"pretext":"pretext","text":"text","title":"title"},null,{"pretext":"pretext2","text":"text2"}]"#,
        );
        let got = process_attachments(&raw, &HashMap::new());
        let pretexts: Vec<_> = got.iter().map(|a| a.get("pretext").cloned()).collect();
        assert_eq!(
            pretexts,
            vec![Some(json!("pretext")), Some(json!("pretext2"))]
        );
    }

    #[test]
    fn attachment_processing_leaves_other_keys_alone() {
        let raw = decoded(
            r##"[{"color":"#ff0000","footer":"<!channel>","actions":[{"name":"go"}],"ts":"123","x_custom":{"a":1},
                 "author_name":"<a|b>","fields":[]}]"##,
        );
        let got = process_attachments(&raw, &users());
        let want = json!({
            "color": "#ff0000", "footer": "<!channel>", "actions": [{"name": "go"}], "ts": "123",
            "x_custom": {"a": 1}, "author_name": "<a|b>", "fields": null,
        });
        assert_eq!(
            Value::Object(got[0].clone()),
            want,
            "only pretext/text/title/field values change"
        );
    }

    #[test]
    fn parse_slack_attachments_sets_type_only_when_empty_and_links_text() {
        // T14 and §4.4.
        let (ty, list) = parse_slack_attachments("", Vec::new());
        assert_eq!((ty.as_str(), list.len()), ("slack_attachment", 0), "T14 []");
        let from_null = process_attachments(&decoded("[null]"), &HashMap::new());
        let (ty, list) = parse_slack_attachments("", from_null);
        assert_eq!(
            (ty.as_str(), list.len()),
            ("slack_attachment", 0),
            "T14 [nil]"
        );

        let raw = decoded(
            r#"[{"text":"<a|b>","pretext":"<c|d>","title":"<e|f>","fallback":"<g|h>","footer":"<i|j>",
                 "fields":[{"title":"<k|l>","value":"<m|n>"},{"value":5}]}]"#,
        );
        let (ty, list) =
            parse_slack_attachments("custom_x", process_attachments(&raw, &HashMap::new()));
        assert_eq!(ty, "custom_x", "a custom type is kept");
        let want = json!({
            "text": "[b](a)", "pretext": "[d](c)", "title": "<e|f>", "fallback": "<g|h>", "footer": "<i|j>",
            "fields": [{"title": "<k|l>", "value": "[n](m)"}, {"value": "5"}],
        });
        assert_eq!(
            Value::Object(list[0].clone()),
            want,
            "links only in text, pretext and field values"
        );
    }

    #[test]
    fn short_accepts_slack_compatible_bools_only() {
        // T15, plus the values §3.1 says fail the whole response.
        let rows = [
            ("true", Some(true)),
            ("\"true\"", Some(true)),
            ("\"True\"", Some(true)),
            ("\"TRUE\"", Some(true)),
            ("false", Some(false)),
            ("\"false\"", Some(false)),
            ("\"False\"", Some(false)),
            ("\"FALSE\"", Some(false)),
            ("null", None),
            ("1", None),
            ("0", None),
            ("\"yes\"", None),
            ("\"t\"", None),
            ("[]", None),
            ("{}", None),
        ];
        for (short, want) in rows {
            let json = format!(r#"[{{"fields":[{{"title":"t","short":{short}}}]}}]"#);
            let got = decode_attachments(&json).ok().flatten().and_then(|list| {
                list.first()
                    .and_then(|a| a.pointer("/fields/0/short").cloned())
            });
            assert_eq!(got, want.map(Value::Bool), "short = {short}");
        }
    }

    #[test]
    fn attachment_keys_match_case_insensitively_and_are_type_checked() {
        let rows: [(&str, Option<Value>, &str); 13] = [
            (
                r#"[{"TEXT":"a","Title":"b"}]"#,
                Some(json!([{"text": "a", "title": "b"}])),
                "canonical spelling",
            ),
            (
                r#"[{"text":"a","TEXT":"b"}]"#,
                Some(json!([{"text": "b"}])),
                "last spelling wins",
            ),
            (
                r#"[{"text":"a","text":null}]"#,
                Some(json!([{"text": "a"}])),
                "null leaves a string unset",
            ),
            (
                r#"[{"author_lin\u212a":"x"}]"#,
                Some(json!([{"author_link": "x"}])),
                "Kelvin sign folds to k",
            ),
            (
                r#"[{"Fields":[{"VALUE":1,"Short":"false","x":2}]}]"#,
                Some(json!([{"fields": [{"value": 1, "short": false, "x": 2}]}])),
                "field keys fold, unknown kept",
            ),
            (
                r#"[{"id":7,"ts":1.5,"x_y":[1]}]"#,
                Some(json!([{"id": 7, "ts": 1.5, "x_y": [1]}])),
                "id, ts and unknown keys",
            ),
            (r#"null"#, None, "null list"),
            (r#"[{"text":1}]"#, None, "text must be a string"),
            (r#"[{"id":1.5}]"#, None, "id must be an integer"),
            (r#"[{"id":"1"}]"#, None, "id must not be a string"),
            (r#"[{"fields":{}}]"#, None, "fields must be an array"),
            (r#"[1]"#, None, "an attachment must be an object"),
            (
                r#"[{"fields":[{"title":2}]}]"#,
                None,
                "field title must be a string",
            ),
        ];
        for (json, want, why) in rows {
            let got = decode_attachments(json).ok().flatten().map(Value::Array);
            assert_eq!(got, want, "{why}: {json}");
        }
        assert_eq!(
            decode_attachments("null").ok(),
            Some(None),
            "null list decodes to None"
        );
    }

    #[test]
    fn referenced_user_ids_cover_text_and_attachment_fields() {
        let raw = decoded(
            r#"[null,{"pretext":"<@p1>","text":"<@t1> <@p1>","title":"<@ti1>","footer":"<@no>",
                 "fields":[{"title":"<@no2>","value":"<@v1>"},{"value":["<@v2>"]},null]}]"#,
        );
        let ids = referenced_user_ids(Some("<@m1> <<!channel>>"), &raw);
        assert_eq!(ids, vec!["m1", "channel", "p1", "t1", "ti1", "v1", "v2"]);
        assert!(referenced_user_ids(None, &[]).is_empty());
    }
}
