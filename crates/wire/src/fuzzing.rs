//! What the fuzzers check where untrusted bytes become `wire` types: one function per fuzz
//! target, called by the thin targets in `fuzz/fuzz_targets/` and, on every input of their
//! corpus and regressions, by `cargo test` (`crates/testkit/tests/fuzz_corpus.rs`). Each one
//! panics when a property fails, which is what the fuzzer reports as a crash; a refused input
//! is an `Err`, never a panic.
//!
//! [`replay`] is the replay that test runs over the corpus folders.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::ClusterFile;
use crate::frame::{self, FrameError};
use crate::limits::{MAX_HEADER_BYTES, MAX_REFUSAL_CHARS};
use crate::message::{Request, Response};
use crate::origin::{OriginTrust, SealError, SignedMeta};
use crate::pki::{self, Role};
use crate::status;

/// The cluster CA the origin-seal target trusts: made once for fuzzing, it anchors the seeds
/// in `fuzz/corpus/origin_seal` and nothing else. Its key is kept beside it
/// (`fuzzing/origin-ca.key.pem`) only so that the seeds can be made again.
pub const ORIGIN_CA_PEM: &str = include_str!("fuzzing/origin-ca.pem");

/// The CA's key, for the seed generator (`cargo run -p flotilla-testkit --example fuzz_seeds`).
pub const ORIGIN_CA_KEY_PEM: &str = include_str!("fuzzing/origin-ca.key.pem");

/// The instant the origin-seal target verifies at (seconds since the Unix epoch, in 2027), so
/// a run does not depend on the clock.
pub const ORIGIN_NOW: i64 = 1_800_000_000;

/// A request header: see [`header`].
pub fn request_header(bytes: &[u8]) {
    header::<Request>(bytes);
}

/// A response header: see [`header`].
pub fn response_header(bytes: &[u8]) {
    header::<Response>(bytes);
}

/// `bytes` as a header's CBOR (framed here, so every mutation keeps a valid length prefix)
/// and as a whole frame, prefix included. A header that decodes was within
/// [`MAX_HEADER_BYTES`], encodes again within it, and that encoding decodes to a value that
/// encodes to the same bytes (and is equal, unless it holds a NaN). A refusal is described
/// as one printable line of bounded length.
fn header<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8]) {
    let mut framed = u32::try_from(bytes.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(bytes);
    for input in [framed.as_slice(), bytes] {
        match frame::decode_frame::<T>(input) {
            Ok(decoded) => {
                assert!(input.len() - 4 <= MAX_HEADER_BYTES as usize);
                let encoded = frame::encode_header(&decoded)
                    .expect("a decoded header encodes again within the limit");
                let again: T = frame::decode_frame(&encoded).expect("an encoded header decodes");
                assert_eq!(
                    frame::encode_header(&again).expect("it encoded once"),
                    encoded,
                    "encoding is not stable for {decoded:?}"
                );
                assert!(
                    again == decoded || format!("{decoded:?}").contains("NaN"),
                    "{decoded:?} came back as {again:?}"
                );
            }
            Err(FrameError::HeaderTooLarge(length)) => assert!(length > MAX_HEADER_BYTES),
            Err(FrameError::Malformed(reason)) => {
                assert_one_line(&reason);
                assert!(reason.chars().count() <= MAX_REFUSAL_CHARS, "{reason:?}");
            }
            Err(error) => assert_one_line(&error.to_string()),
        }
    }
}

/// A refusal meant for a person: one line, no control characters, and no longer than a
/// reason ([`MAX_REFUSAL_CHARS`]) and the sentence around it.
fn assert_one_line(message: &str) {
    assert!(
        message.chars().count() <= 2 * MAX_REFUSAL_CHARS,
        "a refusal of {} characters",
        message.chars().count()
    );
    assert!(
        !message.chars().any(char::is_control),
        "a refusal with control characters: {message:?}"
    );
}

/// The trust of [`ORIGIN_CA_PEM`], parsed once; each input gets its own [`OriginTrust`]
/// from it, so no input depends on what an earlier one left in its memory.
fn origin_ca_der() -> &'static [u8] {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    DER.get_or_init(|| pem_der(ORIGIN_CA_PEM))
}

/// `bytes` as the CBOR of a [`SignedMeta`] (what a `Response::Image` or `Request::Replicate`
/// carries), checked against the fuzzing CA. A seal that verifies names the canonical role,
/// verifies again from the trust's memory with the same result, and no longer verifies once
/// any signed field changes; a refusal is the same refusal the second time.
pub fn origin_seal(bytes: &[u8]) {
    let Ok(signed) = frame::decode_header::<SignedMeta>(bytes) else {
        return;
    };
    let trust = OriginTrust::from_ca_der(origin_ca_der()).expect("the fuzzing CA parses");
    let first = trust.verify_at(signed.clone(), ORIGIN_NOW);
    let second = trust.verify_at(signed.clone(), ORIGIN_NOW);
    assert_eq!(first, second, "a second look changed the verdict");
    match first {
        Ok(verified) => {
            assert_eq!(verified.signed(), &signed);
            assert_eq!(
                pki::role_of_der(&signed.seal.certificate),
                Some(Role::Canonical)
            );
            let mut forged = signed;
            forged.meta.size = forged.meta.size.wrapping_add(1);
            assert_eq!(
                trust.verify_at(forged.clone(), ORIGIN_NOW),
                Err(SealError::BadSignature(forged.meta.id.0))
            );
        }
        Err(error) => assert_one_line(&error.to_string()),
    }
}

/// `bytes` as a certificate (DER) and as a certificate name. A role found in either has one
/// spelling: its name parses back to it, and a name that parses is that spelling.
pub fn certificate_role(bytes: &[u8]) {
    if let Some(role) = pki::role_of_der(bytes) {
        assert_eq!(Role::from_server_name(&role.server_name()), Some(role));
    }
    if let Ok(name) = std::str::from_utf8(bytes) {
        if let Some(role) = Role::from_server_name(name) {
            assert_eq!(role.server_name(), name, "{role:?} has another spelling");
        }
    }
}

/// `bytes` as a `cluster.toml`: a description that parses writes out as text that parses to
/// the same description.
pub fn cluster_toml(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let Ok(cluster) = ClusterFile::parse(text) else {
        return;
    };
    let written = cluster.to_text().expect("a parsed description writes out");
    assert_eq!(ClusterFile::parse(&written).as_ref(), Ok(&cluster));
}

/// `bytes` as the output of `client status --json`: rows that parse write out as JSON that
/// parses to the same rows.
pub fn status_json(bytes: &[u8]) {
    let Ok(rows) = status::rows_from_json(bytes) else {
        return;
    };
    let written = serde_json::to_vec(&rows).expect("parsed rows write out");
    let again = status::rows_from_json(&written).expect("written rows parse");
    assert_eq!(again, rows);
}

/// Valid inputs for each target of this module, by target name: the seeds of their corpus
/// (`cargo run -p flotilla-testkit --example fuzz_seeds` writes them). Origin seals are made
/// by a canonical certificate that [`ORIGIN_CA_PEM`] issues now, so they verify.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use crate::cluster::Member;
    use crate::election::{ElectionKind, ElectionMessage};
    use crate::ids::{Digest, ImageId, NodeIndex, Term};
    use crate::message::{CacheOutcome, ElectionRole, ErrorKind, ImageMeta, NodeStatus};
    use crate::origin::OriginSigner;
    use crate::pki::ClusterCa;
    use crate::status::StatusRow;

    let ca = ClusterCa::from_pem(ORIGIN_CA_PEM, ORIGIN_CA_KEY_PEM).expect("the fuzzing CA loads");
    let issue = |ca: &ClusterCa, role| {
        let issued = ca.issue(role).expect("the fuzzing CA issues");
        let signer = OriginSigner::from_pem(&issued.cert_pem, &issued.key_pem)
            .expect("an issued certificate signs");
        (pem_der(&issued.cert_pem), signer)
    };
    let body = b"\x89PNG not really";
    let meta = ImageMeta {
        id: ImageId(42),
        size: body.len() as u64,
        content_type: "image/png".into(),
        digest: Digest::of(body),
    };
    let (canonical_der, canonical) = issue(&ca, Role::Canonical);
    let (node_der, node) = issue(&ca, Role::Node(NodeIndex(3)));
    let (client_der, _) = issue(&ca, Role::Client);
    let (_, stranger) = issue(&ClusterCa::generate().expect("a CA"), Role::Canonical);
    let signed = canonical.sign(meta.clone()).expect("the canonical signs");
    let seals: Vec<SignedMeta> = vec![
        signed.clone(),
        node.sign(meta.clone()).expect("a node signs"),
        stranger.sign(meta.clone()).expect("a stranger signs"),
    ];
    let kinds = ElectionKind::ALL;
    let mut requests = vec![
        Request::GetImage { id: ImageId(7) },
        Request::ImageSize {
            id: ImageId(u64::MAX),
        },
        Request::Status,
        Request::Ping,
        Request::Replicate {
            term: Term(4),
            meta: signed.clone(),
        },
        Request::NetFaults(crate::NetFaults {
            drop_from: vec![([10, 0, 1, 3], 0).into()],
            drop_to: vec![([127, 0, 0, 1], 4433).into()],
            delay_us: 100_000,
            jitter_us: 10_000,
            loss_ppm: 10_000,
        }),
        Request::NetFaults(crate::NetFaults::default()),
    ];
    requests.extend(kinds.iter().map(|kind| {
        Request::Election(ElectionMessage {
            term: Term(9),
            kind: *kind,
        })
    }));
    let responses = [
        Response::Image {
            meta: signed,
            served_by: "flotilla_node_2".into(),
            outcome: CacheOutcome::Coalesced,
        },
        Response::Size {
            id: ImageId(1),
            size: 1234,
        },
        Response::Status(NodeStatus {
            index: NodeIndex(2),
            name: "flotilla_node_2".into(),
            role: ElectionRole::Leader,
            term: Term(12),
            leader: Some(NodeIndex(2)),
            cache_items: 3,
            cache_bytes: 4096,
            cache_capacity_bytes: 1 << 20,
            cache_hits: 10,
            cache_misses: 2,
            peer_rtt_ms: [(0, 0.25), (1, 1.5)].into_iter().collect(),
            cached_ids: vec![ImageId(1), ImageId(9)],
        }),
        Response::Pong {
            name: "flotilla_canonical".into(),
        },
        Response::Ack,
        Response::Error {
            kind: ErrorKind::NotFound,
            message: "image 999 not found on the canonical".into(),
        },
    ];
    let member = |index: u16, name: &str| Member {
        name: name.into(),
        index,
        quic: format!("127.0.0.1:{}", 7000 + index),
        metrics: format!("http://127.0.0.1:{}/metrics", 9000 + index),
        // Docker records each member's bridge address too; one seed member has none.
        bridge: (index > 0).then(|| format!("172.18.0.{}:7000", 2 + index)),
    };
    let cluster = ClusterFile {
        prefix: "flotilla".into(),
        runtime: "docker".into(),
        canonical: member(0, "flotilla_canonical"),
        nodes: vec![member(1, "flotilla_node_1"), member(2, "flotilla_node_2")],
    };
    let rows = vec![
        StatusRow {
            index: 0,
            name: "flotilla_canonical".into(),
            reachable: true,
            role: Some("canonical".into()),
            rtt_ms: Some(0.3),
            ..StatusRow::default()
        },
        StatusRow {
            index: 1,
            name: "flotilla_node_1".into(),
            reachable: true,
            role: Some("leader".into()),
            term: Some(3),
            leader: Some(1),
            cache_items: Some(2),
            cache_bytes: Some(100),
            cache_hits: Some(5),
            cache_misses: Some(1),
            rtt_ms: Some(1.25),
            peer_rtt_ms: Some([("2".to_string(), 0.5)].into_iter().collect()),
            error: None,
        },
        StatusRow {
            index: 2,
            name: "flotilla_node_2".into(),
            reachable: false,
            error: Some("connection timed out".into()),
            ..StatusRow::default()
        },
    ];
    vec![
        ("request_header", requests.iter().map(cbor).collect()),
        ("response_header", responses.iter().map(cbor).collect()),
        ("origin_seal", seals.iter().map(cbor).collect()),
        (
            "certificate_role",
            vec![
                canonical_der,
                node_der,
                client_der,
                origin_ca_der().to_vec(),
                b"node-3.flotilla".to_vec(),
                b"canonical.flotilla".to_vec(),
                b"client.flotilla".to_vec(),
                b"operator.flotilla".to_vec(),
            ],
        ),
        (
            "cluster_toml",
            vec![cluster.to_text().expect("it writes").into_bytes()],
        ),
        (
            "status_json",
            vec![
                serde_json::to_vec_pretty(&rows).expect("rows write"),
                serde_json::to_vec(&rows[..1]).expect("rows write"),
            ],
        ),
    ]
}

/// A header's CBOR, without its length prefix, for the seeds.
fn cbor<T: Serialize>(header: &T) -> Vec<u8> {
    let mut bytes = Vec::new();
    ciborium::into_writer(header, &mut bytes).expect("a header encodes");
    bytes
}

fn pem_der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .expect("valid PEM")
        .1
        .contents
}

/// Runs `check` on every file of `fuzz/corpus/<target>` and `fuzz/regressions/<target>` under
/// `workspace`; `Err` names every file on which it panicked. The corpus folder must exist and
/// hold files, so a moved or emptied corpus is an `Err` instead of a pass with nothing
/// checked; the regressions folder holds the inputs that once crashed, when there were any.
/// `Ok` says how many inputs ran.
pub fn replay(workspace: &Path, target: &str, check: fn(&[u8])) -> Result<usize, String> {
    let corpus = workspace.join("fuzz/corpus").join(target);
    let mut inputs = files_in(&corpus);
    if inputs.is_empty() {
        return Err(format!(
            "the corpus of fuzz target {target} ({}) is missing or empty",
            corpus.display()
        ));
    }
    let regressions = workspace.join("fuzz/regressions").join(target);
    if regressions.exists() {
        inputs.extend(files_in(&regressions));
    }
    let mut failed = Vec::new();
    for path in &inputs {
        let bytes =
            std::fs::read(path).map_err(|error| format!("reading {}: {error}", path.display()))?;
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    if failed.is_empty() {
        Ok(inputs.len())
    } else {
        Err(format!(
            "fuzz target {target} fails on {} of {} inputs: {failed:#?}",
            failed.len(),
            inputs.len()
        ))
    }
}

/// The files directly in `dir` (none when it does not exist), hidden ones left out.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    files
}
