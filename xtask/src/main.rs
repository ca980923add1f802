//! `cargo xtask`: Flotilla's automation. Builds static binaries and scratch images, starts a
//! cluster on Docker or as local processes, breaks it on purpose (kill, pause, partition) and
//! runs every check CI runs. Each subcommand is a thin module under `commands/` over the
//! `lab` (clusters and runtimes) and `chaos` (faults) libraries.

mod cluster;
mod commands;
mod quic_peer;
mod tally;

use std::fmt;
use std::process::ExitCode;

use clap::Parser;
use lab::UsageError;

/// Ends xtask with this exit code and no message of its own: the program it ran (a console,
/// the client, a test step) has already said what went wrong.
#[derive(Debug)]
pub struct Exit(pub u8);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}

fn main() -> ExitCode {
    // The cargo builds xtask starts (release images, the delayer, the checks) must agree with
    // a shell's cargo on what is fresh.
    lab::project::forget_cargo_run_variables();
    lab::project::end_quietly_on_closed_stdout();
    // clap prints usage errors itself and exits with code 2.
    let cli = commands::Cli::parse();
    let result = xshell::Shell::new()
        .map_err(anyhow::Error::from)
        .and_then(|sh| cli.run(&sh));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(Exit(code)) = error.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            eprintln!("error: {error:#}");
            match error.downcast_ref::<UsageError>() {
                Some(_) => ExitCode::from(2),
                None => ExitCode::FAILURE,
            }
        }
    }
}
