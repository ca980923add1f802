//! Every bound a Flotilla reader enforces, in one place.

use std::time::Duration;

/// Largest CBOR header accepted on a stream. Headers carry ids, metadata and status tables,
/// never image bodies, so 64 KiB leaves ample room for a 64-node status reply.
pub const MAX_HEADER_BYTES: u32 = 64 * 1024;

/// Largest image body accepted or served. Sample images are at most a few MB; this bounds the
/// memory one request can make a receiver allocate.
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

/// Concurrent bidirectional streams a peer may open on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How long a reader waits for a request or response header before giving up on the stream.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole request (header, body and all) may take before the caller gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

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
