//! Framing of stream transports (TCP): where each message ends, found in
//! one pass over the bytes however they are cut into reads.

use super::scan::{content_end, content_length_of, leading_crlf, scan_headers};
use crate::error::ParseError;

/// Cuts messages out of a stream, resuming each search where the previous
/// call stopped, so the work is linear in the bytes received: a message
/// sent one byte per segment costs what it costs in one piece. (Restarting
/// from the first byte on each read made a 10,000-header message sent
/// byte by byte cost 1.6 s of CPU.)
///
/// Give [`StreamFramer::next_frame`] the stream's unconsumed bytes, with
/// only new bytes appended between calls, until it returns `Some(n)`; then
/// remove the first `n` bytes: the framer has started over for the next
/// message.
///
/// The limit on the message size is part of every call: without it a peer
/// could make us buffer without end by never ending its headers or by
/// announcing a huge body.
#[derive(Debug, Default)]
pub struct StreamFramer {
    /// Start of the header line whose end has not been seen yet: the
    /// header section ends when a line starting here is empty.
    line_start: usize,
    /// Where the search for the next line feed resumes: the bytes before
    /// it have been looked at once and are not looked at again.
    next_index: usize,
    /// Once the header section is whole: the length of the whole message
    /// (header section plus Content-Length), so later calls only wait for
    /// the buffer to reach it.
    total: Option<usize>,
    /// Bytes looked at, to check in tests that the work stays linear.
    #[cfg(test)]
    pub(crate) examined: usize,
}

impl StreamFramer {
    /// A framer at the start of a stream.
    pub fn new() -> StreamFramer {
        StreamFramer::default()
    }

    /// How many bytes of `buf` the first message occupies.
    ///
    /// - `Ok(None)`: more bytes are needed.
    /// - `Ok(Some(n))`: the first `n` bytes are one frame. If `buf` starts
    ///   with CR/LF bytes, the frame is just those bytes: a keep-alive (RFC
    ///   5626) or stray line breaks between messages, to be dropped.
    /// - `Err`: the stream cannot be framed any further (bad or missing
    ///   Content-Length, a header section or message larger than `max`);
    ///   the connection should be closed.
    pub fn next_frame(&mut self, buf: &[u8], max: usize) -> Result<Option<usize>, ParseError> {
        if let Some(total) = self.total {
            return Ok(self.done_if(buf.len() >= total, total));
        }
        if self.next_index == 0 {
            let lead = leading_crlf(buf);
            self.look(lead + 1);
            if lead > 0 {
                return Ok(Some(lead));
            }
        }
        // Find the empty line first: scanning rows of a partial section
        // would report a missing colon on a half-received line.
        let head_end = loop {
            let rest = buf.get(self.next_index..).unwrap_or_default();
            match memchr::memchr(b'\n', rest) {
                None => {
                    self.look(rest.len());
                    self.next_index = buf.len();
                    if buf.len() > max {
                        return Err(ParseError::TooLarge {
                            len: buf.len() as u64,
                            max,
                        });
                    }
                    return Ok(None);
                }
                Some(n) => {
                    self.look(n + 1);
                    let nl = self.next_index + n;
                    let start = self.line_start;
                    self.line_start = nl + 1;
                    self.next_index = nl + 1;
                    if start > 0 && content_end(buf, start, nl) == start {
                        break nl + 1;
                    }
                }
            }
        };
        if head_end > max {
            return Err(ParseError::TooLarge {
                len: head_end as u64,
                max,
            });
        }
        // One pass over the whole header section, once per message.
        self.look(head_end);
        let first_nl = memchr::memchr(b'\n', buf).unwrap_or(0);
        let mut rows = Vec::with_capacity(16);
        let (_, body_start) = scan_headers(&buf[..head_end], first_nl + 1, &mut rows)?;
        let cl =
            content_length_of(buf, &rows)?.ok_or(ParseError::MissingHeader("Content-Length"))?;
        let total = (body_start as u64).saturating_add(cl);
        if total > max as u64 {
            return Err(ParseError::TooLarge { len: total, max });
        }
        // `total <= max`, so it fits usize.
        let total = total as usize;
        self.total = Some(total);
        Ok(self.done_if(buf.len() >= total, total))
    }

    /// `Some(total)` and a fresh start for the next message when `whole`.
    fn done_if(&mut self, whole: bool, total: usize) -> Option<usize> {
        if !whole {
            return None;
        }
        *self = StreamFramer {
            #[cfg(test)]
            examined: self.examined,
            ..StreamFramer::default()
        };
        Some(total)
    }

    #[inline]
    fn look(&mut self, _n: usize) {
        #[cfg(test)]
        {
            self.examined += _n;
        }
    }
}

/// The first message's length in `buf`, looked for from the first byte
/// (see [`StreamFramer::next_frame`] for the answers): for a buffer seen
/// once. A stream read piece by piece should keep a [`StreamFramer`], which
/// does not look at the same bytes twice.
pub fn frame_length(buf: &[u8], max: usize) -> Result<Option<usize>, ParseError> {
    StreamFramer::new().next_frame(buf, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn many_headers(n: usize) -> Vec<u8> {
        let mut m = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        for i in 0..n {
            m.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        m.extend_from_slice(b"Content-Length: 5\r\n\r\nhello");
        m
    }

    /// A 10,000-header message fed one byte at a time: found once, at its
    /// last byte, with each byte looked at a bounded number of times.
    #[test]
    fn byte_by_byte_work_is_linear() {
        let msg = many_headers(10_000);
        let mut f = StreamFramer::new();
        for end in 1..msg.len() {
            assert_eq!(f.next_frame(&msg[..end], 1 << 20), Ok(None), "at {end}");
        }
        assert_eq!(f.next_frame(&msg, 1 << 20), Ok(Some(msg.len())));
        assert!(
            f.examined < 4 * msg.len(),
            "{} bytes examined for a message of {}",
            f.examined,
            msg.len()
        );
        // A restarted scan, as before, looks at each prefix again.
        let restarted: usize = (1..=msg.len() / 100)
            .map(|k| {
                let mut f = StreamFramer::new();
                let _ = f.next_frame(&msg[..k * 100], 1 << 20);
                f.examined
            })
            .sum();
        assert!(restarted > 40 * msg.len(), "{restarted}");
    }

    /// One long header line fed byte by byte: the partial line is not
    /// searched again on each call.
    #[test]
    fn a_long_line_byte_by_byte_is_linear() {
        let mut msg = b"OPTIONS sip:a@b SIP/2.0\r\nX: ".to_vec();
        msg.extend(std::iter::repeat_n(b'y', 50_000));
        msg.extend_from_slice(b"\r\nl: 0\r\n\r\n");
        let mut f = StreamFramer::new();
        for end in 1..msg.len() {
            assert_eq!(f.next_frame(&msg[..end], 1 << 20), Ok(None));
        }
        assert_eq!(f.next_frame(&msg, 1 << 20), Ok(Some(msg.len())));
        assert!(f.examined < 4 * msg.len(), "{}", f.examined);
    }

    #[test]
    fn the_limit_holds_while_resuming() {
        let msg = many_headers(100);
        let mut f = StreamFramer::new();
        let r = (1..=msg.len())
            .map(|end| f.next_frame(&msg[..end], 512))
            .find(|r| r != &Ok(None));
        assert!(matches!(r, Some(Err(ParseError::TooLarge { .. }))), "{r:?}");
    }

    fn stream() -> Vec<u8> {
        let mut s = b"\r\n\r\n".to_vec();
        s.extend_from_slice(b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\nX: y\r\n\r\nabc");
        s.extend_from_slice(b"\nINFO sip:a@b SIP/2.0\nContent-Length:\n 2\n\nab");
        s.extend_from_slice(&many_headers(50));
        s.extend_from_slice(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        s
    }

    /// Line breaks between messages come as frames of their own, as many
    /// as the reads cut them into: compare the messages only.
    fn is_message(f: &[u8]) -> bool {
        !f.iter().all(|&c| c == b'\r' || c == b'\n')
    }

    /// Messages as a one-shot `frame_length` cuts them.
    fn frames_at_once(mut s: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(Some(n)) = frame_length(s, 4096) {
            out.push(s[..n].to_vec());
            s = &s[n..];
        }
        out.retain(|f| is_message(f));
        out
    }

    proptest! {
        /// Any cut of a stream into reads gives the frames found in one
        /// piece.
        #[test]
        fn any_cut_gives_the_same_frames(cuts in proptest::collection::vec(1usize..64, 1..200)) {
            let s = stream();
            let want = frames_at_once(&s);
            let mut got = Vec::new();
            let (mut f, mut buf, mut fed) = (StreamFramer::new(), Vec::new(), 0);
            let mut sizes = cuts.into_iter().cycle();
            while fed < s.len() {
                let n = sizes.next().unwrap_or(1).min(s.len() - fed);
                buf.extend_from_slice(&s[fed..fed + n]);
                fed += n;
                while let Some(n) = f.next_frame(&buf, 4096).unwrap() {
                    got.push(buf.drain(..n).collect::<Vec<u8>>());
                }
            }
            prop_assert!(buf.is_empty());
            got.retain(|f| is_message(f));
            prop_assert_eq!(got.len(), 4);
            prop_assert_eq!(got, want);
        }
    }
}
