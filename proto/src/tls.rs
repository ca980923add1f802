//! Mutual TLS from the cluster CA: making the CA, issuing one certificate per role, loading
//! credentials from disk, and building QUIC configs that accept only peers signed by the CA.
//!
//! A peer's role is the DNS name in its certificate (`node-3.flotilla`, `canonical.flotilla`,
//! `client.flotilla`). Servers are dialled by that name, not by host name, so a certificate
//! stays valid whatever the container or host is called.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::ids::NodeIndex;
use crate::limits;
use crate::ALPN;

/// Suffix of every Flotilla certificate name.
const NAME_SUFFIX: &str = ".flotilla";

/// A TLS setup or verification failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not valid PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("rustls rejected the configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("QUIC rejected the TLS configuration: {0}")]
    Quic(String),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate names no flotilla role")]
    UnknownRole,
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
}

impl Role {
    /// Short stem: `node-3`, `canonical`, `client`.
    pub fn stem(&self) -> String {
        match self {
            Role::Node(index) => format!("node-{index}"),
            Role::Canonical => "canonical".to_string(),
            Role::Client => "client".to_string(),
        }
    }

    /// The DNS name in this role's certificate, and the name servers are dialled by.
    pub fn server_name(&self) -> String {
        format!("{}{NAME_SUFFIX}", self.stem())
    }

    /// Parses a certificate DNS name back into a role.
    pub fn from_server_name(name: &str) -> Option<Role> {
        let stem = name.strip_suffix(NAME_SUFFIX)?;
        match stem {
            "canonical" => Some(Role::Canonical),
            "client" => Some(Role::Client),
            _ => {
                let index: u16 = stem.strip_prefix("node-")?.parse().ok()?;
                (index > 0).then_some(Role::Node(NodeIndex(index)))
            }
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stem())
    }
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
    pub fn generate() -> Result<ClusterCa, TlsError> {
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
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TlsError> {
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
    pub fn issue(&self, role: Role) -> Result<IssuedCert, TlsError> {
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

    /// Issues a certificate for `role` and bundles it with the CA as ready-to-use credentials.
    pub fn credentials(&self, role: Role) -> Result<Credentials, TlsError> {
        let issued = self.issue(role)?;
        Credentials::from_pem(&self.cert_pem, &issued.cert_pem, &issued.key_pem)
    }
}

/// File names inside a credentials folder.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// What a process needs to speak mutual TLS: the CA to trust, its own chain and key.
pub struct Credentials {
    /// Role named by our own certificate.
    pub role: Role,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            role: self.role,
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Credentials {
    /// Parses PEM text of the CA certificate, our certificate and our key.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Credentials, TlsError> {
        let pem_error = |what| {
            move |error: rustls_pki_types::pem::Error| TlsError::Pem {
                what,
                detail: error.to_string(),
            }
        };
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(pem_error("the CA certificate"))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem_error("the certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(pem_error("the private key"))?;
        let leaf = chain.first().ok_or(TlsError::Pem {
            what: "the certificate",
            detail: "no certificate found".to_string(),
        })?;
        let role = role_of_certificate(leaf)?;
        Ok(Credentials {
            role,
            ca,
            chain,
            key,
        })
    }

    /// Loads `ca.pem`, `cert.pem` and `key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Credentials, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        Credentials::from_pem(&read(CA_FILE)?, &read(CERT_FILE)?, &read(KEY_FILE)?)
    }

    /// QUIC server config that requires a client certificate signed by the cluster CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let provider = crypto_provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        // No 0-RTT: replayable requests are not worth the saved round trip here.
        tls.max_early_data_size = 0;
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport_config());
        Ok(config)
    }

    /// QUIC client config that presents our certificate and trusts only the cluster CA.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = false;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport_config());
        Ok(config)
    }

    /// A secret derived from our private key, stable across restarts: the key for QUIC
    /// stateless resets. A restarted node computes the same reset tokens as its previous
    /// instance, so peers still holding a connection to that instance learn at their next
    /// packet that it is gone, instead of waiting for the idle timeout.
    pub fn reset_secret(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"flotilla stateless reset key v1");
        hasher.update(self.key.secret_der());
        hasher.finalize().into()
    }

    fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(roots)
    }
}

/// The ring provider with AES-128-GCM first: the cheapest suite with AES-NI.
fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// Transport parameters shared by every endpoint; see [`limits`] for why each bound is what it is.
fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits::MAX_CONCURRENT_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(limits::STREAM_RECEIVE_WINDOW.into())
        .receive_window(limits::CONNECTION_WINDOW.into())
        .send_window(limits::CONNECTION_WINDOW.into())
        .keep_alive_interval(Some(limits::KEEP_ALIVE))
        .max_idle_timeout(
            // 10 s always fits a QUIC idle timeout (the limit is 2^62 ms).
            Some(
                limits::IDLE_TIMEOUT
                    .try_into()
                    .expect("idle timeout fits a VarInt"),
            ),
        );
    Arc::new(transport)
}

/// The role named by a verified certificate.
pub fn role_of_certificate(cert: &CertificateDer<'_>) -> Result<Role, TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|_| TlsError::UnknownRole)?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|_| TlsError::UnknownRole)?
        .ok_or(TlsError::UnknownRole)?;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Role::from_server_name(dns),
            _ => None,
        })
        .ok_or(TlsError::UnknownRole)
}

/// The role of the peer on an established connection, from its (already verified) certificate.
pub fn peer_role(connection: &quinn::Connection) -> Result<Role, TlsError> {
    let identity = connection
        .peer_identity()
        .ok_or(TlsError::NoPeerCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCertificate)?;
    role_of_certificate(chain.first().ok_or(TlsError::NoPeerCertificate)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for role in [Role::Node(NodeIndex(12)), Role::Canonical, Role::Client] {
            assert_eq!(Role::from_server_name(&role.server_name()), Some(role));
        }
        assert_eq!(Role::from_server_name("node-0.flotilla"), None);
        assert_eq!(Role::from_server_name("node-x.flotilla"), None);
        assert_eq!(Role::from_server_name("example.com"), None);
    }

    #[test]
    fn issued_certificates_carry_their_role() {
        let ca = ClusterCa::generate().unwrap();
        let credentials = ca.credentials(Role::Node(NodeIndex(3))).unwrap();
        assert_eq!(credentials.role, Role::Node(NodeIndex(3)));
        let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(
            reloaded.credentials(Role::Client).unwrap().role,
            Role::Client
        );
        credentials.server_config().unwrap();
        credentials.client_config().unwrap();
    }
}
