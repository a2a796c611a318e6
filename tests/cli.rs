//! The fixed command-line interface: `posthook -c FILE [-t]`, signals, and the example configs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use posthook::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_posthook");

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("posthook-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("posthook.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every file in conf/ is a valid config (with its variables set).
#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        let config = Config::from_yaml(&name, &text, &|var| Some(format!("value-of-{var}")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!config.hooks.is_empty(), "{name} shows at least one hook");
        seen += 1;
    }
    assert!(seen >= 1, "no configs found in {}", dir.display());
}

#[test]
fn check_mode_prints_the_hook_count() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/posthook.yaml");
    let out = Command::new(BIN)
        .args(["-c", conf.to_str().unwrap(), "-t"])
        .env("POSTHOOK_BOT_TOKEN", "x")
        .env("DEPLOY_HOOK_TOKEN", "y")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "config ok: 2 hooks\n");
}

#[test]
fn check_mode_names_file_line_column_and_field() {
    let path = temp_file(
        "bad",
        "listen: \"127.0.0.1:8065\"\nupstream: \"http://127.0.0.1:8066\"\nbot_token: x\nhooks:\n  - trigger_words: [\"#a\"]\n    callback_urls: [\"http://a.example\"]\n    token: t\n  - trigger_words: [\"#b\"]\n    callback_urls: [\"http://b.example\", \"nowhere.com/\"]\n    token: t\n",
    );
    let out = Command::new(BIN)
        .args(["-c", path.to_str().unwrap(), "-t"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "{}:9:41: hooks[1].callback_urls[1]: not an http(s) URL",
            path.display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn check_mode_names_an_unset_variable() {
    let path = temp_file(
        "unset",
        "listen: \"127.0.0.1:8065\"\nupstream: \"http://127.0.0.1:8066\"\nbot_token: \"${POSTHOOK_TEST_SURELY_UNSET}\"\n",
    );
    let out = Command::new(BIN)
        .args(["-c", path.to_str().unwrap(), "-t"])
        .env_remove("POSTHOOK_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            ":3:12: bot_token: environment variable POSTHOOK_TEST_SURELY_UNSET is not set"
        ),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_an_error_not_a_panic() {
    let out = Command::new(BIN)
        .args(["-c", "/nonexistent/posthook.yaml", "-t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/posthook.yaml: cannot read")
    );
}

/// SIGTERM and SIGINT both stop a running posthook cleanly, within its grace period.
#[test]
fn signals_stop_the_server() {
    for (signal, grace) in [("-TERM", 1u64), ("-INT", 30)] {
        let port = free_port();
        let path = temp_file(
            &format!("run{port}"),
            &format!(
                "listen: \"127.0.0.1:{port}\"\nupstream: \"http://127.0.0.1:{}\"\nbot_token: x\nserver:\n  grace_period_seconds: {grace}\n  graceful_shutdown_timeout_seconds: 1\n",
                free_port()
            ),
        );
        let mut child = Command::new(BIN)
            .args(["-c", path.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "posthook did not start listening"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent = Instant::now();
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(grace + 5),
                "{signal}: still running after {:?}",
                sent.elapsed()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{signal}: exit status {status}");
        if signal == "-INT" {
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "SIGINT is a fast shutdown"
            );
        }
    }
}

/// A port that is already taken is reported, not a panic or a hang.
#[test]
fn a_taken_listen_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = temp_file(
        &format!("taken{port}"),
        &format!("listen: \"127.0.0.1:{port}\"\nupstream: \"http://127.0.0.1:1\"\nbot_token: x\n"),
    );
    let out = Command::new(BIN)
        .args(["-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("listen 127.0.0.1:{port}: cannot listen")),
        "{err}"
    );
}

/// `-T` on `conf/posthook.yaml`: every secret printed `***`, and the output is a fixed point:
/// `-t` accepts it and `-T` of it prints the same text.
#[test]
fn effective_config_masks_secrets_is_accepted_by_check_and_is_a_fixed_point() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/posthook.yaml");
    let bot = "bot-secret-value-1234567";
    let hook = "hook-secret-value-7654321";
    let run = |path: &Path, flag: &str| {
        Command::new(BIN)
            .args(["-c", path.to_str().unwrap(), flag])
            .env("POSTHOOK_BOT_TOKEN", bot)
            .env("DEPLOY_HOOK_TOKEN", hook)
            .output()
            .unwrap()
    };
    let out = run(&conf, "-T");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(!shown.contains(bot) && !shown.contains(hook), "{shown}");
    assert!(shown.contains("\nbot_token: \"***\"\n"), "{shown}");
    assert_eq!(shown.matches("    token: \"***\"\n").count(), 2, "{shown}");
    // The relative SQLite path, made absolute from the file's directory.
    let db = conf.parent().unwrap().join("posthook.db");
    assert!(
        shown.contains(&format!("  url: \"sqlite:{}\"\n", db.display())),
        "{shown}"
    );
    let again = temp_file("effective", &shown);
    let checked = run(&again, "-t");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&checked.stdout),
        "config ok: 2 hooks\n"
    );
    let twice = run(&again, "-T");
    assert_eq!(String::from_utf8(twice.stdout).unwrap(), shown);
}

/// `-T` fills in every default, masks a database password and signing secrets; a file with
/// masked signing secrets passes `-t` (with a note) but does not run.
#[test]
fn effective_config_fills_defaults_and_a_masked_file_does_not_run() {
    let listen = format!("127.0.0.1:{}", free_port());
    let path = temp_file(
        "defaults",
        &format!(
            "listen: \"{listen}\"\nupstream: \"http://127.0.0.1:9\"\nbot_token: b0tt0k3n\nstore:\n  url: \"postgres://posthook:pgpassw0rd@db.internal/posthook\"\nhooks:\n  - id: signed\n    trigger_pattern: \"^deploy \\\\w+\"\n    callback_urls: [\"https://user:urlpassw0rd@ci.example/hook?x=1\"]\n    token: t0k3n\n    signing_secret: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\", \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n    retry: {{attempts: 3}}\n"
        ),
    );
    let out = Command::new(BIN)
        .args(["-c", path.to_str().unwrap(), "-T"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    for secret in ["b0tt0k3n", "pgpassw0rd", "urlpassw0rd", "t0k3n", "whsec_"] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    for line in [
        "  url: \"postgres://posthook:***@db.internal/posthook\"",
        "  retention_days: 7",
        "  queue_capacity: 10000",
        "  outgoing_integration_requests_timeout: 30",
        "  grace_period_seconds: 5",
        "log_format: text",
        "    callback_urls: [\"https://user:***@ci.example/hook?x=1\"]",
        "    signing_secret: [\"***\", \"***\"]",
        "    retry: {attempts: 3, initial_seconds: 5, max_seconds: 3600}",
        "    channel_types: [\"O\"]",
        "    events: [\"posted\"]",
        "    trigger_pattern: \"^deploy \\\\w+\"",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "no line {line:?} in:\n{shown}"
        );
    }
    let masked = temp_file("masked", &shown);
    let check = Command::new(BIN)
        .args(["-c", masked.to_str().unwrap(), "-t"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stderr).contains("signing_secret of signed is masked"));
    let mut run = Command::new(BIN)
        .args(["-c", masked.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "posthook ran with masked secrets"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(1));
    assert!(TcpStream::connect(&listen).is_err(), "it listened");
}

#[test]
fn version_prints_the_package_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("posthook {}\n", env!("CARGO_PKG_VERSION"))
    );
}
