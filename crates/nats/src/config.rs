//! `[nats]`: where the NATS servers are, who this node is, the subject
//! prefix, credentials, TLS and the subscriptions of the script. Off
//! unless `servers` is set. Every value is checked once, by
//! [`NatsSection::validate`].

use serde::Deserialize;
use std::path::PathBuf;

/// The `[nats]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// `nats://host:port` or `tls://host:port` URLs; empty: NATS is off.
    pub servers: Vec<String>,
    /// This node's name in its reply subject `<prefix>.node.<node>`;
    /// empty: the host name and the process id (`sip1-4242`).
    pub node: String,
    /// The first token of every subject this node publishes and listens on.
    pub subject_prefix: String,
    /// User name (with `password`).
    pub user: String,
    /// Password (with `user`).
    pub password: Secret,
    /// Authentication token (instead of user and password).
    pub token: Secret,
    /// A NATS credentials file (JWT and NKey seed), instead of the above.
    pub creds_file: PathBuf,
    /// PEM file of the CA that signs the servers' certificates.
    pub tls_ca: PathBuf,
    /// PEM client certificate, for servers that verify clients (with
    /// `tls_key`).
    pub tls_cert: PathBuf,
    /// PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// `[[nats.subscribe]]`: subjects whose messages run the script's
    /// `event_callback` as `nats:<subject>`.
    pub subscribe: Vec<Subscribe>,
}

/// One `[[nats.subscribe]]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Subscribe {
    /// The subject, wildcards allowed (`control.>`, `a.*.c`).
    pub subject: String,
    /// A queue group: of all the subscribers in the group, one gets each
    /// message. Empty: every node gets every message.
    pub queue: String,
}

/// A secret read from the config: never printed (`Debug` shows `***`).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            servers: Vec::new(),
            node: String::new(),
            subject_prefix: "evapi".into(),
            user: String::new(),
            password: Secret::default(),
            token: Secret::default(),
            creds_file: PathBuf::new(),
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            subscribe: Vec::new(),
        }
    }
}

/// A value of `[nats]` that cannot be used, worded as the config file's
/// line would name it: `[nats] node = "a b": ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[nats] {key} = {value}: {reason}")]
pub struct ConfigError {
    /// The key, as written in the file (`subscribe` for a value of a
    /// `[[nats.subscribe]]` table, which the reason names).
    pub key: String,
    /// The value given, as TOML would write it.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(
    key: impl Into<String>,
    value: impl std::fmt::Debug,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError {
        key: key.into(),
        value: format!("{value:?}"),
        reason: reason.into(),
    }
}

/// Longest node name and subject prefix accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `s` is one subject token: not empty, no `.`, no wildcard, no
/// white space or control character.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>'))
}

/// Whether `s` is a subject to subscribe to: dot-separated tokens, each
/// a plain token, `*`, or `>` as the last one.
pub fn is_subscribe_subject(s: &str) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    tokens
        .iter()
        .enumerate()
        .all(|(i, t)| *t == "*" || (*t == ">" && i == tokens.len() - 1) || is_token(t))
}

/// Whether `s` is a subject to publish to: dot-separated plain tokens.
pub fn is_publish_subject(s: &str) -> bool {
    s.split('.').all(is_token)
}

/// This host's name, for the default node name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "evapi".into())
}

impl NatsSection {
    /// Whether NATS is on (`servers` is set).
    pub fn enabled(&self) -> bool {
        !self.servers.is_empty()
    }

    /// The node name in force: `node`, or `<host name>-<pid>` with any
    /// character that cannot be in a subject token replaced by `_`.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let raw = format!("{}-{}", host_name(), std::process::id());
        raw.chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
                    '_'
                } else {
                    c
                }
            })
            .collect()
    }

    /// Check every value; the first wrong one is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for s in &self.servers {
            let key = "servers";
            let Some((scheme, rest)) = s.split_once("://") else {
                return Err(bad(key, s, "must be nats://host:port or tls://host:port"));
            };
            if !matches!(scheme, "nats" | "tls") {
                return Err(bad(
                    key,
                    s,
                    format!("scheme {scheme}:// is not nats:// or tls://"),
                ));
            }
            let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            if hostport.is_empty()
                || hostport.contains('/')
                || hostport.contains(char::is_whitespace)
            {
                return Err(bad(key, s, "must be nats://host:port or tls://host:port"));
            }
            if rest.contains('@') {
                return Err(bad(
                    key,
                    s,
                    "credentials in the URL would be logged: use user/password or token",
                ));
            }
            if let Some((_, port)) = hostport.rsplit_once(':') {
                if !hostport.ends_with(']') && port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(bad(key, s, format!("port {port:?} is not 1 to 65535")));
                }
            }
            if let Err(e) = s.parse::<async_nats::ServerAddr>() {
                return Err(bad(key, s, e.to_string()));
            }
        }
        if !self.node.is_empty() && (!is_token(&self.node) || self.node.len() > MAX_NAME_LEN) {
            return Err(bad(
                "node",
                &self.node,
                format!("must be one subject token of 1 to {MAX_NAME_LEN} bytes: no '.', '*', '>' or white space"),
            ));
        }
        if !is_publish_subject(&self.subject_prefix) || self.subject_prefix.len() > MAX_NAME_LEN {
            return Err(bad(
                "subject_prefix",
                &self.subject_prefix,
                format!("must be a subject of 1 to {MAX_NAME_LEN} bytes without wildcards (e.g. \"evapi\" or \"prod.evapi\")"),
            ));
        }
        if self.user.is_empty() != self.password.0.is_empty() {
            return Err(if self.user.is_empty() {
                bad("user", &self.user, "password is set: give user too")
            } else {
                bad("password", "***", "user is set: give password too")
            });
        }
        let methods = [
            !self.user.is_empty(),
            !self.token.0.is_empty(),
            !self.creds_file.as_os_str().is_empty(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(bad(
                "token",
                if self.token.0.is_empty() { "" } else { "***" },
                "give one of user/password, token or creds_file, not several",
            ));
        }
        if self.tls_cert.as_os_str().is_empty() != self.tls_key.as_os_str().is_empty() {
            let (key, path) = if self.tls_cert.as_os_str().is_empty() {
                ("tls_key", &self.tls_key)
            } else {
                ("tls_cert", &self.tls_cert)
            };
            return Err(bad(
                key,
                path.display().to_string(),
                "tls_cert and tls_key go together",
            ));
        }
        for (i, s) in self.subscribe.iter().enumerate() {
            if !is_subscribe_subject(&s.subject) {
                return Err(bad(
                    "subscribe",
                    &s.subject,
                    format!("subject of [[nats.subscribe]] number {}: must be dot-separated tokens, '*' for one token, '>' last for the rest", i + 1),
                ));
            }
            if !s.queue.is_empty() && !is_token(&s.queue) {
                return Err(bad(
                    "subscribe",
                    &s.queue,
                    format!("queue of [[nats.subscribe]] number {}: must be one token: no '.', '*', '>' or white space", i + 1),
                ));
            }
        }
        if !self.enabled() && (!self.subscribe.is_empty() || !self.node.is_empty()) {
            return Err(bad(
                "servers",
                &self.servers,
                "NATS is off without servers, yet other [nats] keys are set: give servers",
            ));
        }
        Ok(())
    }

    /// Check that the files named exist (at start, once relative paths
    /// are resolved against the config file's folder).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        for (key, path) in [
            ("creds_file", &self.creds_file),
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ] {
            if !path.as_os_str().is_empty() && !path.is_file() {
                return Err(bad(key, path.display().to_string(), "no such file"));
            }
        }
        Ok(())
    }

    /// The paths, resolved against `base` when relative.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for p in [
            &mut self.creds_file,
            &mut self.tls_ca,
            &mut self.tls_cert,
            &mut self.tls_key,
        ] {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }

    /// `<prefix>.node.<node>`: where the workers' answers come back.
    pub fn reply_subject(&self, node: &str) -> String {
        format!("{}.node.{node}", self.subject_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> NatsSection {
        toml::from_str(text).unwrap()
    }

    fn err(text: &str) -> String {
        section(text).validate().unwrap_err().to_string()
    }

    #[test]
    fn off_by_default_and_defaults() {
        let s = NatsSection::default();
        assert!(!s.enabled());
        s.validate().unwrap();
        assert_eq!(s.subject_prefix, "evapi");
        let node = s.node_name();
        assert!(
            node.ends_with(&format!("-{}", std::process::id())),
            "{node}"
        );
        assert!(is_token(&node), "{node}");
        let s = section(
            r#"servers = ["nats://127.0.0.1:4222", "tls://nats.example.com:4443"]
            node = "sip1"
            [[subscribe]]
            subject = "control.>"
            queue = "ctl""#,
        );
        s.validate().unwrap();
        assert_eq!(s.node_name(), "sip1");
        assert_eq!(s.reply_subject("sip1"), "evapi.node.sip1");
    }

    #[test]
    fn bad_values_are_named() {
        assert_eq!(
            err(r#"servers = ["http://x:1"]"#),
            r#"[nats] servers = "http://x:1": scheme http:// is not nats:// or tls://"#
        );
        assert!(err(r#"servers = ["127.0.0.1:4222"]"#)
            .starts_with("[nats] servers = \"127.0.0.1:4222\""));
        assert!(err(r#"servers = ["nats://h:0"]"#).contains("port \"0\""));
        assert!(err(r#"servers = ["nats://u:p@h:1"]"#).contains("credentials in the URL"));
        assert!(err(r#"servers = ["nats://h:1"]
            node = "a.b""#)
        .starts_with(r#"[nats] node = "a.b": must be one subject token"#));
        assert!(err(r#"servers = ["nats://h:1"]
            subject_prefix = "a.>""#)
        .starts_with(r#"[nats] subject_prefix = "a.>""#));
        assert!(err(r#"servers = ["nats://h:1"]
            subject_prefix = """#)
        .starts_with(r#"[nats] subject_prefix = """#));
        assert!(err(r#"servers = ["nats://h:1"]
            user = "u""#)
        .starts_with(r#"[nats] password = "***": user is set"#));
        assert!(err(r#"servers = ["nats://h:1"]
            user = "u"
            password = "p"
            token = "t""#)
        .contains("not several"));
        let s = section(
            r#"servers = ["nats://h:1"]
            tls_ca = "/no/such/ca.pem""#,
        );
        s.validate().unwrap();
        let e = s.check_files().unwrap_err().to_string();
        assert!(
            e.starts_with(r#"[nats] tls_ca = "/no/such/ca.pem": no such file"#),
            "{e}"
        );
        assert!(err(r#"servers = ["nats://h:1"]
            [[subscribe]]
            subject = "a..b""#)
        .starts_with(r#"[nats] subscribe = "a..b""#));
        assert!(err(r#"servers = ["nats://h:1"]
            [[subscribe]]
            subject = "a.>.b""#)
        .starts_with(r#"[nats] subscribe = "a.>.b""#));
        assert!(err(r#"servers = ["nats://h:1"]
            [[subscribe]]
            subject = "a"
            queue = "q w""#)
        .starts_with(r#"[nats] subscribe = "q w""#));
        assert!(err(r#"node = "x""#).starts_with("[nats] servers = []: NATS is off"));
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = section(
            r#"servers = ["nats://h:1"]
            token = "hunter2""#,
        );
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
