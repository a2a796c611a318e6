//! The webhook receiver: an outgoing-webhook callback endpoint that records every request and
//! answers as its [`Responder`] says (a body, a status, never, or late).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Request;
use hyper::body::Incoming;

use super::server::{
    describe_requests, read_body, response, spawn_server, Handler, RecordedRequest, RequestMeta,
    Resp, ServerTask,
};
use super::{lock, RECORD_BODY_LIMIT};

/// How a [`WebhookReceiver`] answers.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub enum Responder {
    /// 200 with `Content-Type: application/json` and this body.
    Json(String),
    /// This status with `Content-Type: application/json` and this body.
    Status(u16, String),
    /// Never answers (the connection stays open).
    Hang,
    /// Waits, then 200 `application/json` with this body.
    Delay(Duration, String),
    /// Answers in turn, one per request, the last one to every request after it.
    Script(Vec<Answer>),
}

/// One scripted answer: status, extra headers, and a JSON body.
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

#[allow(dead_code)]
impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn body(mut self, body: &str) -> Answer {
        self.body = body.to_string();
        self
    }
}

#[allow(dead_code)]
struct RecvShared {
    responder: Mutex<Responder>,
    requests: Mutex<Vec<RecordedRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Decrements the in-flight count when a request's handling ends (or is dropped).
#[allow(dead_code)]
struct InFlight(Arc<RecvShared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An outgoing-webhook callback endpoint on `127.0.0.1:0`. Dropping it stops the server.
#[allow(dead_code)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<RecvShared>,
    _server: ServerTask,
}

#[allow(dead_code)]
impl WebhookReceiver {
    pub async fn start(responder: Responder) -> WebhookReceiver {
        let shared = Arc::new(RecvShared {
            responder: Mutex::new(responder),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let sh = shared.clone();
        let handler: Handler =
            Arc::new(move |req, meta| Box::pin(handle_hook(sh.clone(), req, meta)));
        let (addr, server) = spawn_server(handler).await;
        WebhookReceiver {
            addr,
            shared,
            _server: server,
        }
    }

    /// Changes the answer for requests arriving from now on.
    pub fn set_responder(&self, responder: Responder) {
        *lock(&self.shared.responder) = responder;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/path` (a missing leading `/` is added).
    pub fn url(&self, path: &str) -> String {
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!("http://{}{sep}{path}", self.addr)
    }

    /// Requests received so far (recorded once the body has been read, before answering).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// The highest number of requests that were being handled at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests arrived; panics listing them on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            if Instant::now() >= deadline {
                panic!(
                    "WebhookReceiver {}: timed out after {timeout:?} waiting for {n} request(s); {} arrived:\n{}",
                    self.addr,
                    reqs.len(),
                    describe_requests(&reqs)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Asserts that no request arrives during `d` (fails as soon as one does).
    pub async fn assert_quiet(&self, d: Duration) {
        let before = self.requests().len();
        let deadline = Instant::now() + d;
        loop {
            let reqs = self.requests();
            if reqs.len() > before {
                panic!(
                    "WebhookReceiver {}: expected no request for {d:?}, but got:\n{}",
                    self.addr,
                    describe_requests(&reqs[before..])
                );
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[allow(dead_code)]
async fn handle_hook(shared: Arc<RecvShared>, req: Request<Incoming>, meta: RequestMeta) -> Resp {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(shared.clone());
    let method = req.method().as_str().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let (body, body_len) = read_body(req.into_body(), RECORD_BODY_LIMIT).await;
    let responder = {
        let mut r = lock(&shared.responder);
        match &mut *r {
            Responder::Script(answers) if answers.len() > 1 => {
                Responder::Script(vec![answers.remove(0)])
            }
            other => other.clone(),
        }
    };
    lock(&shared.requests).push(RecordedRequest {
        method,
        path_and_query,
        headers: meta.headers,
        body,
        body_len,
        received_at: meta.received_at,
    });
    let json = |status: u16, body: String| {
        response(
            status,
            &[("Content-Type", "application/json".to_string())],
            body.into_bytes(),
        )
    };
    match responder {
        Responder::Json(body) => json(200, body),
        Responder::Status(status, body) => json(status, body),
        Responder::Hang => std::future::pending().await,
        Responder::Delay(d, body) => {
            tokio::time::sleep(d).await;
            json(200, body)
        }
        Responder::Script(answers) => {
            let Some(a) = answers.into_iter().next() else {
                return json(200, String::new());
            };
            let mut headers = vec![("Content-Type", "application/json".to_string())];
            headers.extend(a.headers);
            response(a.status, &headers, a.body.into_bytes())
        }
    }
}
