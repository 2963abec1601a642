//! Credentials and TLS against a real nats-server on loopback: user and
//! password, token, a creds file (operator mode, JWTs), TLS with a CA, and
//! TLS with a client certificate. For each, the node connects and a
//! worker's answer comes back to it; with a wrong password, a wrong
//! token, an untrusted user, an untrusted CA or no client certificate, the
//! node stays up and disconnected (sends fail at once) and names the
//! server and the cause.

use bytes::Bytes;
use futures_util::StreamExt;
use nats::testing::{NatsServer, TestDir, TestOperator, TestPki};
use nats::{NatsHandle, NatsHandler, NatsSection, Secret, SendError, SendKind};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Hands the answers that come back to the node to the test.
struct Answers(Mutex<mpsc::Sender<String>>);

impl NatsHandler for Answers {
    fn reply(&self, p: &Bytes) {
        let text = String::from_utf8_lossy(p).into_owned();
        let _ = self.0.lock().unwrap().send(text);
    }
    fn no_responders(&self, d: &Bytes) {
        let text = format!("no responders: {}", String::from_utf8_lossy(d));
        let _ = self.0.lock().unwrap().send(text);
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A node with `section`, started; its handle and its answers.
async fn node(section: &NatsSection) -> (nats::Nats, NatsHandle, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let bound = nats::connect(section).await.expect("the client is set up");
    let handle = bound.handle();
    let running = bound
        .start(Arc::new(Answers(Mutex::new(tx))), 1)
        .await
        .expect("started");
    (running, handle, rx)
}

/// A worker connected with `opts`: answers every event on
/// `evapi.unicast.w` with `ans:<event>`.
async fn worker(opts: async_nats::ConnectOptions, url: &str) -> async_nats::Client {
    let c = opts.connect(url).await.expect("the worker connects");
    let mut sub = c.subscribe("evapi.unicast.w").await.unwrap();
    let c2 = c.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let reply = m.reply.expect("a reply subject");
            let mut ans = b"ans:".to_vec();
            ans.extend_from_slice(&m.payload);
            c2.publish(reply, ans.into()).await.unwrap();
        }
    });
    // `flush` only writes: a request nobody answers comes back after the
    // server has read everything before it, the subscription included.
    let sync = c.request("evapi-test.sync", Bytes::new()).await;
    assert!(sync.is_err(), "nobody answers evapi-test.sync");
    c
}

/// The node connects, and an event sent to the worker is answered back
/// to it.
async fn round_trip(section: &NatsSection, worker_opts: async_nats::ConnectOptions) {
    let (running, handle, rx) = node(section).await;
    wait_until("connected", || handle.connected()).await;
    let _w = worker(worker_opts, &section.servers[0]).await;
    handle.send(SendKind::Unicast, b"e1", b"w", true).unwrap();
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(WAIT))
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Ok("ans:e1"), "{:?}", handle.stats());
    assert_eq!(handle.stats().replies, 1);
    assert_eq!(handle.last_error(), None);
    running.shutdown().await;
}

/// The node is refused: it keeps running, disconnected (a send fails at
/// once), and its last error names the server and `cause`.
async fn refused(section: &NatsSection, cause: &str) {
    let (running, handle, _rx) = node(section).await;
    wait_until("the cause of the failure", || handle.last_error().is_some()).await;
    let e = handle.last_error().unwrap();
    eprintln!("refused as expected: {e}");
    let server = &section.servers[0];
    assert!(e.starts_with(&format!("{server}: ")), "{e}");
    assert!(e.contains(cause), "{e}");
    assert!(!handle.connected());
    assert_eq!(handle.stats().connects, 0);
    assert_eq!(
        handle.send(SendKind::Unicast, b"e1", b"w", true),
        Err(SendError::Disconnected)
    );
    running.shutdown().await;
}

fn section(url: String) -> NatsSection {
    NatsSection {
        servers: vec![url],
        node: "n1".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let Some(server) = NatsServer::start_with(
        r#"authorization { users = [
             { user: "node", password: "node-pass" },
             { user: "worker", password: "worker-pass" } ] }"#,
    ) else {
        return;
    };
    let with = |user: &str, password: &str| NatsSection {
        user: user.into(),
        password: Secret(password.into()),
        ..section(server.url())
    };
    round_trip(
        &with("node", "node-pass"),
        async_nats::ConnectOptions::with_user_and_password("worker".into(), "worker-pass".into()),
    )
    .await;
    refused(&with("node", "wrong"), "authorization violation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token() {
    let Some(server) = NatsServer::start_with(r#"authorization { token: "s3cret-token" }"#) else {
        return;
    };
    let with = |token: &str| NatsSection {
        token: Secret(token.into()),
        ..section(server.url())
    };
    round_trip(
        &with("s3cret-token"),
        async_nats::ConnectOptions::with_token("s3cret-token".into()),
    )
    .await;
    refused(&with("wrong-token"), "authorization violation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_file_in_operator_mode() {
    let operator = TestOperator::new();
    let Some(server) = NatsServer::start_with(&operator.server_config()) else {
        return;
    };
    let dir = TestDir::new("nats-creds");
    let node_creds = dir.write("node.creds", &operator.user_creds("node"));
    let worker_creds = dir.write("worker.creds", &operator.user_creds("worker"));
    // A user of another operator's account: not trusted by this server.
    let stranger = dir.write("stranger.creds", &TestOperator::new().user_creds("x"));
    let with = |creds: PathBuf| NatsSection {
        creds_file: creds,
        ..section(server.url())
    };
    // Without credentials, the server refuses anyone.
    refused(&section(server.url()), "authorization violation").await;
    round_trip(
        &with(node_creds),
        async_nats::ConnectOptions::with_credentials_file(worker_creds)
            .await
            .unwrap(),
    )
    .await;
    refused(&with(stranger), "authorization violation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca() {
    let pki = TestPki::new();
    let Some(server) = NatsServer::start_with(&pki.server_config(false)) else {
        return;
    };
    let with = |ca: &str| NatsSection {
        tls_ca: pki.path(ca),
        ..section(server.tls_url())
    };
    round_trip(
        &with("ca.pem"),
        async_nats::ConnectOptions::new()
            .add_root_certificates(pki.path("ca.pem"))
            .require_tls(true),
    )
    .await;
    refused(&with("other-ca.pem"), "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let Some(server) = NatsServer::start_with(&pki.server_config(true)) else {
        return;
    };
    let with_cert = NatsSection {
        tls_ca: pki.path("ca.pem"),
        tls_cert: pki.path("client.pem"),
        tls_key: pki.path("client.key"),
        ..section(server.tls_url())
    };
    round_trip(
        &with_cert,
        async_nats::ConnectOptions::new()
            .add_root_certificates(pki.path("ca.pem"))
            .add_client_certificate(pki.path("client.pem"), pki.path("client.key"))
            .require_tls(true),
    )
    .await;
    // Without a certificate the server ends the handshake.
    let without = NatsSection {
        tls_ca: pki.path("ca.pem"),
        ..section(server.tls_url())
    };
    refused(&without, "").await;
}
