//! A small HTTP/1.1 reader (keep-alive; Content-Length, chunked or read-to-close bodies) for
//! both ends the bench owns: the load generator's clients and the stand-in servers. It reads
//! only what the bench needs (start line, three headers, body) because whatever the bench's side
//! spends comes out of the same two cores as the proxy under test.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

const MAX_HEAD: usize = 64 * 1024;

/// One HTTP/1.1 message.
pub struct Msg {
    /// Start line and header lines, with the final empty line.
    pub head: Bytes,
    /// Length of the start line (without CRLF).
    start_len: usize,
    pub body: Bytes,
    /// `Connection: close` was sent.
    pub close: bool,
}

impl Msg {
    fn start(&self) -> &[u8] {
        &self.head[..self.start_len]
    }

    /// `(method, target)` of a request.
    pub fn request_line(&self) -> (&[u8], &[u8]) {
        let mut it = self.start().splitn(3, |&b| b == b' ');
        (it.next().unwrap_or(b""), it.next().unwrap_or(b""))
    }

    /// Status code of a response (0 when unreadable).
    pub fn status(&self) -> u16 {
        self.start()
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

pub fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<()> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    if r.read_buf(buf).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// Reads one message from `r`, keeping what follows it in `buf`; `Ok(None)` when the peer
/// closed between messages.
pub async fn read_msg<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    response: bool,
) -> io::Result<Option<Msg>> {
    let mut scanned = 0;
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n", scanned) {
            break p + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("head too large"));
        }
        scanned = buf.len().saturating_sub(3);
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        if r.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let head = buf.split_to(head_end).freeze();
    let start_len = find(&head, b"\r\n", 0).unwrap_or(0);
    let (mut length, mut chunked, mut close) = (None, false, false);
    for line in head[start_len + 2..head_end - 4].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            length = Some(n.ok_or_else(|| invalid("bad content-length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with(b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value.eq_ignore_ascii_case(b"close");
        }
    }
    let body = if chunked {
        read_chunked(r, buf).await?
    } else if let Some(n) = length {
        while buf.len() < n {
            fill(r, buf).await?;
        }
        buf.split_to(n).freeze()
    } else if response {
        // No length: the body runs to the end of the connection.
        close = true;
        loop {
            match fill(r, buf).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        buf.split().freeze()
    } else {
        Bytes::new()
    };
    Ok(Some(Msg {
        head,
        start_len,
        body,
        close,
    }))
}

async fn read_chunked<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<Bytes> {
    let mut body = BytesMut::new();
    loop {
        let line_end = loop {
            if let Some(p) = find(buf, b"\r\n", 0) {
                break p;
            }
            if buf.len() > MAX_HEAD {
                return Err(invalid("chunk line too long"));
            }
            fill(r, buf).await?;
        };
        let hex = buf[..line_end].split(|&b| b == b';').next().unwrap_or(b"");
        let size = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| usize::from_str_radix(h.trim(), 16).ok())
            .ok_or_else(|| invalid("bad chunk size"))?;
        buf.advance(line_end + 2);
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let p = loop {
                    if let Some(p) = find(buf, b"\r\n", 0) {
                        break p;
                    }
                    fill(r, buf).await?;
                };
                buf.advance(p + 2);
                if p == 0 {
                    return Ok(body.freeze());
                }
            }
        }
        while buf.len() < size + 2 {
            fill(r, buf).await?;
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
}
