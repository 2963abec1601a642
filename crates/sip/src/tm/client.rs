//! The client side of a transaction: the branch we relay, its
//! retransmissions and CANCEL, and the replies coming back from downstream.

use std::hash::BuildHasher;
use std::net::SocketAddr;

use bytes::Bytes;

use super::branch_id::BranchId;
use super::server::ServerState;
use super::timers::{Timer, TimerKey, Timers};
use super::{tx_id, Action, Dest, Tm, TmError};
use crate::edit::Edit;
use crate::message::{Method, SipMessage};
use crate::request::{Request, Transport, TxRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClientState {
    /// Request sent, nothing received.
    Calling,
    /// A provisional received.
    Proceeding,
    /// A final >= 300 received (INVITE: ACKed), or timed out / failed.
    Completed,
    /// A 2xx received: later 2xx retransmissions are forwarded.
    Accepted,
}

#[derive(Debug)]
pub(super) struct CancelState {
    pub(super) data: Bytes,
    pub(super) interval: u64,
    pub(super) tries: u32,
    pub(super) done: bool,
}

#[derive(Debug)]
pub(super) struct Branch {
    pub(super) no: u32,
    pub(super) data: Bytes,
    /// The request as sent, for building its CANCEL and ACK.
    pub(super) sent: SipMessage,
    pub(super) dest: Dest,
    pub(super) state: ClientState,
    pub(super) interval: u64,
    /// A CANCEL is owed but no provisional came yet (RFC 3261 §9.1: wait
    /// for one before sending it).
    pub(super) cancel_wanted: bool,
    pub(super) cancel: Option<CancelState>,
}

impl Branch {
    pub(super) fn active(&self) -> bool {
        matches!(self.state, ClientState::Calling | ClientState::Proceeding)
    }
}

/// The reason phrase of a final reply we make for a branch that ended
/// with no reply: timed out, unresolvable, or not sent.
fn local_reason(code: u16) -> &'static str {
    match code {
        408 => "Request Timeout",
        478 => "Unresolvable Destination",
        _ => "Service Unavailable",
    }
}

impl Tm {
    pub(super) fn start_cancel(
        b: &mut Branch,
        timers: &mut Timers,
        slots: &mut [Option<TimerKey>; 6],
        id: u64,
        t1: u64,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        if b.cancel.is_some() {
            return;
        }
        b.cancel_wanted = false;
        let Ok(data) = b.sent.cancel() else { return };
        out.push(Action::Send {
            dest: b.dest.clone(),
            data: data.clone(),
            branch: None,
        });
        if !b.dest.transport.is_reliable() {
            timers.arm(slots, id, Timer::CRetrans, now + t1);
        }
        b.cancel = Some(CancelState {
            data,
            interval: t1,
            tries: 0,
            done: false,
        });
    }

    /// Our socket to relay from: the first listener of the transport and
    /// address family.
    fn pick_local(&self, transport: Transport, addr: SocketAddr) -> Result<SocketAddr, TmError> {
        self.cfg
            .listeners
            .iter()
            .find(|(t, a)| *t == transport && a.is_ipv4() == addr.is_ipv4())
            .map(|(_, a)| *a)
            .ok_or(TmError::NoSocket { transport, addr })
    }

    /// Relay the request statefully to `hop` (already resolved from the
    /// destination URI or Request-URI). ACK is relayed statelessly.
    /// `via_ip`: the address to put in our Via when the listener is bound
    /// to a wildcard address (the host looks up the route to `hop`).
    pub(crate) fn relay(
        &mut self,
        req: &mut Request,
        hop: (Transport, SocketAddr),
        via_ip: Option<std::net::IpAddr>,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let (dest, sent_by) = self.relay_dest(hop, via_ip)?;
        if req.msg().method() == Some(&Method::Ack) {
            self.relay_ack(req, &dest, sent_by, out);
            return Ok(());
        }
        let (t, no) = self.begin_relay(req, now, out)?;
        self.send_relay(t, no, dest, sent_by, now, out)
    }

    /// The part of a relay that needs no destination address: 483 at
    /// Max-Forwards 0, the transaction (created if needed), a new branch
    /// number, and the request stored as the transaction's.
    pub(super) fn begin_relay(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(TxRef, u32), TmError> {
        if !req.max_forwards_set() && req.msg().max_forwards() == Ok(Some(0)) {
            self.reply(req, 483, "Too Many Hops", now, out)?;
            return Err(TmError::TooManyHops);
        }
        let t = self.newtran(req, now, out)?;
        let no = self.next_branch(t)?;
        self.store_relayed(t, req);
        Ok((t, no))
    }

    /// Send branch `no` of transaction `t`: the stored request with our
    /// Via on top, to `dest`.
    pub(super) fn send_relay(
        &mut self,
        t: TxRef,
        no: u32,
        dest: Dest,
        sent_by: SocketAddr,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let via = Self::our_via(
            dest.transport,
            sent_by,
            BranchId::Relay {
                seed: self.seed,
                index: t.index,
                label: t.label,
                no,
            },
        );
        let out_sock = Some((dest.transport, sent_by));
        let data = self.tx_mut(t)?.req.serialize_for_relay(&via, out_sock);
        let sent = SipMessage::parse(data.clone()).map_err(TmError::BadRequest)?;
        self.send_branch(tx_id(t), no, dest, data, sent, now, out);
        Ok(())
    }

    /// Where a relay goes, and the address our Via advertises.
    pub(super) fn relay_dest(
        &self,
        (transport, addr): (Transport, SocketAddr),
        via_ip: Option<std::net::IpAddr>,
    ) -> Result<(Dest, SocketAddr), TmError> {
        let local = self.pick_local(transport, addr)?;
        let sent_by = match via_ip {
            Some(ip) if local.ip().is_unspecified() => SocketAddr::new(ip, local.port()),
            _ => local,
        };
        let dest = Dest {
            transport,
            addr,
            local: Some(local),
            conn: None,
        };
        Ok((dest, sent_by))
    }

    fn our_via(transport: Transport, sent_by: SocketAddr, branch: BranchId) -> String {
        use std::fmt::Write;
        // Sized once: `format!` grows its string by reallocs.
        let mut via = String::with_capacity(112);
        let _ = write!(
            via,
            "SIP/2.0/{} {sent_by};branch={branch}",
            transport.via_name()
        );
        via
    }

    /// An ACK goes on statelessly: its branch only has to be the same for
    /// the same ACK, so it is derived from the incoming one.
    pub(super) fn relay_ack(
        &self,
        req: &Request,
        dest: &Dest,
        sent_by: SocketAddr,
        out: &mut Vec<Action>,
    ) {
        let hash = self.hasher.hash_one(
            req.msg()
                .top_via()
                .ok()
                .and_then(|v| v.branch)
                .unwrap_or_default(),
        );
        let branch = BranchId::Ack {
            seed: self.seed,
            hash,
        };
        let via = Self::our_via(dest.transport, sent_by, branch);
        Self::send(
            out,
            dest,
            req.serialize_for_relay(&via, Some((dest.transport, sent_by))),
        );
    }

    /// Check the transaction may get a new branch and number it.
    fn next_branch(&mut self, t: TxRef) -> Result<u32, TmError> {
        let tx = self.tx_mut(t)?;
        tx.open(t)?;
        if tx.relaying() {
            return Err(TmError::BranchPending {
                index: t.index,
                label: t.label,
            });
        }
        tx.branches += 1;
        Ok(tx.branches)
    }

    /// The relayed request becomes the transaction's request (a failure
    /// route sees it with the router's edits); it is no longer suspended,
    /// and the failure route armed for this relay is used up.
    fn store_relayed(&mut self, t: TxRef, req: &mut Request) {
        let Some(tx) = self.txs.get_mut(&tx_id(t)) else {
            return;
        };
        if tx.stash.take().is_some() {
            self.suspended -= 1;
        }
        let mut stored = req.clone();
        stored.tx = Some(t);
        tx.req = stored;
        req.failure_route = None;
        tx.in_failure = false;
    }

    /// Send a new branch and arm its timers (Timer A/E over UDP, and the
    /// fr timer until a provisional comes).
    #[allow(clippy::too_many_arguments)]
    fn send_branch(
        &mut self,
        id: u64,
        no: u32,
        dest: Dest,
        data: Bytes,
        sent: SipMessage,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let (t1, fr) = (self.cfg.t1, self.cfg.fr);
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        self.timers.disarm(&mut tx.timers, Timer::Fr);
        out.push(Action::Send {
            dest: dest.clone(),
            data: data.clone(),
            branch: Some((id, no)),
        });
        if !dest.transport.is_reliable() {
            self.timers
                .arm(&mut tx.timers, id, Timer::BRetrans, now + t1);
        }
        self.timers
            .arm(&mut tx.timers, id, Timer::BTimeout, now + fr);
        self.timers.disarm(&mut tx.timers, Timer::CRetrans);
        tx.branch = Some(Box::new(Branch {
            no,
            data,
            sent,
            dest,
            state: ClientState::Calling,
            interval: t1,
            cancel_wanted: false,
            cancel: None,
        }));
        self.stats.relayed += 1;
    }

    /// Which of our branches a reply answers: (transaction id, branch
    /// number), from the branch we wrote in its top Via.
    pub(crate) fn match_reply(&self, msg: &SipMessage) -> Option<(u64, u32)> {
        let via = msg.top_via().ok()?;
        let BranchId::Relay {
            seed,
            index,
            label,
            no,
        } = BranchId::parse(via.branch?)?
        else {
            return None;
        };
        if seed != self.seed {
            return None;
        }
        let id = tx_id(TxRef { index, label });
        let tx = self.txs.get(&id)?;
        (tx.branch.as_ref()?.no == no).then_some((id, no))
    }

    /// The reply route armed on transaction `id` (from its relayed
    /// request) and that request, for a reply to one of its branches; a
    /// reply to our CANCEL runs none.
    pub(crate) fn reply_route_of(&self, id: u64, msg: &SipMessage) -> Option<(String, Request)> {
        if msg.cseq().map(|c| c.method) == Ok(Method::Cancel) {
            return None;
        }
        let tx = self.txs.get(&id)?;
        let route = tx.req.reply_route()?.to_owned();
        let mut req = tx.req.clone();
        req.tx = Some(tx.tref);
        Some((route, req))
    }

    /// A reply from downstream, matched by [`Tm::match_reply`].
    ///
    /// The host matches a reply once to run the reply routes, then calls
    /// this: the transaction may have ended in between (its wait timer
    /// fired while a route ran). Such a reply is forwarded by its Via, as
    /// one that matched nothing is, so a 2xx retransmission is not lost.
    pub(crate) fn on_reply(&mut self, msg: &SipMessage, now: u64, out: &mut Vec<Action>) {
        let Some(code) = msg.status() else { return };
        let Some((id, _)) = self.match_reply(msg) else {
            if let Ok((dest, data)) = self.stateless_dest(msg) {
                self.forward_stateless(dest, data, code, out);
            }
            return;
        };
        self.stats.branch_replies += 1;
        let (t1, fr_inv) = (self.cfg.t1, self.cfg.fr_inv);
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(b) = tx.branch.as_mut() else { return };
        if msg.cseq().map(|c| c.method) == Ok(Method::Cancel) {
            if let Some(c) = b.cancel.as_mut() {
                c.done = true;
                self.timers.disarm(&mut tx.timers, Timer::CRetrans);
            }
            return;
        }
        let strip = || msg.edit().with(Edit::RemoveFirstVia).serialize();
        let to_tag = || msg.to().ok().and_then(|t| t.tag).map(Box::<[u8]>::from);
        match (b.state, code) {
            (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                let first = b.state == ClientState::Calling;
                b.state = ClientState::Proceeding;
                if tx.invite {
                    // Timer A stops; Timer C (fr_inv_timer) replaces B.
                    self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                    if first {
                        self.timers
                            .arm(&mut tx.timers, id, Timer::BTimeout, now + fr_inv);
                    }
                    if b.cancel_wanted {
                        Self::start_cancel(b, &mut self.timers, &mut tx.timers, id, t1, now, out);
                    }
                }
                if code > 100 && tx.state == ServerState::Proceeding {
                    let r = strip();
                    self.stats.relayed_reply(code);
                    Self::send(out, &tx.dest, r.clone());
                    tx.last = Some(r);
                    tx.code = code;
                }
            }
            (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                b.state = ClientState::Accepted;
                self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                self.timers.disarm(&mut tx.timers, Timer::BTimeout);
                self.timers.disarm(&mut tx.timers, Timer::CRetrans);
                if tx.state == ServerState::Proceeding {
                    if tx.stash.take().is_some() {
                        self.suspended -= 1;
                    }
                    self.stats.relayed_reply(code);
                    self.send_final(id, strip(), code, to_tag(), now, out);
                } else {
                    // A proxy forwards every 2xx (RFC 3261 §16.7 step 5).
                    self.stats.relayed_reply(code);
                    Self::send(out, &tx.dest, strip());
                }
            }
            (ClientState::Accepted, 200..=299) => {
                self.stats.relayed_reply(code);
                Self::send(out, &tx.dest, strip());
            }
            (ClientState::Completed, 200..=299) => {
                // A 2xx after the branch timed out or was cancelled: the
                // callee answered, so the caller must see it (RFC 3261
                // §16.7 step 5), whatever was sent upstream before.
                b.state = ClientState::Accepted;
                self.stats.relayed_reply(code);
                Self::send(out, &tx.dest, strip());
            }
            (ClientState::Calling | ClientState::Proceeding, _) => {
                b.state = ClientState::Completed;
                self.timers.disarm(&mut tx.timers, Timer::BRetrans);
                self.timers.disarm(&mut tx.timers, Timer::BTimeout);
                if tx.invite {
                    if let Ok(ack) = b.sent.ack(msg) {
                        Self::send(out, &b.dest, ack);
                    }
                }
                self.branch_ended(id, code, Some(msg.clone()), now, out);
            }
            (ClientState::Completed, 300..=699) if tx.invite => {
                // A retransmitted final: our ACK was lost.
                if let Ok(ack) = b.sent.ack(msg) {
                    Self::send(out, &b.dest, ack);
                }
            }
            _ => {}
        }
    }

    /// A branch ended without success: run the failure route if one is
    /// armed, else forward the best final reply.
    pub(super) fn branch_ended(
        &mut self,
        id: u64,
        code: u16,
        reply: Option<SipMessage>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        // 6xx wins (a global failure), then the lowest code.
        let rank = |c: u16| (c < 600, c);
        let better = tx.best.as_ref().is_none_or(|b| rank(code) < rank(b.0));
        if better {
            tx.best = Some(Box::new((code, reply)));
        }
        if tx.state != ServerState::Proceeding {
            return;
        }
        if let Some(route) = tx.req.failure_route.take() {
            let mut r = tx.req.clone();
            r.failure_code = Some(code);
            r.tx = Some(tx.tref);
            r.routes.failure_reason = Some(match tx.best.as_deref() {
                Some((c, Some(m))) if *c == code => {
                    String::from_utf8_lossy(m.reason().unwrap_or_default()).into_owned()
                }
                _ => local_reason(code).to_owned(),
            });
            r.routes.failure_local =
                !matches!(tx.best.as_deref(), Some((c, Some(_))) if *c == code);
            r.routes.branch_index = tx.branches.saturating_sub(1);
            tx.in_failure = true;
            out.push(Action::Failure {
                id,
                req: Box::new(r),
                route,
            });
        } else {
            self.send_best(id, now, out);
        }
    }

    fn send_best(&mut self, id: u64, now: u64, out: &mut Vec<Action>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        match tx.best.take().map(|b| *b) {
            Some((code, Some(reply))) => {
                let data = reply.edit().with(Edit::RemoveFirstVia).serialize();
                let tag = reply.to().ok().and_then(|t| t.tag).map(Box::<[u8]>::from);
                self.stats.relayed_reply(code);
                self.send_final(id, data, code, tag, now, out);
            }
            Some((code, None)) => {
                let _ = self.local_final(id, code, local_reason(code), now, out);
            }
            None => {
                let _ = self.local_final(id, 500, "Server Internal Error", now, out);
            }
        }
    }

    /// The failure route of transaction `id` returned: if it neither
    /// replied, relayed nor suspended, forward the best final reply.
    pub(crate) fn failure_done(&mut self, id: u64, now: u64, out: &mut Vec<Action>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        if !tx.in_failure {
            return;
        }
        tx.in_failure = false;
        if tx.state == ServerState::Proceeding && !tx.relaying() && tx.stash.is_none() {
            self.send_best(id, now, out);
        }
    }

    /// Sending branch `no` of transaction `id` failed (connect refused,
    /// unreachable): the branch ends as if with 503.
    pub(crate) fn send_failed(&mut self, id: u64, no: u32, now: u64, out: &mut Vec<Action>) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let Some(b) = tx.branch.as_mut().filter(|b| b.no == no && b.active()) else {
            return;
        };
        b.state = ClientState::Completed;
        self.timers.disarm(&mut tx.timers, Timer::BRetrans);
        self.timers.disarm(&mut tx.timers, Timer::BTimeout);
        self.branch_ended(id, 503, None, now, out);
    }
}
