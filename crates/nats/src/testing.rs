//! A real `nats-server` for tests (feature `test-server`): started on a
//! free loopback port, stopped and restarted on the same port, killed by
//! its PID when dropped; with a config of its own
//! ([`NatsServer::start_with`]) for users, tokens, TLS ([`TestPki`]) or
//! operator mode with JWTs and a creds file ([`TestOperator`]).
//!
//! Without `nats-server` on PATH, [`NatsServer::start`] returns `None`
//! with a SKIPPED note, unless `EVAPI_REQUIRE_NATS=1` (as `.ci/run` sets):
//! then it panics, so CI cannot pass without the real server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A `nats-server` process on 127.0.0.1.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    /// The folder of its config file (`-c`), when it has one.
    conf: Option<TestDir>,
}

/// Whether `nats-server` can run here; if not, panics when
/// `EVAPI_REQUIRE_NATS=1`, else prints a SKIPPED note and returns false.
pub fn available() -> bool {
    let ok = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("EVAPI_REQUIRE_NATS").as_deref() == Ok("1") {
            panic!(
                "nats-server is not on PATH and EVAPI_REQUIRE_NATS=1 (apt-get install nats-server)"
            );
        }
        eprintln!("SKIPPED: nats-server not on PATH (install the nats-server package; set EVAPI_REQUIRE_NATS=1 to make this fatal)");
    }
    ok
}

impl NatsServer {
    /// Start a server on a free loopback port; `None` when nats-server is
    /// not installed (see [`available`]).
    pub fn start() -> Option<NatsServer> {
        Self::start_with("")
    }

    /// As [`NatsServer::start`], with `config` as its config file (the
    /// nats-server format: `authorization { ... }`, `tls { ... }`,
    /// `operator: ...`); the address and port are given on the command
    /// line. Empty: no config file.
    pub fn start_with(config: &str) -> Option<NatsServer> {
        if !available() {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = (!config.is_empty()).then(|| {
            let dir = TestDir::new("nats-server");
            dir.write("nats-server.conf", config);
            dir
        });
        let mut s = NatsServer {
            child: None,
            port,
            conf,
        };
        s.restart();
        Some(s)
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `tls://127.0.0.1:<port>`: the URL of a server with a `tls` block.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the server (SIGKILL, by PID) and wait for it to end.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port (after [`NatsServer::stop`]), and
    /// wait until it accepts connections (at most 10 s).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut cmd = Command::new("nats-server");
            if let Some(dir) = &self.conf {
                cmd.arg("-c").arg(dir.path("nats-server.conf"));
            }
            let mut child = cmd
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server");
            loop {
                if TcpStream::connect(self.addr()).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port is still held: try again
                }
                assert!(
                    Instant::now() < deadline,
                    "nats-server did not start on port {}",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A folder of its own under the temporary directory, removed when
/// dropped.
pub struct TestDir(PathBuf);

impl TestDir {
    /// A new, empty folder whose name starts with `name`.
    pub fn new(name: &str) -> TestDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "evapi-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a test folder");
        TestDir(dir)
    }

    /// The path of `file` in it.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    /// Write `text` to `file` in it; returns its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.path(file);
        std::fs::write(&p, text).expect("write a test file");
        p
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Certificates for a TLS server on 127.0.0.1 and its clients, made
/// fresh, as PEM files: `ca.pem` (the CA), `server.pem`/`server.key`
/// (for 127.0.0.1 and localhost, signed by the CA), `client.pem`/
/// `client.key` (signed by the CA), and `other-ca.pem`, a CA that signed
/// none of them (a client trusting only it must refuse the server).
pub struct TestPki {
    dir: TestDir,
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl TestPki {
    /// Make the files.
    pub fn new() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = TestDir::new("nats-pki");
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let trusted = ca("evapi test CA");
        dir.write("ca.pem", &trusted.pem());
        dir.write("other-ca.pem", &ca("evapi untrusted CA").pem());
        for (name, sans) in [
            (
                "server",
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", vec!["client.test".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, format!("evapi test {name}"));
            let cert = p.signed_by(&key, &trusted).unwrap();
            dir.write(&format!("{name}.pem"), &cert.pem());
            dir.write(&format!("{name}.key"), &key.serialize_pem());
        }
        TestPki { dir }
    }

    /// The path of one of the files (`ca.pem`, `client.key`, ...).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path(file)
    }

    /// The `tls { }` block of a server with `server.pem`; `verify`: it
    /// also asks clients for a certificate signed by `ca.pem`.
    pub fn server_config(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 2\n}}\n",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
        )
    }
}

/// NATS decentralised auth for a test: an operator, one account it signed
/// (given to the server by a memory resolver), and users signed by the
/// account, each as a `.creds` file (user JWT and NKey seed), the way
/// `nsc` would make them.
pub struct TestOperator {
    operator_jwt: String,
    account: nkeys::KeyPair,
    account_jwt: String,
}

impl Default for TestOperator {
    fn default() -> Self {
        Self::new()
    }
}

/// base64url without padding, as JWTs are written.
fn b64(data: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(data)
}

/// A NATS JWT (version 2): claims about `subject` signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = serde_json::json!({
        // Servers do not check the id; nsc writes a hash of the claims.
        "jti": format!("EVAPITEST{}X{iat}", N.fetch_add(1, Ordering::Relaxed)),
        "iat": iat,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let signed = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let sig = issuer.sign(signed.as_bytes()).expect("sign a JWT");
    format!("{signed}.{}", b64(&sig))
}

impl TestOperator {
    /// A new operator and account, with fresh keys.
    pub fn new() -> TestOperator {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "evapi-test-operator",
            serde_json::json!({"type": "operator", "version": 2}),
        );
        // Limits left out of an account JWT are 0 (nothing allowed): -1 is
        // no limit.
        let account_jwt = jwt(
            &operator,
            &account.public_key(),
            "evapi-test-account",
            serde_json::json!({
                "type": "account", "version": 2,
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                           "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                "default_permissions": {"pub": {}, "sub": {}},
            }),
        );
        TestOperator {
            operator_jwt,
            account,
            account_jwt,
        }
    }

    /// The server's config: this operator trusted, the account preloaded
    /// in a memory resolver.
    pub fn server_config(&self) -> String {
        format!(
            "operator: {:?}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {:?}\n}}\n",
            self.operator_jwt,
            self.account.public_key(),
            self.account_jwt
        )
    }

    /// The text of a `.creds` file for a new user `name` of the account.
    pub fn user_creds(&self, name: &str) -> String {
        let user = nkeys::KeyPair::new_user();
        let user_jwt = jwt(
            &self.account,
            &user.public_key(),
            name,
            serde_json::json!({
                "type": "user", "version": 2,
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            }),
        );
        let seed = user.seed().expect("a user seed");
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }
}
