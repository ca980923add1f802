//! The subcommands of `cargo xtask`, one module each, and the dispatcher.

mod attach;
mod bench;
mod build;
mod client;
mod down;
mod kill;
mod logs;
mod netem;
mod partition;
mod pause;
mod restart;
mod scenario;
mod soak;
mod status;
mod test;
mod top;
mod up;

use clap::{Parser, Subcommand};
use xshell::Shell;

use lab::project::Project;

/// Flotilla's automation: build images, run and break clusters, run the checks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(up::Up),
    Down(down::Down),
    Status(status::Status),
    Attach(attach::Attach),
    Logs(logs::Logs),
    Kill(kill::Kill),
    Restart(restart::Restart),
    Pause(pause::Pause),
    Resume(pause::Resume),
    Partition(partition::Partition),
    Heal(partition::Heal),
    Netem(netem::Netem),
    Top(top::Top),
    Bench(bench::Bench),
    Soak(soak::Soak),
    Scenario(scenario::ScenarioCommand),
    Build(build::Build),
    Test(test::Test),
    Client(client::Client),
}

impl Cli {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        // Every command runs from the repository root, wherever it was typed.
        sh.change_dir(Project::locate()?.root);
        match self.command {
            Command::Up(command) => command.run(sh),
            Command::Down(command) => command.run(sh),
            Command::Status(command) => command.run(sh),
            Command::Attach(command) => command.run(sh),
            Command::Logs(command) => command.run(sh),
            Command::Kill(command) => command.run(sh),
            Command::Restart(command) => command.run(sh),
            Command::Pause(command) => command.run(sh),
            Command::Resume(command) => command.run(sh),
            Command::Partition(command) => command.run(sh),
            Command::Heal(command) => command.run(sh),
            Command::Netem(command) => command.run(sh),
            Command::Top(command) => command.run(sh),
            Command::Bench(command) => command.run(sh),
            Command::Soak(command) => command.run(sh),
            Command::Scenario(command) => command.run(sh),
            Command::Build(command) => command.run(sh),
            Command::Test(command) => command.run(sh),
            Command::Client(command) => command.run(sh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_cache_takes_a_size_list_and_refuses_bad_ones() {
        let good = [
            "xtask", "bench", "cache", "--sizes", "10k,1m", "--quick", "--json",
        ];
        assert!(Cli::try_parse_from(good).is_ok());
        for bad in ["3x", "0", "10k,,1m", "65m"] {
            let error =
                Cli::try_parse_from(["xtask", "bench", "cache", "--sizes", bad]).expect_err(bad);
            assert_eq!(error.exit_code(), 2, "--sizes {bad}");
        }
        let error = Cli::try_parse_from(["xtask", "bench", "cache", "--seconds", "0"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn node_counts_outside_1_to_64_are_usage_errors() {
        for bad in ["0", "65", "-1", "x"] {
            let error = Cli::try_parse_from(["xtask", "up", bad]).unwrap_err();
            assert_eq!(error.exit_code(), 2, "up {bad}");
        }
        for good in ["1", "5", "64"] {
            assert!(
                Cli::try_parse_from(["xtask", "up", good]).is_ok(),
                "up {good}"
            );
        }
    }
}
