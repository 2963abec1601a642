//! The host's settings: the `[sip]` and `[tm]` sections of the config file
//! (spec/interface.md), mapped here by the binary.

use crate::host::StartError;
use serde::Deserialize;

/// Settings of a [`crate::SipHost`]. Every field has a default; unknown
/// keys are refused so a typo in a config file does not pass silently.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Sockets to listen on, as `proto:host:port` (`udp:127.0.0.1:5060`,
    /// `tcp:[::1]:5060`); port 0 picks a free port (see
    /// [`crate::SipHost::local_addrs`]).
    pub listen: Vec<String>,
    /// Router threads (`sip-child-N`).
    pub children: usize,
    /// Final-reply timeout (ms) of non-INVITE transactions, of a relayed
    /// INVITE branch until its first provisional, and of suspended
    /// non-INVITE transactions (Kamailio's `fr_timer`).
    pub fr_timer_ms: u64,
    /// Final-reply timeout (ms) of INVITE transactions: of a branch after a
    /// provisional, and of a suspended or unanswered INVITE
    /// (Kamailio's `fr_inv_timer`).
    pub fr_inv_timer_ms: u64,
    /// How long (ms) a finished transaction stays to absorb
    /// retransmissions (Kamailio's `wait_timer`; stands for RFC 3261's
    /// timers I, J, K and RFC 6026's L over UDP).
    pub wait_timer_ms: u64,
    /// RFC 3261 T1 (ms): the first retransmission interval over UDP.
    pub t1_ms: u64,
    /// RFC 3261 T2 (ms): the longest retransmission interval.
    pub t2_ms: u64,
    /// Most transactions held at once; beyond it new ones are refused
    /// (the router can answer 503 statelessly), so a flood cannot take
    /// all memory.
    pub max_transactions: usize,
    /// Largest message accepted (bytes), over UDP and TCP; a TCP peer that
    /// exceeds it is disconnected.
    pub max_message_size: usize,
    /// Receive buffer asked for each UDP socket (bytes; 0 keeps the
    /// system default). Bursts beyond the buffer are lost in the kernel;
    /// the system caps it at `net.core.rmem_max`.
    pub udp_recv_buffer: usize,
    /// A TCP connection with nothing received for this long (ms) is closed
    /// (Kamailio's `tcp_connection_lifetime`), so idle peers do not hold
    /// descriptors forever.
    pub tcp_idle_timeout_ms: u64,
    /// Most TCP connections open at once (accepted and opened by us);
    /// beyond it new ones are refused.
    pub max_tcp_connections: usize,
    /// Requests queued for one router thread before new ones are dropped
    /// (UDP peers retransmit), so a stalled router cannot take all memory.
    pub queue_size: usize,
}

impl HostConfig {
    /// Check every setting without binding anything: each `listen` entry
    /// parses, and each number is in range. [`crate::SipHost::start`] runs
    /// the same checks.
    pub fn validate(&self) -> Result<(), StartError> {
        if self.listen.is_empty() {
            return Err(StartError::NoListeners);
        }
        if self.children == 0 || self.children > 1024 {
            return Err(StartError::BadConfig(format!(
                "children = {}: must be 1 to 1024",
                self.children
            )));
        }
        if self.t1_ms == 0 || self.t2_ms < self.t1_ms {
            return Err(StartError::BadConfig(format!(
                "t1_ms = {}, t2_ms = {}: need 0 < t1 <= t2",
                self.t1_ms, self.t2_ms
            )));
        }
        // Bounded so timer arithmetic cannot overflow: a day is far past any
        // sensible SIP timer.
        const DAY_MS: u64 = 86_400_000;
        for (name, v) in [
            ("t1_ms", self.t1_ms),
            ("t2_ms", self.t2_ms),
            ("fr_timer_ms", self.fr_timer_ms),
            ("fr_inv_timer_ms", self.fr_inv_timer_ms),
            ("wait_timer_ms", self.wait_timer_ms),
            ("tcp_idle_timeout_ms", self.tcp_idle_timeout_ms),
        ] {
            if v > DAY_MS {
                return Err(StartError::BadConfig(format!(
                    "{name} = {v}: at most {DAY_MS} (one day)"
                )));
            }
        }
        if self.max_message_size < 512 {
            return Err(StartError::BadConfig(format!(
                "max_message_size = {}: at least 512",
                self.max_message_size
            )));
        }
        for entry in &self.listen {
            crate::transport::parse_listen(entry)?;
        }
        Ok(())
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            listen: vec!["udp:127.0.0.1:5060".into(), "tcp:127.0.0.1:5060".into()],
            children: 4,
            fr_timer_ms: 30_000,
            fr_inv_timer_ms: 120_000,
            wait_timer_ms: 5_000,
            t1_ms: 500,
            t2_ms: 4_000,
            max_transactions: 500_000,
            max_message_size: 65_535,
            queue_size: 16_384,
            udp_recv_buffer: 1 << 20,
            tcp_idle_timeout_ms: 120_000,
            max_tcp_connections: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: HostConfig = toml::from_str("children = 2").unwrap();
        assert_eq!(c.children, 2);
        assert_eq!(c.fr_inv_timer_ms, 120_000);
        assert!(toml::from_str::<HostConfig>("chidlren = 2").is_err());
    }

    #[test]
    fn validate_names_the_bad_setting() {
        assert!(HostConfig::default().validate().is_ok());
        let bad = |c: HostConfig| c.validate().unwrap_err().to_string();
        let e = bad(HostConfig {
            listen: vec!["udp:127.0.0.1:5060".into(), "sctp:127.0.0.1:5060".into()],
            ..HostConfig::default()
        });
        assert!(e.contains("sctp:127.0.0.1:5060"), "{e}");
        let e = bad(HostConfig {
            listen: vec!["tcp:localhost".into()],
            ..HostConfig::default()
        });
        assert!(e.contains("tcp:localhost"), "{e}");
        let e = bad(HostConfig {
            children: 0,
            ..HostConfig::default()
        });
        assert!(e.contains("children = 0"), "{e}");
        let e = bad(HostConfig {
            listen: vec![],
            ..HostConfig::default()
        });
        assert!(e.contains("no listen address"), "{e}");
    }
}
