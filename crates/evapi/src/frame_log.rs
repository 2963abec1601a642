//! Debug log lines for event frames: one for each message a client sends
//! and each frame queued for a client, with its connection index, peer,
//! size and the start of its data.
//!
//! A frame carries no Call-ID the socket knows of: events are opaque bytes
//! (the Call-ID is in them when the script put it there, as the default
//! script's JSON does, first). So the line shows the first
//! [`EXCERPT`] bytes, escaped so a frame cannot break or forge a log line.
//! Nothing is formatted unless debug logging is on.

use crate::registry::Client;
use lograte::Excerpt;
use tracing::{debug, enabled, Level};

/// How much of a frame's data a line shows.
pub(crate) const EXCERPT: usize = 200;

/// A message received from `client` (keep-alives excluded).
pub(crate) fn received(client: &Client, data: &[u8]) {
    if enabled!(Level::DEBUG) {
        debug!(
            conidx = client.conidx,
            peer = %client.peer,
            len = data.len(),
            data = %Excerpt::new(data, EXCERPT),
            "event frame in"
        );
    }
}

/// Whether frame lines are logged now: a relay asks once, not once per
/// recipient.
pub(crate) fn enabled() -> bool {
    enabled!(Level::DEBUG)
}

/// `data` (before framing) queued for `client`'s writer.
pub(crate) fn queued(client: &Client, data: &[u8]) {
    if enabled!(Level::DEBUG) {
        debug!(
            conidx = client.conidx,
            peer = %client.peer,
            len = data.len(),
            data = %Excerpt::new(data, EXCERPT),
            "event frame out"
        );
    }
}
