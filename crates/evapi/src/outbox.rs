//! What is queued for one client, and the writer that empties it.
//!
//! A relay frames its data once. A small frame (the usual event) is then
//! copied into each recipient's own buffer, one after another, so that the
//! writer hands the kernel a few large contiguous pieces per `writev`, and
//! no reference count is shared between the relaying thread and every
//! writer (at millions of frames a second, the atomic increments and
//! decrements of one shared count, bounced between cores, cost more than
//! copying a few hundred bytes). A large frame, or one that `context_mlimit`
//! tracks, is shared instead: every recipient's queue holds a clone of the
//! same [`SharedFrame`] (a reference count, no copy). The writer of each
//! connection takes the whole queue at once.

use crate::codec::NetstringHead;
use crate::handle::Counters;
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

/// Frames up to this many bytes (framing included) are copied into each
/// recipient's buffer; larger ones are shared.
pub(crate) const COPY_MAX: usize = 1024;

/// Size of a client's copy buffer: the most a writer hands the kernel in
/// one slice of a `writev`.
const CHUNK: usize = 16 * 1024;

/// Most copy buffers an event socket keeps for reuse ([`CHUNK`] each: 4 MB).
const POOL_MAX: usize = 256;

/// Emptied copy buffers of one event socket, kept for the next ones: at
/// millions of frames a second, allocating a buffer on the relaying thread
/// and freeing it on a writer's thread costs page faults and contention on
/// the allocator's lock. Shared by all clients and bounded, so memory kept
/// does not grow with the number of clients; an idle client holds no
/// buffer.
#[derive(Debug, Default)]
pub(crate) struct ChunkPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl ChunkPool {
    fn get(&self) -> Option<Vec<u8>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Keep `buf` (emptied) for reuse if it is a whole [`CHUNK`] and the
    /// pool has room; drop it otherwise (after the lock is released).
    fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() != CHUNK {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_MAX {
            free.push(buf);
        } else {
            drop(free);
            drop(buf);
        }
    }

    /// Buffers kept now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().unwrap().len()
    }
}

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

    /// Append the bytes that go on the wire to `out`.
    fn put_into(&self, out: &mut impl BufMut) {
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

/// How many frames of the same size ahead a client's buffer is fetched
/// into the cache.
const PREFETCH_FRAMES: usize = 4;

/// Ask for the cache lines where a client's frames will be copied, a few
/// frames of `len` bytes ahead of the one just copied into `buf` (from the
/// start when `buf` is new): the copy then finds them in cache instead of
/// waiting on memory, a wait that the mutex released right after would
/// expose in full (its atomic exchange waits for the copy's stores). With
/// many clients the requests also overlap the copies to the others.
#[inline]
fn prefetch_ahead(buf: &[u8], capacity: usize, len: usize, new: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0};
        // Frames before the last one were asked for by earlier pushes; a
        // new buffer asks for the frame about to be copied as well.
        let (from, to) = if new {
            (0, (PREFETCH_FRAMES + 1) * len)
        } else {
            (
                buf.len() + (PREFETCH_FRAMES - 1) * len,
                buf.len() + PREFETCH_FRAMES * len,
            )
        };
        let base = buf.as_ptr() as usize;
        // Line by line, on whole lines of the address space.
        let mut line = (base + from) & !63;
        let end = base + to.min(capacity);
        while line < end {
            // A hint only: it never faults and reads nothing, so an address
            // is all it needs (never dereferenced).
            unsafe { _mm_prefetch::<_MM_HINT_ET0>(line as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (buf, capacity, len, new);
}

/// A frame shared by every client it goes to.
#[derive(Clone, Debug)]
pub(crate) struct SharedFrame {
    bytes: Bytes,
    /// Held while any recipient still has the frame queued, so that
    /// `context_mlimit` counts relays that are not yet fully written.
    _pending: Option<Arc<PendingSlot>>,
}

/// A piece of a client's queue: what one slice of a `writev` carries.
#[derive(Debug)]
enum Piece {
    /// Small frames copied one after another (at most [`CHUNK`] bytes; the
    /// buffer grows to that as frames are added).
    Copied { buf: Vec<u8>, frames: u64 },
    /// One frame shared with its other recipients.
    Shared(SharedFrame),
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied { buf, .. } => buf,
            Piece::Shared(f) => &f.bytes,
        }
    }

    /// Frames that end in this piece.
    fn frames(&self) -> u64 {
        match self {
            Piece::Copied { frames, .. } => *frames,
            Piece::Shared(_) => 1,
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
    pieces: VecDeque<Piece>,
    /// Bytes in `pieces`.
    bytes: usize,
    closed: bool,
}

/// The queue of frames waiting to be written to one client.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Bytes ever accepted into the queue, less those dropped unwritten.
    /// Changed only under the queue's lock (a load and a store, no
    /// read-modify-write); atomic so the listing reads it without the lock.
    pushed: AtomicU64,
    limit: usize,
    chunks: Arc<ChunkPool>,
    ready: Notify,
    /// Frames and bytes the kernel has taken (`evapi.list`). Written only
    /// by the writer, once per write call. Queued bytes are `pushed -
    /// bytes_written`: counted from push until the kernel has taken them,
    /// so a client that stops reading fills its queue.
    frames_written: AtomicU64,
    bytes_written: AtomicU64,
}

impl Outbox {
    /// An outbox of at most `limit` bytes, taking its copy buffers from
    /// (and giving them back to) `chunks`.
    pub fn new(limit: usize, chunks: Arc<ChunkPool>) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            pushed: AtomicU64::new(0),
            limit,
            chunks,
            ready: Notify::new(),
            frames_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame; never waits on the socket.
    pub fn push(&self, frame: &Frame<'_>) -> Push {
        let len = frame.len();
        let mut q = self.lock();
        if q.closed {
            return Push::Closed;
        }
        let pushed = self.pushed.load(Ordering::Relaxed);
        let queued = pushed - self.bytes_written.load(Ordering::Acquire);
        if queued + len as u64 > self.limit as u64 {
            let dropped = self.shut(&mut q);
            drop(q);
            drop(dropped);
            self.ready.notify_one();
            return Push::Overflow;
        }
        let was_empty = q.pieces.is_empty();
        match frame {
            Frame::Small { .. } => match q.pieces.back_mut() {
                Some(Piece::Copied { buf, frames }) if buf.len() + len <= CHUNK => {
                    frame.put_into(buf);
                    *frames += 1;
                    prefetch_ahead(buf, buf.capacity(), len, false);
                }
                _ => {
                    // A reused buffer, or else: a client with nothing
                    // queued starts with room for this frame, grown (by
                    // doubling) as more follow, so one event to ten
                    // thousand idle clients does not cost ten thousand
                    // whole chunks; a busy client gets a whole chunk.
                    let mut buf = self.chunks.get().unwrap_or_else(|| {
                        Vec::with_capacity(if was_empty {
                            len.max(256).next_power_of_two()
                        } else {
                            CHUNK
                        })
                    });
                    prefetch_ahead(&buf, buf.capacity(), len, true);
                    frame.put_into(&mut buf);
                    q.pieces.push_back(Piece::Copied { buf, frames: 1 });
                }
            },
            Frame::Shared(f) => q.pieces.push_back(Piece::Shared(f.clone())),
        }
        q.bytes += len;
        self.pushed.store(pushed + len as u64, Ordering::Release);
        drop(q);
        // A writer with frames already in hand checks the queue again before
        // it sleeps, so only the first frame of a batch needs a wake-up.
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Close the queue and take out what it holds (to be dropped after the
    /// lock is released); those bytes no longer count as queued.
    fn shut(&self, q: &mut Queue) -> VecDeque<Piece> {
        q.closed = true;
        let pushed = self.pushed.load(Ordering::Relaxed);
        self.pushed
            .store(pushed - q.bytes as u64, Ordering::Release);
        q.bytes = 0;
        std::mem::take(&mut q.pieces)
    }

    /// Refuse further frames and drop what is queued (after a cut).
    pub fn close(&self) {
        let mut q = self.lock();
        let dropped = self.shut(&mut q);
        drop(q);
        drop(dropped);
        self.ready.notify_one();
    }

    /// Bytes queued or in flight.
    pub fn queued_bytes(&self) -> usize {
        // `bytes_written` first: what it counts was pushed before, so the
        // later read of `pushed` is at least as large.
        let written = self.bytes_written.load(Ordering::Acquire);
        let pushed = self.pushed.load(Ordering::Acquire);
        pushed.saturating_sub(written) as usize
    }

    /// Frames written whole to the socket so far (frames copied into one
    /// buffer are counted when the whole buffer is written).
    pub fn frames_written(&self) -> u64 {
        self.frames_written.load(Ordering::Relaxed)
    }

    /// Bytes written to the socket so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Acquire)
    }

    /// Move everything queued into `into`; false when nothing was queued.
    fn take(&self, into: &mut VecDeque<Piece>) -> bool {
        let mut q = self.lock();
        if q.pieces.is_empty() {
            return false;
        }
        q.bytes = 0;
        if into.is_empty() {
            std::mem::swap(into, &mut q.pieces);
        } else {
            into.extend(q.pieces.drain(..));
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

/// Most pieces handed to one `writev` call: up to this many copy buffers
/// of [`CHUNK`] bytes (a megabyte, more than a socket takes at once) or
/// large shared frames.
const MAX_IOV: usize = 64;

/// The writing half of a connection, with the batch it is writing.
///
/// The batch and the offset into its first piece live here, not in a
/// future, so a write that is interrupted (a `select!` that picks another
/// branch) resumes exactly where it stopped: a frame is never left half
/// written with the next one after it.
pub(crate) struct Writer<W> {
    io: W,
    batch: VecDeque<Piece>,
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

    /// True when a piece of the queue is partly written (perhaps in the
    /// middle of a frame).
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
        for (i, piece) in self.batch.iter().take(MAX_IOV).enumerate() {
            let start = if i == 0 { self.offset } else { 0 };
            slices[i] = IoSlice::new(&piece.bytes()[start..]);
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
        let mut left = written;
        let mut frames = 0;
        while left > 0 {
            let front_left = self.batch[0].bytes().len() - self.offset;
            if left >= front_left {
                left -= front_left;
                self.offset = 0;
                let piece = self
                    .batch
                    .pop_front()
                    .expect("written bytes are in the batch");
                frames += piece.frames();
                if let Piece::Copied { buf, .. } = piece {
                    // About one in eighty frames of 200 bytes: a lock
                    // here costs little.
                    out.chunks.put(buf);
                }
            } else {
                self.offset += left;
                left = 0;
            }
        }
        // Once per system call, not per frame: this client's counts and
        // the socket's.
        out.frames_written.fetch_add(frames, Ordering::Relaxed);
        out.bytes_written
            .fetch_add(written as u64, Ordering::Release);
        counters.written(frames, written);
        Ok(())
    }

    /// Give the socket back (to shut it down).
    pub fn into_inner(self) -> W {
        self.io
    }
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
