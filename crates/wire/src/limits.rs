//! Every bound and timeout in Flotilla, in one place. Timeouts compose: an edge's whole
//! upstream fetch has one budget ([`UPSTREAM_BUDGET`]) that covers waiting for the leader's own
//! origin fetch, so a slow origin never makes an edge bypass a live leader.

use std::time::Duration;

/// Largest CBOR header accepted on a stream. Headers carry ids, metadata and status tables,
/// never image bodies, so 64 KiB leaves ample room for a 64-node status reply.
pub const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// Largest image body accepted or served. Sample images are at most a few MB; this bounds the
/// memory one request can make a receiver allocate.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Canonical certificates an [`OriginTrust`](crate::origin::OriginTrust) remembers as checked
/// against the CA. A cluster has one canonical; a few leave room for a re-issued certificate
/// while images sealed by the old one are still cached.
pub const MAX_ORIGIN_CERTIFICATES: usize = 4;

/// Origin seals an [`OriginTrust`](crate::origin::OriginTrust) remembers as verified (32 bytes
/// each): enough for a client's or an edge's working set of images, so fetching one again
/// skips the ECDSA verify; past it the memory is cleared and rebuilt.
pub const MAX_VERIFIED_SEALS: usize = 8192;

/// Concurrent bidirectional streams a peer may open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How long a reader waits for a request or response header before giving up on the stream.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole request (header, body and all) may take before the caller gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one fetch of an image from the canonical may take (header and body).
pub const ORIGIN_FETCH_TIMEOUT: Duration = Duration::from_secs(8);

/// One hop's allowance on top of the work behind it: the leader's reply to an edge travels
/// one more hop than its origin fetch.
pub const HOP_ALLOWANCE: Duration = Duration::from_secs(1);

/// An edge's whole budget for producing a missing image: waiting on the leader (which is
/// doing at most one origin fetch for it) and, only if the leader fails or loses its
/// leadership meanwhile, fetching from the canonical itself with what is left.
pub const UPSTREAM_BUDGET: Duration = Duration::from_secs(
    ORIGIN_FETCH_TIMEOUT.as_secs() + HOP_ALLOWANCE.as_secs() + ORIGIN_FETCH_TIMEOUT.as_secs(),
);

/// How long the client gives one edge before it fails over to the next. Shorter than the
/// edge's budget on purpose: the next edge asks the same leader, whose fetch is already under
/// way, so a failover joins that fetch instead of starting another one at the origin.
pub const CLIENT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// After the first edge answers, how long the client waits for the others to connect.
/// Handshakes on one machine take milliseconds; a slower edge is tried after the ones that
/// answered.
pub const CLIENT_CONNECT_GRACE: Duration = Duration::from_millis(300);

/// How long one election message may take to be acknowledged before it is abandoned (the
/// protocol tolerates loss; a retry would only be stale).
pub const ELECTION_SEND_TIMEOUT: Duration = Duration::from_millis(1000);

/// How often an edge pings each peer to measure round-trip time.
pub const PING_INTERVAL: Duration = Duration::from_millis(1000);

/// A peer ping that takes longer than this counts as lost.
pub const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long establishing a QUIC connection may take; a stopped cluster is reported this fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection with no traffic for this long is closed by QUIC itself.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keep-alive interval, well under [`IDLE_TIMEOUT`], so pooled connections stay open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Per-stream receive window: a whole sample image fits without waiting for credit.
pub const STREAM_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;

/// Per-connection receive window and send window.
pub const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Socket buffer size requested from the kernel for every endpoint.
pub const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;
