//! Starting cargo and xtask from a test: the debug builds of xtask and the UDP probe, and the
//! cargo variables their processes see.
//!
//! `cargo test` gives this test its own crate's `CARGO_MANIFEST_DIR` (and `CARGO_PKG_*`), and
//! every cargo we start, directly or through xtask, would inherit them. Build scripts such as
//! ring's ask cargo to rebuild them when `CARGO_MANIFEST_DIR` changes, so a value that differs
//! from the last build's rebuilds ring and everything above it (a minute or more on a small
//! machine, release builds included). So xtask runs with the variables `cargo xtask` gives it,
//! and our debug builds with those of the cargo that runs the tests.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{run_with_timeout, text};

/// The crate folder `cargo xtask` runs xtask from, relative to the workspace root.
const XTASK_DIR: &str = "xtask";
/// The variables cargo sets for the crate it runs, beside `CARGO_PKG_*`.
const MANIFEST_VARIABLES: [&str; 2] = ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH"];

/// Gives `command` the cargo variables `cargo xtask` gives xtask in place of this test's, so
/// that the release build inside `up` shares its build scripts' runs with a user's
/// `cargo xtask up`.
pub fn as_cargo_xtask_runs(command: &mut Command, root: &Path) {
    forget_this_crate(command);
    let xtask = root.join(XTASK_DIR);
    command
        .env("CARGO_MANIFEST_PATH", xtask.join("Cargo.toml"))
        .env("CARGO_MANIFEST_DIR", xtask);
}

/// Gives `command` the cargo variables of the cargo that runs this test (our parent process),
/// so that a cargo build we start agrees with it on what is fresh. Where the parent's
/// environment cannot be read, the variables are those `cargo xtask` gives.
fn as_our_cargo_runs(command: &mut Command, root: &Path) {
    let Some(parent) = parent_environment() else {
        return as_cargo_xtask_runs(command, root);
    };
    forget_this_crate(command);
    for name in MANIFEST_VARIABLES {
        let value = parent
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value));
        if let Some(value) = value {
            command.env(name, value);
        }
    }
}

/// Removes what `cargo test` set for this crate from `command`'s environment.
fn forget_this_crate(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CARGO_PKG_") {
            command.env_remove(key);
        }
    }
    for name in MANIFEST_VARIABLES {
        command.env_remove(name);
    }
}

/// The environment our parent process started with, from `/proc` (Linux, which the suite
/// needs anyway for `nsenter`); `None` when it cannot be read.
fn parent_environment() -> Option<Vec<(OsString, OsString)>> {
    use std::os::unix::ffi::OsStrExt;
    let parent = std::os::unix::process::parent_id();
    let bytes = std::fs::read(format!("/proc/{parent}/environ")).ok()?;
    let pairs = bytes
        .split(|byte| *byte == 0)
        .filter_map(|entry| {
            let equals = entry.iter().position(|byte| *byte == b'=')?;
            Some((
                OsStr::from_bytes(&entry[..equals]).to_os_string(),
                OsStr::from_bytes(&entry[equals + 1..]).to_os_string(),
            ))
        })
        .collect();
    Some(pairs)
}

/// Builds `package`'s binary `binary` in the debug profile of `target_dir` and returns its path.
/// Quiet when it is fresh; cargo's own errors are passed on when it does not build.
pub fn build_binary(
    root: &Path,
    target_dir: &Path,
    package: &str,
    binary: &str,
    timeout: Duration,
) -> anyhow::Result<PathBuf> {
    // `cargo test` tells its tests which cargo runs them; a plain `cargo` is the fallback.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    as_our_cargo_runs(&mut command, root);
    command
        .current_dir(root)
        .args(["build", "--quiet", "--package", package, "--bin", binary])
        .arg("--target-dir")
        .arg(target_dir);
    eprintln!("$ cargo build --quiet -p {package} --bin {binary}");
    let output = run_with_timeout(command, None, timeout)?;
    anyhow::ensure!(
        output.status.success(),
        "`cargo build -p {package} --bin {binary}` failed ({}):\n{}",
        output.status,
        text(&output).trim()
    );
    let path = target_dir.join("debug").join(binary);
    anyhow::ensure!(
        path.is_file(),
        "cargo built {binary} but {} is not there",
        path.display()
    );
    Ok(path)
}
