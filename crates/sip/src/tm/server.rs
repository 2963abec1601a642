//! The server side of a transaction: what comes from upstream (requests,
//! retransmissions, ACKs, CANCELs) and the replies we send back.

use bytes::Bytes;

use super::client::{Branch, ClientState};
use super::reply::{build_reply, check_reply};
use super::timers::{Timer, TimerKey};
use super::{no_tx, tx_id, Action, Dest, Incoming, Tm, TmError, BUCKETS, PARTS};
use crate::error::ParseError;
use crate::key::TransactionKey;
use crate::message::{Method, SipMessage};
use crate::request::{Request, TxRef};
use std::hash::BuildHasher;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerState {
    /// No final reply yet.
    Proceeding,
    /// Final reply sent; for INVITE waiting for the ACK.
    Completed,
    /// INVITE: the ACK came; lingering to absorb retransmissions.
    Confirmed,
}

#[derive(Debug)]
pub(super) struct Tx {
    pub(super) tref: TxRef,
    pub(super) key: TransactionKey,
    pub(super) invite: bool,
    /// The request (with the router's edits as of its last relay).
    pub(super) req: Request,
    pub(super) dest: Dest,
    pub(super) state: ServerState,
    /// The last reply sent upstream, re-sent on retransmissions.
    pub(super) last: Option<Bytes>,
    /// The To tag of the final sent upstream: an ACK that comes with a
    /// new branch is matched against it (without parsing `last` again).
    pub(super) final_tag: Option<Box<[u8]>>,
    /// Its code (0: none).
    pub(super) code: u16,
    /// The final was ours (not forwarded): we retransmit even a 2xx.
    pub(super) local_final: bool,
    pub(super) interval: u64,
    /// The request while suspended. Boxed, as the branch and the best
    /// reply: most transactions never need them, and every entry pays for
    /// what is inline.
    pub(super) stash: Option<Box<Request>>,
    /// When it was last suspended (ms, the table's clock).
    pub(super) suspended_at: u64,
    pub(super) canceled: bool,
    pub(super) in_failure: bool,
    pub(super) branch: Option<Box<Branch>>,
    pub(super) branches: u32,
    /// The number of the branch waiting for DNS, if one is.
    pub(super) resolving: Option<u32>,
    /// Best final reply of ended branches: (code, the reply, if one came).
    pub(super) best: Option<Box<(u16, Option<SipMessage>)>>,
    /// (Call-ID, CSeq) while a local 2xx waits for its ACK.
    pub(super) dialog: Option<(Bytes, u32)>,
    pub(super) timers: [Option<TimerKey>; 6],
    /// When it was created (table clock, ms): its age in `tm.list`.
    pub(super) created: u64,
}

impl Tx {
    pub(super) fn branch_active(&self) -> bool {
        self.branch.as_ref().is_some_and(|b| b.active())
    }

    /// A branch is under way: sent and not ended, or waiting for its
    /// destination's address.
    pub(super) fn relaying(&self) -> bool {
        self.resolving.is_some() || self.branch_active()
    }

    /// Whether the transaction can still be suspended or relayed: no final
    /// reply yet, and not cancelled.
    pub(super) fn open(&self, t: TxRef) -> Result<(), TmError> {
        let (index, label) = (t.index, t.label);
        if self.state != ServerState::Proceeding {
            return Err(TmError::AlreadyReplied {
                index,
                label,
                code: self.code,
            });
        }
        if self.canceled {
            return Err(TmError::Canceled { index, label });
        }
        Ok(())
    }
}

impl Tm {
    /// A request from the network: absorb it if it belongs to a known
    /// transaction, else hand it to the router.
    pub(crate) fn on_request(
        &mut self,
        req: &Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Incoming {
        // Looked up borrowed from the message: most requests start a
        // transaction (or none), and only the ACK's lookup needs a key of
        // its own.
        if req.msg().method() == Some(&Method::Ack) {
            return match req.msg().transaction_key() {
                Ok(key) => self.on_ack(req, key, now),
                Err(_) => Incoming::Route,
            };
        }
        let Ok(key) = req.msg().transaction_key_ref() else {
            return Incoming::Route;
        };
        match req.msg().method() {
            Some(Method::Cancel) => {
                if let Some(&id) = self.by_key.get_ref(key) {
                    self.retransmission(id, out);
                    return Incoming::Absorbed;
                }
                match self.by_key.get_ref(key.for_invite()) {
                    Some(&inv) => {
                        self.on_cancel(req, inv, now, out);
                        Incoming::Absorbed
                    }
                    None => Incoming::Route,
                }
            }
            _ => match self.by_key.get_ref(key) {
                Some(&id) => {
                    self.retransmission(id, out);
                    Incoming::Absorbed
                }
                None => Incoming::Route,
            },
        }
    }

    fn retransmission(&mut self, id: u64, out: &mut Vec<Action>) {
        self.stats.absorbed += 1;
        let Some(tx) = self.txs.get(&id) else { return };
        // RFC 6026: once a forwarded 2xx went up, a retransmitted INVITE is
        // absorbed silently (the 2xx is the UAS's to retransmit).
        let silent = tx.invite && (200..300).contains(&tx.code) && !tx.local_final;
        if let (Some(last), false) = (&tx.last, silent) {
            Self::send(out, &tx.dest, last.clone());
        }
    }

    fn on_ack(&mut self, req: &Request, key: TransactionKey, now: u64) -> Incoming {
        let mut id = self.by_key.get(&key).copied();
        if id.is_none() {
            // RFC 2543 ACK: its key carries the To tag of our reply, the
            // INVITE's did not.
            if let TransactionKey::Rfc2543 { to_tag, .. } = &key {
                let mut k = key.clone();
                if let TransactionKey::Rfc2543 { to_tag: t, .. } = &mut k {
                    *t = None;
                }
                id = self.by_key.get(&k).copied().filter(|i| {
                    self.txs
                        .get(i)
                        .is_some_and(|tx| tx.final_tag.as_deref() == to_tag.as_deref())
                });
            }
        }
        if id.is_none() {
            // The ACK of a 2xx we generated comes with a new branch, and so
            // does the ACK of a non-2xx from some UACs: match it by Call-ID
            // and CSeq (and the To tag of the final it acknowledges), to stop
            // retransmitting the final.
            let (Ok(cid), Ok(cseq)) = (req.msg().call_id(), req.msg().cseq()) else {
                return Incoming::Route;
            };
            let ack_tag = req.msg().to().ok().and_then(|t| t.tag);
            let d = (Bytes::copy_from_slice(cid), cseq.number);
            id = self.by_dialog.get(&d).copied().filter(|i| {
                self.txs
                    .get(i)
                    .is_some_and(|tx| tx.final_tag.as_deref() == ack_tag)
            });
            if id.is_some() {
                self.by_dialog.remove(&d);
            }
        }
        let Some(id) = id else {
            return Incoming::Route;
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return Incoming::Route;
        };
        if tx.state == ServerState::Completed {
            tx.state = ServerState::Confirmed;
            self.timers.disarm(&mut tx.timers, Timer::Retrans);
            let linger = if tx.dest.transport.is_reliable() {
                0
            } else {
                self.cfg.wait
            };
            self.timers
                .arm(&mut tx.timers, id, Timer::Wait, now + linger);
            if let Some(d) = tx.dialog.take() {
                self.by_dialog.remove(&d);
            }
        }
        // A 2xx's ACK is end to end: the router passes it on. A non-2xx's
        // ACK ends here.
        if (200..300).contains(&tx.code) {
            Incoming::Route
        } else {
            self.stats.absorbed += 1;
            Incoming::Absorbed
        }
    }

    fn on_cancel(&mut self, cancel: &Request, inv: u64, now: u64, out: &mut Vec<Action>) {
        // The CANCEL is a transaction of its own: retransmissions of it get
        // the same 200.
        let mut c = cancel.clone();
        if let Ok(t) = self.create(&mut c, now, out) {
            let _ = self.local_final(tx_id(t), 200, "OK", now, out);
        } else {
            // Table full or shutting down: still answer, statelessly.
            if let Ok(r) = build_reply(cancel, 200, "OK", None, false) {
                self.stats.local_reply(200);
                Self::send(out, &Self::reply_dest(cancel), r);
            }
        }
        let Some(tx) = self.txs.get_mut(&inv) else {
            return;
        };
        if tx.state != ServerState::Proceeding || tx.canceled {
            return;
        }
        tx.canceled = true;
        self.stats.canceled += 1;
        if tx.stash.take().is_some() {
            self.suspended -= 1;
        }
        if let Some(b) = tx.branch.as_mut().filter(|b| b.active()) {
            if b.state == ClientState::Proceeding {
                Self::start_cancel(
                    b,
                    &mut self.timers,
                    &mut tx.timers,
                    inv,
                    self.cfg.t1,
                    now,
                    out,
                );
            } else {
                b.cancel_wanted = true;
            }
            return;
        }
        // Suspended, routing, resolving, or in a failure route: we answer
        // for it (a branch still resolving is then never sent).
        let _ = self.local_final(inv, 487, "Request Terminated", now, out);
    }
    /// Create the transaction of a request, or find the existing one.
    pub(crate) fn newtran(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<TxRef, TmError> {
        if let Some(t) = req.tx {
            return if self.txs.contains_key(&tx_id(t)) {
                Ok(t)
            } else {
                Err(TmError::NoTransaction {
                    index: t.index,
                    label: t.label,
                })
            };
        }
        self.create(req, now, out)
    }

    fn create(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<TxRef, TmError> {
        let key = req.msg().transaction_key().map_err(TmError::BadRequest)?;
        if let Some(tx) = self.by_key.get(&key).and_then(|id| self.txs.get(id)) {
            req.tx = Some(tx.tref);
            return Ok(tx.tref);
        }
        let invite = match req.msg().method() {
            Some(Method::Ack) => return Err(TmError::AckHasNoTransaction),
            Some(Method::Invite) => true,
            Some(_) => false,
            None => return Err(TmError::BadRequest(ParseError::WrongKind("not a request"))),
        };
        // A transaction needs what its replies copy.
        for r in [
            req.msg().cseq().map(|_| ()),
            req.msg().call_id().map(|_| ()),
        ] {
            r.map_err(TmError::BadRequest)?;
        }
        if self.closing {
            return Err(TmError::ShuttingDown);
        }
        if self.cfg.live.load(Ordering::Relaxed) >= self.cfg.max {
            return Err(TmError::TableFull { max: self.cfg.max });
        }
        // The low bits name this part of the table.
        let bucket = (self.hasher.hash_one(&key) % BUCKETS) as u32;
        let index = bucket - bucket % PARTS as u32 + self.part;
        let tref = loop {
            self.next_label = self.next_label.wrapping_add(1);
            let t = TxRef {
                index,
                label: self.next_label,
            };
            // A label wraps after 4 billion transactions; skip 0 and any
            // pair still alive.
            if t.label != 0 && !self.txs.contains_key(&tx_id(t)) {
                break t;
            }
        };
        let id = tx_id(tref);
        req.tx = Some(tref);
        let dest = Self::reply_dest(req);
        let mut tx = Tx {
            tref,
            key: key.clone(),
            invite,
            req: req.clone(),
            dest,
            state: ServerState::Proceeding,
            last: None,
            final_tag: None,
            code: 0,
            local_final: false,
            interval: self.cfg.t1,
            stash: None,
            suspended_at: 0,
            canceled: false,
            in_failure: false,
            branch: None,
            branches: 0,
            resolving: None,
            best: None,
            dialog: None,
            timers: [None; 6],
            created: now,
        };
        if invite {
            // RFC 3261 §16.2: a stateful proxy answers an INVITE with 100 at
            // once, so the UAC stops retransmitting it.
            if let Ok(r) = build_reply(req, 100, "Trying", None, false) {
                self.stats.local_reply(100);
                Self::send(out, &tx.dest, r.clone());
                tx.last = Some(r);
                tx.code = 100;
            }
        }
        let fr = self.fr_for(invite);
        self.timers.arm(&mut tx.timers, id, Timer::Fr, now + fr);
        self.txs.insert(id, Box::new(tx));
        self.cfg.live.fetch_add(1, Ordering::Relaxed);
        self.by_key.insert(key, id);
        self.stats.created += 1;
        Ok(tref)
    }

    pub(super) fn tx_mut(&mut self, t: TxRef) -> Result<&mut Tx, TmError> {
        self.txs
            .get_mut(&tx_id(t))
            .map(|b| &mut **b)
            .ok_or_else(|| no_tx(t))
    }

    /// Reply on the request's transaction (created if needed). `code` is
    /// the caller's value, checked whole before anything happens.
    pub(crate) fn reply(
        &mut self,
        req: &mut Request,
        code: i64,
        reason: &str,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        // Before the transaction exists: a refused reply creates nothing
        // and sends nothing (not even an INVITE's 100).
        let code = check_reply(req, code, reason)?;
        let t = self.newtran(req, now, out)?;
        let tx = self.tx_mut(t)?;
        if tx.state != ServerState::Proceeding {
            return Err(TmError::AlreadyReplied {
                index: t.index,
                label: t.label,
                code: tx.code,
            });
        }
        let id = tx_id(t);
        // The router's reply headers and body, as set on this copy of the
        // request, go into this reply.
        tx.req.take_reply_parts(req);
        if tx.req.dialog.is_none() {
            // dlg_manage after the transaction was created.
            tx.req.dialog = req.dialog;
        }
        if code < 200 {
            let tag = (code > 100).then(|| self.to_tag(t));
            let tx = self.tx_mut(t)?;
            let r = build_reply(
                &tx.req,
                code,
                reason,
                tag.as_deref().map(str::as_bytes),
                true,
            )?;
            Self::send(out, &tx.dest, r.clone());
            tx.last = Some(r);
            tx.code = code;
            self.stats.local_reply(code);
            return Ok(());
        }
        self.final_reply(id, code, reason, true, now, out)
    }

    /// A final reply we generate on our own (timeouts, 487, 503...): no
    /// headers or body of the router's.
    pub(super) fn local_final(
        &mut self,
        id: u64,
        code: u16,
        reason: &str,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        self.final_reply(id, code, reason, false, now, out)
    }

    /// Send a final reply we build (with the router's reply headers and
    /// body when `routed`); ends a suspension and cancels an active branch.
    fn final_reply(
        &mut self,
        id: u64,
        code: u16,
        reason: &str,
        routed: bool,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let tag = match self.txs.get(&id) {
            Some(tx) => self.to_tag(tx.tref),
            None => return Ok(()),
        };
        self.final_reply_tagged(id, code, reason, routed, tag, now, out)
    }

    /// [`Tm::final_reply`] with the To tag to add (when the request's To
    /// has none).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn final_reply_tagged(
        &mut self,
        id: u64,
        code: u16,
        reason: &str,
        routed: bool,
        tag: String,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<(), TmError> {
        let Some(tx) = self.txs.get_mut(&id) else {
            return Ok(());
        };
        let r = build_reply(&tx.req, code, reason, Some(tag.as_bytes()), routed)?;
        // The reply keeps the request's To tag if it had one, else gets ours.
        let final_tag: Box<[u8]> = match tx.req.msg().to().ok().and_then(|t| t.tag) {
            Some(t) => t.into(),
            None => tag.as_bytes().into(),
        };
        if tx.stash.take().is_some() {
            self.suspended -= 1;
        }
        if let Some(b) = tx.branch.as_mut().filter(|b| b.active()) {
            // Our own final ends the branch: cancel it downstream.
            if tx.invite && b.state == ClientState::Proceeding {
                Self::start_cancel(
                    b,
                    &mut self.timers,
                    &mut tx.timers,
                    id,
                    self.cfg.t1,
                    now,
                    out,
                );
            }
            b.state = ClientState::Completed;
            self.timers.disarm(&mut tx.timers, Timer::BRetrans);
            self.timers.disarm(&mut tx.timers, Timer::BTimeout);
        }
        tx.local_final = true;
        self.stats.local_replies += 1;
        self.stats.local_reply(code);
        self.send_final(id, r, code, Some(final_tag), now, out);
        Ok(())
    }

    /// Send a final reply upstream (ours or forwarded) and set the timers
    /// that follow it.
    pub(super) fn send_final(
        &mut self,
        id: u64,
        data: Bytes,
        code: u16,
        to_tag: Option<Box<[u8]>>,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        let cfg_t1 = self.cfg.t1;
        let wait = self.cfg.wait;
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        Self::send(out, &tx.dest, data.clone());
        if let (Some(dlg), true) = (tx.req.dialog, tx.invite) {
            out.push(Action::DialogFinal {
                dlg,
                code,
                data: data.clone(),
            });
        }
        tx.last = Some(data);
        tx.final_tag = to_tag;
        tx.code = code;
        if tx.state == ServerState::Proceeding {
            self.waiting += 1;
            self.stats.finals[super::class_slot(code)] += 1;
        }
        tx.state = ServerState::Completed;
        self.timers.disarm(&mut tx.timers, Timer::Fr);
        let reliable = tx.dest.transport.is_reliable();
        if tx.invite && (code >= 300 || tx.local_final) {
            // The ACK of this final comes back to us. It should carry the
            // INVITE's branch (RFC 3261 §17.1.1.3), but some UACs (SIPp's
            // `ack_txn`, for one) send a new branch, and Kamailio absorbs
            // those too: so the ACK is also matched by Call-ID and CSeq.
            if tx.dialog.is_none() {
                if let (Ok(cid), Ok(cseq)) = (tx.req.msg().call_id(), tx.req.msg().cseq()) {
                    let d = (Bytes::copy_from_slice(cid), cseq.number);
                    self.by_dialog.insert(d.clone(), id);
                    tx.dialog = Some(d);
                }
            }
            // Retransmit until the ACK (Timer G), give up at Timer H.
            if !reliable {
                tx.interval = cfg_t1;
                self.timers
                    .arm(&mut tx.timers, id, Timer::Retrans, now + cfg_t1);
            }
            self.timers
                .arm(&mut tx.timers, id, Timer::Wait, now + 64 * cfg_t1);
        } else {
            let linger = if reliable && !tx.invite { 0 } else { wait };
            self.timers
                .arm(&mut tx.timers, id, Timer::Wait, now + linger);
        }
    }

    /// Suspend the request's transaction (created if needed).
    pub(crate) fn suspend(
        &mut self,
        req: &mut Request,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Result<TxRef, TmError> {
        let t = self.newtran(req, now, out)?;
        let fr_inv = self.cfg.fr_inv;
        let fr = self.cfg.fr;
        let tx = self.txs.get_mut(&tx_id(t)).ok_or_else(|| no_tx(t))?;
        let (index, label) = (t.index, t.label);
        tx.open(t)?;
        if tx.stash.is_some() {
            return Err(TmError::AlreadySuspended { index, label });
        }
        if tx.relaying() {
            return Err(TmError::BranchPending { index, label });
        }
        tx.stash = Some(Box::new(req.clone()));
        tx.suspended_at = now;
        tx.in_failure = false;
        let at = now + if tx.invite { fr_inv } else { fr };
        self.timers.arm(&mut tx.timers, tx_id(t), Timer::Fr, at);
        self.suspended += 1;
        self.stats.suspended_total += 1;
        Ok(t)
    }

    /// Hand a suspended request back (`now`: to time how long it waited).
    pub(crate) fn resume(&mut self, index: u32, label: u32, now: u64) -> Result<Request, TmError> {
        let t = TxRef { index, label };
        let not = TmError::NotSuspended { index, label };
        let tx = self.txs.get_mut(&tx_id(t)).ok_or(not.clone())?;
        if tx.state != ServerState::Proceeding || tx.canceled {
            return Err(not);
        }
        let req = tx.stash.take().ok_or(not)?;
        self.suspended -= 1;
        self.stats.resumed += 1;
        self.stats
            .suspend_wait
            .observe(now.saturating_sub(tx.suspended_at));
        Ok(*req)
    }
}
