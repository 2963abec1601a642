//! What is queued for one client, and the writer that empties it.
//!
//! A relay frames its data once; every recipient's queue holds a clone of
//! the same [`Frame`] (a reference count, no copy). The writer of each
//! connection takes the whole queue at once and hands it to the kernel in as
//! few `writev` calls as it can.

use crate::handle::Counters;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// One framed message, shared by every client it goes to.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    pub bytes: Bytes,
    /// Held while any recipient still has the frame queued, so that
    /// `context_mlimit` counts relays that are not yet fully written.
    _pending: Option<Arc<PendingSlot>>,
}

impl Frame {
    pub fn new(bytes: Bytes, pending: Option<Arc<PendingSlot>>) -> Self {
        Frame {
            bytes,
            _pending: pending,
        }
    }
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

/// The outcome of queueing a frame for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Queued,
    /// The client is closing; nothing was queued.
    Closed,
    /// The queue would pass its limit: the outbox is now closed and emptied,
    /// and the caller must cut the client.
    Overflow,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Frame>,
    closed: bool,
}

/// The queue of frames waiting to be written to one client.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Bytes queued or being written: counted from push until the kernel
    /// has taken them, so a client that stops reading fills it.
    bytes: AtomicUsize,
    limit: usize,
    ready: Notify,
    /// Frames and bytes the kernel has taken (`evapi.list`). Relaxed: one
    /// add per write call, read only by the listing.
    frames_written: AtomicU64,
    bytes_written: AtomicU64,
}

impl Outbox {
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            bytes: AtomicUsize::new(0),
            limit,
            ready: Notify::new(),
            frames_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame; never waits on the socket.
    pub fn push(&self, frame: &Frame) -> Push {
        let len = frame.bytes.len();
        let mut q = self.lock();
        if q.closed {
            return Push::Closed;
        }
        let queued = self.bytes.load(Ordering::Acquire);
        if queued + len > self.limit {
            q.closed = true;
            q.frames.clear();
            drop(q);
            self.ready.notify_one();
            return Push::Overflow;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back(frame.clone());
        self.bytes.fetch_add(len, Ordering::AcqRel);
        drop(q);
        // A writer with frames already in hand checks the queue again before
        // it sleeps, so only the first frame of a batch needs a wake-up.
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Refuse further frames and drop what is queued (after a cut).
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        q.frames.clear();
        drop(q);
        self.ready.notify_one();
    }

    /// Bytes queued or in flight.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Frames written whole to the socket so far.
    pub fn frames_written(&self) -> u64 {
        self.frames_written.load(Ordering::Relaxed)
    }

    /// Bytes written to the socket so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Move everything queued into `into`; false when nothing was queued.
    fn take(&self, into: &mut VecDeque<Frame>) -> bool {
        let mut q = self.lock();
        if q.frames.is_empty() {
            return false;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut q.frames);
        } else {
            into.extend(q.frames.drain(..));
        }
        true
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Why writing to a client stopped.
#[derive(Debug)]
pub(crate) enum WriteStop {
    /// The outbox was closed (cut or closing) and nothing more is to come.
    Closed,
    /// A single write waited longer than `send_data_timeout`.
    Timeout(Duration),
    /// The socket failed.
    Io(std::io::Error),
}

/// Most frames handed to one `writev` call.
const MAX_IOV: usize = 64;

/// The writing half of a connection, with the batch it is writing.
///
/// The batch and the offset into its first frame live here, not in a
/// future, so a write that is interrupted (a `select!` that picks another
/// branch) resumes exactly where it stopped: a frame is never left half
/// written with the next one after it.
pub(crate) struct Writer<W> {
    io: W,
    batch: VecDeque<Frame>,
    /// Bytes of `batch[0]` already written.
    offset: usize,
}

impl<W: tokio::io::AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W) -> Self {
        Writer {
            io,
            batch: VecDeque::new(),
            offset: 0,
        }
    }

    /// True when a frame is partly written.
    pub fn mid_frame(&self) -> bool {
        self.offset > 0
    }

    /// Write queued frames as they come until the outbox closes and is
    /// empty, counting frames and bytes written into `counters`.
    pub async fn run(
        &mut self,
        out: &Outbox,
        timeout: Option<Duration>,
        counters: &Counters,
    ) -> WriteStop {
        loop {
            if self.batch.is_empty() && !out.take(&mut self.batch) {
                if out.is_closed() {
                    return WriteStop::Closed;
                }
                out.ready.notified().await;
                continue;
            }
            if let Err(stop) = self.write_some(out, timeout, counters).await {
                return stop;
            }
        }
    }

    /// Write what is queued now, then return (used at shutdown).
    pub async fn flush(
        &mut self,
        out: &Outbox,
        timeout: Option<Duration>,
        counters: &Counters,
    ) -> Result<(), WriteStop> {
        loop {
            if self.batch.is_empty() && !out.take(&mut self.batch) {
                return Ok(());
            }
            self.write_some(out, timeout, counters).await?;
        }
    }

    async fn write_some(
        &mut self,
        out: &Outbox,
        timeout: Option<Duration>,
        counters: &Counters,
    ) -> Result<(), WriteStop> {
        let mut slices: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
        let mut n_slices = 0;
        for (i, frame) in self.batch.iter().take(MAX_IOV).enumerate() {
            let start = if i == 0 { self.offset } else { 0 };
            slices[i] = IoSlice::new(&frame.bytes[start..]);
            n_slices += 1;
        }
        let write = self.io.write_vectored(&slices[..n_slices]);
        let written = match timeout {
            None => write.await,
            Some(t) => match tokio::time::timeout(t, write).await {
                Ok(r) => r,
                Err(_) => return Err(WriteStop::Timeout(t)),
            },
        }
        .map_err(WriteStop::Io)?;
        if written == 0 {
            return Err(WriteStop::Io(std::io::ErrorKind::WriteZero.into()));
        }
        out.bytes.fetch_sub(written, Ordering::AcqRel);
        let mut left = written;
        let mut frames = 0;
        while left > 0 {
            let front_left = self.batch[0].bytes.len() - self.offset;
            if left >= front_left {
                left -= front_left;
                self.offset = 0;
                self.batch.pop_front();
                frames += 1;
            } else {
                self.offset += left;
                left = 0;
            }
        }
        // Once per system call, not per frame: this client's counts and
        // the socket's.
        out.frames_written.fetch_add(frames, Ordering::Relaxed);
        out.bytes_written
            .fetch_add(written as u64, Ordering::Relaxed);
        counters.written(frames, written);
        Ok(())
    }

    /// Give the socket back (to shut it down).
    pub fn into_inner(self) -> W {
        self.io
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(s: &'static str) -> Frame {
        Frame::new(Bytes::from_static(s.as_bytes()), None)
    }

    #[test]
    fn overflow_closes_and_empties() {
        let out = Outbox::new(10);
        assert_eq!(out.push(&frame("12345")), Push::Queued);
        assert_eq!(out.push(&frame("12345")), Push::Queued);
        assert_eq!(out.queued_bytes(), 10);
        assert_eq!(out.push(&frame("1")), Push::Overflow);
        assert_eq!(out.push(&frame("1")), Push::Closed);
        let mut batch = VecDeque::new();
        assert!(!out.take(&mut batch));
    }

    #[tokio::test]
    async fn writer_batches_and_resumes() {
        let out = Outbox::new(1 << 20);
        for s in ["3:abc,", "1:x,", "0:,"] {
            out.push(&frame(s));
        }
        out.close_after_test_flush();
        let mut w = Writer::new(Vec::new());
        let counters = Counters::default();
        assert!(matches!(
            w.run(&out, None, &counters).await,
            WriteStop::Closed
        ));
        assert_eq!(w.into_inner(), b"3:abc,1:x,0:,");
        assert_eq!(out.queued_bytes(), 0);
        assert_eq!(counters.frames_written.load(Ordering::Relaxed), 3);
        assert_eq!(counters.bytes_written.load(Ordering::Relaxed), 13);
    }

    #[test]
    fn pending_limit_and_wait() {
        let p = Arc::new(PendingRelays::default());
        let a = p.acquire(2, None).unwrap();
        let _b = p.acquire(2, None).unwrap();
        assert!(p.acquire(2, None).is_none());
        assert!(p.acquire(2, Some(Duration::from_millis(5))).is_none());
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.acquire(2, Some(Duration::from_secs(30))).is_some());
        std::thread::sleep(Duration::from_millis(20));
        drop(a);
        assert!(t.join().unwrap());
        // The waiter's place was freed when it returned; `_b` still holds one.
        assert_eq!(p.count(), 1);
    }

    impl Outbox {
        /// Mark closed without dropping what is queued (tests only).
        fn close_after_test_flush(&self) {
            self.lock().closed = true;
        }
    }
}
