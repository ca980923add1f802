//! `cargo xtask bench cache`: Flotilla's cache hits beside nginx proxy_cache over TLS 1.3
//! (how it is measured: `lab::cachebench`), and `cargo xtask bench failover [--kills 20]
//! [--json]`: how long a running cluster goes without an agreed leader when its leader dies
//! (`lab::failover`).

use lab::cachebench::{
    self, parse_sizes, DEFAULT_SECONDS, DEFAULT_SIZES, QUICK_SECONDS, QUICK_SIZES,
};
use lab::project::{parse_prefix, Project};
use lab::state::RuntimeKind;
use lab::{docker, failover};
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
    /// Cache hits per second, Flotilla beside nginx proxy_cache over TLS 1.3, side by side.
    Cache(Cache),
    /// Kill the leader again and again; time until the survivors agree on a new one.
    Failover(Failover),
}

/// Serve the same objects from nginx proxy_cache (TLS 1.3, wrk -t1) and from a one-edge
/// Flotilla cluster (client bench), servers on core 0 and load on core 1, every measured
/// response a cache hit; print one table with the floors of this machine above it. Installs
/// nginx-light and wrk with apt-get when they are missing. Exits 1 when a cell is incomplete.
#[derive(Debug, clap::Args)]
struct Cache {
    /// Object sizes, comma-separated (k = 1024 bytes, m = 1024 k) [default: 10k,100k,1m,5m;
    /// with --quick 10k,1m].
    #[arg(long, value_name = "LIST", value_parser = parse_size_list)]
    sizes: Option<SizeList>,
    /// Requests in flight at once, for wrk and client bench alike.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Seconds of load per size and server [default: 8; with --quick 2].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: Option<u32>,
    /// Which Flotilla runtimes to measure [default: both when a Docker engine answers, else
    /// process].
    #[arg(long, value_enum)]
    runtime: Option<RuntimeChoice>,
    /// A smoke run for CI: two sizes, 2 s each.
    #[arg(long)]
    quick: bool,
    /// Name prefix of the bench clusters [default: <the checkout's prefix>_bench].
    #[arg(long = "name", value_name = "PREFIX", value_parser = parse_prefix)]
    prefix: Option<String>,
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

/// The sizes of `--sizes`, one value for clap (a bare `Vec` would be taken as many values).
#[derive(Clone, Debug)]
struct SizeList(Vec<u64>);

fn parse_size_list(text: &str) -> Result<SizeList, String> {
    parse_sizes(text).map(SizeList)
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RuntimeChoice {
    Process,
    Docker,
    Both,
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
            Which::Cache(cache) => cache.run(sh),
            Which::Failover(failover) => failover.run(sh),
        }
    }
}

impl Cache {
    fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let engine = || docker::engine(sh).is_ok();
        let runtimes = match self.runtime {
            Some(RuntimeChoice::Process) => vec![RuntimeKind::Process],
            Some(RuntimeChoice::Docker) => vec![RuntimeKind::Docker],
            Some(RuntimeChoice::Both) => vec![RuntimeKind::Process, RuntimeKind::Docker],
            None if engine() => vec![RuntimeKind::Process, RuntimeKind::Docker],
            None => {
                eprintln!(
                    "bench cache: no Docker engine answered; measuring the process runtime only"
                );
                vec![RuntimeKind::Process]
            }
        };
        let (default_sizes, default_seconds) = if self.quick {
            (QUICK_SIZES.to_vec(), QUICK_SECONDS)
        } else {
            (DEFAULT_SIZES.to_vec(), DEFAULT_SECONDS)
        };
        let config = cachebench::Config {
            sizes: self.sizes.map_or(default_sizes, |list| list.0),
            concurrency: self.concurrency,
            seconds: self.seconds.unwrap_or(default_seconds),
            runtimes,
            prefix: self
                .prefix
                .unwrap_or_else(|| format!("{}_bench", project.default_prefix())),
            xtask: std::env::current_exe()?,
        };
        let report = cachebench::run(sh, &project, &config)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", cachebench::render(&report));
        }
        let incomplete = report.incomplete();
        for line in &incomplete {
            eprintln!("incomplete: {line}");
        }
        anyhow::ensure!(
            incomplete.is_empty(),
            "{} of the table's cells have no complete numbers (listed above)",
            incomplete.len()
        );
        Ok(())
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
