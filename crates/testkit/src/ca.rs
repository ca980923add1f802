//! One test CA per test binary, and credentials issued from it per role.

use std::sync::OnceLock;

use net::tls::Credentials;
use wire::pki::ClusterCa;
use wire::{OriginSigner, Role};

/// One CA for every test in the binary; certificates are issued per test from it.
pub fn test_ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| ClusterCa::generate().expect("generating the test CA"))
}

/// Fresh credentials for `role`, signed by [`test_ca`].
pub fn credentials(role: Role) -> Credentials {
    Credentials::issue(test_ca(), role).expect("issuing a test certificate")
}

/// A signer of image metadata with a fresh canonical certificate from [`test_ca`], for
/// origins a test makes itself: every edge and client accepts what it signs.
pub fn origin_signer() -> OriginSigner {
    credentials(Role::Canonical)
        .origin_signer()
        .expect("a canonical certificate signs")
}

/// A pool dialling from a fresh socket on 127.0.0.1 with `credentials`, checking images
/// against the canonical's signature as every member does.
pub fn pool_with(credentials: &Credentials) -> net::Pool {
    let socket = net::bind_udp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("binding a test socket");
    let endpoint = net::endpoint(socket, credentials, false).expect("a test endpoint");
    net::Pool::new(endpoint, credentials.origin_trust())
}
