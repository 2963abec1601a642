//! The table of open TCP connections, and what senders and a connection's
//! tasks share about one of them: its queue, bounded in bytes, and the
//! count of requests still owed a final reply.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::request::ConnId;

/// One TCP connection as senders see it.
pub(crate) struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    pub(crate) remote: SocketAddr,
    /// Accepted from the peer (counted per address), not opened by us.
    inbound: bool,
    pub(crate) state: Arc<ConnState>,
}

/// What the senders, the reader and the writer of one connection share.
#[derive(Default)]
pub(crate) struct ConnState {
    /// Bytes handed to the queue and not yet taken by the writer: what
    /// `tcp_send_queue_limit` is checked against. The channel itself is
    /// unbounded so that a send never blocks a router thread; this count
    /// is what bounds it.
    queued: AtomicUsize,
    /// Cancelled when the queue passed its limit: the connection's tasks
    /// stop at once.
    pub(crate) cut: CancellationToken,
    /// Requests received that expect a reply (ACKs excluded), and final
    /// replies queued: a peer that half-closed is served until they match.
    requests: AtomicU64,
    finals: AtomicU64,
    /// Woken when a final reply is queued.
    answered: Notify,
}

impl ConnState {
    /// The writer took `n` bytes off the queue.
    pub(crate) fn taken(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    /// A frame was received: count it if it is a request that gets a reply.
    pub(crate) fn received(&self, frame: &[u8]) {
        if !frame.starts_with(b"SIP/") && !frame.starts_with(b"ACK ") {
            self.requests.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Wait until every request received has had a final reply queued.
    /// (A request the host drops unanswered, e.g. unparseable, keeps this
    /// waiting: the caller bounds the wait.)
    pub(crate) async fn all_answered(&self) {
        loop {
            let woken = self.answered.notified();
            if self.finals.load(Ordering::Acquire) >= self.requests.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }
}

/// Why [`Conn::queue`] did not take the data.
pub(crate) enum NotQueued {
    /// The connection's tasks have stopped: the data comes back.
    Closed(Bytes),
    /// The peer does not read: `queued` bytes wait already, and `len` more
    /// would pass the limit. The connection has been told to stop.
    OverLimit { queued: usize, len: usize },
}

/// A final reply (status 200 to 699), by its first bytes.
fn is_final_reply(data: &[u8]) -> bool {
    data.len() > 8 && data.starts_with(b"SIP/") && matches!(data.get(8), Some(b'2'..=b'6'))
}

impl Conn {
    /// A connection and the receiving end of its queue, for its writer.
    pub(crate) fn new(remote: SocketAddr, inbound: bool) -> (Conn, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            tx,
            remote,
            inbound,
            state: Arc::default(),
        };
        (conn, rx)
    }

    /// Queue `data` for the writer, without waiting, unless `limit` bytes
    /// would then be waiting. One message always fits an empty queue, so a
    /// single reply larger than the limit does not cut a peer that reads.
    pub(crate) fn queue(&self, data: Bytes, limit: usize) -> Result<(), NotQueued> {
        let len = data.len();
        let before = self.state.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > limit {
            self.state.queued.fetch_sub(len, Ordering::AcqRel);
            self.state.cut.cancel();
            return Err(NotQueued::OverLimit {
                queued: before,
                len,
            });
        }
        let fin = is_final_reply(&data);
        match self.tx.send(data) {
            Ok(()) => {
                if fin {
                    self.state.finals.fetch_add(1, Ordering::AcqRel);
                    self.state.answered.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                self.state.queued.fetch_sub(len, Ordering::AcqRel);
                Err(NotQueued::Closed(e.0))
            }
        }
    }
}

/// Every open TCP connection, by id and by peer address, and how many
/// were accepted from each IP address.
#[derive(Default)]
pub(crate) struct Conns {
    pub(crate) by_id: HashMap<ConnId, Conn>,
    pub(crate) by_remote: HashMap<SocketAddr, ConnId>,
    accepted_from: HashMap<IpAddr, usize>,
}

impl Conns {
    pub(crate) fn insert(&mut self, id: ConnId, conn: Conn) {
        if conn.inbound {
            *self.accepted_from.entry(conn.remote.ip()).or_default() += 1;
        }
        self.by_remote.insert(conn.remote, id);
        self.by_id.insert(id, conn);
    }

    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let c = self.by_id.remove(&id)?;
        if self.by_remote.get(&c.remote) == Some(&id) {
            self.by_remote.remove(&c.remote);
        }
        if c.inbound {
            if let Some(n) = self.accepted_from.get_mut(&c.remote.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.accepted_from.remove(&c.remote.ip());
                }
            }
        }
        Some(c)
    }

    /// Connections accepted from `ip` and still open.
    pub(crate) fn accepted_from(&self, ip: IpAddr) -> usize {
        self.accepted_from.get(&ip).copied().unwrap_or(0)
    }

    pub(crate) fn clear(&mut self) {
        self.by_id.clear();
        self.by_remote.clear();
        self.accepted_from.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_bytes_and_cuts_once_past_it() {
        let (c, mut rx) = Conn::new("127.0.0.1:1".parse().unwrap(), true);
        let big = Bytes::from(vec![b'x'; 1000]);
        // One message always fits an empty queue.
        assert!(c.queue(big.clone(), 100).is_ok());
        assert!(matches!(
            c.queue(big.clone(), 1500),
            Err(NotQueued::OverLimit {
                queued: 1000,
                len: 1000
            })
        ));
        assert!(c.state.cut.is_cancelled());
        // The writer takes it off: room again.
        let got = rx.try_recv().unwrap();
        c.state.taken(got.len());
        assert!(c.queue(big, 1500).is_ok());
        drop(rx);
        assert!(matches!(
            c.queue(Bytes::from_static(b"x"), 1500),
            Err(NotQueued::Closed(_))
        ));
    }

    #[test]
    fn requests_are_answered_when_finals_match() {
        let (c, _rx) = Conn::new("127.0.0.1:1".parse().unwrap(), false);
        c.state.received(b"OPTIONS sip:a SIP/2.0\r\n");
        c.state.received(b"ACK sip:a SIP/2.0\r\n");
        c.state.received(b"SIP/2.0 200 OK\r\n");
        let q = |d: &'static [u8]| c.queue(Bytes::from_static(d), 1 << 20).is_ok();
        assert!(q(b"SIP/2.0 100 Trying\r\n") && q(b"\r\n"));
        assert_eq!(c.state.finals.load(Ordering::Acquire), 0);
        assert!(q(b"SIP/2.0 486 Busy Here\r\n"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), c.state.all_answered())
                .await
                .expect("one request, one final");
        });
    }

    #[test]
    fn accepted_connections_are_counted_per_address() {
        let mut t = Conns::default();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        t.insert(1, Conn::new(a, true).0);
        t.insert(2, Conn::new(b, true).0);
        t.insert(3, Conn::new("127.0.0.1:3".parse().unwrap(), false).0);
        assert_eq!(t.accepted_from(a.ip()), 2);
        assert!(t.remove(1).is_some() && t.remove(1).is_none());
        assert_eq!(t.accepted_from(a.ip()), 1);
        t.remove(2);
        assert_eq!(t.accepted_from(a.ip()), 0);
        assert!(t.accepted_from.is_empty());
    }
}
