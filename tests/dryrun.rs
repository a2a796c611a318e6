//! `posthook match`, the dry run, through the binary: the requests it shows are the bytes a real
//! delivery of the same message sends (placeholders aside), nothing is sent, team-scoped hooks
//! are undecided without a team, and the exit status tells whether a hook fires.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::process::Command;

use harness::binary::{Proc, BIN};
use harness::*;
use support::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hooks(rx: &WebhookReceiver) -> String {
    format!(
        "hooks:\n  - id: build\n    trigger_words: [\"#build\"]\n    callback_urls: [\"{}\"]\n    token: buildtoken0000000000000001\n  - id: deploy\n    trigger_pattern: \"deploy \\\\w+\"\n    callback_urls: [\"{}\"]\n    content_type: application/json\n    token: deploytoken000000000000001\n    signing_secret: \"{SECRET}\"\n    payload_extras: true\n  - id: team-only\n    team_id: {TEAM}\n    trigger_words: [\"#build\"]\n    callback_urls: [\"{}\"]\n    token: teamtoken00000000000000001\n",
        rx.url("/build?x=1"),
        rx.url("/deploy"),
        rx.url("/team")
    )
}

fn dry(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["match", "-c", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_shows_the_bytes_a_real_delivery_sends() {
    let mm = standin().await;
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "listen: \"{addr}\"\nupstream: \"{}\"\nbot_token: \"{BOT_TOKEN}\"\n{ALLOW_LOOPBACK}{}",
        mm.base_url(),
        hooks(&rx)
    );
    let p = Proc::start(&config, addr).await;
    let message = "#build and deploy main";
    let (status, created) = create_post(p.addr, PUBLIC, message).await;
    assert_eq!(status, 201);
    let real = rx.wait_for(3, T).await;
    let post = created;
    let (post_id, create_at) = (
        post["id"].as_str().unwrap(),
        post["create_at"].as_i64().unwrap(),
    );

    let (code, out, err) = dry(
        &p.path,
        &[
            "--channel",
            PUBLIC,
            "--user",
            USER_NAME,
            "--resolve",
            "--json",
            message,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(rx.requests().len(), 3, "the dry run sent something");
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fired = answer["hooks"].as_array().unwrap();
    let ids: Vec<&str> = fired.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["build", "deploy", "team-only"]);
    assert_eq!(fired[1]["trigger_word"], "deploy main");
    for (hook, (path, token)) in fired.iter().zip([
        ("/build?x=1", "buildtoken0000000000000001"),
        ("/deploy", "deploytoken000000000000001"),
        ("/team", "teamtoken00000000000000001"),
    ]) {
        let r = real.iter().find(|r| r.path_and_query == path).unwrap();
        let shown = &hook["requests"][0];
        assert_eq!(shown["method"], "POST");
        assert_eq!(shown["url"], rx.url(path));
        // The body: the real one with the placeholders put in.
        let json = r.header("content-type") == Some("application/json");
        let (masked, ts_real, ts_dry) = if json {
            (
                "***".to_string(),
                format!("\"timestamp\":{create_at}"),
                "\"timestamp\":0".to_string(),
            )
        } else {
            // The form payload's timestamp is in seconds, the JSON one's in milliseconds
            // (as Mattermost's, spec §2.2).
            (
                "%2A%2A%2A".to_string(),
                format!("timestamp={}", create_at / 1000),
                "timestamp=0".to_string(),
            )
        };
        let expected = r
            .body_str()
            .replace(post_id, "xxxxxxxxxxxxxxxxxxxxxxxxxx")
            .replace(token, &masked)
            .replace(&ts_real, &ts_dry);
        assert_eq!(shown["body"].as_str().unwrap(), expected, "{path}");
        // The header lines, in order and case, as on the wire.
        let headers: Vec<(String, String)> = shown["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_string(),
                    h[1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let placeholder = |(k, v): &(String, String)| -> (String, String) {
            let v = match k.as_str() {
                "Webhook-Id" => "msg_xxxxxxxxxxxxxxxxxxxxxxxxxx".to_string(),
                "Webhook-Timestamp" => "0".to_string(),
                "Webhook-Signature" => "v1,***".to_string(),
                "Content-Length" => expected.len().to_string(),
                _ => v.clone(),
            };
            (k.clone(), v)
        };
        let wire: Vec<(String, String)> = r.headers.iter().map(placeholder).collect();
        assert_eq!(headers, wire, "{path}");
    }
    // The signed hook's request carries the Standard Webhooks headers.
    let deploy = real.iter().find(|r| r.path_and_query == "/deploy").unwrap();
    assert!(deploy.header("webhook-signature").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resolve_team_hooks_are_undecided_and_the_exit_status_tells() {
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let dir = std::env::temp_dir().join(format!("posthook-dryrun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("posthook.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:9\"\nbot_token: b\n{}",
            hooks(&rx)
        ),
    )
    .unwrap();
    let (code, out, err) = dry(&path, &["--channel", PUBLIC, "--user", USER, "#build x"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("hook build fires (trigger word \"#build\")"),
        "{out}"
    );
    assert!(out.contains("hook team-only undecided"), "{out}");
    assert!(out.contains("token=%2A%2A%2A"), "{out}");
    assert!(!out.contains("buildtoken"), "{out}");
    let (code, out, _) = dry(
        &path,
        &[
            "--channel",
            PUBLIC,
            "--user",
            USER,
            "--team",
            TEAM,
            "--json",
            "#build x",
        ],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hooks"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["undecided"].as_array().unwrap().len(), 0, "{v}");
    let (code, out, _) = dry(
        &path,
        &["--channel", PUBLIC, "--user", USER, "--team", TEAM, "hello"],
    );
    assert_eq!((code, out.as_str()), (1, "no hook fires\n"));
    let (code, _, err) = dry(&path, &["--channel", "town-square/x", "--user", USER, "hi"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = dry(
        &path,
        &["--channel", PUBLIC, "--user", USER, "--type", "X", "hi"],
    );
    assert_eq!(code, 2);
    assert!(rx.requests().is_empty(), "a dry run sent a request");
}
