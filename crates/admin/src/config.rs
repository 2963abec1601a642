//! `[http]`: where the admin listener listens, who may reach it, and its
//! bounds. Every key has a default; each bound is checked once, by
//! [`HttpConfig::validate`].

use hostaddr::network::AllowList;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// The `[http]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Whether the listener runs at all.
    pub enabled: bool,
    /// Listen address: `"IPv4:port"`, `"[IPv6]:port"` or `"localhost:port"`
    /// (the host rule of every listen setting: an IP address or
    /// localhost, never a DNS name).
    pub listen: String,
    /// Networks (CIDR, or single addresses) whose peers may connect, beside
    /// loopback, which always may. A peer from elsewhere is closed right
    /// after accept, before any of its bytes is read.
    pub allow_networks: Vec<String>,
    /// A shared secret; when set, every request must carry
    /// `Authorization: Bearer <token>` or is answered 401.
    pub token: Token,
    /// Milliseconds a connection has to send a complete request head
    /// (request line and headers), counted from accept or from the end of
    /// its previous response; past it the connection is closed. This cuts
    /// clients that send headers slowly and kept-alive connections left
    /// idle.
    pub header_timeout_ms: u64,
    /// Milliseconds a request's body (at most 1 MB) may take to arrive once
    /// its headers are in; past it the answer is 408 and the connection is
    /// closed.
    pub body_timeout_ms: u64,
    /// Most connections open at once; past it a new connection is closed
    /// right after accept (and logged), so the admin port cannot hold
    /// unbounded memory.
    pub max_connections: usize,
}

/// The largest request body accepted on `POST /RPC`, in bytes (1 MB); a
/// larger one is answered 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// Largest `max_connections` accepted.
pub const MAX_CONNECTIONS_LIMIT: usize = 100_000;

/// Largest `header_timeout_ms` and `body_timeout_ms` accepted (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "127.0.0.1:9060".to_string(),
            allow_networks: Vec::new(),
            token: Token::default(),
            header_timeout_ms: 5_000,
            body_timeout_ms: 10_000,
            max_connections: 64,
        }
    }
}

/// A value of `[http]` that cannot be used, worded as the config file's
/// line would name it: `[http] max_connections = 0: must be 1 to 100000`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[http] {key} = {value}: {reason}")]
pub struct ConfigError {
    /// The key, as written in the file.
    pub key: &'static str,
    /// The value given, as TOML would write it.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(key: &'static str, value: impl ToString, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl HttpConfig {
    /// Check every key; the first bad one is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addrs()?;
        self.allow_list()?;
        if self.token.expose().chars().any(|c| !c.is_ascii_graphic()) {
            // A header value cannot carry it, so no client could send it.
            return Err(bad(
                "token",
                "(hidden)",
                "must be printable ASCII without spaces (it travels in an HTTP header)",
            ));
        }
        for (key, ms) in [
            ("header_timeout_ms", self.header_timeout_ms),
            ("body_timeout_ms", self.body_timeout_ms),
        ] {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                return Err(bad(
                    key,
                    ms,
                    format!("must be 1 to {MAX_TIMEOUT_MS} (milliseconds)"),
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(bad(
                "max_connections",
                self.max_connections,
                format!("must be 1 to {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        Ok(())
    }

    /// The addresses `listen` stands for (perhaps both 127.0.0.1 and ::1
    /// for `localhost`); the listener binds the first that it can.
    pub fn listen_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        hostaddr::socket_addrs(&self.listen)
            .map_err(|reason| bad("listen", format!("{:?}", self.listen), reason))
    }

    /// `allow_networks`, parsed (loopback is allowed besides these).
    pub fn allow_list(&self) -> Result<AllowList, ConfigError> {
        AllowList::parse(&self.allow_networks).map_err(|e| {
            bad(
                "allow_networks",
                format!("{:?}", self.allow_networks),
                e.to_string(),
            )
        })
    }

    /// `header_timeout_ms` as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// `body_timeout_ms` as a duration.
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
}

/// The bearer token: compared and used, never shown in a log line or a
/// `{:?}` (its Debug form says only whether it is set).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// The token's text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no token is set (then no request needs one).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compare with `given` in time that depends only on the lengths, so a
    /// peer cannot find the token byte by byte by timing refusals.
    pub fn matches(&self, given: &[u8]) -> bool {
        let want = self.0.as_bytes();
        want.len() == given.len()
            && want
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl From<&str> for Token {
    fn from(s: &str) -> Self {
        Token(s.to_string())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "(none)"
        } else {
            "(set, hidden)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<HttpConfig, String> {
        let c: HttpConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn defaults() {
        let c = HttpConfig::default();
        c.validate().unwrap();
        assert!(c.enabled);
        assert_eq!(c.listen, "127.0.0.1:9060");
        assert_eq!(
            c.listen_addrs().unwrap(),
            ["127.0.0.1:9060".parse().unwrap()]
        );
        assert!(c.token.is_empty() && c.allow_networks.is_empty());
        assert_eq!(c.header_timeout(), Duration::from_secs(5));
        assert_eq!(c.max_connections, 64);
        assert_eq!(from_toml("").unwrap(), c);
    }

    #[test]
    fn every_key_is_read() {
        let c = from_toml(
            "enabled = false\nlisten = \"[::1]:0\"\nallow_networks = [\"10.0.0.0/8\", \"192.0.2.7\"]\n\
             token = \"s3cret\"\nheader_timeout_ms = 200\nbody_timeout_ms = 300\nmax_connections = 2\n",
        )
        .unwrap();
        assert!(!c.enabled);
        assert_eq!(c.listen_addrs().unwrap(), ["[::1]:0".parse().unwrap()]);
        assert!(c.allow_list().unwrap().allows("10.9.8.7".parse().unwrap()));
        assert!(c.token.matches(b"s3cret") && !c.token.matches(b"s3creT"));
        assert!(!c.token.matches(b"s3cre") && !c.token.matches(b""));
        assert_eq!(format!("{:?}", c.token), "(set, hidden)");
        assert_eq!(c.body_timeout(), Duration::from_millis(300));
        assert_eq!(c.max_connections, 2);
        let e = from_toml("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.contains("unknown field `listn`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, want) in [
            (
                "listen = \"127.0.0.1\"",
                "[http] listen = \"127.0.0.1\": expected HOST:PORT",
            ),
            (
                "listen = \"admin.example.com:9060\"",
                "[http] listen = \"admin.example.com:9060\": the host must be an IP address or localhost",
            ),
            (
                "listen = \"127.0.0.1:99999\"",
                "[http] listen = \"127.0.0.1:99999\": the port is not a number",
            ),
            (
                "allow_networks = [\"10.0.0.0/8\", \"10.1.0.1/16\"]",
                "[http] allow_networks = [\"10.0.0.0/8\", \"10.1.0.1/16\"]: \"10.1.0.1/16\" is not a network: host bits",
            ),
            (
                "token = \"two words\"",
                "[http] token = (hidden): must be printable ASCII",
            ),
            ("header_timeout_ms = 0", "[http] header_timeout_ms = 0: must be 1 to 600000"),
            (
                "body_timeout_ms = 600001",
                "[http] body_timeout_ms = 600001: must be 1 to 600000",
            ),
            ("max_connections = 0", "[http] max_connections = 0: must be 1 to 100000"),
        ] {
            let e = from_toml(text).unwrap_err();
            assert!(e.starts_with(want), "{text}\n got: {e}\nwant: {want}");
        }
        // The secret itself never appears in an error.
        let e = from_toml("token = \"my secret\"").unwrap_err();
        assert!(!e.contains("my secret"), "{e}");
    }
}
