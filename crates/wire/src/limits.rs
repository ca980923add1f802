//! Every bound and timeout in Flotilla, in one place. Timeouts compose: an edge's whole
//! upstream fetch has one budget ([`UPSTREAM_BUDGET`]) that covers waiting for the leader's own
//! origin fetch, so a slow origin never makes an edge bypass a live leader.

use std::time::Duration;

/// Largest CBOR header accepted on a stream. Headers carry ids, metadata and status tables,
/// never image bodies, so 64 KiB leaves ample room for a 64-node status reply.
pub const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// Longest reason a decoder gives for refusing bytes, in characters. A malformed header can
/// quote itself into the reason (an unknown variant's name), which goes into an error reply
/// and a log line; the quote is made printable and cut to this.
pub const MAX_REFUSAL_CHARS: usize = 256;

/// Largest image body accepted or served. Sample images are at most a few MB; this bounds the
/// memory one request can make a receiver allocate.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest catalog file the canonical reads: about a hundred bytes per image, so a million
/// images; a larger file is refused as damaged rather than read into memory.
pub const MAX_CATALOG_BYTES: u64 = 128 * 1024 * 1024;

/// Canonical certificates an [`OriginTrust`](crate::origin::OriginTrust) remembers as checked
/// against the CA. A cluster has one canonical; a few leave room for a re-issued certificate
/// while images sealed by the old one are still cached.
pub const MAX_ORIGIN_CERTIFICATES: usize = 4;

/// Origin seals an [`OriginTrust`](crate::origin::OriginTrust) remembers as verified (32 bytes
/// each): enough for a client's or an edge's working set of images, so fetching one again
/// skips the ECDSA verify; past it the memory is cleared and rebuilt.
pub const MAX_VERIFIED_SEALS: usize = 8192;

/// Concurrent bidirectional streams a peer may open on one connection to an edge. Edges
/// answer from a cache of refcounted bodies, so a held stream costs them no copy of an image.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Concurrent bidirectional streams a peer may open on one connection to the canonical. Each
/// open image reply holds at most one [`BODY_CHUNK_BYTES`] chunk, so one connection holds at
/// most 4 MiB of bodies; an edge's concurrent origin fetches (one per missing id, coalesced)
/// queue for a stream beyond this rather than fail.
pub const ORIGIN_STREAMS_PER_CONNECTION: u32 = 64;

/// Connections a server holds at once, handshaking or open, from all peers together: the
/// accept loop refuses more before doing any handshake work for them.
pub const MAX_CONNECTIONS: usize = 1024;

/// Connections one peer (certificate role and IP address) may hold open to the canonical at
/// once. A peer needs one (the pool keeps one per peer); a few more cover restarts and
/// short-lived CLI runs. The newest connection wins: the oldest is closed, so a client that
/// reconnects is never locked out by its own stale connections.
pub const ORIGIN_CONNECTIONS_PER_PEER: usize = 8;

/// Connections one peer may hold open to an edge at once; looser than the canonical's because
/// every CLI run on a host shares the client certificate and, through Docker's published
/// ports, one source address.
pub const EDGE_CONNECTIONS_PER_PEER: usize = 64;

/// Bytes of an image body the canonical reads from disk, hashes and hands to a stream at a
/// time (and the slice an edge writes a cached body in). What a stalled reader can pin per
/// stream on the sending side.
pub const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// Longest a reply waits for its reader to take the next [`BODY_CHUNK_BYTES`] chunk before
/// the stream is reset and its buffers freed.
pub const SEND_STALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The slowest reader a reply keeps serving, in bytes per second: one chunk per
/// [`SEND_STALL_TIMEOUT`] (32 KiB/s). A reader that takes chunks more slowly is reset.
pub const MIN_SEND_BYTES_PER_SECOND: u64 = BODY_CHUNK_BYTES as u64 / SEND_STALL_TIMEOUT.as_secs();

/// Per-connection send window of the canonical: the most reply bytes QUIC buffers for one
/// connection before they are acknowledged. 16 MiB still fills a 100 ms path at 160 MB/s.
pub const ORIGIN_SEND_WINDOW: u64 = 16 * 1024 * 1024;

/// How long a reader waits for a request or response header before giving up on the stream.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole request (header, body and all) may take before the caller gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one fetch of an image from the canonical may take (header and body).
pub const ORIGIN_FETCH_TIMEOUT: Duration = Duration::from_secs(8);

/// One hop's allowance on top of the work behind it: the leader's reply to an edge travels
/// one more hop than its origin fetch.
pub const HOP_ALLOWANCE: Duration = Duration::from_secs(1);

/// Longest a server spends sending one image reply (header and body, counted from when the
/// image is ready), however steadily its reader takes chunks. By then the reader has given
/// up: an edge gives a whole origin fetch [`ORIGIN_FETCH_TIMEOUT`], a client gives an edge
/// [`CLIENT_ATTEMPT_TIMEOUT`], and an edge waiting on its leader gets the rest of
/// [`UPSTREAM_BUDGET`], which this plus the leader's own origin fetch covers.
pub const REPLY_SEND_DEADLINE: Duration =
    Duration::from_secs(ORIGIN_FETCH_TIMEOUT.as_secs() + HOP_ALLOWANCE.as_secs());

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

/// How long an edge may send the client nothing at all, while a request to it is under way,
/// before the client takes it for gone and asks the next edge. A live edge acknowledges within
/// a round trip and QUIC's acknowledgement delay (25 ms) even while it waits on its origin, and
/// the client's keep-alive ([`CLIENT_KEEP_ALIVE`]) makes it answer again whenever it has been
/// quiet; a killed or paused container sends nothing, and without this the client waited the
/// whole [`CLIENT_ATTEMPT_TIMEOUT`] on it. On a slow path the bound is stretched to
/// [`CLIENT_SILENT_RTTS`] round trips.
pub const CLIENT_SILENT_EDGE: Duration = Duration::from_millis(500);

/// Round trips of silence, on a path slower than [`CLIENT_SILENT_EDGE`] allows for, before the
/// client takes an edge for gone.
pub const CLIENT_SILENT_RTTS: u32 = 4;

/// The client's keep-alive: after this long without a packet from an edge it sends one that
/// the edge must acknowledge, so a live edge is never silent for long (see
/// [`CLIENT_SILENT_EDGE`]). A few dozen bytes each, to a handful of edges.
pub const CLIENT_KEEP_ALIVE: Duration = Duration::from_millis(150);

/// How long an edge that failed a request is asked only after the others; then it gets its
/// place in routing order back, so a restarted edge takes its share of reads again.
pub const CLIENT_DOWN_RETRY: Duration = Duration::from_secs(2);

/// Longest the console's `get` waits for a whole image from its node: the edge's upstream
/// budget plus the time it may take to send the reply. A header alone is bounded by the
/// request's reply timeout; this also bounds a body that trickles in, so the prompt returns.
pub const CONSOLE_GET_TIMEOUT: Duration =
    Duration::from_secs(UPSTREAM_BUDGET.as_secs() + REPLY_SEND_DEADLINE.as_secs());

/// Edges the client still asks for an image after one answered that the canonical did not
/// answer it (`ErrorKind::OriginUnavailable`): every edge would ask the same canonical, so only
/// the next in routing order, which the leader replicates the image to, may be worth asking.
pub const CLIENT_EDGES_AFTER_ORIGIN_DOWN: usize = 1;

/// After the first edge answers, how long the client waits for the others to connect.
/// Handshakes on one machine take milliseconds; a slower edge is tried after the ones that
/// answered.
pub const CLIENT_CONNECT_GRACE: Duration = Duration::from_millis(300);

/// How long the client tries a member's bridge address (Docker's container network) before
/// it takes the published port instead: a handshake on one machine takes milliseconds, and
/// where the bridge is unreachable (Docker Desktop) nothing answers at all.
pub const BRIDGE_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long one election message may take to be acknowledged before it is abandoned (the
/// protocol tolerates loss; a retry would only be stale).
pub const ELECTION_SEND_TIMEOUT: Duration = Duration::from_millis(1000);

/// How often an edge pings each peer to measure round-trip time.
pub const PING_INTERVAL: Duration = Duration::from_millis(1000);

/// A peer ping that takes longer than this counts as lost.
pub const PING_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long establishing a QUIC connection may take; a stopped cluster is reported this fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stopping server waits for its connection and stream tasks (replies under way),
/// then for its close to reach peers: a node stops well within a second of SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

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
