//! From accept to client: the TLS handshake and the `auth_token`, which a
//! connection passes before it takes a `max_clients` slot and before
//! connection-new runs, so connections that never become clients cannot
//! lock the real ones out. Connections in this stage are bounded apart
//! ([`crate::Config::max_pending`]) and end at shutdown.

use crate::codec::{FrameCodec, NetstringCodec, RawCodec};
use crate::connection::{serve, Senders, READ_BUFFER};
use crate::handle::{bump, Shared};
use crate::registry::Client;
use futures_util::StreamExt;
use lograte::warn_limited;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tracing::info;

/// Take a `max_clients` slot for a connection from `peer`, or refuse it
/// (logged and counted) when all are taken.
pub(crate) fn claim_slot(shared: &Shared, peer: SocketAddr) -> Option<Arc<Client>> {
    let max = shared.config.max_clients;
    let client = {
        let mut reg = shared.registry_mut();
        reg.next_index(max).map(|conidx| {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let c = Arc::new(Client::new(
                id,
                conidx,
                peer,
                shared.config.client_queue_limit,
                shared.chunks.clone(),
            ));
            reg.insert(c.clone());
            // Under the registry's lock, as relays to every client are
            // made: each such relay is in the log before or after this.
            c.outbox.subscribe(&shared.log);
            c
        })
    };
    match &client {
        Some(c) => {
            bump(&shared.counters.accepted);
            info!(conidx = c.conidx, %peer, "client connected");
        }
        None => {
            bump(&shared.counters.refused);
            warn_limited!(%peer, max_clients = max, "client refused: max_clients reached");
        }
    }
    client
}

/// Frames read from a client's byte stream, in the configured format.
pub(crate) fn framed<S: AsyncRead>(shared: &Shared, stream: S) -> FramedRead<S, FrameCodec> {
    let codec = if shared.config.netstring_format == 1 {
        FrameCodec::Netstring(NetstringCodec::new(shared.config.max_frame_size))
    } else {
        FrameCodec::Raw(RawCodec::new(shared.config.max_frame_size))
    };
    FramedRead::with_capacity(stream, codec, READ_BUFFER)
}

/// One of the `max_pending` places of connections that are not clients
/// yet; given back when dropped, whatever ends the wait.
pub(crate) struct PendingSlot(Arc<Shared>);

impl PendingSlot {
    pub(crate) fn enter(shared: &Arc<Shared>) -> Option<PendingSlot> {
        let limit = shared.config.max_pending();
        shared
            .pending_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingSlot(shared.clone()))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.pending_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection that must pass the TLS handshake or send `auth_token`
/// before it is a client: neither takes a `max_clients` slot, and
/// connection-new runs only once both are passed. Shutdown ends the wait.
pub(crate) async fn admit(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    senders: Senders,
    tls: Option<tokio_rustls::TlsAcceptor>,
    pending: PendingSlot,
) {
    let mut stop = shared.stop.subscribe();
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let Some(acceptor) = tls else {
        let admitted = tokio::select! {
            a = authenticate(&shared, stream, peer) => a,
            _ = stopped => None,
        };
        drop(pending);
        if let Some((client, frames, wr, fd)) = admitted {
            serve(shared, client, frames, wr, senders, fd).await;
        }
        return;
    };
    let limit = Duration::from_millis(shared.config.tls_handshake_timeout_ms);
    let handshake_then_auth = async {
        match tokio::time::timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => authenticate(&shared, tls, peer).await,
            failure => {
                let reason = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no handshake within {} ms", limit.as_millis()),
                };
                bump(&shared.counters.tls_failures);
                warn_limited!(%peer, %reason, "connection dropped: TLS handshake failed");
                None
            }
        }
    };
    let admitted = tokio::select! {
        a = handshake_then_auth => a,
        _ = stopped => None,
    };
    drop(pending);
    if let Some((client, frames, wr, fd)) = admitted {
        serve(shared, client, frames, wr, senders, fd).await;
    }
}

/// A client ready to serve: its slot, its reader, its writer half, and
/// its socket when relays may write to it at once (plain TCP).
type Admitted<S> = (
    Arc<Client>,
    FramedRead<<S as SplitStream>::Read, FrameCodec>,
    <S as SplitStream>::Write,
    Option<RawFd>,
);

/// A client's stream, split into halves for its reader and its writer:
/// owned halves for TCP (no lock on the hot path), `tokio::io::split` for
/// TLS, whose two directions share one session.
trait SplitStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    fn halves(self) -> (Self::Read, Self::Write);
    /// The socket, when its bytes go on the wire as written (not TLS).
    fn plain_socket(&self) -> Option<RawFd>;
}

impl SplitStream for TcpStream {
    type Read = tokio::net::tcp::OwnedReadHalf;
    type Write = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
    fn plain_socket(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl SplitStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Read = tokio::io::ReadHalf<Self>;
    type Write = tokio::io::WriteHalf<Self>;
    fn halves(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
    fn plain_socket(&self) -> Option<RawFd> {
        None
    }
}

/// Wait for `auth_token` when one is set, then claim a slot.
async fn authenticate<S: SplitStream>(
    shared: &Shared,
    stream: S,
    peer: SocketAddr,
) -> Option<Admitted<S>> {
    let fd = stream.plain_socket();
    let (rd, wr) = stream.halves();
    let mut frames = framed(shared, rd);
    if shared.config.auth_enabled() {
        let limit = Duration::from_millis(shared.config.auth_timeout_ms);
        let first = tokio::time::timeout(limit, async {
            loop {
                match frames.next().await {
                    Some(Ok(m)) if m.is_empty() => continue, // keep-alive
                    other => return other,
                }
            }
        })
        .await;
        let failure = match first {
            Ok(Some(Ok(m))) if shared.config.auth_token.matches(&m) => None,
            Ok(Some(Ok(_))) => Some("its first message is not the auth_token".to_string()),
            Ok(Some(Err(e))) => Some(e.to_string()),
            Ok(None) => Some("closed before sending the auth_token".to_string()),
            Err(_) => Some(format!("no auth_token within {} ms", limit.as_millis())),
        };
        if let Some(reason) = failure {
            bump(&shared.counters.auth_failures);
            warn_limited!(%peer, %reason, "connection dropped: not authenticated");
            return None;
        }
    }
    // The same reader goes on: bytes that came after the token are in it.
    claim_slot(shared, peer).map(|client| (client, frames, wr, fd))
}
