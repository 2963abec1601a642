//! UDP: binding with a receive buffer, reading one datagram for a router
//! thread, and the task that sends what a non-blocking send could not take
//! at once.
//!
//! UDP sockets are not registered with the tokio runtime: the router
//! threads read them themselves (`host/child.rs`), as Kamailio's workers
//! do, so a datagram wakes one thread and is routed on it, with no
//! hand-off from a reader task. Sends are non-blocking from any thread;
//! only a send the socket buffer could not take waits, on the runtime.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use bytes::Bytes;
use lograte::warn_limited;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use super::Net;
use crate::request::{Source, Transport};

/// Bind a non-blocking UDP socket with the receive buffer asked for (best
/// effort: the system may give less).
pub(crate) fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Listen on IPv6 only, so a v4 socket on the same port can coexist.
        s.set_only_v6(true)?;
    }
    if recv_buffer > 0 {
        if let Err(e) = s.set_recv_buffer_size(recv_buffer) {
            tracing::warn!(local = %addr, error = %e, "cannot set the UDP receive buffer");
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// What one non-blocking read of a UDP socket gave.
pub(crate) enum Read {
    /// A datagram, copied out of the read buffer, with where it came from.
    Datagram(Bytes, Source),
    /// Nothing waiting (or an error, logged): go back to waiting.
    Empty,
    /// Datagrams were read and dropped (oversized); read again.
    Dropped,
}

/// Datagrams one `recvmmsg` takes at most.
///
/// A router thread that finds a burst waiting reads it with one system
/// call instead of one per datagram; what it read waits in the socket's
/// [`ReadAhead`], which every reader of the socket takes from first, in
/// the order read, under the socket's read gate. So nothing read is held
/// by one thread: a thread stuck in a route leaves the rest of its batch
/// to whichever thread reads next, as it leaves the socket's queue.
const READ_AHEAD: usize = 8;

/// The largest UDP payload there is (an IPv4 datagram's length field,
/// less its headers, is smaller still): a read buffer needs no more, so
/// a larger `max_message_size` does not grow it.
const UDP_PAYLOAD_MAX: usize = 65_535;

/// One UDP socket's datagrams read ahead of routing, and the buffers a
/// batch is read into. Kept under the socket's read gate.
pub(crate) struct ReadAhead {
    /// Read, not yet taken, oldest first.
    queue: std::collections::VecDeque<(Bytes, Source)>,
    /// [`READ_AHEAD`] slots of `slot` bytes (`max_message_size + 1`,
    /// capped by [`UDP_PAYLOAD_MAX`] + 1, so that an oversized datagram
    /// shows as longer than the maximum). Zeroed by the allocator's fresh
    /// pages: a slot's memory is touched only as far as datagrams fill it.
    bufs: Vec<u8>,
    slot: usize,
}

impl ReadAhead {
    /// Read-ahead space for datagrams of up to `max_message_size` bytes.
    pub(crate) fn new(max_message_size: usize) -> ReadAhead {
        let slot = max_message_size.min(UDP_PAYLOAD_MAX) + 1;
        ReadAhead {
            queue: std::collections::VecDeque::with_capacity(READ_AHEAD),
            bufs: vec![0u8; slot * READ_AHEAD],
            slot,
        }
    }
}

impl Net {
    /// The UDP sockets, for the router threads to wait on.
    pub(crate) fn udp_sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.udp.iter().map(|(_, s)| &**s)
    }

    /// The next datagram of UDP socket `i`, without blocking: the oldest
    /// one read ahead, else from a batch read now (see [`READ_AHEAD`]).
    /// `ahead` is the socket's own, held under its read gate.
    pub(crate) fn read_udp(&self, i: usize, ahead: &mut ReadAhead) -> Read {
        if let Some((data, src)) = ahead.queue.pop_front() {
            return Read::Datagram(data, src);
        }
        let (local, sock) = &self.udp[i];
        let mut got = [(0usize, None); READ_AHEAD];
        match udpbatch::recv(sock, &mut ahead.bufs, ahead.slot, &mut got) {
            Ok(n) => {
                for (k, &(len, from)) in got[..n].iter().enumerate() {
                    // A sender we cannot name (not IPv4 or IPv6) is not a
                    // peer we can answer; these sockets never give one.
                    let Some(from) = from else { continue };
                    if len > self.max_message_size {
                        let max = self.max_message_size;
                        warn_limited!(peer = %from, len, max, "dropping oversized datagram");
                        continue;
                    }
                    let src = Source {
                        transport: Transport::Udp,
                        remote: from,
                        local: *local,
                        conn: None,
                    };
                    let at = k * ahead.slot;
                    let data = Bytes::copy_from_slice(&ahead.bufs[at..at + len]);
                    super::wire_log::incoming(&data, &src);
                    ahead.queue.push_back((data, src));
                }
                match ahead.queue.pop_front() {
                    Some((data, src)) => Read::Datagram(data, src),
                    None => Read::Dropped,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Read::Dropped,
            Err(e) => {
                // An ICMP error of an earlier send (port unreachable) is
                // reported on the next read on Linux: not ours to act on.
                debug!(local = %local, error = %e, "UDP receive error");
                Read::Dropped
            }
        }
    }
}

/// Send the datagrams a non-blocking send could not take at once: wait
/// until the socket is writable (registered with the runtime only for that
/// wait, so incoming datagrams never wake the runtime).
pub(crate) fn spawn_udp_slow_sender(
    net: Arc<Net>,
    mut slow_rx: mpsc::UnboundedReceiver<(usize, SocketAddr, Bytes)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = net.cancel.cancelled() => break,
                m = slow_rx.recv() => match m {
                    Some((i, to, data)) => {
                        if let Some((_, s)) = net.udp.get(i) {
                            send_when_writable(s, to, &data).await;
                        }
                    }
                    None => break,
                },
            }
        }
    })
}

/// Send one datagram, waiting for the socket to be writable while it
/// says it would block: through a duplicate of the socket registered with
/// the runtime only for that wait, so incoming datagrams do not wake the
/// runtime otherwise.
async fn send_when_writable(sock: &UdpSocket, to: SocketAddr, data: &[u8]) {
    match sock.send_to(data, to) {
        Ok(_) => return,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            warn_limited!(to = %to, error = %e, "UDP send failed");
            return;
        }
    }
    let waiting = sock.try_clone().and_then(tokio::net::UdpSocket::from_std);
    let r = match waiting {
        Ok(s) => s.send_to(data, to).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        warn_limited!(to = %to, error = %e, "UDP send failed");
    }
}
