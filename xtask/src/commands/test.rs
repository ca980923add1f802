//! `cargo xtask test`: what CI runs. Format check, clippy with warnings denied, the workspace
//! tests, then the Docker end-to-end suite when an engine answers (and a loud banner when it
//! does not). Ends with `N passed, N failed`; any failure makes the exit code 1.

use xshell::{cmd, Shell};

use crate::docker;
use crate::e2e;
use crate::project::Project;
use crate::tally::Tally;
use crate::Exit;

/// Run every check: fmt, clippy, tests, and the Docker end-to-end suite.
#[derive(Debug, clap::Args)]
pub struct Test {
    /// Skip the Docker end-to-end suite.
    #[arg(long, conflicts_with = "e2e_only")]
    no_e2e: bool,
    /// Run only the Docker end-to-end suite.
    #[arg(long)]
    e2e_only: bool,
}

impl Test {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let mut tally = Tally::default();
        if !self.e2e_only {
            tally.step("cargo fmt --all -- --check", || {
                Ok(cmd!(sh, "cargo fmt --all -- --check").run()?)
            });
            tally.step(
                "cargo clippy --workspace --all-targets -- -D warnings",
                || Ok(cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?),
            );
            tally.step("cargo test --workspace", || {
                Ok(cmd!(sh, "cargo test --workspace").run()?)
            });
        }
        let skipped = if self.no_e2e {
            Some("--no-e2e was given".to_string())
        } else {
            match docker::engine(sh) {
                Ok(_) => {
                    e2e::run(sh, &project, &mut tally);
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
