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
    /// A datagram, copied out of `buf`, with where it came from.
    Datagram(Bytes, Source),
    /// Nothing waiting (or an error, logged): go back to waiting.
    Empty,
    /// A datagram was read and dropped (oversized); read again.
    Dropped,
}

impl Net {
    /// The UDP sockets, for the router threads to wait on.
    pub(crate) fn udp_sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        self.udp.iter().map(|(_, s)| &**s)
    }

    /// Read one datagram from UDP socket `i` without blocking, into `buf`
    /// (at least `max_message_size + 1` bytes long, to tell an oversized
    /// datagram from one of exactly the maximum size).
    pub(crate) fn read_udp(&self, i: usize, buf: &mut [u8]) -> Read {
        let (local, sock) = &self.udp[i];
        match sock.recv_from(buf) {
            Ok((n, from)) if n > self.max_message_size => {
                let max = self.max_message_size;
                warn_limited!(peer = %from, len = n, max, "dropping oversized datagram");
                Read::Dropped
            }
            Ok((n, from)) => {
                let src = Source {
                    transport: Transport::Udp,
                    remote: from,
                    local: *local,
                    conn: None,
                };
                let data = Bytes::copy_from_slice(&buf[..n]);
                super::wire_log::incoming(&data, &src);
                Read::Datagram(data, src)
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

    /// The size of buffer [`Net::read_udp`] needs.
    pub(crate) fn udp_buffer_len(&self) -> usize {
        self.max_message_size + 1
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
