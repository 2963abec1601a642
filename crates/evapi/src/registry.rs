//! The table of connected clients: connection indexes and tags.
//!
//! Connection indexes are small integers, lowest free first, reused after a
//! client leaves (as in the original, where they index a fixed array). Tags
//! are kept in a map from tag to the sorted indexes of its clients, so a
//! multicast or unicast by tag never scans the clients that lack the tag.

use crate::outbox::{ChunkPool, Outbox};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::Notify;

/// Longest tag accepted, in bytes (the original refuses 64 and more).
pub const MAX_TAG_LEN: usize = 63;

/// Why a connection ended, for the log and for callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its side.
    PeerClosed,
    /// Reading or writing failed (reset, broken pipe, ...).
    Io(String),
    /// The client sent something that is not a valid frame.
    Protocol(String),
    /// The client fell behind by more than the per-client queue limit.
    QueueLimit(usize),
    /// A write to the client took longer than `send_data_timeout`.
    SendTimeout(std::time::Duration),
    /// The event handler (script) called close().
    Closed,
    /// An operator closed it (the `evapi.close` RPC method).
    Operator,
    /// The event socket is shutting down.
    Shutdown,
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by the client"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::QueueLimit(n) => {
                write!(f, "slow consumer: more than {n} bytes queued and not read")
            }
            CloseReason::SendTimeout(t) => write!(
                f,
                "slow consumer: a write waited more than {} µs (send_data_timeout)",
                t.as_micros()
            ),
            CloseReason::Closed => f.write_str("closed by the event handler"),
            CloseReason::Operator => f.write_str("closed by an operator (evapi.close)"),
            CloseReason::Shutdown => f.write_str("shutting down"),
        }
    }
}

/// One connected client, shared by its connection task, the registry and
/// the callers of relay.
#[derive(Debug)]
pub(crate) struct Client {
    /// Unique for the life of the process; a connection index is not (it
    /// is reused), so stale references check this before acting.
    pub id: u64,
    pub conidx: usize,
    pub peer: SocketAddr,
    pub outbox: Outbox,
    /// When it became a client.
    pub connected_at: SystemTime,
    /// Messages read from it (keep-alives not counted), and their bytes
    /// (payload, without framing). Relaxed: read only for `evapi.list`.
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    close_reason: Mutex<Option<CloseReason>>,
    close_wake: Notify,
    /// Messages queued for or inside message-received; connection-closed
    /// waits for them, so it is always the last event of a connection.
    in_flight: AtomicUsize,
    drained: Notify,
}

impl Client {
    pub fn new(
        id: u64,
        conidx: usize,
        peer: SocketAddr,
        queue_limit: usize,
        chunks: Arc<ChunkPool>,
    ) -> Self {
        Client {
            id,
            conidx,
            peer,
            outbox: Outbox::new(queue_limit, chunks),
            connected_at: SystemTime::now(),
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            close_reason: Mutex::new(None),
            close_wake: Notify::new(),
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    /// Wait until every queued message of this client has been handled.
    pub async fn messages_drained(&self) {
        while self.in_flight.load(Ordering::Acquire) > 0 {
            self.drained.notified().await;
        }
    }

    /// Ask the connection to end; the first reason given wins.
    pub fn request_close(&self, reason: CloseReason) {
        let mut r = self.close_reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        self.close_wake.notify_one();
    }

    /// Wait until a close is requested, and say why.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(r) = self.close_reason() {
                return r;
            }
            self.close_wake.notified().await;
        }
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A message of a client on its way to message-received: counted from
/// creation until dropped (handled, or lost with a cancelled send), so the
/// count cannot leak.
#[derive(Debug)]
pub(crate) struct InFlight(pub std::sync::Arc<Client>);

impl InFlight {
    pub fn new(client: &std::sync::Arc<Client>) -> Self {
        client.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(client.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_one();
        }
    }
}

#[derive(Debug)]
struct Slot {
    client: std::sync::Arc<Client>,
    tag: Option<Bytes>,
}

#[derive(Debug, Default)]
struct TagGroup {
    /// Connection indexes with this tag, ascending: `[0]` is the "first
    /// client" of unicast.
    members: Vec<usize>,
    /// Round-robin cursor; atomic so unicast needs only a read lock.
    next: AtomicUsize,
}

/// Clients by connection index and by tag.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Slot>>,
    /// Free indexes below `slots.len()`, smallest on top.
    free: BinaryHeap<Reverse<usize>>,
    count: usize,
    tags: HashMap<Bytes, TagGroup>,
}

/// What a tag lookup may choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    All,
    First,
    RoundRobin,
}

impl Registry {
    /// The index a new client would get, or None when `max` are connected.
    pub fn next_index(&self, max: usize) -> Option<usize> {
        if self.count >= max {
            return None;
        }
        Some(match self.free.peek() {
            Some(Reverse(i)) => *i,
            None => self.slots.len(),
        })
    }

    /// Insert a client at the index `next_index` gave.
    pub fn insert(&mut self, client: std::sync::Arc<Client>) {
        let idx = client.conidx;
        if idx == self.slots.len() {
            self.slots.push(None);
        } else {
            let top = self.free.pop();
            debug_assert_eq!(top, Some(Reverse(idx)));
        }
        debug_assert!(self.slots[idx].is_none());
        self.slots[idx] = Some(Slot { client, tag: None });
        self.count += 1;
    }

    /// Remove the client with this index and id (no-op when already gone).
    pub fn remove(&mut self, conidx: usize, id: u64) {
        let Some(slot) = self.slots.get_mut(conidx) else {
            return;
        };
        if !matches!(slot, Some(s) if s.client.id == id) {
            return;
        }
        let old = slot.take().expect("checked above");
        if let Some(tag) = old.tag {
            self.untag(&tag, conidx);
        }
        self.count -= 1;
        // Trailing free slots are dropped rather than kept in the heap, so
        // the table shrinks back after a burst of connections.
        if conidx + 1 == self.slots.len() {
            self.slots.pop();
            while matches!(self.slots.last(), Some(None)) {
                self.slots.pop();
            }
            let len = self.slots.len();
            self.free.retain(|Reverse(i)| *i < len);
        } else {
            self.free.push(Reverse(conidx));
        }
    }

    fn untag(&mut self, tag: &Bytes, conidx: usize) {
        if let Some(group) = self.tags.get_mut(tag) {
            if let Ok(pos) = group.members.binary_search(&conidx) {
                group.members.remove(pos);
            }
            if group.members.is_empty() {
                self.tags.remove(tag);
            }
        }
    }

    /// Set (or replace) the tag of a client; false when it is gone.
    pub fn set_tag(&mut self, conidx: usize, id: u64, tag: Bytes) -> bool {
        let old = match self.slots.get_mut(conidx) {
            Some(Some(slot)) if slot.client.id == id => slot.tag.replace(tag.clone()),
            _ => return false,
        };
        if let Some(old) = old {
            if old == tag {
                return true;
            }
            self.untag(&old, conidx);
        }
        let members = &mut self.tags.entry(tag).or_default().members;
        if let Err(pos) = members.binary_search(&conidx) {
            members.insert(pos, conidx);
        }
        true
    }

    /// The tag of the client with this index and id.
    pub fn tag_of(&self, conidx: usize, id: u64) -> Option<Bytes> {
        let slot = self.slots.get(conidx)?.as_ref()?;
        if slot.client.id != id {
            return None;
        }
        slot.tag.clone()
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn tag_count(&self, tag: &[u8]) -> usize {
        self.tags.get(tag).map_or(0, |g| g.members.len())
    }

    /// The client at `conidx`, if one is connected there.
    pub fn client(&self, conidx: usize) -> Option<&std::sync::Arc<Client>> {
        self.slots.get(conidx)?.as_ref().map(|s| &s.client)
    }

    /// Every connected client, in index order.
    pub fn all(&self) -> impl Iterator<Item = &std::sync::Arc<Client>> {
        self.slots.iter().flatten().map(|s| &s.client)
    }

    /// Every client with their tags, in index order.
    pub fn all_with_tags(&self) -> impl Iterator<Item = (&std::sync::Arc<Client>, Option<&Bytes>)> {
        self.slots
            .iter()
            .flatten()
            .map(|s| (&s.client, s.tag.as_ref()))
    }

    /// Call `f` for the clients with `tag` that `pick` selects, until `f`
    /// returns true (accepted) for as many as the pick wants. Clients that
    /// refuse (closing) are passed over, so a unicast goes to the next one.
    pub fn for_tag(&self, tag: &[u8], pick: Pick, mut f: impl FnMut(&Client) -> bool) -> usize {
        let Some(group) = self.tags.get(tag) else {
            return 0;
        };
        let n = group.members.len();
        let start = match pick {
            Pick::RoundRobin => group.next.fetch_add(1, Ordering::Relaxed) % n,
            _ => 0,
        };
        let mut sent = 0;
        for k in 0..n {
            let idx = group.members[(start + k) % n];
            let Some(client) = self.client(idx) else {
                continue;
            };
            if f(client) {
                sent += 1;
                if pick != Pick::All {
                    break;
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn add(r: &mut Registry, id: u64, max: usize) -> Option<usize> {
        let idx = r.next_index(max)?;
        r.insert(Arc::new(Client::new(
            id,
            idx,
            "127.0.0.1:1".parse().unwrap(),
            1024,
            Arc::default(),
        )));
        Some(idx)
    }

    fn tagged(r: &Registry, tag: &str, pick: Pick) -> Vec<usize> {
        let mut got = Vec::new();
        r.for_tag(tag.as_bytes(), pick, |c| {
            got.push(c.conidx);
            true
        });
        got
    }

    #[test]
    fn lowest_free_index_is_reused() {
        let mut r = Registry::default();
        assert_eq!(add(&mut r, 1, 8), Some(0));
        assert_eq!(add(&mut r, 2, 8), Some(1));
        assert_eq!(add(&mut r, 3, 8), Some(2));
        assert_eq!(add(&mut r, 4, 8), Some(3));
        r.remove(1, 2);
        r.remove(2, 3);
        assert_eq!(add(&mut r, 5, 8), Some(1));
        assert_eq!(add(&mut r, 6, 8), Some(2));
        assert_eq!(add(&mut r, 7, 8), Some(4));
        assert_eq!(r.count(), 5);
    }

    #[test]
    fn max_clients_refuses() {
        let mut r = Registry::default();
        assert_eq!(add(&mut r, 1, 2), Some(0));
        assert_eq!(add(&mut r, 2, 2), Some(1));
        assert_eq!(add(&mut r, 3, 2), None);
        r.remove(0, 1);
        assert_eq!(add(&mut r, 4, 2), Some(0));
    }

    #[test]
    fn stale_id_does_not_remove_new_client() {
        let mut r = Registry::default();
        add(&mut r, 1, 8);
        r.remove(0, 1);
        add(&mut r, 2, 8);
        r.remove(0, 1);
        assert_eq!(r.count(), 1);
        assert!(!r.set_tag(0, 1, Bytes::from_static(b"x")));
        assert!(r.set_tag(0, 2, Bytes::from_static(b"x")));
    }

    #[test]
    fn tags_first_all_round_robin() {
        let mut r = Registry::default();
        for id in 0..5 {
            add(&mut r, id, 8);
        }
        for idx in [3, 1, 4] {
            assert!(r.set_tag(idx, idx as u64, Bytes::from_static(b"a")));
        }
        r.set_tag(0, 0, Bytes::from_static(b"b"));
        assert_eq!(tagged(&r, "a", Pick::All), vec![1, 3, 4]);
        assert_eq!(tagged(&r, "a", Pick::First), vec![1]);
        assert_eq!(tagged(&r, "A", Pick::All), Vec::<usize>::new());
        let rr: Vec<usize> = (0..6)
            .flat_map(|_| tagged(&r, "a", Pick::RoundRobin))
            .collect();
        assert_eq!(rr, vec![1, 3, 4, 1, 3, 4]);
        assert_eq!(r.tag_count(b"a"), 3);
        // Retagging moves the client; removing it leaves the group.
        r.set_tag(1, 1, Bytes::from_static(b"b"));
        assert_eq!(tagged(&r, "a", Pick::First), vec![3]);
        assert_eq!(tagged(&r, "b", Pick::All), vec![0, 1]);
        r.remove(3, 3);
        r.remove(4, 4);
        assert_eq!(r.tag_count(b"a"), 0);
        assert!(!r.tags.contains_key(&b"a"[..]));
    }

    #[test]
    fn unicast_skips_refusing_client() {
        let mut r = Registry::default();
        for id in 0..3 {
            add(&mut r, id, 8);
            r.set_tag(id as usize, id, Bytes::from_static(b"t"));
        }
        let mut got = Vec::new();
        let n = r.for_tag(b"t", Pick::First, |c| {
            got.push(c.conidx);
            c.conidx != 0
        });
        assert_eq!(n, 1);
        assert_eq!(got, vec![0, 1]);
    }

    #[test]
    fn table_shrinks_after_burst() {
        let mut r = Registry::default();
        for id in 0..1000 {
            add(&mut r, id, 10_000);
        }
        for id in (0..1000).rev().step_by(2) {
            r.remove(id as usize, id);
        }
        for id in (0..1000).step_by(2) {
            r.remove(id as usize, id);
        }
        assert_eq!(r.count(), 0);
        assert!(r.slots.is_empty());
        assert!(r.free.is_empty());
        assert_eq!(add(&mut r, 5000, 8), Some(0));
    }
}
