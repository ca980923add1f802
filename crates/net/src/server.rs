//! The accept loop shared by the canonical and the edges: one task per connection, one per
//! stream; the peer's role comes from its certificate; a bad stream or peer is logged and
//! dropped without disturbing the others. Every resource a peer can make a server hold is
//! bounded here ([`ServerLimits`]): connections in all, connections per peer, streams per
//! connection, and the time and pace of every image reply ([`ImageSender`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::frame::{self, FrameError};
use crate::listen::{Listen, MetricsListen, QuicListen};
use crate::tls;
use wire::frame::{RESET_FAILED, RESET_STALLED};
use wire::limits::{self, HEADER_TIMEOUT, SHUTDOWN_GRACE};
use wire::message::{CacheOutcome, ErrorKind, Request, Response};
use wire::{Role, SignedMeta};

/// What one server grants its peers; every field is a constant of [`wire::limits`].
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Connections handshaking or open at once, from all peers together.
    pub connections: usize,
    /// Connections one peer (certificate role and IP address) may hold at once; the oldest
    /// is closed when a newer one would exceed it.
    pub connections_per_peer: usize,
    /// Concurrent bidirectional streams a peer may open on one connection.
    pub streams_per_connection: u32,
    /// Unacknowledged bytes QUIC buffers for sending on one connection.
    pub send_window: u64,
}

impl ServerLimits {
    /// An edge: many streams per connection (its replies are refcounted cached bodies).
    pub const EDGE: ServerLimits = ServerLimits {
        connections: limits::MAX_CONNECTIONS,
        connections_per_peer: limits::EDGE_CONNECTIONS_PER_PEER,
        streams_per_connection: limits::MAX_CONCURRENT_STREAMS,
        send_window: limits::CONNECTION_WINDOW as u64,
    };

    /// The canonical: each reply streams its body from disk, so a peer gets fewer streams
    /// and connections, and a smaller send window.
    pub const ORIGIN: ServerLimits = ServerLimits {
        connections: limits::MAX_CONNECTIONS,
        connections_per_peer: limits::ORIGIN_CONNECTIONS_PER_PEER,
        streams_per_connection: limits::ORIGIN_STREAMS_PER_CONNECTION,
        send_window: limits::ORIGIN_SEND_WINDOW,
    };
}

/// Close code for a connection closed because its peer opened a newer one past
/// [`ServerLimits::connections_per_peer`].
const CLOSE_TOO_MANY_CONNECTIONS: u32 = 2;

/// A server's bound sockets: the QUIC endpoint and, when asked for, the metrics endpoint.
pub struct Bound {
    pub endpoint: Endpoint,
    pub quic: std::net::SocketAddr,
    pub registry: crate::metrics::Registry,
    pub metrics: Option<std::net::SocketAddr>,
    /// The fault layer in the endpoint's socket, empty until an operator sets it.
    pub faults: crate::faults::SocketFaults,
}

/// A failure to bind one of a server's sockets.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("binding QUIC on {address}: {source}")]
    Quic {
        address: std::net::SocketAddr,
        source: crate::pool::NetError,
    },
    #[error("binding metrics on {address}: {source}; is another cluster using the port?")]
    Metrics {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Makes the QUIC endpoint on `listen` and, with `metrics`, serves a fresh registry there
/// until `shutdown` fires, with an edge's limits.
pub async fn bind(
    listen: QuicListen,
    metrics: Option<MetricsListen>,
    credentials: &tls::Credentials,
    shutdown: &CancellationToken,
) -> Result<Bound, BindError> {
    bind_with(listen, metrics, credentials, shutdown, ServerLimits::EDGE).await
}

/// [`bind`] with the streams per connection and send window of `limits`.
pub async fn bind_with(
    listen: QuicListen,
    metrics: Option<MetricsListen>,
    credentials: &tls::Credentials,
    shutdown: &CancellationToken,
    limits: ServerLimits,
) -> Result<Bound, BindError> {
    let address = listen.address();
    let quic_error = |source| BindError::Quic { address, source };
    let socket = match listen {
        Listen::Address(address) => crate::pool::bind_udp(address).map_err(quic_error)?,
        Listen::Bound(socket) => socket,
    };
    let faults = crate::faults::SocketFaults::default();
    let endpoint = crate::pool::endpoint_with(socket, credentials, true, Some(faults.clone()))
        .map_err(quic_error)?;
    let server_config = credentials
        .server_config_with(limits.streams_per_connection, limits.send_window)
        .map_err(|error| quic_error(error.into()))?;
    endpoint.set_server_config(Some(server_config));
    let quic = endpoint
        .local_addr()
        .map_err(|source| quic_error(crate::pool::NetError::Bind { address, source }))?;
    let registry = crate::metrics::Registry::new();
    let metrics = match metrics {
        Some(listen) => {
            let address = listen.address();
            let (bound, _task) = crate::metrics::serve(listen, registry.clone(), shutdown.clone())
                .await
                .map_err(|source| BindError::Metrics { address, source })?;
            Some(bound)
        }
        None => None,
    };
    Ok(Bound {
        endpoint,
        quic,
        registry,
        metrics,
        faults,
    })
}

/// Serves one decoded request. Implementations write their reply on `send`.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        peer: Role,
        request: Request,
        send: SendStream,
        recv: RecvStream,
    ) -> impl Future<Output = ()> + Send;
}

/// Accepts connections on `endpoint` until `shutdown` fires, then closes the endpoint and
/// waits for in-flight streams. An edge's limits; see [`serve_with`].
pub async fn serve<H: Handler>(endpoint: Endpoint, handler: Arc<H>, shutdown: CancellationToken) {
    serve_with(endpoint, handler, shutdown, ServerLimits::EDGE).await
}

/// [`serve`] bounding connections in all and per peer by `limits`.
pub async fn serve_with<H: Handler>(
    endpoint: Endpoint,
    handler: Arc<H>,
    shutdown: CancellationToken,
    limits: ServerLimits,
) {
    let tracker = TaskTracker::new();
    let connections = Arc::new(Semaphore::new(limits.connections));
    let peers = Arc::new(PeerConnections::new(limits.connections_per_peer));
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let remote = incoming.remote_address();
        // A permit per connection, held until its task ends; refusing costs one packet and
        // no handshake.
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%remote, limit = limits.connections, "refusing a connection: server full");
            incoming.refuse();
            continue;
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let peers = peers.clone();
        let streams = tracker.clone();
        tracker.spawn(
            async move {
                let _permit = permit;
                let connection = match incoming.await {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::debug!(%error, "handshake failed");
                        return;
                    }
                };
                let peer = match tls::peer_role(&connection) {
                    Ok(peer) => peer,
                    Err(error) => {
                        tracing::warn!(%error, "rejecting peer");
                        connection.close(1u32.into(), b"certificate names no role");
                        return;
                    }
                };
                tracing::debug!(%peer, "connection open");
                let _slot = peers.admit(peer, &connection);
                serve_connection(connection, peer, handler, shutdown, streams)
                    .instrument(tracing::debug_span!("peer", %peer))
                    .await;
            }
            .instrument(tracing::debug_span!("connection", %remote)),
        );
    }
    tracker.close();
    // Closing the endpoint ends every connection and stream at once, so a node stops well
    // within a second of SIGTERM; peers see a clean close rather than a timeout. The tracker
    // holds every connection task and every stream task, so the wait below covers requests
    // still being answered, not only the accept side.
    endpoint.close(0u32.into(), b"shutting down");
    if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(
            tasks = tracker.len(),
            "connection and stream tasks still running after {SHUTDOWN_GRACE:?}; leaving them"
        );
    }
    let _ = timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
}

/// A peer, for counting its connections: the role its certificate names and where it
/// connects from (every CLI run shares the client certificate, so the address tells hosts
/// apart).
type PeerKey = (Role, IpAddr);

/// The open connections of each peer, oldest first, so a peer past its bound loses its
/// oldest connection (and every stream on it) to its newest.
struct PeerConnections {
    limit: usize,
    next_id: AtomicU64,
    open: Mutex<HashMap<PeerKey, VecDeque<(u64, Connection)>>>,
}

/// A connection's place in [`PeerConnections`], given up when the connection's task ends.
struct PeerSlot {
    peers: Arc<PeerConnections>,
    key: PeerKey,
    id: u64,
}

impl PeerConnections {
    fn new(limit: usize) -> PeerConnections {
        PeerConnections {
            limit: limit.max(1),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn admit(self: &Arc<Self>, peer: Role, connection: &Connection) -> PeerSlot {
        let key = (peer, connection.remote_address().ip());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            // The std mutex guards only this map update, never an await.
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let list = open.entry(key).or_default();
            list.push_back((id, connection.clone()));
            (list.len() > self.limit)
                .then(|| list.pop_front())
                .flatten()
        };
        if let Some((_, oldest)) = evicted {
            tracing::warn!(%peer, limit = self.limit, "closing a peer's oldest connection");
            oldest.close(
                CLOSE_TOO_MANY_CONNECTIONS.into(),
                b"too many connections from this peer",
            );
        }
        PeerSlot {
            peers: self.clone(),
            key,
            id,
        }
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = open.get_mut(&self.key) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                open.remove(&self.key);
            }
        }
    }
}

async fn serve_connection<H: Handler>(
    connection: quinn::Connection,
    peer: Role,
    handler: Arc<H>,
    shutdown: CancellationToken,
    streams: TaskTracker,
) {
    loop {
        let (send, recv) = tokio::select! {
            () = shutdown.cancelled() => return,
            stream = connection.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "connection closed");
                    return;
                }
            },
        };
        let handler = handler.clone();
        // Tracked with the connection tasks: shutdown waits for the reply under way.
        streams.spawn(serve_stream(peer, handler, send, recv));
    }
}

async fn serve_stream<H: Handler>(
    peer: Role,
    handler: Arc<H>,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let request: Request = match timeout(HEADER_TIMEOUT, frame::read_header(&mut recv)).await {
        Ok(Ok(request)) => request,
        Ok(Err(FrameError::Truncated)) => return,
        Ok(Err(error)) => {
            tracing::warn!(%peer, %error, "bad request header");
            reply_error(&mut send, ErrorKind::BadRequest, error.to_string()).await;
            let _ = recv.stop(0u32.into());
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "no request header within {:?}", HEADER_TIMEOUT);
            let _ = send.reset(0u32.into());
            return;
        }
    };
    let kind = request.kind();
    handler
        .handle(peer, request, send, recv)
        .instrument(tracing::debug_span!("request", kind))
        .await;
}

/// Writes a reply header and finishes the stream. A reader that does not take it within
/// [`limits::SEND_STALL_TIMEOUT`] gets the stream reset, as for a body.
pub async fn reply(send: &mut SendStream, response: &Response) {
    match timeout(
        limits::SEND_STALL_TIMEOUT,
        frame::write_header(send, response),
    )
    .await
    {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        Ok(Err(error)) => tracing::debug!(%error, "reply not delivered"),
        Err(_) => {
            tracing::debug!(
                "reader took no reply within {:?}",
                limits::SEND_STALL_TIMEOUT
            );
            let _ = send.reset(RESET_STALLED.into());
        }
    }
}

/// Writes an error reply and finishes the stream.
pub async fn reply_error(send: &mut SendStream, kind: ErrorKind, message: impl Into<String>) {
    let message = message.into();
    reply(send, &Response::Error { kind, message }).await;
}

/// Why an image reply ended before its last byte.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("the reader took no chunk within {0:?}; stream reset")]
    Stalled(std::time::Duration),
    #[error("the reply was still being sent after {0:?}; stream reset")]
    OutOfTime(std::time::Duration),
    #[error("the reply header did not encode: {0}")]
    Header(FrameError),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
}

/// One image reply under way: the header, then the body in chunks. Each chunk must be taken
/// by the reader within [`limits::SEND_STALL_TIMEOUT`] (a minimum pace of
/// [`limits::MIN_SEND_BYTES_PER_SECOND`]) and the whole reply must be sent within
/// [`limits::REPLY_SEND_DEADLINE`]; otherwise the stream is reset with
/// [`wire::frame::RESET_STALLED`], which frees what QUIC buffered for it, and the caller drops
/// what it holds.
pub struct ImageSender<'a> {
    send: &'a mut SendStream,
    deadline: Instant,
}

impl<'a> ImageSender<'a> {
    /// Writes the reply header; the body follows through [`ImageSender::chunk`].
    pub async fn start(
        send: &'a mut SendStream,
        meta: SignedMeta,
        served_by: &str,
        outcome: CacheOutcome,
    ) -> Result<ImageSender<'a>, ReplyError> {
        let header = Response::Image {
            meta,
            served_by: served_by.to_string(),
            outcome,
        };
        let header = match frame::encode_header(&header) {
            Ok(header) => header,
            Err(error) => {
                let _ = send.reset(RESET_FAILED.into());
                return Err(ReplyError::Header(error));
            }
        };
        let mut sender = ImageSender {
            send,
            deadline: Instant::now() + limits::REPLY_SEND_DEADLINE,
        };
        sender.write(Bytes::from(header)).await?;
        Ok(sender)
    }

    /// Writes one chunk of the body without copying it.
    pub async fn chunk(&mut self, chunk: Bytes) -> Result<(), ReplyError> {
        // Slices of at most one chunk: the stall timeout is a pace only if every write is
        // the same bounded size (an edge hands over a whole cached body).
        let mut rest = chunk;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(limits::BODY_CHUNK_BYTES));
            self.write(piece).await?;
        }
        Ok(())
    }

    async fn write(&mut self, piece: Bytes) -> Result<(), ReplyError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let allowed = left.min(limits::SEND_STALL_TIMEOUT);
        match timeout(allowed, self.send.write_chunk(piece)).await {
            Ok(result) => Ok(result?),
            Err(_) => {
                let _ = self.send.reset(RESET_STALLED.into());
                Err(if allowed < limits::SEND_STALL_TIMEOUT {
                    ReplyError::OutOfTime(limits::REPLY_SEND_DEADLINE)
                } else {
                    ReplyError::Stalled(limits::SEND_STALL_TIMEOUT)
                })
            }
        }
    }

    /// Ends the body; the reader sees the stream finish.
    pub fn finish(self) {
        let _ = self.send.finish();
    }

    /// Abandons the body with `code`: the reader never sees a complete body.
    pub fn reset(self, code: u32) {
        let _ = self.send.reset(code.into());
    }
}

/// Writes an image reply: the header (with the canonical's signed metadata), then the body
/// without copying it (in slices of at most
/// [`limits::BODY_CHUNK_BYTES`], each under [`ImageSender`]'s pace and deadline), then
/// finishes.
pub async fn reply_image(
    send: &mut SendStream,
    meta: SignedMeta,
    served_by: &str,
    outcome: CacheOutcome,
    body: Bytes,
) -> Result<(), ReplyError> {
    let mut sender = ImageSender::start(send, meta, served_by, outcome).await?;
    sender.chunk(body).await?;
    sender.finish();
    Ok(())
}
