//! One shard of the dialog table, sans I/O: every entry point takes `now`
//! (ms, the host's clock) and appends what must happen to an output list
//! ([`Out`]: a BYE to send, an event to deliver). The unit tests drive it
//! with a hand-moved clock.
//!
//! A dialog is one boxed entry keyed by `(h_entry << 32) | h_id`, one
//! entry in the Call-ID index (a hash of the Call-ID, so the Call-ID is
//! not stored twice) and at most one lifetime timer; a BYE we send is a
//! small client transaction ([`ByeTx`]) with one timer entry at a time.
//! How dialogs end (our BYEs, their replies, the timers) is in `ends`.

mod ends;

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use super::bye::{build_bye, ByeBranch};
use super::{DialogError, DialogEvent, DialogInfo, DlgId, DlgState, EndReason, Env, Side};
use crate::header::HeaderName;
use crate::message::{Method, SipMessage};
use crate::request::Request;
use crate::tm::Dest;
use crate::values::NameAddr;

/// A profile name and value.
pub(crate) type ProfileKey = (Box<str>, Box<str>);

/// What the driver must do after a shard operation.
#[derive(Debug)]
pub(crate) enum Out {
    /// Send a BYE (or a retransmission of one).
    Send { dest: Dest, data: Bytes },
    /// Deliver a dialog event to the router.
    Event(Box<DialogEvent>),
    /// A dialog left the table in these profiles: count it out of them.
    Unprofile(Vec<ProfileKey>),
}

/// What a side of the call looks like from us.
#[derive(Debug, Default)]
pub(super) struct Leg {
    /// Its tag (the From tag of the caller, the To tag of the callee).
    pub(super) tag: Box<str>,
    /// Its remote target (Contact URI).
    pub(super) contact: Box<str>,
    /// The Route header value our requests toward it carry ("" none),
    /// nearest hop first.
    pub(super) routes: Box<str>,
    /// The highest CSeq seen in its requests (0: none yet).
    pub(super) cseq: u32,
}

/// One dialog. Strings are boxed slices: no spare capacity per dialog.
#[derive(Debug)]
pub(super) struct Dialog {
    pub(super) id: DlgId,
    pub(super) state: DlgState,
    pub(super) callid: Box<str>,
    /// The From header value of the INVITE (with the caller's tag).
    pub(super) from: Box<str>,
    /// The To header value of the INVITE (no tag).
    pub(super) to: Box<str>,
    pub(super) legs: [Leg; 2],
    pub(super) invite_cseq: u32,
    /// When it was answered (Unix seconds; 0: not yet).
    pub(super) start_ts: u64,
    /// Lifetime once answered (seconds).
    pub(super) timeout_s: u32,
    /// The lifetime timer's deadline (0: none armed).
    pub(super) life_at: u64,
    /// Our BYEs still waiting for a final reply.
    pub(super) byes_pending: u8,
    pub(super) reason: Option<EndReason>,
    /// `$dlg_var` values.
    pub(super) vars: Vec<(Box<str>, Box<str>)>,
    /// Profiles it was put in with `set_dlg_profile` (name, value).
    pub(super) profiles: Vec<ProfileKey>,
}

/// A BYE we sent: a non-INVITE client transaction (RFC 3261 §17.1.2):
/// retransmitted over UDP from T1 doubling to T2, given up at 64*T1.
#[derive(Debug)]
pub(super) struct ByeTx {
    data: Bytes,
    dest: Dest,
    interval: u64,
    /// Next retransmission (`u64::MAX`: none, reliable transport).
    retrans_at: u64,
    /// Timer F.
    give_up: u64,
    /// The deadline of its timer entry.
    due: u64,
}

/// A timer entry's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Life(u64),
    Bye(u64, u8),
}

/// Most timers fired by one [`Shard::on_timer`] call, so one call holds
/// the shard's lock for a bounded time.
const TIMER_BATCH: usize = 1024;

/// One shard: the dialogs whose `h_entry` falls in it.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    dialogs: HashMap<u64, Box<Dialog>>,
    /// (hash of the Call-ID, key): lookup by Call-ID without storing it
    /// twice.
    by_callid: BTreeSet<(u64, u64)>,
    timers: BTreeSet<(u64, Due)>,
    byes: HashMap<(u64, u8), ByeTx>,
    next_id: u32,
}

fn text(b: &[u8]) -> Box<str> {
    String::from_utf8_lossy(b).trim().into()
}

/// The URI of the first Contact of a message.
fn contact_of(msg: &SipMessage) -> Option<Box<str>> {
    let el = msg.elements_of(HeaderName::Contact).next()?;
    let na = NameAddr::parse(el).ok()?;
    Some(text(na.uri))
}

/// The `did` parameter we put in our Record-Route.
pub(crate) fn did_param(id: DlgId) -> String {
    format!(";did={:x}.{:x}", id.h_entry, id.h_id)
}

/// The dialog a Route's parameters name (`;did=E.I`).
fn did_of(params: &str) -> Option<DlgId> {
    let v = params
        .split(';')
        .find_map(|p| p.trim().strip_prefix("did="))?;
    let (e, i) = v.split_once('.')?;
    Some(DlgId {
        h_entry: u32::from_str_radix(e, 16).ok()?,
        h_id: u32::from_str_radix(i, 16).ok()?,
    })
}

impl Dialog {
    fn snapshot(&self, name: &'static str) -> Box<DialogEvent> {
        Box::new(DialogEvent {
            name,
            info: self.info(),
        })
    }

    pub(super) fn info(&self) -> DialogInfo {
        let uri = |v: &str| {
            NameAddr::parse(v.as_bytes())
                .map(|na| String::from_utf8_lossy(na.uri).into_owned())
                .unwrap_or_default()
        };
        DialogInfo {
            id: self.id,
            state: self.state,
            callid: self.callid.to_string(),
            from_uri: uri(&self.from),
            to_uri: uri(&self.to),
            from_tag: self.legs[0].tag.to_string(),
            to_tag: self.legs[1].tag.to_string(),
            caller_contact: self.legs[0].contact.to_string(),
            callee_contact: self.legs[1].contact.to_string(),
            caller_cseq: self.legs[0].cseq,
            callee_cseq: self.legs[1].cseq,
            start_ts: self.start_ts,
            timeout: self.timeout_s,
            end_reason: self.reason,
            vars: self
                .vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: self
                .profiles
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Which side sent a request with these tags, if it is of this
    /// dialog.
    fn side_of(&self, from_tag: &[u8], to_tag: &[u8]) -> Option<Side> {
        let (caller, callee) = (self.legs[0].tag.as_bytes(), self.legs[1].tag.as_bytes());
        if callee.is_empty() {
            // Not answered: no in-dialog request can be of it yet.
            return None;
        }
        if from_tag == caller && to_tag == callee {
            Some(Side::Caller)
        } else if from_tag == callee && to_tag == caller {
            Some(Side::Callee)
        } else {
            None
        }
    }
}

impl Shard {
    pub(crate) fn len(&self) -> usize {
        self.dialogs.len()
    }

    /// The earliest timer deadline.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|t| t.0)
    }

    pub(super) fn get(&self, id: DlgId) -> Option<&Dialog> {
        self.dialogs.get(&id.key()).map(|b| &**b)
    }

    pub(super) fn get_mut(&mut self, id: DlgId) -> Option<&mut Dialog> {
        self.dialogs.get_mut(&id.key()).map(|b| &mut **b)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Dialog> {
        self.dialogs.values().map(|b| &**b)
    }

    /// A new dialog for an initial INVITE, in `h_entry`; `cid_hash` is the
    /// hash of its Call-ID. Reads what a BYE toward the caller needs.
    pub(crate) fn create(
        &mut self,
        req: &Request,
        h_entry: u32,
        cid_hash: u64,
        env: &Env,
        now: u64,
    ) -> Result<DlgId, DialogError> {
        let msg = req.msg();
        if msg.method() != Some(&Method::Invite) {
            return Err(DialogError::NotInitial("not an INVITE"));
        }
        let to = msg.to().map_err(|_| DialogError::NotInitial("no To"))?;
        if to.tag.is_some() {
            return Err(DialogError::NotInitial("the To has a tag"));
        }
        let from = msg.from().map_err(|_| DialogError::NotInitial("no From"))?;
        let ftag = from
            .tag
            .filter(|t| !t.is_empty())
            .ok_or(DialogError::NotInitial("the From has no tag"))?;
        let cid = msg
            .call_id()
            .map_err(|_| DialogError::NotInitial("no Call-ID"))?;
        let cseq = msg
            .cseq()
            .map_err(|_| DialogError::NotInitial("no CSeq"))?
            .number;
        let (Some(from_v), Some(to_v)) = (
            msg.header_of(HeaderName::From),
            msg.header_of(HeaderName::To),
        ) else {
            return Err(DialogError::NotInitial("no From or To"));
        };
        // Toward the caller, the Record-Routes already in the INVITE are
        // the route set, in order: the nearest proxy first.
        let routes: Vec<&[u8]> = msg.elements_of(HeaderName::RecordRoute).collect();
        let routes = join(routes.iter().copied());
        let h_id = loop {
            self.next_id = self.next_id.wrapping_add(1);
            let id = DlgId {
                h_entry,
                h_id: self.next_id,
            };
            if self.next_id != 0 && !self.dialogs.contains_key(&id.key()) {
                break self.next_id;
            }
        };
        let id = DlgId { h_entry, h_id };
        let d = Dialog {
            id,
            state: DlgState::Unconfirmed,
            callid: text(cid),
            from: text(from_v),
            to: text(to_v),
            legs: [
                Leg {
                    tag: text(ftag),
                    contact: contact_of(msg).unwrap_or_default(),
                    routes,
                    cseq,
                },
                Leg::default(),
            ],
            invite_cseq: cseq,
            start_ts: 0,
            timeout_s: env.cfg.default_timeout,
            life_at: 0,
            byes_pending: 0,
            reason: None,
            vars: Vec::new(),
            profiles: Vec::new(),
        };
        self.dialogs.insert(id.key(), Box::new(d));
        self.by_callid.insert((cid_hash, id.key()));
        // A dialog whose INVITE never gets a final reply (its transaction
        // lost) must still leave: the same bound as an answered one.
        let at = now + u64::from(env.cfg.default_timeout) * 1000;
        self.arm_life(id, at);
        Ok(id)
    }

    fn arm_life(&mut self, id: DlgId, at: u64) {
        let Some(d) = self.dialogs.get_mut(&id.key()) else {
            return;
        };
        if d.life_at != 0 {
            self.timers.remove(&(d.life_at, Due::Life(id.key())));
        }
        d.life_at = at;
        self.timers.insert((at, Due::Life(id.key())));
    }

    /// Remove a dialog (no event).
    pub(crate) fn remove(&mut self, id: DlgId, cid_hash: u64, out: &mut Vec<Out>) {
        let Some(d) = self.dialogs.remove(&id.key()) else {
            return;
        };
        if d.life_at != 0 {
            self.timers.remove(&(d.life_at, Due::Life(id.key())));
        }
        self.by_callid.remove(&(cid_hash, id.key()));
        for side in 0..2u8 {
            if let Some(b) = self.byes.remove(&(id.key(), side)) {
                self.timers.remove(&(b.due, Due::Bye(id.key(), side)));
            }
        }
        if !d.profiles.is_empty() {
            out.push(Out::Unprofile(d.profiles));
        }
    }

    /// The INVITE's final reply went upstream (`reply`, as sent): a 2xx
    /// answers the dialog (`dialog:start`), a reply >= 300 fails it
    /// (`dialog:failed`, and it leaves).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_final(
        &mut self,
        id: DlgId,
        cid_hash: u64,
        code: u16,
        reply: Option<&SipMessage>,
        now: u64,
        unix: u64,
        out: &mut Vec<Out>,
    ) {
        let Some(d) = self.get_mut(id) else { return };
        if !matches!(d.state, DlgState::Unconfirmed | DlgState::Early) {
            return;
        }
        if (200..300).contains(&code) {
            if let Some(r) = reply {
                if let Ok(t) = r.to() {
                    d.legs[1].tag = t.tag.map(text).unwrap_or_default();
                }
                d.legs[1].contact = contact_of(r).unwrap_or_default();
                d.legs[1].cseq = 0;
                d.legs[1].routes = callee_routes(r, &d.legs[0].routes, id);
            }
            d.state = DlgState::ConfirmedNa;
            d.start_ts = unix;
            let at = now + u64::from(d.timeout_s) * 1000;
            out.push(Out::Event(d.snapshot("dialog:start")));
            self.arm_life(id, at);
        } else if code >= 300 {
            d.state = DlgState::Deleted;
            d.reason = Some(EndReason::Failed);
            out.push(Out::Event(d.snapshot("dialog:failed")));
            self.remove(id, cid_hash, out);
        }
    }

    /// Find the dialog of an in-dialog request: by the `did` of the Route
    /// that named us (`routed`), else by Call-ID and tags. Returns the
    /// dialog and the side that sent it.
    pub(crate) fn find(
        &self,
        msg: &SipMessage,
        routed: Option<&str>,
        cid_hash: u64,
    ) -> Option<(DlgId, Side)> {
        let cid = msg.call_id().ok()?;
        let ftag = msg.from().ok()?.tag?;
        let ttag = msg.to().ok()?.tag?;
        let check = |d: &Dialog| {
            if d.callid.as_bytes() != cid {
                return None;
            }
            d.side_of(ftag, ttag).map(|s| (d.id, s))
        };
        if let Some(d) = routed.and_then(did_of).and_then(|id| self.get(id)) {
            if let Some(found) = check(d) {
                return Some(found);
            }
        }
        self.by_callid
            .range((cid_hash, 0)..=(cid_hash, u64::MAX))
            .filter_map(|(_, k)| self.dialogs.get(k))
            .find_map(|d| check(d))
    }

    /// An in-dialog request from `side` of dialog `id` (found by
    /// [`Shard::find`]): its CSeq is tracked; the ACK of the 2xx confirms;
    /// a BYE ends the dialog (`dialog:end`, and it leaves); a re-INVITE or
    /// UPDATE with a Contact moves that side's target.
    pub(crate) fn on_sequential(
        &mut self,
        id: DlgId,
        side: Side,
        msg: &SipMessage,
        cid_hash: u64,
        out: &mut Vec<Out>,
    ) {
        let Some(d) = self.get_mut(id) else { return };
        let cseq = msg.cseq().map(|c| c.number).unwrap_or(0);
        let method = msg.method().cloned();
        let leg = &mut d.legs[side as usize];
        if method != Some(Method::Ack) && cseq > leg.cseq {
            leg.cseq = cseq;
        }
        match method {
            Some(Method::Ack) if d.state == DlgState::ConfirmedNa && cseq == d.invite_cseq => {
                d.state = DlgState::Confirmed;
            }
            Some(Method::Bye) => {
                if matches!(d.state, DlgState::ConfirmedNa | DlgState::Confirmed) {
                    d.state = DlgState::Deleted;
                    d.reason = Some(EndReason::Bye(side));
                    out.push(Out::Event(d.snapshot("dialog:end")));
                    self.remove(id, cid_hash, out);
                }
            }
            Some(Method::Invite) | Some(Method::Other(_)) => {
                let refresh = method == Some(Method::Invite)
                    || msg.method().is_some_and(|m| m.as_bytes() == b"UPDATE");
                if refresh {
                    if let Some(c) = contact_of(msg) {
                        d.legs[side as usize].contact = c;
                    }
                }
            }
            _ => {}
        }
    }

    /// A dialog whose creating request ended its route with no transaction
    /// (answered statelessly, dropped): it never existed for the events.
    pub(crate) fn discard(&mut self, id: DlgId, cid_hash: u64, out: &mut Vec<Out>) {
        if self
            .get(id)
            .is_some_and(|d| d.state == DlgState::Unconfirmed)
        {
            self.remove(id, cid_hash, out);
        }
    }
}

/// The Route value toward the callee, from the 2xx's Record-Route: the
/// entries added downstream of us (those before ours, or the ones the
/// INVITE did not carry), nearest first.
fn callee_routes(reply: &SipMessage, caller_routes: &str, id: DlgId) -> Box<str> {
    let all: Vec<&[u8]> = reply.elements_of(HeaderName::RecordRoute).collect();
    let upstream = if caller_routes.is_empty() {
        0
    } else {
        caller_routes.split(',').count()
    };
    let did = did_param(id);
    let ours = |v: &&[u8]| String::from_utf8_lossy(v).contains(&did);
    let n = all.len().saturating_sub(upstream);
    let mut down: Vec<&[u8]> = all[..n].iter().copied().filter(|v| !ours(v)).collect();
    down.reverse();
    join(down.into_iter())
}

fn join<'a>(it: impl Iterator<Item = &'a [u8]>) -> Box<str> {
    let mut s = String::new();
    for v in it {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(String::from_utf8_lossy(v).trim());
    }
    s.into()
}
