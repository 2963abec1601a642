//! Tests of the metrics collector: names, values, promtool.

use super::*;

#[path = "../tests/common/promtool.rs"]
mod promtool;

/// The value of the sample `series` (name and labels as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn after_known_traffic_the_text_has_the_counts_and_passes_promtool() {
    let mut live = live::Live::start();
    let before = Metrics::new(live.sources.clone()).render();
    promtool::check(&before);
    assert_eq!(sample(&before, "evapi_event_clients"), 1.0);
    assert_eq!(sample(&before, "evapi_sip_transactions_created_total"), 0.0);
    live.known_traffic();
    let text = Metrics::new(live.sources.clone()).render();
    promtool::check(&text);
    let s = |series: &str| sample(&text, series);
    for (method, n) in [
        ("INVITE", 1.0),
        ("ACK", 1.0),
        ("OPTIONS", 1.0),
        ("PUBLISH", 1.0),
        ("BYE", 0.0),
        ("other", 0.0),
    ] {
        assert_eq!(
            s(&format!(
                "evapi_sip_requests_received_total{{method=\"{method}\"}}"
            )),
            n,
            "{method}"
        );
    }
    for (class, origin, n) in [
        ("2xx", "stateless", 1.0),
        ("5xx", "stateless", 1.0),
        ("1xx", "transaction", 1.0),
        ("4xx", "transaction", 1.0),
        ("4xx", "relayed", 0.0),
    ] {
        let series =
            format!("evapi_sip_replies_sent_total{{class=\"{class}\",origin=\"{origin}\"}}");
        assert_eq!(s(&series), n, "{series}");
    }
    assert_eq!(s("evapi_sip_transactions_created_total"), 1.0);
    assert_eq!(
        s("evapi_sip_transactions_completed_total{class=\"4xx\"}"),
        1.0
    );
    assert_eq!(s("evapi_sip_suspensions_total"), 1.0);
    assert_eq!(s("evapi_sip_resumed_total"), 1.0);
    assert_eq!(s("evapi_sip_suspended"), 0.0);
    assert_eq!(s("evapi_sip_suspend_timeouts_total"), 0.0);
    assert_eq!(s("evapi_sip_suspend_wait_seconds_count"), 1.0);
    assert_eq!(s("evapi_sip_suspend_wait_seconds_bucket{le=\"+Inf\"}"), 1.0);
    assert_eq!(s("evapi_event_relays_total{kind=\"relay\"}"), 1.0);
    assert_eq!(s("evapi_event_relays_total{kind=\"unicast\"}"), 0.0);
    assert_eq!(s("evapi_event_frames_queued_total"), 1.0);
    assert_eq!(s("evapi_event_frames_written_total"), 1.0);
    assert!(s("evapi_event_bytes_written_total") > 50.0);
    assert_eq!(s("evapi_event_clients"), 1.0);
    assert_eq!(s("evapi_event_connects_total"), 1.0);
    assert_eq!(s("evapi_event_disconnects_total"), 0.0);
    assert_eq!(s("evapi_event_messages_received_total"), 1.0);
    assert_eq!(s("evapi_event_slow_client_cuts_total"), 0.0);
    assert_eq!(s("evapi_event_sends_refused_mlimit_total"), 0.0);
    assert_eq!(s("evapi_event_client_queue_max_bytes"), 0.0);
    assert_eq!(s("evapi_script_errors_total"), 1.0);
    // Every family has its help text and the evapi_ prefix.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(name.starts_with("evapi_"), "{line}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no help for {name}"
        );
    }
}

/// With `[nats]` on, the `evapi_nats_*` metrics follow a round trip
/// through a real nats-server (an answer, a no-responders, a publish)
/// and a disconnection, and promtool accepts them; without NATS they
/// are left out.
#[test]
fn nats_counters_move_after_a_round_trip_and_pass_promtool() {
    use futures_util::StreamExt;
    struct Nop;
    impl nats::NatsHandler for Nop {}
    let Some(mut server) = nats::testing::NatsServer::start() else {
        return;
    };
    let live = live::Live::start();
    assert!(!Metrics::new(live.sources.clone())
        .render()
        .contains("evapi_nats_"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let section = nats::NatsSection {
        servers: vec![server.url()],
        node: "m1".into(),
        ..Default::default()
    };
    let running = rt.block_on(async {
        let bound = nats::connect(&section).await.unwrap();
        bound.start(Arc::new(Nop), 1).await.unwrap()
    });
    let handle = running.handle();
    let metrics = Metrics::new(live.sources.clone().with_nats(Some(handle.clone())));
    let wait = |what: &str, f: &dyn Fn(&nats::Stats) -> bool| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !f(&handle.stats()) {
            assert!(
                std::time::Instant::now() < end,
                "timed out waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    // The client's state says connected as soon as it is; the connect is
    // counted when its event reaches the event task, a moment later (CI
    // once scraped in between: connected 1, connects_total 0).
    wait("connected and counted", &|s| s.connected && s.connects >= 1);
    let text = metrics.render();
    promtool::check(&text);
    assert_eq!(sample(&text, "evapi_nats_connected"), 1.0);
    assert_eq!(sample(&text, "evapi_nats_connects_total"), 1.0);
    assert_eq!(sample(&text, "evapi_nats_published_total"), 0.0);
    assert_eq!(sample(&text, "evapi_nats_replies_received_total"), 0.0);

    // A worker answers evapi.unicast.w.
    let _worker = rt.block_on(async {
        let c = async_nats::connect(server.url()).await.unwrap();
        let mut sub = c.subscribe("evapi.unicast.w").await.unwrap();
        let c2 = c.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let reply = m.reply.unwrap();
                c2.publish(reply, "answer".into()).await.unwrap();
            }
        });
        // A request nobody answers returns once the server has read
        // the subscription.
        assert!(c.request("metrics.sync", "".into()).await.is_err());
        c
    });
    handle
        .send(nats::SendKind::Unicast, b"e1", b"w", true)
        .unwrap();
    wait("the answer", &|s| s.replies == 1);
    handle
        .send(nats::SendKind::Unicast, b"e2", b"nobody", true)
        .unwrap();
    wait("no responders", &|s| s.no_responders == 1);
    handle.publish("app.x", b"x", None).unwrap();
    wait("published", &|s| s.published == 3);
    let text = metrics.render();
    promtool::check(&text);
    let s = |series: &str| sample(&text, series);
    assert_eq!(s("evapi_nats_published_total"), 3.0);
    assert_eq!(s("evapi_nats_replies_received_total"), 1.0);
    assert_eq!(s("evapi_nats_no_responders_total"), 1.0);
    assert_eq!(s("evapi_nats_messages_received_total"), 0.0);
    assert_eq!(
        s("evapi_nats_send_failures_total{reason=\"disconnected\"}"),
        0.0
    );

    // The server goes: the gauge drops, a send fails at once, counted.
    server.stop();
    // The same as the connect: the state first, the count a moment later.
    wait("disconnected and counted", &|s| {
        !s.connected && s.disconnects >= 1
    });
    assert_eq!(
        handle.send(nats::SendKind::Unicast, b"e3", b"w", true),
        Err(nats::SendError::Disconnected)
    );
    assert!(handle
        .send(nats::SendKind::Unicast, b"", b"w", true)
        .is_err());
    let text = metrics.render();
    promtool::check(&text);
    let s = |series: &str| sample(&text, series);
    assert_eq!(s("evapi_nats_connected"), 0.0);
    assert_eq!(s("evapi_nats_disconnects_total"), 1.0);
    assert_eq!(
        s("evapi_nats_send_failures_total{reason=\"disconnected\"}"),
        1.0
    );
    assert_eq!(s("evapi_nats_send_failures_total{reason=\"other\"}"), 1.0);
    rt.block_on(running.shutdown());
}

/// What the HTTP listener needs: a `Fn() -> String` it can share.
#[test]
fn metrics_can_be_served_from_any_thread() {
    fn shareable<T: Send + Sync + 'static>(_: &T) {}
    let live = live::Live::start();
    let metrics = Arc::new(Metrics::new(live.sources.clone()));
    let serve = move || metrics.render();
    shareable(&serve);
    let text = std::thread::spawn(serve).join().unwrap();
    assert!(text.contains("# TYPE evapi_event_clients gauge"));
    // What the HTTP listener serves the text with is what the crate writes.
    assert_eq!(
        admin::METRICS_CONTENT_TYPE,
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    );
}

#[test]
fn the_engine_is_not_kept_alive_by_the_metrics() {
    let live = live::Live::start();
    let weak = Arc::downgrade(&live.engine);
    let sources = live.sources.clone();
    assert!(Metrics::new(sources.clone())
        .render()
        .contains("evapi_script_errors_total 0"));
    drop(live);
    assert!(weak.upgrade().is_none(), "the engine outlived the parts");
    assert!(Metrics::new(sources.clone())
        .render()
        .contains("evapi_script_errors_total 0"));
}
