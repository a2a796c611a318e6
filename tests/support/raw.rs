//! A byte-exact HTTP/1.1 client on a plain `TcpStream`: requests go out exactly as written
//! (header order and case kept), responses are read off the wire as sent (de-chunked, not
//! decompressed until asked), keep-alive included.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{gunzip, inflate};

/// A response read off the wire by [`RawConn`].
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// Header lines in received order, original case.
    pub headers: Vec<(String, String)>,
    /// The body as sent (de-chunked, NOT decompressed).
    pub body: Vec<u8>,
}

#[allow(dead_code)]
impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body after undoing `Content-Encoding: gzip|deflate`.
    pub fn decoded_body(&self) -> Vec<u8> {
        match self
            .header("content-encoding")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("gzip") => gunzip(&self.body),
            Some("deflate") => inflate(&self.body),
            _ => self.body.clone(),
        }
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.decoded_body()).into_owned()
    }

    /// The (decoded) body as JSON; panics with status and body text otherwise.
    pub fn json(&self) -> Value {
        let body = self.decoded_body();
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "response {} {}: body is not JSON ({e}): {:?}",
                self.status,
                self.reason,
                String::from_utf8_lossy(&body)
            )
        })
    }
}

/// A plain TCP connection speaking HTTP/1.1 byte for byte (keep-alive capable).
#[allow(dead_code)]
pub struct RawConn {
    stream: BufReader<TcpStream>,
    host: String,
}

#[allow(dead_code)]
impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let _ = tcp.set_nodelay(true);
        RawConn {
            stream: BufReader::new(tcp),
            host: addr.to_string(),
        }
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let stream = self.stream.get_mut();
        stream
            .write_all(bytes)
            .await
            .unwrap_or_else(|e| panic!("write to {}: {e}", self.host));
        stream
            .flush()
            .await
            .unwrap_or_else(|e| panic!("flush to {}: {e}", self.host));
    }

    /// Sends a request (headers in the given order and case; `Host` and `Content-Length` are
    /// added unless present) and reads the response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !has("host") {
            head.push_str(&format!("Host: {}\r\n", self.host));
        }
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        let needs_length = !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH");
        if needs_length && !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes).await;
        self.read_response_for(method).await
    }

    /// Reads one response (skipping `100 Continue`).
    pub async fn read_response(&mut self) -> RawResponse {
        self.read_response_for("GET").await
    }

    /// Reads one response to a request of `method` (a HEAD response has no body).
    pub async fn read_response_for(&mut self, method: &str) -> RawResponse {
        loop {
            let status_line = self.read_line().await;
            if status_line.is_empty() {
                panic!("{}: connection closed before a response arrived", self.host);
            }
            let mut parts = status_line.trim_end().splitn(3, ' ');
            let _version = parts.next();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{}: bad status line {status_line:?}", self.host));
            let reason = parts.next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let line = self.read_line().await;
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    break;
                }
                if let Some((n, v)) = line.split_once(':') {
                    headers.push((n.to_string(), v.trim().to_string()));
                }
            }
            if status == 100 {
                continue;
            }
            let mut resp = RawResponse {
                status,
                reason,
                headers,
                body: Vec::new(),
            };
            if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304
            {
                return resp;
            }
            let chunked = resp
                .header("transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            if chunked {
                resp.body = self.read_chunked().await;
            } else if let Some(len) = resp
                .header("content-length")
                .and_then(|v| v.parse::<usize>().ok())
            {
                let mut body = vec![0u8; len];
                self.stream
                    .read_exact(&mut body)
                    .await
                    .unwrap_or_else(|e| panic!("{}: reading {len} body bytes: {e}", self.host));
                resp.body = body;
            } else {
                self.stream
                    .read_to_end(&mut resp.body)
                    .await
                    .unwrap_or_else(|e| panic!("{}: reading body to EOF: {e}", self.host));
            }
            return resp;
        }
    }

    async fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        self.stream
            .read_until(b'\n', &mut line)
            .await
            .unwrap_or_else(|e| panic!("{}: read: {e}", self.host));
        String::from_utf8_lossy(&line).into_owned()
    }

    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await;
            let hex = line
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&hex, 16)
                .unwrap_or_else(|_| panic!("{}: bad chunk size line {line:?}", self.host));
            if size == 0 {
                while !self.read_line().await.trim().is_empty() {}
                return body;
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.stream
                .read_exact(&mut body[start..])
                .await
                .unwrap_or_else(|e| panic!("{}: reading chunk: {e}", self.host));
            self.read_line().await;
        }
    }

    /// The underlying stream (e.g. to check that the server closes the connection).
    pub fn into_inner(self) -> BufReader<TcpStream> {
        self.stream
    }
}

/// One request on a fresh connection; see [`RawConn::request`].
#[allow(dead_code)]
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    RawConn::connect(addr)
        .await
        .request(method, path, headers, body)
        .await
}
