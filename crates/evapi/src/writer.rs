//! The writer that empties a client's [`Outbox`]: the whole queue taken at
//! once and handed to the kernel with `writev`, resuming exactly where an
//! interrupted write stopped.

use super::{Outbox, Piece};
use crate::handle::Counters;
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

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
/// of [`CHUNK`](super::CHUNK) bytes (a megabyte, more than a socket takes at once) or
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
                let Some(log) = out.log.get() else {
                    out.ready.notified().await;
                    continue;
                };
                // Waiting for a frame for this client alone, or for the
                // fan-out log to grow: registered with the log before
                // looking at it once more (see `FanoutLog::sleeping`).
                let grown = log.wake.notified();
                tokio::pin!(grown);
                grown.as_mut().enable();
                let _sleeping = log.sleeping();
                if out.take(&mut self.batch) {
                    continue;
                }
                tokio::select! {
                    _ = grown => {}
                    _ = out.ready.notified() => {}
                }
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
