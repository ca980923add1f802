//! One test CA per test binary, and credentials issued from it per role.

use std::sync::OnceLock;

use net::tls::Credentials;
use wire::pki::ClusterCa;
use wire::Role;

/// One CA for every test in the binary; certificates are issued per test from it.
pub fn test_ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| ClusterCa::generate().expect("generating the test CA"))
}

/// Fresh credentials for `role`, signed by [`test_ca`].
pub fn credentials(role: Role) -> Credentials {
    Credentials::issue(test_ca(), role).expect("issuing a test certificate")
}
