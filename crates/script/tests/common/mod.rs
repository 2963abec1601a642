//! Handles for engines in these tests: the event socket's handle only
//! exists once the socket is bound with the engine's handler, so it is
//! filled in after; there is no SIP host.

use evapi::{EvapiHandle, SendError};
use script::{EventOps, SipOps};
use sip::{Request, TmError, TxRef};
use std::sync::OnceLock;

/// An event socket handle set after the socket is bound.
#[derive(Debug, Default)]
pub struct LateEvents(pub OnceLock<EvapiHandle>);

impl LateEvents {
    fn h(&self) -> Result<&EvapiHandle, SendError> {
        self.0.get().ok_or(SendError::Shutdown)
    }
}

impl EventOps for LateEvents {
    fn relay(&self, data: &[u8]) -> Result<usize, SendError> {
        self.h()?.relay(data)
    }
    fn multicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.h()?.multicast(data, tag)
    }
    fn unicast(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.h()?.unicast(data, tag)
    }
    fn unicast_round_robin(&self, data: &[u8], tag: &[u8]) -> Result<usize, SendError> {
        self.h()?.unicast_round_robin(data, tag)
    }
    fn client_count(&self) -> usize {
        self.h().map_or(0, |h| h.client_count())
    }
    fn tag_count(&self, tag: &[u8]) -> usize {
        self.h().map_or(0, |h| h.tag_count(tag))
    }
}

/// No SIP host: every operation fails as a host shutting down would.
pub struct NoSip;

impl SipOps for NoSip {
    fn sl_reply(&self, _: &Request, _: u16, _: &str) -> Result<(), TmError> {
        Err(TmError::ShuttingDown)
    }
    fn t_newtran(&self, _: &mut Request) -> Result<TxRef, TmError> {
        Err(TmError::ShuttingDown)
    }
    fn t_check_trans(&self, _: &Request) -> bool {
        false
    }
    fn t_reply(&self, _: &mut Request, _: u16, _: &str) -> Result<(), TmError> {
        Err(TmError::ShuttingDown)
    }
    fn t_relay(&self, _: &mut Request) -> Result<(), TmError> {
        Err(TmError::ShuttingDown)
    }
    fn t_suspend(&self, _: &mut Request) -> Result<TxRef, TmError> {
        Err(TmError::ShuttingDown)
    }
    fn t_continue(&self, index: u32, label: u32) -> Result<Request, TmError> {
        Err(TmError::NoTransaction { index, label })
    }
}
