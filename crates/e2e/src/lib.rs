//! Flotilla's Docker end-to-end tests: every test in `tests/` brings up its own 5-node
//! cluster of scratch containers through the real `cargo xtask up`, under its own name prefix
//! and cluster folder (so a user's cluster is never touched), checks one thing a user would
//! notice, and tears the cluster down however it ends.
//!
//! - [`cargo`]: building xtask and the probe, and the cargo variables their processes see.
//! - [`cluster`]: the [`Cluster`] fixture: up, down on drop, and the commands a test runs.
//! - [`leadership`]: reading `client status --json` rows for who leads whom in which term.
//! - [`probe`]: counting UDP datagrams between two nodes' network namespaces.
//! - [`process`]: running a program with a deadline and collecting what it said.
//!
//! The tests are slow (each starts containers) and need a Docker engine and root for
//! `nsenter`, so they only run when `FLOTILLA_E2E=1` is set; otherwise each says loudly that it
//! skipped and passes. `cargo xtask test` sets it and runs them one at a time.

use std::io::Write;

pub mod cargo;
pub mod cluster;
pub mod leadership;
pub mod probe;
pub mod process;

pub use cluster::{Cluster, NODES};

/// Environment variable that turns the suite on; any value but `1` leaves it off.
pub const GATE_ENV: &str = "FLOTILLA_E2E";

/// Whether the suite is turned on. When it is not, says so on stderr, naming the test, so
/// that a run which skipped everything is never taken for one that checked something.
pub fn enabled() -> bool {
    if std::env::var_os(GATE_ENV).is_some_and(|value| value == "1") {
        return true;
    }
    // libtest names a test's thread after the test; on the main thread we know no name.
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("test");
    // libtest captures `eprintln!` of passing tests; a write to stderr itself is always seen.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: set {GATE_ENV}=1 to run the Docker end-to-end test `{test}` (it starts a {NODES}-node cluster)"
    );
    false
}
