//! QUIC endpoints and a pool of long-lived connections: one connection per peer, a new
//! bidirectional stream per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use quinn::{Connection, Endpoint, RecvStream};
use tokio::time::timeout;

use crate::frame::{self, FrameError};
use crate::tls::{Credentials, TlsError};
use wire::limits::{CONNECT_TIMEOUT, SOCKET_BUFFER_BYTES};
use wire::message::{ImageMeta, Request, Response};
use wire::{OriginTrust, Role};

/// Send priority of an election message's stream (quinn's default is 0). A leader's heartbeat
/// shares its connection to a follower with replication pushes of whole images; sent first, it
/// does not wait behind a megabyte of body, which on a busy link would look like a dead leader.
const ELECTION_STREAM_PRIORITY: i32 = 10;

/// A transport failure while talking to a peer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot resolve {address}: {detail}")]
    Resolve { address: String, detail: String },
    #[error("cannot bind UDP {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot connect to {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("no answer from {address} within {seconds} s")]
    Timeout { address: String, seconds: u64 },
    #[error("connection to {address} lost: {detail}")]
    Lost { address: String, detail: String },
    #[error("bad reply from {address}: {source}")]
    Frame { address: String, source: FrameError },
}

/// Makes a QUIC endpoint on `socket` (enlarging its buffers). With `serve`, the endpoint also
/// accepts connections; it can always dial out with our credentials.
pub fn endpoint(
    socket: std::net::UdpSocket,
    credentials: &Credentials,
    serve: bool,
) -> Result<Endpoint, NetError> {
    endpoint_with(socket, credentials, serve, None)
}

/// [`endpoint`] whose socket, with `faults`, goes through the fault layer
/// ([`crate::faults::FaultySocket`]) so an operator can cut or shape it.
pub fn endpoint_with(
    socket: std::net::UdpSocket,
    credentials: &Credentials,
    serve: bool,
    faults: Option<crate::faults::SocketFaults>,
) -> Result<Endpoint, NetError> {
    let bind = socket
        .local_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    enlarge_buffers(&socket);
    let server_config = if serve {
        Some(credentials.server_config()?)
    } else {
        None
    };
    let runtime = quinn::default_runtime().ok_or_else(|| NetError::Bind {
        address: bind,
        source: std::io::Error::other("no async runtime"),
    })?;
    let endpoint_config = if serve {
        // Stable reset key: see `Credentials::reset_secret`.
        let secret = credentials.reset_secret();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let mut config = quinn::EndpointConfig::new(Arc::new(key));
        // Connection ids carry a keyed check; with a random key a restarted instance would
        // drop packets on its predecessor's ids as invalid instead of answering with a reset.
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&secret[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        config
    } else {
        quinn::EndpointConfig::default()
    };
    let bind_error = |source| NetError::Bind {
        address: bind,
        source,
    };
    let mut endpoint = match faults {
        None => Endpoint::new(endpoint_config, server_config, socket, runtime),
        Some(faults) => {
            let socket = runtime.wrap_udp_socket(socket).map_err(bind_error)?;
            let socket = Arc::new(crate::faults::FaultySocket::new(socket, faults));
            Endpoint::new_with_abstract_socket(endpoint_config, server_config, socket, runtime)
        }
    }
    .map_err(bind_error)?;
    endpoint.set_default_client_config(credentials.client_config()?);
    Ok(endpoint)
}

/// Binds a UDP socket on `address` for [`endpoint`].
pub fn bind_udp(address: SocketAddr) -> Result<std::net::UdpSocket, NetError> {
    std::net::UdpSocket::bind(address).map_err(|source| NetError::Bind { address, source })
}

/// Larger buffers absorb bursts of 1 MB bodies; the kernel may cap them, which is fine.
fn enlarge_buffers(socket: &std::net::UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
}

/// A peer to dial: its address (`host:port`) and the role its certificate must carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub address: String,
    pub role: Role,
}

impl Target {
    pub fn new(address: impl Into<String>, role: Role) -> Target {
        Target {
            address: address.into(),
            role,
        }
    }
}

/// One peer's pooled connection. Dials to a peer happen one at a time under `state`'s lock;
/// `failed_dials` counts those that failed, so a caller that waited for another caller's dial
/// takes that dial's failure instead of dialling again (a dead peer costs every waiter one
/// [`CONNECT_TIMEOUT`], not one each in turn).
#[derive(Default)]
struct PeerSlot {
    state: tokio::sync::Mutex<SlotState>,
    failed_dials: AtomicU64,
}

#[derive(Default)]
struct SlotState {
    connection: Option<Connection>,
    /// How the last dial failed, if it did.
    last_failure: Option<NetError>,
}

type Slot = Arc<PeerSlot>;

/// Keeps one live connection per target and reconnects when it drops. Images it fetches are
/// checked against the canonical's signature with `origin` before their body is read.
pub struct Pool {
    endpoint: Endpoint,
    origin: Arc<OriginTrust>,
    slots: Mutex<HashMap<Target, Slot>>,
}

/// A reply header and the stream its body (if any) follows on.
pub struct Exchange {
    pub response: Response,
    pub recv: RecvStream,
    address: String,
}

impl Exchange {
    /// Reads and verifies the image body announced by `meta`.
    pub async fn read_body(&mut self, meta: &ImageMeta) -> Result<Bytes, NetError> {
        frame::read_body(&mut self.recv, meta)
            .await
            .map_err(|source| NetError::Frame {
                address: self.address.clone(),
                source,
            })
    }

    /// Reads the image body announced by `meta` and drops it piece by piece as QUIC hands
    /// it over (no copy, no buffer of its size), checking what `check` asks; the bytes read.
    pub async fn drain_body(
        &mut self,
        meta: &ImageMeta,
        check: frame::BodyCheck,
    ) -> Result<u64, NetError> {
        let frame_error = |source| NetError::Frame {
            address: self.address.clone(),
            source,
        };
        let mut tally = frame::BodyTally::new(meta, check).map_err(frame_error)?;
        while let Some(chunk) = self
            .recv
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|error| frame_error(FrameError::Io(error.into())))?
        {
            tally.feed(&chunk.bytes).map_err(frame_error)?;
        }
        tally.finish().map_err(frame_error)
    }
}

impl Pool {
    /// A pool dialling from `endpoint` that accepts only images sealed by the canonical
    /// `origin` trusts (`Credentials::origin_trust`).
    pub fn new(endpoint: Endpoint, origin: Arc<OriginTrust>) -> Pool {
        Pool {
            endpoint,
            origin,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The check of the canonical's signature this pool applies.
    pub fn origin(&self) -> &Arc<OriginTrust> {
        &self.origin
    }

    fn slot(&self, target: &Target) -> Slot {
        // The std mutex guards only this map lookup, never an await.
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(target.clone()).or_default().clone()
    }

    /// The open connection to `target`, if there is one, without dialling.
    pub fn existing(&self, target: &Target) -> Option<Connection> {
        let slot = self.slot(target);
        let guard = slot.state.try_lock().ok()?;
        guard
            .connection
            .as_ref()
            .filter(|connection| connection.close_reason().is_none())
            .cloned()
    }

    /// The live connection to `target`, dialling it if needed (one dial at a time per target;
    /// a caller that waited for a dial that failed gets that failure).
    pub async fn connection(&self, target: &Target) -> Result<Connection, NetError> {
        let slot = self.slot(target);
        let failed_before = slot.failed_dials.load(Ordering::Acquire);
        let mut guard = slot.state.lock().await;
        if let Some(connection) = guard.connection.as_ref() {
            if connection.close_reason().is_none() {
                return Ok(connection.clone());
            }
        }
        if slot.failed_dials.load(Ordering::Acquire) != failed_before {
            if let Some(failure) = guard.last_failure.as_ref() {
                return Err(repeat_dial_failure(failure, &target.address));
            }
        }
        match self.dial(target).await {
            Ok(connection) => {
                guard.connection = Some(connection.clone());
                guard.last_failure = None;
                Ok(connection)
            }
            Err(error) => {
                guard.last_failure = Some(repeat_dial_failure(&error, &target.address));
                slot.failed_dials.fetch_add(1, Ordering::AcqRel);
                Err(error)
            }
        }
    }

    async fn dial(&self, target: &Target) -> Result<Connection, NetError> {
        let address = resolve(&target.address).await?;
        let connect_error = |detail: String| NetError::Connect {
            address: target.address.clone(),
            detail,
        };
        let connecting = self
            .endpoint
            .connect(address, &target.role.server_name())
            .map_err(|e| connect_error(e.to_string()))?;
        match timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(connect_error(error.to_string())),
            Err(_) => Err(NetError::Timeout {
                address: target.address.clone(),
                seconds: CONNECT_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Sends `request` (and `body`, for replication) on a new stream and reads the reply header.
    /// A pooled connection that turns out dead is redialled once.
    pub async fn call(
        &self,
        target: &Target,
        request: &Request,
        body: Option<Bytes>,
    ) -> Result<Exchange, NetError> {
        let connection = self.connection(target).await?;
        match exchange(&connection, &target.address, request, body.clone()).await {
            Err(NetError::Lost { .. }) if connection.close_reason().is_some() => {
                let connection = self.connection(target).await?;
                exchange(&connection, &target.address, request, body).await
            }
            result => result,
        }
    }
}

async fn exchange(
    connection: &Connection,
    address: &str,
    request: &Request,
    body: Option<Bytes>,
) -> Result<Exchange, NetError> {
    let lost = |detail: String| NetError::Lost {
        address: address.to_string(),
        detail,
    };
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| lost(e.to_string()))?;
    if matches!(request, Request::Election(_)) {
        // Fails only on a stream already closed, which the write below reports.
        let _ = send.set_priority(ELECTION_STREAM_PRIORITY);
    }
    let header = frame::encode_header(request).map_err(|source| NetError::Frame {
        address: address.to_string(),
        source,
    })?;
    send.write_all(&header)
        .await
        .map_err(|e| lost(e.to_string()))?;
    if let Some(body) = body {
        match send.write_chunk(body).await {
            Ok(()) => {}
            // The peer refused the request from its header and stopped reading the body (a
            // replica from a non-leader, say); its reply, read below, says why.
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(error) => return Err(lost(error.to_string())),
        }
    }
    // The peer may already have replied and reset; a failed finish shows up in the read below.
    let _ = send.finish();
    let reply_timeout = request.reply_timeout();
    let response = match timeout(reply_timeout, frame::read_header(&mut recv)).await {
        Ok(Ok(response)) => response,
        Ok(Err(FrameError::Io(error))) => return Err(lost(error.to_string())),
        Ok(Err(FrameError::Truncated)) if connection.close_reason().is_some() => {
            return Err(lost("connection closed".to_string()))
        }
        Ok(Err(source)) => {
            return Err(NetError::Frame {
                address: address.to_string(),
                source,
            })
        }
        Err(_) => {
            return Err(NetError::Timeout {
                address: address.to_string(),
                seconds: reply_timeout.as_secs(),
            })
        }
    };
    Ok(Exchange {
        response,
        recv,
        address: address.to_string(),
    })
}

/// A copy of a dial's failure for the callers that waited on that dial. Dials fail with
/// `Resolve`, `Connect` or `Timeout`, which copy exactly; anything else keeps its wording.
fn repeat_dial_failure(error: &NetError, address: &str) -> NetError {
    match error {
        NetError::Resolve { address, detail } => NetError::Resolve {
            address: address.clone(),
            detail: detail.clone(),
        },
        NetError::Connect { address, detail } => NetError::Connect {
            address: address.clone(),
            detail: detail.clone(),
        },
        NetError::Timeout { address, seconds } => NetError::Timeout {
            address: address.clone(),
            seconds: *seconds,
        },
        other => NetError::Connect {
            address: address.to_string(),
            detail: other.to_string(),
        },
    }
}

/// Resolves `host:port`, preferring IPv4 (endpoints bind IPv4 sockets).
pub async fn resolve(address: &str) -> Result<SocketAddr, NetError> {
    let resolve_error = |detail: String| NetError::Resolve {
        address: address.to_string(),
        detail,
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| resolve_error(e.to_string()))?
        .collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| resolve_error("no addresses".to_string()))
}
