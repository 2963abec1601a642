//! A real `nats-server` for tests (feature `test-server`): started on a
//! free loopback port, stopped and restarted on the same port, killed by
//! its PID when dropped.
//!
//! Without `nats-server` on PATH, [`NatsServer::start`] returns `None`
//! with a SKIPPED note, unless `EVAPI_REQUIRE_NATS=1` (as `.ci/run` sets):
//! then it panics, so CI cannot pass without the real server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` process on 127.0.0.1.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
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
        if !available() {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut s = NatsServer { child: None, port };
        s.restart();
        Some(s)
    }

    /// `nats://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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
            let mut child = Command::new("nats-server")
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
