//! [`SipHandle`]: the host's operations, from any thread.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Shared;
use crate::request::{Request, Transport, TxRef};
use crate::tm::{build_reply, check_reply, Tm, TmError, TmStats};
use crate::transport::{lock, resolve_hop, route_ip};

/// The host's operations, callable from any thread (router threads, event
/// socket workers, tests): none of them waits on a socket.
///
/// A handle works from [`crate::SipHost::bind`] on, before the host
/// starts routing: [`SipHandle::stats`] and [`SipHandle::local_addrs`]
/// answer at once, and what it sends goes out (nothing is received until
/// the host starts). It keeps the table and the sockets alive, not the
/// [`crate::Router`].
#[derive(Clone)]
pub struct SipHandle {
    pub(super) shared: Arc<Shared>,
}

impl From<Arc<Shared>> for SipHandle {
    fn from(shared: Arc<Shared>) -> Self {
        SipHandle { shared }
    }
}

impl std::fmt::Debug for SipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipHandle").finish_non_exhaustive()
    }
}

impl SipHandle {
    /// Reply statelessly (Kamailio's `sl_send_reply`): no transaction is
    /// created, retransmissions of the request reach the router again.
    ///
    /// `code` is taken wide (a script's integer as it is) so that the check
    /// sees the real value: outside 100..=699 fails with
    /// [`TmError::BadStatus`]; a CR, LF or NUL in `reason` or in the reply
    /// headers fails with [`TmError::BadReplyText`]; an ACK fails with
    /// [`TmError::ReplyToAck`]. Nothing is sent on error.
    pub fn sl_reply(&self, req: &Request, code: i64, reason: &str) -> Result<(), TmError> {
        let code = check_reply(req, code, reason)?;
        let tag = (code > 100).then_some(self.shared.sl_tag.as_bytes());
        let data = build_reply(req, code, reason, tag, true)?;
        self.shared.net.send(&Tm::reply_dest(req), data, None);
        Ok(())
    }

    /// Create the request's transaction (idempotent; an INVITE's sends 100
    /// Trying). Sets [`Request::tx`].
    pub fn t_newtran(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.shared.tm_op(|tm, now, out| tm.newtran(req, now, out))
    }

    /// Whether a transaction exists for the request (for a CANCEL: for it
    /// or for the INVITE it cancels).
    pub fn t_check_trans(&self, req: &Request) -> bool {
        lock(&self.shared.tm).exists(req)
    }

    /// Reply on the request's transaction, creating it if needed. A
    /// provisional can be followed by more replies; a final one ends a
    /// suspension and a pending branch.
    ///
    /// `code` and `reason` are checked as for [`SipHandle::sl_reply`],
    /// before the transaction is created: nothing is sent on error.
    pub fn t_reply(&self, req: &mut Request, code: i64, reason: &str) -> Result<(), TmError> {
        self.shared
            .tm_op(|tm, now, out| tm.reply(req, code, reason, now, out))
    }

    /// Relay statefully to the destination URI if set, else the
    /// Request-URI, creating the transaction if needed (an ACK is relayed
    /// statelessly). With Max-Forwards 0, replies 483 and fails.
    pub fn t_relay(&self, req: &mut Request) -> Result<(), TmError> {
        let hop = resolve_hop(&req.next_hop()).map_err(|e| TmError::BadDestination {
            uri: e.uri,
            reason: e.reason,
        })?;
        // A wildcard listener has no address to advertise: ask the routing
        // table which local address reaches the next hop.
        let via_ip = if self.shared.net.wildcard {
            route_ip(hop.1)
        } else {
            None
        };
        self.shared
            .tm_op(|tm, now, out| tm.relay(req, hop, via_ip, now, out))
    }

    /// Suspend the request's transaction (created if needed) and return
    /// the pair that names it. Retransmissions are absorbed meanwhile; with
    /// no continue it ends with 408 at fr_timer / fr_inv_timer.
    pub fn t_suspend(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.shared.tm_op(|tm, now, out| tm.suspend(req, now, out))
    }

    /// Take a suspended request back by its index and label, with the edits
    /// made before it was suspended; its transaction is no longer
    /// suspended, and the caller goes on with it (t_reply, t_relay...). A
    /// wrong, cancelled, timed-out or already continued pair fails and
    /// changes nothing.
    pub fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        lock(&self.shared.tm).resume(index, label)
    }

    /// Whether the request's INVITE transaction was cancelled (Kamailio's
    /// `t_is_canceled`, e.g. in a failure route).
    pub fn t_is_canceled(&self, req: &Request) -> bool {
        lock(&self.shared.tm).is_canceled(req)
    }

    /// Counters of the transaction table.
    pub fn stats(&self) -> TmStats {
        lock(&self.shared.tm).stats()
    }

    /// The location table (Kamailio's usrloc), shared by every handle of
    /// this host.
    pub fn usrloc(&self) -> &Arc<crate::usrloc::Usrloc> {
        &self.shared.usrloc
    }

    /// The bound sockets.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        lock(&self.shared.tm).listeners()
    }
}
