//! Whether a host (and port) names this SIP host: Kamailio's `myself`
//! check (`check_self`), over the addresses we listen on and the
//! `[sip] alias` names.
//!
//! - An IP address matches a listener bound to it. A wildcard listener
//!   (`0.0.0.0`, `[::]`) matches any address assigned to this machine,
//!   found by asking the system to bind it (it can only bind its own),
//!   so no interface list is kept that could go stale.
//! - `localhost` and loopback addresses match any loopback or wildcard
//!   listener: they all name this machine.
//! - An alias matches by name (any case); an alias without a port matches
//!   any of our ports, one with a port only that port.
//! - A port, when given, must be a listener's (or the alias's); none given
//!   (a URI without port) matches any port, as in Kamailio. The transport
//!   is not compared.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::config::ConfigError;
use crate::request::Transport;

/// The names and addresses that are this host.
#[derive(Debug, Clone, Default)]
pub struct Myself {
    listeners: Vec<(Transport, SocketAddr)>,
    /// Lowercased host, and the port if the alias named one.
    aliases: Vec<(String, Option<u16>)>,
}

impl Myself {
    /// This host as `listeners` (the bound sockets) and `aliases`
    /// (`[sip] alias` entries, as [`crate::SipConfig::validate`] checks
    /// them; an entry that does not parse is skipped).
    pub fn new(listeners: Vec<(Transport, SocketAddr)>, aliases: &[String]) -> Myself {
        Myself {
            listeners,
            aliases: aliases.iter().filter_map(|a| parse_alias(a).ok()).collect(),
        }
    }

    /// Whether `host` (a name, an IPv4 address or an IPv6 address with or
    /// without brackets) with `port` is this host.
    pub fn contains(&self, host: &str, port: Option<u16>) -> bool {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let alias = self.aliases.iter().any(|(name, p)| {
            name.eq_ignore_ascii_case(bare)
                && match (p, port) {
                    (Some(a), Some(b)) => *a == b,
                    (Some(_), None) => true,
                    (None, Some(b)) => self.listeners.iter().any(|(_, l)| l.port() == b),
                    (None, None) => true,
                }
        });
        alias || self.is_listener(bare, port)
    }

    fn is_listener(&self, bare: &str, port: Option<u16>) -> bool {
        let ip = bare.parse::<IpAddr>().ok();
        let loopback =
            bare.eq_ignore_ascii_case("localhost") || ip.is_some_and(|i| i.is_loopback());
        let Some(ip) = ip.or(loopback.then_some(IpAddr::from([127, 0, 0, 1]))) else {
            return false;
        };
        // "Any address" names no host, though a wildcard listener is bound
        // to it.
        if ip.is_unspecified() {
            return false;
        }
        self.listeners
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

    /// Whether `addr` is one of our sockets' addresses (a wildcard
    /// listener: any address of this machine on its port).
    pub(crate) fn is_our_socket(&self, addr: SocketAddr) -> bool {
        self.listeners.iter().any(|(_, l)| {
            l.port() == addr.port()
                && (l.ip() == addr.ip() || (l.ip().is_unspecified() && is_local_ip(addr.ip())))
        })
    }
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

/// Parse one `alias` entry: a host name or IP address, with an optional
/// port (`example.com`, `example.com:5060`, `[2001:db8::1]:5060`). The
/// host is lowercased (names compare without case), IPv6 without
/// brackets.
pub(crate) fn parse_alias(entry: &str) -> Result<(String, Option<u16>), ConfigError> {
    let bad = |reason: &str| ConfigError::new("sip", "alias", format!("{entry:?}"), reason);
    let (host, port) = match entry.rsplit_once(':') {
        // An IPv6 address without brackets has colons but no port.
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("the port must be 1 to 65535"))?;
            (h, Some(port))
        }
        _ => (entry, None),
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let name_ok = !bare.is_empty()
        && !bare.contains(':')
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !name_ok && bare.parse::<IpAddr>().is_err() {
        return Err(bad(
            "expected a host name or IP address, with an optional :port (IPv6 in brackets)",
        ));
    }
    Ok((bare.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(a: &str) -> (Transport, SocketAddr) {
        (Transport::Udp, a.parse().unwrap())
    }

    #[test]
    fn specific_listeners_match_their_address_and_port() {
        let m = Myself::new(vec![udp("192.0.2.10:5060"), udp("127.0.0.1:5080")], &[]);
        assert!(m.contains("192.0.2.10", None));
        assert!(m.contains("192.0.2.10", Some(5060)));
        assert!(!m.contains("192.0.2.10", Some(5080)));
        assert!(!m.contains("192.0.2.11", None));
        assert!(!m.contains("example.com", None));
        assert!(!m.contains("", None));
        // Loopback names match the loopback listener, on its port.
        for h in ["127.0.0.1", "localhost", "LOCALHOST", "[::1]", "::1"] {
            assert!(m.contains(h, Some(5080)), "{h}");
            assert!(!m.contains(h, Some(5060)), "{h}");
        }
        assert!(m.is_our_socket("127.0.0.1:5080".parse().unwrap()));
        assert!(!m.is_our_socket("127.0.0.1:5081".parse().unwrap()));
    }

    #[test]
    fn wildcard_listeners_match_addresses_of_this_machine() {
        let m = Myself::new(vec![udp("0.0.0.0:5060")], &[]);
        assert!(m.contains("127.0.0.1", Some(5060)));
        assert!(m.contains("localhost", None));
        // TEST-NET-3 is never assigned to a machine running tests.
        assert!(!m.contains("203.0.113.77", None));
        assert!(!m.contains("224.0.0.1", None));
        assert!(!m.contains("0.0.0.0", None));
        assert!(!m.contains("127.0.0.1", Some(5061)));
        assert!(m.is_our_socket("127.0.0.1:5060".parse().unwrap()));
        assert!(!m.is_our_socket("203.0.113.77:5060".parse().unwrap()));
    }

    #[test]
    fn aliases_match_by_name_and_port() {
        let aliases = [
            "Proxy.Example.com".to_owned(),
            "sip.example.net:5070".to_owned(),
            "[2001:db8::1]".to_owned(),
        ];
        let m = Myself::new(vec![udp("192.0.2.10:5060")], &aliases);
        assert!(m.contains("proxy.example.COM", None));
        assert!(m.contains("proxy.example.com", Some(5060)));
        // Without a port of its own, an alias is ours on our ports only.
        assert!(!m.contains("proxy.example.com", Some(5999)));
        assert!(m.contains("sip.example.net", Some(5070)));
        assert!(m.contains("sip.example.net", None));
        assert!(!m.contains("sip.example.net", Some(5060)));
        assert!(m.contains("[2001:db8::1]", None));
        assert!(m.contains("2001:db8::1", Some(5060)));
        assert!(!m.contains("other.example.com", None));
    }

    #[test]
    fn alias_entries_are_checked() {
        assert_eq!(
            parse_alias("a.example").unwrap(),
            ("a.example".into(), None)
        );
        assert_eq!(
            parse_alias("A.example:5080").unwrap(),
            ("a.example".into(), Some(5080))
        );
        assert_eq!(
            parse_alias("[::1]:5060").unwrap(),
            ("::1".into(), Some(5060))
        );
        assert_eq!(
            parse_alias("2001:db8::2").unwrap(),
            ("2001:db8::2".into(), None)
        );
        for bad in [
            "",
            "a b",
            "a.example:0",
            "a.example:x",
            "a.example:70000",
            "sip:a",
            "[]",
        ] {
            let e = parse_alias(bad).unwrap_err();
            assert!(e.to_string().starts_with("[sip] alias = "), "{bad}: {e}");
        }
    }
}
