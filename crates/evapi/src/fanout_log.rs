//! The log of frames relayed to every client, read by all their writers.
//!
//! A small frame relayed to every client (no tag) is appended once to this
//! log instead of being copied into each client's queue: the relaying
//! thread then does the same work for two clients as for ten thousand (one
//! copy under one lock, no per-client lock or copy), and every writer hands
//! the kernel the same bytes, which stay in cache for all of them. Each
//! client's writer reads the log at its own place (a [`Cursor`]), between
//! the frames queued for that client alone, in the order they were relayed
//! (see [`super::Outbox::take`]).
//!
//! The log is a chain of fixed-size chunks. Only the chunk at the end is
//! written to, by the relaying thread holding the log's lock; the bytes of
//! a chunk below its committed length never change again, so writers read
//! them without a lock. A chunk lives as long as a cursor (or a write in
//! progress) still needs it: memory held is what the slowest client has
//! yet to write, once for all clients, not once per client.
//!
//! Each client's queue limit still holds for the log's bytes: the log
//! keeps the position up to which no client can pass its limit, and only a
//! relay that would pass it checks every client ([`FanoutLog::append`]).

use super::{Frame, Piece};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::Notify;

/// Bytes of one chunk of the log (a frame is never split across two: the
/// largest frame that goes through the log is [`super::COPY_MAX`]).
pub(crate) const LOG_CHUNK: usize = 64 * 1024;

const _: () = assert!(super::COPY_MAX <= LOG_CHUNK);

/// One chunk of the log.
pub(crate) struct Chunk {
    /// Log position of the chunk's first byte.
    start: u64,
    /// [`LOG_CHUNK`] bytes, owned (freed on drop).
    data: NonNull<u8>,
    /// Frames and bytes committed: `frames << 32 | len`. Bytes below `len`
    /// are written and never change again.
    committed: AtomicU64,
    /// The chunk after this one, set once this one is full; its length is
    /// final from then on.
    next: OnceLock<Arc<Chunk>>,
}

// SAFETY: the bytes behind `data` are written only by the log's appender,
// holding the log's lock, and only above the committed length; readers
// make slices only below it (`Chunk::bytes` checks), so no byte is read
// and written at once.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (frames, len) = self.committed();
        f.debug_struct("Chunk")
            .field("start", &self.start)
            .field("frames", &frames)
            .field("len", &len)
            .finish()
    }
}

fn pack(frames: u64, len: usize) -> u64 {
    frames << 32 | len as u64
}

fn unpack(v: u64) -> (u64, usize) {
    (v >> 32, (v & 0xffff_ffff) as usize)
}

impl Chunk {
    fn new(start: u64) -> Arc<Chunk> {
        let data = Box::into_raw(vec![0u8; LOG_CHUNK].into_boxed_slice());
        Arc::new(Chunk {
            start,
            // A Box is never null.
            data: NonNull::new(data.cast::<u8>()).expect("a Box is not null"),
            committed: AtomicU64::new(0),
            next: OnceLock::new(),
        })
    }

    /// Frames and bytes committed so far.
    fn committed(&self) -> (u64, usize) {
        unpack(self.committed.load(Ordering::Acquire))
    }

    /// Committed bytes `from..to` of the chunk.
    pub(crate) fn bytes(&self, from: usize, to: usize) -> &[u8] {
        let (_, len) = self.committed();
        assert!(from <= to && to <= len, "only committed bytes are read");
        // SAFETY: in bounds (len <= LOG_CHUNK), and committed bytes are
        // never written again while the chunk lives.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().add(from), to - from) }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.data.as_ptr(), LOG_CHUNK);
        // SAFETY: made by `Box::into_raw` of a slice of this length in
        // `Chunk::new`, and freed only here.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// A client's place in the log: the next byte it is to be given.
#[derive(Debug)]
pub(crate) struct Cursor {
    chunk: Arc<Chunk>,
    off: usize,
    /// Frames of `chunk` before `off` already counted into a piece.
    counted: u64,
}

impl Cursor {
    /// Log position of the next byte.
    pub(crate) fn pos(&self) -> u64 {
        self.chunk.start + self.off as u64
    }

    /// Move the committed bytes from here up to log position `until` into
    /// `into`, as pieces for the writer. A piece counts the frames of its
    /// chunk once it reaches what was committed when it was made, or the
    /// end `mark` describes; frames cut off otherwise are counted with a
    /// later piece.
    pub(super) fn claim(&mut self, until: u64, mark: Option<End>, into: &mut VecDeque<Piece>) {
        loop {
            let (frames, len) = self.chunk.committed();
            let want = until.saturating_sub(self.chunk.start);
            let stop = len.min(usize::try_from(want).unwrap_or(usize::MAX));
            if stop > self.off {
                let upto = match mark {
                    _ if stop == len => Some(frames),
                    Some(m) if m.pos == until && m.chunk_start == self.chunk.start => {
                        Some(m.frames)
                    }
                    _ => None,
                };
                into.push_back(Piece::Log {
                    chunk: self.chunk.clone(),
                    from: self.off,
                    to: stop,
                    frames: upto.map_or(0, |f| f - self.counted),
                });
                if let Some(f) = upto {
                    self.counted = f;
                }
                self.off = stop;
            }
            if self.off < len || self.pos() >= until {
                return;
            }
            let Some(next) = self.chunk.next.get() else {
                return;
            };
            // Full: its length is final now that `next` is seen.
            if self.chunk.committed().1 > self.off {
                continue;
            }
            self.chunk = next.clone();
            self.off = 0;
            self.counted = 0;
        }
    }
}

/// Where the log ended at some moment: its position, and the frames
/// committed to its last chunk then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End {
    pub pos: u64,
    chunk_start: u64,
    frames: u64,
}

/// The log of one event socket.
#[derive(Debug)]
pub(crate) struct FanoutLog {
    /// The chunk being appended to; held while appending.
    tail: Mutex<Arc<Chunk>>,
    /// Log position after the last committed frame.
    end: AtomicU64,
    /// Clients reading the log now.
    readers: AtomicUsize,
    /// No client passes its queue limit while the log ends at or below
    /// this position (as far as the log knows: a frame queued for a client
    /// alone lowers it, see [`FanoutLog::lower_check`]).
    check_at: AtomicU64,
    /// Writers waiting for the log to grow.
    sleepers: AtomicUsize,
    pub(crate) wake: Notify,
}

impl Default for FanoutLog {
    fn default() -> Self {
        FanoutLog {
            tail: Mutex::new(Chunk::new(0)),
            end: AtomicU64::new(0),
            readers: AtomicUsize::new(0),
            check_at: AtomicU64::new(u64::MAX),
            sleepers: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }
}

impl FanoutLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Arc<Chunk>> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Log position after the last committed frame.
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::SeqCst)
    }

    /// A cursor at the end of the log, for a new reader (counted).
    pub(crate) fn subscribe(&self) -> Cursor {
        let tail = self.lock();
        let (frames, len) = tail.committed();
        self.readers.fetch_add(1, Ordering::Relaxed);
        Cursor {
            chunk: tail.clone(),
            off: len,
            counted: frames,
        }
    }

    /// Where the log ends now (taking the appenders' lock).
    pub(crate) fn end_mark(&self) -> End {
        let tail = self.lock();
        let (frames, len) = tail.committed();
        End {
            pos: tail.start + len as u64,
            chunk_start: tail.start,
            frames,
        }
    }

    /// Clients reading the log now.
    #[cfg(test)]
    pub(crate) fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    /// A reader stopped reading.
    pub(crate) fn unsubscribe(&self) {
        self.readers.fetch_sub(1, Ordering::Relaxed);
    }

    /// A reader may pass its limit once the log passes `pos`.
    pub(crate) fn lower_check(&self, pos: u64) {
        if pos < self.check_at.load(Ordering::Acquire) {
            self.check_at.fetch_min(pos, Ordering::AcqRel);
        }
    }

    /// Append `frame` (at most [`super::COPY_MAX`] bytes) for every reader,
    /// and wake the writers waiting for it. When the log would pass the
    /// position up to which every reader is known to be within its limit,
    /// `check(new_end)` first looks at every reader (cutting those the
    /// frame would take past their limit, which then stop reading) and
    /// returns how much more the log may grow before any of them must be
    /// looked at again (the least of their shares of the room left, see
    /// `split_room` in the outbox). Returns how many readers the frame is
    /// for.
    pub(crate) fn append(&self, frame: &Frame<'_>, check: impl FnOnce(u64) -> u64) -> usize {
        let len = frame.len();
        debug_assert!(len <= super::COPY_MAX);
        let mut tail = self.lock();
        let end = self.end.load(Ordering::Relaxed);
        let new_end = end + len as u64;
        if new_end > self.check_at.load(Ordering::Acquire) {
            // A frame queued for a client alone while the check runs lowers
            // the mark again after this store (it does so under that
            // client's lock, which the check takes too).
            self.check_at.store(u64::MAX, Ordering::SeqCst);
            let room = check(new_end);
            self.check_at
                .fetch_min(new_end.saturating_add(room), Ordering::AcqRel);
        }
        let (mut frames, mut used) = tail.committed();
        if used + len > LOG_CHUNK {
            let next = Chunk::new(tail.start + used as u64);
            let _ = tail.next.set(next.clone());
            *tail = next;
            (frames, used) = (0, 0);
        }
        // SAFETY: `used + len <= LOG_CHUNK`, and bytes at or above the
        // committed length are touched by nobody but this appender, which
        // holds the lock.
        let mut dst: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(tail.data.as_ptr().add(used), len) };
        frame.put_into(&mut dst);
        debug_assert!(dst.is_empty());
        tail.committed
            .store(pack(frames + 1, used + len), Ordering::Release);
        self.end.store(new_end, Ordering::SeqCst);
        let readers = self.readers.load(Ordering::Relaxed);
        drop(tail);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.wake.notify_waiters();
        }
        readers
    }

    /// Count a writer as waiting for the log until the guard drops. A
    /// writer registers its wake-up first, then this, then looks at the
    /// log once more: an append either sees it waiting (and wakes it) or
    /// was already visible to that look.
    pub(crate) fn sleeping(&self) -> Sleeping<'_> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        Sleeping(self)
    }
}

/// A writer waiting for the log (see [`FanoutLog::sleeping`]).
pub(crate) struct Sleeping<'a>(&'a FanoutLog);

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        self.0.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}
