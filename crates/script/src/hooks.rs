//! The engine as the hooks of the two crates below: [`sip::Router`] for
//! requests, replies and failures, [`evapi::EventHandler`] for the three
//! events. Each runs the script function on this thread's VM.

use crate::call::{self};
use crate::context::RouteKind;
use crate::engine::Engine;
use evapi::{EventContext, EventHandler};
use sip::{Request, Router, SipHandle, SipMessage, Source};
use std::sync::Arc;

/// The SIP router. The SIP host given to the hooks is not used: the engine
/// acts through the handle it was built with.
pub(crate) struct SipHooks(Arc<Engine>);

impl SipHooks {
    pub fn new(engine: &Arc<Engine>) -> Self {
        SipHooks(engine.clone())
    }

    fn route(&self, fname: &str, kind: RouteKind, req: &mut Request) {
        if let Some(lua) = self.0.vm() {
            call::run_route(&lua, self.0.handles.sip(), fname, kind, req);
        }
    }
}

impl Router for SipHooks {
    fn thread_started(&self, _child: usize) {
        // Load the script now, so the first message does not pay for it.
        let _ = self.0.vm();
    }

    fn request(&self, _host: &SipHandle, req: &mut Request) {
        self.route("ksr_request_route", RouteKind::Request, req);
    }

    fn reply(&self, _host: &SipHandle, reply: &SipMessage, source: &Source) -> bool {
        let Some(lua) = self.0.vm() else {
            return true;
        };
        call::run_reply_route(&lua, reply, source)
    }

    fn reply_route(
        &self,
        _host: &SipHandle,
        reply: &SipMessage,
        source: &Source,
        route: &str,
        _req: &Request,
        branch: u32,
    ) -> bool {
        let Some(lua) = self.0.vm() else {
            return true;
        };
        call::run_onreply_route(&lua, route, reply, source, branch)
    }

    fn failure(&self, _host: &SipHandle, req: &mut Request, route: &str) {
        self.route(route, RouteKind::Failure, req);
    }

    fn dialog_event(&self, _host: &SipHandle, event: &sip::DialogEvent) {
        let Some(cb) = &self.0.dialog_callback else {
            return;
        };
        if let Some(lua) = self.0.vm() {
            call::run_dialog_event(&lua, cb, event);
        }
    }
}

/// The evapi event handler.
pub(crate) struct EvapiHooks(Arc<Engine>);

impl EvapiHooks {
    pub fn new(engine: &Arc<Engine>) -> Self {
        EvapiHooks(engine.clone())
    }

    fn run(&self, ctx: &EventContext<'_>) {
        let Some(cb) = &self.0.event_callback else {
            return;
        };
        if let Some(lua) = self.0.vm() {
            call::run_event(&lua, cb, ctx);
        }
    }
}

impl EventHandler for EvapiHooks {
    fn thread_started(&self, _worker: Option<usize>) {
        // Load the script now, so the first event does not pay for it.
        let _ = self.0.vm();
    }
    fn connection_new(&self, ctx: &EventContext<'_>) {
        self.run(ctx);
    }
    fn message_received(&self, ctx: &EventContext<'_>) {
        self.run(ctx);
    }
    fn connection_closed(&self, ctx: &EventContext<'_>) {
        self.run(ctx);
    }
}

/// The NATS handler: answers from workers and no-responders run the evapi
/// `event_callback` as `evapi:message-received` and `evapi:no-responders`
/// (with `$evapi(srcaddr)` "nats", `$evapi(conidx)` -1); messages of
/// `[[nats.subscribe]]` run it as `nats:<subject>` with `$natsData`.
pub(crate) struct NatsHooks(Arc<Engine>);

impl NatsHooks {
    pub fn new(engine: &Arc<Engine>) -> Self {
        NatsHooks(engine.clone())
    }

    fn run(&self, name: &str, msg: &bytes::Bytes) {
        let Some(cb) = &self.0.event_callback else {
            return;
        };
        if let Some(lua) = self.0.vm() {
            call::run_nats_event(&lua, cb, name, msg);
        }
    }
}

impl nats::NatsHandler for NatsHooks {
    fn thread_started(&self, _worker: usize) {
        let _ = self.0.vm();
    }
    fn reply(&self, payload: &bytes::Bytes) {
        self.run("evapi:message-received", payload);
    }
    fn no_responders(&self, data: &bytes::Bytes) {
        self.run("evapi:no-responders", data);
    }
    fn message(&self, subject: &str, payload: &bytes::Bytes) {
        let Some(cb) = &self.0.event_callback else {
            return;
        };
        if let Some(lua) = self.0.vm() {
            call::run_nats_message(&lua, cb, subject, payload);
        }
    }
}
