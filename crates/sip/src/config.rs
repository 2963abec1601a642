//! The host's settings: the `[sip]` and `[tm]` sections of the program's
//! config file (docs/configuration.md), owned here so the file format, the
//! defaults and the bounds have one source of truth.
//!
//! Each section deserializes itself (serde, `deny_unknown_fields`, every
//! key defaulted) and checks itself ([`SipConfig::validate`],
//! [`TmConfig::validate`]); [`HostConfig`] is the two together, and
//! [`crate::SipHost::bind`] runs the same checks, so `evapi check` and
//! `evapi run` report a mistake with the same words.

use std::net::SocketAddr;

use serde::Deserialize;

use crate::request::Transport;

/// A setting out of range, or a `listen` entry that does not parse. The
/// message names the section, the key and the value as given, e.g.
/// `[tm] fr_timer = 0: must be at least 1 (milliseconds)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{section}] {key} = {value}: {reason}")]
pub struct ConfigError {
    /// The section: `sip`, `tm` or `usrloc`.
    pub section: &'static str,
    /// The key.
    pub key: &'static str,
    /// The value as it would be written in the file.
    pub value: String,
    /// What is wrong, and what is accepted.
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(
        section: &'static str,
        key: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            section,
            key,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Longest timer accepted (ms): a day is far past any sensible SIP timer,
/// and the bound keeps timer arithmetic from overflowing.
const DAY_MS: u64 = 86_400_000;

/// Largest `max_message_size` (bytes): each UDP socket keeps a receive
/// buffer of this size, and SIP messages are a few kilobytes.
const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Smallest `tcp_send_queue_limit` (bytes): room for a few replies of the
/// usual size, so a peer that reads is never cut for a burst.
const MIN_SEND_QUEUE: usize = 64 << 10;

/// Largest `tcp_send_queue_limit` (bytes): beyond it one connection could
/// take a good part of a server's memory.
const MAX_SEND_QUEUE: usize = 1 << 30;
/// Longest `dns_timeout_ms`: a minute; a relay waiting longer for an
/// address would be better answered 478 and retried by the caller.
const MAX_DNS_TIMEOUT_MS: u64 = 60_000;

/// `[sip]`: sockets, router threads and limits. Every key has a default;
/// unknown keys are refused so a typo in a config file does not pass
/// silently.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Sockets to listen on, as `proto:host:port` (`udp:127.0.0.1:5060`,
    /// `tcp:[::1]:5060`); port 0 picks a free port (see
    /// [`crate::SipHost::local_addrs`]). At least one.
    pub listen: Vec<String>,
    /// Router threads (`sip-child-N`), 1 to 1024. Thread 0 reads the UDP
    /// sockets; the others read with it when it finds a backlog, or in its
    /// place when every reader is stuck in a route.
    pub children: usize,
    /// Threads of the I/O runtime (`evapi-io`), 0 to 256: TCP, the event
    /// socket's clients, HTTP, NATS and the timers; 0 (the default) picks
    /// one per four CPUs, at least one (see [`SipConfig::io_threads`]).
    pub io_threads: usize,
    /// Most transactions held at once (at least 1); beyond it new ones are
    /// refused (the router can answer 503 statelessly), so a flood cannot
    /// take all memory.
    pub max_transactions: usize,
    /// Largest message accepted (bytes, 512 to 64 MiB), over UDP and TCP; a
    /// TCP peer that exceeds it is disconnected.
    pub max_message_size: usize,
    /// Receive buffer asked for each UDP socket (bytes; 0 keeps the
    /// system default). Bursts beyond the buffer are lost in the kernel;
    /// the system caps it at `net.core.rmem_max`.
    pub udp_recv_buffer: usize,
    /// A TCP connection with nothing received for this long (ms, at most a
    /// day) is closed (Kamailio's `tcp_connection_lifetime`), so idle peers
    /// do not hold descriptors forever.
    pub tcp_idle_timeout_ms: u64,
    /// Most TCP connections open at once (accepted and opened by us);
    /// beyond it new ones are refused.
    pub max_tcp_connections: usize,
    /// Messages queued for one router thread (at least 1) before new ones
    /// are dropped, so a stalled router cannot take all memory: TCP
    /// messages, dialog events and failure routes (router threads read the
    /// UDP sockets themselves; a datagram waits in the socket's buffer).
    pub queue_size: usize,
    /// Bytes queued for one TCP connection and not yet taken by the
    /// kernel (64 KiB to 1 GiB). A peer that does not read its replies
    /// past this is cut, so it cannot make us buffer without end; one
    /// message is always accepted into an empty queue, so a single large
    /// reply never cuts a reading peer.
    pub tcp_send_queue_limit: usize,
    /// A message must arrive whole within this long of its first byte (ms,
    /// 1 to a day), else its TCP connection is closed (Kamailio's
    /// `tcp_msg_read_timeout`), so a peer sending a byte now and then
    /// cannot hold a connection slot for ever.
    pub tcp_message_timeout_ms: u64,
    /// Most TCP connections accepted from one IP address at once (at
    /// least 1); beyond it that address's new connections are refused, so
    /// one address cannot take every slot of `max_tcp_connections`.
    pub max_tcp_connections_per_ip: usize,
    /// How long a relay to a name waits for DNS (ms, 1 to 60000) before
    /// the request gets 478 Unresolvable Destination (or its failure
    /// route runs with 478). Resolution never runs on a router thread.
    pub dns_timeout_ms: u64,
    /// DNS servers to ask, as `IP` or `IP:port` (`"10.0.0.53"`,
    /// `"[::1]:5353"`); empty: the system's (`/etc/resolv.conf`). The
    /// hosts file (`/etc/hosts`) is read either way.
    pub dns_servers: Vec<String>,
    /// Other names of this host (Kamailio's `alias`): `"host"` (any of our
    /// ports) or `"host:port"`, IPv6 in brackets. A URI naming one is
    /// ours for the myself checks (`loose_route`, `KSR.is_myself*`),
    /// besides our listen addresses and, for loopback listeners,
    /// `localhost`.
    pub alias: Vec<String>,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec!["udp:127.0.0.1:5060".into(), "tcp:127.0.0.1:5060".into()],
            children: 4,
            io_threads: 0,
            max_transactions: 500_000,
            max_message_size: 65_535,
            udp_recv_buffer: 1 << 20,
            tcp_idle_timeout_ms: 120_000,
            max_tcp_connections: 4096,
            queue_size: 16_384,
            tcp_send_queue_limit: 4 << 20,
            tcp_message_timeout_ms: 10_000,
            // A sixteenth of the default max_tcp_connections: enough for a
            // peer proxy or SBC with many connections, or a NAT with a few
            // hundred TCP phones, while an attacker needs 16 addresses to
            // fill every slot.
            max_tcp_connections_per_ip: 256,
            dns_timeout_ms: 3_000,
            dns_servers: Vec::new(),
            alias: Vec::new(),
        }
    }
}

impl SipConfig {
    /// The I/O runtime's thread count: `io_threads`, or for 0 one per four
    /// of the `cpus` this process may use, at least one. Why so few: those
    /// threads mostly wait; routing runs on the `children`. Measured on two
    /// CPUs (BENCHMARKS.md, "One I/O thread, and events written at once"),
    /// one I/O thread against two cost 7–20 % less CPU per relayed or
    /// async request and fanned out 1.6–3× the frames: every wake-up of an
    /// idle runtime thread on a busy box also woke a second one to look for
    /// work, and the threads crowded the router threads off the CPUs.
    pub fn io_threads(&self, cpus: usize) -> usize {
        match self.io_threads {
            0 => (cpus / 4).max(1),
            n => n,
        }
    }

    /// Check every key of `[sip]` without binding anything: each `listen`
    /// entry parses and each number is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, value: &dyn std::fmt::Display, reason: &str| {
            Err(ConfigError::new("sip", key, value, reason))
        };
        if self.listen.is_empty() {
            return bad(
                "listen",
                &"[]",
                "give at least one \"udp:IP:PORT\" or \"tcp:IP:PORT\"",
            );
        }
        for entry in &self.listen {
            parse_listen(entry)?;
        }
        if !(1..=1024).contains(&self.children) {
            return bad("children", &self.children, "must be 1 to 1024");
        }
        if self.io_threads > 256 {
            return bad(
                "io_threads",
                &self.io_threads,
                "must be 0 (one per four CPUs) to 256",
            );
        }
        if self.max_transactions == 0 {
            return bad("max_transactions", &0, "must be at least 1");
        }
        if !(512..=MAX_MESSAGE_SIZE).contains(&self.max_message_size) {
            return bad(
                "max_message_size",
                &self.max_message_size,
                &format!("must be 512 to {MAX_MESSAGE_SIZE} (bytes)"),
            );
        }
        if self.tcp_idle_timeout_ms > DAY_MS {
            return bad(
                "tcp_idle_timeout_ms",
                &self.tcp_idle_timeout_ms,
                &format!("must be at most {DAY_MS} (one day, in milliseconds)"),
            );
        }
        if self.queue_size == 0 {
            return bad("queue_size", &0, "must be at least 1");
        }
        if !(MIN_SEND_QUEUE..=MAX_SEND_QUEUE).contains(&self.tcp_send_queue_limit) {
            return bad(
                "tcp_send_queue_limit",
                &self.tcp_send_queue_limit,
                &format!("must be {MIN_SEND_QUEUE} to {MAX_SEND_QUEUE} (bytes)"),
            );
        }
        if !(1..=DAY_MS).contains(&self.tcp_message_timeout_ms) {
            return bad(
                "tcp_message_timeout_ms",
                &self.tcp_message_timeout_ms,
                &format!("must be 1 to {DAY_MS} (milliseconds)"),
            );
        }
        if self.max_tcp_connections_per_ip == 0 {
            return bad("max_tcp_connections_per_ip", &0, "must be at least 1");
        }
        if !(1..=MAX_DNS_TIMEOUT_MS).contains(&self.dns_timeout_ms) {
            return bad(
                "dns_timeout_ms",
                &self.dns_timeout_ms,
                &format!("must be 1 to {MAX_DNS_TIMEOUT_MS} (milliseconds)"),
            );
        }
        for entry in &self.dns_servers {
            parse_dns_server(entry)?;
        }
        for entry in &self.alias {
            crate::myself::parse_alias(entry)?;
        }
        Ok(())
    }
}

/// `[tm]`: transaction timers, in milliseconds, under Kamailio's names.
/// Every key has a default; unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TmConfig {
    /// Final-reply timeout of non-INVITE transactions, of a relayed INVITE
    /// branch until its first provisional, and of suspended non-INVITE
    /// transactions (Kamailio's `fr_timer`). 1 ms to a day.
    pub fr_timer: u64,
    /// Final-reply timeout of INVITE transactions: of a branch after a
    /// provisional, and of a suspended or unanswered INVITE (Kamailio's
    /// `fr_inv_timer`). 1 ms to a day.
    pub fr_inv_timer: u64,
    /// How long a finished transaction stays to absorb retransmissions
    /// (Kamailio's `wait_timer`; stands for RFC 3261's timers I, J, K and
    /// RFC 6026's L over UDP). At most a day.
    pub wait_timer: u64,
    /// RFC 3261 T1: the first retransmission interval over UDP (Kamailio's
    /// `retr_timer1`). 1 ms to a day, at most `t2`.
    pub t1: u64,
    /// RFC 3261 T2: the longest retransmission interval (Kamailio's
    /// `retr_timer2`). At least `t1`, at most a day.
    pub t2: u64,
}

impl Default for TmConfig {
    fn default() -> Self {
        TmConfig {
            fr_timer: 30_000,
            fr_inv_timer: 120_000,
            wait_timer: 5_000,
            t1: 500,
            t2: 4_000,
        }
    }
}

impl TmConfig {
    /// Check every key of `[tm]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, v, min) in [
            ("fr_timer", self.fr_timer, 1),
            ("fr_inv_timer", self.fr_inv_timer, 1),
            ("wait_timer", self.wait_timer, 0),
            ("t1", self.t1, 1),
            ("t2", self.t2, 1),
        ] {
            if v < min {
                return Err(ConfigError::new(
                    "tm",
                    key,
                    v,
                    format!("must be at least {min} (milliseconds)"),
                ));
            }
            if v > DAY_MS {
                return Err(ConfigError::new(
                    "tm",
                    key,
                    v,
                    format!("must be at most {DAY_MS} (one day, in milliseconds)"),
                ));
            }
        }
        if self.t1 > self.t2 {
            return Err(ConfigError::new(
                "tm",
                "t1",
                self.t1,
                format!("must not exceed t2 = {}", self.t2),
            ));
        }
        Ok(())
    }
}

/// Settings of a [`crate::SipHost`]: the `[sip]`, `[tm]`, `[usrloc]` and
/// `[dialog]` sections together. Deserializes from a document holding those tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// `[sip]`.
    pub sip: SipConfig,
    /// `[tm]`.
    pub tm: TmConfig,
    /// `[usrloc]`: the location table ([`crate::usrloc`]).
    pub usrloc: crate::UsrlocConfig,
    /// `[dialog]`: dialog tracking ([`crate::dialog`]).
    pub dialog: crate::DialogConfig,
}

impl HostConfig {
    /// Check every section without binding anything; the first mistake is
    /// reported. [`crate::SipHost::bind`] runs the same checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sip.validate()?;
        self.tm.validate()?;
        self.usrloc.validate()?;
        self.dialog.validate()
    }
}

/// Parse one `listen` entry: `udp:127.0.0.1:5060`, `tcp:[::1]:0`.
pub(crate) fn parse_listen(entry: &str) -> Result<(Transport, Vec<SocketAddr>), ConfigError> {
    let bad = |reason: &str| ConfigError::new("sip", "listen", format!("{entry:?}"), reason);
    let (proto, addr) = entry
        .split_once(':')
        .ok_or_else(|| bad("expected proto:address:port"))?;
    let t = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        _ => return Err(bad("the protocol must be udp or tcp")),
    };
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok((t, vec![a]));
    }
    // `localhost:5060` (or another name, refused with the words every
    // listen setting uses: see the hostaddr crate).
    let (host, port) = addr
        .rsplit_once(':')
        .filter(|(h, _)| !h.contains(':') && !h.starts_with('['))
        .ok_or_else(|| bad("expected an IP address and port, IPv6 in brackets"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
    let ips = hostaddr::resolve(host).ok_or_else(|| bad(hostaddr::ONLY_IP_OR_LOCALHOST))?;
    Ok((
        t,
        ips.into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
    ))
}

/// Parse one `dns_servers` entry: `10.0.0.53` (port 53), `[::1]:5353`,
/// `127.0.0.1:5353`.
pub(crate) fn parse_dns_server(entry: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = entry.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    entry.parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            "sip",
            "dns_servers",
            format!("{entry:?}"),
            "expected an IP address, or IP:port (IPv6 in brackets)",
        )
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
