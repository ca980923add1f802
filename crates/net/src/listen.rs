//! Where a server's socket comes from: an address to bind at start, or a socket that is bound
//! already. Tests bind every member's socket before starting any, so each peer's address is
//! known up front and no port is released and bound again in between (which races).

use std::net::SocketAddr;

/// A socket to serve on.
#[derive(Debug)]
pub enum Listen<S> {
    /// Bind this address when the server starts (port 0 picks a free one).
    Address(SocketAddr),
    /// Serve on this socket, bound by the caller.
    Bound(S),
}

/// The QUIC (UDP) socket of a server.
pub type QuicListen = Listen<std::net::UdpSocket>;

/// The metrics (TCP) socket of a server.
pub type MetricsListen = Listen<std::net::TcpListener>;

impl<S> From<SocketAddr> for Listen<S> {
    fn from(address: SocketAddr) -> Self {
        Listen::Address(address)
    }
}

impl QuicListen {
    /// The address to name in messages: the one asked for, or the one bound.
    pub fn address(&self) -> SocketAddr {
        match self {
            Listen::Address(address) => *address,
            Listen::Bound(socket) => socket
                .local_addr()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }
}

impl MetricsListen {
    /// The address to name in messages: the one asked for, or the one bound.
    pub fn address(&self) -> SocketAddr {
        match self {
            Listen::Address(address) => *address,
            Listen::Bound(listener) => listener
                .local_addr()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }
}
