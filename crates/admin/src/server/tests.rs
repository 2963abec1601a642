//! The accept path over real loopback sockets: refusals happen before any
//! byte is read, the connection limit holds, shutdown closes.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(10);

fn services() -> Services {
    Services {
        rpc: rpc::Registry::new(),
        metrics: Arc::new(|| "# nothing\n".to_string()),
        version: "9.9.9",
        started: Instant::now(),
    }
}

fn config(extra: &str) -> HttpConfig {
    let c: HttpConfig =
        toml::from_str(&format!("listen = \"127.0.0.1:0\"\n{extra}")).expect("a valid [http]");
    c.validate().expect("valid");
    c
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The whole answer to `request`, read until the server closes.
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the server closes in time");
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closed `s` (EOF or reset) without sending a byte.
async fn closed_silently(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("the server neither answered nor closed"),
    }
}

#[test]
fn gate_allows_loopback_and_the_listed_networks() {
    let only_loopback = Gate {
        allow: AllowList::default(),
        loopback: true,
    };
    for yes in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
        assert!(only_loopback.allows(ip(yes)), "{yes}");
    }
    for no in [
        "192.0.2.1",
        "10.0.0.1",
        "::ffff:192.0.2.1",
        "fe80::1",
        "0.0.0.0",
    ] {
        assert!(
            !only_loopback.allows(ip(no)),
            "{no}: an empty list allows nobody else"
        );
    }
    let listed = Gate {
        allow: AllowList::parse(&["10.1.0.0/16", "2001:db8::/32"]).unwrap(),
        loopback: true,
    };
    for yes in [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "::ffff:10.1.2.3",
        "2001:db8::7",
    ] {
        assert!(listed.allows(ip(yes)), "{yes}");
    }
    for no in ["10.2.0.1", "192.0.2.1", "2001:db9::1"] {
        assert!(!listed.allows(ip(no)), "{no}");
    }
}

/// A peer outside the allowed networks: closed right after accept, never
/// answered, even though it sent a whole request. (Loopback is always
/// allowed in the product; this test turns that off to reach the path.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_allow_networks_is_refused_unread() {
    let gate = Gate {
        allow: AllowList::parse(&["192.0.2.0/24"]).unwrap(),
        loopback: false,
    };
    let server = HttpServer::start_with(&config(""), services(), gate)
        .await
        .unwrap();
    let answer = exchange(
        server.local_addr(),
        "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer, "", "refused before any answer");
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(closed_silently(&mut s).await);
    server.shutdown().await;
}

/// With `max_connections = 1`, a second connection is closed at once while
/// the first is open; once the first is gone, a new one is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed() {
    let server = HttpServer::start(&config("max_connections = 1"), services())
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, first.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // `first` is kept alive and open: the one slot is taken.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let _ = second
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_silently(&mut second).await,
        "over the limit: closed unanswered"
    );
    drop(first);
    // The slot comes back when the server sees the close; bounded retries.
    let deadline = Instant::now() + WAIT;
    loop {
        let a = exchange(
            addr,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if a.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back: {a:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

/// Health moves starting → ready → stopping, never back; shutdown closes an
/// idle kept-alive connection and the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_states_and_shutdown() {
    let server = HttpServer::start(&config(""), services()).await.unwrap();
    let addr = server.local_addr();
    let ask = || {
        exchange(
            addr,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    };
    let a = ask().await;
    assert!(
        a.starts_with("HTTP/1.1 503") && a.contains("\"status\":\"starting\""),
        "{a}"
    );
    server.health().set_ready();
    let a = ask().await;
    assert!(
        a.starts_with("HTTP/1.1 200") && a.contains("\"status\":\"ok\""),
        "{a}"
    );
    assert!(
        a.contains("\"version\":\"9.9.9\"") && a.contains("\"uptime\":"),
        "{a}"
    );
    server.health().set_stopping();
    server.health().set_ready();
    let a = ask().await;
    assert!(
        a.starts_with("HTTP/1.1 503") && a.contains("\"status\":\"stopping\""),
        "{a}"
    );

    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(n > 0);
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time");
    assert!(
        closed_silently(&mut idle).await,
        "kept-alive connection closed"
    );
    assert!(TcpStream::connect(addr).await.is_err(), "port closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let c = HttpConfig {
        listen: listen.clone(),
        ..HttpConfig::default()
    };
    let e = HttpServer::start(&c, services())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "cannot listen on [http] listen = \"{listen}\" ({listen}): "
        )),
        "{e}"
    );
}
