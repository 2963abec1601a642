//! Why a transaction operation failed.

use std::net::SocketAddr;

use crate::error::ParseError;
use crate::request::Transport;

/// Why a transaction operation failed. Each variant names the values
/// involved, so a log line or a script error is actionable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TmError {
    /// No transaction with this index and label exists (never did, or it
    /// ended).
    #[error("no transaction {index}:{label}")]
    NoTransaction {
        /// The index asked for.
        index: u32,
        /// The label asked for.
        label: u32,
    },
    /// The transaction exists but is not suspended (already continued,
    /// cancelled, timed out), or never existed: a continue that changes
    /// nothing.
    #[error("no suspended transaction {index}:{label}")]
    NotSuspended {
        /// The index asked for.
        index: u32,
        /// The label asked for.
        label: u32,
    },
    /// The transaction already sent a final reply.
    #[error("transaction {index}:{label} already has a final reply ({code})")]
    AlreadyReplied {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
        /// The final code it sent.
        code: u16,
    },
    /// The INVITE was cancelled; it may not be relayed any more.
    #[error("transaction {index}:{label} was cancelled")]
    Canceled {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
    },
    /// A relayed branch is still waiting for its final reply.
    #[error("transaction {index}:{label} has a branch in progress")]
    BranchPending {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
    },
    /// The transaction is already suspended.
    #[error("transaction {index}:{label} is already suspended")]
    AlreadySuspended {
        /// Its index.
        index: u32,
        /// Its label.
        label: u32,
    },
    /// ACK never creates a transaction (RFC 3261 §17): relay it
    /// statelessly with `t_relay`, or drop it.
    #[error("an ACK has no transaction of its own")]
    AckHasNoTransaction,
    /// The table holds `max` transactions already.
    #[error("transaction table full ({max} transactions)")]
    TableFull {
        /// The configured maximum.
        max: usize,
    },
    /// The request lacks what a transaction needs (Via, CSeq, Call-ID...).
    #[error("request unusable for a transaction: {0}")]
    BadRequest(ParseError),
    /// The relay destination cannot be used.
    #[error("cannot relay to {uri:?}: {reason}")]
    BadDestination {
        /// The destination or Request-URI.
        uri: String,
        /// Why.
        reason: String,
    },
    /// No listening socket of the transport and address family to send from.
    #[error("no {transport} socket to send to {addr}")]
    NoSocket {
        /// The transport wanted.
        transport: Transport,
        /// The destination.
        addr: SocketAddr,
    },
    /// Max-Forwards is 0: 483 was sent, the request is not forwarded.
    #[error("Max-Forwards reached 0; replied 483")]
    TooManyHops,
    /// A reply's status code is not a SIP status (100 to 699). `code` is
    /// the value the caller gave, before any narrowing.
    #[error("reply status {code} is not a SIP status (100 to 699)")]
    BadStatus {
        /// The code as given.
        code: i64,
    },
    /// Text that would go into a reply (its reason phrase, a header line
    /// set with `append_to_reply`, the body's Content-Type) contains a
    /// CR, LF or NUL, so it could end our line and write its own headers.
    #[error("{what} {text:?} contains CR, LF or NUL")]
    BadReplyText {
        /// Which part of the reply: `reason phrase`, `reply header`...
        what: &'static str,
        /// The text as given (escaped in the message).
        text: String,
    },
    /// An ACK is never answered (RFC 3261 §17; Kamailio's `sl_send_reply`
    /// fails on one too): nothing was sent.
    #[error("an ACK gets no reply")]
    ReplyToAck,
    /// The host is shutting down.
    #[error("the SIP host is shutting down")]
    ShuttingDown,
}
