//! Debug log lines for SIP messages on the wire: one line for each message
//! in and out, with its Call-ID, transport, peer, size and first line.
//!
//! Values from the wire go in as [`Excerpt`]s (escaped and cut), so a
//! message can never spread over several log lines or forge one. The work
//! (finding the Call-ID, escaping) is done only when a line is written:
//! with debug logging off, a call costs one level check.

use std::net::SocketAddr;

use lograte::Excerpt;
use tracing::{debug, enabled, Level};

use crate::request::{ConnId, Source, Transport};

/// How much of a first line is logged.
const LINE_MAX: usize = 160;
/// How much of a Call-ID is logged (real ones are far shorter).
const CALL_ID_MAX: usize = 128;

/// Log a message received (a datagram, or one frame of a stream).
pub(crate) fn incoming(data: &[u8], src: &Source) {
    if !enabled!(Level::DEBUG) {
        return;
    }
    debug!(
        transport = %src.transport,
        peer = %src.remote,
        local = %src.local,
        conn = src.conn,
        len = data.len(),
        call_id = %Excerpt::new(call_id(data).unwrap_or_default(), CALL_ID_MAX),
        line = %Excerpt::new(first_line(data), LINE_MAX),
        "SIP in"
    );
}

/// Log a message about to be sent.
pub(crate) fn outgoing(
    data: &[u8],
    transport: Transport,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    conn: Option<ConnId>,
) {
    if !enabled!(Level::DEBUG) {
        return;
    }
    debug!(
        transport = %transport,
        peer = %peer,
        local = local.map(tracing::field::display),
        conn,
        len = data.len(),
        call_id = %Excerpt::new(call_id(data).unwrap_or_default(), CALL_ID_MAX),
        line = %Excerpt::new(first_line(data), LINE_MAX),
        "SIP out"
    );
}

/// The first line, without its line break.
fn first_line(data: &[u8]) -> &[u8] {
    let end = memchr::memchr2(b'\r', b'\n', data).unwrap_or(data.len());
    &data[..end]
}

/// The value of the first `Call-ID` (or compact `i`) header of the header
/// section, trimmed; `None` when there is none.
fn call_id(data: &[u8]) -> Option<&[u8]> {
    let mut lines = data.split(|&b| b == b'\n').skip(1);
    lines.find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            // The end of the headers: stop looking (into the body).
            return Some(None);
        }
        let colon = memchr::memchr(b':', line)?;
        let name = line[..colon].trim_ascii_end();
        let is_call_id = name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i");
        is_call_id.then(|| Some(line[colon + 1..].trim_ascii()))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_call_id_long_or_compact_in_the_headers_only() {
        let m = b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nCALL-ID :  abc@h \r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(call_id(m), Some(&b"abc@h"[..]));
        let m = b"SIP/2.0 200 OK\nv: x\ni:short\n\n";
        assert_eq!(call_id(m), Some(&b"short"[..]));
        let m = b"MESSAGE sip:a SIP/2.0\r\nVia: x\r\n\r\nCall-ID: in-the-body\r\n";
        assert_eq!(call_id(m), None);
        assert_eq!(call_id(b"garbage"), None);
        assert_eq!(call_id(b""), None);
        assert_eq!(
            first_line(b"OPTIONS sip:x SIP/2.0\r\nVia: y"),
            b"OPTIONS sip:x SIP/2.0"
        );
        assert_eq!(first_line(b"no break"), b"no break");
    }
}
