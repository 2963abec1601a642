//! The host part of an address the program listens on (`[sip] listen`,
//! `[evapi] bind_addr`): one rule, so every setting accepts and refuses
//! the same hosts with the same words.
//!
//! A host is an IP address, or `localhost`, which stands for the loopback
//! addresses the hosts file gives it (127.0.0.1 and/or ::1; 127.0.0.1 when
//! the file names none). Any other name is refused: where the program
//! listens must not depend on a DNS answer at start-up. Depends on nothing.

use std::net::{IpAddr, Ipv4Addr};

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
