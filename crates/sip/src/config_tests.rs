//! Tests of the `[sip]` and `[tm]` sections: defaults, unknown keys and
//! every bound, with the exact messages.

use super::*;

#[test]
fn sections_deserialize_with_defaults_and_refuse_unknown_keys() {
    let c: HostConfig = toml::from_str("[sip]\nchildren = 2\n[tm]\nfr_timer = 7\n").unwrap();
    assert_eq!(c.sip.children, 2);
    assert_eq!(c.tm.fr_timer, 7);
    assert_eq!(c.tm.fr_inv_timer, 120_000);
    let s: SipConfig = toml::from_str("queue_size = 3").unwrap();
    assert_eq!((s.queue_size, s.children), (3, 4));
    let t: TmConfig = toml::from_str("t1 = 100\nt2 = 200").unwrap();
    assert_eq!((t.t1, t.t2, t.wait_timer), (100, 200, 5_000));
    assert!(toml::from_str::<SipConfig>("chidlren = 2").is_err());
    assert!(toml::from_str::<TmConfig>("fr_timer_ms = 2").is_err());
    assert!(toml::from_str::<HostConfig>("[sip]\nfr_timer = 2").is_err());
    assert!(toml::from_str::<HostConfig>("[evapi]\n").is_err());
}

fn sip_err(c: SipConfig) -> String {
    c.validate().unwrap_err().to_string()
}

fn tm_err(c: TmConfig) -> String {
    c.validate().unwrap_err().to_string()
}

#[test]
fn sip_bounds_name_section_key_and_value() {
    assert!(HostConfig::default().validate().is_ok());
    let d = SipConfig::default;
    let listen = |l: &[&str]| SipConfig {
        listen: l.iter().map(|s| s.to_string()).collect(),
        ..d()
    };
    assert_eq!(
        sip_err(listen(&["udp:127.0.0.1:5060", "sctp:127.0.0.1:5060"])),
        "[sip] listen = \"sctp:127.0.0.1:5060\": the protocol must be udp or tcp"
    );
    let e = sip_err(listen(&["tcp:localhost"]));
    assert!(e.starts_with("[sip] listen = \"tcp:localhost\": "), "{e}");
    // localhost is accepted (as in [evapi] bind_addr); other names are
    // refused with the same words.
    assert!(listen(&["udp:localhost:5060"]).validate().is_ok());
    let e = sip_err(listen(&["udp:sip.example.com:5060"]));
    assert!(e.contains(hostaddr::ONLY_IP_OR_LOCALHOST), "{e}");
    let e = sip_err(listen(&[]));
    assert!(e.starts_with("[sip] listen = []: give at least one"), "{e}");
    for (c, want) in [
        (
            SipConfig { children: 0, ..d() },
            "[sip] children = 0: must be 1 to 1024",
        ),
        (
            SipConfig {
                children: 1025,
                ..d()
            },
            "[sip] children = 1025: must be 1 to 1024",
        ),
        (
            SipConfig {
                io_threads: 257,
                ..d()
            },
            "[sip] io_threads = 257: must be 0 (one per four CPUs) to 256",
        ),
        (
            SipConfig {
                max_message_size: 511,
                ..d()
            },
            "[sip] max_message_size = 511: must be 512 to 67108864 (bytes)",
        ),
        (
            SipConfig {
                max_transactions: 0,
                ..d()
            },
            "[sip] max_transactions = 0: must be at least 1",
        ),
        (
            SipConfig {
                tcp_idle_timeout_ms: DAY_MS + 1,
                ..d()
            },
            "[sip] tcp_idle_timeout_ms = 86400001: must be at most 86400000 (one day, in milliseconds)",
        ),
        (
            SipConfig {
                queue_size: 0,
                ..d()
            },
            "[sip] queue_size = 0: must be at least 1",
        ),
        (
            SipConfig {
                tcp_send_queue_limit: 1000,
                ..d()
            },
            "[sip] tcp_send_queue_limit = 1000: must be 65536 to 1073741824 (bytes)",
        ),
        (
            SipConfig {
                tcp_message_timeout_ms: 0,
                ..d()
            },
            "[sip] tcp_message_timeout_ms = 0: must be 1 to 86400000 (milliseconds)",
        ),
        (
            SipConfig {
                max_tcp_connections_per_ip: 0,
                ..d()
            },
            "[sip] max_tcp_connections_per_ip = 0: must be at least 1",
        ),
        (
            SipConfig {
                dns_timeout_ms: 0,
                ..d()
            },
            "[sip] dns_timeout_ms = 0: must be 1 to 60000 (milliseconds)",
        ),
        (
            SipConfig {
                dns_timeout_ms: 60_001,
                ..d()
            },
            "[sip] dns_timeout_ms = 60001: must be 1 to 60000 (milliseconds)",
        ),
        (
            SipConfig {
                dns_servers: vec!["127.0.0.1:5353".into(), "ns.example".into()],
                ..d()
            },
            "[sip] dns_servers = \"ns.example\": expected an IP address, or IP:port (IPv6 in brackets)",
        ),
    ] {
        assert_eq!(sip_err(c), want);
    }
    assert!(SipConfig {
        children: 1024,
        max_message_size: 512,
        tcp_send_queue_limit: MIN_SEND_QUEUE,
        tcp_message_timeout_ms: 1,
        max_tcp_connections_per_ip: 1,
        ..d()
    }
    .validate()
    .is_ok());
}

#[test]
fn tm_bounds_name_section_key_and_value() {
    let d = TmConfig::default;
    for (c, want) in [
        (
            TmConfig { fr_timer: 0, ..d() },
            "[tm] fr_timer = 0: must be at least 1 (milliseconds)",
        ),
        (
            TmConfig {
                fr_inv_timer: 0,
                ..d()
            },
            "[tm] fr_inv_timer = 0: must be at least 1 (milliseconds)",
        ),
        (
            TmConfig {
                fr_inv_timer: DAY_MS + 1,
                ..d()
            },
            "[tm] fr_inv_timer = 86400001: must be at most 86400000 (one day, in milliseconds)",
        ),
        (
            TmConfig {
                wait_timer: u64::MAX,
                ..d()
            },
            "[tm] wait_timer = 18446744073709551615: must be at most 86400000 (one day, in milliseconds)",
        ),
        (
            TmConfig { t1: 0, ..d() },
            "[tm] t1 = 0: must be at least 1 (milliseconds)",
        ),
        (
            TmConfig {
                t1: 5000,
                t2: 4000,
                ..d()
            },
            "[tm] t1 = 5000: must not exceed t2 = 4000",
        ),
    ] {
        assert_eq!(tm_err(c), want);
    }
    assert!(TmConfig {
        wait_timer: 0,
        t1: 4000,
        ..d()
    }
    .validate()
    .is_ok());
    // The composition reports the same words as the section.
    let h = HostConfig {
        tm: TmConfig { fr_timer: 0, ..d() },
        ..HostConfig::default()
    };
    assert_eq!(
        h.validate().unwrap_err().to_string(),
        "[tm] fr_timer = 0: must be at least 1 (milliseconds)"
    );
}

#[test]
fn listen_entries() {
    assert!(matches!(
        parse_listen("udp:127.0.0.1:0"),
        Ok((Transport::Udp, _))
    ));
    assert!(matches!(
        parse_listen("TCP:[::1]:5060"),
        Ok((Transport::Tcp, _))
    ));
    assert!(parse_listen("sctp:127.0.0.1:5060").is_err());
    assert!(parse_listen("udp:localhost").is_err());
    let (t, local) = parse_listen("udp:localhost:5060").unwrap();
    assert_eq!(t, Transport::Udp);
    assert!(!local.is_empty());
    assert!(local
        .iter()
        .all(|a| a.ip().is_loopback() && a.port() == 5060));
    let e = parse_listen("tcp:example.com:5060")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "[sip] listen = \"tcp:example.com:5060\": {}",
            hostaddr::ONLY_IP_OR_LOCALHOST
        )
    );
    assert!(parse_listen("udp:localhost:99999").is_err());
}

#[test]
fn dns_server_entries() {
    assert_eq!(
        parse_dns_server("10.0.0.53").unwrap(),
        "10.0.0.53:53".parse().unwrap()
    );
    assert_eq!(
        parse_dns_server("[::1]:5353").unwrap(),
        "[::1]:5353".parse().unwrap()
    );
    assert_eq!(
        parse_dns_server("::1").unwrap(),
        "[::1]:53".parse().unwrap()
    );
    assert!(parse_dns_server("127.0.0.1:").is_err());
    let s: SipConfig =
        toml::from_str("dns_timeout_ms = 250\ndns_servers = [\"127.0.0.1:5353\"]").unwrap();
    assert_eq!(s.dns_timeout_ms, 250);
    assert_eq!(s.dns_servers, ["127.0.0.1:5353"]);
    assert_eq!(SipConfig::default().dns_timeout_ms, 3_000);
}

#[test]
fn io_threads_default_to_one_per_four_cpus() {
    let d = SipConfig::default();
    assert_eq!(d.io_threads, 0);
    for (cpus, want) in [(1, 1), (2, 1), (4, 1), (8, 2), (64, 16)] {
        assert_eq!(d.io_threads(cpus), want, "{cpus} CPUs");
    }
    let three = SipConfig {
        io_threads: 3,
        ..SipConfig::default()
    };
    assert_eq!(three.io_threads(64), 3, "a number given is kept");
    assert!(three.validate().is_ok());
}
