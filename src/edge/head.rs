//! Waiting for a request without holding a session for it. A new connection's first head is
//! *peeked* in the kernel's socket buffer (nothing is read, nothing is allocated per
//! connection) until it is complete, the client gives up, or its deadline passes: only then
//! does Pingora get the connection, with the whole head waiting for it. Between keep-alive
//! requests the wait is for readability alone (a peek per request would cost the proxy a
//! system call each time): the head that follows is held to its deadline as it is read.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use log::debug;
use pingora::server::ShutdownWatch;
use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::stats::Stats;

/// How much of a head is looked at. A head still incomplete at this size is handed to
/// Pingora as it is (which reads on, up to its own limit, the head's deadline still running):
/// real heads are a few KiB, cookies included.
pub const WINDOW: usize = 64 * 1024;

thread_local! {
    /// One peek buffer per worker thread, not per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A connection is closed because its request head did not arrive in time: counted, and
/// logged at debug level (a slowloris flood must not flood the log).
pub fn header_timeout(stats: &Stats) {
    stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
    debug!("closing a connection: no complete request head in time");
}

/// How the wait for a head ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A complete head (or [`WINDOW`] bytes of one) is waiting in the socket.
    Ready,
    /// The client closed before a complete head (or said nothing and closed).
    Closed,
    /// Idle between requests for the whole keep-alive timeout ([`idle`]).
    IdleTimeout,
    /// The head was not complete within the header timeout.
    HeaderTimeout,
    /// The server is shutting down.
    Shutdown,
}

/// Waits until `tcp` holds a complete first request head, which has `header` to arrive in
/// all, however it trickles. `timer` is the connection's one timer (made with that deadline).
pub async fn wait(
    tcp: &TcpStream,
    timer: &mut Pin<Box<Sleep>>,
    shutdown: &mut ShutdownWatch,
) -> Wait {
    // The usual case: the head is there already.
    match peek(tcp) {
        Ok(Peeked::Complete) => return Wait::Ready,
        Ok(Peeked::Empty) => return Wait::Closed,
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Wait::Closed,
        Err(_) => {}
    }
    loop {
        let ready = tokio::select! {
            ready = tcp.ready(Interest::READABLE) => ready,
            _ = timer.as_mut() => return Wait::HeaderTimeout,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Wait::Shutdown;
                }
                continue;
            }
        };
        let Ok(ready) = ready else {
            return Wait::Closed;
        };
        match tcp.try_io(Interest::READABLE, || peek(tcp)) {
            Ok(Peeked::Complete) => return Wait::Ready,
            Ok(Peeked::Empty) => return Wait::Closed,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Wait::Closed,
            Err(_) => {}
        }
        // Half a head and the client's side closed: it can never complete.
        if ready.is_read_closed() {
            return Wait::Closed;
        }
    }
}

/// Waits, at most `keepalive`, until `tcp` has something to read (the next request, or the
/// client's end): no peeking, as the keep-alive request that follows is read by Pingora with
/// its head watched by the stream ([`super::stream::ClientStream`]). `Ready`, `IdleTimeout`,
/// `Shutdown` or `Closed` (the socket failed).
pub async fn idle(
    tcp: &TcpStream,
    keepalive: Duration,
    timer: &mut Pin<Box<Sleep>>,
    shutdown: &mut ShutdownWatch,
) -> Wait {
    timer.as_mut().reset(Instant::now() + keepalive);
    loop {
        return tokio::select! {
            ready = tcp.ready(Interest::READABLE) => match ready {
                Ok(_) => Wait::Ready,
                Err(_) => Wait::Closed,
            },
            _ = timer.as_mut() => Wait::IdleTimeout,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Wait::Shutdown;
                }
                continue;
            }
        };
    }
}

enum Peeked {
    Complete,
    /// End of stream with nothing sent.
    Empty,
}

/// Looks at what the socket holds. `WouldBlock` while the head is incomplete (which, inside
/// `try_io`, clears the readiness so that the next wait is for new bytes).
fn peek(tcp: &TcpStream) -> io::Result<Peeked> {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < WINDOW {
            buf.resize(WINDOW, 0);
        }
        let mut read = ReadBuf::new(buf);
        let mut cx = Context::from_waker(Waker::noop());
        let n = match tcp.poll_peek(&mut cx, &mut read) {
            Poll::Ready(n) => n?,
            Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
        };
        if n == 0 {
            return Ok(Peeked::Empty);
        }
        if n >= WINDOW || complete(read.filled()) {
            return Ok(Peeked::Complete);
        }
        Err(io::ErrorKind::WouldBlock.into())
    })
}

/// Whether `bytes` hold a complete HTTP/1 head: some line, then an empty one (`\r\n` or a
/// bare `\n`, as Pingora's parser accepts). Empty lines before the request line do not count.
pub fn complete(bytes: &[u8]) -> bool {
    Scan::default().feed(bytes)
}

/// The same test over a head that comes in pieces (as Pingora reads it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    /// A line with something in it has ended.
    some_line: bool,
    /// Bytes on the current line, not counting one `\r` before its `\n`.
    line: usize,
    /// The current line's last byte was a `\r`.
    cr: bool,
}

impl Scan {
    /// Takes the next bytes; true once the head is complete (what follows is not looked at).
    /// Only the line ends are looked for (SIMD search): a request's bytes cost a few
    /// instructions per line, not per byte.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut rest = bytes;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.take(&rest[..end]);
            if self.line > 0 {
                self.some_line = true;
            } else if self.some_line {
                return true;
            }
            self.line = 0;
            self.cr = false;
            rest = &rest[end + 1..];
        }
        self.take(rest);
        false
    }

    /// Bytes of the current line (no `\n` among them): each counts, but a `\r` only once
    /// another byte follows it on the line.
    fn take(&mut self, bytes: &[u8]) {
        let Some(&last) = bytes.last() else { return };
        let last_cr = last == b'\r';
        self.line = self
            .line
            .saturating_add(usize::from(self.cr) + bytes.len() - usize::from(last_cr));
        self.cr = last_cr;
    }
}

#[cfg(test)]
mod tests {
    use super::{complete, Scan};

    #[test]
    fn a_head_in_pieces_is_complete_where_it_is_whole() {
        let head = b"\r\nPOST /api/v4/posts HTTP/1.1\r\nHost: x\nX: \r\r\n\r\nbody";
        for cut in 0..head.len() {
            for step in 1..4 {
                let mut scan = Scan::default();
                let mut done = scan.feed(&head[..cut]);
                for piece in head[cut..].chunks(step) {
                    done = done || scan.feed(piece);
                }
                assert!(done, "cut at {cut}, pieces of {step}");
            }
            let whole = head.len() - 4; // up to the end of the empty line
            assert_eq!(complete(&head[..cut]), cut >= whole, "{cut}");
        }
    }

    #[test]
    fn a_head_is_complete_at_its_empty_line() {
        assert!(complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"));
        assert!(complete(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(complete(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"));
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r"));
        assert!(!complete(b"\r\n\r\n\r\n"));
        assert!(!complete(b""));
        assert!(!complete(
            b"POST /api/v4/posts HTTP/1.1\r\nHost: x\r\nContent-Ty"
        ));
        assert!(complete(b"GET / HTTP/1.1\r\nX: \r\r\n\r\n"));
        assert!(!complete(b"GET / HTTP/1.1\r\n\r\r\n"));
    }

    /// Where the head ends, by the definition, one byte at a time: the index just past the
    /// `\n` of the first empty line (nothing, or one `\r`) that follows a non-empty one.
    fn end_by_definition(bytes: &[u8]) -> Option<usize> {
        let mut some_line = false;
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                let line = &bytes[start..i];
                if line.is_empty() || line == b"\r" {
                    if some_line {
                        return Some(i + 1);
                    }
                } else {
                    some_line = true;
                }
                start = i + 1;
            }
        }
        None
    }

    proptest::proptest! {
        #[test]
        fn scan_in_any_pieces_agrees_with_the_definition(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'\r', b'\n', b'a', b' ']), 0..40),
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let want = end_by_definition(&bytes);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
            cuts.push(0);
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut scan = Scan::default();
            let mut done_at = None;
            for w in cuts.windows(2) {
                if scan.feed(&bytes[w[0]..w[1]]) {
                    done_at = Some(w[1]);
                    break;
                }
            }
            // Complete within the piece that holds the end, and not before.
            match want {
                Some(end) => {
                    let piece_end = done_at.expect("complete");
                    proptest::prop_assert!(piece_end >= end);
                    proptest::prop_assert!(!complete(&bytes[..end - 1]));
                    proptest::prop_assert!(complete(&bytes[..end]));
                }
                None => proptest::prop_assert_eq!(done_at, None),
            }
        }
    }
}
