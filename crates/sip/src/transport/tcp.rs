//! TCP: the acceptor and one task pair per connection (a reader framing
//! by Content-Length, a writer batching what is queued).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::{lock, Conn, Net};
use crate::message::StreamFramer;
use crate::request::{ConnId, Source, Transport};

pub(crate) async fn run_conn(
    net: Arc<Net>,
    id: ConnId,
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Batch what is queued into one write.
            let mut buf = BytesMut::from(&first[..]);
            while buf.len() < 64 * 1024 {
                match rx.try_recv() {
                    Ok(b) => buf.extend_from_slice(&b),
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let src = Source {
        transport: Transport::Tcp,
        remote,
        local,
        conn: Some(id),
    };
    let max = net.max_message_size;
    let mut buf = BytesMut::with_capacity(8192);
    // Keeps its place between reads: each byte is looked at once.
    let mut framer = StreamFramer::new();
    'conn: loop {
        loop {
            match framer.next_frame(&buf, max) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(n).freeze();
                    if frame.iter().all(|&c| c == b'\r' || c == b'\n') {
                        // RFC 5626 keep-alive: a double CRLF ping gets a
                        // single CRLF pong.
                        if frame.len() >= 4 {
                            let conns = lock(&net.conns);
                            if let Some(c) = conns.by_id.get(&id) {
                                let _ = c.tx.send(Bytes::from_static(b"\r\n"));
                            }
                        }
                        continue;
                    }
                    net.deliver(frame, src.clone());
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(conn = id, peer = %remote, error = %e, "closing TCP connection: cannot frame its stream");
                    break 'conn;
                }
            }
        }
        tokio::select! {
            _ = net.cancel.cancelled() => break,
            _ = tokio::time::sleep(net.tcp_idle) => {
                debug!(conn = id, peer = %remote, "closing idle TCP connection");
                break;
            }
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    debug!(conn = id, peer = %remote, error = %e, "TCP read error");
                    break;
                }
            },
        }
    }
    net.forget_conn(id);
    writer.abort();
    debug!(conn = id, peer = %remote, "TCP connection closed");
}

/// Accept TCP connections until the host stops, up to the configured
/// number open at once.
pub(crate) fn spawn_tcp_acceptor(
    net: Arc<Net>,
    listener: TcpListener,
    local: SocketAddr,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = net.cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((s, remote)) => {
                        if lock(&net.conns).by_id.len() >= net.max_tcp {
                            warn!(peer = %remote, max = net.max_tcp, "refusing TCP connection: too many open");
                            drop(s);
                            continue;
                        }
                        let id = net.next_conn.fetch_add(1, Ordering::Relaxed);
                        let (tx, rx) = mpsc::unbounded_channel();
                        {
                            let mut c = lock(&net.conns);
                            c.by_remote.insert(remote, id);
                            c.by_id.insert(id, Conn { tx, remote });
                        }
                        debug!(conn = id, peer = %remote, "TCP connection accepted");
                        tokio::spawn(run_conn(Arc::clone(&net), id, s, rx, remote, local));
                    }
                    Err(e) => {
                        warn!(local = %local, error = %e, "TCP accept failed");
                        // Out of descriptors: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    })
}
