//! An event socket for SIP routers: the behaviour of Kamailio's EVAPI module
//! as a library.
//!
//! Applications connect over TCP and receive events (opaque byte strings,
//! usually JSON) that the router relays to all of them, to those with a
//! tag, or to one of a tag; they send messages back, which run handler code
//! on the router's side. Framing is netstrings (`LEN:DATA,`) or raw bytes.
//!
//! This crate knows nothing of SIP or of any script language: a router
//! implements [`EventHandler`] for the three events (connection-new,
//! message-received, connection-closed) and sends with an [`EvapiHandle`]
//! from any thread. A slow client never slows the others: each has its own
//! bounded queue and writer, and is cut when it falls too far behind.
//!
//! Operators see and close clients through the admin RPC methods
//! `evapi.list` and `evapi.close` ([`rpc::register`]).
//!
//! ```no_run
//! use evapi::{Config, EventContext, EventHandler, EventSocket};
//! use std::sync::Arc;
//!
//! struct Echo;
//! impl EventHandler for Echo {
//!     fn message_received(&self, ctx: &EventContext<'_>) {
//!         let msg = ctx.message().expect("message-received has a message");
//!         let _ = ctx.handle().relay(msg);
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let socket = EventSocket::bind(Config::default(), Arc::new(Echo)).await?;
//! socket.handle().relay(br#"{"event":"hello"}"#)?;
//! socket.shutdown().await;
//! # Ok(()) }
//! ```

pub mod access;
mod admit;
pub mod codec;
mod config;
mod connection;
mod frame_log;
mod handle;
mod handler;
mod outbox;
mod registry;
pub mod rpc;
mod server;
pub mod tls;

#[cfg(feature = "test-client")]
pub mod testing;

pub use config::{Config, ConfigError, Secret, MAX_CLIENTS_LIMIT, MAX_WORKERS};
pub use handle::{ClientInfo, EvapiHandle, RelayKind, SendError, Stats};
pub use handler::{ClientRef, Event, EventContext, EventHandler, NoHandler, TagError};
pub use registry::{CloseReason, MAX_TAG_LEN};
pub use server::{BoundSocket, EventSocket, StartError};
