//! Requests and responses. Each request travels on its own bidirectional QUIC stream:
//! a [`Request`] header, then (for [`Request::Replicate`]) the raw body; the reply is a
//! [`Response`] header, then (for [`Response::Image`]) the raw body.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::election::ElectionMessage;
use crate::ids::{Digest, ImageId, NodeIndex, Term};
use crate::netfault::NetFaults;
use crate::origin::SignedMeta;

/// What a peer asks for. Which peers may send which request is decided by the role in their
/// certificate ([`crate::Role`]), never by a field in the message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// The image with this id; answered by [`Response::Image`] and the body.
    GetImage { id: ImageId },
    /// The size of the image, from metadata only; answered by [`Response::Size`].
    ImageSize { id: ImageId },
    /// The node's status table row; answered by [`Response::Status`].
    Status,
    /// Liveness probe; answered by [`Response::Pong`].
    Ping,
    /// An election or heartbeat message (edges only); answered by [`Response::Ack`].
    Election(ElectionMessage),
    /// The leader of `term` pushes an image to a follower (edges only) with the metadata the
    /// canonical signed; the body follows the header.
    Replicate { term: Term, meta: SignedMeta },
    /// Replace the faults in the receiver's UDP socket (operators only; the default clears
    /// them); answered by [`Response::Ack`].
    NetFaults(NetFaults),
}

impl Request {
    /// How long the sender waits for the reply header. An image may have to be fetched
    /// upstream before the header can be sent, so a `GetImage` gets the edge's whole upstream
    /// budget plus a hop; a size may be asked of the canonical, a replica's body is read first;
    /// everything else is answered from memory.
    pub fn reply_timeout(&self) -> std::time::Duration {
        use crate::limits::{HEADER_TIMEOUT, HOP_ALLOWANCE, REQUEST_TIMEOUT, UPSTREAM_BUDGET};
        match self {
            Request::GetImage { .. } => UPSTREAM_BUDGET + HOP_ALLOWANCE,
            // The receiver reads a whole replica body before it acknowledges.
            Request::ImageSize { .. } | Request::Replicate { .. } => REQUEST_TIMEOUT,
            Request::Status | Request::Ping | Request::Election(_) | Request::NetFaults(_) => {
                HEADER_TIMEOUT
            }
        }
    }

    /// Short name used in logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::GetImage { .. } => "get_image",
            Request::ImageSize { .. } => "image_size",
            Request::Status => "status",
            Request::Ping => "ping",
            Request::Election(_) => "election",
            Request::Replicate { .. } => "replicate",
            Request::NetFaults(_) => "net_faults",
        }
    }
}

/// Metadata of one image, carried with every transfer (signed by the canonical, see
/// [`SignedMeta`]) so the receiver can verify the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub id: ImageId,
    /// Exact body length in bytes.
    pub size: u64,
    /// MIME type, e.g. `image/png`.
    pub content_type: String,
    /// SHA-256 of the body; receivers verify it before caching or returning bytes.
    pub digest: Digest,
}

impl ImageMeta {
    /// File extension matching the content type, used when the client saves the image.
    pub fn extension(&self) -> &'static str {
        extension_for(&self.content_type)
    }
}

/// File extension for a MIME type (`bin` when unknown).
pub fn extension_for(content_type: &str) -> &'static str {
    match content_type {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "image/svg+xml" => "svg",
        "text/plain" => "txt",
        _ => "bin",
    }
}

/// MIME type for a file extension (`application/octet-stream` when unknown).
pub fn content_type_for(extension: &str) -> &'static str {
    match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// How an edge produced the image it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheOutcome {
    /// Served from this edge's cache.
    Hit,
    /// Fetched (from the leader or the canonical) because it was not cached.
    Miss,
    /// Waited on a fetch another request had already started.
    Coalesced,
    /// Served by the canonical origin itself.
    Origin,
}

impl fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CacheOutcome::Hit => "cache hit",
            CacheOutcome::Miss => "cache miss",
            CacheOutcome::Coalesced => "cache miss (coalesced)",
            CacheOutcome::Origin => "origin",
        })
    }
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// No image with that id exists on the canonical.
    NotFound,
    /// The request could not be decoded or made no sense.
    BadRequest,
    /// The peer's certificate does not allow this request.
    Forbidden,
    /// A body did not match its digest.
    DigestMismatch,
    /// Something the server depends on is unreachable; retrying elsewhere may help.
    Unavailable,
    /// The image is not cached here and the canonical did not answer (the edge, or its leader,
    /// could not reach it). Another edge would ask the same canonical, so only one that may
    /// already hold the image is worth asking.
    OriginUnavailable,
    /// A request from an older election term.
    StaleTerm,
    /// A replica pushed by an edge that does not lead the receiver's current term.
    NotLeader,
    /// Image metadata without a valid signature of the cluster's canonical.
    BadSignature,
    /// A bug or local failure on the server.
    Internal,
}

/// Election role of an edge, as reported by `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElectionRole {
    Leader,
    Follower,
    Candidate,
}

impl fmt::Display for ElectionRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ElectionRole::Leader => "leader",
            ElectionRole::Follower => "follower",
            ElectionRole::Candidate => "candidate",
        })
    }
}

/// One edge's view of itself, as returned by [`Request::Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub index: NodeIndex,
    pub name: String,
    pub role: ElectionRole,
    pub term: Term,
    pub leader: Option<NodeIndex>,
    pub cache_items: u64,
    pub cache_bytes: u64,
    pub cache_capacity_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Smoothed round-trip time to each peer edge (and the canonical as index 0), in ms.
    pub peer_rtt_ms: BTreeMap<u16, f64>,
    /// Ids of the cached images, most recently used first, truncated to a few dozen.
    pub cached_ids: Vec<ImageId>,
}

/// A reply header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The image follows as exactly `meta.meta.size` raw bytes; `meta` is what the canonical
    /// signed.
    Image {
        meta: SignedMeta,
        /// Name of the process that served it, e.g. `flotilla_node_2`.
        served_by: String,
        outcome: CacheOutcome,
    },
    /// Answer to [`Request::ImageSize`].
    Size { id: ImageId, size: u64 },
    /// Answer to [`Request::Status`].
    Status(NodeStatus),
    /// Answer to [`Request::Ping`], naming the responder.
    Pong { name: String },
    /// The request was accepted (election messages, replication pushes).
    Ack,
    /// The request failed; `message` is one line meant for a human.
    Error { kind: ErrorKind, message: String },
}
