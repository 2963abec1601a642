//! Which client addresses may connect: an allow-list of networks (CIDR),
//! one parser for every `allow_networks` setting (`[evapi]`, `[http]`), so
//! each accepts and refuses the same text with the same words.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One network, `10.0.0.0/8`, `::1/128`, or a bare address (one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// A network that cannot be parsed; the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadNetwork {
    /// The text given.
    pub text: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for BadNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a network: {} (write e.g. 10.1.0.0/16, ::1/128 or 192.0.2.7)",
            self.text, self.reason
        )
    }
}

impl std::error::Error for BadNetwork {}

impl FromStr for Network {
    type Err = BadNetwork;

    fn from_str(s: &str) -> Result<Network, BadNetwork> {
        let bad = |reason| BadNetwork {
            text: s.to_string(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| {
                    bad("the prefix length is not a number from 0 to 32 (IPv4) or 128 (IPv6)")
                })?,
        };
        let net = Network { addr, prefix };
        if net.masked(addr) != addr {
            return Err(bad("host bits are set after the prefix"));
        }
        Ok(net)
    }
}

impl Network {
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// Whether `ip` is in this network. An IPv4 client seen on a dual-stack
    /// socket (`::ffff:192.0.2.7`) matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The allow-list: empty allows everyone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Network>);

impl AllowList {
    /// Parse every entry; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, BadNetwork> {
        entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(AllowList)
    }

    /// Whether a client from `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.iter().any(|n| n.contains(ip))
    }

    /// True when the list restricts anything.
    pub fn is_restrictive(&self) -> bool {
        !self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_match() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains(ip("10.1.2.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(
            n.contains(ip("::ffff:10.1.9.9")),
            "IPv4-mapped client on a dual-stack socket"
        );
        assert!(!n.contains(ip("::1")));
        let host: Network = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        assert_eq!(v6.to_string(), "fd00::/8");
    }

    #[test]
    fn bad_networks_are_named() {
        for (text, why) in [
            ("10.1.0.0/33", "prefix"),
            ("10.1.0.0/x", "prefix"),
            ("10.1.0.1/16", "host bits"),
            ("ten/8", "not an IP"),
            ("", "not an IP"),
            ("::1/129", "prefix"),
        ] {
            let e = text.parse::<Network>().unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{text:?}")),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn empty_list_allows_all() {
        let l = AllowList::parse::<&str>(&[]).unwrap();
        assert!(l.allows(ip("203.0.113.9")) && !l.is_restrictive());
        let l = AllowList::parse(&["127.0.0.0/8", "::1"]).unwrap();
        assert!(l.allows(ip("127.0.0.2")) && l.allows(ip("::1")) && !l.allows(ip("192.0.2.1")));
        assert!(AllowList::parse(&["127.0.0.0/8", "nope"]).is_err());
    }
}
