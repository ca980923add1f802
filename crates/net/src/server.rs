//! The accept loop shared by the canonical and the edges: one task per connection, one per
//! stream; the peer's role comes from its certificate; a bad stream or peer is logged and
//! dropped without disturbing the others.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use quinn::{Endpoint, RecvStream, SendStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::frame::{self, FrameError};
use crate::listen::{Listen, MetricsListen, QuicListen};
use crate::tls;
use wire::limits::HEADER_TIMEOUT;
use wire::message::{CacheOutcome, ErrorKind, Request, Response};
use wire::{Role, SignedMeta};

/// A server's bound sockets: the QUIC endpoint and, when asked for, the metrics endpoint.
pub struct Bound {
    pub endpoint: Endpoint,
    pub quic: std::net::SocketAddr,
    pub registry: crate::metrics::Registry,
    pub metrics: Option<std::net::SocketAddr>,
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
/// until `shutdown` fires. Shared by the canonical and the edges.
pub async fn bind(
    listen: QuicListen,
    metrics: Option<MetricsListen>,
    credentials: &tls::Credentials,
    shutdown: &CancellationToken,
) -> Result<Bound, BindError> {
    let address = listen.address();
    let quic_error = |source| BindError::Quic { address, source };
    let socket = match listen {
        Listen::Address(address) => crate::pool::bind_udp(address).map_err(quic_error)?,
        Listen::Bound(socket) => socket,
    };
    let endpoint = crate::pool::endpoint(socket, credentials, true).map_err(quic_error)?;
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
    })
}

/// How long shutdown waits for connection tasks, then for the close to reach peers.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

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
/// waits for in-flight streams.
pub async fn serve<H: Handler>(endpoint: Endpoint, handler: Arc<H>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let remote = incoming.remote_address();
        tracker.spawn(
            async move {
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
                serve_connection(connection, peer, handler, shutdown)
                    .instrument(tracing::debug_span!("peer", %peer))
                    .await;
            }
            .instrument(tracing::debug_span!("connection", %remote)),
        );
    }
    tracker.close();
    // Closing the endpoint ends every connection and stream at once, so a node stops well
    // within a second of SIGTERM; peers see a clean close rather than a timeout.
    endpoint.close(0u32.into(), b"shutting down");
    let _ = timeout(SHUTDOWN_GRACE, tracker.wait()).await;
    let _ = timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
}

async fn serve_connection<H: Handler>(
    connection: quinn::Connection,
    peer: Role,
    handler: Arc<H>,
    shutdown: CancellationToken,
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
        tokio::spawn(serve_stream(peer, handler, send, recv));
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

/// Writes a reply header and finishes the stream.
pub async fn reply(send: &mut SendStream, response: &Response) {
    if let Err(error) = frame::write_header(send, response).await {
        tracing::debug!(%error, "reply not delivered");
        return;
    }
    let _ = send.finish();
}

/// Writes an error reply and finishes the stream.
pub async fn reply_error(send: &mut SendStream, kind: ErrorKind, message: impl Into<String>) {
    let message = message.into();
    reply(send, &Response::Error { kind, message }).await;
}

/// Writes an image reply: the header (with the canonical's signed metadata), then the body
/// without copying it, then finishes.
pub async fn reply_image(
    send: &mut SendStream,
    meta: SignedMeta,
    served_by: &str,
    outcome: CacheOutcome,
    body: Bytes,
) -> Result<(), quinn::WriteError> {
    let header = Response::Image {
        meta,
        served_by: served_by.to_string(),
        outcome,
    };
    let header = match frame::encode_header(&header) {
        Ok(header) => header,
        Err(error) => {
            tracing::error!(%error, "image header did not encode");
            return Ok(());
        }
    };
    send.write_chunk(Bytes::from(header)).await?;
    if !body.is_empty() {
        send.write_chunk(body).await?;
    }
    let _ = send.finish();
    Ok(())
}
