//! Tests of loading and validating configs: Mattermost's rules, defaults, and the error
//! contract `FILE:LINE:COL: field: message`.

use super::*;

const MINIMAL: &str =
    "listen: \"127.0.0.1:8065\"\nupstream: \"http://127.0.0.1:8066\"\nbot_token: \"${BOT}\"\n";

fn env(name: &str) -> Option<String> {
    match name {
        "BOT" => Some("bottoken123".into()),
        "HOOK_URL" => Some("http://ci.example.com:5000/hook".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml("posthook.yaml", text, &env)
}

fn err(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_copy_kept_for_reloads_differs_only_by_its_hooks() {
    let text = format!(
        "{MINIMAL}metrics_listen: \"127.0.0.1:9091\"\nserver:\n  threads: 2\nlimits:\n  queue_capacity: 7\nhooks:\n  - trigger_words: [\"#a\"]\n    callback_urls: [\"${{HOOK_URL}}\"]\n    token: \"t1\"\n"
    );
    let c = load(&text).unwrap();
    let kept = c.without_hooks();
    assert!(kept.hooks.is_empty());
    assert_eq!(c.hooks.len(), 1);
    // Nothing a reload compares is lost.
    assert!(crate::live::restart_only_changes(&kept, &c).is_empty());
    assert_eq!(
        format!("{kept:?}"),
        format!("{c:?}").replace("hooks: 1", "hooks: 0")
    );
}

#[test]
fn minimal_config_takes_mattermost_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8065".parse().unwrap());
    assert_eq!(c.upstream.base_url, "http://127.0.0.1:8066");
    assert_eq!(c.bot_token, "bottoken123");
    assert!(!c.settings.enable_post_username_override);
    assert!(!c.settings.enable_post_icon_override);
    assert_eq!(
        c.settings.outgoing_integration_requests_timeout,
        Duration::from_secs(30)
    );
    assert_eq!(c.settings.max_post_size, 16383);
    assert!(c.hooks.is_empty());
    assert_eq!(c.metrics_listen, None, "no metrics endpoint unless asked");
}

#[test]
fn metrics_listen_is_an_address_apart_from_listen() {
    let c = load(&format!("{MINIMAL}metrics_listen: \"127.0.0.1:9091\"\n")).unwrap();
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9091".parse().unwrap()));
    assert_eq!(
        err(&format!("{MINIMAL}metrics_listen: \"9091\"\n")),
        "posthook.yaml:4:17: metrics_listen: not an address:port such as 127.0.0.1:9091"
    );
    assert_eq!(
        err(&format!("{MINIMAL}metrics_listen: \"127.0.0.1:8065\"\n")),
        "posthook.yaml:4:17: metrics_listen: must differ from listen"
    );
}

#[test]
fn bad_callback_url_names_file_line_column_and_field() {
    let text = format!(
        "{MINIMAL}hooks:\n  - trigger_words: [\"#build\"]\n    callback_urls: [\"http://ok.example\"]\n    token: t\n  - trigger_words: [\"#deploy\"]\n    callback_urls:\n      - \"nowhere.com/\"\n    token: t\n"
    );
    assert_eq!(
        err(&text),
        "posthook.yaml:10:9: hooks[1].callback_urls[0]: not an http(s) URL"
    );
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let e = err(&format!("{MINIMAL}setings: {{}}\n"));
    assert!(e.starts_with("posthook.yaml:4:1: "), "{e}");
    assert!(e.contains("setings"), "{e}");
    let e = err(&format!(
        "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_url: [\"http://x\"]\n    token: t\n"
    ));
    assert!(e.starts_with("posthook.yaml:6:5: "), "{e}");
    assert!(e.contains("callback_url"), "{e}");
}

#[test]
fn unset_environment_variable_is_named() {
    let e = err("listen: \"127.0.0.1:1\"\nupstream: \"http://a\"\nbot_token: \"${NOPE}\"\n");
    assert_eq!(
        e,
        "posthook.yaml:3:12: bot_token: environment variable NOPE is not set"
    );
}

#[test]
fn variables_are_substituted_inside_strings() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - trigger_words: [\"#b\"]\n    callback_urls: [\"${{HOOK_URL}}?x=1\"]\n    token: \"pre-${{BOT}}-post\"\n"
    ))
    .unwrap();
    assert_eq!(c.hooks[0].token, "pre-bottoken123-post");
    assert_eq!(
        c.hooks[0].callback_urls[0].as_str(),
        "http://ci.example.com:5000/hook?x=1"
    );
}

#[test]
fn hook_rules_follow_mattermost() {
    let cases: &[(&str, &str)] = &[
        (
            "  - callback_urls: [\"http://x\"]\n    token: t\n",
            "at least one trigger word is required",
        ),
        (
            "  - trigger_words: [\"\"]\n    callback_urls: [\"http://x\"]\n    token: t\n",
            "trigger_words[0]: must not be empty",
        ),
        (
            "  - trigger_words: [a]\n    token: t\n",
            "at least one callback URL is required",
        ),
        (
            "  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n",
            "hooks[0].token: required",
        ),
        (
            "  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: \"\"\n",
            "hooks[0].token: must not be empty",
        ),
        (
            "  - trigger_words: [a]\n    callback_urls: [\"ftp://x\"]\n    token: t\n",
            "not an http(s) URL",
        ),
        (
            "  - trigger_words: [a]\n    trigger_when: 2\n    callback_urls: [\"http://x\"]\n    token: t\n",
            "must be exact, starts_with, 0 or 1",
        ),
        (
            "  - trigger_words: [a]\n    display_name: \"0123456789012345678901234567890123456789012345678901234567890123X\"\n    callback_urls: [\"http://x\"]\n    token: t\n",
            "display_name: longer than 64 characters",
        ),
    ];
    for (hook, want) in cases {
        let e = err(&format!("{MINIMAL}hooks:\n{hook}"));
        assert!(e.contains(want), "hook {hook:?}: got {e:?}, want {want:?}");
    }
}

#[test]
fn channel_hook_needs_no_trigger_words_and_modes_parse() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - channel_id: hawos4dqtby53pd64o4a4cmeoo\n    callback_urls: [\"http://x\"]\n    token: t\n  - trigger_words: [a]\n    trigger_when: 1\n    content_type: application/json\n    callback_urls: [\"http://x\"]\n    token: t\n  - trigger_words: [a]\n    trigger_when: starts_with\n    content_type: \"\"\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    assert_eq!(c.hooks[0].trigger_when, TriggerWhen::Exact);
    assert_eq!(c.hooks[0].content_type, ContentType::Form);
    assert_eq!(c.hooks[1].trigger_when, TriggerWhen::StartsWith);
    assert_eq!(c.hooks[1].content_type, ContentType::Json);
    assert_eq!(c.hooks[2].trigger_when, TriggerWhen::StartsWith);
    assert_eq!(c.hooks[2].content_type, ContentType::Form);
}

#[test]
fn upstream_and_listen_are_checked() {
    let e = err("listen: \"nowhere\"\nupstream: \"http://a\"\nbot_token: x\n");
    assert!(e.starts_with("posthook.yaml:1:9: listen:"), "{e}");
    let e = err("listen: \"127.0.0.1:1\"\nupstream: \"ftp://a\"\nbot_token: x\n");
    assert!(e.contains("upstream: not an http(s) URL"), "{e}");
    let e = err("listen: \"127.0.0.1:1\"\nupstream: \"http://a/mm\"\nbot_token: x\n");
    assert!(e.contains("upstream: must be a base URL"), "{e}");
    let e = err("listen: \"127.0.0.1:1\"\nbot_token: x\n");
    assert!(e.contains("upstream: required"), "{e}");
    let c =
        load("listen: \"[::1]:1\"\nupstream: \"https://mm.example.com/\"\nbot_token: x\n").unwrap();
    assert!(c.upstream.tls);
    assert_eq!(c.upstream.port, 443);
    assert_eq!(c.upstream.base_url, "https://mm.example.com");
}

#[test]
fn allow_list_accepts_hosts_cidrs_and_mattermost_string_form() {
    let c = load(&format!(
        "{MINIMAL}settings:\n  allowed_untrusted_internal_connections: [\"ci.internal\", \"10.0.0.0/8 127.0.0.1,::1\"]\n"
    ))
    .unwrap();
    let a = &c.settings.allowed_untrusted_internal_connections;
    assert_eq!(a.len(), 4);
    assert_eq!(a[0], AllowEntry::Host("ci.internal".into()));
    assert_eq!(a[1], AllowEntry::Net("10.0.0.0/8".parse().unwrap()));
    assert_eq!(a[2], AllowEntry::Net("127.0.0.1/32".parse().unwrap()));
    let e = err(&format!(
        "{MINIMAL}settings:\n  allowed_untrusted_internal_connections: [\"bad host!\"]\n"
    ));
    assert!(
        e.contains("allowed_untrusted_internal_connections[0]"),
        "{e}"
    );
}

#[test]
fn numbers_are_range_checked() {
    let e = err(&format!("{MINIMAL}limits:\n  queue_capacity: 0\n"));
    assert_eq!(
        e,
        "posthook.yaml:5:19: limits.queue_capacity: must be between 1 and 10000000"
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: hooksecret\n"
    ))
    .unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("bottoken123") && !shown.contains("hooksecret"),
        "{shown}"
    );
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n    signing_secret: {SECRET_A}\n"
    ))
    .unwrap();
    let shown = format!("{c:?}");
    assert!(!shown.contains(&SECRET_A[6..12]), "{shown}");
}

/// The secrets of the Standard Webhooks test vector (24-byte keys).
const SECRET_A: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY";
const SECRET_B: &str = "whsec_ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8";

#[test]
fn signing_secrets_parse_one_or_several_and_errors_never_show_them() {
    let hook = |value: &str| {
        format!("{MINIMAL}hooks:\n  - signing_secret: {value}\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n")
    };
    let one = load(&hook(SECRET_A)).unwrap();
    assert_eq!(one.hooks[0].sending.signing_secrets.len(), 1);
    assert!(one.hooks[0].sending.is_signed());
    let two = load(&hook(&format!("[{SECRET_A}, {SECRET_B}]"))).unwrap();
    assert_eq!(two.hooks[0].sending.signing_secrets.len(), 2);
    assert_ne!(
        two.hooks[0].sending.signing_secrets[0],
        two.hooks[0].sending.signing_secrets[1]
    );
    let none = load(&hook("[]"));
    assert_eq!(
        none.unwrap_err().to_string(),
        "posthook.yaml:5:21: hooks[0].signing_secret: must list at least one secret (leave the key out for unsigned requests)"
    );
    let e = err(&hook(&format!("[{SECRET_A}, whsec_c2hvcnQ=]")));
    assert_eq!(
        e,
        "posthook.yaml:5:62: hooks[0].signing_secret[1]: must decode to 24 to 64 bytes, not 5 (e.g. whsec_ and the base64 of 32 random bytes)"
    );
    let e = err(&hook("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY"));
    assert!(
        e.starts_with("posthook.yaml:5:21: hooks[0].signing_secret: must start with whsec_"),
        "{e}"
    );
    assert!(!e.contains("AQIDBAUG"), "the value is never repeated: {e}");
    assert_eq!(
        err(&hook("{a: 1}")),
        "posthook.yaml:5:21: hooks[0].signing_secret: expected a whsec_ secret or a list of them, found a mapping"
    );
    // From the environment, like every string.
    let c = Config::from_yaml(
        "posthook.yaml",
        &hook("\"${SIGNING}\""),
        &|name| match name {
            "BOT" => Some("bottoken123".into()),
            "SIGNING" => Some(SECRET_B.into()),
            _ => None,
        },
    )
    .unwrap();
    assert_eq!(
        c.hooks[0].sending.signing_secrets,
        two.hooks[0].sending.signing_secrets[1..]
    );
    let unsigned = load(&format!(
        "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    assert!(!unsigned.hooks[0].sending.is_signed());
}

#[test]
fn a_wrong_value_type_names_the_field_and_both_kinds() {
    let rows: &[(&str, &str)] = &[
        (
            "settings:\n  outgoing_integration_requests_timeout: \"soon\"\n",
            "posthook.yaml:5:42: settings.outgoing_integration_requests_timeout: expected a whole number of seconds, found a string",
        ),
        (
            "settings:\n  outgoing_integration_requests_timeout: [30]\n",
            "posthook.yaml:5:42: settings.outgoing_integration_requests_timeout: expected a whole number of seconds, found a list",
        ),
        (
            "settings:\n  outgoing_integration_requests_timeout: -1\n",
            "posthook.yaml:5:42: settings.outgoing_integration_requests_timeout: expected a whole number of seconds, found a negative number",
        ),
        (
            "limits: {queue_capacity: 1.5}\n",
            "posthook.yaml:4:26: limits.queue_capacity: expected a whole number, found a decimal number",
        ),
        (
            "server:\n  threads: 99999999999999999999999\n",
            "posthook.yaml:5:12: server.threads: expected a whole number, found a number out of range",
        ),
        (
            "settings:\n  enable_post_icon_override: 5\n",
            "posthook.yaml:5:30: settings.enable_post_icon_override: expected true or false, found a number",
        ),
        (
            "settings:\n  allowed_untrusted_internal_connections: [[\"10.0.0.1\"]]\n",
            "posthook.yaml:5:44: settings.allowed_untrusted_internal_connections[0]: expected a string, found a list",
        ),
        (
            "server: [1]\n",
            "posthook.yaml:4:9: server: expected a mapping, found a list",
        ),
        (
            "hooks: {a: 1}\n",
            "posthook.yaml:4:8: hooks: expected a list of hooks, found a mapping",
        ),
        (
            "hooks:\n  - ~\n",
            "posthook.yaml:5:5: hooks[0]: expected a hook (a mapping of its keys), found nothing",
        ),
        (
            "hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: {t: 1}\n",
            "posthook.yaml:7:12: hooks[0].token: expected a string, found a mapping",
        ),
        (
            "hooks:\n  - trigger_words: \"#build\"\n",
            "posthook.yaml:5:20: hooks[0].trigger_words: expected a list of strings, found a string",
        ),
        (
            "hooks:\n  - trigger_words: [a]\n    trigger_when: [1]\n",
            "posthook.yaml:6:19: hooks[0].trigger_when: expected exact, starts_with, 0 or 1, found a list",
        ),
    ];
    for (text, want) in rows {
        assert_eq!(err(&format!("{MINIMAL}{text}")), *want, "{text:?}");
    }
}

#[test]
fn a_wrong_type_error_never_repeats_the_value() {
    let e = err(&format!("{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: [\"hooksecret\"]\n"));
    assert!(!e.contains("hooksecret"), "{e}");
    assert!(
        e.ends_with("hooks[0].token: expected a string, found a list"),
        "{e}"
    );
}

/// Every key of the file model has words for its type: a key added without them would give
/// type errors without "expected …".
#[test]
fn every_key_of_the_file_has_words_for_its_type() {
    let sections = [
        ("", "zz_unknown: 1\n"),
        ("settings", "settings:\n  zz_unknown: 1\n"),
        ("server", "server:\n  zz_unknown: 1\n"),
        ("limits", "limits:\n  zz_unknown: 1\n"),
        ("hooks[0]", "hooks:\n  - zz_unknown: 1\n"),
        (
            "hooks[0].retry",
            "hooks:\n  - retry:\n      zz_unknown: 1\n",
        ),
        ("store", "store:\n  zz_unknown: 1\n"),
        (
            "hooks[0].notify",
            "hooks:\n  - notify:\n      zz_unknown: 1\n",
        ),
    ];
    for (section, text) in sections {
        let e = err(&format!("{MINIMAL}{text}"));
        let keys = e
            .split_once("(expected one of: ")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{section}: {e}"));
        for key in keys.split(", ") {
            assert!(
                file::expected(key).is_some(),
                "{section}.{key} has no words for its type in file::expected"
            );
        }
    }
}

#[test]
fn broken_yaml_and_twice_written_keys_are_located() {
    let e = err(&format!("{MINIMAL}hooks:\n  - trigger_words: [a\n"));
    assert!(
        e.starts_with("posthook.yaml:5:20: hooks[0].trigger_words: "),
        "{e}"
    );
    let e = err(&format!("{MINIMAL}hooks:\n  - token: a\n    token: b\n"));
    assert_eq!(
        e,
        "posthook.yaml:6:5: token: written twice (each key at most once)"
    );
}

#[test]
fn beyond_keys_default_to_mattermosts_behaviour() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    assert_eq!(c.hooks[0].beyond, Beyond::default());
    assert_eq!(c.hooks[0].beyond.id, None);
    assert!(c.hooks[0].beyond.enabled);
    assert_eq!(c.hooks[0].beyond.thread, Thread::Any);
    assert!(!c.hooks[0].beyond.payload_extras);
    assert_eq!(c.hooks[0].name(0).to_string(), "0", "named by its position");
}

#[test]
fn beyond_keys_parse() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - id: ci-build_2\n    enabled: false\n    thread: reply\n    payload_extras: true\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n  - thread: root\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    let b = &c.hooks[0].beyond;
    assert_eq!(b.id.as_deref(), Some("ci-build_2"));
    assert!(!b.enabled);
    assert_eq!(b.thread, Thread::Reply);
    assert!(b.payload_extras);
    assert_eq!(c.hooks[0].name(0).to_string(), "ci-build_2");
    assert_eq!(c.hooks[1].beyond.thread, Thread::Root);
    assert!(format!("{:?}", c.hooks[0]).contains("ci-build_2"));
}

#[test]
fn beyond_key_errors_are_located() {
    let hook = |extra: &str| {
        format!("  - {extra}\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n")
    };
    let rows: Vec<(String, &str)> = vec![
        (
            hook("id: Build"),
            "posthook.yaml:5:9: hooks[0].id: must be 1 to 64 characters of a-z, 0-9, '_' and '-'",
        ),
        (
            hook("id: \"\""),
            "posthook.yaml:5:9: hooks[0].id: must be 1 to 64 characters of a-z, 0-9, '_' and '-'",
        ),
        (
            hook(&format!("id: {}", "a".repeat(65))),
            "posthook.yaml:5:9: hooks[0].id: must be 1 to 64 characters of a-z, 0-9, '_' and '-'",
        ),
        (
            hook("thread: replies"),
            "posthook.yaml:5:13: hooks[0].thread: must be any, root or reply",
        ),
        (
            hook("enabled: maybe"),
            "posthook.yaml:5:14: hooks[0].enabled: expected true or false, found a string",
        ),
        (
            format!("{}{}", hook("id: build"), hook("id: build")),
            "posthook.yaml:9:9: hooks[1].id: \"build\" is already the id of hooks[0]",
        ),
        (
            format!("{}{}", hook("description: first"), hook("id: \"0\"")),
            "posthook.yaml:9:9: hooks[1].id: \"0\" is already the name of hooks[0], which has no id and is named by its position",
        ),
        (
            format!("{}{}", hook("id: \"1\""), hook("description: second")),
            "posthook.yaml:5:9: hooks[0].id: \"1\" is already the name of hooks[1], which has no id and is named by its position",
        ),
    ];
    for (hooks, want) in rows {
        assert_eq!(err(&format!("{MINIMAL}hooks:\n{hooks}")), want, "{hooks}");
    }
    // 64 characters are fine.
    load(&format!(
        "{MINIMAL}hooks:\n{}",
        hook(&format!("id: {}", "a".repeat(64)))
    ))
    .unwrap();
}

#[test]
fn channel_types_parse_and_errors_are_located() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - channel_types: [P, D]\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    let types = c.hooks[0].beyond.channel_types;
    assert!(types.contains("P") && types.contains("D"));
    assert!(!types.contains("O") && !types.contains("G") && !types.contains("X"));
    assert_eq!(Beyond::default().channel_types, ChannelTypes::PUBLIC);
    let hook = |types: &str| {
        format!("{MINIMAL}hooks:\n  - channel_types: {types}\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n")
    };
    assert_eq!(
        err(&hook("[]")),
        "posthook.yaml:5:20: hooks[0].channel_types: must list at least one of O, P, D, G"
    );
    assert_eq!(
        err(&hook("[O, p]")),
        "posthook.yaml:5:24: hooks[0].channel_types[1]: must be O, P, D or G"
    );
    assert_eq!(
        err(&hook("P")),
        "posthook.yaml:5:20: hooks[0].channel_types: expected a list of O, P, D, G, found a string"
    );
}

#[test]
fn events_parse_and_errors_are_located() {
    let hook = |events: &str| {
        format!("{MINIMAL}hooks:\n  - events: {events}\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n")
    };
    let both = load(&hook("[edited, posted]")).unwrap().hooks[0]
        .beyond
        .events;
    assert!(both.contains(Event::Posted) && both.contains(Event::Edited));
    let edits = load(&hook("[edited]")).unwrap().hooks[0].beyond.events;
    assert!(edits.contains(Event::Edited) && !edits.contains(Event::Posted));
    assert_eq!(Beyond::default().events, Events::POSTED);
    assert!(!Events::POSTED.contains(Event::Edited));
    assert_eq!(
        err(&hook("[]")),
        "posthook.yaml:5:13: hooks[0].events: must list at least one of posted, edited"
    );
    assert_eq!(
        err(&hook("[posted, deleted]")),
        "posthook.yaml:5:22: hooks[0].events[1]: must be posted or edited"
    );
    assert_eq!(
        err(&hook("edited")),
        "posthook.yaml:5:13: hooks[0].events: expected a list of posted, edited, found a string"
    );
    assert_eq!(
        err(&hook("[[posted]]")),
        "posthook.yaml:5:14: hooks[0].events[0]: expected posted or edited, found a list"
    );
}

#[test]
fn user_filters_parse_and_empty_lists_are_errors() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - from_users: [alice, 4xp9fdt8zjbqfy5pnkb8bq7xyo]\n    exclude_bots: true\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    let b = &c.hooks[0].beyond;
    assert_eq!(
        b.from_users.as_deref(),
        Some(
            &[
                "alice".to_string(),
                "4xp9fdt8zjbqfy5pnkb8bq7xyo".to_string()
            ][..]
        )
    );
    assert!(b.exclude_bots && b.needs_author());
    assert!(!Beyond::default().needs_author());
    let hook = |users: &str| {
        format!("{MINIMAL}hooks:\n  - from_users: {users}\n    trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n")
    };
    assert_eq!(
        err(&hook("[]")),
        "posthook.yaml:5:17: hooks[0].from_users: must list at least one user id or username"
    );
    assert_eq!(
        err(&hook("[alice, \"\"]")),
        "posthook.yaml:5:25: hooks[0].from_users[1]: must not be empty"
    );
}

#[test]
fn trigger_pattern_compiles_and_excludes_trigger_words() {
    let c = load(&format!(
        "{MINIMAL}hooks:\n  - trigger_pattern: \"(?i)build #[0-9]+\"\n    callback_urls: [\"http://x\"]\n    token: t\n  - trigger_pattern: \"x*\"\n    callback_urls: [\"http://x\"]\n    token: t\n"
    ))
    .unwrap();
    let p = c.hooks[0].beyond.trigger_pattern.as_ref().unwrap();
    assert!(p.0.is_match("please BUILD #42 now"));
    assert!(
        c.hooks[0].trigger_words.is_empty(),
        "no trigger words needed"
    );
    assert!(
        c.hooks[1].beyond.trigger_pattern.is_some(),
        "a pattern that matches the empty string is allowed"
    );
    let rows: &[(&str, &str)] = &[
        (
            "  - trigger_pattern: \"x\"\n    trigger_words: [a]\n",
            "posthook.yaml:6:20: hooks[0].trigger_words: cannot be used with trigger_pattern: a hook fires either on trigger words or on a pattern",
        ),
        (
            "  - trigger_words: [a]\n    trigger_pattern: \"x\"\n",
            "posthook.yaml:6:22: hooks[0].trigger_pattern: cannot be used with trigger_words: a hook fires either on trigger words or on a pattern",
        ),
        (
            "  - trigger_pattern: \"x\"\n    trigger_when: starts_with\n",
            "posthook.yaml:6:19: hooks[0].trigger_when: cannot be used with trigger_pattern: a hook fires either on trigger words or on a pattern",
        ),
        (
            "  - trigger_pattern: \"(?=build)\"\n",
            "posthook.yaml:5:22: hooks[0].trigger_pattern: invalid pattern: look-around, including look-ahead and look-behind, is not supported",
        ),
        (
            "  - trigger_pattern: \"(unclosed\"\n",
            "posthook.yaml:5:22: hooks[0].trigger_pattern: invalid pattern: unclosed group",
        ),
        (
            "  - trigger_pattern: \"\\\\w{1000}{1000}\"\n",
            "posthook.yaml:5:22: hooks[0].trigger_pattern: pattern too large (over 1048576 bytes compiled)",
        ),
    ];
    for (hook, want) in rows {
        let text =
            format!("{MINIMAL}hooks:\n{hook}    callback_urls: [\"http://x\"]\n    token: t\n");
        assert_eq!(err(&text), *want, "{hook}");
    }
}

#[test]
fn retry_and_timeout_parse_with_defaults_and_located_errors() {
    let hook = |extra: &str| {
        format!("{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n{extra}")
    };
    let c = load(&hook("    retry: {attempts: 4}\n    timeout_seconds: 7\n")).unwrap();
    let s = &c.hooks[0].sending;
    assert_eq!(
        s.retry,
        Some(Retry {
            attempts: 4,
            initial: Duration::from_secs(5),
            max: Duration::from_secs(3600)
        })
    );
    assert_eq!(s.timeout, Some(Duration::from_secs(7)));
    assert!(s.has_webhook_id() && !s.is_signed());
    let c = load(&hook(
        "    retry:\n      attempts: 2\n      initial_seconds: 1\n      max_seconds: 2\n",
    ))
    .unwrap();
    assert_eq!(
        c.hooks[0].sending.retry.unwrap().max,
        Duration::from_secs(2)
    );
    let none = load(&hook("")).unwrap();
    assert_eq!(
        none.hooks[0].sending,
        Sending::default(),
        "one attempt, as Mattermost"
    );
    assert!(!none.hooks[0].sending.has_webhook_id());
    let rows: &[(&str, &str)] = &[
        (
            "    retry: {initial_seconds: 2}\n",
            "posthook.yaml:8:12: hooks[0].retry.attempts: is required (attempts in all, the first one included)",
        ),
        (
            "    retry: {attempts: 0}\n",
            "posthook.yaml:8:23: hooks[0].retry.attempts: must be 1 to 100",
        ),
        (
            "    retry: {attempts: 3, initial_seconds: 10, max_seconds: 5}\n",
            "posthook.yaml:8:60: hooks[0].retry.max_seconds: must not be below initial_seconds",
        ),
        (
            "    retry: {attempts: 3, initial_seconds: 0}\n",
            "posthook.yaml:8:43: hooks[0].retry.initial_seconds: must be 1 to 86400 seconds",
        ),
        (
            "    retry: {attempts: 3, backoff: 2}\n",
            "posthook.yaml:8:26: hooks[0].retry.backoff: unknown key (expected one of: attempts, initial_seconds, max_seconds)",
        ),
        (
            "    timeout_seconds: 0\n",
            "posthook.yaml:8:22: hooks[0].timeout_seconds: must be 1 to 86400 seconds",
        ),
        (
            "    retry: 3\n",
            "posthook.yaml:8:12: hooks[0].retry: expected a mapping, found a number",
        ),
    ];
    for (extra, want) in rows {
        assert_eq!(err(&hook(extra)), *want, "{extra}");
    }
}

#[test]
fn store_urls_resolve_beside_the_config_and_errors_never_repeat_them() {
    let store = |text: &str, file: &str| {
        Config::from_yaml(file, &format!("{MINIMAL}store:\n{text}"), &env).map(|c| c.store)
    };
    assert_eq!(
        load(MINIMAL).unwrap().store,
        StoreConfig::default(),
        "absent: memory"
    );
    assert_eq!(StoreConfig::default().url, StoreUrl::Memory);
    let s = store(
        "  url: \"sqlite:data/ph.db\"\n  retention_days: 2\n",
        "/etc/posthook/posthook.yaml",
    )
    .unwrap();
    assert_eq!(
        s.url,
        StoreUrl::Sqlite(std::path::PathBuf::from("/etc/posthook/data/ph.db")),
        "relative: from the config file's directory"
    );
    assert_eq!(s.retention, Duration::from_secs(2 * 86_400));
    let s = store(
        "  url: \"sqlite:///var/lib/posthook/ph.db\"\n",
        "/etc/p.yaml",
    )
    .unwrap();
    assert_eq!(
        s.url,
        StoreUrl::Sqlite(std::path::PathBuf::from("/var/lib/posthook/ph.db"))
    );
    assert_eq!(
        store("  url: memory\n", "p.yaml").unwrap().url,
        StoreUrl::Memory
    );
    let pg = store(
        "  url: \"postgres://posthook:pw@db.example/mattermost\"\n  max_connections: 4\n",
        "p.yaml",
    )
    .unwrap();
    assert_eq!(
        pg.url,
        StoreUrl::Postgres("postgres://posthook:pw@db.example/mattermost".into())
    );
    assert_eq!(pg.max_connections, 4);
    assert!(!format!("{pg:?}").contains("pw"), "{pg:?}");
    let rows: &[(&str, &str)] = &[
        ("  retention_days: 3\n", "posthook.yaml:5:3: store.url: is required (memory, sqlite:PATH or postgres://USER:PASS@HOST/DB)"),
        ("  url: \"mysql://u:pw@h/db\"\n", "posthook.yaml:5:8: store.url: must be memory, sqlite:PATH or postgres://USER:PASS@HOST/DB"),
        ("  url: memory\n  max_connections: 0\n", "posthook.yaml:6:20: store.max_connections: must be 1 to 1000"),
        ("  url: \"sqlite:\"\n", "posthook.yaml:5:8: store.url: sqlite: needs a file path"),
        ("  url: memory\n  retention_days: 0\n", "posthook.yaml:6:19: store.retention_days: must be 1 to 3650 days"),
        ("  url: memory\n  lease_margin_seconds: 0\n", "posthook.yaml:6:25: store.lease_margin_seconds: must be 1 to 3600 seconds"),
        ("  url: memory\n  commit_interval_ms: 101\n", "posthook.yaml:6:23: store.commit_interval_ms: must be 0 to 100 milliseconds"),
        ("  url: memory\n  sqlite_synchronous: off\n", "posthook.yaml:6:23: store.sqlite_synchronous: must be full or normal"),
    ];
    for (text, want) in rows {
        let e = store(text, "posthook.yaml").unwrap_err().to_string();
        assert_eq!(e, *want, "{text}");
        assert!(!e.contains("pw@"), "never the URL: {e}");
    }
}

#[test]
fn max_in_flight_and_notify_parse_with_located_errors() {
    let hook = |extra: &str| {
        format!("{MINIMAL}hooks:\n  - trigger_words: [a]\n    callback_urls: [\"http://x\"]\n    token: t\n{extra}")
    };
    let c = load(&hook(
        "    max_in_flight: 4\n    notify: {username: \"@Alice\", after_failures: 3}\n",
    ))
    .unwrap();
    let s = &c.hooks[0].sending;
    assert_eq!(s.max_in_flight, Some(4));
    assert_eq!(
        s.notify,
        Some(Notify {
            username: "alice".into(),
            after_failures: 3
        }),
        "a leading @ and capitals are accepted"
    );
    let d = load(&hook("    notify: {username: ops}\n")).unwrap();
    assert_eq!(
        d.hooks[0].sending.notify.as_ref().unwrap().after_failures,
        5
    );
    let rows: &[(&str, &str)] = &[
        ("    max_in_flight: 0\n", "posthook.yaml:8:20: hooks[0].max_in_flight: must be 1 to 100000"),
        ("    notify: {after_failures: 2}\n", "posthook.yaml:8:13: hooks[0].notify.username: is required (the Mattermost user the bot writes to)"),
        ("    notify: {username: \"a/b\"}\n", "posthook.yaml:8:24: hooks[0].notify.username: must be a Mattermost username (letters, digits, '.', '-', '_')"),
        ("    notify: {username: ops, after_failures: 0}\n", "posthook.yaml:8:45: hooks[0].notify.after_failures: must be 1 to 10000"),
    ];
    for (extra, want) in rows {
        assert_eq!(err(&hook(extra)), *want, "{extra}");
    }
}
