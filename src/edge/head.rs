//! Waiting for a request head without holding a session for it: the head is *peeked* in the
//! kernel's socket buffer (nothing is read, nothing is allocated per connection) until it is
//! complete, the client gives up, or a deadline passes. Only then does Pingora get the
//! connection, with the whole head waiting for it.

use std::cell::RefCell;
use std::io;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pingora::server::ShutdownWatch;
use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

/// How much of a head is looked at. A head still incomplete at this size is handed to
/// Pingora as it is (which reads on, up to its own limit, with the head's deadline per read):
/// real heads are a few KiB, cookies included.
pub const WINDOW: usize = 64 * 1024;

thread_local! {
    /// One peek buffer per worker thread, not per connection.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// How the wait for a head ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A complete head (or [`WINDOW`] bytes of one) is waiting in the socket.
    Ready,
    /// The client closed before a complete head (or said nothing and closed).
    Closed,
    /// Idle between requests for the whole keep-alive timeout.
    IdleTimeout,
    /// The head was not complete within the header timeout.
    HeaderTimeout,
    /// The server is shutting down.
    Shutdown,
}

/// Waits until `tcp` holds a complete request head. `idle`: the keep-alive timeout, which
/// runs until the first byte; then (or from the start without `idle`) the whole head has
/// `header` to arrive, however it trickles.
pub async fn wait(
    tcp: &TcpStream,
    idle: Option<Duration>,
    header: Duration,
    shutdown: &mut ShutdownWatch,
) -> Wait {
    let mut seen = 0;
    // The usual case: the head is there already.
    match peek(tcp, &mut seen) {
        Ok(Peeked::Complete) => return Wait::Ready,
        Ok(Peeked::Empty) => return Wait::Closed,
        Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Wait::Closed,
        Err(_) => {}
    }
    let mut idling = idle.is_some() && seen == 0;
    let mut deadline = Instant::now()
        + if idling {
            idle.unwrap_or(header)
        } else {
            header
        };
    loop {
        let ready = tokio::select! {
            ready = tcp.ready(Interest::READABLE) => ready,
            _ = sleep_until(deadline) => {
                return if idling { Wait::IdleTimeout } else { Wait::HeaderTimeout };
            }
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
        match tcp.try_io(Interest::READABLE, || peek(tcp, &mut seen)) {
            Ok(Peeked::Complete) => return Wait::Ready,
            Ok(Peeked::Empty) => return Wait::Closed,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Wait::Closed,
            Err(_) => {}
        }
        if idling && seen > 0 {
            idling = false;
            deadline = Instant::now() + header;
        }
        // Half a head and the client's side closed: it can never complete.
        if ready.is_read_closed() {
            return Wait::Closed;
        }
    }
}

enum Peeked {
    Complete,
    /// End of stream with nothing sent.
    Empty,
}

/// Looks at what the socket holds. `WouldBlock` when there is nothing new (which, inside
/// `try_io`, clears the readiness so that the next wait is for new bytes); `seen` is how much
/// was there.
fn peek(tcp: &TcpStream, seen: &mut usize) -> io::Result<Peeked> {
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
        if n == *seen {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *seen = n;
        Err(io::ErrorKind::WouldBlock.into())
    })
}

/// Whether `bytes` hold a complete HTTP/1 head: some line, then an empty one (`\r\n` or a
/// bare `\n`, as Pingora's parser accepts). Empty lines before the request line do not count.
pub fn complete(bytes: &[u8]) -> bool {
    let mut start = 0;
    let mut some_line = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'\n' {
            continue;
        }
        let line = &bytes[start..i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            some_line = true;
        } else if some_line {
            return true;
        }
        start = i + 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::complete;

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
    }
}
