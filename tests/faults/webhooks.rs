//! Webhook endpoints that misbehave (hang, trickle, reset, answer garbage, redirect, answer
//! late): one hand-written endpoint per fault, a fresh posthook per row, and the user's
//! exchange checked against a no-hook baseline while the fault is under way.

use super::wire::{accept_loop, read_request, AcceptLoop, Req};
use super::*;

/// How a hand-written webhook endpoint answers (after reading the whole request).
#[derive(Clone, Debug)]
pub(crate) enum Answer {
    /// 200, empty body.
    Ok,
    /// Never answers (the connection stays open until the server is dropped).
    Hang,
    /// A valid 200, one byte every 50 ms (2 s in all).
    Trickle,
    /// Resets the connection (SO_LINGER 0, then close) after reading the request.
    Reset,
    /// Resets the connection as soon as it is accepted.
    ResetOnAccept,
    /// Bytes that are not HTTP, then closes.
    Garbage,
    /// A valid 200 `application/json` whose body is not JSON.
    GarbageBody,
    /// 200 with `Content-Length: 1073741824`, streamed (never allocated) until the peer stops
    /// reading: an unterminated JSON string.
    Huge,
    /// 307 to this location.
    Redirect(String),
    /// A valid 200, after this long.
    Late(Duration),
}

const TRICKLED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

#[derive(Default)]
pub(crate) struct FaultState {
    connections: AtomicUsize,
    requests: Mutex<Vec<Req>>,
    /// Body bytes the `Huge` answer got written.
    pub(crate) written: AtomicU64,
    /// Connections whose handling has ended (the `Huge` writer stopped).
    pub(crate) ended: AtomicUsize,
}

/// A webhook endpoint with one [`Answer`]; dropping it stops it and every connection.
pub(crate) struct FaultServer {
    addr: SocketAddr,
    pub(crate) state: Arc<FaultState>,
    _accepting: AcceptLoop,
}

impl FaultServer {
    pub(crate) async fn start(ip: &str, answer: Answer) -> FaultServer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(FaultState::default());
        let st = state.clone();
        let accepting = accept_loop(listener, move |s| {
            st.connections.fetch_add(1, Ordering::SeqCst);
            serve_fault(s, answer.clone(), st.clone())
        });
        FaultServer {
            addr,
            state,
            _accepting: accepting,
        }
    }

    /// The callback URL, by the name the test resolver maps to this server's address.
    pub(crate) fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/hook", self.addr.port())
    }

    fn requests(&self) -> Vec<Req> {
        self.state.requests.lock().unwrap().clone()
    }

    async fn wait_connections(&self, n: usize, what: &str) {
        let st = self.state.clone();
        wait_until(what, T, move || st.connections.load(Ordering::SeqCst) >= n).await;
    }
}

async fn serve_fault(mut s: TcpStream, answer: Answer, st: Arc<FaultState>) {
    if let Answer::ResetOnAccept = answer {
        s.set_zero_linger().unwrap();
        drop(s);
        st.ended.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let mut buf = Vec::new();
    let Some(req) = read_request(&mut s, &mut buf).await else {
        return;
    };
    st.requests.lock().unwrap().push(req);
    match answer {
        Answer::Ok => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
        Answer::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
        Answer::Trickle => {
            for b in TRICKLED {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Answer::Reset | Answer::ResetOnAccept => {
            s.set_zero_linger().unwrap();
            drop(s);
        }
        Answer::Garbage => {
            let _ = s
                .write_all(
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 \xff\xfe\x00 NOT HTTP\r\n\r\n",
                )
                .await;
            let _ = s.shutdown().await;
        }
        Answer::GarbageBody => {
            let r = http_response(
                "200 OK",
                &[("Content-Type", "application/json")],
                b"\x00\xff{\"text\": garbage \x1b[0m",
            );
            let _ = s.write_all(&r).await;
        }
        Answer::Huge => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Content-Length: {ONE_GIB}\r\n\r\n{{\"text\":\""
            );
            if s.write_all(head.as_bytes()).await.is_ok() {
                let chunk = vec![b'a'; 64 * 1024];
                let mut left = ONE_GIB - 9;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    st.written.fetch_add(n as u64, Ordering::SeqCst);
                    left -= n as u64;
                }
            }
        }
        Answer::Redirect(location) => {
            let r = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.write_all(r.as_bytes()).await;
        }
        Answer::Late(d) => {
            tokio::time::sleep(d).await;
            let body = r#"{"text":"too late"}"#;
            let r = http_response(
                "200 OK",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            let _ = s.write_all(&r).await;
        }
    }
    st.ended.fetch_add(1, Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// An answer, asking for no reply.
    Delivered,
    /// An answer that cannot be read as a reply.
    DeliveredUnreadable,
    Failed,
    Refused,
}

struct HookRow {
    name: &'static str,
    answer: fn(&Targets) -> Answer,
    outcome: Outcome,
    /// The request ends at the allowed "public" redirect target.
    reaches_public: bool,
}

/// Redirect targets, started once per row.
struct Targets {
    public: FaultServer,
    internal: FaultServer,
}

/// Runs one webhook fault: a fresh posthook (whole-request timeout 1 s) whose hook points at
/// the fault, a baseline, the matching post, a post while the fault is under way, then the
/// outcome and the accounting.
async fn hook_fault_row(row: &HookRow) {
    let what = row.name;
    let mm = standin().await;
    let targets = Targets {
        public: FaultServer::start(PUBLIC_IP, Answer::Ok).await,
        internal: FaultServer::start("127.0.0.1", Answer::Ok).await,
    };
    let answer = (row.answer)(&targets);
    let reads_request = !matches!(answer, Answer::ResetOnAccept);
    let fault = FaultServer::start(PUBLIC_IP, answer).await;
    let (ph, metrics) = launch(
        &mm.base_url(),
        &format!(
            "settings:\n  outgoing_integration_requests_timeout: 1\n{ALLOW_PUBLIC_IP}hooks:\n{}",
            form_hook("#build", &fault.url("hook.test"))
        ),
        true,
        names,
        &standin_saw(&mm),
    )
    .await;
    let metrics = metrics.unwrap();
    let base = baseline(ph.addr).await;

    // The matching post: byte-exact both ways, in normal time.
    let body =
        serde_json::json!({"channel_id": PUBLIC, "message": format!("#build {what}")}).to_string();
    let (r, took) = timed(post_json(ph.addr, &body)).await;
    assert_eq!(r.status, 201, "{what}: {}", r.body_str());
    let seen = mm
        .requests()
        .into_iter()
        .rev()
        .find(|q| q.method == "POST")
        .unwrap();
    assert_eq!(
        seen.body,
        body.as_bytes(),
        "{what}: the upstream got the exact body"
    );
    let post = r.json();
    let stored = mm.post(post["id"].as_str().unwrap()).unwrap();
    assert_eq!(post, stored, "{what}: the client got the created post");
    let message = format!("#build {what}");
    let n = not_delayed(what, base, took, || timed_post(ph.addr, &message)).await;

    // While the fault is under way, posts are not slowed down either.
    fault.wait_connections(1, what).await;
    let during = timed_post(ph.addr, "nothing during").await;
    let during_what = format!("{what} (during)");
    not_delayed(&during_what, base, during, || {
        timed_post(ph.addr, "nothing during")
    })
    .await;

    fault.wait_connections(n as usize, what).await;
    let s = settle(&ph, what).await;
    assert_eq!(s.deliveries_due, n, "{what}: {s:#?}");
    let got = (
        s.deliveries_delivered,
        s.deliveries_failed,
        s.deliveries_refused,
    );
    let want = match row.outcome {
        Outcome::Delivered | Outcome::DeliveredUnreadable => (n, 0, 0),
        Outcome::Failed => (0, n, 0),
        Outcome::Refused => (0, n, n),
    };
    assert_eq!(got, want, "{what}: (delivered, failed, refused): {s:#?}");
    assert_eq!(s.deliveries_dropped, 0, "{what}");
    let replies = (s.replies_none, s.replies_failed, s.replies_posted);
    let want = match row.outcome {
        // The target's empty 200 asks for no reply.
        Outcome::Delivered => (n, 0, 0),
        Outcome::DeliveredUnreadable => (0, n, 0),
        Outcome::Failed | Outcome::Refused => (0, 0, 0),
    };
    assert_eq!(
        replies, want,
        "{what}: replies (none, failed, posted): {s:#?}"
    );
    assert_eq!(
        (
            fault.state.connections.load(Ordering::SeqCst),
            fault.requests().len()
        ),
        (n as usize, n as usize * usize::from(reads_request)),
        "{what}: one connection and request per post (no retry)"
    );
    for sent in fault.requests() {
        let sent = String::from_utf8_lossy(&sent.body).into_owned();
        assert!(
            sent.contains(&format!("&token={HOOK_TOKEN}&")),
            "{what}: the payload was sent: {sent}"
        );
    }
    assert!(
        targets.internal.requests().is_empty(),
        "{what}: the internal address got nothing"
    );
    assert_up(ph.addr, what).await;
    // The endpoint shows the same accounting.
    let scrape = http_request(metrics, "GET", "/metrics", &[], b"")
        .await
        .body_str();
    let value = |series: &str| -> u64 {
        scrape
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} in {scrape}"))
            .parse()
            .unwrap()
    };
    let outcomes: u64 = ["delivered", "failed", "dropped"]
        .iter()
        .map(|o| value(&format!("posthook_deliveries_total{{outcome=\"{o}\"}}")))
        .sum();
    assert_eq!(
        value("posthook_deliveries_due_total"),
        outcomes,
        "{what}: {scrape}"
    );
    let at_target = targets.public.requests();
    if row.reaches_public {
        assert!(
            at_target.iter().all(|r| r.method == "POST"),
            "{what}: 307 keeps the method"
        );
        let bodies = |reqs: Vec<Req>| {
            let mut b: Vec<Vec<u8>> = reqs.into_iter().map(|r| r.body).collect();
            b.sort();
            b
        };
        assert_eq!(
            bodies(at_target),
            bodies(fault.requests()),
            "{what}: each request reached the allowed target, body kept"
        );
    } else {
        assert!(at_target.is_empty(), "{what}");
    }
}

/// Webhook endpoints that hang, trickle, reset, answer garbage, redirect or answer late: the
/// user never notices, posthook stays up, and each ends failed (or delivered) exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_faults_never_reach_the_user_and_are_counted() {
    let _gate = MEMORY_GATE.read().await;
    let rows = [
        HookRow {
            name: "hang",
            answer: |_| Answer::Hang,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "trickle",
            answer: |_| Answer::Trickle,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "reset",
            answer: |_| Answer::Reset,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "reset on accept",
            answer: |_| Answer::ResetOnAccept,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "garbage",
            answer: |_| Answer::Garbage,
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "garbage body",
            answer: |_| Answer::GarbageBody,
            outcome: Outcome::DeliveredUnreadable,
            reaches_public: false,
        },
        HookRow {
            name: "after the timeout",
            answer: |_| Answer::Late(Duration::from_millis(1500)),
            outcome: Outcome::Failed,
            reaches_public: false,
        },
        HookRow {
            name: "redirect to a public address",
            answer: |t| Answer::Redirect(format!("{}?from=redirect", t.public.url("public.test"))),
            outcome: Outcome::Delivered,
            reaches_public: true,
        },
        HookRow {
            name: "redirect to an internal address",
            answer: |t| Answer::Redirect(format!("http://127.0.0.1:{}/", t.internal.addr.port())),
            outcome: Outcome::Refused,
            reaches_public: false,
        },
    ];
    for row in &rows {
        hook_fault_row(row).await;
    }
}
