//! An upstream that misbehaves on post creation (slow, reset mid-response, 5xx, a 201 that is
//! cut, not JSON or not decodable, down then back): a hand-written Mattermost answers with exact
//! bytes, the client must get exactly those, and only a whole, readable 201 fires. The other
//! families use the same upstream for the answers the stand-in cannot give.

use super::wire::{
    accept_loop, assert_same_answer, exchange, post_request, read_request, AcceptLoop,
};
use super::*;

/// How the raw upstream answers a `POST /api/v4/posts` whose body contains `#build` (other
/// posts get a normal 201).
#[derive(Clone, Debug)]
pub(crate) enum PostMode {
    /// A normal 201.
    Normal,
    /// A normal 201, after this long.
    Slow(Duration),
    /// These exact bytes.
    Answer(Vec<u8>),
    /// The head and half the body of these bytes, then a reset.
    ResetMid(Vec<u8>),
    /// The head and half the body of these bytes; once the flag is set, another quarter;
    /// the rest once posthook closed the connection (or after 1 s).
    Staged(Vec<u8>, Arc<std::sync::atomic::AtomicBool>),
}

struct UpState {
    mode: PostMode,
    /// The target of every request.
    targets: Mutex<Vec<String>>,
    /// Bodies of every `POST /api/v4/posts`, as received.
    posts: Mutex<Vec<Vec<u8>>>,
    /// The exact bytes of every answer to `POST /api/v4/posts`.
    answers: Mutex<Vec<Vec<u8>>>,
}

/// A hand-written Mattermost: post creation (with a fault), the channel, team and user
/// look-ups of the standard fixtures, `/api/v4/system/ping` and a 32 MiB `GET /big`.
pub(crate) struct RawUpstream {
    addr: SocketAddr,
    state: Arc<UpState>,
    _accepting: AcceptLoop,
}

impl RawUpstream {
    pub(crate) async fn start(mode: PostMode) -> RawUpstream {
        RawUpstream::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), mode)
    }

    pub(crate) fn start_on(listener: TcpListener, mode: PostMode) -> RawUpstream {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpState {
            mode,
            targets: Mutex::default(),
            posts: Mutex::default(),
            answers: Mutex::default(),
        });
        let st = state.clone();
        let accepting = accept_loop(listener, move |s| serve_upstream(s, st.clone()));
        RawUpstream {
            addr,
            state,
            _accepting: accepting,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn saw(&self, target: &str) -> bool {
        self.state
            .targets
            .lock()
            .unwrap()
            .iter()
            .any(|t| t == target)
    }

    pub(crate) fn last_post(&self) -> Vec<u8> {
        self.state.posts.lock().unwrap().last().unwrap().clone()
    }

    pub(crate) fn last_answer(&self) -> Vec<u8> {
        self.state.answers.lock().unwrap().last().unwrap().clone()
    }
}

pub(crate) fn json_answer(status: &str, body: &str) -> Vec<u8> {
    http_response(
        status,
        &[
            ("Content-Type", "application/json"),
            ("X-Version-Id", VERSION_ID),
        ],
        body.as_bytes(),
    )
}

/// An AppError answer, as Mattermost writes it.
fn app_error(status: u16, id: &str, message: &str) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    let body = serde_json::json!({
        "id": id,
        "message": message,
        "detailed_error": "",
        "request_id": random_id(),
        "status_code": status,
    });
    json_answer(&format!("{status} {reason}"), &body.to_string())
}

/// A normal 201 for a post body (read as Go does: invalid UTF-8 replaced).
fn normal_created(body: &[u8]) -> Vec<u8> {
    let v: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(body)).unwrap_or_default();
    match (v["channel_id"].as_str(), v["message"].as_str()) {
        (Some(channel), Some(message)) => {
            json_answer("201 Created", &created_post_json(channel, message, "{}"))
        }
        _ => app_error(
            400,
            "api.context.invalid_body_param.app_error",
            "Invalid or missing post in request body.",
        ),
    }
}

async fn serve_upstream(mut s: TcpStream, st: Arc<UpState>) {
    let mut buf = Vec::new();
    // Bounded: a connection serves at most this many requests.
    for _ in 0..1000 {
        let Some(req) = read_request(&mut s, &mut buf).await else {
            return;
        };
        st.targets.lock().unwrap().push(req.target.clone());
        let path = req.target.split('?').next().unwrap_or_default().to_string();
        let answer = match (req.method.as_str(), path.as_str()) {
            ("POST", "/api/v4/posts") => {
                st.posts.lock().unwrap().push(req.body.clone());
                let mode = if find(&req.body, b"#build").is_some() {
                    st.mode.clone()
                } else {
                    PostMode::Normal
                };
                let answer = match mode {
                    PostMode::Normal => normal_created(&req.body),
                    PostMode::Slow(d) => {
                        tokio::time::sleep(d).await;
                        normal_created(&req.body)
                    }
                    PostMode::Answer(bytes) => bytes,
                    PostMode::ResetMid(bytes) => {
                        st.answers.lock().unwrap().push(bytes.clone());
                        let head = find(&bytes, b"\r\n\r\n").unwrap() + 4;
                        let cut = head + (bytes.len() - head) / 2;
                        let _ = s.write_all(&bytes[..cut]).await;
                        let _ = s.flush().await;
                        s.set_zero_linger().unwrap();
                        return;
                    }
                    PostMode::Staged(bytes, go) => {
                        st.answers.lock().unwrap().push(bytes.clone());
                        let head = find(&bytes, b"\r\n\r\n").unwrap() + 4;
                        let half = head + (bytes.len() - head) / 2;
                        let three_quarters = head + (bytes.len() - head) * 3 / 4;
                        if s.write_all(&bytes[..half]).await.is_err() {
                            return;
                        }
                        let flag = go.clone();
                        wait_until("the client is gone", T, move || flag.load(Ordering::SeqCst))
                            .await;
                        if s.write_all(&bytes[half..three_quarters]).await.is_err() {
                            return;
                        }
                        // Bounded wait for posthook to close this connection (it gave up).
                        let mut probe = [0u8; 1];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await;
                        if s.write_all(&bytes[three_quarters..]).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                st.answers.lock().unwrap().push(answer.clone());
                answer
            }
            ("GET", "/api/v4/channels/chanpub") => json_answer(
                "200 OK",
                &serde_json::json!({
                    "id": PUBLIC, "team_id": TEAM, "type": "O", "name": PUBLIC_NAME
                })
                .to_string(),
            ),
            ("GET", "/api/v4/teams/team1") => json_answer(
                "200 OK",
                &format!(r#"{{"id":"{TEAM}","name":"{TEAM_NAME}","display_name":"My Team"}}"#),
            ),
            ("GET", "/api/v4/users/user1") => json_answer(
                "200 OK",
                &format!(r#"{{"id":"{USER}","username":"{USER_NAME}"}}"#),
            ),
            ("GET", p) if p.starts_with("/api/v4/posts/") => {
                // The created posts are known by the 201s this upstream sent (whole or not).
                let id = &p["/api/v4/posts/".len()..];
                let needle = format!("\"id\":\"{id}\"");
                let answers = st.answers.lock().unwrap().clone();
                let found = answers.iter().find_map(|a| {
                    let head = find(a, b"\r\n\r\n")? + 4;
                    let body = String::from_utf8_lossy(&a[head..]).to_string();
                    body.contains(&needle).then_some(body)
                });
                match found {
                    Some(body) => json_answer("200 OK", &body),
                    None => app_error(404, "app.post.get.app_error", "Unable to get the post."),
                }
            }
            ("GET", "/api/v4/system/ping") => json_answer("200 OK", r#"{"status":"OK"}"#),
            ("GET", "/big") => {
                let len = 32 * 1024 * 1024;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {len}\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..len / chunk.len() {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            _ => app_error(
                404,
                "api.context.404.app_error",
                "Sorry, we could not find the page.",
            ),
        };
        if s.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// The form of the delivery made for `post_id`.
fn fired_for(
    hooks: &[RecordedRequest],
    post_id: &str,
) -> std::collections::HashMap<String, String> {
    hooks
        .iter()
        .map(|h| {
            h.form()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>()
        })
        .find(|f| f.get("post_id").map(String::as_str) == Some(post_id))
        .unwrap_or_else(|| panic!("no delivery for post {post_id}"))
}

/// posthook in front of a raw upstream, with one form hook on a receiver.
pub(crate) async fn posthook_before(
    up: &RawUpstream,
    rx: &WebhookReceiver,
    extra: &str,
) -> Posthook {
    let saw = |path: &str, _: &RawResponse| up.saw(path);
    let extra = format!(
        "{extra}{ALLOW_LOOPBACK}hooks:\n{}",
        form_hook("#build", &rx.url("/hook"))
    );
    launch(&up.base_url(), &extra, false, Options::default, &saw)
        .await
        .0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UpExpect {
    /// The whole 201 arrives and the hook fires.
    Fires,
    /// The answer is cut after its head and part of its body: the client sees it cut, and
    /// since the post exists, posthook recovers it by the id the part shows and fires.
    Cut,
    /// Not a 201: not even observed.
    NotCreated,
    /// A 201 that cannot be read: observed, counted unparsed, nothing fires.
    Unparsed,
}

struct UpRow {
    name: &'static str,
    mode: fn(&str) -> PostMode,
    expect: UpExpect,
    /// What the upstream itself takes to answer.
    upstream_delay: Duration,
}

fn created_answer(message: &str) -> Vec<u8> {
    json_answer("201 Created", &created_post_json(PUBLIC, message, "{}"))
}

/// The upstream slow, resetting mid-response, answering 5xx, or a 201 that is truncated, not
/// JSON, or not decodable: the client gets the upstream's exact bytes in the upstream's time,
/// posthook stays up, and only a whole, readable 201 fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_pass_through_exactly_and_fire_only_for_a_readable_201() {
    let _gate = MEMORY_GATE.read().await;
    let rows = [
        UpRow {
            name: "slow",
            mode: |_| PostMode::Slow(Duration::from_secs(2)),
            expect: UpExpect::Fires,
            upstream_delay: Duration::from_secs(2),
        },
        UpRow {
            name: "reset mid-response",
            mode: |m| PostMode::ResetMid(created_answer(m)),
            expect: UpExpect::Cut,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "500",
            mode: |_| {
                PostMode::Answer(app_error(
                    500,
                    "app.post.save.app_error",
                    "Unable to save the post.",
                ))
            },
            expect: UpExpect::NotCreated,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "503 html",
            mode: |_| {
                PostMode::Answer(http_response(
                    "503 Service Unavailable",
                    &[("Content-Type", "text/html"), ("Retry-After", "5")],
                    b"<html><body>down for maintenance</body></html>",
                ))
            },
            expect: UpExpect::NotCreated,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 truncated JSON",
            mode: |m| {
                let full = created_post_json(PUBLIC, m, "{}");
                PostMode::Answer(json_answer("201 Created", &full[..full.len() / 2]))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 not JSON",
            mode: |_| {
                PostMode::Answer(http_response(
                    "201 Created",
                    &[("Content-Type", "text/html")],
                    b"<html>created, probably</html>",
                ))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 gzip that is not gzip",
            mode: |m| {
                PostMode::Answer(http_response(
                    "201 Created",
                    &[
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "gzip"),
                    ],
                    created_post_json(PUBLIC, m, "{}").as_bytes(),
                ))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
        UpRow {
            name: "201 in an unknown encoding",
            mode: |m| {
                PostMode::Answer(http_response(
                    "201 Created",
                    &[
                        ("Content-Type", "application/json"),
                        ("Content-Encoding", "br"),
                    ],
                    created_post_json(PUBLIC, m, "{}").as_bytes(),
                ))
            },
            expect: UpExpect::Unparsed,
            upstream_delay: Duration::ZERO,
        },
    ];
    for row in &rows {
        let what = row.name;
        let message = format!("#build {what}");
        let up = RawUpstream::start((row.mode)(&message)).await;
        let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
        let ph = posthook_before(&up, &rx, "").await;
        let base = baseline(ph.addr).await;

        let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
        let got = exchange(ph.addr, &post_request(body.as_bytes(), &[])).await;
        assert_eq!(
            up.last_post(),
            body.as_bytes(),
            "{what}: the upstream got the exact body"
        );
        let sent = up.last_answer();
        assert_same_answer(what, &got, &sent, row.expect == UpExpect::Cut);
        if row.expect == UpExpect::Cut {
            assert!(!got.complete, "{what}: the client sees the answer cut");
        }
        assert!(
            got.took >= row.upstream_delay,
            "{what}: took {:?}",
            got.took
        );
        let request = post_request(body.as_bytes(), &[]);
        let delay = row.upstream_delay;
        let n = not_delayed(what, base, got.took - delay, || async {
            let again = exchange(ph.addr, &request).await;
            assert!(again.took >= delay, "{what}");
            again.took - delay
        })
        .await;

        if row.expect == UpExpect::Unparsed {
            judged(&ph, what, n).await;
        }
        if row.expect == UpExpect::Fires {
            let hooks = rx.wait_for(n as usize, T).await;
            let post: serde_json::Value = serde_json::from_slice(got.body()).unwrap();
            let form = fired_for(&hooks, post["id"].as_str().unwrap());
            assert_eq!(form["text"], message, "{what}");
        }
        let s = settle(&ph, what).await;
        let (created, unparsed, delivered) = match row.expect {
            UpExpect::Fires => (n, 0, n),
            UpExpect::Cut => (n, 0, n),
            UpExpect::NotCreated => (0, 0, 0),
            UpExpect::Unparsed => (n, n, 0),
        };
        // Every 201 counts as a created post, the baseline's included.
        let observed = BASELINE_POSTS + created;
        assert_eq!(
            (s.posts_observed, s.posts_unparsed, s.deliveries_delivered),
            (observed, unparsed, delivered),
            "{what}: (observed, unparsed, delivered): {s:#?}"
        );
        assert_eq!(s.deliveries_due, delivered, "{what}");
        assert_up(ph.addr, what).await;
        rx.assert_quiet(Duration::from_millis(100)).await;
        assert_eq!(rx.requests().len() as u64, delivered, "{what}");
    }
}

/// The upstream down: an AppError 502, posthook stays up, and once Mattermost is back the
/// next post goes through and fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_then_back() {
    let _gate = MEMORY_GATE.read().await;
    // Mattermost's port, held (bound, not listening: connections are refused) so that nothing
    // else takes it meanwhile.
    let down = TcpSocket::new_v4().unwrap();
    down.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = down.local_addr().unwrap().port();
    let rx = WebhookReceiver::start(Responder::Status(200, String::new())).await;
    let extra = format!(
        "{ALLOW_LOOPBACK}hooks:\n{}",
        form_hook("#build", &rx.url("/hook"))
    );
    let unreachable = |_: &str, r: &RawResponse| {
        r.status == 502
            && serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|v| v["id"] == "posthook.upstream.unreachable.app_error")
    };
    let (ph, _) = launch(
        &format!("http://127.0.0.1:{port}"),
        &extra,
        false,
        Options::default,
        &unreachable,
    )
    .await;
    for message in ["nothing", "#build while down"] {
        let body = serde_json::json!({"channel_id": PUBLIC, "message": message}).to_string();
        let got = exchange(ph.addr, &post_request(body.as_bytes(), &[])).await;
        assert_eq!(got.status, 502, "{message}");
        let err: serde_json::Value = serde_json::from_slice(got.body()).unwrap();
        assert_eq!(err["id"], "posthook.upstream.unreachable.app_error");
        assert_eq!(err["status_code"], 502);
    }
    let s = settle(&ph, "down").await;
    assert_eq!((s.posts_observed, s.deliveries_due), (0, 0));

    // Mattermost comes back on its port.
    let up = RawUpstream::start_on(down.listen(64).unwrap(), PostMode::Normal);
    let base = baseline(ph.addr).await;
    let ((status, post), took) = timed(create_post(ph.addr, PUBLIC, "#build back")).await;
    assert_eq!(status, 201);
    let answer = up.last_answer();
    let sent: serde_json::Value =
        serde_json::from_slice(&answer[find(&answer, b"\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(post, sent, "the client got the created post");
    let n = not_delayed("back", base, took, || timed_post(ph.addr, "#build back")).await;
    let hooks = rx.wait_for(n as usize, T).await;
    let form = fired_for(&hooks, post["id"].as_str().unwrap());
    assert_eq!(form["text"], "#build back");
    let s = settle(&ph, "back").await;
    assert_eq!((s.deliveries_due, s.deliveries_delivered), (n, n));
}
