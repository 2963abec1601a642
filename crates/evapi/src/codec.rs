//! Framing of event-socket messages: netstrings (`LEN:DATA,`) and raw chunks.
//!
//! These types only turn bytes into frames and back: no sockets, no logging,
//! no policy. They are tested byte by byte without a runtime.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::{fmt, io};
use tokio_util::codec::{Decoder, Encoder};

/// Default largest frame the decoder accepts, in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// Why a netstring stream was refused. After any of these the stream is out
/// of step (there is no way to know where the next frame starts), so the
/// connection must be closed rather than resynchronised.
#[derive(Debug, thiserror::Error)]
pub enum NetstringError {
    /// A byte other than a digit where the length prefix was expected.
    #[error("netstring length starts with byte 0x{0:02x} ({p})", p = printable(*.0))]
    BadLengthByte(u8),
    /// A digit or ':' was expected inside the length prefix.
    #[error("netstring length contains byte 0x{0:02x} ({p})", p = printable(*.0))]
    BadLengthDigit(u8),
    /// Leading zeros are not allowed (`05:hello,`): only `0:,` may start with 0.
    #[error("netstring length has a leading zero")]
    LeadingZero,
    /// The announced length is over the configured limit; refused as soon as
    /// the prefix passes the limit, before any data is buffered.
    #[error("netstring frame of {len}{more} bytes is over the limit of {max} bytes", more = if *.partial { " or more" } else { "" })]
    FrameTooLarge {
        /// The length read so far (a lower bound when `partial`).
        len: u64,
        /// The configured limit.
        max: usize,
        /// The prefix was still being read when it passed the limit.
        partial: bool,
    },
    /// The byte after the data was not the closing ','.
    #[error("netstring of {len} bytes not closed by ',' (found byte 0x{found:02x} ({p}))", p = printable(*.found))]
    MissingComma {
        /// Length of the frame.
        len: usize,
        /// The byte found where ',' belonged.
        found: u8,
    },
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed inside a netstring frame ({0} bytes pending)")]
    Truncated(usize),
    /// Reading from the socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

fn printable(b: u8) -> impl fmt::Display {
    struct P(u8);
    impl fmt::Display for P {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.0.is_ascii_graphic() {
                write!(f, "'{}'", self.0 as char)
            } else {
                f.write_str("not printable")
            }
        }
    }
    P(b)
}

/// Where the decoder stands in the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: white space is skipped, a digit starts a prefix.
    Between,
    /// Inside the length prefix; `len` is the value of the digits seen.
    Length { len: u64, digits: u8 },
    /// Prefix complete; waiting for `len` data bytes plus the ','.
    Data { len: usize },
}

/// A strict, resumable netstring codec with a frame size limit.
///
/// Decoding yields the data of each frame (`0:,` yields an empty `Bytes`,
/// which callers treat as a keep-alive). Between frames, spaces, tabs, CR and
/// LF are skipped, as the original evapi module does.
///
/// The limit matters: without one, a peer announcing a length of two
/// gigabytes would make us buffer without bound. The limit is checked while
/// the length digits arrive, so such a prefix is refused after a few bytes.
#[derive(Debug, Clone)]
pub struct NetstringCodec {
    max_frame: usize,
    state: State,
    /// Bytes of the buffer already looked at in the current state, so that a
    /// frame arriving in many small reads is scanned once, not once per read.
    next_index: usize,
}

impl NetstringCodec {
    /// A codec that refuses frames whose data is longer than `max_frame`.
    pub fn new(max_frame: usize) -> Self {
        NetstringCodec {
            max_frame,
            state: State::Between,
            next_index: 0,
        }
    }

    /// The frame size limit in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Decode `reads` as consecutive reads from one stream, and return
    /// every frame, or the first error. For tools and tests that hold a
    /// whole stream (fuzzing, replaying captures).
    pub fn decode_reads(&mut self, reads: &[&[u8]]) -> Result<Vec<Bytes>, NetstringError> {
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for read in reads {
            buf.extend_from_slice(read);
            while let Some(frame) = self.decode(&mut buf)? {
                frames.push(frame);
            }
        }
        Ok(frames)
    }

    /// Decode the frame at the start of `buf` in place: its data and the
    /// number of bytes it took (white space before it included), or `None`
    /// while the frame is not complete. The rules and errors are those of
    /// [`Decoder::decode`], but nothing is copied or reference-counted and
    /// no state is kept between calls: a reader that owns a large buffer
    /// calls it once per frame and drops the bytes taken itself (an
    /// incomplete frame's prefix is scanned again after the next read, so
    /// this suits big reads; the limit still refuses an oversized prefix as
    /// soon as its digits pass it).
    pub fn decode_slice<'a>(
        &self,
        buf: &'a [u8],
    ) -> Result<Option<(&'a [u8], usize)>, NetstringError> {
        let Some(start) = buf
            .iter()
            .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        else {
            return Ok(None);
        };
        if !buf[start].is_ascii_digit() {
            return Err(NetstringError::BadLengthByte(buf[start]));
        }
        let mut len: u64 = 0;
        let mut at = start;
        loop {
            let Some(&b) = buf.get(at) else {
                return Ok(None);
            };
            at += 1;
            match b {
                b'0'..=b'9' => {
                    if at - start == 2 && len == 0 {
                        return Err(NetstringError::LeadingZero);
                    }
                    let next = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(u64::from(b - b'0')));
                    let Some(next) = next.filter(|l| *l <= self.max_frame as u64) else {
                        return Err(NetstringError::FrameTooLarge {
                            len: next.unwrap_or(u64::MAX),
                            max: self.max_frame,
                            partial: true,
                        });
                    };
                    len = next;
                }
                b':' => break,
                other => return Err(NetstringError::BadLengthDigit(other)),
            }
        }
        let len = len as usize;
        if buf.len() - at <= len {
            return Ok(None);
        }
        if buf[at + len] != b',' {
            return Err(NetstringError::MissingComma {
                len,
                found: buf[at + len],
            });
        }
        Ok(Some((&buf[at..at + len], at + len + 1)))
    }

    /// Frame `data` as a netstring in one new buffer.
    pub fn frame(data: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(data.len() + 12);
        encode_netstring(data, &mut out);
        out.freeze()
    }
}

impl Default for NetstringCodec {
    fn default() -> Self {
        NetstringCodec::new(DEFAULT_MAX_FRAME)
    }
}

/// Append `LEN:DATA,` to `out`.
pub fn encode_netstring(data: &[u8], out: &mut BytesMut) {
    let head = NetstringHead::new(data.len());
    out.reserve(head.as_bytes().len() + data.len() + 1);
    out.put_slice(head.as_bytes());
    out.put_slice(data);
    out.put_u8(b',');
}

/// The `LEN:` that starts a netstring, built without allocating (a frame
/// is `head`, the data, then `,`).
#[derive(Debug, Clone, Copy)]
pub struct NetstringHead {
    /// Decimal digits of the length then ':', right-aligned: a `usize` has
    /// at most 20 digits.
    bytes: [u8; 21],
    start: u8,
}

impl NetstringHead {
    /// The head of a netstring carrying `len` bytes of data.
    pub fn new(mut len: usize) -> Self {
        // Written backwards: this runs once per relay, so it avoids the
        // formatting machinery.
        let mut bytes = [0u8; 21];
        let mut at = bytes.len() - 1;
        bytes[at] = b':';
        loop {
            at -= 1;
            bytes[at] = b'0' + (len % 10) as u8;
            len /= 10;
            if len == 0 {
                break;
            }
        }
        NetstringHead {
            bytes,
            start: at as u8,
        }
    }

    /// `LEN:` as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start as usize..]
    }
}

impl Decoder for NetstringCodec {
    type Item = Bytes;
    type Error = NetstringError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, NetstringError> {
        loop {
            match self.state {
                State::Between => {
                    let skip = buf
                        .iter()
                        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
                    let Some(skip) = skip else {
                        buf.clear();
                        return Ok(None);
                    };
                    buf.advance(skip);
                    let first = buf[0];
                    if !first.is_ascii_digit() {
                        return Err(NetstringError::BadLengthByte(first));
                    }
                    self.state = State::Length { len: 0, digits: 0 };
                    self.next_index = 0;
                }
                State::Length {
                    mut len,
                    mut digits,
                } => {
                    while self.next_index < buf.len() {
                        let b = buf[self.next_index];
                        self.next_index += 1;
                        match b {
                            b'0'..=b'9' => {
                                if digits == 1 && len == 0 {
                                    return Err(NetstringError::LeadingZero);
                                }
                                let next = len
                                    .checked_mul(10)
                                    .and_then(|l| l.checked_add(u64::from(b - b'0')));
                                digits = digits.saturating_add(1);
                                // Checked per digit, so a prefix is refused as
                                // soon as it passes the limit (or u64).
                                let Some(next) = next.filter(|l| *l <= self.max_frame as u64)
                                else {
                                    return Err(NetstringError::FrameTooLarge {
                                        len: next.unwrap_or(u64::MAX),
                                        max: self.max_frame,
                                        partial: true,
                                    });
                                };
                                len = next;
                            }
                            b':' => {
                                buf.advance(self.next_index);
                                self.next_index = 0;
                                self.state = State::Data { len: len as usize };
                                break;
                            }
                            other => return Err(NetstringError::BadLengthDigit(other)),
                        }
                    }
                    if let State::Length { .. } = self.state {
                        self.state = State::Length { len, digits };
                        return Ok(None);
                    }
                }
                State::Data { len } => {
                    if buf.len() <= len {
                        buf.reserve(len + 1 - buf.len());
                        return Ok(None);
                    }
                    if buf[len] != b',' {
                        return Err(NetstringError::MissingComma {
                            len,
                            found: buf[len],
                        });
                    }
                    let data = buf.split_to(len).freeze();
                    buf.advance(1);
                    self.state = State::Between;
                    return Ok(Some(data));
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, NetstringError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if self.state == State::Between => Ok(None),
            None => Err(NetstringError::Truncated(buf.len())),
        }
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for NetstringCodec {
    type Error = io::Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), io::Error> {
        encode_netstring(item.as_ref(), dst);
        Ok(())
    }
}

/// The codec for `netstring_format = 0`: every chunk read from the socket is
/// one message, and messages are sent as they are.
///
/// TCP does not keep the sender's write boundaries: a message may arrive
/// split over two reads, or two messages in one. This mode exists for
/// compatibility with clients of the original module; prefer netstrings.
#[derive(Debug, Clone)]
pub struct RawCodec {
    max_frame: usize,
}

impl RawCodec {
    /// A raw codec whose chunks are at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        RawCodec {
            max_frame: max_frame.max(1),
        }
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = NetstringError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, NetstringError> {
        if buf.is_empty() {
            return Ok(None);
        }
        let n = buf.len().min(self.max_frame);
        Ok(Some(buf.split_to(n).freeze()))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for RawCodec {
    type Error = io::Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), io::Error> {
        dst.extend_from_slice(item.as_ref());
        Ok(())
    }
}

/// Either codec, chosen by `netstring_format`.
#[derive(Debug, Clone)]
pub enum FrameCodec {
    /// `netstring_format = 1`.
    Netstring(NetstringCodec),
    /// `netstring_format = 0`.
    Raw(RawCodec),
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = NetstringError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, NetstringError> {
        match self {
            FrameCodec::Netstring(c) => c.decode(buf),
            FrameCodec::Raw(c) => c.decode(buf),
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, NetstringError> {
        match self {
            FrameCodec::Netstring(c) => c.decode_eof(buf),
            FrameCodec::Raw(c) => c.decode_eof(buf),
        }
    }
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
