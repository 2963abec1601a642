//! The one netstring test client of this workspace (feature `test-client`):
//! what every crate's tests use to speak to an event socket over a real
//! connection, plain or TLS.
//!
//! It frames and reads with the crate's own [`NetstringCodec`], so a test
//! client and the server can never disagree on framing by accident; a
//! malformed frame from the server fails the test. Every wait is bounded by
//! [`WAIT`] and a missed deadline panics with what was awaited, so a broken
//! server fails a test instead of hanging it. [`BlockingClient`] is the same
//! client for tests without a tokio runtime (the program's tests).

use crate::codec::NetstringCodec;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// Longest any single wait of a test client may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// A netstring client over any byte stream (a `TcpStream` by default, or a
/// TLS stream). Methods panic on I/O errors other than a close, since they
/// serve tests.
#[derive(Debug)]
pub struct TestClient<S = TcpStream> {
    /// The connection, for tests that need to act on it directly
    /// (half-close, socket options).
    pub stream: S,
    buf: BytesMut,
    codec: NetstringCodec,
}

impl TestClient<TcpStream> {
    /// Connect to `addr`; panics if that takes longer than [`WAIT`].
    pub async fn connect(addr: SocketAddr) -> TestClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        TestClient::new(stream)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TestClient<S> {
    /// A client over an established stream.
    pub fn new(stream: S) -> TestClient<S> {
        TestClient {
            stream,
            buf: BytesMut::new(),
            // Tests check the server's own limits, so the client takes any
            // frame the server sends.
            codec: NetstringCodec::new(usize::MAX >> 1),
        }
    }

    /// Send `msg` as one netstring.
    pub async fn send(&mut self, msg: &[u8]) {
        self.send_raw(&NetstringCodec::frame(msg)).await;
    }

    /// Send bytes as they are (broken frames, keep-alives, split frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send to server");
        self.stream.flush().await.expect("flush to server");
    }

    /// The next frame, or `None` when the server closed the connection.
    /// Panics if neither happens within [`WAIT`], or if the server closes in
    /// the middle of a frame.
    pub async fn recv(&mut self) -> Option<Bytes> {
        match self.recv_within(WAIT).await {
            Ok(frame) => frame,
            Err(_) => panic!("no frame and no close within {WAIT:?}"),
        }
    }

    /// Like [`TestClient::recv`], but `Err(())` when nothing arrived within
    /// `limit`. Bytes read before the limit are kept for the next call.
    #[allow(clippy::result_unit_err)]
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<Bytes>, ()> {
        tokio::time::timeout(limit, self.next_frame())
            .await
            .map_err(|_| ())
    }

    /// The next frame as UTF-8 text (`None` when closed).
    pub async fn recv_text(&mut self) -> Option<String> {
        self.recv()
            .await
            .map(|f| String::from_utf8(f.to_vec()).expect("the server sent UTF-8"))
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self
                .codec
                .decode(&mut self.buf)
                .expect("the server sends valid netstrings")
            {
                return Some(f);
            }
            // `read_buf` keeps what it read if the timeout above cancels it.
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => {
                    assert!(
                        self.buf.is_empty(),
                        "connection closed inside a frame: {:?}",
                        self.buf
                    );
                    return None;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Expect the server to close this connection with no more frames.
    pub async fn expect_closed(&mut self) {
        if let Some(f) = self.recv().await {
            panic!("expected the server to close, got frame {f:?}");
        }
    }

    /// True when no frame (and no close) arrives within `d`.
    pub async fn quiet_for(&mut self, d: Duration) -> bool {
        self.recv_within(d).await.is_err() && self.buf.is_empty()
    }

    /// Read raw bytes (for `netstring_format = 0`) until `n` arrived.
    pub async fn recv_raw_exact(&mut self, n: usize) -> Bytes {
        tokio::time::timeout(WAIT, async {
            while self.buf.len() < n {
                let got = self.stream.read_buf(&mut self.buf).await.expect("read");
                assert!(got > 0, "closed after {} of {n} bytes", self.buf.len());
            }
            self.buf.split_to(n).freeze()
        })
        .await
        .unwrap_or_else(|_| panic!("{n} raw bytes within {WAIT:?}"))
    }
}

/// [`TestClient`] for tests that run no tokio runtime of their own: each
/// call runs the async client to completion on a private single-thread
/// runtime.
#[derive(Debug)]
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    inner: TestClient,
}

impl BlockingClient {
    /// Connect to `addr`.
    pub fn connect(addr: SocketAddr) -> BlockingClient {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a test runtime");
        let inner = rt.block_on(TestClient::connect(addr));
        BlockingClient { rt, inner }
    }

    /// Send `msg` as one netstring.
    pub fn send(&mut self, msg: &str) {
        self.rt.block_on(self.inner.send(msg.as_bytes()));
    }

    /// Send bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.rt.block_on(self.inner.send_raw(bytes));
    }

    /// The next message as text, or `None` when the server closed.
    pub fn recv(&mut self) -> Option<String> {
        self.rt.block_on(self.inner.recv_text())
    }

    /// True when no message arrives within `d`.
    pub fn quiet_for(&mut self, d: Duration) -> bool {
        self.rt.block_on(self.inner.quiet_for(d))
    }

    /// The async client, for what this wrapper does not offer.
    pub fn get_mut(&mut self) -> &mut TestClient {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_close_is_seen() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            // Two frames split across writes, a keep-alive between them.
            s.write_all(b"5:hel").await.unwrap();
            s.write_all(b"lo,0:,3:a,b,").await.unwrap();
            let mut got = vec![0u8; 7];
            s.read_exact(&mut got).await.unwrap();
            got
        });
        let mut c = TestClient::connect(addr).await;
        assert_eq!(c.recv().await.unwrap(), Bytes::from_static(b"hello"));
        assert_eq!(c.recv().await.unwrap(), Bytes::from_static(b""));
        assert_eq!(c.recv_text().await.unwrap(), "a,b");
        c.send(b"ping").await;
        assert_eq!(server.await.unwrap(), b"4:ping,");
        c.expect_closed().await;
    }

    #[tokio::test]
    #[should_panic(expected = "closed inside a frame")]
    async fn a_close_inside_a_frame_fails_the_test() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"10:short").await.unwrap();
        });
        let mut c = TestClient::connect(addr).await;
        c.recv().await;
    }

    #[test]
    fn blocking_client_sees_silence_then_a_frame() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            use std::io::Write;
            let (mut s, _) = listener.accept().unwrap();
            go_rx.recv().unwrap();
            s.write_all(b"2:hi,").unwrap();
        });
        let mut c = BlockingClient::connect(addr);
        assert!(c.quiet_for(Duration::from_millis(50)));
        go_tx.send(()).unwrap();
        assert_eq!(c.recv().as_deref(), Some("hi"));
        server.join().unwrap();
        assert_eq!(c.recv(), None);
    }
}
