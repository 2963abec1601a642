//! What the `KSR` functions need from the crates below: the SIP host
//! ([`SipOps`]), the event socket ([`EventOps`]), NATS ([`NatsOps`], when
//! `[nats]` is on) and the client of the current evapi event
//! ([`EventClient`]).
//!
//! The engine is given these when it is built, so there is no window in
//! which a script runs without them. They are traits, not the concrete
//! handles, so each `KSR` module can be tested against a fake that records
//! what it was asked to do; [`sip::SipHandle`], [`evapi::EvapiHandle`] and
//! [`evapi::ClientRef`] implement them by forwarding. A call through them
//! is one dynamic dispatch, nothing more.

use evapi::{ClientRef, EvapiHandle, SendError, TagError};
use sip::{Request, SipHandle, TmError, TxRef};
use std::net::SocketAddr;

/// The SIP host operations `KSR.sl`, `KSR.tm`, `KSR.tmx` and
/// `KSR.evapi.async_*` act through (Kamailio's sl and tm). Called on the
/// thread running the script; none of them may wait on a socket.
pub trait SipOps: Send + Sync {
    /// Reply statelessly.
    fn sl_reply(&self, req: &Request, code: i64, reason: &str) -> Result<(), TmError>;
    /// Create the request's transaction (idempotent).
    fn t_newtran(&self, req: &mut Request) -> Result<TxRef, TmError>;
    /// Whether a transaction exists for the request.
    fn t_check_trans(&self, req: &Request) -> bool;
    /// Whether the request's INVITE transaction was cancelled.
    fn t_is_canceled(&self, req: &Request) -> bool {
        let _ = req;
        false
    }
    /// Reply on the request's transaction, creating it if needed.
    fn t_reply(&self, req: &mut Request, code: i64, reason: &str) -> Result<(), TmError>;
    /// Relay statefully to `$du`, else the Request-URI.
    fn t_relay(&self, req: &mut Request) -> Result<(), TmError>;
    /// Suspend the request's transaction (created if needed).
    fn t_suspend(&self, req: &mut Request) -> Result<TxRef, TmError>;
    /// Take a suspended request back by index and label.
    fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError>;
    /// Whether `host` (and `port`, when the URI had one) names this host
    /// (Kamailio's `myself`): see [`sip::Myself`] for the rules (listen addresses, loopback, `[sip] alias`).
    fn is_myself(&self, host: &str, port: Option<u16>) -> bool;
    /// The location table (`KSR.registrar`); `None`: the host has none.
    fn usrloc(&self) -> Option<&sip::Usrloc> {
        None
    }
    /// The dialog table (`KSR.dialog`, `$dlg`); `None`: the host has none.
    fn dialogs(&self) -> Option<&sip::Dialogs> {
        None
    }
}

/// The event socket operations `KSR.evapi.*` send through. Called on the
/// thread running the script; none of them waits on a client's socket.
pub trait EventOps: Send + Sync {
    /// Send to every client; how many it was queued for.
    fn relay(&self, data: &[u8]) -> Result<usize, SendError>;
    /// Send to every client whose tag is `tag`.
    fn multicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError>;
    /// Send to the first client of `tag`.
    fn unicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError>;
    /// Send to one client of `tag`, taking them in turn.
    fn unicast_round_robin(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError>;
    /// Clients connected.
    fn client_count(&self) -> usize;
    /// Clients connected with this tag.
    fn tag_count(&self, tag: &[u8]) -> usize;
}

/// The NATS side of the event socket (`[nats]`): the evapi sends over
/// NATS, and `KSR.nats.*`. Called on the thread running the script; none
/// of them waits (a send is queued or refused at once).
pub trait NatsOps: Send + Sync {
    /// Whether the client is connected now.
    fn connected(&self) -> bool;
    /// Publish `data` on `subject` (reply subject `reply`, if given).
    fn publish(
        &self,
        subject: &str,
        data: &[u8],
        reply: Option<&str>,
    ) -> Result<(), nats::SendError>;
    /// An evapi send over NATS; `watch`: report no responders with
    /// `evapi:no-responders`.
    fn send(
        &self,
        kind: nats::SendKind,
        data: &[u8],
        tag: &[u8],
        watch: bool,
    ) -> Result<(), nats::SendError>;
}

impl NatsOps for nats::NatsHandle {
    fn connected(&self) -> bool {
        nats::NatsHandle::connected(self)
    }
    fn publish(
        &self,
        subject: &str,
        data: &[u8],
        reply: Option<&str>,
    ) -> Result<(), nats::SendError> {
        nats::NatsHandle::publish(self, subject, data, reply)
    }
    fn send(
        &self,
        kind: nats::SendKind,
        data: &[u8],
        tag: &[u8],
        watch: bool,
    ) -> Result<(), nats::SendError> {
        nats::NatsHandle::send(self, kind, data, tag, watch)
    }
}

/// The client of the evapi event being handled (`KSR.evapi.close`,
/// `KSR.evapi.set_tag`, `$evapi(srcaddr)`, ...).
pub trait EventClient {
    /// Whether the event came over NATS (a worker's answer,
    /// `evapi:no-responders`): then `$evapi(srcaddr)` is `"nats"`,
    /// `$evapi(conidx)` -1, and `close`/`set_tag` fail with -1.
    fn via_nats(&self) -> bool {
        false
    }
    /// Its connection index.
    fn conidx(&self) -> usize;
    /// Its address and port.
    fn peer(&self) -> SocketAddr;
    /// Set or replace its tag.
    fn set_tag(&self, tag: &[u8]) -> Result<(), TagError>;
    /// Close its connection.
    fn close(&self);
}

impl SipOps for SipHandle {
    fn sl_reply(&self, req: &Request, code: i64, reason: &str) -> Result<(), TmError> {
        SipHandle::sl_reply(self, req, code, reason)
    }
    fn t_newtran(&self, req: &mut Request) -> Result<TxRef, TmError> {
        SipHandle::t_newtran(self, req)
    }
    fn t_check_trans(&self, req: &Request) -> bool {
        SipHandle::t_check_trans(self, req)
    }
    fn t_is_canceled(&self, req: &Request) -> bool {
        SipHandle::t_is_canceled(self, req)
    }
    fn t_reply(&self, req: &mut Request, code: i64, reason: &str) -> Result<(), TmError> {
        SipHandle::t_reply(self, req, code, reason)
    }
    fn t_relay(&self, req: &mut Request) -> Result<(), TmError> {
        SipHandle::t_relay(self, req)
    }
    fn t_suspend(&self, req: &mut Request) -> Result<TxRef, TmError> {
        SipHandle::t_suspend(self, req)
    }
    fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        SipHandle::t_continue(self, index, label)
    }
    fn is_myself(&self, host: &str, port: Option<u16>) -> bool {
        SipHandle::is_myself(self, host, port)
    }
    fn usrloc(&self) -> Option<&sip::Usrloc> {
        Some(SipHandle::usrloc(self))
    }
    fn dialogs(&self) -> Option<&sip::Dialogs> {
        Some(SipHandle::dialogs(self))
    }
}

impl EventOps for EvapiHandle {
    fn relay(&self, data: &[u8]) -> Result<usize, SendError> {
        EvapiHandle::relay(self, data)
    }
    fn multicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        EvapiHandle::multicast(self, data, tag)
    }
    fn unicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        EvapiHandle::unicast(self, data, tag)
    }
    fn unicast_round_robin(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        EvapiHandle::unicast_round_robin(self, data, tag)
    }
    fn client_count(&self) -> usize {
        EvapiHandle::client_count(self)
    }
    fn tag_count(&self, tag: &[u8]) -> usize {
        EvapiHandle::tag_count(self, tag)
    }
}

impl EventClient for ClientRef {
    fn conidx(&self) -> usize {
        ClientRef::conidx(self)
    }
    fn peer(&self) -> SocketAddr {
        ClientRef::peer(self)
    }
    fn set_tag(&self, tag: &[u8]) -> Result<(), TagError> {
        ClientRef::set_tag(self, tag)
    }
    fn close(&self) {
        ClientRef::close(self)
    }
}
