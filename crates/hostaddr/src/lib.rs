//! The host part of an address the program listens on (`[sip] listen`,
//! `[evapi] bind_addr`): one rule, so every setting accepts and refuses
//! the same hosts with the same words.
//!
//! A host is an IP address, or `localhost`, which stands for the loopback
//! addresses the hosts file gives it (127.0.0.1 and/or ::1; 127.0.0.1 when
//! the file names none). Any other name is refused: where the program
//! listens must not depend on a DNS answer at start-up.
//!
//! [`network`] is the other half of an address setting: which peers may
//! connect (`allow_networks`). Depends on nothing.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

pub mod network;

/// What is said about a host that is neither an IP address nor localhost.
pub const ONLY_IP_OR_LOCALHOST: &str =
    "the host must be an IP address or localhost (names are not looked up in DNS for a listen address)";

/// The system's hosts file.
const HOSTS_FILE: &str = "/etc/hosts";

/// The addresses `host` stands for: itself if an IP address, the loopback
/// addresses of `localhost` (any case); `None` for any other name.
pub fn resolve(host: &str) -> Option<Vec<IpAddr>> {
    if let Ok(ip) = host.parse() {
        return Some(vec![ip]);
    }
    if !host.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let hosts = std::fs::read_to_string(HOSTS_FILE).unwrap_or_default();
    Some(localhost_in(&hosts))
}

/// The addresses a `HOST:PORT` listen setting stands for (`"127.0.0.1:80"`,
/// `"[::1]:80"`, `"localhost:80"`, the port required); the error is the
/// reason, for the caller to put after the setting's name and value.
pub fn socket_addrs(s: &str) -> Result<Vec<SocketAddr>, &'static str> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("'[' without ']' around an IPv6 address")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address inside [ ]");
        }
        let port = after
            .strip_prefix(':')
            .ok_or("expected ':PORT' after the ']'")?;
        (host, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or("expected HOST:PORT, e.g. 127.0.0.1:9060 or [::1]:9060")?;
        if host.contains(':') {
            return Err("an IPv6 address must be written in brackets: [::1]:PORT");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    let port: u16 = port
        .parse()
        .map_err(|_| "the port is not a number from 0 to 65535")?;
    let ips = resolve(host).ok_or(ONLY_IP_OR_LOCALHOST)?;
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// The loopback addresses `hosts` (a hosts file's text) gives `localhost`,
/// in the file's order; 127.0.0.1 when it gives none.
pub fn localhost_in(hosts: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = Vec::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let named = fields.any(|n| n.eq_ignore_ascii_case("localhost"));
        // A hosts file mapping localhost elsewhere is not followed: the
        // word means this machine's loopback, nothing else.
        if named && ip.is_loopback() && !found.contains(&ip) {
            found.push(ip);
        }
    }
    if found.is_empty() {
        found.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_localhost_only() {
        assert_eq!(
            resolve("192.0.2.1"),
            Some(vec!["192.0.2.1".parse().unwrap()])
        );
        assert_eq!(resolve("::1"), Some(vec!["::1".parse().unwrap()]));
        let local = resolve("LocalHost").unwrap();
        assert!(
            !local.is_empty() && local.iter().all(|a| a.is_loopback()),
            "{local:?}"
        );
        assert_eq!(resolve("example.com"), None);
        assert_eq!(resolve("localhost.localdomain"), None);
    }

    #[test]
    fn host_and_port() {
        let one = |s: &str| socket_addrs(s).map(|v| v[0]);
        assert_eq!(one("127.0.0.1:9060"), Ok("127.0.0.1:9060".parse().unwrap()));
        assert_eq!(one("[::1]:0"), Ok("[::1]:0".parse().unwrap()));
        assert!(socket_addrs("localhost:80")
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 80));
        for (bad, why) in [
            ("127.0.0.1", "HOST:PORT"),
            ("127.0.0.1:", "port"),
            ("127.0.0.1:70000", "port"),
            ("::1:80", "brackets"),
            ("[::1:80", "without ']'"),
            ("[::1]80", "':PORT'"),
            ("[nothost]:80", "IPv6"),
            (":80", "empty"),
            ("example.com:80", ONLY_IP_OR_LOCALHOST),
        ] {
            let e = socket_addrs(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn localhost_from_the_hosts_file() {
        let hosts = "# comment\n127.0.0.1\tlocalhost\n::1 localhost ip6-localhost # v6\n\
                     192.0.2.7 localhost\n127.0.1.1 myhost\n127.0.0.1 localhost\n";
        assert_eq!(
            localhost_in(hosts),
            [
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(localhost_in(""), [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(
            localhost_in("::1 localhost\n"),
            ["::1".parse::<IpAddr>().unwrap()]
        );
    }
}
