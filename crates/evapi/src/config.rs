//! The module's parameters: the ten of the original, with its names and
//! defaults, and the limits of our own.

use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// Configuration of an event socket.
///
/// The first ten fields are the parameters of Kamailio's evapi module, with
/// the same names, units and defaults, so that an `[evapi]` section of a
/// config file reads the same. The fields after them are our own limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Worker threads that handle messages received from clients. 0: the
    /// dispatcher handles them itself, one at a time, in arrival order.
    pub workers: usize,
    /// Listen address: `"IPv4:port"`, `"[IPv6]:port"` or `"host:port"`.
    pub bind_addr: String,
    /// 1: netstrings in both directions. 0: raw bytes out, and each chunk
    /// read from a socket is one message.
    pub netstring_format: u8,
    /// Name of the script function run for the three events (used by the
    /// script layer; the event socket only carries it).
    pub event_callback: String,
    /// Most clients connected at once; the next one is closed at once.
    pub max_clients: usize,
    /// Microseconds an idle worker slept between polls in the original.
    /// Accepted and validated for compatibility: our workers are woken the
    /// moment a message is queued, so no message waits for a poll.
    pub wait_idle: u64,
    /// Growth factor of `wait_idle` in the original; accepted and validated,
    /// without effect (see `wait_idle`).
    pub wait_increase: u64,
    /// Microseconds a relay may wait for room when `context_mlimit` relays
    /// are already pending; 0: it does not wait and fails at once.
    pub send_task_timeout: u64,
    /// Microseconds that writing to one client may take; 0: no limit. A
    /// client whose write takes longer is disconnected.
    pub send_data_timeout: u64,
    /// Most relays pending at once (framed but not yet written to all their
    /// recipients); 0: no limit. Past it, a relay fails.
    pub context_mlimit: usize,

    /// Largest message accepted from a client, in bytes. A longer one closes
    /// that client's connection.
    pub max_frame_size: usize,
    /// Most bytes queued for one client that has not read them yet. A client
    /// that falls this far behind is disconnected so it cannot hold memory
    /// or slow anyone else.
    pub client_queue_limit: usize,
    /// Milliseconds that shutdown waits for queued frames to be written.
    pub shutdown_flush_ms: u64,
    /// Networks whose clients may connect (`"10.1.0.0/16"`, `"::1"`); a
    /// client from elsewhere is closed before connection-new. Empty: anyone
    /// who can reach `bind_addr`.
    pub allow_networks: Vec<String>,
    /// PEM certificate chain; when set (with `tls_key`), the event socket
    /// speaks TLS.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// PEM CA certificates; when set, every client must present a
    /// certificate signed by one of them.
    pub tls_client_ca: String,
    /// Milliseconds a TLS handshake may take before the client is dropped.
    pub tls_handshake_timeout_ms: u64,
    /// A shared secret (ours; empty: off, as in Kamailio). When set, a
    /// connection's first message must be exactly this text, within
    /// `auth_timeout_ms`, before it becomes a client: until then it holds
    /// no `max_clients` slot and connection-new has not run, so idle
    /// connections cannot lock the real application out. The token message
    /// itself is not passed to the script.
    pub auth_token: Secret,
    /// Milliseconds a connection has to send `auth_token` before it is cut.
    pub auth_timeout_ms: u64,
}

/// A secret from the config file: compared and used, never shown in a log
/// line or a `{:?}` (its Debug form says only whether it is set).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Compare with `given` in time that depends only on the lengths, so a
    /// peer cannot find the secret byte by byte by timing refusals.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        if want.len() != given.len() {
            return false;
        }
        want.iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "(none)"
        } else {
            "(set, hidden)"
        })
    }
}

/// Largest `workers` value accepted.
pub const MAX_WORKERS: usize = 1024;
/// Largest `max_clients` value accepted.
pub const MAX_CLIENTS_LIMIT: usize = 1_000_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            bind_addr: "127.0.0.1:8448".to_string(),
            netstring_format: 1,
            event_callback: String::new(),
            max_clients: 8,
            wait_idle: 500_000,
            wait_increase: 3,
            send_task_timeout: 0,
            send_data_timeout: 0,
            context_mlimit: 0,
            max_frame_size: crate::codec::DEFAULT_MAX_FRAME,
            client_queue_limit: 8 * 1024 * 1024,
            shutdown_flush_ms: 2000,
            allow_networks: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_client_ca: String::new(),
            tls_handshake_timeout_ms: 10_000,
            auth_token: Secret::default(),
            auth_timeout_ms: 2_000,
        }
    }
}

/// A parameter with a value that cannot be used. Shown as the line of a
/// config file's `[evapi]` section would name it:
/// `[evapi] max_clients = 0: must be between 1 and 1000000`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[evapi] {param} = {value}: {reason}")]
pub struct ConfigError {
    /// The parameter's name, as written in a config file.
    pub param: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(param: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        param,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// Check every parameter; the first bad one is reported by name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > MAX_WORKERS {
            return Err(bad(
                "workers",
                self.workers,
                format!("at most {MAX_WORKERS}"),
            ));
        }
        self.bind_addrs()?;
        if self.netstring_format > 1 {
            return Err(bad(
                "netstring_format",
                self.netstring_format,
                "must be 0 (raw) or 1 (netstring)",
            ));
        }
        if self.max_clients == 0 || self.max_clients > MAX_CLIENTS_LIMIT {
            return Err(bad(
                "max_clients",
                self.max_clients,
                format!("must be between 1 and {MAX_CLIENTS_LIMIT}"),
            ));
        }
        if self.wait_idle == 0 {
            return Err(bad(
                "wait_idle",
                self.wait_idle,
                "must be at least 1 (microseconds)",
            ));
        }
        if self.wait_increase == 0 {
            return Err(bad(
                "wait_increase",
                self.wait_increase,
                "must be at least 1",
            ));
        }
        if self.max_frame_size == 0 || self.max_frame_size > (1 << 30) {
            return Err(bad(
                "max_frame_size",
                self.max_frame_size,
                "must be between 1 and 1073741824 bytes",
            ));
        }
        crate::access::AllowList::parse(&self.allow_networks).map_err(|e| {
            bad(
                "allow_networks",
                format!("{:?}", self.allow_networks),
                e.to_string(),
            )
        })?;
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return Err(bad(
                "tls_cert",
                format!("{:?} (tls_key = {:?})", self.tls_cert, self.tls_key),
                "tls_cert and tls_key go together: set both or neither",
            ));
        }
        if !self.tls_client_ca.is_empty() && self.tls_cert.is_empty() {
            return Err(bad(
                "tls_client_ca",
                format!("{:?}", self.tls_client_ca),
                "client certificates need TLS: set tls_cert and tls_key too",
            ));
        }
        if self.tls_handshake_timeout_ms == 0 {
            return Err(bad("tls_handshake_timeout_ms", 0, "must be at least 1"));
        }
        if self.auth_timeout_ms == 0 || self.auth_timeout_ms > 600_000 {
            return Err(bad(
                "auth_timeout_ms",
                self.auth_timeout_ms,
                "must be between 1 and 600000 (milliseconds)",
            ));
        }
        if self.auth_token.len() > self.max_frame_size {
            return Err(bad(
                "auth_token",
                format!("({} bytes)", self.auth_token.len()),
                format!("longer than max_frame_size ({})", self.max_frame_size),
            ));
        }
        if self.client_queue_limit < 1024 {
            return Err(bad(
                "client_queue_limit",
                self.client_queue_limit,
                "must be at least 1024 bytes",
            ));
        }
        Ok(())
    }

    /// Connections that may be between accept and becoming a client (TLS
    /// handshake, waiting for `auth_token`) at once: four times
    /// `max_clients`, at least 64. Past it new connections are closed at
    /// once, so a flood of silent connections costs bounded memory while
    /// the clients already in are untouched.
    pub fn max_pending(&self) -> usize {
        self.max_clients.saturating_mul(4).max(64)
    }

    /// Whether a connection must send `auth_token` first.
    pub fn auth_enabled(&self) -> bool {
        !self.auth_token.is_empty()
    }

    /// `send_task_timeout` as a duration, `None` when 0.
    pub fn send_task_timeout(&self) -> Option<Duration> {
        micros(self.send_task_timeout)
    }

    /// `send_data_timeout` as a duration, `None` when 0.
    pub fn send_data_timeout(&self) -> Option<Duration> {
        micros(self.send_data_timeout)
    }

    /// Whether the event socket speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        !self.tls_cert.is_empty()
    }

    /// The listen addresses `bind_addr` names: an IP address, or
    /// `localhost` (its loopback addresses in the hosts file, so perhaps
    /// both 127.0.0.1 and ::1); other names are refused, with the words
    /// `[sip] listen` uses ([`hostaddr`]).
    pub fn bind_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let (host, port) = parse_bind_addr(&self.bind_addr)?;
        let ips = hostaddr::resolve(host).ok_or_else(|| {
            bad(
                "bind_addr",
                format!("{:?}", self.bind_addr),
                hostaddr::ONLY_IP_OR_LOCALHOST,
            )
        })?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

fn micros(us: u64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us))
}

/// Split `bind_addr` into host and port: `"1.2.3.4:8448"`, `"[::1]:8448"`,
/// `"name:8448"`. The port is required, as in the original.
fn parse_bind_addr(s: &str) -> Result<(&str, u16), ConfigError> {
    let err = |reason: &str| bad("bind_addr", format!("{s:?}"), reason);
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| err("'[' without ']' around an IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err("not an IPv6 address inside [ ]"));
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| err("expected ':PORT' after the ']'"))?;
        (host, port)
    } else {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| err("expected HOST:PORT, e.g. 127.0.0.1:8448 or [::1]:8448"))?;
        if host.contains(':') {
            return Err(err(
                "an IPv6 address must be written in brackets: [::1]:8448",
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(err("the host is empty"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| err("the port is not a number from 0 to 65535"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals() {
        let c = Config::default();
        assert_eq!(c.workers, 1);
        assert_eq!(c.bind_addr, "127.0.0.1:8448");
        assert_eq!(c.netstring_format, 1);
        assert_eq!(c.event_callback, "");
        assert_eq!(c.max_clients, 8);
        assert_eq!(c.wait_idle, 500_000);
        assert_eq!(c.wait_increase, 3);
        assert_eq!(c.send_task_timeout, 0);
        assert_eq!(c.send_data_timeout, 0);
        assert_eq!(c.context_mlimit, 0);
        assert!(c.max_frame_size >= 1024 * 1024);
        c.validate().unwrap();
    }

    #[test]
    fn bind_addr_forms() {
        let addrs = |s: &str| {
            Config {
                bind_addr: s.into(),
                ..Config::default()
            }
            .bind_addrs()
        };
        assert_eq!(
            addrs("127.0.0.1:8448").unwrap(),
            vec!["127.0.0.1:8448".parse().unwrap()]
        );
        assert_eq!(
            addrs("[::1]:9000").unwrap(),
            vec!["[::1]:9000".parse().unwrap()]
        );
        assert!(addrs("localhost:8448")
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback()));
        for (bad_value, why) in [
            ("127.0.0.1", "HOST:PORT"),
            ("127.0.0.1:", "port"),
            ("127.0.0.1:70000", "port"),
            ("127.0.0.1:http", "port"),
            ("::1:8448", "brackets"),
            ("[::1:8448", "without ']'"),
            ("[::1]8448", "':PORT'"),
            ("[nothost]:8448", "IPv6"),
            (":8448", "empty"),
            ("example.com:8448", hostaddr::ONLY_IP_OR_LOCALHOST),
            ("localhost.localdomain:8448", hostaddr::ONLY_IP_OR_LOCALHOST),
        ] {
            let e = addrs(bad_value).unwrap_err();
            assert_eq!(e.param, "bind_addr");
            let text = e.to_string();
            assert!(text.contains(why), "{bad_value}: {text}");
            assert!(text.contains(bad_value), "{bad_value}: {text}");
        }
    }

    #[test]
    fn bad_values_are_named() {
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    netstring_format: 2,
                    ..Config::default()
                },
                "netstring_format = 2",
            ),
            (
                Config {
                    max_clients: 0,
                    ..Config::default()
                },
                "max_clients = 0",
            ),
            (
                Config {
                    workers: 5000,
                    ..Config::default()
                },
                "workers = 5000",
            ),
            (
                Config {
                    wait_increase: 0,
                    ..Config::default()
                },
                "wait_increase = 0",
            ),
            (
                Config {
                    wait_idle: 0,
                    ..Config::default()
                },
                "wait_idle = 0",
            ),
            (
                Config {
                    max_frame_size: 0,
                    ..Config::default()
                },
                "max_frame_size = 0",
            ),
            (
                Config {
                    client_queue_limit: 10,
                    ..Config::default()
                },
                "client_queue_limit = 10",
            ),
        ];
        for (c, expect) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
        }
    }

    #[test]
    fn from_toml_with_unknown_keys_refused() {
        let c: Config = toml::from_str(
            "workers = 4\nbind_addr = \"[::1]:8448\"\nevent_callback = \"ksr_evapi_event\"",
        )
        .unwrap();
        assert_eq!(c.workers, 4);
        assert_eq!(c.max_clients, 8);
        assert_eq!(c.event_callback, "ksr_evapi_event");
        let e = toml::from_str::<Config>("max_client = 4")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_client"), "{e}");
    }

    #[test]
    fn timeouts() {
        let c = Config {
            send_data_timeout: 1500,
            ..Config::default()
        };
        assert_eq!(c.send_data_timeout(), Some(Duration::from_micros(1500)));
        assert_eq!(c.send_task_timeout(), None);
    }

    #[test]
    fn auth_token_is_checked_compared_and_never_shown() {
        let c: Config = toml::from_str("auth_token = \"s3cret\"\nauth_timeout_ms = 750").unwrap();
        assert!(c.auth_enabled());
        assert!(c.auth_token.matches(b"s3cret"));
        assert!(!c.auth_token.matches(b"s3cre"));
        assert!(!c.auth_token.matches(b"s3creT"));
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("hidden"),
            "{shown}"
        );
        assert!(!Config::default().auth_enabled());
        assert_eq!(Config::default().max_pending(), 64);
        let e = Config {
            auth_timeout_ms: 0,
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth_timeout_ms = 0"), "{e}");
        let e = Config {
            max_frame_size: 4,
            auth_token: "zzzzzz".into(),
            ..Config::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth_token") && !e.contains("zzzzzz"), "{e}");
    }
}
