//! TCP: the acceptor and one task pair per connection (a reader framing
//! by Content-Length, a writer batching what is queued).
//!
//! What a hostile peer could do, and what stops it: not reading its
//! replies (the queue is bounded in bytes, `tcp_send_queue_limit`, see
//! `conn.rs`); sending a byte now and then (a message must arrive whole
//! within `tcp_message_timeout_ms`); opening every slot from one address
//! (`max_tcp_connections_per_ip`); sending one byte per segment (framing
//! resumes where it stopped). A peer that half-closes after its requests
//! still gets their replies on the same connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lograte::warn_limited;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use super::conn::{Conn, ConnState};
use super::{lock, Net};
use crate::message::StreamFramer;
use crate::request::{ConnId, Source, Transport};

/// Why the reader stopped.
enum End {
    /// The peer closed its sending side: finish the replies owed, then close.
    Eof,
    /// Anything else (shutdown, cut, timeout, error): close now.
    Now,
}

/// Write what is queued, batching into one write what is waiting at once,
/// until the queue is closed (the connection left the table) and empty.
async fn write_queue(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    state: Arc<ConnState>,
) {
    while let Some(first) = rx.recv().await {
        state.taken(first.len());
        let mut buf = BytesMut::from(&first[..]);
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(b) => {
                    state.taken(b.len());
                    buf.extend_from_slice(&b);
                }
                Err(_) => break,
            }
        }
        if wr.write_all(&buf).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

pub(crate) async fn run_conn(
    net: Arc<Net>,
    id: ConnId,
    stream: TcpStream,
    rx: mpsc::UnboundedReceiver<Bytes>,
    state: Arc<ConnState>,
    remote: SocketAddr,
    local: SocketAddr,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut writer = tokio::spawn(write_queue(wr, rx, Arc::clone(&state)));
    let end = read_messages(&net, id, rd, &state, remote, local).await;
    if let End::Eof = end {
        // Half-closed (RFC 793 allows it, and a peer may well send its
        // requests then shut down its side): it still gets the replies to
        // what it sent, here, not on a new connection to its Via. Wait for
        // them, bounded by the idle timeout, since a request the host
        // drops unanswered would wait for ever.
        tokio::select! {
            _ = net.cancel.cancelled() => {}
            _ = state.cut.cancelled() => {}
            _ = tokio::time::sleep(net.tcp_idle) => {
                debug!(conn = id, peer = %remote, "half-closed TCP connection: replies still owed after the idle timeout");
            }
            _ = state.all_answered() => {}
        }
    }
    // Out of the table: nothing more is queued, so the writer ends once
    // it has written what is queued.
    net.forget_conn(id);
    if let End::Eof = end {
        if !state.cut.is_cancelled()
            && tokio::time::timeout(net.tcp_idle, &mut writer)
                .await
                .is_ok()
        {
            debug!(conn = id, peer = %remote, "TCP connection closed after its replies");
            return;
        }
    }
    writer.abort();
    debug!(conn = id, peer = %remote, "TCP connection closed");
}

/// Read and frame until the peer closes its side or the connection must
/// close: shutdown, cut, idle or message timeout, framing error.
async fn read_messages(
    net: &Net,
    id: ConnId,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    state: &ConnState,
    remote: SocketAddr,
    local: SocketAddr,
) -> End {
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
    let mut idle_at = Instant::now() + net.tcp_idle;
    // When the message being received must be whole: set at its first
    // byte, not moved by later ones, so bytes trickled slowly cannot hold
    // the connection.
    let mut message_due: Option<Instant> = None;
    loop {
        loop {
            match framer.next_frame(&buf, max) {
                Ok(Some(n)) => {
                    let frame = buf.split_to(n).freeze();
                    message_due = None;
                    if frame.iter().all(|&c| c == b'\r' || c == b'\n') {
                        // RFC 5626 keep-alive: a double CRLF ping gets a
                        // single CRLF pong.
                        if frame.len() >= 4 {
                            let conns = lock(&net.conns);
                            if let Some(c) = conns.by_id.get(&id) {
                                let _ = c.queue(Bytes::from_static(b"\r\n"), net.send_queue_limit);
                            }
                        }
                        continue;
                    }
                    state.received(&frame);
                    net.deliver(frame, src.clone());
                }
                Ok(None) => break,
                Err(e) => {
                    warn_limited!(conn = id, peer = %remote, error = %e, "closing TCP connection: cannot frame its stream");
                    return End::Now;
                }
            }
        }
        if !buf.is_empty() && message_due.is_none() {
            message_due = Some(Instant::now() + net.message_timeout);
        }
        let wake = message_due.map_or(idle_at, |m| m.min(idle_at));
        tokio::select! {
            _ = net.cancel.cancelled() => return End::Now,
            _ = state.cut.cancelled() => return End::Now,
            _ = tokio::time::sleep_until(wake) => {
                if message_due.is_some_and(|m| m <= Instant::now()) {
                    warn_limited!(
                        conn = id,
                        peer = %remote,
                        received = buf.len(),
                        timeout_ms = net.message_timeout.as_millis() as u64,
                        "closing TCP connection: a message did not arrive whole within tcp_message_timeout_ms"
                    );
                    return End::Now;
                }
                if idle_at <= Instant::now() {
                    debug!(conn = id, peer = %remote, "closing idle TCP connection");
                    return End::Now;
                }
            }
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return End::Eof,
                Ok(_) => idle_at = Instant::now() + net.tcp_idle,
                Err(e) => {
                    debug!(conn = id, peer = %remote, error = %e, "TCP read error");
                    return End::Now;
                }
            },
        }
    }
}

/// Accept TCP connections until the host stops, up to the configured
/// number open at once, and per address.
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
                    Ok((s, remote)) => admit(&net, s, remote, local),
                    Err(e) => {
                        warn_limited!(local = %local, error = %e, "TCP accept failed");
                        // Out of descriptors: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    })
}

/// Serve an accepted connection, or close it at once when the host or
/// its address has all the connections it may have.
fn admit(net: &Arc<Net>, s: TcpStream, remote: SocketAddr, local: SocketAddr) {
    let id = net.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, rx) = Conn::new(remote, true);
    let state = Arc::clone(&conn.state);
    {
        let mut c = lock(&net.conns);
        if c.by_id.len() >= net.max_tcp {
            drop(c);
            warn_limited!(peer = %remote, max = net.max_tcp, "refusing TCP connection: max_tcp_connections open");
            return;
        }
        let from_ip = c.accepted_from(remote.ip());
        if from_ip >= net.max_tcp_per_ip {
            drop(c);
            warn_limited!(peer = %remote, open = from_ip, max = net.max_tcp_per_ip, "refusing TCP connection: max_tcp_connections_per_ip open from its address");
            return;
        }
        c.insert(id, conn);
    }
    debug!(conn = id, peer = %remote, "TCP connection accepted");
    tokio::spawn(run_conn(Arc::clone(net), id, s, rx, state, remote, local));
}
