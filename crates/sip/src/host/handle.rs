//! [`SipHandle`]: the host's operations, from any thread.

use std::net::SocketAddr;
use std::sync::Arc;

use lograte::warn_limited;
use tracing::debug;

use super::{part_of_request, Shared};
use crate::message::Method;
use crate::request::{Request, Transport, TxRef};
use crate::tm::{
    build_reply, check_reply, part_of_index, ReplyExtra, Tm, TmError, TmStats, TxSummary,
    LIST_SHARDS,
};
use crate::transport::{parse_hop, Target};

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
        self.shared.counters.stateless_reply(code);
        self.shared.net.send(&Tm::reply_dest(req), data, None);
        Ok(())
    }

    /// Create the request's transaction (idempotent; an INVITE's sends 100
    /// Trying). Sets [`Request::tx`].
    pub fn t_newtran(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.shared.tm_op(part_of_request(req), |tm, now, out| {
            tm.newtran(req, now, out)
        })
    }

    /// Whether a transaction exists for the request (for a CANCEL: for it
    /// or for the INVITE it cancels).
    pub fn t_check_trans(&self, req: &Request) -> bool {
        self.shared.part(part_of_request(req)).exists(req)
    }

    /// Reply on the request's transaction, creating it if needed. A
    /// provisional can be followed by more replies; a final one ends a
    /// suspension and a pending branch.
    ///
    /// `code` and `reason` are checked as for [`SipHandle::sl_reply`],
    /// before the transaction is created: nothing is sent on error.
    pub fn t_reply(&self, req: &mut Request, code: i64, reason: &str) -> Result<(), TmError> {
        self.shared.tm_op(part_of_request(req), |tm, now, out| {
            tm.reply(req, code, reason, now, out)
        })
    }

    /// Relay statefully to the destination URI if set, else the
    /// Request-URI, creating the transaction if needed (an ACK is relayed
    /// statelessly). With Max-Forwards 0, replies 483 and fails.
    ///
    /// An IP literal is relayed at once. A name is resolved on the host's
    /// runtime, never on the calling thread: this returns as soon as the
    /// transaction holds the relay (`Ok` means "under way", as Kamailio's
    /// `t_relay`), and the branch is sent when the name resolves. If it
    /// does not within `[sip] dns_timeout_ms` (or does not exist, or has
    /// no address we can send to), the branch ends with 478 Unresolvable
    /// Destination: the failure route runs if one was armed
    /// ([`Request::set_failure_route`], `failure_code` 478), else the
    /// request gets 478. An ACK to a name is relayed once resolved, or
    /// dropped (nothing answers an ACK).
    pub fn t_relay(&self, req: &mut Request) -> Result<(), TmError> {
        let (transport, target) =
            parse_hop(&req.next_hop()).map_err(|e| TmError::BadDestination {
                uri: e.uri,
                reason: e.reason,
            })?;
        match target {
            Target::Addr(addr) => {
                let via_ip = self.shared.via_ip(addr);
                self.shared.tm_op(part_of_request(req), |tm, now, out| {
                    tm.relay(req, (transport, addr), via_ip, now, out)
                })
            }
            Target::Name(name, port) => self.relay_to_name(req, transport, name, port),
        }
    }

    /// The lookup goes to the runtime; the table holds the relay meanwhile.
    fn relay_to_name(
        &self,
        req: &mut Request,
        transport: Transport,
        name: String,
        port: u16,
    ) -> Result<(), TmError> {
        if !self.shared.dns.can_send(transport) {
            return Err(TmError::BadDestination {
                uri: String::from_utf8_lossy(&req.next_hop()).into_owned(),
                reason: format!("no {transport} socket to relay from"),
            });
        }
        let sh = Arc::clone(&self.shared);
        if req.msg().method() == Some(&Method::Ack) {
            let mut ack = req.clone();
            self.shared.net.spawn(async move {
                match sh.dns.resolve(&name, transport).await {
                    Ok(ip) => {
                        let addr = SocketAddr::new(ip, port);
                        let via_ip = sh.via_ip(addr);
                        let r = sh.tm_op(part_of_request(&ack), |tm, now, out| {
                            tm.relay(&mut ack, (transport, addr), via_ip, now, out)
                        });
                        if let Err(e) = r {
                            debug!(error = %e, "ACK not relayed");
                        }
                    }
                    Err(e) => debug!(error = %e, "ACK not relayed"),
                }
            });
            return Ok(());
        }
        let (t, no) = self.shared.tm_op(part_of_request(req), |tm, now, out| {
            tm.relay_resolving(req, now, out)
        })?;
        self.shared.net.spawn(async move {
            match sh.dns.resolve(&name, transport).await {
                Ok(ip) => {
                    let addr = SocketAddr::new(ip, port);
                    let via_ip = sh.via_ip(addr);
                    sh.tm_op(part_of_index(t.index), |tm, now, out| {
                        tm.relay_resolved(t, no, (transport, addr), via_ip, now, out)
                    });
                }
                Err(e) => {
                    warn_limited!(index = t.index, label = t.label, error = %e, "relay destination unresolvable: 478");
                    sh.tm_op(part_of_index(t.index), |tm, now, out| {
                        tm.relay_unresolved(t, no, now, out)
                    });
                }
            }
        });
        Ok(())
    }

    /// Suspend the request's transaction (created if needed) and return
    /// the pair that names it. Retransmissions are absorbed meanwhile; with
    /// no continue it ends with 408 at fr_timer / fr_inv_timer.
    pub fn t_suspend(&self, req: &mut Request) -> Result<TxRef, TmError> {
        self.shared.tm_op(part_of_request(req), |tm, now, out| {
            tm.suspend(req, now, out)
        })
    }

    /// Take a suspended request back by its index and label, with the edits
    /// made before it was suspended; its transaction is no longer
    /// suspended, and the caller goes on with it (t_reply, t_relay...). A
    /// wrong, cancelled, timed-out or already continued pair fails and
    /// changes nothing.
    pub fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        // The clock is read before the lock, not while holding it.
        let now = self.shared.now();
        self.shared
            .part(part_of_index(index))
            .resume(index, label, now)
    }

    /// Whether the request's INVITE transaction was cancelled (Kamailio's
    /// `t_is_canceled`, e.g. in a failure route).
    pub fn t_is_canceled(&self, req: &Request) -> bool {
        self.shared.part(part_of_request(req)).is_canceled(req)
    }

    /// Summaries of the transactions in `state` (all when `None`), at most
    /// `max`, oldest first. The table is locked one shard at a time, so
    /// the walk never stalls the router threads for the whole table.
    pub(crate) fn list_transactions(&self, state: Option<&str>, max: usize) -> Vec<TxSummary> {
        let mut out = Vec::new();
        for part in 0..self.shared.tm.len() {
            for shard in 0..LIST_SHARDS {
                let tm = self.shared.part(part);
                tm.list_shard(shard, state, self.shared.now(), max, &mut out);
            }
        }
        out.sort_by_key(|t| std::cmp::Reverse(t.age_ms));
        out
    }

    /// Answer transaction `t` by its index and label (`tm.reply`); see
    /// `Tm::reply_by_id`.
    pub(crate) fn reply_by_id(
        &self,
        t: TxRef,
        code: i64,
        reason: &str,
        extra: ReplyExtra<'_>,
    ) -> Result<(), TmError> {
        self.shared.tm_op(part_of_index(t.index), |tm, now, out| {
            tm.reply_by_id(t, code, reason, extra, now, out)
        })
    }

    /// Counters of the transaction table and of the host (requests
    /// received, replies by class). Takes each part's lock in turn for a
    /// copy of its counters: cheap, but not for every message.
    pub fn stats(&self) -> TmStats {
        let mut stats = TmStats::default();
        for part in 0..self.shared.tm.len() {
            stats.add(&self.shared.part(part).stats());
        }
        self.shared.counters.fill(&mut stats);
        stats
    }

    /// The location table (Kamailio's usrloc), shared by every handle of
    /// this host.
    pub fn usrloc(&self) -> &Arc<crate::usrloc::Usrloc> {
        &self.shared.usrloc
    }

    /// The dialog table (Kamailio's dialog module), shared by every handle
    /// of this host.
    pub fn dialogs(&self) -> &Arc<crate::Dialogs> {
        &self.shared.dialogs
    }

    /// The bound sockets.
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.shared.part(0).listeners()
    }

    /// Whether `host` (and `port`, when the URI had one) names this host
    /// (Kamailio's `myself`): a listen address, `localhost` or a loopback
    /// address for a loopback listener, or a `[sip] alias`. See
    /// [`crate::Myself`] for the rules.
    pub fn is_myself(&self, host: &str, port: Option<u16>) -> bool {
        self.shared.myself.contains(host, port)
    }

    /// This host's addresses and names, for myself checks without a lock.
    pub fn myself(&self) -> &crate::Myself {
        &self.shared.myself
    }

    /// Loose routing (Kamailio's `loose_route`) against this host's
    /// addresses and aliases: see [`Request::loose_route`]. When the route
    /// set decides the next hop, the request is matched to its dialog
    /// ([`crate::Dialogs::sequential`]), as Kamailio's dialog module does
    /// from its rr callback.
    pub fn loose_route(&self, req: &mut Request) -> crate::LooseRoute {
        let m = &self.shared.myself;
        let r = req.loose_route(&|h, p| m.contains(h, p));
        if r == crate::LooseRoute::Driven {
            self.shared.dialogs.sequential(req);
        }
        r
    }
}
