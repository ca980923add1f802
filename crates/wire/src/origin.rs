//! Origin-authenticated content: the canonical signs every image's metadata (id, size, content
//! type, SHA-256) with the private key of its own certificate, and every receiver checks that
//! signature, and that the certificate was issued by the cluster CA for the canonical role,
//! before it caches, replicates or returns bytes. The body itself is covered by the signed
//! digest, so it stays raw and is never copied or CBOR-encoded for this.
//!
//! - [`SignedMeta`]: what travels: [`ImageMeta`] and an [`OriginSeal`] (the canonical's
//!   certificate, DER, and an ECDSA P-256 SHA-256 signature over [`signing_input`]).
//! - [`OriginSigner`]: the canonical's side.
//! - [`OriginTrust`]: everyone else's side, anchored at the cluster CA; a certificate that
//!   passed is remembered by its SHA-256 fingerprint, so later images cost one ECDSA verify,
//!   and a seal that passed is remembered too, so the same image again costs two hashes.
//! - [`VerifiedMeta`]: metadata whose seal passed. Only [`OriginTrust::verify`] makes one, so a
//!   cache that holds `VerifiedMeta` can only hold what the canonical published.
//!
//! Pure computation over bytes (ring, x509-parser): no network stack, no clock of its own
//! beyond [`OriginTrust::verify`] reading the wall clock for the certificate's validity.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    ECDSA_P256_SHA256_ASN1_SIGNING,
};
use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256;
use x509_parser::prelude::FromDer;

use crate::ids::Digest;
use crate::limits::{MAX_ORIGIN_CERTIFICATES, MAX_VERIFIED_SEALS};
use crate::message::ImageMeta;
use crate::pki::{role_of_certificate, Role};

/// Domain separation: these bytes start every signed message, so a signature over image
/// metadata can never be taken for a signature over anything else the key might sign
/// (TLS handshakes sign their own, differently prefixed, transcripts).
const SIGNING_CONTEXT: &[u8] = b"flotilla origin image metadata v1\0";

/// The canonical's signature over one image's metadata.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginSeal {
    /// The signing certificate, DER: issued by the cluster CA for `canonical.flotilla`.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// ECDSA P-256 with SHA-256, ASN.1 DER, over [`signing_input`] of the metadata.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for OriginSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = Digest::of(&self.certificate).to_hex();
        write!(
            f,
            "OriginSeal(certificate {}, {}-byte signature)",
            &fingerprint[..16],
            self.signature.len()
        )
    }
}

/// Image metadata as it crosses the wire: what the canonical published and its seal over it.
/// Untrusted until [`OriginTrust::verify`] turns it into a [`VerifiedMeta`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMeta {
    pub meta: ImageMeta,
    pub seal: OriginSeal,
}

/// Metadata whose origin seal verified. There is no other way to make one, so whatever holds
/// a `VerifiedMeta` holds metadata the canonical signed; the body still has to match its
/// digest (`frame::verify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedMeta(SignedMeta);

impl VerifiedMeta {
    /// The metadata and its seal, to send on.
    pub fn signed(&self) -> &SignedMeta {
        &self.0
    }

    /// The metadata and its seal, by value.
    pub fn into_signed(self) -> SignedMeta {
        self.0
    }
}

impl std::ops::Deref for VerifiedMeta {
    type Target = ImageMeta;

    fn deref(&self) -> &ImageMeta {
        &self.0.meta
    }
}

/// The exact bytes the canonical signs for `meta`: a context string, then id, size and digest
/// at fixed widths, then the content type behind its length. Fixed-width fields and one
/// length-prefixed field make the encoding injective without relying on any CBOR encoder
/// being canonical.
pub fn signing_input(meta: &ImageMeta) -> Vec<u8> {
    let content_type = meta.content_type.as_bytes();
    let mut input = Vec::with_capacity(SIGNING_CONTEXT.len() + 8 + 8 + 32 + 4 + content_type.len());
    input.extend_from_slice(SIGNING_CONTEXT);
    input.extend_from_slice(&meta.id.0.to_be_bytes());
    input.extend_from_slice(&meta.size.to_be_bytes());
    input.extend_from_slice(&meta.digest.0);
    // A content type arrives inside a header of at most `MAX_HEADER_BYTES`, so its length
    // always fits; saturating keeps this total without a panic path.
    let length = u32::try_from(content_type.len()).unwrap_or(u32::MAX);
    input.extend_from_slice(&length.to_be_bytes());
    input.extend_from_slice(content_type);
    input
}

/// Why a seal was refused. Each one means the bytes are not served, cached or replicated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the metadata's signing certificate is malformed: {0}")]
    Malformed(String),
    #[error("the metadata's signing certificate was not issued by the cluster CA")]
    UnknownIssuer,
    #[error("the metadata is signed by {0}, not by the canonical")]
    NotCanonical(String),
    #[error("the canonical's signing certificate is not valid at this time")]
    Expired,
    #[error(
        "the signature over image {0}'s metadata does not verify: not what the canonical published"
    )]
    BadSignature(u64),
}

/// A failure to set up signing (only the canonical signs).
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("the signing certificate: {0}")]
    Certificate(String),
    #[error("the signing key is not a PKCS#8 ECDSA P-256 key: {0}")]
    Key(String),
    #[error("the signing key does not belong to the signing certificate")]
    KeyMismatch,
    #[error("signing failed (no randomness?)")]
    Sign,
}

/// The canonical's signer: its certificate and the matching private key.
pub struct OriginSigner {
    certificate: Vec<u8>,
    key: EcdsaKeyPair,
    random: SystemRandom,
}

impl OriginSigner {
    /// A signer from a certificate (DER) and its PKCS#8 private key (DER). Checks that the key
    /// belongs to the certificate; whether the certificate may sign images is the verifiers'
    /// call (and `net::tls::Credentials::origin_signer` only offers the canonical's).
    pub fn from_der(certificate: &[u8], pkcs8_key: &[u8]) -> Result<OriginSigner, SignerError> {
        let (rest, parsed) = X509Certificate::from_der(certificate)
            .map_err(|e| SignerError::Certificate(describe_der_error(e)))?;
        if !rest.is_empty() {
            return Err(SignerError::Certificate(
                "trailing bytes after the certificate".to_string(),
            ));
        }
        let random = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8_key, &random)
            .map_err(|e| SignerError::Key(e.to_string()))?;
        if key.public_key().as_ref() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(SignerError::KeyMismatch);
        }
        Ok(OriginSigner {
            certificate: certificate.to_vec(),
            key,
            random,
        })
    }

    /// A signer from PEM text: a certificate and its PKCS#8 private key.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<OriginSigner, SignerError> {
        let certificate = pem_contents(certificate_pem).map_err(SignerError::Certificate)?;
        let key = pem_contents(key_pem).map_err(SignerError::Key)?;
        OriginSigner::from_der(&certificate, &key)
    }

    /// Seals `meta`.
    pub fn sign(&self, meta: ImageMeta) -> Result<SignedMeta, SignerError> {
        let signature = self
            .key
            .sign(&self.random, &signing_input(&meta))
            .map_err(|_| SignerError::Sign)?;
        Ok(SignedMeta {
            meta,
            seal: OriginSeal {
                certificate: self.certificate.clone(),
                signature: signature.as_ref().to_vec(),
            },
        })
    }
}

/// What identifies one verified seal: SHA-256 over the certificate's fingerprint, the signed
/// bytes and the signature, each at a fixed width or behind its length.
fn seal_key(fingerprint: &[u8; 32], input: &[u8], signature: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(fingerprint);
    hasher.update((input.len() as u64).to_be_bytes());
    hasher.update(input);
    hasher.update(signature);
    hasher.finalize().into()
}

fn pem_contents(pem: &str) -> Result<Vec<u8>, String> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map(|(_, pem)| pem.contents)
        .map_err(|e| format!("not valid PEM: {e}"))
}

/// A canonical certificate that chained to the CA: its public key and validity, in seconds
/// since the Unix epoch.
#[derive(Clone)]
struct TrustedKey {
    public_key: Vec<u8>,
    not_before: i64,
    not_after: i64,
}

/// The verifiers' side, anchored at the cluster CA.
pub struct OriginTrust {
    /// The CA's subject name, DER: a canonical certificate must name it as its issuer.
    ca_subject: Vec<u8>,
    /// The CA's public key (an uncompressed P-256 point).
    ca_public_key: Vec<u8>,
    /// Canonical certificates that passed, by SHA-256 of their DER; bounded by
    /// [`MAX_ORIGIN_CERTIFICATES`]. Only certificates that chain to the CA get in.
    trusted: Mutex<HashMap<[u8; 32], TrustedKey>>,
    /// Seals whose signature verified, by [`seal_key`]: the same metadata under the same
    /// signature by the same certificate verifies again, so a client fetching an image it has
    /// fetched before skips the ECDSA verify. Bounded by [`MAX_VERIFIED_SEALS`]; only seals
    /// that verified get in.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl fmt::Debug for OriginTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginTrust").finish_non_exhaustive()
    }
}

/// A certificate that did not parse, as a plain phrase: nom's `Display` is the error's
/// `Debug` (`Parsing Error: Der(…)`), which must not reach an error reply or a terminal.
fn describe_der_error(error: x509_parser::nom::Err<x509_parser::error::X509Error>) -> String {
    match error {
        x509_parser::nom::Err::Incomplete(_) => "it ends before the certificate does".to_string(),
        x509_parser::nom::Err::Error(error) | x509_parser::nom::Err::Failure(error) => {
            format!("it is not a valid X.509 certificate ({error})")
        }
    }
}

impl OriginTrust {
    /// Trusts the canonical certificates issued by the CA whose certificate (DER) is `ca`.
    pub fn from_ca_der(ca: &[u8]) -> Result<OriginTrust, SealError> {
        let (_, parsed) = X509Certificate::from_der(ca)
            .map_err(|e| SealError::Malformed(describe_der_error(e)))?;
        Ok(OriginTrust {
            ca_subject: parsed.subject().as_raw().to_vec(),
            ca_public_key: parsed.public_key().subject_public_key.data.to_vec(),
            trusted: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Trusts the canonical certificates issued by the CA whose certificate is `ca_pem`.
    pub fn from_ca_pem(ca_pem: &str) -> Result<OriginTrust, SealError> {
        OriginTrust::from_ca_der(&pem_contents(ca_pem).map_err(SealError::Malformed)?)
    }

    /// Checks `signed`'s seal now; see [`OriginTrust::verify_at`].
    pub fn verify(&self, signed: SignedMeta) -> Result<VerifiedMeta, SealError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            });
        self.verify_at(signed, now)
    }

    /// Checks that `signed`'s certificate was issued by the cluster CA for the canonical role
    /// and is valid at `now` (seconds since the Unix epoch), and that its key signed exactly
    /// this metadata.
    pub fn verify_at(&self, signed: SignedMeta, now: i64) -> Result<VerifiedMeta, SealError> {
        let fingerprint = Digest::of(&signed.seal.certificate).0;
        let key = self.trusted_key(fingerprint, &signed.seal.certificate)?;
        if now < key.not_before || now > key.not_after {
            return Err(SealError::Expired);
        }
        let input = signing_input(&signed.meta);
        let seal = seal_key(&fingerprint, &input, &signed.seal.signature);
        if self.verified().contains(&seal) {
            return Ok(VerifiedMeta(signed));
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &key.public_key)
            .verify(&input, &signed.seal.signature)
            .map_err(|_| SealError::BadSignature(signed.meta.id.0))?;
        let mut verified = self.verified();
        if verified.len() >= MAX_VERIFIED_SEALS {
            // Forgetting only costs the next fetch of each image one ECDSA verify.
            verified.clear();
        }
        verified.insert(seal);
        Ok(VerifiedMeta(signed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], TrustedKey>> {
        // Entries are inserted whole; a panic elsewhere cannot leave one half-written.
        self.trusted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashSet<[u8; 32]>> {
        // A set of fixed-size keys: a panic elsewhere cannot leave it inconsistent.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of a canonical certificate: from the fingerprint cache, or checked against the
    /// CA and then cached.
    fn trusted_key(
        &self,
        fingerprint: [u8; 32],
        certificate: &[u8],
    ) -> Result<TrustedKey, SealError> {
        if let Some(key) = self.lock().get(&fingerprint) {
            return Ok(key.clone());
        }
        let key = self.check_certificate(certificate)?;
        let mut trusted = self.lock();
        if trusted.len() >= MAX_ORIGIN_CERTIFICATES {
            // Only CA-issued canonical certificates ever get here, so this is a re-issued
            // canonical, not an attacker: starting over costs one chain check each.
            trusted.clear();
        }
        trusted.insert(fingerprint, key.clone());
        Ok(key)
    }

    /// The chain check: issued (and signed, ECDSA P-256 SHA-256) by the cluster CA, not a CA
    /// itself, allowed to sign, and naming the canonical role.
    fn check_certificate(&self, certificate: &[u8]) -> Result<TrustedKey, SealError> {
        let (rest, parsed) = X509Certificate::from_der(certificate)
            .map_err(|e| SealError::Malformed(describe_der_error(e)))?;
        if !rest.is_empty() {
            return Err(SealError::Malformed(
                "trailing bytes after the certificate".to_string(),
            ));
        }
        if parsed.issuer().as_raw() != self.ca_subject.as_slice()
            || parsed.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256
        {
            return Err(SealError::UnknownIssuer);
        }
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &self.ca_public_key)
            .verify(
                parsed.tbs_certificate.as_ref(),
                parsed.signature_value.data.as_ref(),
            )
            .map_err(|_| SealError::UnknownIssuer)?;
        match role_of_certificate(&parsed) {
            Some(Role::Canonical) => {}
            Some(role) => return Err(SealError::NotCanonical(role.to_string())),
            None => return Err(SealError::NotCanonical("a certificate with no role".into())),
        }
        if parsed.is_ca() {
            return Err(SealError::NotCanonical("a CA certificate".to_string()));
        }
        if let Ok(Some(usage)) = parsed.key_usage() {
            if !usage.value.digital_signature() {
                return Err(SealError::NotCanonical(
                    "a certificate not allowed to sign".to_string(),
                ));
            }
        }
        let validity = parsed.validity();
        Ok(TrustedKey {
            public_key: parsed.public_key().subject_public_key.data.to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ImageId, NodeIndex};
    use crate::pki::ClusterCa;

    fn meta(body: &[u8]) -> ImageMeta {
        ImageMeta {
            id: ImageId(77),
            size: body.len() as u64,
            content_type: "image/png".into(),
            digest: Digest::of(body),
        }
    }

    fn signer(ca: &ClusterCa, role: Role) -> OriginSigner {
        let issued = ca.issue(role).unwrap();
        OriginSigner::from_pem(&issued.cert_pem, &issued.key_pem).unwrap()
    }

    fn trust(ca: &ClusterCa) -> OriginTrust {
        OriginTrust::from_ca_pem(ca.cert_pem()).unwrap()
    }

    #[test]
    fn the_canonicals_seal_verifies_and_survives_cbor() {
        let ca = ClusterCa::generate().unwrap();
        let signed = signer(&ca, Role::Canonical).sign(meta(b"png")).unwrap();
        let frame = crate::frame::encode_header(&signed).unwrap();
        let decoded: SignedMeta = crate::frame::decode_frame(&frame).unwrap();
        let verified = trust(&ca).verify(decoded).unwrap();
        assert_eq!(verified.id, ImageId(77));
        assert_eq!(verified.signed(), &signed);
        // Again, now from the fingerprint cache.
        trust(&ca).verify(signed.clone()).unwrap();
        let trust = trust(&ca);
        trust.verify(signed.clone()).unwrap();
        trust.verify(signed).unwrap();
    }

    #[test]
    fn any_change_to_the_metadata_breaks_the_seal() {
        let ca = ClusterCa::generate().unwrap();
        let trust = trust(&ca);
        let signed = signer(&ca, Role::Canonical).sign(meta(b"png")).unwrap();
        type Change = fn(&mut ImageMeta);
        let changes: [(&str, Change); 4] = [
            ("id", |m| m.id = ImageId(78)),
            ("size", |m| m.size += 1),
            ("content type", |m| m.content_type = "text/plain".into()),
            ("digest", |m| m.digest = Digest::of(b"forged")),
        ];
        for (what, change) in changes {
            let mut forged = signed.clone();
            change(&mut forged.meta);
            assert_eq!(
                trust.verify(forged).unwrap_err(),
                SealError::BadSignature(forged_id(what)),
                "{what}"
            );
        }
        let mut tampered = signed;
        let last = tampered.seal.signature.len() - 1;
        tampered.seal.signature[last] ^= 1;
        assert!(matches!(
            trust.verify(tampered),
            Err(SealError::BadSignature(77))
        ));
    }

    fn forged_id(what: &str) -> u64 {
        if what == "id" {
            78
        } else {
            77
        }
    }

    #[test]
    fn only_the_canonical_of_this_cluster_can_seal() {
        let ca = ClusterCa::generate().unwrap();
        let trust = trust(&ca);
        let node = signer(&ca, Role::Node(NodeIndex(2)))
            .sign(meta(b"x"))
            .unwrap();
        assert_eq!(
            trust.verify(node).unwrap_err(),
            SealError::NotCanonical("node-2".into())
        );
        let client = signer(&ca, Role::Client).sign(meta(b"x")).unwrap();
        assert!(matches!(
            trust.verify(client),
            Err(SealError::NotCanonical(_))
        ));
        let stranger = ClusterCa::generate().unwrap();
        let foreign = signer(&stranger, Role::Canonical).sign(meta(b"x")).unwrap();
        assert_eq!(trust.verify(foreign).unwrap_err(), SealError::UnknownIssuer);
        // The CA's own key does not make its self-signed certificate a canonical one.
        let ca_signed = OriginSigner::from_pem(ca.cert_pem(), ca.key_pem())
            .unwrap()
            .sign(meta(b"x"))
            .unwrap();
        assert!(trust.verify(ca_signed).is_err());
        let mut garbage = signer(&ca, Role::Canonical).sign(meta(b"x")).unwrap();
        garbage.seal.certificate.truncate(40);
        let error = trust.verify(garbage).unwrap_err();
        assert!(matches!(error, SealError::Malformed(_)), "{error}");
        let message = error.to_string();
        assert!(
            !message.contains("Parsing") && !message.contains("Der("),
            "decoder debug text in {message:?}"
        );
        let mut junk = signer(&ca, Role::Canonical).sign(meta(b"x")).unwrap();
        junk.seal.certificate = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let message = trust.verify(junk).unwrap_err().to_string();
        assert!(
            message.contains("not a valid X.509 certificate")
                && !message.contains("Parsing")
                && !message.contains("Der("),
            "decoder debug text in {message:?}"
        );
    }

    #[test]
    fn a_canonical_certificate_outside_its_validity_is_refused() {
        let ca = ClusterCa::generate().unwrap();
        let signed = signer(&ca, Role::Canonical).sign(meta(b"x")).unwrap();
        assert_eq!(
            trust(&ca).verify_at(signed, i64::MAX).unwrap_err(),
            SealError::Expired
        );
    }

    #[test]
    fn a_key_must_belong_to_its_certificate() {
        let ca = ClusterCa::generate().unwrap();
        let one = ca.issue(Role::Canonical).unwrap();
        let other = ca.issue(Role::Canonical).unwrap();
        assert!(matches!(
            OriginSigner::from_pem(&one.cert_pem, &other.key_pem),
            Err(SignerError::KeyMismatch)
        ));
    }

    #[test]
    fn a_remembered_seal_never_vouches_for_another() {
        let ca = ClusterCa::generate().unwrap();
        let trust = trust(&ca);
        let signed = signer(&ca, Role::Canonical).sign(meta(b"png")).unwrap();
        trust.verify(signed.clone()).unwrap();
        trust.verify(signed.clone()).unwrap();
        assert_eq!(trust.verified().len(), 1);
        let mut other = signed.clone();
        other.meta.size += 1;
        assert!(trust.verify(other).is_err());
        let mut tampered = signed.clone();
        tampered.seal.signature[8] ^= 1;
        assert!(trust.verify(tampered).is_err());
        assert_eq!(
            trust.verify_at(signed, i64::MAX).unwrap_err(),
            SealError::Expired,
            "a remembered seal still expires with its certificate"
        );
        let canonical = signer(&ca, Role::Canonical);
        for size in 0..MAX_VERIFIED_SEALS as u64 + 3 {
            let mut meta = meta(b"png");
            meta.size = size;
            trust.verify(canonical.sign(meta).unwrap()).unwrap();
            assert!(trust.verified().len() <= MAX_VERIFIED_SEALS);
        }
    }

    #[test]
    fn the_fingerprint_cache_stays_bounded() {
        let ca = ClusterCa::generate().unwrap();
        let trust = trust(&ca);
        for _ in 0..MAX_ORIGIN_CERTIFICATES + 3 {
            let signed = signer(&ca, Role::Canonical).sign(meta(b"x")).unwrap();
            trust.verify(signed).unwrap();
            assert!(trust.lock().len() <= MAX_ORIGIN_CERTIFICATES);
        }
    }
}
