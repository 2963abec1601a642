//! Where user code meets the event socket: the three events.

use crate::handle::EvapiHandle;
use crate::registry::{CloseReason, MAX_TAG_LEN};
use bytes::Bytes;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The three events of the original module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A client has connected; none of its messages has been read yet.
    ConnectionNew,
    /// A whole message has arrived from a client.
    MessageReceived,
    /// A connection has ended.
    ConnectionClosed,
}

impl Event {
    /// The event's name as scripts see it: `evapi:connection-new`, ...
    pub fn name(self) -> &'static str {
        match self {
            Event::ConnectionNew => "evapi:connection-new",
            Event::MessageReceived => "evapi:message-received",
            Event::ConnectionClosed => "evapi:connection-closed",
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A tag that cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    /// Tags must not be empty.
    #[error("empty tag")]
    Empty,
    /// Tags are at most 63 bytes.
    #[error("tag of {0} bytes is longer than the limit of 63 bytes")]
    TooLong(usize),
    /// The client has gone (or this is connection-closed).
    #[error("the client of this event is no longer connected")]
    Gone,
}

/// Check a tag given to set_tag: 1 to 63 bytes.
pub(crate) fn check_tag(tag: &[u8]) -> Result<(), TagError> {
    if tag.is_empty() {
        return Err(TagError::Empty);
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(TagError::TooLong(tag.len()));
    }
    Ok(())
}

/// What an event handler can read and do about the client of the event.
///
/// It is valid for the duration of the handler call. Its methods act on the
/// exact connection of the event: if that client has gone and its connection
/// index was given to a new client, `set_tag` and `close` leave the new one
/// alone.
pub struct EventContext<'a> {
    pub(crate) event: Event,
    pub(crate) client: &'a Arc<crate::registry::Client>,
    pub(crate) handle: &'a EvapiHandle,
    pub(crate) message: Option<&'a Bytes>,
    pub(crate) reason: Option<&'a CloseReason>,
}

impl EventContext<'_> {
    /// Which event this is.
    pub fn event(&self) -> Event {
        self.event
    }

    /// The connection index (`$evapi(conidx)`): small, reused after the
    /// client leaves.
    pub fn conidx(&self) -> usize {
        self.client.conidx
    }

    /// A number unique to this connection for the life of the process.
    pub fn connection_id(&self) -> u64 {
        self.client.id
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.client.peer
    }

    /// The client's IP address (`$evapi(srcaddr)`).
    pub fn srcaddr(&self) -> IpAddr {
        self.client.peer.ip()
    }

    /// The client's port (`$evapi(srcport)`).
    pub fn srcport(&self) -> u16 {
        self.client.peer.port()
    }

    /// The message (`$evapi(msg)`): only in message-received.
    pub fn message(&self) -> Option<&Bytes> {
        self.message
    }

    /// Why the connection ended: only in connection-closed.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.reason
    }

    /// The client's tag, if it has one.
    pub fn tag(&self) -> Option<Bytes> {
        self.handle
            .shared
            .registry()
            .tag_of(self.client.conidx, self.client.id)
    }

    /// Set or replace the client's tag (1 to 63 bytes).
    pub fn set_tag(&self, tag: &[u8]) -> Result<(), TagError> {
        self.client().set_tag(tag)
    }

    /// Close the client's connection. In connection-new this refuses the
    /// client before any of its messages is read. connection-closed still
    /// runs for it, once.
    pub fn close(&self) {
        self.client().close()
    }

    /// The handle to relay from inside the handler.
    pub fn handle(&self) -> &EvapiHandle {
        self.handle
    }

    /// An owned reference to the client of this event, for code that must
    /// keep it past the borrow of the context (a script engine storing its
    /// current event in thread-local state).
    pub fn client(&self) -> ClientRef {
        ClientRef {
            client: self.client.clone(),
            handle: self.handle.clone(),
            closed: self.event == Event::ConnectionClosed,
        }
    }
}

/// An owned reference to one connection, from [`EventContext::client`].
///
/// Like the context, it acts on that exact connection only: once the client
/// has gone, `set_tag` fails and `close` does nothing, even if its index was
/// given to a new client.
#[derive(Debug, Clone)]
pub struct ClientRef {
    client: Arc<crate::registry::Client>,
    handle: EvapiHandle,
    closed: bool,
}

impl ClientRef {
    /// The connection index.
    pub fn conidx(&self) -> usize {
        self.client.conidx
    }

    /// A number unique to this connection for the life of the process.
    pub fn connection_id(&self) -> u64 {
        self.client.id
    }

    /// The client's address and port.
    pub fn peer(&self) -> SocketAddr {
        self.client.peer
    }

    /// Set or replace the client's tag (1 to 63 bytes).
    pub fn set_tag(&self, tag: &[u8]) -> Result<(), TagError> {
        check_tag(tag)?;
        if !self.closed
            && self
                .handle
                .shared
                .set_tag(&self.client, Bytes::copy_from_slice(tag))
        {
            Ok(())
        } else {
            Err(TagError::Gone)
        }
    }

    /// Close the connection (nothing if it has ended already).
    pub fn close(&self) {
        if !self.closed {
            self.client.request_close(CloseReason::Closed);
        }
    }
}

/// User code run for the events of the event socket.
///
/// Each method is one point in a connection's life; each has a default that
/// does nothing, so an implementation writes only the ones it needs. The
/// methods are called on the event socket's own threads (the dispatcher and
/// the workers), never on the I/O runtime: a slow handler delays other
/// events, never socket I/O. A panic in a handler is caught and logged; the
/// thread goes on with the next event.
pub trait EventHandler: Send + Sync + 'static {
    /// A client has connected. Runs on the dispatcher thread, before any of
    /// the client's messages is read, so a tag set here is in place before
    /// the client can be reached by tag, and `close()` here refuses it.
    /// Default: accept the client, untagged.
    fn connection_new(&self, ctx: &EventContext<'_>) {
        let _ = ctx;
    }

    /// A message has arrived. Runs on one of the `workers` threads, or on
    /// the dispatcher thread in arrival order when `workers` is 0. Messages
    /// of one client may be handled in parallel by several workers, as in
    /// the original. Empty netstrings (`0:,`) are keep-alives and do not
    /// reach this method. Default: ignore the message.
    fn message_received(&self, ctx: &EventContext<'_>) {
        let _ = ctx;
    }

    /// A connection has ended, whatever ended it. Runs on the dispatcher
    /// thread exactly once for every connection that ran `connection_new`,
    /// after it and after every `message_received` of that connection: it
    /// is always the connection's last event. The client is no longer in the table (relays and counts no
    /// longer see it); `set_tag` and `close` do nothing. Default: nothing.
    fn connection_closed(&self, ctx: &EventContext<'_>) {
        let _ = ctx;
    }

    /// A worker (or the dispatcher, for index `None`) thread has started,
    /// before it handles any event; for per-thread state such as a script
    /// engine. Default: nothing.
    fn thread_started(&self, worker: Option<usize>) {
        let _ = worker;
    }
}

/// A handler that does nothing: clients connect and receive relays, and
/// their messages are dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHandler;

impl EventHandler for NoHandler {}
