//! Whether a host (and port) names this SIP host: Kamailio's `myself`
//! check (`check_self`), over the addresses we listen on.
//!
//! - An IP address matches a listener bound to it. A wildcard listener
//!   (`0.0.0.0`, `[::]`) matches any address assigned to this machine,
//!   found by asking the system to bind it (it can only bind its own),
//!   so no interface list is kept that could go stale.
//! - `localhost` and loopback addresses match any loopback or wildcard
//!   listener: they all name this machine.
//! - Any other name does not match (there are no aliases yet).
//! - A port, when given, must be a listener's; none given (a URI without
//!   port) matches any port, as in Kamailio. The transport is not
//!   compared.

use sip::Transport;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Whether `host` (a name, an IPv4 address or an IPv6 address with or
/// without brackets) with `port` is one of `listeners`.
pub(crate) fn is_myself(
    listeners: &[(Transport, SocketAddr)],
    host: &str,
    port: Option<u16>,
) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = bare.parse::<IpAddr>().ok();
    let loopback = bare.eq_ignore_ascii_case("localhost") || ip.is_some_and(|i| i.is_loopback());
    let Some(ip) = ip.or(loopback.then_some(IpAddr::from([127, 0, 0, 1]))) else {
        return false;
    };
    // "Any address" names no host, though a wildcard listener is bound
    // to it.
    if ip.is_unspecified() {
        return false;
    }
    listeners
        .iter()
        .filter(|(_, a)| port.is_none_or(|p| a.port() == p))
        .any(|(_, a)| {
            let l = a.ip();
            if loopback {
                l.is_loopback() || l.is_unspecified()
            } else {
                l == ip || (l.is_unspecified() && is_local_ip(ip))
            }
        })
}

/// Whether `ip` is assigned to this machine: the system binds only its
/// own addresses (multicast and broadcast excluded, which it also binds).
fn is_local_ip(ip: IpAddr) -> bool {
    let special = match ip {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.is_unspecified(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unspecified(),
    };
    !special && UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(a: &str) -> (Transport, SocketAddr) {
        (Transport::Udp, a.parse().unwrap())
    }

    #[test]
    fn specific_listeners_match_their_address_and_port() {
        let l = [udp("192.0.2.10:5060"), udp("127.0.0.1:5080")];
        assert!(is_myself(&l, "192.0.2.10", None));
        assert!(is_myself(&l, "192.0.2.10", Some(5060)));
        assert!(!is_myself(&l, "192.0.2.10", Some(5080)));
        assert!(!is_myself(&l, "192.0.2.11", None));
        assert!(!is_myself(&l, "example.com", None));
        assert!(!is_myself(&l, "", None));
        // Loopback names match the loopback listener, on its port.
        for h in ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "::1"] {
            assert!(is_myself(&l, h, Some(5080)), "{h}");
            assert!(!is_myself(&l, h, Some(5060)), "{h}");
        }
    }

    #[test]
    fn wildcard_listeners_match_addresses_of_this_machine() {
        let l = [udp("0.0.0.0:5060")];
        assert!(is_myself(&l, "127.0.0.1", Some(5060)));
        assert!(is_myself(&l, "localhost", None));
        // TEST-NET-3 is never assigned to a machine running tests.
        assert!(!is_myself(&l, "203.0.113.77", None));
        assert!(!is_myself(&l, "224.0.0.1", None));
        assert!(!is_myself(&l, "0.0.0.0", None));
        assert!(!is_myself(&l, "127.0.0.1", Some(5061)));
    }
}
