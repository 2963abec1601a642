//! What is queued for one client, and the writer that empties it.
//!
//! A relay frames its data once. A small frame (the usual event) relayed
//! to every client (of several) is appended once to the event socket's
//! fan-out log ([`FanoutLog`]), which every client's writer reads at its
//! own place: one copy and one lock per relay, whatever the number of
//! clients. A small frame for some clients only (a tag, one client) is
//! copied into each recipient's own buffer, one after another, so that the
//! writer hands the kernel a few large contiguous pieces per `writev`, and
//! no reference count is shared between the relaying thread and every
//! writer (at millions of frames a second, the atomic increments and
//! decrements of one shared count, bounced between cores, cost more than
//! copying a few hundred bytes). A large frame, or one that `context_mlimit`
//! tracks, is shared instead: every recipient's queue holds a clone of the
//! same [`SharedFrame`] (a reference count, no copy). The writer of each
//! connection takes the whole queue at once, with the log's bytes due
//! before, between and after its pieces.

use crate::handle::Counters;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[path = "relay_frame.rs"]
mod frame;
pub(crate) use frame::{Frame, PendingRelays, SharedFrame, COPY_MAX};

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

/// A piece of a client's queue: what one slice of a `writev` carries.
#[derive(Debug)]
enum Piece {
    /// Small frames copied one after another (at most [`CHUNK`] bytes; the
    /// buffer grows to that as frames are added).
    Copied { buf: Vec<u8>, frames: u64 },
    /// One frame shared with its other recipients.
    Shared(SharedFrame),
    /// Bytes `from..to` of a chunk of the event socket's [`FanoutLog`],
    /// counting `frames` frames.
    Log {
        chunk: Arc<log::Chunk>,
        from: usize,
        to: usize,
        frames: u64,
    },
}

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied { buf, .. } => buf,
            Piece::Shared(f) => &f.bytes,
            Piece::Log {
                chunk, from, to, ..
            } => chunk.bytes(*from, *to),
        }
    }

    /// Frames that end in this piece.
    fn frames(&self) -> u64 {
        match self {
            Piece::Copied { frames, .. } | Piece::Log { frames, .. } => *frames,
            Piece::Shared(_) => 1,
        }
    }
}

/// A piece queued for one client alone, and where it goes among the
/// frames of the fan-out log: after the log's bytes before `at`.
#[derive(Debug)]
struct Queued {
    at: u64,
    piece: Piece,
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
    pieces: VecDeque<Queued>,
    /// Bytes in `pieces`.
    bytes: usize,
    closed: bool,
    /// The writer holds a batch taken from `pieces` and not yet all
    /// written: nothing may be written around it.
    writing: bool,
    /// A plain TCP client's socket, for a frame written at once by the
    /// relaying thread (see [`Outbox::deliver`]). Set by the connection
    /// while it owns the socket and cleared, under this lock, before the
    /// socket can close ([`Outbox::forget_socket`], [`Outbox::close`]), so a number
    /// here always names this client's open socket.
    direct: Option<RawFd>,
    /// When a frame for this client alone last found nothing queued and
    /// nothing being written (whether it was then written at once or not).
    last: Option<Instant>,
    /// This client's place in the fan-out log, while it reads it.
    cursor: Option<log::Cursor>,
    /// Where the log ended when the client stopped being a recipient (it
    /// left the registry): the log's bytes from there are not for it.
    stop: Option<log::End>,
    /// Bytes that frames for this client alone may still add without
    /// telling the log (see [`split_room`]).
    own_room: u64,
}

/// Share `room` (bytes left under a client's limit) between the frames
/// for the client alone, which take theirs without touching anything
/// shared (`Queue::own_room`), and the fan-out log, whose share is
/// returned: the log may grow by that much before it must look at the
/// client again ([`FanoutLog::append`]). Frames alone that outgrow their
/// share split what is left again, so a client sent only frames alone
/// tells the log once per half of its room, not once per frame.
fn split_room(q: &mut Queue, room: u64) -> u64 {
    q.own_room = room / 2;
    room - q.own_room
}

impl Queue {
    /// The log position from which the log's bytes are not for this
    /// client (`u64::MAX` while it is a recipient).
    fn log_stop(&self) -> u64 {
        self.stop.map_or(u64::MAX, |end| end.pos)
    }
}

/// A frame for one client alone (not a relay to several) that finds
/// nothing queued for it and nothing being written is written to its
/// socket at once by the thread that relays it, without waking the
/// client's writer task: an event at a time (the usual async call) costs
/// one system call and no thread hand-off. Unless the last frame that
/// found the client so was less than this long ago: then it is queued for
/// the writer as before, so a burst or a stream is still written in
/// large batches by the writer, and the relaying thread makes at most
/// one such call per client per this interval (and reads the clock only
/// when the queue is empty). A relay to several clients is always
/// queued: a system call per recipient on the relaying thread would cost
/// a fan-out far more than the writers' batches.
const DIRECT_IDLE: Duration = Duration::from_micros(100);

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
    /// The event socket's fan-out log, once this client reads it.
    log: OnceLock<Arc<FanoutLog>>,
    /// The log's bytes for this client are those from `log_base` (where
    /// it started reading) to `log_until` (where it stopped: left the
    /// registry, or cut; the log's end until then). `u64::MAX` for none.
    log_base: AtomicU64,
    log_until: AtomicU64,
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
            log: OnceLock::new(),
            log_base: AtomicU64::new(u64::MAX),
            log_until: AtomicU64::new(u64::MAX),
        }
    }

    /// Read `log` from its end on: the frames appended to it from now are
    /// this client's too (called as the client enters the registry).
    pub fn subscribe(&self, log: &Arc<FanoutLog>) {
        // The log's lock is never taken under an outbox's lock.
        let cursor = log.subscribe();
        let mut q = self.lock();
        if q.closed || self.log.set(log.clone()).is_err() {
            drop(q);
            log.unsubscribe();
            return;
        }
        let base = cursor.pos();
        q.cursor = Some(cursor);
        self.log_base.store(base, Ordering::Release);
        let room = (self.limit as u64).saturating_sub(self.queued_at(base));
        log.lower_check(base.saturating_add(split_room(&mut q, room)));
    }

    /// No more of the log's frames from now (called as the client leaves
    /// the registry, under its lock, so no relay is appending); what was
    /// appended before is still written.
    pub fn unsubscribe(&self) {
        let Some(log) = self.log.get() else {
            return;
        };
        // The log's lock is never taken under an outbox's lock.
        let end = log.end_mark();
        let mut q = self.lock();
        if q.cursor.is_some() && q.stop.is_none() {
            q.stop = Some(end);
            self.log_until.store(end.pos, Ordering::Release);
            log.unsubscribe();
        }
    }

    /// Bytes of the log accepted for this client while the log ends at
    /// `end`.
    fn log_share(&self, end: u64) -> u64 {
        let base = self.log_base.load(Ordering::Acquire);
        if base == u64::MAX {
            return 0;
        }
        end.min(self.log_until.load(Ordering::Acquire))
            .saturating_sub(base)
    }

    /// Bytes queued or in flight while the log ends at `end`.
    fn queued_at(&self, end: u64) -> u64 {
        // `bytes_written` first: what it counts was accepted before.
        let written = self.bytes_written.load(Ordering::Acquire);
        let pushed = self.pushed.load(Ordering::Acquire);
        (pushed + self.log_share(end)).saturating_sub(written)
    }

    /// The log's share of the room left under the limit once the log ends
    /// at `end` (a relay to every client is about to take it there; see
    /// [`split_room`]), or `None` when that passes the limit: the outbox is
    /// then closed and emptied, and the caller must cut the client.
    /// `Some(u64::MAX)` for a client not reading the log.
    pub(crate) fn log_room(&self, end: u64) -> Option<u64> {
        let mut q = self.lock();
        if q.closed || q.cursor.is_none() || q.stop.is_some() {
            return Some(u64::MAX);
        }
        let queued = self.queued_at(end);
        if queued > self.limit as u64 {
            self.cut(q);
            return None;
        }
        Some(split_room(&mut q, self.limit as u64 - queued))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a frame without a direct write (tests).
    #[cfg(test)]
    pub fn push(&self, frame: &Frame<'_>) -> Push {
        self.deliver(frame, false, &Counters::default())
    }

    /// Queue a frame, or, when it goes to this client `alone` and the
    /// client has nothing queued or being written (see [`DIRECT_IDLE`]),
    /// write it to the socket at once; never waits on the socket.
    /// `counters` count what a direct write wrote.
    pub fn deliver(&self, frame: &Frame<'_>, alone: bool, counters: &Counters) -> Push {
        self.deliver_with_clock(frame, alone, counters, Instant::now)
    }

    /// [`Outbox::deliver`], reading the time (only when a direct write is
    /// possible) from `clock`.
    pub(crate) fn deliver_with_clock(
        &self,
        frame: &Frame<'_>,
        alone: bool,
        counters: &Counters,
        clock: impl FnOnce() -> Instant,
    ) -> Push {
        let len = frame.len();
        let mut q = self.lock();
        if q.closed {
            return Push::Closed;
        }
        // Where the fan-out log ends now: this frame goes after the log's
        // frames before it (the relaying thread's own earlier relays to
        // every client among them).
        let log = self.log.get();
        let log_end = log.map_or(0, |l| l.end());
        let queued = self.queued_at(log_end);
        if queued + len as u64 > self.limit as u64 {
            self.cut(q);
            return Push::Overflow;
        }
        // Accepted: counted as pushed before any of it counts as written.
        let pushed = self.pushed.load(Ordering::Relaxed);
        self.pushed.store(pushed + len as u64, Ordering::Release);
        if let Some(log) = log {
            // Within this client's share of its room, or else the room is
            // shared again, and the log may take it past its limit sooner.
            let len = len as u64;
            if q.own_room >= len {
                q.own_room -= len;
            } else {
                let room = (self.limit as u64).saturating_sub(queued + len);
                log.lower_check(log_end.saturating_add(split_room(&mut q, room)));
            }
        }
        // Nothing of the log left to give this client (a writer may have
        // claimed bytes committed after `log_end` was read: the frame then
        // goes after those).
        let log_pos = q.cursor.as_ref().map_or(0, log::Cursor::pos);
        let log_done = q.cursor.is_none() || log_pos >= log_end.min(q.log_stop());
        let at = log_end.max(log_pos);
        let was_empty = q.pieces.is_empty();
        let direct = match q.direct {
            Some(fd) if alone && was_empty && !q.writing && log_done => {
                let now = clock();
                let idle = q
                    .last
                    .is_none_or(|t| now.saturating_duration_since(t) >= DIRECT_IDLE);
                q.last = Some(now);
                idle.then_some(fd)
            }
            _ => None,
        };
        let written = direct.map_or(0, |fd| send_now(fd, frame));
        if written > 0 {
            let whole = u64::from(written == len);
            self.frames_written.fetch_add(whole, Ordering::Relaxed);
            self.bytes_written
                .fetch_add(written as u64, Ordering::Release);
            counters.written(whole, written);
            if written == len {
                return Push::Queued;
            }
            // The socket took part of it: the rest is the writer's, first
            // (a shared frame's rest still holds its `context_mlimit` place).
            let piece = match frame {
                Frame::Shared(f) => Piece::Shared(SharedFrame {
                    bytes: f.bytes.slice(written..),
                    _pending: f._pending.clone(),
                }),
                Frame::Small { .. } => {
                    let mut rest = Vec::with_capacity(len);
                    frame.put_into(&mut rest);
                    rest.drain(..written);
                    Piece::Copied {
                        buf: rest,
                        frames: 1,
                    }
                }
            };
            q.pieces.push_back(Queued { at, piece });
        } else {
            self.queue(&mut q, frame, was_empty, at);
        }
        q.bytes += len - written;
        drop(q);
        // A writer with frames already in hand checks the queue again before
        // it sleeps, so only the first frame of a batch needs a wake-up.
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Append `frame` to the queue: copied after the last copied frames
    /// when they have room, else in a buffer of its own, or shared.
    #[inline]
    fn queue(&self, q: &mut Queue, frame: &Frame<'_>, was_empty: bool, at: u64) {
        let len = frame.len();
        let piece = match frame {
            Frame::Small { .. } => match q.pieces.back_mut() {
                Some(Queued {
                    at: last_at,
                    piece: Piece::Copied { buf, frames },
                }) if *last_at == at && buf.len() + len <= CHUNK => {
                    frame.put_into(buf);
                    *frames += 1;
                    prefetch_ahead(buf, buf.capacity(), len, false);
                    return;
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
                    Piece::Copied { buf, frames: 1 }
                }
            },
            Frame::Shared(f) => Piece::Shared(f.clone()),
        };
        q.pieces.push_back(Queued { at, piece });
    }

    /// Let relays write to socket `fd` at once (a plain TCP client's, not
    /// TLS), until [`Outbox::forget_socket`] or [`Outbox::close`]. The
    /// caller keeps the socket open until then.
    pub fn write_directly(&self, fd: RawFd) {
        let mut q = self.lock();
        if !q.closed {
            q.direct = Some(fd);
        }
    }

    /// No more direct writes: once this returns, the socket may close.
    pub fn forget_socket(&self) {
        self.lock().direct = None;
    }

    /// Close the queue and take out what it holds (to be dropped after the
    /// lock is released); those bytes no longer count as queued.
    fn shut(&self, q: &mut Queue) -> VecDeque<Queued> {
        q.closed = true;
        q.direct = None;
        let pushed = self.pushed.load(Ordering::Relaxed);
        self.pushed
            .store(pushed - q.bytes as u64, Ordering::Release);
        q.bytes = 0;
        // The log's bytes not yet given to the writer are dropped too.
        if let Some(cursor) = q.cursor.take() {
            self.log_until
                .store(cursor.pos().min(q.log_stop()), Ordering::Release);
            if q.stop.is_none() {
                if let Some(log) = self.log.get() {
                    log.unsubscribe();
                }
            }
        }
        std::mem::take(&mut q.pieces)
    }

    /// Shut the queue (see [`Outbox::shut`]), drop what it held once the
    /// lock is released, and wake the writer to see the close.
    fn cut(&self, mut q: std::sync::MutexGuard<'_, Queue>) {
        let dropped = self.shut(&mut q);
        drop(q);
        drop(dropped);
        self.ready.notify_one();
    }

    /// Refuse further frames and drop what is queued (after a cut).
    pub fn close(&self) {
        self.cut(self.lock());
    }

    /// Bytes queued or in flight.
    pub fn queued_bytes(&self) -> usize {
        let end = self.log.get().map_or(0, |l| l.end());
        self.queued_at(end) as usize
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
    /// Called by the writer with nothing in hand: from a `true` until the
    /// next `false` the writer holds a batch, and nothing is written
    /// around it.
    fn take(&self, into: &mut VecDeque<Piece>) -> bool {
        // Read first: a writer that has just counted itself as waiting for
        // the log sees every frame of an append that did not see it.
        let _ = self.log.get().map(|l| l.end());
        let mut q = self.lock();
        let had = into.len();
        let q = &mut *q;
        let (stop, mark) = (q.log_stop(), q.stop);
        for Queued { at, piece } in q.pieces.drain(..) {
            if let Some(cursor) = &mut q.cursor {
                cursor.claim(at.min(stop), mark, into);
            }
            into.push_back(piece);
        }
        if let Some(cursor) = &mut q.cursor {
            cursor.claim(stop, mark, into);
        }
        q.bytes = 0;
        q.writing = into.len() > had;
        q.writing
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Write `frame` to socket `fd` without waiting: the bytes the socket
/// took (0 when it would block or failed: the frame is then queued, and
/// the writer meets the error, if any, and ends the connection).
fn send_now(fd: RawFd, frame: &Frame<'_>) -> usize {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendFlags};
    let (slices, n) = frame.slices();
    // SAFETY: the number is only read under the queue's lock, and it is
    // cleared under that lock before its socket can close (`Queue::direct`).
    let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    sendmsg(
        sock,
        &slices[..n],
        &mut SendAncillaryBuffer::default(),
        flags,
    )
    .unwrap_or(0)
}

#[path = "fanout_log.rs"]
mod log;
pub(crate) use log::FanoutLog;

#[path = "writer.rs"]
mod writer;
pub(crate) use writer::{WriteStop, Writer};

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
