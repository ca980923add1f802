//! Flotilla's network stack over the `wire` types: mutual TLS from the cluster CA, QUIC
//! endpoints, a pool of long-lived connections with typed calls, the accept loop shared by the
//! canonical and the edges, the Prometheus endpoint, logging and signals.
//!
//! - [`tls`]: credentials from disk, rustls/quinn configs, the peer's role from its certificate.
//! - [`calls`]: one typed method per request kind on the pool (`ping`, `status`, `get_image`, …).
//! - [`faults`]: the fault layer in a server's UDP socket (drops, delay, loss), set by operators.
//! - [`frame`]: async header and body readers over `wire::frame`'s codec.
//! - [`pool`]: QUIC endpoints and [`Pool`](pool::Pool), one connection per peer, a stream per call.
//! - [`listen`]: an address to bind, or a socket bound already (tests pre-bind every member).
//! - [`server`]: binding a member (QUIC and metrics) and the accept loop.
//! - [`metrics`]: a per-process Prometheus registry and its HTTP exposition.
//! - [`logging`], [`signals`]: what every binary sets up first.

pub mod calls;
pub mod faults;
pub mod frame;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod server;
pub mod signals;
pub mod tls;

pub use calls::{CallError, DrainedReply, ImageReply};
pub use faults::SocketFaults;
pub use listen::{Listen, MetricsListen, QuicListen};
pub use pool::{bind_udp, endpoint, Exchange, NetError, Pool, Target};
pub use tls::{Credentials, TlsError};
