//! Who may connect: the allow-list and TLS (with and without client
//! certificates), over real loopback sockets.

mod common;

use common::*;
use evapi::{Config, Event};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A CA, a server certificate for 127.0.0.1, a client certificate from the
/// CA, and a client certificate from another CA, as PEM files.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("evapi-pki-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let ca = Self::ca("evapi test CA");
        let other = Self::ca("some other CA");
        pki.write("ca.pem", &ca.pem());
        for (name, issuer, sans) in [
            (
                "server",
                &ca,
                vec!["127.0.0.1".to_string(), "localhost".to_string()],
            ),
            ("client", &ca, vec!["client.test".to_string()]),
            ("stranger", &other, vec!["stranger.test".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans)
                .unwrap()
                .signed_by(&key, issuer)
                .unwrap();
            pki.write(&format!("{name}.pem"), &cert.pem());
            pki.write(&format!("{name}.key"), &key.serialize_pem());
        }
        pki
    }

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.join(name), text).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Path,
    cert: Option<(&Path, &Path)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = evapi::tls::client_config(ca, cert).unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(evapi::tls::server_name("127.0.0.1").unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_list_refuses_other_networks_before_connection_new() {
    let rec = Arc::new(Recorder::new());
    let cfg = Config {
        allow_networks: vec!["127.0.0.2/32".into(), "::1/128".into()],
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    // From 127.0.0.1: refused, no event.
    let mut outsider = TestClient::connect(socket.local_addr()).await;
    outsider.expect_closed().await;
    let h = socket.handle();
    eventually("denial counted", || h.stats().denied == 1).await;
    assert_eq!(rec.count(Event::ConnectionNew), 0);
    // From 127.0.0.2: accepted.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut insider = TestClient::new(sock.connect(socket.local_addr()).await.unwrap());
    rec.wait_for(Event::ConnectionNew, 1).await;
    assert_eq!(h.relay(b"welcome").unwrap(), 1);
    assert_eq!(insider.recv_text().await.unwrap(), "welcome");
    assert_eq!(h.stats().denied, 1);
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_event_socket() {
    let pki = Pki::new("tls");
    let rec = Arc::new(Recorder::new().on_msg(|ctx| {
        let mut echo = b"echo:".to_vec();
        echo.extend_from_slice(ctx.message().unwrap());
        ctx.handle().relay(&echo).unwrap();
    }));
    let cfg = Config {
        tls_cert: pki.s("server.pem"),
        tls_key: pki.s("server.key"),
        tls_handshake_timeout_ms: 300,
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    let addr = socket.local_addr();
    let h = socket.handle();

    let mut client = TestClient::new(tls_connect(addr, &pki.path("ca.pem"), None).await.unwrap());
    rec.wait_for(Event::ConnectionNew, 1).await;
    client.send(b"hello").await;
    assert_eq!(client.recv_text().await.unwrap(), "echo:hello");

    // A plain-TCP client on the TLS port never becomes a client.
    let mut plain = TestClient::connect(addr).await;
    plain.send_raw(b"5:hello,").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.stream.read_to_end(&mut rest)).await;
    eventually("handshake failure counted", || h.stats().tls_failures == 1).await;
    // A client that says nothing is dropped after the handshake timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let n = tokio::time::timeout(WAIT, silent.read(&mut [0u8; 16]))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "dropped");
    eventually("timeout counted", || h.stats().tls_failures == 2).await;
    assert_eq!(
        rec.count(Event::ConnectionNew),
        1,
        "only the TLS client ran connection-new"
    );
    assert_eq!(h.client_count(), 1);
    drop(client);
    rec.wait_for(Event::ConnectionClosed, 1).await;
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let pki = Pki::new("mtls");
    let rec = Arc::new(Recorder::new());
    let cfg = Config {
        tls_cert: pki.s("server.pem"),
        tls_key: pki.s("server.key"),
        tls_client_ca: pki.s("ca.pem"),
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    let addr = socket.local_addr();
    let h = socket.handle();
    // No certificate, or one from another CA: refused.
    for cert in [None, Some(("stranger.pem", "stranger.key"))] {
        let cert = cert.map(|(c, k)| (pki.path(c), pki.path(k)));
        let result = tls_connect(
            addr,
            &pki.path("ca.pem"),
            cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .await;
        // TLS 1.3 reports a refused client certificate on the first read.
        if let Ok(mut s) = result {
            let n = tokio::time::timeout(WAIT, s.read(&mut [0u8; 16]))
                .await
                .unwrap();
            assert!(matches!(n, Ok(0) | Err(_)), "refused");
        }
    }
    eventually("both refused", || h.stats().tls_failures == 2).await;
    // With the right certificate: a client.
    let mut ok = TestClient::new(
        tls_connect(
            addr,
            &pki.path("ca.pem"),
            Some((&pki.path("client.pem"), &pki.path("client.key"))),
        )
        .await
        .unwrap(),
    );
    rec.wait_for(Event::ConnectionNew, 1).await;
    h.relay(b"trusted").unwrap();
    assert_eq!(ok.recv_text().await.unwrap(), "trusted");
    assert_eq!(rec.count(Event::ConnectionNew), 1);
    socket.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_clear_start_errors() {
    let pki = Pki::new("bad");
    let rec = Arc::new(Recorder::new());
    let missing = evapi::EventSocket::bind(
        Config {
            tls_cert: pki.s("nope.pem"),
            tls_key: pki.s("server.key"),
            ..config()
        },
        rec.clone(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(missing.contains("nope.pem"), "{missing}");
    let mismatched = evapi::EventSocket::bind(
        Config {
            tls_cert: pki.s("server.pem"),
            tls_key: pki.s("client.key"),
            ..config()
        },
        rec,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        mismatched.contains("server.pem") && mismatched.contains("client.key"),
        "{mismatched}"
    );
}

fn auth_config(max_clients: usize) -> Config {
    Config {
        max_clients,
        auth_token: "s3cret".into(),
        auth_timeout_ms: 300,
        ..config()
    }
}

/// With `auth_token`, idle connections hold no `max_clients` slot and run
/// no connection-new: squatters cannot lock the application out, and are
/// cut when `auth_timeout_ms` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_keeps_squatters_out() {
    let rec = Arc::new(Recorder::new().on_msg(|ctx| {
        let mut echo = b"echo:".to_vec();
        echo.extend_from_slice(ctx.message().unwrap());
        ctx.handle().relay(&echo).unwrap();
    }));
    let socket = start(auth_config(2), rec.clone()).await;
    let addr = socket.local_addr();
    let h = socket.handle();
    // More squatters than max_clients, saying nothing.
    let mut squatters = Vec::new();
    for _ in 0..6 {
        squatters.push(TestClient::connect(addr).await);
    }
    // The application authenticates, with a message in the same segment.
    let mut app = TestClient::connect(addr).await;
    app.send_raw(b"6:s3cret,5:hello,").await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    assert_eq!(app.recv_text().await.unwrap(), "echo:hello");
    assert_eq!(h.client_count(), 1, "squatters hold no slot");
    // Every squatter is cut at the timeout, never having been a client.
    for s in &mut squatters {
        s.expect_closed().await;
    }
    eventually("squatters counted", || h.stats().auth_failures == 6).await;
    // A wrong token is cut too, at once.
    let mut wrong = TestClient::connect(addr).await;
    wrong.send(b"guess").await;
    wrong.expect_closed().await;
    eventually("wrong token counted", || h.stats().auth_failures == 7).await;
    assert_eq!(rec.count(Event::ConnectionNew), 1);
    assert_eq!(
        rec.messages(),
        vec![bytes::Bytes::from_static(b"hello")],
        "the token is never passed on as a message"
    );
    socket.shutdown().await;
}

/// Connections waiting for their token are bounded (`max_pending`): past
/// it, new ones are closed at once and counted as refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_connections_are_bounded() {
    let rec = Arc::new(Recorder::new());
    let cfg = Config {
        auth_timeout_ms: 20_000,
        ..auth_config(1)
    };
    let limit = cfg.max_pending();
    let socket = start(cfg, rec.clone()).await;
    let addr = socket.local_addr();
    let h = socket.handle();
    let mut waiting = Vec::new();
    for _ in 0..limit {
        waiting.push(TestClient::connect(addr).await);
    }
    let mut extra = TestClient::connect(addr).await;
    extra.expect_closed().await;
    eventually("refusal counted", || h.stats().refused == 1).await;
    // One of the waiting ones authenticates and becomes the client.
    waiting[0].send(b"s3cret").await;
    rec.wait_for(Event::ConnectionNew, 1).await;
    assert_eq!(h.client_count(), 1);
    socket.shutdown().await;
}

/// A closed client's slot is free at once, even while what was queued for
/// it is still being flushed (`shutdown_flush_ms`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_clients_slot_is_free_before_its_flush_ends() {
    let rec = Arc::new(Recorder::new().on_msg(|ctx| {
        if &ctx.message().unwrap()[..] == b"bye" {
            ctx.close();
        }
    }));
    let cfg = Config {
        max_clients: 1,
        shutdown_flush_ms: 20_000,
        ..config()
    };
    let socket = start(cfg, rec.clone()).await;
    let addr = socket.local_addr();
    let h = socket.handle();
    // A client that does not read: its queue and socket buffers fill.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = TestClient::new(sock.connect(addr).await.unwrap());
    rec.wait_for(Event::ConnectionNew, 1).await;
    let frame = vec![b'x'; 64 * 1024];
    for _ in 0..64 {
        h.relay(&frame).unwrap();
    }
    stuck.send(b"bye").await;
    eventually("slot freed", || h.client_count() == 0).await;
    // The next client gets the slot while the flush toward `stuck` waits.
    let _next = TestClient::connect(addr).await;
    rec.wait_for(Event::ConnectionNew, 2).await;
    assert_eq!(h.stats().refused, 0);
    drop(stuck);
    socket.shutdown().await;
}
