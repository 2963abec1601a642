//! `GET /metrics`: the counters of the SIP host, the event socket, the
//! script and (when `[nats]` is on) the NATS side, in the Prometheus text
//! exposition format (version 0.0.4).
//!
//! Nothing here is on a message's path. The counters live in the crates
//! that own the events (relaxed atomics, or plain integers under the
//! transaction table's lock); a scrape reads them all once ([`Snapshot`])
//! and a `prometheus-client` collector writes them out. The hot paths do
//! not know this crate exists.
//!
//! Why the 0.0.4 text format and not OpenMetrics: `promtool check metrics`
//! (which CI runs on this output) lints the 0.0.4 format and rejects
//! OpenMetrics' counter families (`# TYPE x counter` with samples named
//! `x_total`); Prometheus scrapes both. The HTTP listener serves
//! [`Metrics::render`]'s text as `admin::METRICS_CONTENT_TYPE`.

use evapi::{EvapiHandle, RelayKind};
use nats::NatsHandle;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use script::{Engine, ScriptStats};
use sip::{SipHandle, TmStats, COUNTED_METHODS, REPLY_CLASSES, SUSPEND_WAIT_BOUNDS_MS};
use std::fmt;
use std::sync::{Arc, Weak};

type ScriptSource = Arc<dyn Fn() -> ScriptStats + Send + Sync>;

/// Where the counters are read from: the handles of the running parts.
#[derive(Clone)]
pub struct Sources {
    sip: SipHandle,
    events: EvapiHandle,
    script: ScriptSource,
    nats: Option<NatsHandle>,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Sources {
    /// The running host, event socket and script engine. The engine is
    /// held weakly: reading its counters does not keep it alive past
    /// shutdown (its counters read as zero once it is gone).
    pub fn new(sip: SipHandle, events: EvapiHandle, engine: &Arc<Engine>) -> Sources {
        let engine: Weak<Engine> = Arc::downgrade(engine);
        Self::with_script(sip, events, move || {
            engine.upgrade().map(|e| e.stats()).unwrap_or_default()
        })
    }

    /// As [`Sources::new`], with the script's counters read by `script`
    /// (for a caller that replaces the engine, on reload).
    pub fn with_script(
        sip: SipHandle,
        events: EvapiHandle,
        script: impl Fn() -> ScriptStats + Send + Sync + 'static,
    ) -> Sources {
        Sources {
            sip,
            events,
            script: Arc::new(script),
            nats: None,
        }
    }

    /// These sources, and the NATS side's counters when `nats` is given
    /// (`[nats]` is on); without it the `evapi_nats_*` metrics are left
    /// out.
    pub fn with_nats(mut self, nats: Option<NatsHandle>) -> Sources {
        self.nats = nats;
        self
    }

    /// Read every counter once.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            tm: self.sip.stats(),
            events: self.events.stats(),
            script: (self.script)(),
            nats: self.nats.as_ref().map(NatsHandle::stats),
        }
    }
}

/// Every counter, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The SIP host and its transaction table.
    pub tm: TmStats,
    /// The event socket.
    pub events: evapi::Stats,
    /// The script.
    pub script: ScriptStats,
    /// The NATS side, when `[nats]` is on.
    pub nats: Option<nats::Stats>,
}

/// The metrics of one process: a `prometheus-client` registry whose one
/// collector reads [`Sources`] at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Metrics read from `sources`.
    pub fn new(sources: Sources) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(sources)));
        Metrics { registry }
    }

    /// The exposition text (Prometheus text format 0.0.4; serve it with
    /// `admin::METRICS_CONTENT_TYPE`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail, and the collector itself
        // returns no error of its own.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The collector: one [`Snapshot`] per scrape, written out.
#[derive(Debug)]
struct Scrape(Sources);

type Enc<'a, 'b> = &'a mut DescriptorEncoder<'b>;

fn counter(e: Enc, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

fn gauge(e: Enc, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
}

/// A counter with one label, one sample per (label value, count).
fn counter_by<'v>(
    e: Enc,
    name: &str,
    help: &str,
    label: &'static str,
    samples: impl IntoIterator<Item = (&'v str, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in samples {
        let labels = [(label, value)];
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = self.0.snapshot();
        sip_metrics(&mut e, &s.tm)?;
        event_metrics(&mut e, &s.events)?;
        counter(
            &mut e,
            "evapi_script_errors",
            "Script runs (request, reply, failure, branch routes and event callbacks) that ended in an error: a Lua error or exception, the memory or time limit, or a Lua state that could not be loaded.",
            s.script.errors,
        )?;
        counter(
            &mut e,
            "evapi_script_missing_functions",
            "Calls of a route function the script does not define.",
            s.script.missing_functions,
        )?;
        match &s.nats {
            Some(n) => nats_metrics(&mut e, n),
            None => Ok(()),
        }
    }
}

fn sip_metrics(e: Enc, tm: &TmStats) -> fmt::Result {
    counter_by(
        e,
        "evapi_sip_requests_received",
        "SIP requests received and parsed, by method (\"other\": methods not listed), retransmissions included.",
        "method",
        COUNTED_METHODS.iter().copied().zip(tm.requests),
    )?;
    counter_by(
        e,
        "evapi_sip_replies_received",
        "SIP replies received and parsed, by code class.",
        "class",
        REPLY_CLASSES.iter().copied().zip(tm.replies_received),
    )?;
    {
        let mut m = e.encode_descriptor(
            "evapi_sip_replies_sent",
            "SIP replies sent upstream, by code class and origin: stateless (sl_send_reply, 400 to malformed requests), transaction (generated on a transaction: 100 Trying, t_reply, 408, 487, 503) or relayed (forwarded from downstream). Retransmissions are not counted.",
            None,
            MetricType::Counter,
        )?;
        for (origin, counts) in [
            ("stateless", tm.replies_stateless),
            ("transaction", tm.replies_local),
            ("relayed", tm.replies_relayed),
        ] {
            for (class, v) in REPLY_CLASSES.iter().zip(counts) {
                let labels = [("class", *class), ("origin", origin)];
                ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
            }
        }
    }
    gauge(
        e,
        "evapi_sip_transactions",
        "Transactions in the table now, including finished ones lingering to absorb retransmissions.",
        tm.live as u64,
    )?;
    gauge(
        e,
        "evapi_sip_transactions_waiting",
        "Transactions whose final reply was sent, lingering now to absorb retransmissions.",
        tm.waiting as u64,
    )?;
    counter(
        e,
        "evapi_sip_transactions_created",
        "Transactions created.",
        tm.created,
    )?;
    counter_by(
        e,
        "evapi_sip_transactions_completed",
        "Transactions by the class of the final reply sent upstream.",
        "class",
        REPLY_CLASSES.iter().copied().zip(tm.finals).skip(1),
    )?;
    counter(
        e,
        "evapi_sip_branches_relayed",
        "Branches relayed downstream (t_relay).",
        tm.relayed,
    )?;
    counter(
        e,
        "evapi_sip_timeouts",
        "Final-reply timeouts answered with 408, suspended transactions and relayed branches.",
        tm.timeouts,
    )?;
    counter(
        e,
        "evapi_sip_cancelled",
        "INVITE transactions cancelled by a CANCEL.",
        tm.canceled,
    )?;
    gauge(
        e,
        "evapi_sip_suspended",
        "Transactions suspended now, waiting for t_continue.",
        tm.suspended as u64,
    )?;
    counter(
        e,
        "evapi_sip_suspensions",
        "Transactions suspended (t_suspend, evapi async_relay).",
        tm.suspended_total,
    )?;
    counter(
        e,
        "evapi_sip_resumed",
        "Suspended transactions continued (t_continue).",
        tm.resumed,
    )?;
    counter(
        e,
        "evapi_sip_suspend_timeouts",
        "Suspended transactions that reached fr_timer / fr_inv_timer before a t_continue and were answered 408.",
        tm.suspend_timeouts,
    )?;
    let h = &tm.suspend_wait;
    let buckets: Vec<(f64, u64)> = SUSPEND_WAIT_BOUNDS_MS
        .iter()
        .map(|&ms| ms as f64 / 1000.0)
        .chain([f64::INFINITY])
        .zip(h.buckets)
        .collect();
    let mut m = e.encode_descriptor(
        "evapi_sip_suspend_wait_seconds",
        "Time from t_suspend to t_continue of continued transactions, measured in whole milliseconds.",
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<NoLabelSet>(h.sum_ms as f64 / 1000.0, h.count, &buckets, None)
}

fn event_metrics(e: Enc, ev: &evapi::Stats) -> fmt::Result {
    counter_by(
        e,
        "evapi_event_relays",
        "Sends to event clients accepted, by kind: relay (every client), multicast (every client of a tag), unicast (one client of a tag).",
        "kind",
        RelayKind::ALL
            .iter()
            .map(|k| k.as_str())
            .zip(ev.relays_by_kind),
    )?;
    counter(
        e,
        "evapi_event_relays_failed",
        "Sends to event clients refused: empty data, bad tag, context_mlimit, shutting down.",
        ev.relays_failed,
    )?;
    counter(
        e,
        "evapi_event_sends_refused_mlimit",
        "Sends to event clients refused because context_mlimit relays were pending (at once, or after send_task_timeout).",
        ev.mlimit_refused,
    )?;
    counter(
        e,
        "evapi_event_frames_queued",
        "Frames queued to event clients (one send to n clients counts n).",
        ev.frames_queued,
    )?;
    counter(
        e,
        "evapi_event_frames_written",
        "Frames written whole to event clients' sockets.",
        ev.frames_written,
    )?;
    counter(
        e,
        "evapi_event_bytes_written",
        "Bytes written to event clients' sockets.",
        ev.bytes_written,
    )?;
    gauge(
        e,
        "evapi_event_clients",
        "Event clients connected now.",
        ev.connected,
    )?;
    counter(
        e,
        "evapi_event_connects",
        "Event clients accepted.",
        ev.accepted,
    )?;
    counter(
        e,
        "evapi_event_disconnects",
        "Event client connections ended, for any reason.",
        ev.closed,
    )?;
    counter_by(
        e,
        "evapi_event_connections_refused",
        "Event socket connections refused, by reason: max_clients reached, peer not in allow_networks, TLS handshake failed, auth_token not sent in time.",
        "reason",
        [
            ("max_clients", ev.refused),
            ("allow_networks", ev.denied),
            ("tls", ev.tls_failures),
            ("auth", ev.auth_failures),
        ],
    )?;
    counter(
        e,
        "evapi_event_slow_client_cuts",
        "Event clients cut for being slow: their queue passed the limit, or a write waited longer than send_data_timeout.",
        ev.slow_cut,
    )?;
    counter(
        e,
        "evapi_event_protocol_errors",
        "Event client connections closed for malformed or oversized input.",
        ev.protocol_errors,
    )?;
    counter(
        e,
        "evapi_event_messages_received",
        "Messages received from event clients (keep-alives not counted).",
        ev.messages_received,
    )?;
    gauge(
        e,
        "evapi_event_pending_relays",
        "Sends not yet written to all their recipients now (tracked only with context_mlimit).",
        ev.pending_relays,
    )?;
    gauge(
        e,
        "evapi_event_client_queue_max_bytes",
        "The most bytes queued for one event client now.",
        ev.max_queued_bytes,
    )
}

fn nats_metrics(e: Enc, n: &nats::Stats) -> fmt::Result {
    gauge(
        e,
        "evapi_nats_connected",
        "1 while connected to a NATS server, 0 while not.",
        n.connected as u64,
    )?;
    counter(
        e,
        "evapi_nats_connects",
        "Connections made to a NATS server: the first one and each reconnection.",
        n.connects,
    )?;
    counter(
        e,
        "evapi_nats_disconnects",
        "Connections to a NATS server lost.",
        n.disconnects,
    )?;
    counter(
        e,
        "evapi_nats_published",
        "Messages handed to the NATS client: evapi sends over NATS and KSR.nats.publish.",
        n.published,
    )?;
    counter_by(
        e,
        "evapi_nats_send_failures",
        "Sends over NATS that failed, by reason: disconnected (not connected to a server: failed at once, never kept for later), other (queue full, bad subject, empty data, shutting down).",
        "reason",
        [
            ("disconnected", n.send_disconnected),
            ("other", n.send_failed.saturating_sub(n.send_disconnected)),
        ],
    )?;
    counter(
        e,
        "evapi_nats_no_responders",
        "Watched sends that reached nobody (NATS had no responders, or the link went before they were published): each ran the event callback as evapi:no-responders.",
        n.no_responders,
    )?;
    counter(
        e,
        "evapi_nats_replies_received",
        "Answers received on this node's reply subject.",
        n.replies,
    )?;
    counter(
        e,
        "evapi_nats_messages_received",
        "Messages received on [[nats.subscribe]] subjects.",
        n.messages,
    )
}

/// The running parts on loopback, for the tests of this module and of
/// `stats_rpc`: a SIP host, an event socket and the default script, with
/// one event client connected.
#[cfg(test)]
pub(crate) mod live {
    use super::Sources;
    use evapi::testing::BlockingClient;
    use evapi::EventSocket;
    use script::{Engine, ScriptConfig};
    use sip::testing::{branch, Agent, Call};
    use sip::{Method, SipHost, Transport};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const WAIT: Duration = Duration::from_secs(5);

    /// The default script, with one route error added: PUBLISH fails.
    fn script() -> String {
        format!(
            "{}\nlocal default_route = ksr_request_route\n\
             function ksr_request_route()\n\
                 if KSR.pv.get(\"$rm\") == \"PUBLISH\" then error(\"metrics test\") end\n\
                 default_route()\n\
             end\n",
            crate::config::DEFAULT_SCRIPT
        )
    }

    pub(crate) struct Live {
        rt: tokio::runtime::Runtime,
        host: Option<SipHost>,
        events: Option<EventSocket>,
        pub engine: Arc<Engine>,
        pub sources: Sources,
        pub client: BlockingClient,
        pub sip: SocketAddr,
        rounds: u64,
    }

    impl Live {
        pub fn start() -> Live {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (host, events, engine) = rt.block_on(async {
                let ev_cfg = evapi::Config {
                    bind_addr: "127.0.0.1:0".into(),
                    event_callback: "ksr_evapi_event".into(),
                    ..Default::default()
                };
                let bound_events = EventSocket::listen(ev_cfg).await.unwrap();
                let mut host_cfg = sip::HostConfig::default();
                host_cfg.sip.listen = vec!["udp:127.0.0.1:0".into()];
                host_cfg.sip.children = 2;
                let bound_sip = SipHost::bind(host_cfg).await.unwrap();
                let cfg = ScriptConfig {
                    file: "router.lua".into(),
                    source: Some(script()),
                    event_callback: "ksr_evapi_event".into(),
                    ..Default::default()
                };
                let engine = Engine::new(
                    &cfg,
                    Arc::new(bound_events.handle()),
                    Arc::new(bound_sip.handle()),
                    rpc::Registry::new(),
                )
                .unwrap();
                let events = bound_events.start(engine.evapi_handler()).unwrap();
                let host = bound_sip.start(engine.sip_router()).unwrap();
                (host, events, engine)
            });
            let sources = Sources::new(host.handle(), events.handle(), &engine);
            let client = BlockingClient::connect(events.local_addr());
            let sip = host.local_addrs()[0].1;
            assert_eq!(host.local_addrs()[0].0, Transport::Udp);
            let live = Live {
                rt,
                host: Some(host),
                events: Some(events),
                engine,
                sources,
                client,
                sip,
                rounds: 0,
            };
            live.wait("client registered", |s| s.events.connected == 1);
            live
        }

        /// Wait (bounded) until a snapshot satisfies `f`.
        pub fn wait(&self, what: &str, f: impl Fn(&super::Snapshot) -> bool) {
            let end = Instant::now() + WAIT;
            while !f(&self.sources.snapshot()) {
                assert!(Instant::now() < end, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        /// The traffic the tests know the counts of: OPTIONS (stateless
        /// 200), PUBLISH (script error, stateless 500), and an INVITE
        /// suspended, sent to the event client, answered 486 by it, and
        /// ACKed. Each round adds the same counts.
        pub fn known_traffic(&mut self) {
            self.rounds += 1;
            let rounds = self.rounds;
            let mut a = Agent::udp("127.0.0.1:0").unwrap();
            let call = Call::new(&a, &format!("metrics-{rounds}"), "sip:bob@127.0.0.1");
            a.send(self.sip, call.request("OPTIONS", &branch(), 1, None, ""))
                .unwrap();
            a.expect_status(200, Some(Method::Options), WAIT)
                .expect("200 to OPTIONS");
            a.send(self.sip, call.request("PUBLISH", &branch(), 2, None, ""))
                .unwrap();
            a.expect_status(500, Some(Method::Publish), WAIT)
                .expect("500 after the script error");
            let invite = String::from_utf8(call.request("INVITE", &branch(), 3, None, "")).unwrap();
            a.send(self.sip, &invite).unwrap();
            let event: serde_json::Value =
                serde_json::from_str(&self.client.recv().expect("the invite event")).unwrap();
            self.client.send(
                &serde_json::json!({
                    "tindex": event["tindex"], "tlabel": event["tlabel"],
                    "code": 486, "reason": "Busy Here"
                })
                .to_string(),
            );
            let (code, busy) = a.recv_status(&[100], WAIT).expect("486");
            assert_eq!(code, 486);
            a.ack_for(self.sip, &invite, &busy).unwrap();
            self.wait("the ACK and the written frame", |s| {
                s.tm.requests[1] == rounds && s.events.frames_written == rounds
            });
        }
    }

    impl Drop for Live {
        fn drop(&mut self) {
            let (host, events) = (self.host.take(), self.events.take());
            self.rt.block_on(async {
                if let Some(h) = host {
                    h.shutdown().await;
                }
                if let Some(e) = events {
                    e.shutdown().await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// The value of the sample `series` (name and labels as written).
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// `promtool check metrics` on `text` (Debian package `prometheus`).
    /// Without promtool: a skip note, unless `EVAPI_REQUIRE_PROMTOOL=1`
    /// (set by `.ci/run`), which makes it a failure.
    fn promtool_check(text: &str) {
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                if std::env::var("EVAPI_REQUIRE_PROMTOOL").as_deref() == Ok("1") {
                    panic!("promtool cannot run ({e}) and EVAPI_REQUIRE_PROMTOOL=1 (apt-get install prometheus)");
                }
                eprintln!("SKIPPED promtool check: {e} (install the prometheus package; set EVAPI_REQUIRE_PROMTOOL=1 to make this fatal)");
                return;
            }
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}\n{}{}\n--- input:\n{text}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    #[test]
    fn after_known_traffic_the_text_has_the_counts_and_passes_promtool() {
        let mut live = live::Live::start();
        let before = Metrics::new(live.sources.clone()).render();
        promtool_check(&before);
        assert_eq!(sample(&before, "evapi_event_clients"), 1.0);
        assert_eq!(sample(&before, "evapi_sip_transactions_created_total"), 0.0);
        live.known_traffic();
        let text = Metrics::new(live.sources.clone()).render();
        promtool_check(&text);
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
        wait("connected", &|s| s.connected);
        let text = metrics.render();
        promtool_check(&text);
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
        promtool_check(&text);
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
        wait("disconnected", &|s| !s.connected);
        assert_eq!(
            handle.send(nats::SendKind::Unicast, b"e3", b"w", true),
            Err(nats::SendError::Disconnected)
        );
        assert!(handle
            .send(nats::SendKind::Unicast, b"", b"w", true)
            .is_err());
        let text = metrics.render();
        promtool_check(&text);
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
}
