//! Name resolution for relays, on the host's tokio runtime: hickory's
//! resolver (its cache honours the records' TTLs and is bounded), the
//! hosts file first, and one deadline per lookup (`[sip] dns_timeout_ms`).
//!
//! A router thread never waits here: [`crate::SipHandle::t_relay`] spawns
//! the lookup and returns; the result goes back into the transaction table
//! (`Tm::relay_resolved` / `Tm::relay_unresolved`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tracing::warn;

use crate::config::{parse_dns_server, SipConfig};
use crate::request::Transport;

/// Names (with their record types) the cache holds at most; the least
/// recently used go first. Each entry is a few hundred bytes.
const CACHE_SIZE: usize = 4096;

/// Why a name gave no address to relay to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DnsError {
    /// No answer within `dns_timeout_ms`.
    #[error("no answer for {name:?} within {ms} ms")]
    Timeout { name: String, ms: u64 },
    /// The resolver's error (no such name, no records, server failure).
    #[error("cannot resolve {name:?}: {reason}")]
    Failed { name: String, reason: String },
    /// Addresses came, none of a family we have a socket for.
    #[error("{name:?} has no address we can send to over {transport}")]
    NoUsableAddress { name: String, transport: Transport },
}

/// The host's resolver.
pub(crate) struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
    /// Our sockets: an address is usable when one of them can send to it.
    listeners: Vec<(Transport, SocketAddr)>,
}

impl Dns {
    /// A resolver for the `[sip]` settings (checked already): the servers
    /// of `dns_servers`, else the system's; the hosts file read once, now.
    /// Only the address families we have `listeners` for are asked.
    pub(crate) fn new(sip: &SipConfig, listeners: &[(Transport, SocketAddr)]) -> Dns {
        let families = (
            listeners.iter().any(|(_, a)| a.is_ipv4()),
            listeners.iter().any(|(_, a)| a.is_ipv6()),
        );
        let timeout = Duration::from_millis(sip.dns_timeout_ms);
        let (config, mut opts) = if sip.dns_servers.is_empty() {
            match hickory_resolver::system_conf::read_system_conf() {
                Ok(c) => c,
                Err(e) => {
                    // No fallback to a public server: only the hosts file
                    // answers until the config is fixed.
                    warn!(error = %e, "cannot read the system's DNS settings; only the hosts file resolves names");
                    (
                        ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::new()),
                        ResolverOpts::default(),
                    )
                }
            }
        } else {
            let servers: Vec<NameServerConfig> = sip
                .dns_servers
                .iter()
                .filter_map(|s| parse_dns_server(s).ok())
                .flat_map(|a| {
                    [
                        NameServerConfig::new(a, Protocol::Udp),
                        NameServerConfig::new(a, Protocol::Tcp),
                    ]
                })
                .collect();
            (
                ResolverConfig::from_parts(None, vec![], servers),
                ResolverOpts::default(),
            )
        };
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.cache_size = CACHE_SIZE;
        opts.use_hosts_file = ResolveHosts::Always;
        opts.ip_strategy = match families {
            (true, false) => LookupIpStrategy::Ipv4Only,
            (false, true) => LookupIpStrategy::Ipv6Only,
            _ => LookupIpStrategy::Ipv4thenIpv6,
        };
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        Dns {
            resolver,
            timeout,
            listeners: listeners.to_vec(),
        }
    }

    /// Whether we have any socket of `transport` to relay from.
    pub(crate) fn can_send(&self, transport: Transport) -> bool {
        self.listeners.iter().any(|(t, _)| *t == transport)
    }

    /// The first address of `name` we have a `transport` socket for (of
    /// its family), within the deadline. Runs on the runtime; never called
    /// on a router thread.
    pub(crate) async fn resolve(
        &self,
        name: &str,
        transport: Transport,
    ) -> Result<IpAddr, DnsError> {
        let lookup = tokio::time::timeout(self.timeout, self.resolver.lookup_ip(name)).await;
        let ips = match lookup {
            Err(_) => {
                return Err(DnsError::Timeout {
                    name: name.to_owned(),
                    ms: self.timeout.as_millis() as u64,
                })
            }
            Ok(Err(e)) => {
                return Err(DnsError::Failed {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })
            }
            Ok(Ok(ips)) => ips,
        };
        let usable = |ip: &IpAddr| {
            self.listeners
                .iter()
                .any(|(t, a)| *t == transport && a.is_ipv4() == ip.is_ipv4())
        };
        let found = ips.iter().find(usable);
        found.ok_or_else(|| DnsError::NoUsableAddress {
            name: name.to_owned(),
            transport,
        })
    }
}
