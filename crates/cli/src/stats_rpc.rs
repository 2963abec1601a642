//! The statistics methods of the admin RPC, with Kamailio's names,
//! parameters and result shapes: `stats.get_statistics`,
//! `stats.reset_statistics`, `tm.stats`; and ours, `evapi.stats`.
//!
//! Statistics are named `group:name` as Kamailio prints them. Where
//! Kamailio has a statistic for the same thing it has the same name:
//! `core:rcv_requests_invite`, `sl:sent_replies`, and the transaction
//! counters in group `tmx` (where Kamailio 5.6 lists them: `tmx:UAS_transactions`,
//! `tmx:2xx_transactions`...). Ours are in groups `tm` (the table's own:
//! `tm:current`, `tm:suspended`...), `evapi` and `script`.
//!
//! Reset: as in Kamailio, only counters of events are reset; gauges (what
//! is there now: `tm:current`, `evapi:clients`...) are not. A reset is a
//! view kept here (the value at the reset is remembered and subtracted):
//! the counters themselves never go back, so `/metrics` stays monotonic as
//! Prometheus requires, and `tm.stats` / `evapi.stats` show counts since
//! start.

use crate::metrics::{Snapshot, Sources};
use rpc::{Params, Registry, RpcError};
use serde_json::{json, Value};
use sip::REPLY_CLASSES;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Whether a statistic counts events (resettable) or tells a level now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One statistic, as the stats methods list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    group: &'static str,
    name: &'static str,
    value: u64,
    kind: Kind,
}

/// `core:` names of the requests counted by method, in the slot order of
/// [`sip::COUNTED_METHODS`]; Kamailio counts methods it does not know as
/// `unsupported_methods`.
const RCV_REQUESTS: [&str; 15] = [
    "rcv_requests_invite",
    "rcv_requests_ack",
    "rcv_requests_bye",
    "rcv_requests_cancel",
    "rcv_requests_options",
    "rcv_requests_register",
    "rcv_requests_prack",
    "rcv_requests_subscribe",
    "rcv_requests_notify",
    "rcv_requests_publish",
    "rcv_requests_info",
    "rcv_requests_refer",
    "rcv_requests_message",
    "rcv_requests_update",
    "unsupported_methods",
];

/// `core:` names of the replies received by class.
const RCV_REPLIES: [&str; 6] = [
    "rcv_replies_1xx",
    "rcv_replies_2xx",
    "rcv_replies_3xx",
    "rcv_replies_4xx",
    "rcv_replies_5xx",
    "rcv_replies_6xx",
];

/// `tmx:` names of the transactions by final class (2xx to 6xx).
const TMX_FINALS: [&str; 5] = [
    "2xx_transactions",
    "3xx_transactions",
    "4xx_transactions",
    "5xx_transactions",
    "6xx_transactions",
];

/// Every statistic, sorted by group then name (as Kamailio lists them).
fn table(s: &Snapshot) -> Vec<Stat> {
    use Kind::{Counter, Gauge};
    let (tm, ev, sc) = (&s.tm, &s.events, &s.script);
    let sum = |a: &[u64]| a.iter().sum::<u64>();
    let rpl_generated = sum(&tm.replies_local);
    // Stateless forwards by Via are core's, not tm's.
    let rpl_relayed = sum(&tm.replies_relayed).saturating_sub(tm.stateless_replies);
    let mut v = Vec::with_capacity(100);
    let mut add = |group, name, value: u64, kind| {
        v.push(Stat {
            group,
            name,
            value,
            kind,
        })
    };
    add("core", "rcv_requests", sum(&tm.requests), Counter);
    for (name, n) in RCV_REQUESTS.iter().zip(tm.requests) {
        add("core", name, n, Counter);
    }
    add("core", "rcv_replies", sum(&tm.replies_received), Counter);
    for (name, n) in RCV_REPLIES.iter().zip(tm.replies_received) {
        add("core", name, n, Counter);
    }
    add("core", "fwd_replies", sum(&tm.replies_relayed), Counter);
    add("sl", "sent_replies", sum(&tm.replies_stateless), Counter);

    for (name, n) in TMX_FINALS.iter().zip(&tm.finals[1..]) {
        add("tmx", name, *n, Counter);
    }
    add("tmx", "UAC_transactions", 0, Counter);
    add("tmx", "UAS_transactions", tm.created, Counter);
    add(
        "tmx",
        "active_transactions",
        tm.live.saturating_sub(tm.waiting) as u64,
        Gauge,
    );
    add("tmx", "inuse_transactions", tm.live as u64, Gauge);
    add("tmx", "rpl_generated", rpl_generated, Counter);
    add("tmx", "rpl_received", tm.branch_replies, Counter);
    add("tmx", "rpl_relayed", rpl_relayed, Counter);
    add("tmx", "rpl_sent", rpl_generated + rpl_relayed, Counter);

    add("tm", "current", tm.live as u64, Gauge);
    add("tm", "waiting", tm.waiting as u64, Gauge);
    add("tm", "suspended", tm.suspended as u64, Gauge);
    add("tm", "resolving", tm.resolving as u64, Gauge);
    add("tm", "created", tm.created, Counter);
    add("tm", "freed", tm.freed, Counter);
    add("tm", "relayed", tm.relayed, Counter);
    add("tm", "suspended_total", tm.suspended_total, Counter);
    add("tm", "resumed", tm.resumed, Counter);
    add("tm", "suspend_timeouts", tm.suspend_timeouts, Counter);
    add("tm", "timeouts", tm.timeouts, Counter);
    add("tm", "unresolvable", tm.unresolvable, Counter);
    add("tm", "canceled", tm.canceled, Counter);
    add("tm", "absorbed", tm.absorbed, Counter);
    add("tm", "local_replies", tm.local_replies, Counter);
    add("tm", "stateless_replies", tm.stateless_replies, Counter);

    add("evapi", "clients", ev.connected, Gauge);
    add("evapi", "pending_relays", ev.pending_relays, Gauge);
    add("evapi", "max_queued_bytes", ev.max_queued_bytes, Gauge);
    add("evapi", "connects", ev.accepted, Counter);
    add("evapi", "disconnects", ev.closed, Counter);
    add("evapi", "refused_max_clients", ev.refused, Counter);
    add("evapi", "refused_allow_networks", ev.denied, Counter);
    add("evapi", "tls_failures", ev.tls_failures, Counter);
    add("evapi", "auth_failures", ev.auth_failures, Counter);
    add("evapi", "slow_cuts", ev.slow_cut, Counter);
    add("evapi", "protocol_errors", ev.protocol_errors, Counter);
    add("evapi", "messages_received", ev.messages_received, Counter);
    let [relay, multicast, unicast] = ev.relays_by_kind;
    add("evapi", "sent_relay", relay, Counter);
    add("evapi", "sent_multicast", multicast, Counter);
    add("evapi", "sent_unicast", unicast, Counter);
    add("evapi", "send_failures", ev.relays_failed, Counter);
    add("evapi", "send_refused_mlimit", ev.mlimit_refused, Counter);
    add("evapi", "frames_queued", ev.frames_queued, Counter);
    add("evapi", "frames_written", ev.frames_written, Counter);
    add("evapi", "bytes_written", ev.bytes_written, Counter);

    add("script", "errors", sc.errors, Counter);
    add("script", "missing_functions", sc.missing_functions, Counter);
    v.sort_by(|a, b| (a.group, a.name).cmp(&(b.group, b.name)));
    v
}

/// Which statistics one parameter names, as Kamailio reads it: `all`;
/// a group with its colon (`tm:`); or a name, alone (`rcv_requests`) or
/// with its group (`core:rcv_requests`, which Kamailio's get_statistics
/// does not take, its fetch does).
fn selects(param: &str, stat: &Stat) -> bool {
    if param == "all" {
        return true;
    }
    if let Some(group) = param.strip_suffix(':') {
        return stat.group == group;
    }
    match param.split_once(':') {
        Some((group, name)) => stat.group == group && stat.name == name,
        None => stat.name == param,
    }
}

/// The values at the last reset, by statistic.
type Baselines = Mutex<HashMap<(&'static str, &'static str), u64>>;

/// The statistics each parameter names, in order; a name matches one
/// statistic at most (names are unique across groups). Unknown names and
/// groups select nothing, as in Kamailio. Every parameter must be a
/// string; at least one is needed.
fn select<'t>(p: &Params, stats: &'t [Stat]) -> Result<Vec<&'t Stat>, RpcError> {
    const WHAT: &str = "statistic: \"all\", a group such as \"tm:\", or a name";
    p.str(0, WHAT)?;
    let mut out = Vec::new();
    for i in 0..p.len() {
        let param = p.str(i, WHAT)?;
        let named = !param.ends_with(':') && param != "all";
        for s in stats.iter().filter(|s| selects(param, s)) {
            out.push(s);
            if named {
                break;
            }
        }
    }
    Ok(out)
}

fn get_statistics(p: &Params, sources: &Sources, bases: &Baselines) -> Result<Value, RpcError> {
    let stats = table(&sources.snapshot());
    let chosen = select(p, &stats)?;
    let bases = bases.lock().unwrap_or_else(|e| e.into_inner());
    let lines: Vec<Value> = chosen
        .into_iter()
        .map(|s| {
            let base = match s.kind {
                Kind::Counter => bases.get(&(s.group, s.name)).copied().unwrap_or(0),
                Kind::Gauge => 0,
            };
            json!(format!(
                "{}:{} = {}",
                s.group,
                s.name,
                s.value.saturating_sub(base)
            ))
        })
        .collect();
    Ok(Value::Array(lines))
}

fn reset_statistics(p: &Params, sources: &Sources, bases: &Baselines) -> Result<Value, RpcError> {
    let stats = table(&sources.snapshot());
    let chosen = select(p, &stats)?;
    let mut bases = bases.lock().unwrap_or_else(|e| e.into_inner());
    for s in chosen.into_iter().filter(|s| s.kind == Kind::Counter) {
        bases.insert((s.group, s.name), s.value);
    }
    // Kamailio answers an empty structure.
    Ok(json!({}))
}

/// `tm.stats`: Kamailio's fields (`current`, `waiting`, `total`,
/// `total_local`, `rpl_received`, `rpl_generated`, `rpl_sent`, `2xx` to
/// `6xx`, `created`, `freed`, `delayed_free`), and ours about suspension.
fn tm_stats(s: &Snapshot) -> Value {
    let tm = &s.tm;
    let rpl_generated: u64 = tm.replies_local.iter().sum();
    let rpl_relayed = tm
        .replies_relayed
        .iter()
        .sum::<u64>()
        .saturating_sub(tm.stateless_replies);
    let mut pairs = vec![
        ("current", json!(tm.live)),
        ("waiting", json!(tm.waiting)),
        ("total", json!(tm.created)),
        ("total_local", json!(0)),
        ("rpl_received", json!(tm.branch_replies)),
        ("rpl_generated", json!(rpl_generated)),
        ("rpl_sent", json!(rpl_generated + rpl_relayed)),
        ("created", json!(tm.created)),
        ("freed", json!(tm.freed)),
        ("delayed_free", json!(0)),
        ("suspended", json!(tm.suspended)),
        ("suspended_total", json!(tm.suspended_total)),
        ("resumed", json!(tm.resumed)),
        ("suspend_timeouts", json!(tm.suspend_timeouts)),
        ("relayed", json!(tm.relayed)),
        ("timeouts", json!(tm.timeouts)),
    ];
    for (class, n) in REPLY_CLASSES.iter().zip(tm.finals).skip(1) {
        pairs.push((class, json!(n)));
    }
    rpc::object(pairs)
}

/// `evapi.stats`: the `evapi:` statistics (and the script's), as an
/// object, counted since start.
fn evapi_stats(s: &Snapshot) -> Value {
    rpc::object(
        table(s)
            .into_iter()
            .filter(|st| st.group == "evapi")
            .map(|st| (st.name, json!(st.value))),
    )
}

/// Add `stats.get_statistics`, `stats.reset_statistics`, `tm.stats` and
/// `evapi.stats` to `registry`, reading `sources`.
pub fn register(registry: &Registry, sources: Sources) {
    let bases: Arc<Baselines> = Arc::default();
    let (src, b) = (sources.clone(), Arc::clone(&bases));
    registry.register(
        "stats.get_statistics",
        "Statistics as \"group:name = value\" lines: stats.get_statistics all | GROUP: | NAME [...] (e.g. tm:, core:rcv_requests_invite).",
        move |p| get_statistics(p, &src, &b),
    );
    let (src, b) = (sources.clone(), bases);
    registry.register(
        "stats.reset_statistics",
        "Reset counters (not gauges) as seen by stats.get_statistics: stats.reset_statistics all | GROUP: | NAME [...].",
        move |p| reset_statistics(p, &src, &b),
    );
    let src = sources.clone();
    registry.register(
        "tm.stats",
        "Transaction table counters since start: current, waiting, total, replies, final classes, suspensions.",
        move |p| {
            p.no_more(0)?;
            Ok(tm_stats(&src.snapshot()))
        },
    );
    registry.register(
        "evapi.stats",
        "Event socket counters since start: clients, connects, sends by kind, frames and bytes written, slow-client cuts.",
        move |p| {
            p.no_more(0)?;
            Ok(evapi_stats(&sources.snapshot()))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::COUNTED_METHODS;

    #[test]
    fn names_are_unique_and_aligned_with_the_slots() {
        let stats = table(&Snapshot::default());
        let mut names: Vec<&str> = stats.iter().map(|s| s.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name lookup must find one statistic");
        for (name, method) in RCV_REQUESTS.iter().zip(COUNTED_METHODS).take(14) {
            assert_eq!(
                name.strip_prefix("rcv_requests_"),
                Some(&*method.to_lowercase())
            );
        }
        for (name, class) in RCV_REPLIES.iter().zip(REPLY_CLASSES) {
            assert!(name.ends_with(class));
        }
        for (name, class) in TMX_FINALS.iter().zip(&REPLY_CLASSES[1..]) {
            assert!(name.starts_with(class));
        }
    }

    #[test]
    fn selection_as_kamailio_reads_parameters() {
        let stats = table(&Snapshot::default());
        let names = |params: Value| -> Vec<String> {
            select(&Params::from_value(params).unwrap(), &stats)
                .unwrap()
                .iter()
                .map(|s| format!("{}:{}", s.group, s.name))
                .collect()
        };
        assert_eq!(names(json!(["all"])).len(), stats.len());
        let tmx = names(json!(["tmx:"]));
        assert_eq!(
            tmx.first().map(String::as_str),
            Some("tmx:2xx_transactions")
        );
        assert!(tmx.iter().all(|n| n.starts_with("tmx:")));
        assert_eq!(
            names(json!([
                "rcv_requests_invite",
                "core:rcv_replies",
                "nosuch",
                "nosuch:"
            ])),
            ["core:rcv_requests_invite", "core:rcv_replies"]
        );
        for bad in [json!([]), json!([5]), json!(["all", 5])] {
            let e = select(&Params::from_value(bad.clone()).unwrap(), &stats).unwrap_err();
            assert_eq!(e.code, rpc::code::INVALID_PARAMS, "{bad}");
            assert!(e.message.contains("statistic"), "{}", e.message);
        }
    }

    /// The four methods through the registry, on the running parts after
    /// known traffic (see `metrics::live`).
    #[test]
    fn methods_after_known_traffic() {
        let mut live = crate::metrics::live::Live::start();
        let registry = Registry::new();
        register(&registry, live.sources.clone());
        live.known_traffic();
        let call = |m: &str, p: Value| registry.call(m, p).unwrap();
        assert_eq!(
            call(
                "stats.get_statistics",
                json!([
                    "rcv_requests_invite",
                    "core:rcv_requests",
                    "tm:current",
                    "evapi:clients"
                ])
            ),
            json!([
                "core:rcv_requests_invite = 1",
                "core:rcv_requests = 4",
                "tm:current = 1",
                "evapi:clients = 1"
            ])
        );
        let tmx = call("stats.get_statistics", json!(["tmx:"]));
        assert_eq!(
            tmx,
            json!([
                "tmx:2xx_transactions = 0",
                "tmx:3xx_transactions = 0",
                "tmx:4xx_transactions = 1",
                "tmx:5xx_transactions = 0",
                "tmx:6xx_transactions = 0",
                "tmx:UAC_transactions = 0",
                "tmx:UAS_transactions = 1",
                "tmx:active_transactions = 0",
                "tmx:inuse_transactions = 1",
                "tmx:rpl_generated = 2",
                "tmx:rpl_received = 0",
                "tmx:rpl_relayed = 0",
                "tmx:rpl_sent = 2"
            ])
        );
        let all = call("stats.get_statistics", json!(["all"]));
        assert!(
            all.as_array()
                .unwrap()
                .contains(&json!("script:errors = 1")),
            "{all}"
        );
        assert!(
            all.as_array()
                .unwrap()
                .contains(&json!("sl:sent_replies = 2")),
            "{all}"
        );
        assert_eq!(call("stats.get_statistics", json!(["nosuch"])), json!([]));

        // Reset: counters start again from 0; gauges are not reset; the
        // methods that count since start do not move.
        assert_eq!(
            call(
                "stats.reset_statistics",
                json!(["core:", "evapi:clients", "tm:"])
            ),
            json!({})
        );
        assert_eq!(
            call(
                "stats.get_statistics",
                json!([
                    "rcv_requests_invite",
                    "tm:created",
                    "tm:current",
                    "evapi:clients",
                    "evapi:connects"
                ])
            ),
            json!([
                "core:rcv_requests_invite = 0",
                "tm:created = 0",
                "tm:current = 1",
                "evapi:clients = 1",
                "evapi:connects = 1"
            ])
        );
        live.known_traffic();
        assert_eq!(
            call(
                "stats.get_statistics",
                json!(["rcv_requests_invite", "created"])
            ),
            json!(["core:rcv_requests_invite = 1", "tm:created = 1"])
        );
        call("stats.reset_statistics", json!(["all"]));
        assert_eq!(
            call(
                "stats.get_statistics",
                json!(["rcv_requests_options", "errors"])
            ),
            json!(["core:rcv_requests_options = 0", "script:errors = 0"])
        );

        let tm = call("tm.stats", json!([]));
        assert_eq!(tm["created"], 2, "{tm}");
        assert_eq!(tm["total"], 2);
        assert_eq!(tm["4xx"], 2);
        assert_eq!(tm["2xx"], 0);
        assert_eq!(tm["suspended_total"], 2);
        assert_eq!(tm["resumed"], 2);
        assert_eq!(tm["rpl_generated"], 4, "100 and 486, twice");
        let ev = call("evapi.stats", json!([]));
        assert_eq!(ev["clients"], 1, "{ev}");
        assert_eq!(ev["connects"], 1);
        assert_eq!(ev["sent_relay"], 2);
        assert_eq!(ev["frames_written"], 2);
        assert_eq!(ev["messages_received"], 2);

        for (method, params) in [
            ("stats.get_statistics", json!([])),
            ("stats.reset_statistics", json!([1])),
            ("tm.stats", json!(["x"])),
            ("evapi.stats", json!([1])),
        ] {
            let e = registry.call(method, params).unwrap_err();
            assert_eq!(e.code, rpc::code::INVALID_PARAMS, "{method}: {e}");
        }
    }
}
