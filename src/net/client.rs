//! The HTTP/1.1 client under webhook deliveries and Mattermost calls: hyper-util's pooled
//! client; TLS by rustls with the platform's certificate verifier; host names resolved by a
//! [`GuardedResolver`] whose answers an SSRF policy filters before any connection is made;
//! connect and TLS handshake under one timeout; header names written in Go's canonical case;
//! answers read up to a bound, gzip decoded inside the bound.
//!
//! posthook used reqwest before. Its per-request layers (a redirect policy that formats and
//! re-parses every URL even with redirects off, tower retry and redirect futures, header-map
//! clones) cost about 25 000 instructions per exchange, two exchanges per matching post
//! (BENCHMARKS.md); what posthook needs of them — Go's redirect rules, gzip, timeouts — is a
//! few dozen lines here and in [`crate::webhook`].

use std::error::Error as StdError;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;

use super::guard::{BoxError, GuardedResolver, RefusedAddress};

/// A request body: posthook's bodies are always complete in memory.
pub type Body = Full<Bytes>;

/// Installs rustls' ring provider once (the process default every `ClientConfig` uses).
pub(crate) fn init_tls() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // Err only means another provider is installed already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

type Https = hyper_rustls::HttpsConnector<HttpConnector<GuardedResolver>>;

/// The TCP + TLS connector with one deadline over connect and handshake.
#[derive(Clone)]
pub struct Connector {
    https: Https,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = <Https as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.https.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = self.https.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(format!("connect timed out after {timeout:?}").into()),
            }
        })
    }
}

/// A pooled HTTP/1.1 client. Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<Connector, Body>,
}

impl HttpClient {
    /// A client resolving through `resolver` (answers filtered by `policy`, if any), with
    /// `connect_timeout` over TCP connect and TLS handshake, keeping at most
    /// `max_idle_per_host` idle connections per host for `idle_timeout`.
    pub fn new(
        resolver: GuardedResolver,
        connect_timeout: Duration,
        max_idle_per_host: usize,
        idle_timeout: Duration,
    ) -> Result<HttpClient, BoxError> {
        init_tls();
        use rustls_platform_verifier::BuilderVerifierExt;
        let tls = rustls::ClientConfig::builder()
            .with_platform_verifier()?
            .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            // Go's client writes header names in canonical case (`User-Agent`, `Content-Type`),
            // and so does every integration-side HTTP library Mattermost talks to; hyper writes
            // them in lower case unless told. Some hand-written receivers compare them exactly.
            .http1_title_case_headers(true)
            .timer(TokioTimer::new())
            .build(Connector {
                https,
                timeout: connect_timeout,
            });
        Ok(HttpClient { inner })
    }

    /// Sends `request`; the answer's body is still to be read.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, hyper_util::client::legacy::Error> {
        self.inner.request(request).await
    }
}

/// An error and its causes on one line (`a: b: c`), for logs. hyper's errors never carry the
/// URL, so a secret in a query string cannot leak through them.
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The first [`RefusedAddress`] among `e` and its causes.
pub fn refused<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a RefusedAddress> {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RefusedAddress>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

/// Why an answer's body could not be read.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("reading the answer: {0}")]
    Read(String),
    #[error("the answer's gzip body is corrupt: {0}")]
    Gzip(String),
}

/// A `Write` that keeps at most `cap` bytes and fails once more arrive.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = self.cap - self.buf.len();
        self.buf.extend_from_slice(&b[..b.len().min(room)]);
        if b.len() > room {
            return Err(std::io::Error::other("bound reached"));
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads `body` until it ends or `cap` bytes are in (the rest is left unread), decoding gzip
/// first when `gzip`: the bound applies to the decoded bytes, as Go's `LimitReader` over its
/// transparently decompressing body does. A caller that wants to tell "too large" asks for
/// one byte more than it accepts.
pub async fn read_capped(mut body: Incoming, cap: usize, gzip: bool) -> Result<Bytes, BodyError> {
    if !gzip {
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Read(describe(&e)))?;
            if let Ok(chunk) = frame.into_data() {
                let room = cap - buf.len();
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if buf.len() >= cap {
                    break;
                }
            }
        }
        return Ok(Bytes::from(buf));
    }
    let mut decoder = flate2::write::GzDecoder::new(Capped {
        buf: Vec::new(),
        cap,
    });
    let mut compressed = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(describe(&e)))?;
        if let Ok(chunk) = frame.into_data() {
            compressed += chunk.len();
            if let Err(e) = decoder.write_all(&chunk) {
                if decoder.get_ref().buf.len() >= cap {
                    return Ok(Bytes::from(std::mem::take(&mut decoder.get_mut().buf)));
                }
                return Err(BodyError::Gzip(e.to_string()));
            }
        }
    }
    if compressed == 0 {
        // An empty body is empty, whatever it claims (Go's gzip reader meets EOF at once and
        // `io.ReadAll` reads nothing, without an error).
        return Ok(Bytes::new());
    }
    match decoder.try_finish() {
        Ok(()) => Ok(Bytes::from(std::mem::take(&mut decoder.get_mut().buf))),
        Err(_) if decoder.get_ref().buf.len() >= cap => {
            Ok(Bytes::from(std::mem::take(&mut decoder.get_mut().buf)))
        }
        Err(e) => Err(BodyError::Gzip(e.to_string())),
    }
}
