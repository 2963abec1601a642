//! The host's settings: the `[sip]` and `[tm]` sections of the config file
//! (spec/interface.md), mapped here by the binary.

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
    /// Requests queued for one router thread before new ones are dropped
    /// (UDP peers retransmit), so a stalled router cannot take all memory.
    pub queue_size: usize,
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
}
