//! The BYE we send to end a dialog, and the branch of its Via (read back
//! from the replies, in one type so writing and reading cannot drift).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use super::table::Dialog;
use super::{DlgId, Env, Side};
use crate::request::Transport;
use crate::tm::Dest;
use crate::uri::{Scheme, Uri};

/// Prefix of our BYE branches: the magic cookie, then a tag that is not
/// the transaction layer's (`z9hG4bKev`), so a reply is told apart by its
/// first bytes.
const PREFIX: &str = "z9hG4bKdlg";

/// The branch of a BYE we sent: `z9hG4bKdlg<seed>.<h_entry>.<h_id>.<side>`
/// (hex, hex, hex, 0 caller / 1 callee).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByeBranch {
    /// Random per host: another instance's branch is not ours.
    pub(crate) seed: u32,
    pub(crate) id: DlgId,
    pub(crate) side: Side,
}

impl fmt::Display for ByeBranch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{:08x}.{:x}.{:x}.{}",
            self.seed, self.id.h_entry, self.id.h_id, self.side as u8
        )
    }
}

impl ByeBranch {
    /// Read a branch back; `None` when it is not of our BYE format.
    pub(crate) fn parse(branch: &[u8]) -> Option<ByeBranch> {
        let rest = std::str::from_utf8(branch).ok()?.strip_prefix(PREFIX)?;
        let mut it = rest.split('.');
        let seed = u32::from_str_radix(it.next()?, 16).ok()?;
        let h_entry = u32::from_str_radix(it.next()?, 16).ok()?;
        let h_id = u32::from_str_radix(it.next()?, 16).ok()?;
        let side = match it.next()? {
            "0" => Side::Caller,
            "1" => Side::Callee,
            _ => return None,
        };
        if it.next().is_some() {
            return None;
        }
        Some(ByeBranch {
            seed,
            id: DlgId { h_entry, h_id },
            side,
        })
    }
}

/// Where a request to `uri` goes: its transport and address. Only IP
/// literals: a BYE is built under the table's lock, where no name can be
/// looked up.
fn hop(uri: &str) -> Result<(Transport, SocketAddr), String> {
    let u = Uri::parse(uri.as_bytes()).map_err(|e| format!("{uri:?}: {e}"))?;
    if u.scheme != Scheme::Sip {
        return Err(format!("{uri:?}: not a sip: URI"));
    }
    let transport = match u.transport() {
        None => Transport::Udp,
        Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
        Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
        Some(_) => return Err(format!("{uri:?}: unsupported transport")),
    };
    let host = u
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(u.host);
    let ip: IpAddr = std::str::from_utf8(host)
        .ok()
        .and_then(|h| h.parse().ok())
        .ok_or_else(|| format!("{uri:?}: the host is not an IP address"))?;
    Ok((transport, SocketAddr::new(ip, u.port.unwrap_or(5060))))
}

/// The first URI of a Route value (`<sip:...;lr>, <...>`).
fn first_route(routes: &str) -> Option<&str> {
    let s = routes.trim_start();
    let start = s.find('<')?;
    let end = s[start..].find('>')?;
    Some(&s[start + 1..start + end])
}

/// `value` with `;tag=tag` unless it has a tag already.
fn with_tag(value: &str, tag: &str) -> String {
    if tag.is_empty() || value.contains(";tag=") {
        value.to_owned()
    } else {
        format!("{value};tag={tag}")
    }
}

/// The BYE toward `side` of `d`, speaking for the other side: its From
/// and To are that side's, its CSeq that side's current one (the caller
/// has already counted it up), its Request-URI `side`'s Contact, its
/// Route `side`'s route set. Returns where to send it.
pub(super) fn build_bye(
    d: &Dialog,
    side: Side,
    branch: ByeBranch,
    env: &Env,
) -> Result<(Dest, Bytes), String> {
    let leg = &d.legs[side as usize];
    let other = &d.legs[side.other() as usize];
    if leg.contact.is_empty() {
        return Err("no Contact known for this side".into());
    }
    let next = first_route(&leg.routes).unwrap_or(&leg.contact);
    let (transport, addr) = hop(next)?;
    let local = env
        .listeners
        .iter()
        .find(|(t, a)| *t == transport && a.is_ipv4() == addr.is_ipv4())
        .map(|(_, a)| *a)
        .ok_or_else(|| format!("no {transport} socket for {addr}"))?;
    let sent_by = if local.ip().is_unspecified() {
        SocketAddr::new((env.via_ip)(addr).unwrap_or(local.ip()), local.port())
    } else {
        local
    };
    let callee_to = with_tag(&d.to, &d.legs[1].tag);
    let (from, to) = match side {
        Side::Callee => (d.from.to_string(), callee_to),
        Side::Caller => (callee_to, d.from.to_string()),
    };
    let mut m = String::with_capacity(512);
    m.push_str(&format!("BYE {} SIP/2.0\r\n", leg.contact));
    m.push_str(&format!(
        "Via: SIP/2.0/{} {sent_by};branch={branch}\r\n",
        transport.via_name()
    ));
    m.push_str("Max-Forwards: 70\r\n");
    if !leg.routes.is_empty() {
        m.push_str(&format!("Route: {}\r\n", leg.routes));
    }
    m.push_str(&format!("From: {from}\r\nTo: {to}\r\n"));
    m.push_str(&format!("Call-ID: {}\r\n", d.callid));
    m.push_str(&format!("CSeq: {} BYE\r\n", other.cseq));
    m.push_str("Content-Length: 0\r\n\r\n");
    if m.bytes().any(|b| b == 0) {
        return Err("a NUL in the dialog's text".into());
    }
    let dest = Dest {
        transport,
        addr,
        local: Some(local),
        conn: None,
    };
    Ok((dest, Bytes::from(m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_parse_back_and_foreign_ones_do_not() {
        let b = ByeBranch {
            seed: 0xdead_beef,
            id: DlgId {
                h_entry: 0xabc,
                h_id: 7,
            },
            side: Side::Callee,
        };
        assert_eq!(ByeBranch::parse(b.to_string().as_bytes()), Some(b));
        for foreign in [
            "z9hG4bKev00000001.1.2.1",
            "z9hG4bKdlgxyz.1.2.0",
            "z9hG4bKdlg00000001.1.2.2",
            "z9hG4bKdlg00000001.1.2.0.9",
            "z9hG4bK-sipp",
        ] {
            assert_eq!(ByeBranch::parse(foreign.as_bytes()), None, "{foreign}");
        }
    }

    #[test]
    fn only_ip_literals_are_hops() {
        assert_eq!(
            hop("sip:a@127.0.0.1:5070").unwrap(),
            (Transport::Udp, "127.0.0.1:5070".parse().unwrap())
        );
        assert_eq!(
            hop("sip:[::1];transport=tcp").unwrap(),
            (Transport::Tcp, "[::1]:5060".parse().unwrap())
        );
        assert!(hop("sip:a@example.com").unwrap_err().contains("not an IP"));
        assert_eq!(
            first_route("<sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>"),
            Some("sip:10.0.0.1;lr")
        );
    }
}
