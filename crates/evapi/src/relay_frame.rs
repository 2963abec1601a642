//! A relay's data framed once for all its recipients ([`Frame`]), and the
//! place it holds among `context_mlimit`'s relays in flight
//! ([`PendingRelays`]).

use crate::codec::NetstringHead;
use bytes::{BufMut, Bytes, BytesMut};
use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Frames up to this many bytes (framing included) are copied into each
/// recipient's buffer; larger ones are shared.
pub(crate) const COPY_MAX: usize = 1024;

/// One framed message, ready to be queued for each of its recipients.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    /// The caller's data and its netstring head: each recipient's queue
    /// copies the parts straight into its buffer.
    Small {
        head: Option<NetstringHead>,
        data: &'a [u8],
    },
    /// Framed once on the heap; each recipient holds a reference.
    Shared(SharedFrame),
}

impl<'a> Frame<'a> {
    /// Frame `data` (as a netstring when `netstring`). `pending` is the
    /// relay's `context_mlimit` place, held until every recipient has
    /// written it, so such a frame is always shared.
    pub fn new(data: &'a [u8], netstring: bool, pending: Option<Arc<PendingSlot>>) -> Self {
        let head = netstring.then(|| NetstringHead::new(data.len()));
        let small = Frame::Small { head, data };
        if small.len() <= COPY_MAX && pending.is_none() {
            return small;
        }
        let mut out = BytesMut::with_capacity(small.len());
        small.put_into(&mut out);
        Frame::Shared(SharedFrame {
            bytes: out.freeze(),
            _pending: pending,
        })
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        match self {
            Frame::Small {
                head: Some(h),
                data,
            } => h.as_bytes().len() + data.len() + 1,
            Frame::Small { head: None, data } => data.len(),
            Frame::Shared(f) => f.bytes.len(),
        }
    }

    /// The bytes that go on the wire, as the slices of one `writev`.
    pub(super) fn slices(&self) -> ([IoSlice<'_>; 3], usize) {
        let none = IoSlice::new(&[]);
        match self {
            Frame::Small {
                head: Some(h),
                data,
            } => (
                [
                    IoSlice::new(h.as_bytes()),
                    IoSlice::new(data),
                    IoSlice::new(b","),
                ],
                3,
            ),
            Frame::Small { head: None, data } => ([IoSlice::new(data), none, none], 1),
            Frame::Shared(f) => ([IoSlice::new(&f.bytes), none, none], 1),
        }
    }

    /// Append the bytes that go on the wire to `out`.
    pub(super) fn put_into(&self, out: &mut impl BufMut) {
        match self {
            Frame::Small {
                head: Some(h),
                data,
            } => {
                out.put_slice(h.as_bytes());
                out.put_slice(data);
                out.put_u8(b',');
            }
            Frame::Small { head: None, data } => out.put_slice(data),
            Frame::Shared(f) => out.put_slice(&f.bytes),
        }
    }
}

/// A frame shared by every client it goes to.
#[derive(Clone, Debug)]
pub(crate) struct SharedFrame {
    pub(super) bytes: Bytes,
    /// Held while any recipient still has the frame queued, so that
    /// `context_mlimit` counts relays that are not yet fully written.
    pub(super) _pending: Option<Arc<PendingSlot>>,
}

/// Counts relays in flight, for `context_mlimit`.
#[derive(Debug, Default)]
pub(crate) struct PendingRelays {
    count: AtomicUsize,
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

/// One counted relay; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct PendingSlot(Arc<PendingRelays>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        if self.0.waiters.load(Ordering::Acquire) > 0 {
            let _guard = self.0.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.0.freed.notify_one();
        }
    }
}

impl PendingRelays {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn try_take(self: &Arc<Self>, limit: usize) -> Option<PendingSlot> {
        let mut cur = self.count.load(Ordering::Acquire);
        loop {
            if cur >= limit {
                return None;
            }
            match self.count.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(PendingSlot(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// Take a place among `limit`, waiting up to `wait` for one to free.
    pub fn acquire(self: &Arc<Self>, limit: usize, wait: Option<Duration>) -> Option<PendingSlot> {
        if let Some(slot) = self.try_take(limit) {
            return Some(slot);
        }
        let wait = wait?;
        let deadline = Instant::now() + wait;
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let slot = loop {
            if let Some(slot) = self.try_take(limit) {
                break Some(slot);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            guard = self
                .freed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(guard);
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        slot
    }
}
