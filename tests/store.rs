//! The delivery store on SQLite (issue 12), end to end through the binary: every delivery is
//! recorded with its attempts and answer, the CLI lists, shows (token masked) and replays it,
//! a 410 is kept in the store until `hooks enable`, and a posthook killed with `kill -9` in the
//! middle of a delivery loses nothing: the next one sends it again, with the same webhook-id,
//! once the lease has run out, and the reply is posted once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::binary::{run, Proc};
use harness::*;
use serde_json::Value;
use support::*;

const TOKEN: &str = "hooktokensecret";

/// A directory of its own for a test's database and config files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "posthook-store-{name}-{}-{}",
        std::process::id(),
        random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config on `addr` in front of `mm`, with the SQLite store in `dir` and `hooks`.
fn config(mm: &MattermostStandIn, addr: std::net::SocketAddr, dir: &Path, hooks: &str) -> String {
    format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\nserver:\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{ALLOW_LOOPBACK}store:\n  url: \"sqlite:{}\"\n  lease_margin_seconds: 1\nhooks:\n{hooks}",
        mm.base_url(),
        dir.join("posthook.db").display()
    )
}

/// A hook named `id` on `#t` to `url`, retried quickly, with a 2 s deadline.
fn hook(id: &str, url: &str) -> String {
    format!(
        "  - id: {id}\n    trigger_words: [\"#t\"]\n    callback_urls: [\"{url}\"]\n    token: {TOKEN}\n    timeout_seconds: 2\n    retry: {{attempts: 3, initial_seconds: 1, max_seconds: 2}}\n"
    )
}

fn listen_addr() -> std::net::SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// `posthook ARGS… -c FILE …` to its end: exit code and stdout, stderr shown on failure.
fn cli(args: &[&str]) -> (i32, String) {
    let (code, out, err) = run(args);
    if code != 0 {
        eprintln!("posthook {args:?}: exit {code}\n{err}");
    }
    (code, out)
}

fn list_json(file: &str) -> Vec<Value> {
    let (code, out) = cli(&["deliveries", "-c", file, "list", "--json"]);
    assert_eq!(code, 0);
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the store lists a delivery in `state`.
async fn wait_state(file: &str, state: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + T;
    loop {
        let rows = list_json(file);
        if rows.iter().any(|r| r["state"] == state) {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery {state}: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_is_recorded_and_the_cli_lists_shows_and_replays_it() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Script(vec![
        Answer::status(503),
        Answer::status(200).body(r#"{"text":"built"}"#),
        Answer::status(200),
    ]))
    .await;
    let dir = scratch("log");
    let addr = listen_addr();
    let p = Proc::start(&config(&mm, addr, &dir, &hook("ci", &rx.url("/h"))), addr).await;
    let file = p.path.to_str().unwrap().to_string();
    assert_eq!(create_post(addr, PUBLIC, "#t build").await.0, 201);
    let fired = rx.wait_for(2, T).await;
    let id = fired[0].header("webhook-id").unwrap().to_string();
    let rows = wait_state(&file, "delivered").await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(row["webhook_id"], id.as_str());
    assert_eq!(row["hook"], "ci");
    assert_eq!(row["attempts"], 2);
    assert_eq!(row["last_status"], 200);
    assert_eq!(row["host"], "127.0.0.1");
    mm.wait_for_posts(2, T).await;

    let (code, shown) = cli(&["deliveries", "-c", &file, "show", &id]);
    assert_eq!(code, 0);
    assert!(shown.contains("state       delivered"), "{shown}");
    assert!(
        shown.contains("#1") && shown.contains("status 503"),
        "{shown}"
    );
    assert!(
        shown.contains("#2") && shown.contains("status 200"),
        "{shown}"
    );
    assert!(shown.contains("token=***"), "{shown}");
    assert!(
        !shown.contains(TOKEN),
        "the hook token is never shown:\n{shown}"
    );
    assert!(shown.contains(r#"{"text":"built"}"#), "the answer: {shown}");
    assert!(!shown.contains(&rx.url("/h")), "never the callback URL");
    let (code, json) = cli(&["deliveries", "-c", &file, "show", &id, "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["attempts_detail"].as_array().unwrap().len(), 2);

    for (filter, n) in [
        (vec!["--state", "delivered"], 1),
        (vec!["--state", "failed"], 0),
        (vec!["--hook", "ci"], 1),
        (vec!["--hook", "other"], 0),
        (vec!["--since", "1h"], 1),
    ] {
        let mut args = vec!["deliveries", "-c", &file, "list", "--json"];
        args.extend(filter.iter().copied());
        let (code, out) = cli(&args);
        assert_eq!((code, out.lines().count()), (0, n), "{filter:?}");
    }
    let (code, _, err) = run(&["deliveries", "-c", &file, "list", "--state", "lost"]);
    assert_eq!(code, 1);
    assert!(err.contains("--state must be one of"), "{err}");

    // A replay: the running service sends it again, with the same id, within about a second.
    let (code, out) = cli(&["deliveries", "-c", &file, "replay", &id]);
    assert_eq!(code, 0, "{out}");
    let fired = rx.wait_for(3, T).await;
    assert_eq!(fired[2].header("webhook-id"), Some(id.as_str()));
    assert!(fired[2].received_at - fired[1].received_at < Duration::from_secs(10));
    let (code, _, err) = run(&["deliveries", "-c", &file, "replay", "msg_nothere"]);
    assert_eq!(code, 1);
    assert!(err.contains("no delivery msg_nothere"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_stays_in_the_store_until_hooks_enable() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(410, String::new())).await;
    let dir = scratch("gone");
    let addr = listen_addr();
    let hooks = format!(
        "{}{}",
        hook("old-ci", &rx.url("/gone")),
        hook("new-ci", &rx.url("/ok"))
    );
    let p = Proc::start(&config(&mm, addr, &dir, &hooks), addr).await;
    let file = p.path.to_str().unwrap().to_string();
    assert_eq!(create_post(addr, PUBLIC, "#t one").await.0, 201);
    rx.wait_for(2, T).await;
    p.wait_log("hook old-ci disabled").await;
    // Both answered 410 (one receiver): both are disabled.
    let deadline = std::time::Instant::now() + T;
    let listed = loop {
        let (code, out) = cli(&["hooks", "-c", &file, "list"]);
        assert_eq!(code, 0);
        if out.matches("disabled").count() >= 2 {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        listed.contains("old-ci") && listed.contains("answered 410 Gone"),
        "{listed}"
    );

    rx.set_responder(Responder::Status(200, String::new()));
    let (code, out) = cli(&["hooks", "-c", &file, "enable", "new-ci"]);
    assert_eq!(code, 0);
    assert!(out.contains("new-ci enabled"), "{out}");
    // Within a second the running posthook reads it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(create_post(addr, PUBLIC, "#t two").await.0, 201);
    let fired = rx.wait_for(3, T).await;
    assert_eq!(fired[2].path(), "/ok", "only the enabled hook");
    rx.assert_quiet(Duration::from_millis(500)).await;
    let (code, out) = cli(&["hooks", "-c", &file, "list", "--json"]);
    assert_eq!(code, 0);
    let states: Vec<(String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            (
                v["hook"].as_str().unwrap().to_string(),
                v["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("old-ci".to_string(), "disabled".to_string()),
            ("new-ci".to_string(), "enabled".to_string())
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_delivery_loses_nothing() {
    let mm = standin().await;
    // The first attempt never gets an answer: the process dies while it waits.
    let rx = WebhookReceiver::start(Responder::Hang).await;
    let dir = scratch("kill");
    let first = listen_addr();
    let mut a = Proc::start(&config(&mm, first, &dir, &hook("ci", &rx.url("/h"))), first).await;
    assert_eq!(create_post(first, PUBLIC, "#t deploy").await.0, 201);
    let fired = rx.wait_for(1, T).await;
    let id = fired[0].header("webhook-id").unwrap().to_string();
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();

    // The next posthook, on the same store: once the lease (2 s deadline + 1 s margin) has
    // run out, it claims the delivery and sends it again, with the same id.
    rx.set_responder(Responder::Json(r#"{"text":"deployed"}"#.to_string()));
    let second = listen_addr();
    let b = Proc::start(
        &config(&mm, second, &dir, &hook("ci", &rx.url("/h"))),
        second,
    )
    .await;
    let fired = rx.wait_for(2, T).await;
    assert_eq!(
        fired[1].header("webhook-id"),
        Some(id.as_str()),
        "the same webhook-id"
    );
    assert_eq!(fired[1].body, fired[0].body, "the same request body");
    let file = b.path.to_str().unwrap().to_string();
    let rows = wait_state(&file, "delivered").await;
    assert_eq!(rows[0]["webhook_id"], id.as_str());
    let posts = mm.wait_for_posts(2, T).await;
    assert_eq!(posts[1]["message"], "deployed");
    rx.assert_quiet(Duration::from_millis(1500)).await;
    assert_eq!(mm.posts().len(), 2, "one reply, posted once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_the_memory_store_the_commands_name_the_store_key() {
    let dir = scratch("memory");
    let file = dir.join("posthook.yaml");
    std::fs::write(
        &file,
        "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\nbot_token: b\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["deliveries", "-c", file, "list"],
        vec!["deliveries", "-c", file, "show", "msg_x"],
        vec!["deliveries", "-c", file, "replay", "msg_x"],
        vec!["hooks", "-c", file, "list"],
        vec!["hooks", "-c", file, "enable", "ci"],
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty());
        assert!(
            err.contains("the delivery store is memory") && err.contains("store.url"),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cut_off_by_kill_9_is_posted_from_the_kept_answer_once() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Json(r#"{"text":"green"}"#.to_string())).await;
    let dir = scratch("reply");
    let first = listen_addr();
    let mut a = Proc::start(&config(&mm, first, &dir, &hook("ci", &rx.url("/h"))), first).await;
    // Mattermost takes its time answering posts: the reply is made, its answer not yet sent,
    // when the process dies.
    mm.set_post_delay(Duration::from_secs(3));
    assert_eq!(create_post(first, PUBLIC, "#t build").await.0, 201);
    rx.wait_for(1, T).await;
    mm.wait_for_posts(2, T).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    mm.set_post_delay(Duration::ZERO);

    // The next posthook finds the delivered request whose reply was never recorded done and
    // posts it again from the kept answer, with the same pending_post_id: one reply in all.
    let second = listen_addr();
    let _b = Proc::start(
        &config(&mm, second, &dir, &hook("ci", &rx.url("/h"))),
        second,
    )
    .await;
    let deadline = std::time::Instant::now() + T;
    let replies = loop {
        let tries: Vec<RecordedRequest> = mm
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path_and_query == "/api/v4/posts?set_online=false")
            .collect();
        if tries.len() >= 2 {
            break tries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second reply attempt"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let key = |r: &RecordedRequest| r.json()["pending_post_id"].as_str().unwrap().to_string();
    assert_eq!(
        key(&replies[0]),
        key(&replies[1]),
        "the same pending_post_id"
    );
    assert!(key(&replies[0]).starts_with("msg_") && key(&replies[0]).ends_with(":0"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts = mm.posts();
    assert_eq!(posts.len(), 2, "the post and one reply: {posts:#?}");
    assert_eq!(rx.requests().len(), 1, "the webhook is never asked again");
    let _ = std::fs::remove_dir_all(&dir);
}
