//! One client's connection once it is a client (connection-new, reading,
//! writing, connection-closed exactly once), and the threads that run the
//! handler: the dispatcher and the workers.

use crate::codec::{FrameCodec, NetstringError};
use crate::handle::{bump, EvapiHandle, Shared};
use crate::handler::{Event, EventContext, EventHandler};
use crate::outbox::{WriteStop, Writer};
use crate::registry::{Client, CloseReason, InFlight};
use bytes::Bytes;
use futures_util::StreamExt;
use lograte::{error_limited, warn_limited};
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tracing::{debug, info};

/// Events queued for the dispatcher thread, in the order they happened.
pub(crate) enum Dispatch {
    New(Arc<Client>, oneshot::Sender<()>),
    Message(InFlight, Bytes),
    Closed(Arc<Client>, CloseReason),
}

/// Initial read buffer of a connection; it grows to fit larger frames.
pub(crate) const READ_BUFFER: usize = 1024;

#[derive(Clone)]
pub(crate) struct Senders {
    pub dispatch: flume::Sender<Dispatch>,
    pub work: Option<flume::Sender<(InFlight, Bytes)>>,
    /// With `workers = 0` the connections run on the dispatcher's own
    /// thread, and the handler runs there, inline, as each event happens:
    /// no queue and no second thread to wake (Kamailio's dispatcher does
    /// the same).
    pub inline: Option<(Arc<dyn EventHandler>, EvapiHandle)>,
}

/// Run one client's connection: connection-new, then reading and writing
/// until it ends, then connection-closed. `direct` is the socket of a
/// plain TCP client (not TLS), which relays may write to at once while
/// this runs (see `Outbox::deliver`).
pub(crate) async fn serve<R, W>(
    shared: Arc<Shared>,
    client: Arc<Client>,
    mut frames: FramedRead<R, FrameCodec>,
    wr: W,
    senders: Senders,
    direct: Option<RawFd>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut writer = Writer::new(wr);
    // Declared after the writer, so dropped before it (locals drop in
    // reverse order), however this ends: the socket is forgotten before
    // it can close. (The parameters, the read half among them, drop
    // after every local.)
    let _forget = direct.map(|fd| {
        client.outbox.write_directly(fd);
        ForgetSocket(client.clone())
    });

    // connection-new runs before anything of the client is read.
    let reason = if !connection_new(&senders, &client).await {
        CloseReason::Shutdown
    } else if let Some(reason) = client.close_reason() {
        reason
    } else {
        let timeout = shared.config.send_data_timeout();
        tokio::select! {
            r = read_loop(&mut frames, &shared, &client, &senders) => r,
            w = writer.run(&client.outbox, timeout, &shared.counters) => match w {
                WriteStop::Closed => client.close_reason().unwrap_or(CloseReason::Shutdown),
                WriteStop::Timeout(t) => CloseReason::SendTimeout(t),
                WriteStop::Io(e) => CloseReason::Io(e.to_string()),
            },
            r = client.closed() => r,
        }
    };
    client.request_close(reason.clone());
    // The slot is free at once, before any flush below: a client that has
    // gone must not keep the next one out.
    {
        let mut registry = shared.registry_mut();
        registry.remove(client.conidx, client.id);
        // Relays to every client from now on are not for this one.
        client.outbox.unsubscribe();
    }

    // On a clean close (shutdown, or close() by the handler), what was
    // queued before it still goes out, within a bound. After a failed or
    // timed-out write nothing more is written: a frame cut short is never
    // followed by another.
    if matches!(
        reason,
        CloseReason::Shutdown | CloseReason::Closed | CloseReason::Operator
    ) {
        let bound = Duration::from_millis(shared.config.shutdown_flush_ms);
        let timeout = shared.config.send_data_timeout();
        let flushed = tokio::time::timeout(
            bound,
            writer.flush(&client.outbox, timeout, &shared.counters),
        )
        .await;
        if !matches!(flushed, Ok(Ok(()))) {
            debug!(conidx = client.conidx, peer = %client.peer, mid_frame = writer.mid_frame(), "queued frames not all written before close");
        }
    }
    client.outbox.close();
    let mut wr = writer.into_inner();
    let _ = tokio::time::timeout(Duration::from_millis(100), wr.shutdown()).await;
    drop(wr);

    bump(&shared.counters.closed);
    match &reason {
        CloseReason::QueueLimit(_) | CloseReason::SendTimeout(_) => {
            bump(&shared.counters.slow_cut);
            warn_limited!(conidx = client.conidx, peer = %client.peer, %reason, "client cut");
        }
        CloseReason::Protocol(_) => {
            bump(&shared.counters.protocol_errors);
            warn_limited!(conidx = client.conidx, peer = %client.peer, %reason, "client closed");
        }
        _ => info!(conidx = client.conidx, peer = %client.peer, %reason, "client disconnected"),
    }
    // connection-closed runs once, whatever ended the connection, after the
    // connection's last message-received. The dispatcher outlives every
    // connection task, so this send only fails if its thread died, and then
    // there is nobody left to tell.
    client.messages_drained().await;
    match &senders.inline {
        Some((handler, handle)) => run_closed(&**handler, handle, &client, &reason),
        None => {
            let _ = senders
                .dispatch
                .send_async(Dispatch::Closed(client, reason))
                .await;
        }
    }
}

/// Run connection-new (inline, or on the dispatcher thread and wait for
/// it); false when the dispatcher is gone (shutdown).
async fn connection_new(senders: &Senders, client: &Arc<Client>) -> bool {
    if let Some((handler, handle)) = &senders.inline {
        run_new(&**handler, handle, client);
        return true;
    }
    let (done_tx, done_rx) = oneshot::channel();
    senders
        .dispatch
        .send_async(Dispatch::New(client.clone(), done_tx))
        .await
        .is_ok()
        && done_rx.await.is_ok()
}

/// Forgets a client's socket for direct writes when dropped.
struct ForgetSocket(Arc<Client>);

impl Drop for ForgetSocket {
    fn drop(&mut self) {
        self.0.outbox.forget_socket();
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
    shared: &Shared,
    client: &Arc<Client>,
    senders: &Senders,
) -> CloseReason {
    loop {
        let msg = match frames.next().await {
            None => return CloseReason::PeerClosed,
            Some(Err(NetstringError::Io(e))) => return CloseReason::Io(e.to_string()),
            Some(Err(e)) => return CloseReason::Protocol(e.to_string()),
            Some(Ok(msg)) => msg,
        };
        if msg.is_empty() {
            continue; // `0:,` keep-alive
        }
        crate::frame_log::received(client, &msg);
        bump(&shared.counters.messages_received);
        client.frames_in.fetch_add(1, Ordering::Relaxed);
        client
            .bytes_in
            .fetch_add(msg.len() as u64, Ordering::Relaxed);
        let ticket = InFlight::new(client);
        if let Some((handler, handle)) = &senders.inline {
            run_message(&**handler, handle, &ticket.0, &msg);
            continue;
        }
        let queued = match &senders.work {
            Some(work) => work.send_async((ticket, msg)).await.is_ok(),
            None => senders
                .dispatch
                .send_async(Dispatch::Message(ticket, msg))
                .await
                .is_ok(),
        };
        if !queued {
            return CloseReason::Shutdown;
        }
    }
}

pub(crate) fn dispatcher(
    handler: &dyn EventHandler,
    handle: &EvapiHandle,
    rx: flume::Receiver<Dispatch>,
) {
    handler.thread_started(None);
    for event in rx.iter() {
        match event {
            Dispatch::New(client, done) => {
                run_new(handler, handle, &client);
                let _ = done.send(());
            }
            Dispatch::Message(client, msg) => run_message(handler, handle, &client.0, &msg),
            Dispatch::Closed(client, reason) => run_closed(handler, handle, &client, &reason),
        }
    }
}

fn run_new(handler: &dyn EventHandler, handle: &EvapiHandle, client: &Arc<Client>) {
    run_event(handler, handle, client, Event::ConnectionNew, None, None);
}

fn run_closed(
    handler: &dyn EventHandler,
    handle: &EvapiHandle,
    client: &Arc<Client>,
    reason: &CloseReason,
) {
    run_event(
        handler,
        handle,
        client,
        Event::ConnectionClosed,
        None,
        Some(reason),
    );
}

pub(crate) fn run_message(
    handler: &dyn EventHandler,
    handle: &EvapiHandle,
    client: &Arc<Client>,
    msg: &Bytes,
) {
    run_event(
        handler,
        handle,
        client,
        Event::MessageReceived,
        Some(msg),
        None,
    );
}

/// Run the handler's method for `event`, guarded.
fn run_event(
    handler: &dyn EventHandler,
    handle: &EvapiHandle,
    client: &Arc<Client>,
    event: Event,
    message: Option<&Bytes>,
    reason: Option<&CloseReason>,
) {
    let ctx = EventContext {
        event,
        client,
        handle,
        message,
        reason,
    };
    guarded(event, client, || match event {
        Event::ConnectionNew => handler.connection_new(&ctx),
        Event::MessageReceived => handler.message_received(&ctx),
        Event::ConnectionClosed => handler.connection_closed(&ctx),
    });
}

/// Run a handler; a panic is logged and the thread goes on.
fn guarded(event: Event, client: &Client, f: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(f)) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        error_limited!(%event, conidx = client.conidx, peer = %client.peer, panic = %what, "event handler panicked");
    }
}
