//! Flotilla's wire protocol: the only crate that defines types sent between processes, and the
//! files and rows other processes read (`cluster.toml`, the status JSON).
//!
//! - [`ids`]: newtypes for node indices, image ids, terms and digests.
//! - [`message`]: requests and responses, one request per bidirectional QUIC stream.
//! - [`election`]: election and heartbeat messages exchanged between edges.
//! - [`frame`]: the length-prefixed CBOR header and the raw image body that follows it.
//! - [`limits`]: every bound a reader enforces, as named constants.
//! - [`origin`]: the canonical's signature over image metadata, and its verification.
//! - [`pki`]: certificate roles, the cluster CA and issuing certificates (rcgen, no TLS stack).
//! - [`cluster`]: the `.cluster/cluster.toml` description shared by xtask and the client.
//! - [`routing`]: rendezvous hashing that clients and the leader agree on.
//! - [`status`]: one row of `client status --json` / `client ping --json`.
//! - [`fuzzing`]: the properties the fuzzers (`fuzz/`) and the corpus replay check.
//!
//! No tokio, no quinn, no rustls: the network stack over these types is the `net` crate.

pub mod cluster;
pub mod election;
pub mod frame;
pub mod fuzzing;
pub mod history;
pub mod ids;
pub mod limits;
pub mod message;
pub mod netfault;
pub mod origin;
pub mod pki;
pub mod routing;
pub mod status;

pub use ids::{Digest, DigestBuilder, ImageId, NodeIndex, Term};
pub use message::{
    CacheOutcome, ElectionRole, ErrorKind, ImageMeta, NodeStatus, Request, Response,
};
pub use netfault::NetFaults;
pub use origin::{OriginSeal, OriginSigner, OriginTrust, SealError, SignedMeta, VerifiedMeta};
pub use pki::Role;

/// The ALPN protocol id every Flotilla QUIC connection negotiates.
pub const ALPN: &[u8] = b"flotilla/1";

/// An error and its causes as one line, skipping causes whose text the line already holds
/// (many errors here quote their source). Every binary prints failures through this.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(error);
    while let Some(current) = cause {
        let text = current.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}
