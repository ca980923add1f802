//! `cargo xtask test`: what CI runs. Format check, clippy with warnings denied, the workspace
//! tests, the independent QUIC peer (aioquic) against a process cluster of its own
//! ([`crate::quic_peer`]), then the Docker end-to-end suite (`crates/e2e`, ordinary tests
//! behind the `FLOTILLA_E2E=1` switch) when an engine answers, and a loud banner when it does
//! not. Ends with `N passed, N failed` over those steps; any failure makes the exit code 1.

use lab::docker;
use xshell::{cmd, Shell};

use crate::tally::Tally;
use crate::Exit;

/// The switch that lets the end-to-end tests run (they skip without it).
const E2E_SWITCH: &str = "FLOTILLA_E2E";

/// Run every check: fmt, clippy, tests, and the Docker end-to-end suite.
#[derive(Debug, clap::Args)]
pub struct Test {
    /// Skip the Docker end-to-end suite.
    #[arg(long, conflicts_with = "e2e_only")]
    no_e2e: bool,
    /// Run only the Docker end-to-end suite.
    #[arg(long, conflicts_with = "quic_peer_only")]
    e2e_only: bool,
    /// Run only the independent QUIC peer (aioquic) against a process cluster of its own.
    #[arg(long)]
    quic_peer_only: bool,
}

/// The name of the QUIC peer's step in the tally.
const QUIC_PEER_STEP: &str = "quic peer (aioquic) against a process cluster";

impl Test {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut tally = Tally::default();
        if !self.e2e_only && !self.quic_peer_only {
            tally.step("cargo fmt --all -- --check", || {
                Ok(cmd!(sh, "cargo fmt --all -- --check").run()?)
            });
            tally.step(
                "cargo clippy --workspace --all-targets -- -D warnings",
                || Ok(cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?),
            );
            tally.step("cargo test --workspace", || {
                // The end-to-end tests skip here; they run in their own step below.
                Ok(cmd!(sh, "cargo test --workspace")
                    .env_remove(E2E_SWITCH)
                    .run()?)
            });
        }
        if !self.e2e_only {
            // Needs no Docker engine: its cluster runs as local processes.
            tally.step(QUIC_PEER_STEP, || crate::quic_peer::run(sh));
        }
        let skipped = if self.no_e2e {
            Some("--no-e2e was given".to_string())
        } else if self.quic_peer_only {
            Some("--quic-peer-only was given".to_string())
        } else {
            match docker::engine(sh) {
                Ok(_) => {
                    // One test at a time: each starts its own cluster of containers.
                    tally.step(
                        "FLOTILLA_E2E=1 cargo test -p flotilla-e2e -- --test-threads=1",
                        || {
                            Ok(cmd!(sh, "cargo test -p flotilla-e2e -- --test-threads=1")
                                .env(E2E_SWITCH, "1")
                                .run()?)
                        },
                    );
                    None
                }
                Err(reason) => Some(format!("no Docker engine answered ({reason})")),
            }
        };
        if let Some(reason) = skipped {
            let banner = "#".repeat(78);
            eprintln!("\n{banner}\n#  DOCKER END-TO-END SUITE SKIPPED: {reason}\n{banner}");
        }
        println!("\n{}", tally.summary());
        match tally.failed() {
            0 => Ok(()),
            _ => Err(Exit(1).into()),
        }
    }
}
