//! Mutual TLS from the cluster CA: loading credentials from disk and building QUIC configs that
//! accept only peers signed by the CA. Making the CA and issuing certificates is `wire::pki`.
//!
//! A peer's role is the DNS name in its certificate (`node-3.flotilla`, `canonical.flotilla`,
//! `client.flotilla`). Servers are dialled by that name, not by host name, so a certificate
//! stays valid whatever the container or host is called.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use wire::limits;
use wire::pki::{ClusterCa, PkiError, CA_FILE, CERT_FILE, KEY_FILE};
use wire::{OriginSigner, OriginTrust, Role, ALPN};

/// A TLS setup or verification failure.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
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
    #[error("the cluster CA certificate: {0}")]
    Ca(#[from] wire::SealError),
    #[error("only the canonical signs image metadata, and this is the {0} certificate")]
    NotCanonical(Role),
    #[error("the canonical cannot sign image metadata: {0}")]
    Signer(#[from] wire::origin::SignerError),
}

/// What a process needs to speak mutual TLS: the CA to trust, its own chain and key; and,
/// anchored at the same CA, the check of the canonical's signature on image metadata.
pub struct Credentials {
    /// Role named by our own certificate.
    pub role: Role,
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    origin: Arc<OriginTrust>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            role: self.role,
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            origin: self.origin.clone(),
        }
    }
}

impl Credentials {
    /// Issues a certificate for `role` from `ca` and bundles it with the CA, ready to use.
    pub fn issue(ca: &ClusterCa, role: Role) -> Result<Credentials, TlsError> {
        let issued = ca.issue(role)?;
        Credentials::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem)
    }

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
        let origin = Arc::new(OriginTrust::from_ca_der(&ca)?);
        Ok(Credentials {
            role,
            ca,
            chain,
            key,
            origin,
        })
    }

    /// The check of the canonical's signature on image metadata, anchored at our CA. Shared:
    /// it remembers the canonical certificates it has checked.
    pub fn origin_trust(&self) -> Arc<OriginTrust> {
        self.origin.clone()
    }

    /// The signer of image metadata: our certificate and key, for the canonical only.
    pub fn origin_signer(&self) -> Result<OriginSigner, TlsError> {
        if self.role != Role::Canonical {
            return Err(TlsError::NotCanonical(self.role));
        }
        let leaf = self.chain.first().ok_or(TlsError::NoPeerCertificate)?;
        Ok(OriginSigner::from_der(leaf, self.key.secret_der())?)
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

    /// QUIC server config that requires a client certificate signed by the cluster CA, with
    /// the edges' stream limit and send window.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        self.server_config_with(
            limits::MAX_CONCURRENT_STREAMS,
            limits::CONNECTION_WINDOW.into(),
        )
    }

    /// [`Credentials::server_config`] granting each peer at most `streams_per_connection`
    /// concurrent streams and buffering at most `send_window` unacknowledged bytes per
    /// connection (the canonical's tighter bounds).
    pub fn server_config_with(
        &self,
        streams_per_connection: u32,
        send_window: u64,
    ) -> Result<quinn::ServerConfig, TlsError> {
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
        let mut transport = transport_parameters();
        transport
            .max_concurrent_bidi_streams(streams_per_connection.into())
            .send_window(send_window);
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// QUIC client config that presents our certificate and trusts only the cluster CA.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        self.client_config_keeping_alive(limits::KEEP_ALIVE)
    }

    /// As [`Credentials::client_config`], with a keep-alive of `every`: after that long without
    /// a packet from the peer, one it must acknowledge is sent. The client uses a short one to
    /// tell a silent edge from a live one (`limits::CLIENT_SILENT_EDGE`).
    pub fn client_config_keeping_alive(
        &self,
        every: Duration,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.enable_early_data = false;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = transport_parameters();
        transport.keep_alive_interval(Some(every));
        config.transport_config(Arc::new(transport));
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
fn transport_parameters() -> quinn::TransportConfig {
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
    transport
}

/// The role named by a verified certificate (the rule is `wire::pki::role_of_der`).
pub fn role_of_certificate(cert: &CertificateDer<'_>) -> Result<Role, TlsError> {
    wire::pki::role_of_der(cert).ok_or(TlsError::UnknownRole)
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
    use wire::NodeIndex;

    #[test]
    fn issued_certificates_carry_their_role() {
        let ca = ClusterCa::generate().unwrap();
        let credentials = Credentials::issue(&ca, Role::Node(NodeIndex(3))).unwrap();
        assert_eq!(credentials.role, Role::Node(NodeIndex(3)));
        let reloaded = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(
            Credentials::issue(&reloaded, Role::Client).unwrap().role,
            Role::Client
        );
        credentials.server_config().unwrap();
        credentials.client_config().unwrap();
    }

    #[test]
    fn only_the_canonical_gets_a_signer_and_everyone_verifies_it() {
        let ca = ClusterCa::generate().unwrap();
        let node = Credentials::issue(&ca, Role::Node(NodeIndex(2))).unwrap();
        assert!(matches!(
            node.origin_signer(),
            Err(TlsError::NotCanonical(Role::Node(_)))
        ));
        let canonical = Credentials::issue(&ca, Role::Canonical).unwrap();
        let meta = wire::ImageMeta {
            id: wire::ImageId(1),
            size: 3,
            content_type: "image/png".into(),
            digest: wire::Digest::of(b"png"),
        };
        let signed = canonical.origin_signer().unwrap().sign(meta).unwrap();
        node.origin_trust().verify(signed).unwrap();
    }
}
