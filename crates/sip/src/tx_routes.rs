//! The routes a router arms on a request besides the failure route
//! (Kamailio's `t_on_reply`, `t_on_branch`), and what a failure route is
//! told about the branch that ended.
//!
//! - A reply route, once relayed, belongs to the transaction: every reply
//!   of its branches runs it ([`crate::Router::reply_route`]) before the
//!   table acts on the reply. Re-arming it (in a failure route, before
//!   relaying again) replaces it.
//! - A branch route is armed for the next relay only, as Kamailio's (it is
//!   reset when the branches are created): whoever relays runs it on a
//!   copy of the request just before the branch is sent
//!   ([`Request::take_branch_route`]); the router crate's `t_relay` does.

use crate::request::Request;

/// Route names and failure details of a request.
#[derive(Debug, Clone, Default)]
pub(crate) struct TxRoutes {
    pub(crate) reply: Option<String>,
    pub(crate) branch: Option<String>,
    /// Reason phrase of the final reply that ended the branch (failure
    /// route).
    pub(crate) failure_reason: Option<String>,
    /// The failure's reply was made here (timeout, unresolvable, send
    /// failure), not received.
    pub(crate) failure_local: bool,
    /// Index (0-based) of the branch a failure route runs for.
    pub(crate) branch_index: u32,
}

impl Request {
    /// Arm a reply route (Kamailio's `t_on_reply`): every reply to the
    /// branches of this request's transaction runs
    /// [`crate::Router::reply_route`] with this name, before the
    /// transaction layer forwards it. Kept by the transaction from the
    /// relay on.
    pub fn set_reply_route(&mut self, name: &str) {
        self.routes.reply = Some(name.to_owned());
    }

    /// The armed reply route, if any.
    pub fn reply_route(&self) -> Option<&str> {
        self.routes.reply.as_deref()
    }

    /// Arm a branch route (Kamailio's `t_on_branch`) for the next relay.
    pub fn set_branch_route(&mut self, name: &str) {
        self.routes.branch = Some(name.to_owned());
    }

    /// The armed branch route, if any.
    pub fn branch_route(&self) -> Option<&str> {
        self.routes.branch.as_deref()
    }

    /// Take the armed branch route: the relay about to happen uses it up.
    pub fn take_branch_route(&mut self) -> Option<String> {
        self.routes.branch.take()
    }

    /// In a failure route: the reason phrase of the final reply that ended
    /// the branch (ours for a timeout: `Request Timeout`).
    pub fn failure_reason(&self) -> Option<&str> {
        self.routes.failure_reason.as_deref()
    }

    /// In a failure route: whether that reply was made here (a timeout,
    /// an unresolvable destination, a send failure) rather than received
    /// (Kamailio's `$T(reply_type)` 1).
    pub fn failure_is_local(&self) -> bool {
        self.routes.failure_local
    }

    /// In a failure route: the 0-based index of the branch that ended.
    pub fn failure_branch(&self) -> u32 {
        self.routes.branch_index
    }

    /// The 0-based index the next branch of this request's transaction
    /// gets: 0 from a request route, the failed one's plus 1 from a
    /// failure route (serial forking: one branch at a time).
    pub fn next_branch_index(&self) -> u32 {
        match self.failure_code {
            Some(_) => self.routes.branch_index + 1,
            None => 0,
        }
    }

    /// Take the armed failure route: a relay made from a copy of this
    /// request (after a branch route) used it up, as relaying this one
    /// would have.
    pub fn take_failure_route(&mut self) -> Option<String> {
        self.failure_route.take()
    }
}
