//! Test support for posthook's integration tests: the world around posthook, never posthook
//! itself (nothing here uses the library; `tests/harness/` starts posthook in front of it).
//!
//! * [`MattermostStandIn`] (`standin.rs`): an in-process HTTP/1.1 server that imitates the parts
//!   of the Mattermost REST API posthook relies on (`POST /api/v4/posts`, channel/team/user
//!   look-ups, client config, the websocket), with fixtures, failure knobs and a record of every
//!   request.
//! * [`WebhookReceiver`] (`receiver.rs`): an outgoing-webhook callback endpoint with a
//!   configurable [`Responder`].
//! * [`RawConn`] / [`http_request`] (`raw.rs`): a byte-exact HTTP/1.1 client on a plain
//!   `TcpStream`.
//! * `server.rs`: the server plumbing the stand-in and the receiver share, and
//!   [`RecordedRequest`], what both record.
//! * Small helpers, here: [`gunzip`], [`inflate`], [`wait_until`], [`random_id`].
//!
//! Everything binds to `127.0.0.1:0` and runs on the current tokio runtime; dropping a server
//! stops its accept loop and open connections. Test files use it as `mod support;` (items by
//! `support::X`, re-exported here) and `benches/soak.rs` includes this file by path; each uses
//! its own part, so every item carries `#[allow(dead_code)]`, every re-export
//! `#[allow(unused_imports)]`, and nothing calls `unwrap`/`expect`.
//!
//! ```ignore
//! let mm = MattermostStandIn::start().await;
//! mm.add_team("team1", "myteam");
//! mm.add_channel("chan1", "team1", "town-square", "O");
//! mm.add_user("user1", "alice", false);
//! mm.add_token("tok1", "user1");
//! let hook = WebhookReceiver::start(Responder::Json(r#"{"text":"hi"}"#.into())).await;
//! // point posthook at mm.base_url() and hook.url("/hook"), send traffic, then:
//! let reqs = hook.wait_for(1, Duration::from_secs(5)).await;
//! let posts = mm.wait_for_posts(2, Duration::from_secs(5)).await;
//! ```

mod postgres;
mod raw;
mod receiver;
mod server;
mod standin;

use std::io::{Read, Write};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[allow(unused_imports)]
pub use postgres::{postgres_installed, PgCluster};
#[allow(unused_imports)]
pub use raw::{http_request, RawConn, RawResponse};
#[allow(unused_imports)]
pub use receiver::{Answer, Responder, WebhookReceiver};
#[allow(unused_imports)]
pub use server::RecordedRequest;
#[allow(unused_imports)]
pub use standin::MattermostStandIn;

/// Request bodies are recorded up to this many bytes (the full length is in `body_len`).
#[allow(dead_code)]
pub const RECORD_BODY_LIMIT: usize = 1024 * 1024;

/// `X-Version-Id` sent by the stand-in (`version.build.confighash.licensed`, like the real server).
#[allow(dead_code)]
pub const VERSION_ID: &str = "10.11.0.10.11.0.6f9a1c0e2d8b4a7c9e3f5b1d0a2c4e6f.false";

/// Default `MaxPostSize` of the stand-in's client config (and the limit it enforces).
#[allow(dead_code)]
pub const MAX_POST_SIZE: usize = 16383;

/// A 26-character Mattermost-style id (the library's, which the demo's embedded API uses).
#[allow(dead_code)]
pub fn random_id() -> String {
    posthook::demo::model::new_id()
}

/// Decompresses a gzip stream; panics if it is not one.
#[allow(dead_code)]
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| {
            panic!(
                "gunzip: not a valid gzip stream ({e}); {} bytes",
                data.len()
            )
        });
    out
}

/// Decompresses an HTTP `deflate` body (a zlib stream, RFC 1950); panics if it is not one.
#[allow(dead_code)]
pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap_or_else(|e| {
            panic!(
                "inflate: not a valid zlib stream ({e}); {} bytes",
                data.len()
            )
        });
    out
}

#[allow(dead_code)]
fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .unwrap_or_else(|e| panic!("gzip encode: {e}"));
    enc.finish().unwrap_or_else(|e| panic!("gzip encode: {e}"))
}

#[allow(dead_code)]
fn zlib_bytes(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)
        .unwrap_or_else(|e| panic!("deflate encode: {e}"));
    enc.finish()
        .unwrap_or_else(|e| panic!("deflate encode: {e}"))
}

/// Polls `f` every 5 ms until it returns true; panics naming `what` after `timeout`.
#[allow(dead_code)]
pub async fn wait_until<F: Fn() -> bool>(what: &str, timeout: Duration, f: F) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(dead_code)]
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[allow(dead_code)]
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[allow(dead_code)]
fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[allow(dead_code)]
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[allow(dead_code)]
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}
