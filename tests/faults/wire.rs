//! Raw HTTP/1.1 for the hand-written servers and clients of the fault tests: a request reader
//! for servers that answer with exact (or broken) bytes, and a client that reads whatever comes
//! back, however the exchange ends, and compares it with what the upstream sent.

use super::*;

/// A hand-written server's accept loop: one task per connection, each served by `serve`.
/// Dropping it stops the loop and every connection.
pub(crate) struct AcceptLoop(JoinHandle<()>);

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn accept_loop<F, Fut>(listener: TcpListener, serve: F) -> AcceptLoop
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    AcceptLoop(tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            conns.spawn(serve(s));
            while conns.try_join_next().is_some() {}
        }
    }))
}

#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (head and Content-Length body) off `s`, keeping what follows in `buf`;
/// `None` at EOF, on an error, on a chunked or oversized request, or after `T`.
pub(crate) async fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Req> {
    let deadline = tokio::time::Instant::now() + T;
    let mut chunk = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        read_more(s, buf, &mut chunk, deadline).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut start = lines.next()?.split(' ');
    let (method, target) = (start.next()?.to_string(), start.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    let mut req = Req {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return None;
    }
    let len: usize = req
        .header("content-length")
        .map_or(Some(0), |v| v.parse().ok())?;
    if len > 8 * 1024 * 1024 {
        return None;
    }
    while buf.len() < head_end + len {
        read_more(s, buf, &mut chunk, deadline).await?;
    }
    let rest = buf.split_off(head_end + len);
    req.body = std::mem::replace(buf, rest)[head_end..].to_vec();
    Some(req)
}

/// Appends what `s` has next (one read into `chunk`) to `buf`; `None` at EOF, on an error, or
/// at `deadline`.
async fn read_more(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: tokio::time::Instant,
) -> Option<()> {
    let n = tokio::time::timeout_at(deadline, s.read(chunk))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// What a client read off the wire, however the exchange ended.
pub(crate) struct Exchange {
    /// Every byte received.
    pub(crate) raw: Vec<u8>,
    pub(crate) head_len: usize,
    pub(crate) status: u16,
    /// The whole announced body arrived.
    pub(crate) complete: bool,
    pub(crate) took: Duration,
}

impl Exchange {
    pub(crate) fn body(&self) -> &[u8] {
        &self.raw[self.head_len..]
    }

    /// Header lines, without the status line.
    pub(crate) fn headers(&self) -> Vec<(String, String)> {
        header_lines(&self.raw[..self.head_len])
    }
}

fn header_lines(head: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect()
}

fn content_length(headers: &[(String, String)]) -> Option<usize> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
}

/// Sends `request` on a fresh connection and reads one Content-Length response, or as much
/// of it as arrives before the connection ends (bounded by `T`).
pub(crate) async fn exchange(addr: SocketAddr, request: &[u8]) -> Exchange {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + T;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut head_len = 0;
    let mut want = None;
    loop {
        if head_len == 0 {
            if let Some(i) = find(&raw, b"\r\n\r\n") {
                head_len = i + 4;
                want = content_length(&header_lines(&raw[..head_len]));
            }
        }
        if let Some(len) = want {
            if raw.len() >= head_len + len {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&chunk[..n]),
            Ok(_) => break,
            Err(_) => panic!("{addr}: no end to the response within {T:?}"),
        }
    }
    let status = String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let complete = head_len > 0 && want.is_some_and(|len| raw.len() == head_len + len);
    Exchange {
        raw,
        head_len,
        status,
        complete,
        took: started.elapsed(),
    }
}

/// `POST /api/v4/posts` as the test user, as raw bytes.
pub(crate) fn post_request(body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "POST /api/v4/posts HTTP/1.1\r\nHost: chat.example.com\r\n\
         Authorization: Bearer {USER_TOKEN}\r\n"
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The client got exactly what the upstream sent: status line and every header (a proxy may
/// only add its own `Connection`/`Date`/`Keep-Alive`), and the body byte for byte. With
/// `prefix_only`, the body may stop early (the upstream cut it).
pub(crate) fn assert_same_answer(what: &str, got: &Exchange, sent: &[u8], prefix_only: bool) {
    let sent_head_len = find(sent, b"\r\n\r\n").unwrap() + 4;
    let status_line =
        |b: &[u8]| String::from_utf8_lossy(&b[..find(b, b"\r\n").unwrap()]).into_owned();
    assert_eq!(
        status_line(&got.raw),
        status_line(sent),
        "{what}: status line"
    );
    let hop = |h: Vec<(String, String)>| -> Vec<(String, String)> {
        h.into_iter()
            .filter(|(n, _)| {
                !["connection", "date", "keep-alive"].contains(&n.to_ascii_lowercase().as_str())
            })
            .collect()
    };
    assert_eq!(
        hop(got.headers()),
        hop(header_lines(&sent[..sent_head_len])),
        "{what}: response headers"
    );
    let sent_body = &sent[sent_head_len..];
    if prefix_only {
        assert!(
            sent_body.starts_with(got.body()),
            "{what}: the body received is a prefix of the body sent"
        );
    } else {
        assert!(got.complete, "{what}: the whole answer arrived");
        assert!(got.body() == sent_body, "{what}: response body byte-exact");
    }
}
