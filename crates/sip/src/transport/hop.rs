//! Where a relay goes: the next hop from a URI, and the local address
//! that reaches it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::request::Transport;
use crate::uri::{Scheme, Uri};

/// A relay destination that cannot be used: the URI as given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HopError {
    pub(crate) uri: String,
    pub(crate) reason: String,
}

/// The local address the system would send from to reach `to` (a UDP
/// "connect" sends nothing; it only looks the route up).
pub(crate) fn route_ip(to: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(to).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Where a relay goes, from a SIP URI: IP literals as they are, names
/// through the system resolver (blocking the calling thread).
pub(crate) fn resolve_hop(uri: &[u8]) -> Result<(Transport, SocketAddr), HopError> {
    let text = String::from_utf8_lossy(uri).into_owned();
    let bad = |reason: &str| HopError {
        uri: text.clone(),
        reason: reason.to_owned(),
    };
    let u = Uri::parse(uri).map_err(|e| bad(&e.to_string()))?;
    let (default_port, mut transport) = match u.scheme {
        Scheme::Sip => (5060, Transport::Udp),
        // No TLS yet: sips is refused rather than sent in clear.
        Scheme::Sips => return Err(bad("sips (TLS) is not supported")),
        _ => return Err(bad("not a sip: URI")),
    };
    if let Some(t) = u.transport() {
        transport = if t.eq_ignore_ascii_case(b"udp") {
            Transport::Udp
        } else if t.eq_ignore_ascii_case(b"tcp") {
            Transport::Tcp
        } else {
            return Err(bad("unsupported transport parameter"));
        };
    }
    let port = u.port.unwrap_or(default_port);
    let host = u
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(u.host);
    let host = std::str::from_utf8(host).map_err(|_| bad("host is not text"))?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((transport, SocketAddr::new(ip, port)));
    }
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve host: {e}")))?
        .next()
        .ok_or_else(|| bad("host resolves to no address"))?;
    Ok((transport, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops() {
        assert_eq!(
            resolve_hop(b"sip:bob@127.0.0.1:5080;transport=tcp").unwrap(),
            (Transport::Tcp, "127.0.0.1:5080".parse().unwrap())
        );
        assert_eq!(
            resolve_hop(b"sip:[::1]").unwrap(),
            (Transport::Udp, "[::1]:5060".parse().unwrap())
        );
        assert!(resolve_hop(b"tel:+123").is_err());
    }
}
