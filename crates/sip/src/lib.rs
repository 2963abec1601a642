//! The SIP router host: transports, the message parser and transactions
//! (Kamailio's core and tm, re-done). It hands each request, reply and
//! resumed transaction to a routing trait and offers reply, relay, suspend
//! and continue to it. It knows nothing of Lua or of the evapi event
//! socket: those meet in the `script` crate, above this one.
//!
//! The message layer:
//!
//! - [`SipMessage::parse`] splits a message into its first line and header
//!   rows in one pass, over a shared [`bytes::Bytes`] buffer; typed values
//!   (Via, CSeq, From/To, URIs...) are parsed when read, from slices of that
//!   buffer. This is Kamailio's lazy design: a proxy reads a few headers of
//!   each message and forwards the rest untouched.
//! - [`frame_length`] cuts messages out of a stream transport.
//! - [`Editor`] writes a forwarded request with a list of edits, and
//!   [`SipMessage::response`], [`SipMessage::cancel`] and [`SipMessage::ack`]
//!   build the messages a proxy generates.
//!
//! The host ([`SipHost`]): UDP and TCP transports on tokio, router threads
//! running a [`Router`], and the transaction table (index and label,
//! suspend / continue, stateful relay, CANCEL, timers) driven through a
//! [`SipHandle`]. See the crate README for the flow.
//!
//! Nothing here panics on any input, and there is no `unsafe`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod edit;
mod error;
mod header;
mod host;
mod key;
mod lex;
mod message;
mod request;
mod router;
#[cfg(feature = "test-agent")]
pub mod testing;
mod tm;
mod transport;
mod uri;
mod values;

pub use config::{ConfigError, HostConfig, SipConfig, TmConfig};
pub use edit::{Edit, Editor};
pub use error::{ParseError, Shown};
pub use header::HeaderName;
pub use host::{BoundHost, SipHandle, SipHost, StartError};
pub use key::{TransactionKey, MAGIC_COOKIE};
pub use message::{frame_length, unfold, Method, SipMessage};
pub use request::{ConnId, EditError, Request, Source, Transport, TxRef};
pub use router::Router;
pub use tm::{TmError, TmStats};
pub use uri::{Scheme, Uri};
pub use values::{CSeq, NameAddr, Params, Via};

#[cfg(test)]
mod tests;
