//! Starting cargo and xtask from a test: the debug builds of xtask and the UDP probe, and the
//! cargo variables their processes see.
//!
//! `cargo test` gives this test its own crate's `CARGO_MANIFEST_DIR` (and `CARGO_PKG_*`), and
//! every cargo we start, directly or through xtask, would inherit them. Build scripts such as
//! ring's ask cargo to rebuild them when `CARGO_MANIFEST_DIR` changes, so a value that differs
//! from the last build's rebuilds ring and everything above it (a minute or more on a small
//! machine, release builds included). So every program we start sees none of them, as from
//! a shell (xtask forgets them too, for the cargo it starts).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{run_with_timeout, text};

/// Removes what `cargo test` set for this crate from `command`'s environment.
pub fn forget_this_crate(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || lab::project::CARGO_CRATE_VARIABLES.contains(&&*name) {
            command.env_remove(key);
        }
    }
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
    forget_this_crate(&mut command);
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
