//! The cluster's public-key infrastructure without any network stack: the roles a certificate
//! can name, making the cluster CA and issuing one certificate per role (rcgen).
//!
//! A peer's role is the DNS name in its certificate (`node-3.flotilla`, `canonical.flotilla`,
//! `client.flotilla`). Servers are dialled by that name, not by host name, so a certificate
//! stays valid whatever the container or host is called.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::ids::NodeIndex;

/// Suffix of every Flotilla certificate name.
const NAME_SUFFIX: &str = ".flotilla";

/// A failure to make the CA or issue a certificate.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Who a certificate belongs to. Authorization decisions use this, never message fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Edge node with this index.
    Node(NodeIndex),
    /// The canonical origin.
    Canonical,
    /// A user's client.
    Client,
    /// The operator's tools on the manager: the only role that may set network faults in a
    /// member's socket ([`crate::message::Request::NetFaults`]).
    Operator,
}

impl Role {
    /// Short stem: `node-3`, `canonical`, `client`.
    pub fn stem(&self) -> String {
        match self {
            Role::Node(index) => format!("node-{index}"),
            Role::Canonical => "canonical".to_string(),
            Role::Client => "client".to_string(),
            Role::Operator => "operator".to_string(),
        }
    }

    /// The DNS name in this role's certificate, and the name servers are dialled by.
    pub fn server_name(&self) -> String {
        format!("{}{NAME_SUFFIX}", self.stem())
    }

    /// Parses a certificate DNS name back into a role. Only the spelling [`Role::server_name`]
    /// writes is accepted: `node-0497.flotilla` or `node-+497.flotilla` would otherwise name
    /// node 497 too, so one identity would have several names.
    pub fn from_server_name(name: &str) -> Option<Role> {
        let stem = name.strip_suffix(NAME_SUFFIX)?;
        match stem {
            "canonical" => Some(Role::Canonical),
            "client" => Some(Role::Client),
            "operator" => Some(Role::Operator),
            _ => {
                let digits = stem.strip_prefix("node-")?;
                let index: u16 = digits.parse().ok()?;
                (index > 0 && index.to_string() == digits).then_some(Role::Node(NodeIndex(index)))
            }
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stem())
    }
}

/// The role a parsed certificate names: the first DNS name among its subject alternative names
/// that is a Flotilla role name. The one rule for TLS peers (`net::tls`) and origin seals
/// ([`crate::origin`]).
pub fn role_of_certificate(certificate: &X509Certificate<'_>) -> Option<Role> {
    let names = certificate.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(dns) => Role::from_server_name(dns),
            _ => None,
        })
}

/// The role a certificate in DER names, by [`role_of_certificate`]; `None` when the bytes are
/// not a certificate or it names no role. What a TLS peer's certificate becomes
/// (`net::tls::role_of_certificate`), so the same bytes are fuzzed (`fuzz/`).
pub fn role_of_der(certificate: &[u8]) -> Option<Role> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    role_of_certificate(&parsed)
}

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA: a self-signed ECDSA P-256 certificate that signs every other one.
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl ClusterCa {
    /// Makes a fresh CA.
    pub fn generate() -> Result<ClusterCa, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Flotilla cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads an existing CA from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM. Only the launcher keeps it.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a leaf certificate for `role`, usable both as TLS server and client.
    pub fn issue(&self, role: Role) -> Result<IssuedCert, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![role.server_name()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, role.stem());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// File names inside a credentials folder.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in [
            Role::Node(NodeIndex(12)),
            Role::Canonical,
            Role::Client,
            Role::Operator,
        ] {
            assert_eq!(Role::from_server_name(&role.server_name()), Some(role));
        }
        assert_eq!(Role::from_server_name("node-0.flotilla"), None);
        assert_eq!(Role::from_server_name("node-x.flotilla"), None);
        assert_eq!(Role::from_server_name("node-0497.flotilla"), None);
        assert_eq!(Role::from_server_name("node-+497.flotilla"), None);
        assert_eq!(Role::from_server_name("example.com"), None);
    }

    #[test]
    fn a_reloaded_ca_keeps_its_certificate() {
        let ca = ClusterCa::generate().unwrap();
        let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        let issued = reloaded.issue(Role::Client).unwrap();
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
