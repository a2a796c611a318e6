//! Names in the config (`team: "team-name"`, `channel: "team-name/channel-name"`): resolved with
//! the bot token at start, followed across renames by the refresh, a missing name keeps the
//! proxy up with the hook inactive (one error line naming the hook and the name, counted) until
//! it resolves; a reload with a missing name is rejected; `-t --resolve` checks them against
//! the server, plain `-t` does not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use harness::binary::{Proc, BIN};
use harness::*;
use posthook::config::Config;
use support::*;

fn listen() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn config(mm: &MattermostStandIn, addr: SocketAddr, hooks: &str) -> String {
    format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\n{ALLOW_LOOPBACK}limits:\n  name_refresh_seconds: 1\nhooks:\n{hooks}",
        mm.base_url()
    )
}

fn named(id: &str, channel: &str, url: &str) -> String {
    format!("  - id: {id}\n    channel: \"{channel}\"\n    trigger_words: [\"#go\"]\n    callback_urls: [\"{url}\"]\n    token: t\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_channel_resolves_and_a_rename_is_followed() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr = listen();
    let hooks = named("by-name", &format!("{TEAM_NAME}/{PUBLIC_NAME}"), &rx.url("/a"))
        + &format!("  - team: {TEAM_NAME}\n    trigger_words: [\"#team\"]\n    callback_urls: [\"{}\"]\n    token: t\n", rx.url("/t"));
    let ph = start(&config(&mm, addr, &hooks), addr).await;
    // The name resolves within moments of the start.
    let deadline = std::time::Instant::now() + T;
    loop {
        assert_eq!(create_post(addr, PUBLIC, "#go one").await.0, 201);
        if tokio::time::timeout(Duration::from_millis(300), rx.wait_for(1, T))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the named hook never fired"
        );
    }
    let fired = rx.requests().len();
    // Not in another channel of the team.
    assert_eq!(create_post(addr, PUBLIC2, "#go two").await.0, 201);
    // team: by name fires in any public channel of that team.
    assert_eq!(create_post(addr, PUBLIC2, "#team three").await.0, 201);
    let got = rx.wait_for(fired + 1, T).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.requests().len(), fired + 1, "{:?}", rx.requests());
    assert_eq!(got.last().unwrap().path(), "/t");
    assert_eq!(
        got.last().unwrap().form_value("team_id").as_deref(),
        Some(TEAM)
    );

    // Renames: town-square becomes "lobby", off-topic takes the name: the hook follows it.
    mm.rename_channel(PUBLIC, "lobby");
    mm.rename_channel(PUBLIC2, PUBLIC_NAME);
    let before = rx.requests().len();
    let deadline = std::time::Instant::now() + T;
    loop {
        assert_eq!(create_post(addr, PUBLIC2, "#go four").await.0, 201);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rx.requests();
        if now.len() > before {
            assert_eq!(
                now.last().unwrap().form_value("channel_id").as_deref(),
                Some(PUBLIC2)
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hook did not follow the name"
        );
    }
    let n = rx.requests().len();
    assert_eq!(create_post(addr, PUBLIC, "#go five").await.0, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.requests().len(),
        n,
        "the hook still fires in the renamed-away channel"
    );
    assert_eq!(ph.stats().name_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_name_keeps_the_proxy_up_and_the_hook_inactive_until_it_resolves() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr = listen();
    let text = config(
        &mm,
        addr,
        &named("later", &format!("{TEAM_NAME}/releases"), &rx.url("/r")),
    );
    let p = Proc::start(&text, addr).await;
    p.wait_log("hook later: channel \"myteam/releases\" does not resolve")
        .await;
    // The proxy serves; the hook is inactive.
    assert_eq!(create_post(addr, PUBLIC, "#go now").await.0, 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.requests().is_empty());
    // The channel appears: within the retry the hook fires there.
    mm.add_channel("chanreleases", TEAM, "releases", "O");
    p.wait_log("resolves again; the hook is active").await;
    assert_eq!(create_post(addr, "chanreleases", "#go ship").await.0, 201);
    let got = rx.wait_for(1, T).await;
    assert_eq!(
        got[0].form_value("channel_id").as_deref(),
        Some("chanreleases")
    );
    // One error line for the name, not one per retry.
    assert_eq!(p.count_log("does not resolve"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_missing_name_is_rejected() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr = listen();
    let good = config(
        &mm,
        addr,
        &named("a", &format!("{TEAM_NAME}/{PUBLIC_NAME}"), &rx.url("/a")),
    );
    let ph = start(&good, addr).await;
    let handle = &ph.running.as_ref().unwrap().handle;
    let bad = config(
        &mm,
        addr,
        &named("a", &format!("{TEAM_NAME}/nowhere"), &rx.url("/a")),
    );
    let bad = Config::from_yaml("t.yaml", &bad, &|_| None).unwrap();
    let err = handle.reload(&bad).unwrap_err().to_string();
    assert!(
        err.contains("hook a: channel \"myteam/nowhere\" does not resolve"),
        "{err}"
    );
    // The running hooks stay.
    let deadline = std::time::Instant::now() + T;
    loop {
        assert_eq!(create_post(addr, PUBLIC, "#go").await.0, 201);
        if tokio::time::timeout(Duration::from_millis(300), rx.wait_for(1, T))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the running hook stopped"
        );
    }
    // Both keys for one thing are an error in the file.
    let both = config(&mm, addr, "  - channel: \"a/b\"\n    channel_id: abc\n    callback_urls: [\"http://x.example\"]\n    token: t\n");
    let e = Config::from_yaml("t.yaml", &both, &|_| None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("hooks[0].channel: cannot be used with channel_id"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_resolve_asks_the_server_and_plain_check_does_not() {
    let mm = standin().await;
    let dir = std::env::temp_dir().join(format!("posthook-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, channel: &str| {
        let path = dir.join(name);
        let text = config(
            &mm,
            listen(),
            &named("n", channel, "http://hooks.example/x"),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let good = write("good.yaml", &format!("{TEAM_NAME}/{PUBLIC_NAME}"));
    let bad = write("bad.yaml", &format!("{TEAM_NAME}/missing"));
    let run = |path: &std::path::Path, args: &[&str]| {
        let path = path.to_path_buf();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        std::thread::spawn(move || {
            Command::new(BIN)
                .arg("-c")
                .arg(&path)
                .args(&args)
                .output()
                .unwrap()
        })
    };
    let before = mm.lookups("/api/v4/teams");
    let plain = tokio::task::spawn_blocking(move || run(&bad, &["-t"]).join().unwrap())
        .await
        .unwrap();
    assert!(plain.status.success());
    assert_eq!(
        mm.lookups("/api/v4/teams"),
        before,
        "plain -t asked the server"
    );
    let bad = dir.join("bad.yaml");
    let out = tokio::task::spawn_blocking(move || run(&bad, &["-t", "--resolve"]).join().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hook n: channel \"myteam/missing\" does not resolve"),
        "{err}"
    );
    let out = tokio::task::spawn_blocking(move || run(&good, &["-t", "--resolve"]).join().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mm.lookups("/api/v4/teams/name/myteam") >= 2);
}
