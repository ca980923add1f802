//! The fuzz corpus as regression tests: every input kept in `fuzz/corpus/<target>` and
//! `fuzz/regressions/<target>` runs through the same function its fuzz target calls, on the
//! stable toolchain, in every `cargo test`. A missing or empty corpus folder fails, and so
//! does a fuzz target that this table does not replay.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a fuzz target runs on one input: it panics when a property fails.
type Check = fn(&[u8]);

/// Every fuzz target, by the name of its file in `fuzz/fuzz_targets/`, and what it runs.
const TARGETS: &[(&str, Check)] = &[
    ("request_header", wire::fuzzing::request_header),
    ("response_header", wire::fuzzing::response_header),
    ("origin_seal", wire::fuzzing::origin_seal),
    ("certificate_role", wire::fuzzing::certificate_role),
    ("cluster_toml", wire::fuzzing::cluster_toml),
    ("status_json", wire::fuzzing::status_json),
    ("election_messages", election::fuzzing::messages),
    ("catalog", canonical::fuzzing::catalog),
    ("nfqueue_datagram", chaos::fuzzing::nfqueue_datagram),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit sits two levels inside the workspace")
        .to_path_buf()
}

#[test]
fn every_fuzz_target_is_replayed() {
    let dir = workspace_root().join("fuzz/fuzz_targets");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    let replayed: BTreeSet<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(
        on_disk, replayed,
        "fuzz targets and the replayed ones differ"
    );
}

#[test]
fn the_corpus_and_every_regression_pass() {
    let root = workspace_root();
    let failures: Vec<String> = TARGETS
        .iter()
        .filter_map(|(target, check)| wire::fuzzing::replay(&root, target, *check).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
