//! What the Lua layer costs per SIP message: Kamailio's example KEMI
//! script (`../shared/compat/kamailio-basic-kemi-lua.lua`, unchanged), the
//! dialog row's script (`bench/dialog.py`) and the relay row's, run through the engine's
//! real router hooks (`Engine::sip_router`) on realistic messages, with
//! no socket in the timed part. Reports ns and heap allocations (a
//! counting global allocator: Lua's own allocations go through it too)
//! per message; the time is the bench thread's time on a CPU (from
//! `/proc/thread-self/schedstat`), so that other load on the box weighs
//! less than on a wall clock (this machine's kernel counts it in ticks
//! of 4 ms: a round of 20,000 messages resolves 0.2 µs per message;
//! BENCH_ITERS=100000 for finer figures). Run:
//!
//!     cargo bench -p script --bench route
//!
//! The SIP host operations the script acts through are a bench `SipOps`:
//! `is_myself`, the location table and the dialog table are the real
//! ones of a SIP host bound on loopback (never started: nothing is read or
//! sent), while `t_relay`, `t_newtran`, `sl_reply` and `t_reply` only
//! count (they are the transaction layer's cost, not the script's), and
//! `t_check_trans` answers "no transaction" as for a new request.
//!
//! The messages are those of the basic row's load (`bench/basic.py`):
//! bob's REGISTER, the caller's INVITE to bob (looked up, Record-Routed,
//! relayed through the branch route), the ACK and BYE loose-routed along
//! our Record-Route, an OPTIONS keepalive to the proxy, and the replies
//! 180, 200 (INVITE: `ksr_reply_route` and the `t_on_reply` route) and
//! 200 (BYE). "call" is one call's script work in the basic row: INVITE,
//! ACK, BYE, three `ksr_reply_route` runs and two `ksr_onreply_manage`.
//!
//! "relay" is the relay row's script (`bench/evapi/relay.lua`: eight
//! `KSR.pv.get` reads, a relay, a stateless 200) on an OPTIONS, beside the
//! same script with the reads' values as constants: the difference is what
//! the eight reads cost.
//!
//! Env: BENCH_ITERS (messages per round, default 20000), BENCH_ROUNDS
//! (default 7; the median and the spread of the rounds are printed),
//! BENCH_ONLY (`basic`, `dialog` or `relay`), BENCH_MAX_ROUTE_MS=0 (`[script]
//! max_route_ms = 0`: no time limit, so no Lua instruction hook).

use script::{Engine, EventOps, ScriptConfig, SipOps};
use sip::{
    HostConfig, Request, Router, SipConfig, SipHandle, SipHost, SipMessage, Source, TmError,
    Transport, TxRef,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The system allocator, counting allocations (and reallocations).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The host operations: real `is_myself`, location and dialog tables;
/// the transaction layer's sends only counted.
struct BenchSip {
    host: SipHandle,
    relayed: AtomicU64,
    replied: AtomicU64,
}

impl SipOps for BenchSip {
    fn sl_reply(&self, req: &Request, code: i64, reason: &str) -> Result<(), TmError> {
        sip::check_reply(req, code, reason)?;
        self.replied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn t_newtran(&self, _: &mut Request) -> Result<TxRef, TmError> {
        Ok(TxRef { index: 1, label: 1 })
    }
    fn t_check_trans(&self, _: &Request) -> bool {
        false
    }
    fn t_reply(&self, req: &mut Request, code: i64, reason: &str) -> Result<(), TmError> {
        self.sl_reply(req, code, reason)
    }
    fn t_relay(&self, _: &mut Request) -> Result<(), TmError> {
        self.relayed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn t_suspend(&self, _: &mut Request) -> Result<TxRef, TmError> {
        Ok(TxRef { index: 1, label: 1 })
    }
    fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        Err(TmError::NoTransaction { index, label })
    }
    fn is_myself(&self, host: &str, port: Option<u16>) -> bool {
        self.host.is_myself(host, port)
    }
    fn usrloc(&self) -> Option<&sip::Usrloc> {
        Some(self.host.usrloc())
    }
    fn dialogs(&self) -> Option<&sip::Dialogs> {
        Some(self.host.dialogs())
    }
}

/// No event clients; the first relayed frame is kept (the relay section
/// checks it), later ones cost one atomic read in the timed part.
#[derive(Default)]
struct NoEvents {
    first: std::sync::OnceLock<Vec<u8>>,
}

impl EventOps for NoEvents {
    fn relay(&self, frame: &[u8]) -> Result<usize, evapi::SendError> {
        if self.first.get().is_none() {
            let _ = self.first.set(frame.to_vec());
        }
        Ok(0)
    }
    fn multicast(&self, _: &[u8], _: &[u8]) -> Result<usize, evapi::SendError> {
        Ok(0)
    }
    fn unicast(&self, _: &[u8], _: &[u8]) -> Result<usize, evapi::SendError> {
        Ok(0)
    }
    fn unicast_round_robin(&self, _: &[u8], _: &[u8]) -> Result<usize, evapi::SendError> {
        Ok(0)
    }
    fn client_count(&self) -> usize {
        0
    }
    fn tag_count(&self, _: &[u8]) -> usize {
        0
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CALLER: &str = "127.0.0.1:5061";
const CALLEE: &str = "127.0.0.1:5090";

fn source(remote: &str, local: SocketAddr) -> Source {
    Source {
        transport: Transport::Udp,
        remote: remote.parse().unwrap(),
        local,
        conn: None,
    }
}

fn parse(text: &str) -> SipMessage {
    let raw = text.replace('\n', "\r\n");
    SipMessage::parse(bytes::Bytes::from(raw)).expect("bench message parses")
}

const SDP: &str = "v=0\no=user1 53655765 2353687637 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 6000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n";

/// One call's messages (Call-ID `n`) and the standalone ones, as SIPp
/// sends them to the proxy at `me`.
struct Messages {
    register: SipMessage,
    options: SipMessage,
    invite: SipMessage,
    ack: SipMessage,
    bye: SipMessage,
    r180: SipMessage,
    r200: SipMessage,
    bye200: SipMessage,
}

fn messages(me: SocketAddr, n: usize) -> Messages {
    let rr = format!("<sip:{me};lr;ftag=1uac{n}>");
    let invite = format!(
        "INVITE sip:bob@{me} SIP/2.0\n\
         Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{n}-1-0\n\
         From: sipp <sip:sipp@{CALLER}>;tag=1uac{n}\n\
         To: bob <sip:bob@{me}>\n\
         Call-ID: {n}-1@127.0.0.1\n\
         CSeq: 1 INVITE\n\
         Contact: sip:sipp@{CALLER}\n\
         Max-Forwards: 70\n\
         Subject: evapi test\n\
         Content-Type: application/sdp\n\
         Content-Length: {}\n\n{SDP}",
        SDP.len() + SDP.matches('\n').count()
    );
    let in_dialog = |method: &str, cseq: u32, branch: u32| {
        format!(
            "{method} sip:bob@{CALLEE} SIP/2.0\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{n}-{branch}-0\n\
             Route: {rr}\n\
             From: sipp <sip:sipp@{CALLER}>;tag=1uac{n}\n\
             To: bob <sip:bob@{me}>;tag=1uas{n}\n\
             Call-ID: {n}-1@127.0.0.1\n\
             CSeq: {cseq} {method}\n\
             Contact: sip:sipp@{CALLER}\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n\n"
        )
    };
    let reply = |code: &str, method: &str, cseq: u32, body: bool| {
        let (ctype, body) = if body {
            ("Content-Type: application/sdp\n", SDP)
        } else {
            ("", "")
        };
        format!(
            "SIP/2.0 {code}\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-proxy-{n}-{cseq}\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{n}-{cseq}-0;received=127.0.0.1;rport=5061\n\
             Record-Route: {rr}\n\
             From: sipp <sip:sipp@{CALLER}>;tag=1uac{n}\n\
             To: bob <sip:bob@{me}>;tag=1uas{n}\n\
             Call-ID: {n}-1@127.0.0.1\n\
             CSeq: {cseq} {method}\n\
             Contact: <sip:bob@{CALLEE};transport=UDP>\n\
             {ctype}Content-Length: {}\n\n{body}",
            body.len() + body.matches('\n').count()
        )
    };
    Messages {
        register: parse(&format!(
            "REGISTER sip:{me} SIP/2.0\n\
             Via: SIP/2.0/UDP {CALLEE};branch=z9hG4bK-reg-{n}\n\
             From: <sip:bob@{me}>;tag=reg{n}\n\
             To: <sip:bob@{me}>\n\
             Call-ID: reg-{n}@127.0.0.1\n\
             CSeq: {} REGISTER\n\
             Contact: <sip:bob@{CALLEE}>\n\
             Expires: 3600\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n\n",
            n + 1
        )),
        options: parse(&format!(
            "OPTIONS sip:{me} SIP/2.0\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-opt-{n}\n\
             From: <sip:sipp@{CALLER}>;tag=opt{n}\n\
             To: <sip:{me}>\n\
             Call-ID: opt-{n}@127.0.0.1\n\
             CSeq: 1 OPTIONS\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n\n"
        )),
        invite: parse(&invite),
        ack: parse(&in_dialog("ACK", 1, 2)),
        bye: parse(&in_dialog("BYE", 2, 3)),
        r180: parse(&reply("180 Ringing", "INVITE", 1, false)),
        r200: parse(&reply("200 OK", "INVITE", 1, true)),
        bye200: parse(&reply("200 OK", "BYE", 2, false)),
    }
}

/// ns and allocations per item of the median round, and the spread.
struct Figure {
    ns: f64,
    lo: f64,
    hi: f64,
    allocs: f64,
}

/// Run `round` (which handles `items` messages and returns how long the
/// measured part took) `rounds` times after a warm-up.
fn measure(rounds: usize, items: usize, mut round: impl FnMut() -> (f64, u64)) -> Figure {
    round();
    let mut runs: Vec<(f64, u64)> = (0..rounds).map(|_| round()).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let per = |x: f64| x / items as f64;
    let (ns, allocs) = runs[runs.len() / 2];
    Figure {
        ns: per(ns),
        lo: per(runs[0].0),
        hi: per(runs[runs.len() - 1].0),
        allocs: per(allocs as f64),
    }
}

/// This thread's time on a CPU so far, in ns (the scheduler's count in
/// `/proc/thread-self/schedstat`): unlike the wall clock, it leaves out
/// the time other processes on a shared box had the CPU. Falls back to
/// the wall clock where it cannot be read.
fn cpu_ns(wall: Instant) -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| wall.elapsed().as_nanos() as u64)
}

/// Run `f` over the prepared inputs; (this thread's CPU ns, allocations).
fn timed<T>(inputs: &mut [T], mut f: impl FnMut(&mut T)) -> (f64, u64) {
    let wall = Instant::now();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = cpu_ns(wall);
    for x in inputs.iter_mut() {
        f(x);
    }
    let ns = cpu_ns(wall) - t0;
    (ns as f64, ALLOCS.load(Ordering::Relaxed) - a0)
}

struct Setup {
    router: Arc<dyn Router>,
    events: Arc<NoEvents>,
    handle: SipHandle,
    ops: Arc<BenchSip>,
    me: SocketAddr,
    _bound: sip::BoundHost,
    _rt: tokio::runtime::Runtime,
}

fn setup(mut script: ScriptConfig) -> Setup {
    if env("BENCH_MAX_ROUTE_MS", 1) == 0 {
        // No time limit: no instruction hook (see `[script] max_route_ms`).
        script.limits.max_route_ms = 0;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bound = rt
        .block_on(SipHost::bind(HostConfig {
            sip: SipConfig {
                listen: vec!["udp:127.0.0.1:0".into()],
                children: 1,
                ..SipConfig::default()
            },
            ..HostConfig::default()
        }))
        .expect("SIP host binds");
    let me = bound.local_addrs()[0].1;
    let handle = bound.handle();
    let ops = Arc::new(BenchSip {
        host: handle.clone(),
        relayed: AtomicU64::new(0),
        replied: AtomicU64::new(0),
    });
    let events = Arc::new(NoEvents::default());
    let engine = Engine::new(&script, events.clone(), ops.clone(), rpc::Registry::new())
        .expect("the script loads");
    let router = engine.sip_router();
    router.thread_started(0);
    Setup {
        router,
        events,
        handle,
        ops,
        me,
        _bound: bound,
        _rt: rt,
    }
}

fn row(name: &str, f: &Figure) {
    println!(
        "| {name:<34} | {:>8.0} | {:>6.0}-{:<6.0} | {:>7.1} |",
        f.ns, f.lo, f.hi, f.allocs
    );
}

fn basic(iters: usize, rounds: usize) {
    let file = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/compat/kamailio-basic-kemi-lua.lua"
    ));
    let s = setup(ScriptConfig {
        file,
        ..Default::default()
    });
    let m = messages(s.me, 1);
    let reqs = |msg: &SipMessage, from: &str| -> Vec<Request> {
        (0..iters)
            .map(|_| Request::new(msg.clone(), source(from, s.me)))
            .collect()
    };
    let route = |reqs: &mut Vec<Request>| timed(reqs, |r| s.router.request(&s.handle, r));

    // The load's order: bob registers first.
    let mut first = reqs(&m.register, CALLEE);
    route(&mut first);
    // Check that each message takes the path the row's load takes.
    let check = |what: &str, msg: &SipMessage, from: &str, relayed: u64, replied: u64| {
        let (r0, p0) = (
            s.ops.relayed.load(Ordering::Relaxed),
            s.ops.replied.load(Ordering::Relaxed),
        );
        let mut req = Request::new(msg.clone(), source(from, s.me));
        s.router.request(&s.handle, &mut req);
        let got = (
            s.ops.relayed.load(Ordering::Relaxed) - r0,
            s.ops.replied.load(Ordering::Relaxed) - p0,
        );
        assert_eq!(got, (relayed, replied), "{what}: (relayed, replied)");
        req
    };
    check("REGISTER", &m.register, CALLEE, 0, 1);
    check("OPTIONS", &m.options, CALLER, 0, 1);
    let inv = check("INVITE", &m.invite, CALLER, 1, 0);
    assert_eq!(
        inv.ruri(),
        format!("sip:bob@{CALLEE}").as_bytes(),
        "INVITE looked up"
    );
    check("ACK", &m.ack, CALLER, 1, 0);
    check("BYE", &m.bye, CALLER, 1, 0);

    println!("\nKamailio's example script (kamailio-basic-kemi-lua.lua), {iters} messages x {rounds} rounds");
    println!("| message | CPU ns (median) | CPU ns (min-max of rounds) | allocations |");
    println!("|---|---|---|---|");
    for (name, msg, from) in [
        ("REGISTER (save)", &m.register, CALLEE),
        ("OPTIONS (keepalive 200)", &m.options, CALLER),
        ("INVITE (lookup, record-route, relay)", &m.invite, CALLER),
        ("ACK (loose route, relay)", &m.ack, CALLER),
        ("BYE (loose route, relay)", &m.bye, CALLER),
    ] {
        let f = measure(rounds, iters, || {
            let mut v = reqs(msg, from);
            route(&mut v)
        });
        row(name, &f);
    }
    let src = source(CALLEE, s.me);
    let mut replies = vec![(); iters];
    for (name, msg) in [
        ("reply 180 (ksr_reply_route)", &m.r180),
        ("reply 200", &m.r200),
    ] {
        let f = measure(rounds, iters, || {
            timed(&mut replies, |_| {
                s.router.reply(&s.handle, msg, &src);
            })
        });
        row(name, &f);
    }
    let f = measure(rounds, iters, || {
        timed(&mut replies, |_| {
            s.router
                .reply_route(&s.handle, &m.r200, &src, "ksr_onreply_manage", &inv, 0);
        })
    });
    row("reply 200 (t_on_reply route)", &f);

    // One call: the three requests and the five reply route runs.
    let mut calls: Vec<[Request; 3]> = (0..iters)
        .map(|_| {
            [&m.invite, &m.ack, &m.bye].map(|msg| Request::new(msg.clone(), source(CALLER, s.me)))
        })
        .collect();
    let f = measure(rounds, iters, || {
        let out = timed(&mut calls, |c| {
            for r in c.iter_mut() {
                s.router.request(&s.handle, r);
            }
            for reply in [&m.r180, &m.r200, &m.bye200] {
                s.router.reply(&s.handle, reply, &src);
            }
            for reply in [&m.r180, &m.r200] {
                s.router
                    .reply_route(&s.handle, reply, &src, "ksr_onreply_manage", &inv, 0);
            }
        });
        // Fresh requests for the next round (outside the timing).
        for c in calls.iter_mut() {
            *c = [&m.invite, &m.ack, &m.bye]
                .map(|msg| Request::new(msg.clone(), source(CALLER, s.me)));
        }
        out
    });
    row("one call (3 requests, 5 reply routes)", &f);
}

const DIALOG_LUA: &str = r#"
function ksr_request_route()
  if KSR.siputils.has_totag() > 0 then
    if KSR.rr.loose_route() > 0 then
      if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
      return
    end
    if KSR.is_ACK() then return end
    KSR.sl.sl_send_reply(404, "Not here")
    return
  end
  if KSR.is_CANCEL() then return end
  KSR.hdr.remove("Route")
  if KSR.is_INVITE() then
    KSR.dialog.dlg_manage()
    KSR.rr.record_route()
  end
  KSR.pv.sets("$ru", "sip:" .. KSR.pv.get("$rU") .. "@127.0.0.1:5090")
  if KSR.tm.t_relay() < 0 then KSR.sl.sl_reply_error() end
end
"#;

fn dialog(iters: usize, rounds: usize) {
    let s = setup(ScriptConfig {
        file: PathBuf::from("dialog.lua"),
        source: Some(DIALOG_LUA.into()),
        ..Default::default()
    });
    // Each call its own Call-ID: dlg_manage makes a dialog per INVITE
    // (never ended here: no transaction layer reports the BYE's 200).
    let mut n = 0;
    let mut next_calls = |count: usize| -> Vec<[Request; 3]> {
        (0..count)
            .map(|_| {
                n += 1;
                let m = messages(s.me, n);
                [m.invite, m.ack, m.bye].map(|msg| Request::new(msg, source(CALLER, s.me)))
            })
            .collect()
    };
    let mut one = next_calls(1);
    for r in one[0].iter_mut() {
        s.router.request(&s.handle, r);
    }
    assert_eq!(
        s.ops.relayed.load(Ordering::Relaxed),
        3,
        "the three relayed"
    );
    assert_eq!(s.handle.dialogs().len(), 1, "one dialog");
    let dlg_iters = iters.min(5000);
    let f = measure(rounds, dlg_iters, || {
        let mut calls = next_calls(dlg_iters);
        timed(&mut calls, |c| {
            for r in c.iter_mut() {
                s.router.request(&s.handle, r);
            }
        })
    });
    println!("\nThe dialog row's script (bench/dialog.py), {dlg_iters} calls x {rounds} rounds");
    println!("| message | CPU ns (median) | CPU ns (min-max of rounds) | allocations |");
    println!("|---|---|---|---|");
    row("one call (INVITE, ACK, BYE)", &f);
}

/// The relay row's script with its eight reads replaced by the values
/// they give for the bench's OPTIONS: the difference to the real script is
/// what the reads cost.
const RELAY_CONST_LUA: &str = r#"
function ksr_request_route()
    KSR.evapi.relay('{"event":"options","ci":"' .. "opt-1@127.0.0.1"
        .. '","method":"' .. "OPTIONS"
        .. '","ruri":"' .. "sip:127.0.0.1:5060"
        .. '","from":"' .. "sip:sipp@127.0.0.1:5061"
        .. '","to":"' .. "sip:127.0.0.1:5060"
        .. '","src":"' .. "127.0.0.1" .. ':' .. "5061"
        .. '","cseq":"' .. "1"
        .. '","pad":"0123456789abcdef0123456789"}')
    KSR.sl.sl_send_reply(200, "OK")
end
function ksr_evapi_event(evname) end
"#;

/// The relay row's script (`bench/evapi/relay.lua`, read from there) on
/// an OPTIONS: eight `KSR.pv.get` reads, one relay, one stateless 200;
/// and the same with constants for the reads.
fn relay(iters: usize, rounds: usize) {
    let file = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/evapi/relay.lua"
    ));
    println!(
        "\nThe relay row's script (bench/evapi/relay.lua), {iters} messages x {rounds} rounds"
    );
    println!("| message | CPU ns (median) | CPU ns (min-max of rounds) | allocations |");
    println!("|---|---|---|---|");
    for (name, config) in [
        (
            "OPTIONS (8 reads, relay, 200)",
            ScriptConfig {
                file: file.clone(),
                ..Default::default()
            },
        ),
        (
            "OPTIONS (constants, relay, 200)",
            ScriptConfig {
                file: PathBuf::from("relay-const.lua"),
                source: Some(RELAY_CONST_LUA.into()),
                ..Default::default()
            },
        ),
    ] {
        let s = setup(config);
        let me = s.me;
        let options = parse(&format!(
            "OPTIONS sip:{me} SIP/2.0\n\
             Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-opt-1\n\
             From: <sip:sipp@{CALLER}>;tag=opt1\n\
             To: <sip:{me}>\n\
             Call-ID: opt-1@127.0.0.1\n\
             CSeq: 1 OPTIONS\n\
             Max-Forwards: 70\n\
             Content-Length: 0\n\n"
        ));
        // Both scripts must relay the same frame (the constants are those
        // of a server on port 5060).
        let mut req = Request::new(options.clone(), source(CALLER, me));
        s.router.request(&s.handle, &mut req);
        let frame = String::from_utf8(s.events.first.get().cloned().unwrap_or_default()).unwrap();
        let expected = r#"{"event":"options","ci":"opt-1@127.0.0.1","method":"OPTIONS","ruri":"sip:127.0.0.1:5060","from":"sip:sipp@127.0.0.1:5061","to":"sip:127.0.0.1:5060","src":"127.0.0.1:5061","cseq":"1","pad":"0123456789abcdef0123456789"}"#;
        let port = me.port().to_string();
        assert_eq!(frame.replace(&port, "5060"), expected, "{name}");
        assert_eq!(s.ops.replied.load(Ordering::Relaxed), 1, "{name}: replied");
        let f = measure(rounds, iters, || {
            let mut v: Vec<Request> = (0..iters)
                .map(|_| Request::new(options.clone(), source(CALLER, me)))
                .collect();
            timed(&mut v, |r| s.router.request(&s.handle, r))
        });
        row(name, &f);
    }
}

fn main() {
    let iters = env("BENCH_ITERS", 20_000);
    let rounds = env("BENCH_ROUNDS", 7);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "basic" {
        basic(iters, rounds);
    }
    if only.is_empty() || only == "dialog" {
        dialog(iters, rounds);
    }
    if only.is_empty() || only == "relay" {
        relay(iters, rounds);
    }
}
