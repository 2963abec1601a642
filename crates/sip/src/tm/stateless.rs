//! Replies matching no transaction, forwarded by their Via as Kamailio
//! does (RFC 3261 §16.7 step 3, §18.2.2): above all the 2xx that a
//! callee retransmits after our INVITE transaction ended (RFC 3261 has
//! the proxy forward every 2xx; RFC 6026's Accepted state covers them only
//! while the transaction lingers).
//!
//! The top Via must be ours: a branch of our format with this host's seed
//! (`branch_id.rs`), and a sent-by that is one of our sockets. Then it is
//! removed and the reply goes to the next Via: its `received` address (or
//! its host when that is an IP address), its `rport` port (or its port, or
//! 5060), over the transport that Via names (UDP or TCP). Anything else
//! is refused with the reason, for the caller to log.

use std::net::SocketAddr;

use bytes::Bytes;

use super::branch_id::BranchId;
use super::{Action, Dest, Tm};
use crate::edit::Edit;
use crate::message::SipMessage;
use crate::request::Transport;
use crate::values::Via;

/// Why a reply with no transaction was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotForwarded {
    /// The top Via is not one we wrote (another host's branch, or a
    /// sent-by that is not our socket).
    #[error("top Via is not ours")]
    NotOurs,
    /// There is no Via below ours to send the reply to.
    #[error("no Via below ours")]
    NoNextVia,
    /// The next Via names no address we can send to (a host name without
    /// `received`, a transport we lack, a bad value).
    #[error("next Via has no usable address: {0}")]
    BadNextVia(String),
}

/// Where a reply goes by a Via (RFC 3261 §18.2.2, RFC 3581).
fn via_dest(v: &Via<'_>) -> Result<(Transport, SocketAddr), NotForwarded> {
    let bad = || NotForwarded::BadNextVia(String::from_utf8_lossy(v.raw).into_owned());
    let transport = if v.transport.eq_ignore_ascii_case(b"UDP") {
        Transport::Udp
    } else if v.transport.eq_ignore_ascii_case(b"TCP") {
        Transport::Tcp
    } else {
        return Err(bad());
    };
    let ip = v
        .received
        .and_then(crate::lex::host_ip)
        .or_else(|| crate::lex::host_ip(v.host))
        .ok_or_else(bad)?;
    let port = match v.rport {
        Some(Some(p)) => p,
        _ => v.port.unwrap_or(5060),
    };
    Ok((transport, SocketAddr::new(ip, port)))
}

impl Tm {
    /// Where a reply that matched no branch goes, and the reply as it is
    /// sent there (our Via removed): see the module doc. Changes nothing:
    /// the router may still drop the reply before
    /// [`Tm::forward_stateless`] sends it.
    pub(crate) fn stateless_dest(&self, msg: &SipMessage) -> Result<(Dest, Bytes), NotForwarded> {
        let mut vias = msg.vias();
        let top = vias
            .next()
            .and_then(Result::ok)
            .ok_or(NotForwarded::NotOurs)?;
        let seed = match top.branch.and_then(BranchId::parse) {
            Some(BranchId::Relay { seed, .. } | BranchId::Ack { seed, .. }) => seed,
            None => return Err(NotForwarded::NotOurs),
        };
        let sent_by =
            crate::lex::host_ip(top.host).map(|ip| SocketAddr::new(ip, top.port.unwrap_or(5060)));
        if seed != self.seed || !sent_by.is_some_and(|a| self.cfg.myself.is_our_socket(a)) {
            return Err(NotForwarded::NotOurs);
        }
        let next = vias
            .next()
            .ok_or(NotForwarded::NoNextVia)?
            .map_err(|e| NotForwarded::BadNextVia(e.to_string()))?;
        let (transport, addr) = via_dest(&next)?;
        let local = self
            .cfg
            .listeners
            .iter()
            .find(|(t, a)| *t == transport && a.is_ipv4() == addr.is_ipv4())
            .map(|(_, a)| *a);
        if local.is_none() {
            return Err(NotForwarded::BadNextVia(format!(
                "no {transport} socket for {addr}"
            )));
        }
        let data = msg.edit().with(Edit::RemoveFirstVia).serialize();
        let dest = Dest {
            transport,
            addr,
            local,
            conn: None,
        };
        Ok((dest, data))
    }

    /// Send a reply [`Tm::stateless_dest`] accepted.
    pub(crate) fn forward_stateless(
        &mut self,
        dest: Dest,
        data: Bytes,
        code: u16,
        out: &mut Vec<Action>,
    ) {
        self.stats.stateless_replies += 1;
        self.stats.relayed_reply(code);
        out.push(Action::Send {
            dest,
            data,
            branch: None,
        });
    }
}
