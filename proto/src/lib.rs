//! Flotilla's wire protocol: the only crate that defines types sent between processes.
//!
//! - [`ids`]: newtypes for node indices, image ids, terms and digests.
//! - [`message`]: requests and responses, one request per bidirectional QUIC stream.
//! - [`election`]: election and heartbeat messages exchanged between edges.
//! - [`frame`]: the length-prefixed CBOR header and the raw image body that follows it.
//! - [`limits`]: every bound a reader enforces, as named constants.
//! - [`tls`]: the cluster CA, per-role certificates and mutual-TLS QUIC configs.
//! - [`net`]: QUIC endpoints and a pool of long-lived connections.
//! - [`server`]: the accept loop shared by the canonical and the edges.
//! - [`cluster`]: the `.cluster/cluster.toml` description shared by xtask and the client.
//! - [`routing`]: rendezvous hashing that clients and the leader agree on.
//! - [`metrics`]: a per-process Prometheus registry and its HTTP exposition.

pub mod cluster;
pub mod election;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod message;
pub mod metrics;
pub mod net;
pub mod routing;
pub mod server;
pub mod signals;

/// Logging set-up shared by the binaries.
pub mod logging {
    /// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`), in colour only on a
    /// terminal so container logs and log files stay plain text.
    pub fn init(default_filter: &str) {
        use tracing_subscriber::EnvFilter;
        tracing_subscriber::fmt()
            .with_env_filter(
                EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| EnvFilter::new(default_filter)),
            )
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
pub mod tls;

pub use ids::{Digest, ImageId, NodeIndex, Term};
pub use message::{
    CacheOutcome, ElectionRole, ErrorKind, ImageMeta, NodeStatus, Request, Response,
};
pub use tls::Role;

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
