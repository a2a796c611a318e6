//! `signing_secret` (issue 12, step 1), end to end: every signed request is accepted by the
//! official Standard Webhooks verifiers — the Python package on every body (form bodies with
//! `json_parse=False`), the JavaScript one on JSON bodies — with one secret and with two
//! (rotation); a changed byte or another secret is refused; an unsigned hook sends exactly
//! what it sent before.
//!
//! The verifiers are installed by `scripts/test-deps.sh` (`make test` runs it) into
//! `POSTHOOK_TEST_ENV` (default `target/testenv`); without them this test fails and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use harness::*;
use serde_json::{json, Value};
use support::*;

/// The secrets of the specification's test vector (24-byte keys).
const SECRET_A: &str = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcY";
const SECRET_B: &str = "whsec_ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8";
/// A secret that signed nothing here.
const SECRET_C: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn testenv() -> PathBuf {
    std::env::var_os("POSTHOOK_TEST_ENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/testenv"),
        PathBuf::from,
    )
}

/// Runs `program` with `script` and the cases file; returns its standard output.
fn run_verifier(program: PathBuf, args: &[&str], cases: &Value) -> String {
    assert!(
        program.exists(),
        "{} is missing: run scripts/test-deps.sh {} (make test does)",
        program.display(),
        testenv().display()
    );
    let dir = std::env::temp_dir().join(format!("posthook-signing-{}", random_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cases.json");
    std::fs::write(&file, cases.to_string()).unwrap();
    let out = Command::new(&program)
        .args(args)
        .arg(&file)
        .current_dir(testenv())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Python `standardwebhooks`: each case verified with `Webhook(secret).verify(body, headers,
/// json_parse=…)`; prints `NAME ok` or `NAME refused: ERROR`.
const PYTHON: &str = r#"
import json, sys
from standardwebhooks import Webhook
for c in json.load(open(sys.argv[1])):
    try:
        Webhook(c["secret"]).verify(c["body"], c["headers"], json_parse=c["json"])
        print(c["name"], "ok")
    except Exception as e:
        print(c["name"], "refused:", type(e).__name__)
"#;

/// JavaScript `standardwebhooks`: `new Webhook(secret).verify(body, headers)` (it parses the
/// body as JSON).
const JS: &str = r#"
const { Webhook } = require("standardwebhooks");
for (const c of JSON.parse(require("fs").readFileSync(process.argv[process.argv.length - 1], "utf8"))) {
  try {
    new Webhook(c.secret).verify(c.body, c.headers);
    console.log(c.name, "ok");
  } catch (e) {
    console.log(c.name, "refused:", e.constructor.name);
  }
}
"#;

/// A verification case: request `r` (body changed by `tamper`) checked with `secret`.
fn case(name: &str, r: &RecordedRequest, secret: &str, tamper: bool) -> Value {
    let mut body = r.body_str();
    if tamper {
        body.push(' ');
    }
    let headers: serde_json::Map<String, Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| (h.to_string(), Value::from(r.header(h).unwrap_or_default())))
            .collect();
    json!({
        "name": name,
        "secret": secret,
        "body": body,
        "headers": headers,
        "json": r.header("content-type") == Some("application/json"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_verifiers_accept_every_signed_request_and_refuse_changes() {
    let Fixture { mm: _mm, rx, ph } = Fixture::builder()
        .hook(|rx| {
            hook_yaml(&[
                ("id", "signed-form"),
                ("trigger_words", "[\"#build\"]"),
                (
                    "callback_urls",
                    &format!("[\"{}\", \"{}\"]", rx.url("/form"), rx.url("/form2")),
                ),
                ("token", "\"tok\""),
                ("signing_secret", SECRET_A),
            ])
        })
        .hook(|rx| {
            hook_yaml(&[
                ("id", "rotated-json"),
                ("trigger_words", "[\"#build\"]"),
                ("callback_urls", &format!("[\"{}\"]", rx.url("/json"))),
                ("content_type", "application/json"),
                ("token", "\"tok\""),
                ("signing_secret", &format!("[{SECRET_A}, {SECRET_B}]")),
            ])
        })
        .hook(|rx| {
            hook_yaml(&[
                ("trigger_words", "[\"#build\"]"),
                ("callback_urls", &format!("[\"{}\"]", rx.url("/plain"))),
                ("token", "\"tok\""),
            ])
        })
        .start()
        .await;
    let (status, post) = create_post(ph.addr, PUBLIC, "#build the \"release\" & ship ✓").await;
    assert_eq!(status, 201);
    let fired = rx.wait_for(4, T).await;
    let by_path = |p: &str| fired.iter().find(|r| r.path() == p).unwrap().clone();
    let (form, form2, json_req, plain) = (
        by_path("/form"),
        by_path("/form2"),
        by_path("/json"),
        by_path("/plain"),
    );

    // An unsigned hook: Mattermost's request, no Standard Webhooks header; the signed form
    // hook sends the very same body.
    for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        assert_eq!(plain.header(h), None, "{h}");
    }
    assert_eq!(form.body, plain.body, "signing never changes the body");
    assert_eq!(json_req.json()["post_id"], post["id"]);

    // One id per callback request, msg_ + 26 characters, no dot; a fresh timestamp in seconds.
    let ids: Vec<&str> = [&form, &form2, &json_req]
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    for id in &ids {
        assert!(
            id.starts_with("msg_") && id.len() == 30 && !id.contains('.'),
            "{id}"
        );
    }
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ts: i64 = form.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((now - ts).abs() <= 5, "{ts} vs {now}");
    let sig = json_req.header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').count(), 2, "one entry per secret: {sig}");
    assert!(
        sig.split(' ')
            .all(|e| e.starts_with("v1,") && e.len() == 47),
        "{sig}"
    );

    let cases = json!([
        case("form", &form, SECRET_A, false),
        case("form2", &form2, SECRET_A, false),
        case("json-a", &json_req, SECRET_A, false),
        case("json-b", &json_req, SECRET_B, false),
        case("form-tampered", &form, SECRET_A, true),
        case("json-tampered", &json_req, SECRET_B, true),
        case("form-other-secret", &form, SECRET_C, false),
        case("json-other-secret", &json_req, SECRET_C, false),
    ]);
    let python = run_verifier(testenv().join("py/bin/python"), &["-c", PYTHON], &cases);
    assert_eq!(
        python,
        "form ok\nform2 ok\njson-a ok\njson-b ok\n\
         form-tampered refused: WebhookVerificationError\n\
         json-tampered refused: WebhookVerificationError\n\
         form-other-secret refused: WebhookVerificationError\n\
         json-other-secret refused: WebhookVerificationError\n",
        "the Python verifier"
    );

    // The JavaScript verifier parses the body as JSON: JSON hooks only.
    let js_cases = json!([
        case("json-a", &json_req, SECRET_A, false),
        case("json-b", &json_req, SECRET_B, false),
        case("json-tampered", &json_req, SECRET_A, true),
        case("json-other-secret", &json_req, SECRET_C, false),
    ]);
    let node = PathBuf::from("/usr/bin/node");
    let node = if node.exists() {
        node
    } else {
        PathBuf::from("node")
    };
    let js = run_verifier_js(node, &js_cases);
    assert_eq!(
        js,
        "json-a ok\njson-b ok\n\
         json-tampered refused: WebhookVerificationError\n\
         json-other-secret refused: WebhookVerificationError\n",
        "the JavaScript verifier"
    );
}

/// [`run_verifier`] for node, with the module resolved from the test environment.
fn run_verifier_js(node: PathBuf, cases: &Value) -> String {
    let modules = testenv().join("js/node_modules/standardwebhooks");
    assert!(
        modules.exists(),
        "{} is missing: run scripts/test-deps.sh {} (make test does)",
        modules.display(),
        testenv().display()
    );
    let script = JS.replace(
        "require(\"standardwebhooks\")",
        &format!("require({:?})", modules.display().to_string()),
    );
    let program = which(&node);
    run_verifier(program, &["-e", &script], cases)
}

/// `program` as a path that exists (looked up in `PATH` when it is a bare name).
fn which(program: &PathBuf) -> PathBuf {
    if program.is_absolute() {
        return program.clone();
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| program.clone())
}
