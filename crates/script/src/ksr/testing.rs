//! Test helpers for the `KSR` modules: a VM with the `KSR` API over fake
//! handles that record what they are asked to do, and requests built from
//! raw bytes (`sip::SipMessage::parse` + `sip::Request::new`).

use super::Handles;
use crate::context::{self, Context, EvapiCurrent, RouteKind};
use crate::ops::{EventClient, EventOps, SipOps};
use evapi::{SendError, TagError};
use mlua::{FromLuaMulti, Lua};
use sip::{Request, SipMessage, Source, TmError, TxRef};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A SIP host that records calls ("sl_reply 404 Not Here", "t_relay",
/// "t_relay (refused)"...).
#[derive(Default)]
pub(crate) struct FakeSip {
    calls: Mutex<Vec<String>>,
    fail: AtomicBool,
    known: AtomicBool,
    /// What `t_is_canceled` answers.
    pub canceled: AtomicBool,
    parked: Mutex<Option<Request>>,
    relayed: Mutex<Vec<Request>>,
    /// The location table, on a clock the test moves.
    pub usrloc: FakeUsrloc,
}

/// The fake host's location table: a manual clock (`usrloc.0.advance`),
/// and small limits (2 contacts per AoR, 3 AoRs) so tests reach them.
pub(crate) struct FakeUsrloc(pub sip::Usrloc);

impl Default for FakeUsrloc {
    fn default() -> Self {
        FakeUsrloc(sip::Usrloc::with_manual_clock(sip::UsrlocConfig {
            max_contacts: 2,
            max_aors: 3,
            ..sip::UsrlocConfig::default()
        }))
    }
}

impl FakeSip {
    /// The calls so far, emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.calls))
    }
    /// Refuse the next operation (with `TmError::ShuttingDown`).
    pub fn fail_next(&self) {
        self.fail.store(true, Ordering::SeqCst);
    }
    /// What `t_check_trans` answers.
    pub fn set_known(&self, known: bool) {
        self.known.store(known, Ordering::SeqCst);
    }
    /// The requests relayed so far (as `t_relay` got them), emptied.
    pub fn take_relayed(&self) -> Vec<Request> {
        std::mem::take(&mut lock(&self.relayed))
    }
    /// The request the next `t_continue` gives back.
    pub fn park(&self, req: Request) {
        *lock(&self.parked) = Some(req);
    }
    fn op(&self, what: String) -> Result<(), TmError> {
        if self.fail.swap(false, Ordering::SeqCst) {
            lock(&self.calls).push(format!("{what} (refused)"));
            return Err(TmError::ShuttingDown);
        }
        lock(&self.calls).push(what);
        Ok(())
    }
}

const TX: TxRef = TxRef { index: 7, label: 9 };

impl SipOps for FakeSip {
    fn sl_reply(&self, req: &Request, code: i64, reason: &str) -> Result<(), TmError> {
        // The host's own gate, so the fake refuses what the host refuses.
        sip::check_reply(req, code, reason)?;
        self.op(format!("sl_reply {code} {reason}"))
    }
    fn t_newtran(&self, _: &mut Request) -> Result<TxRef, TmError> {
        self.op("t_newtran".into()).map(|()| TX)
    }
    fn t_check_trans(&self, _: &Request) -> bool {
        lock(&self.calls).push("t_check_trans".into());
        self.known.load(Ordering::SeqCst)
    }
    fn t_is_canceled(&self, _: &Request) -> bool {
        self.canceled.load(Ordering::SeqCst)
    }
    fn t_reply(&self, req: &mut Request, code: i64, reason: &str) -> Result<(), TmError> {
        sip::check_reply(req, code, reason)?;
        self.op(format!("t_reply {code} {reason}"))
    }
    fn t_relay(&self, req: &mut Request) -> Result<(), TmError> {
        self.op("t_relay".into())?;
        lock(&self.relayed).push(req.clone());
        Ok(())
    }
    fn t_suspend(&self, _: &mut Request) -> Result<TxRef, TmError> {
        self.op("t_suspend".into()).map(|()| TX)
    }
    fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        let parked = lock(&self.parked).take();
        if parked.is_none() {
            self.fail_next();
        }
        self.op(format!("t_continue {index}:{label}"))?;
        parked.ok_or(TmError::NoTransaction { index, label })
    }
    /// The fake listens on 127.0.0.1:5060 and 192.0.2.10:5060 (UDP), and
    /// has the alias `proxy.test`.
    fn is_myself(&self, host: &str, port: Option<u16>) -> bool {
        let listeners = [
            (sip::Transport::Udp, "127.0.0.1:5060".parse().unwrap()),
            (sip::Transport::Udp, "192.0.2.10:5060".parse().unwrap()),
        ];
        sip::Myself::new(listeners.to_vec(), &["proxy.test".to_owned()]).contains(host, port)
    }
    fn usrloc(&self) -> Option<&sip::Usrloc> {
        Some(&self.usrloc.0)
    }
}

/// An event socket that records what was sent ("relay a", "multicast b t",
/// "unicast c t", "unicast_rr d t"); a refused send records nothing. Five
/// clients are connected, two of each tag.
#[derive(Default)]
pub(crate) struct FakeEvents {
    sent: Mutex<Vec<String>>,
    fail: AtomicBool,
    nobody: AtomicBool,
}

impl FakeEvents {
    /// The sends so far, emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.sent))
    }
    /// Refuse the next send (queue full).
    pub fn fail_next(&self) {
        self.fail.store(true, Ordering::SeqCst);
    }
    /// Whether sends find no client (0) from now on.
    pub fn set_nobody(&self, nobody: bool) {
        self.nobody.store(nobody, Ordering::SeqCst);
    }
    fn send(&self, what: &str, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        if self.fail.swap(false, Ordering::SeqCst) {
            return Err(SendError::QueueFull { limit: 1 });
        }
        if self.nobody.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let mut line = format!("{what} {}", String::from_utf8_lossy(data));
        if !tag.is_empty() {
            line = format!("{line} {}", String::from_utf8_lossy(tag));
        }
        lock(&self.sent).push(line);
        Ok(1)
    }
}

impl EventOps for FakeEvents {
    fn relay(&self, data: &[u8]) -> Result<usize, SendError> {
        self.send("relay", data, b"")
    }
    fn multicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.send("multicast", data, tag)
    }
    fn unicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.send("unicast", data, tag)
    }
    fn unicast_round_robin(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.send("unicast_rr", data, tag)
    }
    fn client_count(&self) -> usize {
        5
    }
    fn tag_count(&self, _: &[u8]) -> usize {
        2
    }
}

/// NATS that records what was sent ("send unicast ev t watched",
/// "publish s d r"); refuses everything while disconnected.
#[derive(Default)]
pub(crate) struct FakeNats {
    sent: Mutex<Vec<String>>,
    down: AtomicBool,
}

impl FakeNats {
    /// The sends so far, emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.sent))
    }
    /// Connected (false) or not (true) from now on.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl crate::ops::NatsOps for FakeNats {
    fn connected(&self) -> bool {
        !self.down.load(Ordering::SeqCst)
    }
    fn publish(
        &self,
        subject: &str,
        data: &[u8],
        reply: Option<&str>,
    ) -> Result<(), nats::SendError> {
        if !self.connected() {
            return Err(nats::SendError::Disconnected);
        }
        let data = String::from_utf8_lossy(data);
        lock(&self.sent).push(format!("publish {subject} {data} {}", reply.unwrap_or("-")));
        Ok(())
    }
    fn send(
        &self,
        kind: nats::SendKind,
        data: &[u8],
        tag: &[u8],
        watch: bool,
    ) -> Result<(), nats::SendError> {
        if !self.connected() {
            return Err(nats::SendError::Disconnected);
        }
        let (data, tag) = (String::from_utf8_lossy(data), String::from_utf8_lossy(tag));
        let watched = if watch { " watched" } else { "" };
        lock(&self.sent).push(format!("send {kind:?} {data} {tag}{watched}"));
        Ok(())
    }
}

/// The client of a fake evapi event, at 192.0.2.7:4000; records
/// "set_tag x" and "close".
#[derive(Clone)]
pub(crate) struct FakeClient {
    conidx: usize,
    done: Rc<RefCell<Vec<String>>>,
}

impl FakeClient {
    pub fn new(conidx: usize) -> Self {
        FakeClient {
            conidx,
            done: Rc::default(),
        }
    }
    /// What was done so far, emptied.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.done.borrow_mut())
    }
}

impl EventClient for FakeClient {
    fn conidx(&self) -> usize {
        self.conidx
    }
    fn peer(&self) -> SocketAddr {
        "192.0.2.7:4000".parse().unwrap()
    }
    fn set_tag(&self, tag: &[u8]) -> Result<(), TagError> {
        if tag.is_empty() {
            return Err(TagError::Empty);
        }
        let tag = String::from_utf8_lossy(tag);
        self.done.borrow_mut().push(format!("set_tag {tag}"));
        Ok(())
    }
    fn close(&self) {
        self.done.borrow_mut().push("close".into());
    }
}

/// A reply `code reason` to an INVITE of call `cid-1` (From tag ft1, To
/// tag tt1, CSeq 42).
pub(crate) fn reply(code: u16, reason: &str) -> sip::SipMessage {
    let raw = format!(
        "SIP/2.0 {code} {reason}\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK1\r\n\
         From: <sip:alice@a.example>;tag=ft1\r\n\
         To: <sip:bob@example.com>;tag=tt1\r\n\
         Call-ID: cid-1\r\n\
         CSeq: 42 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sip::SipMessage::parse(bytes::Bytes::from(raw)).unwrap()
}

/// Where [`reply`] came from: 192.0.2.9:5060 over UDP.
pub(crate) fn reply_source() -> sip::Source {
    sip::Source {
        transport: sip::Transport::Udp,
        remote: "192.0.2.9:5060".parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
        conn: None,
    }
}

/// A request with Call-ID `cid-1`, from 192.0.2.1:5061 over UDP, with
/// `extra` header lines ("Name: value\r\n" each) before Content-Length.
pub(crate) fn request(method: &str, extra: &str) -> Request {
    let raw = format!(
        "{method} sip:bob@example.com:5070 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK1\r\n\
         From: \"Alice A\" <sip:alice@a.example>;tag=ft1\r\n\
         To: <sip:bob@example.com>\r\n\
         Call-ID: cid-1\r\n\
         CSeq: 42 {method}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    let msg = SipMessage::parse(bytes::Bytes::from(raw)).expect("test request parses");
    Request::new(
        msg,
        Source {
            transport: sip::Transport::Udp,
            remote: "192.0.2.1:5061".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            conn: None,
        },
    )
}

/// A VM with `KSR` over fake handles.
pub(crate) struct Vm {
    pub lua: Lua,
    pub sip: Arc<FakeSip>,
    pub events: Arc<FakeEvents>,
    handles: Arc<Handles>,
}

impl Vm {
    /// A VM over a fresh [`FakeSip`] and [`FakeEvents`].
    pub fn new() -> Vm {
        Vm::over_fakes(|h| h)
    }

    /// A VM over a fresh [`FakeSip`] and [`FakeEvents`], whose handles
    /// `configure` sets up further.
    fn over_fakes(configure: impl FnOnce(Handles) -> Handles) -> Vm {
        let sip = Arc::new(FakeSip::default());
        let events = Arc::new(FakeEvents::default());
        let handles = Handles::new(
            Some(sip.clone() as Arc<dyn SipOps>),
            Some(events.clone() as Arc<dyn EventOps>),
        );
        Vm::with(sip, events, Arc::new(configure(handles)))
    }

    /// A VM as [`Vm::new`], with `[maxfwd] max_limit = limit`.
    pub fn with_maxfwd_limit(limit: u8) -> Vm {
        Vm::over_fakes(|h| h.with_maxfwd_limit(limit))
    }

    /// A VM as [`Vm::new`], whose `KSR.jsonrpcs.exec` calls `registry`.
    pub fn with_registry(registry: Arc<rpc::Registry>) -> Vm {
        Vm::over_fakes(|h| h.with_registry(Some(registry)))
    }

    /// A VM as [`Vm::new`], with NATS on through `nats`.
    pub fn with_nats(nats: Arc<FakeNats>) -> Vm {
        Vm::over_fakes(|h| h.with_nats(Some(nats as Arc<dyn crate::ops::NatsOps>)))
    }

    /// A VM as [`Vm::new`] with `[script] memory_limit_mb = mb`, set on
    /// the VM and known to its handles, as an engine's VMs are.
    pub fn with_memory_limit_mb(mb: u64) -> Vm {
        let vm = Vm::over_fakes(|h| h.with_memory_limit_mb(mb));
        let limits = crate::limits::Limits {
            memory_limit_mb: mb,
            max_route_ms: 0,
        };
        crate::limits::install(&vm.lua, &limits).unwrap();
        vm
    }

    /// Run `f` inside an event that came over NATS (message `msg`).
    pub fn in_nats_event<R>(&self, msg: &str, f: impl FnOnce(&Vm) -> R) -> R {
        let event: Rc<EvapiCurrent> = Rc::new(EvapiCurrent {
            msg: Some(bytes::Bytes::copy_from_slice(msg.as_bytes())),
            client: context::NatsSource,
        });
        let previous = context::enter(&self.lua, Context::Evapi(event));
        let r = f(self);
        context::leave(&self.lua, previous);
        r
    }

    /// Run `f` inside a `nats:<subject>` event with payload `data`.
    pub fn in_nats_message<R>(&self, data: &str, f: impl FnOnce(&Vm) -> R) -> R {
        let cx = Context::Nats(bytes::Bytes::copy_from_slice(data.as_bytes()));
        let previous = context::enter(&self.lua, cx);
        let r = f(self);
        context::leave(&self.lua, previous);
        r
    }

    /// A VM with no handles, as for a script being checked.
    pub fn detached() -> Vm {
        let handles = Arc::new(Handles::new(None, None));
        Vm::with(Arc::default(), Arc::default(), handles)
    }

    /// Another VM sharing this one's handles and shared variables, as
    /// another worker's.
    pub fn sibling(&self) -> Vm {
        Vm::with(self.sip.clone(), self.events.clone(), self.handles.clone())
    }

    fn with(sip: Arc<FakeSip>, events: Arc<FakeEvents>, handles: Arc<Handles>) -> Vm {
        let lua = Lua::new();
        crate::compat::install(&lua).unwrap();
        context::install(&lua);
        super::install(&lua, &handles).unwrap();
        Vm {
            lua,
            sip,
            events,
            handles,
        }
    }

    /// Run statements.
    pub fn run(&self, src: &str) {
        self.try_run(src).unwrap();
    }

    /// Run statements; the Lua error if any.
    pub fn try_run(&self, src: &str) -> mlua::Result<()> {
        self.lua.load(src).exec()
    }

    /// Evaluate an expression list (or a chunk that returns).
    pub fn eval<T: FromLuaMulti>(&self, src: &str) -> T {
        self.lua.load(src).eval().unwrap()
    }

    /// Run `f` with `req` as the current message of a request route.
    pub fn in_request<R>(&self, req: &mut Request, f: impl FnOnce(&Vm) -> R) -> R {
        context::in_route(&self.lua, RouteKind::Request, 0, req, || f(self)).0
    }

    /// Run `f` inside an evapi event of `client` with message `msg`.
    pub fn in_event<R>(
        &self,
        client: &FakeClient,
        msg: Option<&str>,
        f: impl FnOnce(&Vm) -> R,
    ) -> R {
        let event: Rc<EvapiCurrent> = Rc::new(EvapiCurrent {
            msg: msg.map(|m| bytes::Bytes::copy_from_slice(m.as_bytes())),
            client: client.clone(),
        });
        let previous = context::enter(&self.lua, Context::Evapi(event));
        let r = f(self);
        context::leave(&self.lua, previous);
        r
    }
}
