//! One accepted client connection as Pingora's transport ([`IO`]): the TCP stream with a
//! one-segment write buffer, as Pingora's own transport has (so that a response head and a
//! small body leave in one write and one segment, not two) but held only while a response is
//! being written (freed at each flush, so an idle connection holds none), no read buffer
//! (Pingora's HTTP/1 session keeps the one it needs), and the digests Pingora reads (peer
//! address for `X-Forwarded-For`, connection time). While Pingora reads a keep-alive
//! request's head, the stream watches it go by and holds it to its deadline (see
//! [`ClientStream::expect_head`]).

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::head::Scan;
use crate::stats::Stats;

/// Pingora's `DEFAULT_L4_WRITE_BUFFER_SIZE`: one TCP segment on a 1 500-byte MTU. Writes as
/// large as this or larger go straight to the socket.
const WRITE_BUFFER: usize = 1460;

/// A client connection handed to Pingora. posthook keeps it between requests and takes it
/// back from Pingora after each one (see [`super::serve`]); it is made only once a first
/// request head is complete, so a connection that never sends one costs no buffer.
#[derive(Debug)]
pub struct ClientStream {
    tcp: TcpStream,
    /// The connection's one timer: the deadline of the head being read, when there is one.
    timer: Pin<Box<Sleep>>,
    /// Set while a request head is being read through this stream.
    head: Option<Scan>,
    stats: Arc<Stats>,
    /// Writes not yet sent (at most [`WRITE_BUFFER`] bytes); no allocation when empty.
    pending: Vec<u8>,
    digest: Arc<SocketDigest>,
    established: SystemTime,
}

impl ClientStream {
    /// `established`: when the connection was accepted; `timer`: the connection's timer.
    pub fn new(
        tcp: TcpStream,
        peer: std::net::SocketAddr,
        established: SystemTime,
        timer: Pin<Box<Sleep>>,
        stats: Arc<Stats>,
    ) -> Self {
        let digest = SocketDigest::from_raw_fd(tcp.as_raw_fd());
        // A fresh cell: setting it cannot fail.
        let _ = digest.peer_addr.set(Some(SocketAddr::Inet(peer)));
        ClientStream {
            tcp,
            timer,
            head: None,
            stats,
            pending: Vec::new(),
            digest: Arc::new(digest),
            established,
        }
    }

    /// The socket and the connection's timer, for waiting on them together.
    pub fn parts(&mut self) -> (&TcpStream, &mut Pin<Box<Sleep>>) {
        (&self.tcp, &mut self.timer)
    }

    /// The next bytes read are a request head, which must be complete by `deadline` (or by
    /// the timer's deadline as it stands, without one): a read after it fails, and the
    /// connection ends, however slowly the head trickles in.
    pub fn expect_head(&mut self, deadline: Option<Instant>) {
        if let Some(d) = deadline {
            self.timer.as_mut().reset(d);
        }
        self.head = Some(Scan::default());
    }

    /// Sends what is pending; then frees the buffer.
    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.pending.len() {
                break Ok(());
            }
            match Pin::new(&mut self.tcp).poll_write(cx, &self.pending[sent..]) {
                Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Err(e),
                Poll::Pending => {
                    self.pending.drain(..sent);
                    return Poll::Pending;
                }
            }
        };
        self.pending = Vec::new();
        Poll::Ready(result)
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(scan) = &mut this.head else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        if this.timer.as_mut().poll(cx).is_ready() {
            this.head = None;
            super::head::header_timeout(&this.stats);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no complete request head in time",
            )));
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        if scan.feed(&buf.filled()[before..]) {
            this.head = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    /// Small writes are gathered until a flush, or until they would not fit in one segment;
    /// a large one goes straight to the socket after what is pending.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len == 0 {
            return Poll::Ready(Ok(0));
        }
        if self.pending.len() + len > WRITE_BUFFER {
            std::task::ready!(self.poll_send_pending(cx))?;
        }
        if len >= WRITE_BUFFER {
            return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
        }
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(WRITE_BUFFER);
        }
        for b in bufs {
            self.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send_pending(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// What Pingora wrote but did not flush before letting the connection go still leaves, as far
/// as the socket takes it without waiting: Pingora drops the connection unflushed when an
/// upstream fails in the middle of an answer, and the client must see that answer cut where
/// the upstream cut it, not lose what had already come.
impl Drop for ClientStream {
    fn drop(&mut self) {
        let mut sent = 0;
        while sent < self.pending.len() {
            match self.tcp.try_write(&self.pending[sent..]) {
                Ok(n) if n > 0 => sent += n,
                _ => break,
            }
        }
    }
}

#[async_trait]
impl Shutdown for ClientStream {
    async fn shutdown(&mut self) {
        // The peer may be gone already; nothing to do about it.
        let _ = AsyncWriteExt::shutdown(self).await;
    }
}

impl UniqueID for ClientStream {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for ClientStream {}

/// Not offered: Pingora peeks only to detect cleartext HTTP/2, which posthook does not serve.
impl Peek for ClientStream {}

impl GetTimingDigest for ClientStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            ..TimingDigest::default()
        })]
    }
}

impl GetProxyDigest for ClientStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for ClientStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (ClientStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, addr) = listener.accept().await.unwrap();
        let timer = Box::pin(tokio::time::sleep(Duration::from_secs(60)));
        let stats = Arc::new(Stats::default());
        (
            ClientStream::new(tcp, addr, SystemTime::now(), timer, stats),
            peer,
        )
    }

    /// What the peer has received so far (waits 50 ms for it).
    async fn received(peer: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 1024];
        match tokio::time::timeout(Duration::from_millis(50), peer.read(&mut buf)).await {
            Ok(n) => buf[..n.unwrap()].to_vec(),
            Err(_) => Vec::new(),
        }
    }

    #[tokio::test]
    async fn small_writes_leave_together_at_the_flush_and_the_buffer_is_freed() {
        let (mut client, mut peer) = pair().await;
        client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        client.write_all(b"ok").await.unwrap();
        assert_eq!(received(&mut peer).await, b"");
        client.flush().await.unwrap();
        assert_eq!(received(&mut peer).await, b"HTTP/1.1 200 OK\r\n\r\nok");
        assert_eq!(client.pending.capacity(), 0);
    }

    #[tokio::test]
    async fn a_large_write_follows_what_is_pending_in_order() {
        let (mut client, mut peer) = pair().await;
        let big = vec![b'x'; 10_000];
        client.write_all(b"head:").await.unwrap();
        client.write_all(&big).await.unwrap();
        client.write_all(b":tail").await.unwrap();
        client.flush().await.unwrap();
        drop(client);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 10_010);
        assert!(got.starts_with(b"head:x") && got.ends_with(b"x:tail"));
    }

    #[tokio::test]
    async fn what_was_written_leaves_when_the_stream_is_dropped_unflushed() {
        let (mut client, mut peer) = pair().await;
        client
            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"id\"")
            .await
            .unwrap();
        drop(client);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(
            got,
            b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\n{\"id\""
        );
    }
}
