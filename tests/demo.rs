//! `posthook demo` through the binary, as a new user runs it: it prints a ready `curl` line;
//! posting it (with curl itself when installed) shows the post, the exact webhook request with
//! its token masked, the answer and the reply post; `--webhook URL` sends Mattermost's payload
//! to your integration; `-c FILE` runs your hooks; Ctrl-C exits 0 within 5 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::binary::BIN;
use harness::*;
use support::*;

struct Demo {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let demo = Demo { child, out };
        demo.wait_for("Ctrl-C stops the demo");
        demo
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().join("\n")
    }

    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let text = self.text();
            if text.contains(what) {
                return text;
            }
            assert!(Instant::now() < deadline, "no {what:?} in:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The printed curl line, joined: (token, channel id, posthook's posts URL).
    fn curl_parts(&self) -> (String, String, String) {
        let text = self.text();
        let start = text.find("curl -s").unwrap();
        let line = text[start..]
            .split("\n\n")
            .next()
            .unwrap()
            .replace("\\\n", " ");
        let token = line
            .split("Bearer ")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        let channel = line
            .split("\"channel_id\":\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let url = line.split_whitespace().last().unwrap();
        (token.into(), channel.into(), url.into())
    }

    /// Posts `message` as the demo's user.
    fn post(&self, message: &str) {
        post(&self.curl_parts(), message);
    }
    /// Ctrl-C: the demo exits 0 within 5 s.
    fn interrupt(mut self) -> String {
        let sent = Instant::now();
        let ok = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "still running 5 s after Ctrl-C"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.text()
    }
}

/// Posts `message` with the curl line's (token, channel, URL), with curl when it is installed.
fn post((token, channel, url): &(String, String, String), message: &str) {
    let body = format!("{{\"channel_id\":\"{channel}\",\"message\":\"{message}\"}}");
    let curl = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json", "-d", &body, url])
        .output();
    let status = match curl {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(_) => {
            // No curl: the same request with the stand-in's raw client.
            let addr: std::net::SocketAddr = url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let rt = tokio::runtime::Runtime::new().unwrap();
            let r = rt.block_on(send_post(
                addr,
                &[("Authorization", &format!("Bearer {token}"))],
                body.as_bytes(),
            ));
            r.status.to_string()
        }
    };
    assert_eq!(status, "201", "the demo's post was not created");
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_demo_shows_the_post_the_exact_request_the_answer_and_the_reply() {
    let demo = Demo::start(&[]);
    let (token, channel, _) = demo.curl_parts();
    demo.post("echo hello world");
    let text = demo.wait_for("@posthook-bot in ~town-square: @alice said: hello world");
    let after_banner = &text[text.find("Ctrl-C stops the demo").unwrap()..];
    assert!(after_banner.contains("@alice in ~town-square: echo hello world"));
    // The request, exactly as sent: Mattermost's headers and JSON payload, token masked.
    let request = after_banner
        .split("── webhook request")
        .nth(1)
        .unwrap()
        .split("── webhook answer")
        .next()
        .unwrap();
    for want in [
        "POST /hooks/echo HTTP/1.1",
        "User-Agent: Mattermost-Bot/1.1",
        "Content-Type: application/json",
        "\"token\":\"***\"",
        &format!("\"channel_id\":\"{channel}\""),
        "\"channel_name\":\"town-square\"",
        "\"user_name\":\"alice\"",
        "\"text\":\"echo hello world\"",
        "\"trigger_word\":\"echo\"",
    ] {
        assert!(
            request.contains(want),
            "no {want:?} in the request:\n{request}"
        );
    }
    assert!(after_banner.contains("webhook answer (200"));
    // No token of the demo appears once it runs (the user's is printed only in the curl line).
    assert!(!after_banner.contains(&token), "{after_banner}");
    let text = demo.interrupt();
    assert!(text.ends_with("demo stopped"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sends_mattermost_payloads_to_your_webhook() {
    let rx = WebhookReceiver::start(Responder::Json(r#"{"text":"deployed *main*"}"#.into())).await;
    let url = rx.url("/my/integration?x=1");
    let demo = Demo::start(&["--webhook", &url]);
    let (_, channel, _) = demo.curl_parts();
    let parts = demo.curl_parts();
    tokio::task::spawn_blocking(move || post(&parts, "echo ship it"))
        .await
        .unwrap();
    let got = rx.wait_for(1, T).await;
    let r = &got[0];
    assert_eq!(r.path_and_query, "/my/integration?x=1");
    let payload = r.json();
    assert_eq!(payload["channel_id"], channel.as_str());
    assert_eq!(payload["channel_name"], "town-square");
    assert_eq!(payload["team_domain"], "demo");
    assert_eq!(payload["user_name"], "alice");
    assert_eq!(payload["text"], "echo ship it");
    assert_eq!(payload["trigger_word"], "echo");
    assert_eq!(payload["token"].as_str().unwrap().len(), 26);
    let text = demo.wait_for("@posthook-bot in ~town-square: deployed *main*");
    assert!(
        text.contains(&format!("webhook request (posthook → {url})")),
        "{text}"
    );
    assert!(!text.contains(payload["token"].as_str().unwrap()), "{text}");
    demo.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_your_hooks_from_a_config_file() {
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let dir = std::env::temp_dir().join(format!("posthook-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hooks.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: \"127.0.0.1:1\"\nupstream: \"http://127.0.0.1:2\"\nbot_token: unused\nhooks:\n  - trigger_words: [\"#deploy\"]\n    callback_urls: [\"{}\"]\n    token: myhooktoken0000000000000001\n",
            rx.url("/deploy")
        ),
    )
    .unwrap();
    let demo = Demo::start(&["-c", path.to_str().unwrap()]);
    let parts = demo.curl_parts();
    tokio::task::spawn_blocking(move || post(&parts, "#deploy staging"))
        .await
        .unwrap();
    let got = rx.wait_for(1, T).await;
    // Mattermost's default form payload, with your hook's token.
    let form: std::collections::BTreeMap<String, String> = got[0].form().into_iter().collect();
    assert_eq!(form["token"], "myhooktoken0000000000000001");
    assert_eq!(form["text"], "#deploy staging");
    assert_eq!(form["trigger_word"], "#deploy");
    let text = demo.wait_for("webhook answer (200");
    assert!(text.contains("token=***&"), "{text}");
    assert!(!text.contains("myhooktoken0000000000000001"), "{text}");
    demo.interrupt();
}
