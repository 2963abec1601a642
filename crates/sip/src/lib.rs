//! The SIP router host: transports, the message parser and transactions
//! (Kamailio's core and tm, re-done). It hands each request, each reply to
//! a relayed request and each failed branch to a routing trait
//! ([`Router`]), and offers reply, relay, suspend and continue through a
//! [`SipHandle`]. It knows nothing of Lua or of the evapi event socket:
//! those meet in the `script` crate, above this one.
//!
//! A suspended transaction is not handed back to the [`Router`]: whoever
//! calls [`SipHandle::t_continue`] (in the program, the event socket worker
//! that received the answer) gets the request back and goes on with it on
//! its own thread. See [`Router`] for why, and what ordering that keeps.
//!
//! The message layer:
//!
//! - [`SipMessage::parse`] splits a message into its first line and header
//!   rows in one pass, over a shared [`bytes::Bytes`] buffer; typed values
//!   (Via, CSeq, From/To, URIs...) are parsed when read, from slices of that
//!   buffer. This is Kamailio's lazy design: a proxy reads a few headers of
//!   each message and forwards the rest untouched.
//! - [`StreamFramer`] cuts messages out of a stream transport, resuming
//!   where the last read stopped ([`frame_length`] for a buffer seen once).
//! - [`Editor`] writes a forwarded request with a list of edits, and
//!   [`SipMessage::response`], [`SipMessage::cancel`] and [`SipMessage::ack`]
//!   build the messages a proxy generates.
//!
//! The host ([`SipHost`]): UDP and TCP transports on tokio, router threads
//! running a [`Router`], and the transaction table (index and label,
//! suspend / continue, stateful relay, CANCEL, timers) driven through a
//! [`SipHandle`]. It starts in two phases: [`SipHost::bind`] checks the
//! settings ([`HostConfig`]: the config file's `[sip]` and `[tm]`
//! sections, [`SipConfig`] and [`TmConfig`]) and binds the sockets; the
//! [`BoundHost`]'s handle can be given to whatever the router is built
//! from; [`BoundHost::start`] then starts routing. See the crate README for
//! the flow.
//!
//! Operators reach the transaction table through the admin RPC methods
//! `tm.list` and `tm.reply` ([`rpc::register`]).
//!
//! The location table ([`usrloc`], Kamailio's usrloc and the registrar's
//! rules) is held by the host ([`SipHandle::usrloc`]), sized by the
//! `[usrloc]` section ([`UsrlocConfig`]).
//!
//! The dialog table ([`dialog`], Kamailio's dialog module) is held by the
//! host too ([`SipHandle::dialogs`]), sized by `[dialog]`
//! ([`DialogConfig`]); its events reach [`Router::dialog_event`], its
//! admin methods are `dlg.*` ([`dialog::rpc::register`]).
//!
//! Modules depend one way: `config` ← `transport` ← `host`; the
//! transaction table (`tm`) and the message layer depend on neither.
//!
//! Nothing here panics on any input, and there is no `unsafe`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod dialog;
mod edit;
mod error;
#[cfg(feature = "test-agent")]
pub mod fake_dns;
mod header;
mod host;
mod key;
mod lex;
mod message;
mod myself;
mod request;
mod router;
pub mod rpc;
mod rr;
pub mod sanity;
#[cfg(feature = "test-agent")]
pub mod testing;
mod tm;
mod transport;
mod tx_routes;
mod uri;
pub mod usrloc;
mod values;

pub use config::{ConfigError, HostConfig, SipConfig, TmConfig};
pub use dialog::{DialogConfig, DialogEvent, DialogInfo, Dialogs, DlgId};
pub use edit::{Edit, Editor};
pub use error::{ParseError, Shown};
pub use header::HeaderName;
pub use host::{BoundHost, SipHandle, SipHost, StartError};
pub use key::{AsKeyRef, KeyRef, TransactionKey, MAGIC_COOKIE};
pub use message::{frame_length, unfold, Method, SipMessage, StreamFramer};
pub use myself::Myself;
pub use request::{ConnId, EditError, Request, Source, Transport, TxRef};
pub use router::Router;
pub use rr::{IsMyself, LooseRoute};
pub use tm::{
    check_reply, class_slot, method_slot, TmError, TmStats, WaitHistogram, COUNTED_METHODS,
    REPLY_CLASSES, SUSPEND_WAIT_BOUNDS_MS,
};
pub use uri::{Scheme, Uri};
pub use usrloc::{Usrloc, UsrlocConfig};
pub use values::{CSeq, NameAddr, Params, Via};

#[cfg(test)]
mod tests;
