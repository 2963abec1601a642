//! A relay to a name: the transaction and its branch number exist at once
//! ([`Tm::relay_resolving`]), the branch is sent when the host's resolver
//! answers ([`Tm::relay_resolved`]) or ends as if answered 478
//! Unresolvable Destination when it cannot ([`Tm::relay_unresolved`]).
//!
//! The table waits for nothing: the host runs the lookup on its runtime
//! and comes back through one of the two entry points with the time. In
//! between, the transaction is an entry like any other: retransmissions
//! get the last reply (an INVITE's 100), a CANCEL gets 200 and the INVITE
//! 487 (the branch is then never sent), its fr timer still runs (408 if it
//! comes first), and a final reply from the router ends it. A result for a
//! transaction that moved on is ignored.

use std::net::{IpAddr, SocketAddr};

use super::{tx_id, Action, Tm, TmError};
use crate::request::{Request, Transport, TxRef};

/// The code a branch ends with when its destination does not resolve
/// (Kamailio's too): the failure route sees it as the reply code.
pub(crate) const UNRESOLVABLE: u16 = 478;

impl Tm {
    /// Start a relay whose destination is still a name: 483 at
    /// Max-Forwards 0, the transaction created if needed, the request
    /// stored as the transaction's, a branch number taken. Returns the
    /// transaction and the branch number to come back with. Not for ACK
    /// (the host relays those statelessly once resolved).
    pub(crate) fn relay_resolving(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(TxRef, u32), TmError> {
        let (t, no) = self.begin_relay(req, now, out)?;
        if let Some(tx) = self.txs.get_mut(&tx_id(t)) {
            tx.resolving = Some(no);
            self.resolving += 1;
        }
        Ok((t, no))
    }

    /// Branch `no` of `t` is no longer waiting: whether the transaction
    /// still wants it sent (it is there, waiting for this branch, with no
    /// final reply and not cancelled).
    fn take_resolving(&mut self, t: TxRef, no: u32) -> bool {
        let Some(tx) = self.txs.get_mut(&tx_id(t)) else {
            return false;
        };
        if tx.resolving != Some(no) {
            return false;
        }
        tx.resolving = None;
        self.resolving -= 1;
        tx.open(t).is_ok()
    }

    /// The name of branch `no` of `t` resolved to `addr`: send the branch
    /// (our Via advertising `via_ip` on a wildcard listener), unless the
    /// transaction moved on meanwhile. A destination we have no socket
    /// for ends the branch as unresolvable.
    pub(crate) fn relay_resolved(
        &mut self,
        t: TxRef,
        no: u32,
        hop: (Transport, SocketAddr),
        via_ip: Option<IpAddr>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if !self.take_resolving(t, no) {
            return;
        }
        let sent = self
            .relay_dest(hop, via_ip)
            .and_then(|(dest, sent_by)| self.send_relay(t, no, dest, sent_by, now, out));
        if sent.is_err() {
            self.unresolvable(t, now, out);
        }
    }

    /// The name of branch `no` of `t` did not resolve in time (timeout, no
    /// such name, no address): the branch ends with 478, so the failure
    /// route runs if one is armed, else the request gets 478.
    pub(crate) fn relay_unresolved(&mut self, t: TxRef, no: u32, now: u64, out: &mut Vec<Action>) {
        if self.take_resolving(t, no) {
            self.unresolvable(t, now, out);
        }
    }

    fn unresolvable(&mut self, t: TxRef, now: u64, out: &mut Vec<Action>) {
        self.stats.unresolvable += 1;
        self.branch_ended(tx_id(t), UNRESOLVABLE, None, now, out);
    }
}
