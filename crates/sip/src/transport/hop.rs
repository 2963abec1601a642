//! Where a relay goes: the next hop from a URI (an address, or a name for
//! the host's resolver), and the local address that reaches it. Nothing
//! here looks a name up: that is the host's job, off the router threads.

use std::net::{IpAddr, SocketAddr};

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

/// The next hop named by a URI: an address at once, or a name and port
/// still to be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

/// Where a relay goes, from a SIP URI: the transport, and an IP literal as
/// it is or the name to resolve (no DNS here, so no wait).
pub(crate) fn parse_hop(uri: &[u8]) -> Result<(Transport, Target), HopError> {
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
        return Ok((transport, Target::Addr(SocketAddr::new(ip, port))));
    }
    if host.is_empty() || u.host.starts_with(b"[") {
        return Err(bad("not a host name or IP address"));
    }
    Ok((transport, Target::Name(host.to_owned(), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops() {
        let addr = |a: &str| Target::Addr(a.parse().unwrap());
        assert_eq!(
            parse_hop(b"sip:bob@127.0.0.1:5080;transport=tcp").unwrap(),
            (Transport::Tcp, addr("127.0.0.1:5080"))
        );
        assert_eq!(
            parse_hop(b"sip:[::1]").unwrap(),
            (Transport::Udp, addr("[::1]:5060"))
        );
        assert_eq!(
            parse_hop(b"sip:callee@blackhole.test:5070").unwrap(),
            (Transport::Udp, Target::Name("blackhole.test".into(), 5070))
        );
        assert_eq!(
            parse_hop(b"sip:localhost;transport=TCP").unwrap(),
            (Transport::Tcp, Target::Name("localhost".into(), 5060))
        );
        assert!(parse_hop(b"tel:+123").is_err());
        assert!(parse_hop(b"sips:bob@example.com").is_err());
    }
}
