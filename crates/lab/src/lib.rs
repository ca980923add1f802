//! Flotilla's clusters: where members run (the [`runtime::Runtime`] trait, with Docker, Docker
//! Swarm and local processes behind it), what xtask remembers of a cluster (`.cluster/state.json`),
//! certificates, fixed host ports, each member's command line, static release builds and
//! scratch images, faults through the runtime, the failover benchmark, the soak, scenario
//! runs on a cluster, and a headless browser for their reports.
//!
//! This crate drives the programs; it never links them: it depends on `wire` for the
//! vocabulary and on `chaos` for faults, never on the network stack.

pub mod browser;
pub mod cachebench;
pub mod certs;
pub mod client;
pub mod docker;
pub mod elf;
pub mod failover;
pub mod fanout;
pub mod faults;
pub mod launch;
pub mod ports;
pub mod project;
pub mod reads;
pub mod release;
pub mod runtime;
pub mod scenario;
pub mod scrape;
pub mod soak;
pub mod socket_faults;
pub mod state;
pub mod swarm;
pub mod time;

use std::fmt;

/// An error in what the user asked for (a bad argument or input): exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
