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
#[path = "metrics_tests.rs"]
mod tests;
