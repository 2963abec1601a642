//! UDP: binding with a receive buffer, the readers, and the task that
//! sends what a non-blocking send could not take at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use lograte::warn_limited;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Net;
use crate::request::{Source, Transport};

/// Bind a UDP socket with the receive buffer asked for (best effort: the
/// system may give less).
pub(crate) fn bind_udp(addr: SocketAddr, recv_buffer: usize) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Listen on IPv6 only, so a v4 socket on the same port can coexist.
        s.set_only_v6(true)?;
    }
    if recv_buffer > 0 {
        if let Err(e) = s.set_recv_buffer_size(recv_buffer) {
            warn!(local = %addr, error = %e, "cannot set the UDP receive buffer");
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Read datagrams off one UDP socket until the host stops.
pub(crate) fn spawn_udp_reader(
    net: Arc<Net>,
    sock: Arc<UdpSocket>,
    local: SocketAddr,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let max = net.max_message_size;
        // One byte more than allowed, to tell an oversized datagram from
        // one of exactly the maximum size.
        let mut buf = vec![0u8; max + 1];
        loop {
            tokio::select! {
                _ = net.cancel.cancelled() => break,
                r = sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) if n > max => {
                        warn_limited!(peer = %from, len = n, max, "dropping oversized datagram");
                    }
                    Ok((n, from)) => {
                        let src = Source { transport: Transport::Udp, remote: from, local, conn: None };
                        net.deliver(Bytes::copy_from_slice(&buf[..n]), src);
                    }
                    Err(e) => debug!(local = %local, error = %e, "UDP receive error"),
                },
            }
        }
    })
}

/// Send the datagrams a non-blocking send could not take at once.
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
                            if let Err(e) = s.send_to(&data, to).await {
                                warn_limited!(to = %to, error = %e, "UDP send failed");
                            }
                        }
                    }
                    None => break,
                },
            }
        }
    })
}
