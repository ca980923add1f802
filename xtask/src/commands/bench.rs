//! `cargo xtask bench failover [--kills 20] [--json]`: how long a running cluster goes
//! without an agreed leader when its leader dies (how it is measured: `lab::failover`).

use lab::failover;
use xshell::Shell;

use crate::cluster::Cluster;

/// Measurements on a running cluster.
#[derive(Debug, clap::Args)]
pub struct Bench {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// Kill the leader again and again; time until the survivors agree on a new one.
    Failover(Failover),
}

/// Kill the leader repeatedly and time the failovers (Docker runtime).
#[derive(Debug, clap::Args)]
struct Failover {
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    kills: u32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

impl Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self.which {
            Which::Failover(failover) => failover.run(sh),
        }
    }
}

impl Failover {
    fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let Cluster {
            project,
            state,
            runtime,
        } = &mut cluster;
        let json = self.json;
        let report = failover::measure(
            sh,
            project,
            runtime.as_ref(),
            state,
            self.kills,
            |number, round| {
                if !json {
                    println!(
                    "kill {number:>3}: node {} (led term {}) -> node {} leads term {} {:.0} ms after the exit (the kill command took {:.0} ms)",
                    round.killed, round.old_term, round.new_leader, round.new_term, round.failover_ms, round.kill_command_ms
                );
                }
            },
        );
        // Restarted members may have new pids, and shapes were made again.
        cluster.save()?;
        let report = report?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "failover over {} kills, from the leader's exit to an agreed new leader: min {:.0} ms, median {:.0} ms, max {:.0} ms (mean {:.0} ms; the kill command took up to {:.0} ms to return)",
                report.kills,
                report.min_ms,
                report.median_ms,
                report.max_ms,
                report.mean_ms,
                report.kill_command_max_ms
            );
        }
        Ok(())
    }
}
