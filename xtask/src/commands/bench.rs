//! `cargo xtask bench cache`: Flotilla's cache hits beside nginx proxy_cache over TLS 1.3
//! (how it is measured: `lab::cachebench`), and `cargo xtask bench failover [--kills 20]
//! [--load-seconds 60] [--json]`: whether the leader holds under full load, and how long a
//! running cluster goes without an agreed leader when its leader dies (`lab::failover`).

use lab::cachebench::{
    self, parse_sizes, DEFAULT_SECONDS, DEFAULT_SIZES, QUICK_SECONDS, QUICK_SIZES,
};
use lab::project::{parse_prefix, Project};
use lab::state::RuntimeKind;
use lab::{docker, failover, fanout};
use xshell::Shell;

use crate::cluster::Cluster;
use crate::Exit;

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
    /// A minute of full load watched for leader changes, then kill the leader again and again
    /// under a client loop; time until the survivors agree on a new one (Docker runtime).
    Failover(Failover),
    /// Time the leader's replication of images it fetched to their replicas.
    Fanout(Fanout),
}

/// Start a cluster of its own with cold caches and objects of one size, read each object
/// once (every read a miss that the leader fetches and pushes to the replicas), and report
/// the leader's own timing of each fan-out (first push to last acknowledgement): p50, p99,
/// max. The cluster is removed afterwards, also on failure.
#[derive(Debug, clap::Args)]
struct Fanout {
    /// Edges in the cluster.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=64))]
    nodes: u16,
    /// Bytes of each object (k = 1024 bytes, m = 1024 k).
    #[arg(long, default_value = "1m", value_parser = parse_one_size)]
    size: u64,
    /// Objects read, each one fan-out at most (none where the leader already is a replica).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=2000))]
    images: u64,
    /// Where the cluster runs [default: docker when an engine answers, else process].
    #[arg(long, value_enum)]
    runtime: Option<OneRuntime>,
    /// Name prefix of the cluster [default: <the checkout's prefix>_fanout].
    #[arg(long = "name", value_name = "PREFIX", value_parser = parse_prefix)]
    prefix: Option<String>,
    /// Print the report as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OneRuntime {
    Process,
    Docker,
}

fn parse_one_size(text: &str) -> Result<u64, String> {
    match parse_sizes(text)?.as_slice() {
        [size] => Ok(*size),
        _ => Err(format!("`{text}` is not one size (e.g. 1m)")),
    }
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
    /// The Flotilla client checks the SHA-256 digest of one body in N and the size of every
    /// body, as wrk checks nginx's (1: every digest, which measures mostly the client's hashing).
    #[arg(long, value_name = "N", default_value_t = cachebench::DEFAULT_DIGEST_EVERY, value_parser = clap::value_parser!(u64).range(1..))]
    check_digest_every: u64,
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

/// On a running Docker cluster: first a full-load phase (client bench, every node's term and
/// leader polled every 50 ms: an election nobody asked for shows as a new term), then kill the
/// leader again and again under a client loop, timing each failover from the leader's
/// recorded exit to the survivors' agreement and counting the election messages it took.
/// Exits 1 when a read failed during the kills or the leader changed under load.
#[derive(Debug, clap::Args)]
struct Failover {
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    kills: u32,
    /// Seconds of the full-load phase before the kills; 0 skips it.
    #[arg(long, value_name = "S", default_value_t = 60, value_parser = clap::value_parser!(u32).range(0..=3600))]
    load_seconds: u32,
    /// Requests in flight at once during the full-load phase.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Image ids both phases read, A..B (read once first, so the load is mostly hits).
    #[arg(long, value_name = "A..B", default_value = "1..200", value_parser = crate::commands::soak::parse_ids)]
    ids: (u64, u64),
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

impl Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self.which {
            Which::Cache(cache) => cache.run(sh),
            Which::Failover(failover) => failover.run(sh),
            Which::Fanout(fanout) => fanout.run(sh),
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
            digest_every: self.check_digest_every,
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
        let client = lab::client::binary(&cluster.project)?;
        let Cluster {
            project,
            state,
            runtime,
        } = &mut cluster;
        let json = self.json;
        let config = failover::Config {
            kills: self.kills,
            load_seconds: self.load_seconds,
            load_concurrency: self.concurrency,
            ids: self.ids,
        };
        let report = failover::run(
            sh,
            project,
            runtime.as_ref(),
            state,
            &client,
            &config,
            |line| {
                if !json {
                    println!("{line}");
                }
            },
        );
        // Restarted members may have new pids, and shapes were made again.
        cluster.save()?;
        let report = report?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_failover(&report);
        }
        let mut problems = Vec::new();
        if report.reads.failed > 0 {
            problems.push(format!(
                "{} of {} reads failed during the kills (first: {})",
                report.reads.failed,
                report.reads.ok + report.reads.failed,
                report.reads.first_failure.clone().unwrap_or_default()
            ));
        }
        if let Some(load) = report
            .load
            .as_ref()
            .filter(|l| l.new_terms + l.leader_changes > 0)
        {
            problems.push(format!(
                "the leader changed under load ({} new terms, {} changes of a node's view)",
                load.new_terms, load.leader_changes
            ));
        }
        for problem in &problems {
            eprintln!("failed: {problem}");
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Exit(1).into())
        }
    }
}

fn print_failover(report: &failover::FullReport) {
    println!();
    if let Some(load) = &report.load {
        println!(
            "full load: {:.0} s at concurrency {}: {} reads ({} failed), {:.0} req/s, p99 {:.1} ms; node {} led term {}; {} polls of every node ({} unanswered): {} new terms, {} leader changes",
            load.seconds, load.concurrency, load.requests, load.errors, load.requests_per_second, load.p99_ms,
            load.leader, load.term, load.polls, load.unanswered_polls, load.new_terms, load.leader_changes
        );
    }
    let f = &report.failover;
    println!(
        "failover over {} kills, from the leader's exit to an agreed new leader: min {:.0} ms, median {:.0} ms, max {:.0} ms (mean {:.0} ms; the kill command took up to {:.0} ms to return)",
        f.kills, f.min_ms, f.median_ms, f.max_ms, f.mean_ms, f.kill_command_max_ms
    );
    match f.election_messages_median {
        Some(median) => println!(
            "election messages per failover (probes, alives, vote requests, votes sent by the survivors): median {median:.0}"
        ),
        None => println!("election messages per failover: not counted by these nodes"),
    }
    let r = &report.reads;
    println!(
        "client loop through the kills: {} reads, {} failed{}",
        r.ok + r.failed,
        r.failed,
        r.first_failure
            .as_deref()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default()
    );
}

impl Fanout {
    fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let runtime = match self.runtime {
            Some(OneRuntime::Process) => RuntimeKind::Process,
            Some(OneRuntime::Docker) => RuntimeKind::Docker,
            None if docker::engine(sh).is_ok() => RuntimeKind::Docker,
            None => {
                eprintln!("bench fanout: no Docker engine answered; using the process runtime");
                RuntimeKind::Process
            }
        };
        let client = lab::release::build_binaries(sh, &project)?.client;
        let config = fanout::Config {
            nodes: self.nodes,
            size: self.size,
            images: self.images,
            runtime,
            prefix: self
                .prefix
                .unwrap_or_else(|| format!("{}_fanout", project.default_prefix())),
            xtask: std::env::current_exe()?,
            client,
        };
        let report = fanout::run(sh, &project, &config)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "replication fan-out at N={} ({} runtime), {}-byte images, timed by the leader (node {}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms over {} fan-outs ({} pushes acknowledged, {} failed); {} reads, {} failed",
                report.nodes, report.runtime, report.size_bytes, report.leader, report.p50_ms, report.p99_ms,
                report.max_ms, report.mean_ms, report.fanouts, report.pushes_ok, report.pushes_failed,
                report.reads, report.failed_reads
            );
        }
        anyhow::ensure!(
            report.failed_reads == 0 && report.pushes_failed == 0,
            "{} reads and {} pushes failed; the figures above may not be a healthy cluster's",
            report.failed_reads,
            report.pushes_failed
        );
        Ok(())
    }
}
