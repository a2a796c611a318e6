//! Exercises the test-support module through raw HTTP/1.1 on tokio TcpStreams.

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const T: Duration = Duration::from_secs(5);

async fn fixture() -> MattermostStandIn {
    let mm = MattermostStandIn::start().await;
    mm.add_team("team1", "myteam");
    mm.add_channel("chan1", "team1", "town-square", "O");
    mm.add_channel("priv1", "team1", "secret", "P");
    mm.add_user("user1", "alice", false);
    mm.add_user("bot1", "hookbot", true);
    mm.add_token("tok-user", "user1");
    mm.add_token("tok-bot", "bot1");
    mm
}

async fn post(mm: &MattermostStandIn, headers: &[(&str, &str)], body: &Value) -> RawResponse {
    http_request(
        mm.addr(),
        "POST",
        "/api/v4/posts",
        headers,
        body.to_string().as_bytes(),
    )
    .await
}

fn key_positions(body: &str, keys: &[&str]) -> Vec<usize> {
    keys.iter()
        .map(|k| {
            body.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("key {k} missing in {body}"))
        })
        .collect()
}

#[tokio::test]
async fn create_post_201_with_real_fields_and_order() {
    let mm = fixture().await;
    // No Content-Type (like the `mattermost` PyPI client), upper-case BEARER like Client4.
    let resp = post(
        &mm,
        &[("Authorization", "BEARER tok-user")],
        &json!({
            "channel_id": "chan1", "message": "hello #world", "root_id": null, "file_ids": [],
            "props": {"from_webhook": "true", "add_channel_member": {"x": 1}},
            "user_id": "someone-else",
            "metadata": {"priority": {"priority": "urgent", "requested_ack": false}}
        }),
    )
    .await;
    assert_eq!(resp.status, 201, "{}", resp.body_str());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("x-request-id").map(str::len), Some(26));
    assert_eq!(resp.header("x-version-id"), Some(VERSION_ID));
    let text = resp.body_str();
    let order = [
        "id",
        "create_at",
        "update_at",
        "edit_at",
        "delete_at",
        "is_pinned",
        "user_id",
        "channel_id",
        "root_id",
        "original_id",
        "message",
        "type",
        "props",
        "hashtags",
        "file_ids",
        "pending_post_id",
        "reply_count",
        "last_reply_at",
        "participants",
        "metadata",
    ];
    let pos = key_positions(&text, &order);
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "field order: {text}");
    let p = resp.json();
    assert_eq!(p["id"].as_str().map(str::len), Some(26));
    assert!(p["id"].as_str().is_some_and(|s| s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())));
    assert_eq!(p["user_id"], "user1");
    assert_eq!(p["channel_id"], "chan1");
    assert_eq!(p["root_id"], "");
    assert_eq!(p["type"], "");
    assert_eq!(p["hashtags"], "#world");
    assert_eq!(p["file_ids"], json!([]));
    assert_eq!(p["participants"], Value::Null);
    assert_eq!(p["props"], json!({"from_webhook": "true"}));
    assert_eq!(p["metadata"]["priority"]["priority"], "urgent");
    assert!(p["create_at"]
        .as_i64()
        .is_some_and(|t| t > 1_600_000_000_000));
    assert_eq!(p["create_at"], p["update_at"]);
    assert_eq!(mm.posts(), vec![p.clone()]);
    assert_eq!(mm.wait_for_posts(1, T).await.len(), 1);

    // A bot gets from_bot.
    let resp = post(
        &mm,
        &[("Authorization", "Bearer tok-bot")],
        &json!({"channel_id": "chan1", "message": "beep"}),
    )
    .await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["props"], json!({"from_bot": "true"}));
    assert_eq!(mm.posts().len(), 2);

    // The channel counters moved.
    let ch = http_request(
        mm.addr(),
        "GET",
        "/api/v4/channels/chan1",
        &[("Authorization", "Bearer tok-user")],
        b"",
    )
    .await
    .json();
    assert_eq!(ch["total_msg_count"], 2);
    assert_eq!(ch["last_post_at"], resp.json()["create_at"]);
}

#[tokio::test]
async fn gzip_and_deflate_variants() {
    let mm = fixture().await;
    let body = json!({"channel_id": "chan1", "message": "zip"});
    let auth = ("Authorization", "Bearer tok-user");
    mm.set_gzip(true);
    let resp = post(&mm, &[auth, ("Accept-Encoding", "gzip, deflate")], &body).await;
    assert_eq!(resp.status, 201);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    assert_eq!(resp.header("vary"), Some("Accept-Encoding"));
    let decoded: Value = serde_json::from_slice(&gunzip(&resp.body)).unwrap_or_default();
    assert_eq!(decoded["message"], "zip");
    // No Accept-Encoding, or gzip;q=0: identity.
    for ae in [None, Some("gzip;q=0")] {
        let mut headers = vec![auth];
        if let Some(ae) = ae {
            headers.push(("Accept-Encoding", ae));
        }
        let resp = post(&mm, &headers, &body).await;
        assert_eq!(resp.header("content-encoding"), None, "{ae:?}");
        assert_eq!(resp.json()["message"], "zip");
    }
    mm.set_gzip(false);
    mm.set_deflate(true);
    let resp = post(&mm, &[auth, ("Accept-Encoding", "gzip, deflate")], &body).await;
    assert_eq!(resp.header("content-encoding"), Some("deflate"));
    let decoded: Value = serde_json::from_slice(&inflate(&resp.body)).unwrap_or_default();
    assert_eq!(decoded["message"], "zip");
    assert_eq!(mm.posts().len(), 4);
}

#[tokio::test]
async fn authentication_rules() {
    let mm = fixture().await;
    let body = json!({"channel_id": "chan1", "message": "m"});
    for headers in [
        vec![],
        vec![("Authorization", "Bearer nope")],
        vec![("Authorization", "Basic tok-user")],
    ] {
        let resp = post(&mm, &headers, &body).await;
        assert_eq!(resp.status, 401, "{headers:?}");
        let err = resp.json();
        assert_eq!(err["id"], "api.context.session_expired.app_error");
        assert_eq!(err["status_code"], 401);
        assert_eq!(err["is_oauth"], false);
        assert_eq!(err["detailed_error"], "");
        assert_eq!(
            Some(err["request_id"].as_str().unwrap_or("")),
            resp.header("x-request-id")
        );
    }
    // `Token` scheme and access_token also work.
    assert_eq!(
        post(&mm, &[("Authorization", "token tok-user")], &body)
            .await
            .status,
        201
    );
    let resp = http_request(
        mm.addr(),
        "GET",
        "/api/v4/users/me?access_token=tok-user",
        &[],
        b"",
    )
    .await;
    assert_eq!(resp.json()["username"], "alice");
    // The cookie wins over the header, both ways.
    let csrf = ("X-Requested-With", "XMLHttpRequest");
    let ok = post(
        &mm,
        &[
            ("Cookie", "MMAUTHTOKEN=tok-user"),
            ("Authorization", "Bearer bad"),
            csrf,
        ],
        &body,
    )
    .await;
    assert_eq!(ok.status, 201);
    let bad = post(
        &mm,
        &[
            ("Cookie", "MMAUTHTOKEN=bad"),
            ("Authorization", "Bearer tok-user"),
            csrf,
        ],
        &body,
    )
    .await;
    assert_eq!(bad.status, 401);
    // Cookie sessions need CSRF protection on non-GET.
    let csrf_fail = post(&mm, &[("Cookie", "MMAUTHTOKEN=tok-user")], &body).await;
    assert_eq!(csrf_fail.status, 401);
    let with_token = post(
        &mm,
        &[
            ("Cookie", "MMAUTHTOKEN=tok-user; MMCSRF=abc"),
            ("X-CSRF-Token", "abc"),
        ],
        &body,
    )
    .await;
    assert_eq!(with_token.status, 201);
    assert_eq!(mm.posts().len(), 3);
}

#[tokio::test]
async fn post_validation_errors() {
    let mm = fixture().await;
    let auth = [("Authorization", "Bearer tok-user")];
    let root = post(
        &mm,
        &auth,
        &json!({"channel_id": "chan1", "message": "root"}),
    )
    .await
    .json();
    let root_id = root["id"].as_str().unwrap_or("").to_string();
    let reply = post(
        &mm,
        &auth,
        &json!({"channel_id": "chan1", "message": "reply", "root_id": root_id}),
    )
    .await;
    assert_eq!(reply.status, 201);
    let reply = reply.json();
    assert_eq!(reply["root_id"], root_id.as_str());
    assert_eq!(mm.post(&root_id).unwrap_or_default()["reply_count"], 1);

    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"channel_id": "chan1", "message": "x", "root_id": reply["id"]}),
            400,
            "api.post.create_post.root_id.app_error",
        ),
        (
            json!({"channel_id": "chan1", "message": "x", "root_id": random_id()}),
            400,
            "api.post.create_post.root_id.app_error",
        ),
        (
            json!({"channel_id": "priv1", "message": "x", "root_id": root_id}),
            400,
            "api.post.create_post.channel_root_id.app_error",
        ),
        (
            json!({"channel_id": "chan1", "message": "x", "type": "system_join_channel"}),
            400,
            "api.context.invalid_param.app_error",
        ),
        (
            json!({"channel_id": "chan1", "message": "x", "type": "post"}),
            400,
            "model.post.is_valid.type.app_error",
        ),
        (
            json!({"channel_id": "nope", "message": "x"}),
            403,
            "api.context.permissions.app_error",
        ),
        (
            json!({"message": "x"}),
            403,
            "api.context.permissions.app_error",
        ),
        (
            json!({"channel_id": "chan1", "message": 5}),
            400,
            "api.context.invalid_body_param.app_error",
        ),
        (
            json!([1, 2]),
            400,
            "api.context.invalid_body_param.app_error",
        ),
    ];
    for (body, status, id) in cases {
        let resp = post(&mm, &auth, &body).await;
        assert_eq!(resp.status, status, "{body} -> {}", resp.body_str());
        assert_eq!(resp.json()["id"], id, "{body}");
    }
    let root_err = post(
        &mm,
        &auth,
        &json!({"channel_id": "chan1", "message": "x", "root_id": reply["id"]}),
    )
    .await
    .json();
    assert_eq!(root_err["message"], "Invalid RootId parameter.");
    // custom_ types are fine; add_channel_member is stripped.
    let custom = post(
        &mm,
        &auth,
        &json!({"channel_id": "chan1", "message": "", "type": "custom_x", "props": {"add_channel_member": 1}}),
    )
    .await;
    assert_eq!(custom.status, 201);
    assert_eq!(custom.json()["props"], json!({}));
    assert_eq!(mm.posts().len(), 3);
}

#[tokio::test]
async fn pending_post_id_deduplicates() {
    let mm = fixture().await;
    let auth = [("Authorization", "Bearer tok-user")];
    let body =
        json!({"channel_id": "chan1", "message": "once", "pending_post_id": "user1:1700000000000"});
    let first = post(&mm, &auth, &body).await;
    let second = post(&mm, &auth, &body).await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.json()["id"], second.json()["id"]);
    assert_eq!(first.json()["pending_post_id"], "user1:1700000000000");
    assert_eq!(mm.posts().len(), 1);
    // Another user with the same pending id is a different post.
    let other = post(&mm, &[("Authorization", "Bearer tok-bot")], &body).await;
    assert_ne!(other.json()["id"], first.json()["id"]);
    assert_eq!(mm.posts().len(), 2);
}

#[tokio::test]
async fn knobs_failure_delay_and_hardened_mode() {
    let mm = fixture().await;
    let auth = [("Authorization", "Bearer tok-user")];
    let body = json!({"channel_id": "chan1", "message": "m"});
    mm.set_post_failure(Some((503, "api.context.server_busy.app_error")));
    let resp = post(&mm, &auth, &body).await;
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["id"], "api.context.server_busy.app_error");
    assert_eq!(resp.json()["status_code"], 503);
    assert!(mm.posts().is_empty());
    mm.set_post_failure(None);

    mm.set_post_delay(Duration::from_millis(800));
    let addr = mm.addr();
    let started = Instant::now();
    let pending = tokio::spawn(async move {
        http_request(
            addr,
            "POST",
            "/api/v4/posts",
            &[("Authorization", "Bearer tok-user")],
            br#"{"channel_id":"chan1","message":"slow"}"#,
        )
        .await
    });
    let created = mm.wait_for_posts(1, T).await;
    assert!(!pending.is_finished(), "the post exists before the answer");
    let resp = pending.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(resp.json()["id"], created[0]["id"]);
    mm.set_post_delay(Duration::ZERO);

    mm.set_hardened_mode(true);
    let forged = json!({"channel_id": "chan1", "message": "m", "props": {"from_webhook": "true"}});
    let resp = post(&mm, &auth, &forged).await;
    assert_eq!(resp.status, 400);
    assert_eq!(
        resp.json()["id"],
        "api.context.invalid_body_param.app_error"
    );
    assert_eq!(
        post(&mm, &[("Authorization", "Bearer tok-bot")], &forged)
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn lookups_users_ids_and_config() {
    let mm = fixture().await;
    let auth = [("Authorization", "Bearer tok-user")];
    let get = |path: &'static str| http_request(mm.addr(), "GET", path, &auth, b"");

    let ch = get("/api/v4/channels/chan1").await;
    assert_eq!(ch.status, 200);
    assert_eq!(ch.header("content-type"), Some("application/json"));
    let ch = ch.json();
    assert_eq!(
        (ch["id"].clone(), ch["team_id"].clone()),
        (json!("chan1"), json!("team1"))
    );
    assert_eq!(
        (ch["type"].clone(), ch["name"].clone()),
        (json!("O"), json!("town-square"))
    );
    for key in [
        "display_name",
        "header",
        "purpose",
        "last_post_at",
        "total_msg_count",
        "extra_update_at",
        "creator_id",
    ] {
        assert!(ch.get(key).is_some(), "channel lacks {key}");
    }
    assert_eq!(get("/api/v4/channels/priv1").await.json()["type"], "P");
    let missing = get("/api/v4/channels/zzz").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["id"], "app.channel.get.existing.app_error");

    let team = get("/api/v4/teams/team1").await.json();
    assert_eq!(
        (team["name"].clone(), team["type"].clone()),
        (json!("myteam"), json!("O"))
    );
    assert_eq!(get("/api/v4/teams/zzz").await.status, 404);

    let user = get("/api/v4/users/user1").await.json();
    assert_eq!(user["username"], "alice");
    assert_eq!(
        user.get("is_bot"),
        None,
        "humans omit is_bot like the real server"
    );
    let bot = get("/api/v4/users/bot1").await.json();
    assert_eq!(bot["is_bot"], true);
    assert_eq!(get("/api/v4/users/me").await.json()["id"], "user1");
    assert_eq!(get("/api/v4/users/zzz").await.status, 404);
    assert_eq!(
        http_request(mm.addr(), "GET", "/api/v4/users/user1", &[], b"")
            .await
            .status,
        401
    );
    // A GET with a body (mattermostdriver) is fine.
    let me = http_request(mm.addr(), "GET", "/api/v4/users/me", &auth, b"{}").await;
    assert_eq!(me.json()["username"], "alice");

    let ids = http_request(
        mm.addr(),
        "POST",
        "/api/v4/users/ids",
        &auth,
        br#"["bot1","nobody","user1"]"#,
    )
    .await;
    assert_eq!(ids.status, 200);
    let names: Vec<Value> = ids
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| u["username"].clone())
        .collect();
    assert_eq!(names, vec![json!("hookbot"), json!("alice")]);
    assert_eq!(
        http_request(mm.addr(), "POST", "/api/v4/users/ids", &auth, b"[]")
            .await
            .status,
        400
    );

    mm.set_config("EnablePostUsernameOverride", "true");
    let cfg = get("/api/v4/config/client?format=old").await.json();
    assert_eq!(cfg["EnableOutgoingWebhooks"], "true");
    assert_eq!(cfg["EnablePostUsernameOverride"], "true");
    assert_eq!(cfg["EnablePostIconOverride"], "false");
    assert_eq!(cfg["MaxPostSize"], "16383");
    assert_eq!(get("/api/v4/config/client").await.status, 501);
    let anon = http_request(
        mm.addr(),
        "GET",
        "/api/v4/config/client?format=old",
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(anon.get("EnableOutgoingWebhooks"), None);

    assert_eq!(mm.lookups("/api/v4/channels/"), 3);
    assert_eq!(mm.lookups("/api/v4/teams/"), 2);
    assert_eq!(mm.lookups("/api/v4/users/"), 8);
}

#[tokio::test]
async fn records_headers_in_original_case_and_order_over_keep_alive() {
    let mm = fixture().await;
    let mut conn = RawConn::connect(mm.addr()).await;
    let headers = [
        ("X-Requested-With", "XMLHttpRequest"),
        ("authorization", "Bearer tok-user"),
        ("X-Custom-CASE", "v1"),
        ("x-custom-case", "v2"),
    ];
    // A chunked body first, so the second request's head must be found after it.
    conn.send_raw(
        b"POST /api/v4/files?channel_id=chan1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer-A: 1\r\n\r\n",
    )
    .await;
    let first = conn.read_response().await;
    assert_eq!(
        first.json(),
        json!({"method": "POST", "path": "/api/v4/files", "received_bytes": 11})
    );
    let second = conn
        .request(
            "POST",
            "/api/v4/posts?set_online=false",
            &headers,
            br#"{"channel_id":"chan1","message":"ka"}"#,
        )
        .await;
    assert_eq!(second.status, 201);
    let reqs = mm.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body, b"hello world");
    assert_eq!(reqs[0].header("transfer-encoding"), Some("chunked"));
    let r = &reqs[1];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, "/api/v4/posts?set_online=false");
    assert_eq!(r.path(), "/api/v4/posts");
    assert_eq!(r.query_param("set_online").as_deref(), Some("false"));
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "Host",
            "X-Requested-With",
            "authorization",
            "X-Custom-CASE",
            "x-custom-case",
            "Content-Length"
        ]
    );
    assert_eq!(r.header_all("X-CUSTOM-case"), vec!["v1", "v2"]);
    assert_eq!(r.json()["message"], "ka");
    // Responses use Go-style canonical header names.
    let names: Vec<&str> = second.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"Content-Type") && names.contains(&"X-Request-Id"),
        "{names:?}"
    );
}

#[tokio::test]
async fn large_upload_is_counted_not_stored() {
    let mm = fixture().await;
    let mut conn = RawConn::connect(mm.addr()).await;
    let total = 3 * 1024 * 1024 + 5;
    conn.send_raw(
        format!("POST /api/v4/files HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        conn.send_raw(&chunk[..n]).await;
        sent += n;
    }
    let resp = conn.read_response().await;
    assert_eq!(resp.json()["received_bytes"], total);
    let reqs = mm.requests();
    assert_eq!(reqs[0].body.len(), RECORD_BODY_LIMIT);
    assert_eq!(reqs[0].body_len, total as u64);
    // The connection is still usable and the next head was found after the body.
    let next = conn
        .request("GET", "/whatever", &[("X-Up", "1")], b"")
        .await;
    assert_eq!(next.status, 200);
    assert_eq!(mm.requests()[1].headers[1].0, "X-Up");
}

#[tokio::test]
async fn websocket_hello_and_echo() {
    let mm = fixture().await;
    let url = format!("ws://{}/api/v4/websocket", mm.addr());
    let (mut ws, resp) = tokio_tungstenite::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("ws connect: {e}"));
    assert_eq!(resp.status(), 101);
    let hello = ws.next().await;
    assert!(
        matches!(&hello, Some(Ok(Message::Text(t))) if t.as_str() == r#"{"event":"hello"}"#),
        "{hello:?}"
    );
    for msg in [
        Message::text("ping-1"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        ws.send(msg.clone())
            .await
            .unwrap_or_else(|e| panic!("ws send: {e}"));
        let echoed = ws.next().await;
        assert!(matches!(&echoed, Some(Ok(m)) if *m == msg), "{echoed:?}");
    }
    ws.close(None)
        .await
        .unwrap_or_else(|e| panic!("ws close: {e}"));
    assert_eq!(mm.lookups("/api/v4/websocket"), 1);
    // A plain GET is refused.
    assert_eq!(
        http_request(mm.addr(), "GET", "/api/v4/websocket", &[], b"")
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn receiver_json_status_hang_delay() {
    let hook = WebhookReceiver::start(Responder::Json(r#"{"text":"hi"}"#.to_string())).await;
    assert_eq!(hook.url("/h?x=1"), format!("http://{}/h?x=1", hook.addr()));
    assert_eq!(hook.url("h"), format!("http://{}/h", hook.addr()));
    let form = b"channel_id=c1&text=hello+world%21&trigger_word=";
    let resp = http_request(
        hook.addr(),
        "POST",
        "/h?x=1",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("User-Agent", "Mattermost-Bot/1.1"),
        ],
        form,
    )
    .await;
    assert_eq!(
        (resp.status, resp.header("content-type")),
        (200, Some("application/json"))
    );
    assert_eq!(resp.json(), json!({"text": "hi"}));
    let got = hook.wait_for(1, T).await;
    assert_eq!(got[0].path_and_query, "/h?x=1");
    assert_eq!(got[0].header("user-agent"), Some("Mattermost-Bot/1.1"));
    let expected_form: Vec<(String, String)> = [
        ("channel_id", "c1"),
        ("text", "hello world!"),
        ("trigger_word", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got[0].form(), expected_form);

    hook.set_responder(Responder::Status(
        500,
        r#"{"text":"still posts"}"#.to_string(),
    ));
    let resp = http_request(hook.addr(), "POST", "/h", &[], b"{}").await;
    assert_eq!(resp.status, 500);
    assert_eq!(resp.json()["text"], "still posts");

    hook.set_responder(Responder::Delay(
        Duration::from_millis(200),
        "{}".to_string(),
    ));
    let started = Instant::now();
    let resp = http_request(hook.addr(), "POST", "/h", &[], b"{}").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(resp.body, b"{}");

    hook.set_responder(Responder::Hang);
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = RawConn::connect(hook.addr()).await;
        conn.send_raw(b"POST /h HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            .await;
        conns.push(conn);
    }
    let got = hook.wait_for(6, T).await;
    assert!(got[5].received_at >= got[0].received_at);
    for conn in &mut conns {
        let r = tokio::time::timeout(Duration::from_millis(150), conn.read_response()).await;
        assert!(r.is_err(), "Hang answered");
    }
    assert_eq!(hook.max_concurrent(), 3);
    hook.assert_quiet(Duration::from_millis(50)).await;
}

#[tokio::test]
#[should_panic(expected = "expected no request")]
async fn assert_quiet_fails_on_a_request() {
    let hook = WebhookReceiver::start(Responder::Json("{}".to_string())).await;
    let addr = hook.addr();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        http_request(addr, "POST", "/late", &[], b"{}").await
    });
    hook.assert_quiet(Duration::from_secs(2)).await;
}

#[tokio::test]
#[should_panic(expected = "waiting for 1 request(s); 0 arrived")]
async fn wait_for_times_out_with_details() {
    let hook = WebhookReceiver::start(Responder::Json("{}".to_string())).await;
    hook.wait_for(1, Duration::from_millis(50)).await;
}

#[tokio::test]
#[should_panic(expected = "waiting for 1 created post(s); 0 arrived")]
async fn wait_for_posts_times_out_with_details() {
    let mm = fixture().await;
    let _ = http_request(mm.addr(), "GET", "/api/v4/teams/team1", &[], b"").await;
    mm.wait_for_posts(1, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn helpers() {
    let a = random_id();
    let b = random_id();
    assert_eq!(a.len(), 26);
    assert_ne!(a, b);
    assert!(a
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = flag.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    wait_until("flag set", T, || {
        flag.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
}

#[tokio::test]
async fn seeded_posts_can_be_thread_roots_or_replies() {
    let mm = fixture().await;
    let root = mm.add_post("chan1", "user1", "root", "");
    let root_id = root["id"].as_str().unwrap_or("").to_string();
    let reply = mm.add_post("chan1", "user1", "reply", &root_id);
    assert!(mm.posts().is_empty(), "seeded posts are not 'created'");
    let resp = post(
        &mm,
        &[("Authorization", "Bearer tok-bot")],
        &json!({"channel_id": "chan1", "message": "x", "root_id": reply["id"]}),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.json()["id"], "api.post.create_post.root_id.app_error");
}
