//! Conventions of the whole workspace, checked on every `cargo test`: every Rust file says
//! what it is for in a `//!` line, libraries do not print to stdout, and no `dbg!` is left.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/wire sits two levels inside the workspace")
        .to_path_buf()
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in ["crates", "canonical", "node", "client", "xtask"] {
        rust_files(&root.join(crate_dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} Rust files", files.len());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable source");
            (path, text)
        })
        .collect()
}

#[test]
fn every_file_starts_with_a_purpose_line() {
    let missing: Vec<_> = sources()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` header: {missing:?}"
    );
}

/// Spelled in two parts so this file does not match itself.
const DBG: &str = concat!("dbg", "!(");

#[test]
fn libraries_do_not_print_and_nothing_calls_dbg() {
    let mut offenders = Vec::new();
    for (path, text) in sources() {
        let name = path.to_string_lossy();
        let library = ["/crates/", "/canonical/src/", "/node/src/"]
            .iter()
            .any(|dir| name.contains(dir))
            && name.contains("/src/")
            && !name.contains("/src/bin/")
            && !name.ends_with("main.rs")
            // The console is a terminal UI: printing is its job.
            && !name.ends_with("console.rs");
        for (number, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let prints = code.starts_with("println!(") || code.contains(" println!(");
            if code.contains(DBG) || (library && prints) {
                offenders.push(format!("{name}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "stray output: {offenders:#?}");
}

/// Crates that must stay free of the async runtime and the network stack, so that the
/// compiler (not a convention) keeps the wire types and the election logic IO-free.
const IO_FREE_CRATES: &[&str] = &["crates/wire", "crates/election"];

/// Dependencies those crates may not have, not even as dev-dependencies.
const NETWORK_STACK: &[&str] = &[
    "tokio",
    "tokio-util",
    "quinn",
    "quinn-proto",
    "rustls",
    "net",
];

#[test]
fn wire_and_election_have_no_network_stack() {
    let root = workspace_root();
    let mut offenders = Vec::new();
    for krate in IO_FREE_CRATES {
        let manifest = root.join(krate).join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            offenders.push(format!("{krate}: no Cargo.toml"));
            continue;
        };
        let table: toml::Table = text.parse().expect("a valid Cargo.toml");
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(dependencies) = table.get(section).and_then(|v| v.as_table()) else {
                continue;
            };
            for name in dependencies.keys() {
                if NETWORK_STACK.contains(&name.as_str()) {
                    offenders.push(format!("{krate} [{section}] {name}"));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "IO in an IO-free crate: {offenders:?}"
    );
}

/// The cluster tooling drives the programs as processes or containers; it never links the
/// network stack (so `cargo xtask` does not compile quinn, rustls or the metrics exporter).
const TOOLING_CRATES: &[&str] = &["crates/lab", "crates/chaos", "crates/e2e", "xtask"];

#[test]
fn the_cluster_tooling_does_not_link_the_network_stack() {
    let root = workspace_root();
    let mut offenders = Vec::new();
    for krate in TOOLING_CRATES {
        let manifest = root.join(krate).join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let table: toml::Table = text.parse().expect("a valid Cargo.toml");
        let Some(dependencies) = table.get("dependencies").and_then(|v| v.as_table()) else {
            continue;
        };
        for name in dependencies.keys() {
            if NETWORK_STACK.contains(&name.as_str()) || name.starts_with("metrics") {
                offenders.push(format!("{krate} [dependencies] {name}"));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the network stack in the cluster tooling: {offenders:?}"
    );
}
