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
mod tests {
    use super::*;

    fn decode_all(codec: &mut NetstringCodec, input: &[u8]) -> Result<Vec<Bytes>, NetstringError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn one_frame() {
        let mut c = NetstringCodec::default();
        assert_eq!(
            decode_all(&mut c, b"5:hello,").unwrap(),
            vec![Bytes::from_static(b"hello")]
        );
    }

    #[test]
    fn decode_slice_in_place() {
        let c = NetstringCodec::new(8);
        let wire = b"3:abc,\r\n0:,1";
        assert_eq!(c.decode_slice(wire).unwrap(), Some((&b"abc"[..], 6)));
        assert_eq!(c.decode_slice(&wire[6..]).unwrap(), Some((&b""[..], 5)));
        // Incomplete: the prefix, the data, or the comma still to come.
        assert_eq!(c.decode_slice(&wire[11..]).unwrap(), None);
        assert_eq!(c.decode_slice(b"3:ab").unwrap(), None);
        assert_eq!(c.decode_slice(b"3:abc").unwrap(), None);
        assert_eq!(c.decode_slice(b" \n").unwrap(), None);
        assert!(matches!(
            c.decode_slice(b"3:abcd"),
            Err(NetstringError::MissingComma {
                len: 3,
                found: b'd'
            })
        ));
        assert!(matches!(
            c.decode_slice(b"123"),
            Err(NetstringError::FrameTooLarge {
                len: 12,
                max: 8,
                ..
            })
        ));
        assert!(matches!(
            c.decode_slice(b"01:a,"),
            Err(NetstringError::LeadingZero)
        ));
        assert!(matches!(
            c.decode_slice(b"x"),
            Err(NetstringError::BadLengthByte(b'x'))
        ));
    }

    #[test]
    fn data_may_contain_commas_and_colons() {
        let mut c = NetstringCodec::default();
        let got = decode_all(&mut c, b"12:{\"a\":1,\"b\":2,3:x,y,").unwrap();
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"{\"a\":1,\"b\":2"),
                Bytes::from_static(b"x,y")
            ]
        );
    }

    #[test]
    fn merged_frames_and_white_space_between() {
        let mut c = NetstringCodec::default();
        let got = decode_all(&mut c, b"1:a,\r\n 2:bc,\t3:def,\n").unwrap();
        assert_eq!(got, vec!["a", "bc", "def"]);
    }

    #[test]
    fn empty_frame_is_keepalive() {
        let mut c = NetstringCodec::default();
        let got = decode_all(&mut c, b"0:,0:,1:x,").unwrap();
        assert_eq!(got, vec!["", "", "x"]);
    }

    #[test]
    fn split_at_every_byte() {
        let input = b"5:hello, 11:hello world,0:,3:a,b,";
        let expect = vec!["hello", "hello world", "", "a,b"];
        for split in 0..=input.len() {
            let mut c = NetstringCodec::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&input[..split], &input[split..]] {
                buf.extend_from_slice(part);
                while let Some(f) = c.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, expect, "split at {split}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = b"5:hello, 11:hello world,0:,3:a,b,";
        let mut c = NetstringCodec::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = c.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec!["hello", "hello world", "", "a,b"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn huge_length_is_refused_before_data() {
        let mut c = NetstringCodec::new(1024 * 1024);
        let err = decode_all(&mut c, b"2147483640:A").unwrap_err();
        assert!(
            matches!(
                err,
                NetstringError::FrameTooLarge {
                    partial: true,
                    max: 1048576,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn overflowing_length_is_refused() {
        // 30 digits would overflow any integer type; the limit stops it first.
        let mut c = NetstringCodec::new(usize::MAX);
        let err = decode_all(&mut c, b"999999999999999999999999999999:").unwrap_err();
        assert!(matches!(err, NetstringError::FrameTooLarge { .. }), "{err}");
        let mut c = NetstringCodec::new(100);
        let err = decode_all(&mut c, b"0000000000000000001:").unwrap_err();
        assert!(matches!(err, NetstringError::LeadingZero), "{err}");
    }

    #[test]
    fn limit_is_inclusive() {
        let mut c = NetstringCodec::new(3);
        assert_eq!(decode_all(&mut c, b"3:abc,").unwrap(), vec!["abc"]);
        let err = decode_all(&mut c, b"4:abcd,").unwrap_err();
        assert!(
            matches!(err, NetstringError::FrameTooLarge { len: 4, max: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn ten_digit_prefix_is_refused() {
        let mut c = NetstringCodec::default();
        let err = decode_all(&mut c, b"1234567890:").unwrap_err();
        assert!(matches!(err, NetstringError::FrameTooLarge { .. }), "{err}");
    }

    #[test]
    fn malformed_cases() {
        type Check = fn(&NetstringError) -> bool;
        let cases: &[(&[u8], Check)] = &[
            (b"x", |e| matches!(e, NetstringError::BadLengthByte(b'x'))),
            (b":5,", |e| matches!(e, NetstringError::BadLengthByte(b':'))),
            (b"-1:a,", |e| {
                matches!(e, NetstringError::BadLengthByte(b'-'))
            }),
            (b"5x:hello,", |e| {
                matches!(e, NetstringError::BadLengthDigit(b'x'))
            }),
            (b"5 :hello,", |e| {
                matches!(e, NetstringError::BadLengthDigit(b' '))
            }),
            (b"05:hello,", |e| matches!(e, NetstringError::LeadingZero)),
            (b"00:,", |e| matches!(e, NetstringError::LeadingZero)),
            (b"5:hello;", |e| {
                matches!(
                    e,
                    NetstringError::MissingComma {
                        len: 5,
                        found: b';'
                    }
                )
            }),
            (b"3:hello,", |e| {
                matches!(
                    e,
                    NetstringError::MissingComma {
                        len: 3,
                        found: b'l'
                    }
                )
            }),
            (b"1:a,garbage", |e| {
                matches!(e, NetstringError::BadLengthByte(b'g'))
            }),
        ];
        for (input, check) in cases {
            let mut c = NetstringCodec::default();
            let err = decode_all(&mut c, input).expect_err(&String::from_utf8_lossy(input));
            assert!(
                check(&err),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(input)
            );
            // Every error can be shown to a user.
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn eof_inside_a_frame_is_an_error() {
        let mut c = NetstringCodec::default();
        let mut buf = BytesMut::from(&b"5:hel"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(NetstringError::Truncated(3))
        ));
        let mut c = NetstringCodec::default();
        let mut buf = BytesMut::from(&b"1:a,\n "[..]);
        assert_eq!(c.decode_eof(&mut buf).unwrap().unwrap(), "a");
        assert!(c.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn encode_round_trip() {
        let mut c = NetstringCodec::default();
        let mut out = BytesMut::new();
        c.encode(b"hello", &mut out).unwrap();
        c.encode(b"", &mut out).unwrap();
        c.encode("a,b:c", &mut out).unwrap();
        assert_eq!(&out[..], b"5:hello,0:,5:a,b:c,");
        assert_eq!(
            decode_all(&mut c, &out).unwrap(),
            vec!["hello", "", "a,b:c"]
        );
        assert_eq!(NetstringCodec::frame(b"abc"), "3:abc,");
    }

    #[test]
    fn head_digits() {
        for (len, head) in [(0, "0:"), (9, "9:"), (10, "10:"), (1234567, "1234567:")] {
            assert_eq!(NetstringHead::new(len).as_bytes(), head.as_bytes());
        }
        let max = NetstringHead::new(usize::MAX);
        assert_eq!(max.as_bytes(), format!("{}:", usize::MAX).as_bytes());
    }

    #[test]
    fn raw_takes_what_is_there() {
        let mut c = RawCodec::new(4);
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "abcd");
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), "ef");
        assert!(c.decode(&mut buf).unwrap().is_none());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..256), max in 0usize..64) {
                let mut c = NetstringCodec::new(max);
                let mut buf = BytesMut::from(&input[..]);
                // Each call either makes progress, waits, or fails.
                for _ in 0..=input.len() {
                    match c.decode(&mut buf) {
                        Ok(Some(f)) => prop_assert!(f.len() <= max),
                        Ok(None) | Err(_) => break,
                    }
                }
            }

            #[test]
            fn decode_slice_agrees_with_decoder(
                input in proptest::collection::vec(
                    prop_oneof![Just(b'0'), Just(b'1'), Just(b'9'), Just(b':'), Just(b','), Just(b' '), Just(b'x')],
                    0..64,
                ),
                max in 0usize..32,
            ) {
                let c = NetstringCodec::new(max);
                let mut by_decoder = Vec::new();
                let mut d = NetstringCodec::new(max);
                let mut buf = BytesMut::from(&input[..]);
                let decoder_err = loop {
                    match d.decode(&mut buf) {
                        Ok(Some(f)) => by_decoder.push(f.to_vec()),
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                };
                let mut by_slice = Vec::new();
                let mut at = 0;
                let slice_err = loop {
                    match c.decode_slice(&input[at..]) {
                        Ok(Some((f, used))) => {
                            by_slice.push(f.to_vec());
                            at += used;
                        }
                        Ok(None) => break None,
                        Err(e) => break Some(e.to_string()),
                    }
                };
                prop_assert_eq!(by_slice, by_decoder);
                prop_assert_eq!(slice_err, decoder_err);
            }

            #[test]
            fn frames_survive_any_split(
                frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
                cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
            ) {
                let mut wire = BytesMut::new();
                for f in &frames {
                    encode_netstring(f, &mut wire);
                    wire.extend_from_slice(b"\r\n");
                }
                let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
                points.push(0);
                points.push(wire.len());
                points.sort();
                let mut c = NetstringCodec::new(64);
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for w in points.windows(2) {
                    buf.extend_from_slice(&wire[w[0]..w[1]]);
                    while let Some(f) = c.decode(&mut buf).unwrap() {
                        got.push(f.to_vec());
                    }
                }
                prop_assert_eq!(got, frames);
            }
        }
    }
}
