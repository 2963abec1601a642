//! The routing trait: every point where user code acts on SIP traffic, in
//! the order a message meets them (pingora's `ProxyHttp` shape). Each
//! method has a default that does nothing, so an implementation overrides
//! only the phases it cares about.

use crate::dialog::DialogEvent;
use crate::host::SipHandle;
use crate::message::SipMessage;
use crate::request::{Request, Source};

/// User code that routes SIP traffic. One value is shared by every router
/// thread (`sip-child-N`), hence `Send + Sync`. The router threads own it:
/// it is dropped when they stop at [`crate::SipHost::shutdown`], even if it
/// holds a [`SipHandle`] of its own.
///
/// The methods run on router threads, never on the socket I/O runtime, so
/// they may block (a Lua VM, a database); while one does, another thread
/// takes over the reading within 0.2 s and the others keep routing. Router
/// threads read the UDP sockets themselves (thread 0 always, the others
/// when it is behind or stuck), so a call's messages may run on any of
/// them; messages with
/// the same Call-ID never run at the same time, and run in the order they
/// arrived.
///
/// There is no phase for a resumed transaction. [`SipHandle::t_continue`]
/// hands the suspended request straight back to its caller, and the caller
/// goes on with it ([`SipHandle::t_reply`], [`SipHandle::t_relay`]...) on
/// its own thread: in the program, the event socket worker that received
/// the answer, whose Lua state holds that answer. Continuing there avoids
/// a hand-off to a router thread and a copy of the answer. Order within
/// the transaction still holds: while it is suspended, the table absorbs
/// its retransmissions and answers a CANCEL itself, so no other message of
/// it reaches the router; after the continue, replies to a relayed branch
/// come to [`Router::reply`] on the router thread. Other transactions of
/// the same call (an in-dialog request, say) are not held back and may run
/// on the router thread at the same time as the continued one.
pub trait Router: Send + Sync + 'static {
    /// Runs once on each router thread before it handles any message, with
    /// the thread's number (0-based): the place to build per-thread state.
    /// Default: nothing.
    fn thread_started(&self, child: usize) {
        let _ = child;
    }

    /// Every request the transaction layer did not absorb: new requests,
    /// ACKs for 2xx, in-dialog requests, unmatched CANCELs. The router
    /// answers with [`SipHandle::sl_reply`] / [`SipHandle::t_reply`],
    /// forwards with [`SipHandle::t_relay`], suspends with
    /// [`SipHandle::t_suspend`], or does nothing (the request is dropped; if
    /// a transaction was created it ends with 408 at its timer).
    /// Default: nothing.
    fn request(&self, host: &SipHandle, req: &mut Request) {
        let _ = (host, req);
    }

    /// Every reply received for a relayed request, before the transaction
    /// layer acts on it (Kamailio's core `reply_route`); also a reply that
    /// matches no transaction but carries our Via on top, before it is
    /// forwarded statelessly by its next Via. Return `false` to drop it (as
    /// if never received; the branch's timers keep running). Default:
    /// `true`.
    fn reply(&self, host: &SipHandle, reply: &SipMessage, source: &Source) -> bool {
        let _ = (host, reply, source);
        true
    }

    /// A reply to a branch of a transaction whose request armed a reply
    /// route ([`Request::set_reply_route`], Kamailio's `t_on_reply`), after
    /// [`Router::reply`] let it pass and before the transaction layer acts
    /// on it: `route` is the route's name, `req` the transaction's request
    /// (as last relayed, with [`Request::tx`] set) and `branch` the
    /// branch's 0-based index. Replies to our CANCELs do not run it.
    /// Return `false` to drop the reply (as if never received; the
    /// branch's timers keep running). Default: `true`.
    fn reply_route(
        &self,
        host: &SipHandle,
        reply: &SipMessage,
        source: &Source,
        route: &str,
        req: &Request,
        branch: u32,
    ) -> bool {
        let _ = (host, reply, source, route, req, branch);
        true
    }

    /// A relayed branch ended with a final reply >= 300 or timed out, and a
    /// failure route was armed with [`Request::set_failure_route`]: `route`
    /// is its name and `req` the transaction's request, with
    /// [`Request::failure_code`] set. The router may [`SipHandle::t_reply`],
    /// [`SipHandle::t_relay`] again (serial forking) or
    /// [`SipHandle::t_suspend`]; if it does none of these, the best final
    /// reply received is forwarded upstream. Default: nothing (so the reply
    /// is forwarded).
    fn failure(&self, host: &SipHandle, req: &mut Request, route: &str) {
        let _ = (host, req, route);
    }

    /// A dialog event ([`crate::dialog`]): `dialog:start` (the INVITE's
    /// 2xx went upstream), `dialog:end` (a BYE from either side, the
    /// lifetime ran out, or it was ended by command) or `dialog:failed`
    /// (no 2xx), each once per dialog, on the router thread of the call's
    /// Call-ID, after the message that caused it was handled. Default:
    /// nothing.
    fn dialog_event(&self, host: &SipHandle, event: &DialogEvent) {
        let _ = (host, event);
    }
}
