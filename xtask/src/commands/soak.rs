//! `cargo xtask soak [--kills 50] [--minutes 10] [--seed N] [--json]`: leader kills, then
//! mixed faults, under a client loop; fails when a read failed during the kills, a corrupt
//! byte was refused anywhere, or a member's memory grew (what is checked: `lab::soak`).

use std::time::Duration;

use lab::soak::{self, FaultKind, SoakConfig, SoakReport};
use xshell::Shell;

use crate::cluster::Cluster;
use crate::Exit;

/// Kill leaders, then break the cluster in mixed ways for a while, under load.
#[derive(Debug, clap::Args)]
pub struct Soak {
    /// Leader kills in the first phase (the cluster must run on Docker, which records exits).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    kills: u32,
    /// Minutes of mixed faults (pause, partition, netem, kill) in the second phase; decimals
    /// allowed (`0.5`).
    #[arg(long, default_value_t = 10.0, value_parser = parse_minutes)]
    minutes: f64,
    /// Seed of the fault sequence and the client's ids.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Growth of a member's resident memory over the mixed phase that still counts as flat.
    #[arg(long, default_value_t = 16)]
    rss_growth_mb: u64,
    /// Image ids the client loop reads, A..B.
    #[arg(long, default_value = "1..40", value_parser = parse_ids)]
    ids: (u64, u64),
    /// Kinds of fault in the mixed phase, comma-separated. Without `kill` no member
    /// restarts, so every member's memory is judged.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "pause,partition,netem,kill"
    )]
    faults: Vec<FaultKind>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_minutes(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(minutes) if minutes.is_finite() && (0.0..=24.0 * 60.0).contains(&minutes) => Ok(minutes),
        _ => Err(format!(
            "`{text}` is not a number of minutes from 0 to 1440 (e.g. 10 or 0.5)"
        )),
    }
}

pub(crate) fn parse_ids(text: &str) -> Result<(u64, u64), String> {
    let (first, last) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a range like 1..40"))?;
    let number = |part: &str| {
        part.trim_start_matches('=')
            .parse::<u64>()
            .map_err(|_| format!("`{part}` in `{text}` is not an image id"))
    };
    let (first, last) = (number(first)?, number(last)?);
    if first == 0 || first > last {
        return Err(format!("`{text}` is empty or starts at 0; ids start at 1"));
    }
    Ok((first, last))
}

impl Soak {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let client = lab::client::binary(&cluster.project)?;
        let config = SoakConfig {
            kills: self.kills,
            fault_time: Duration::from_secs_f64(self.minutes * 60.0),
            seed: self.seed,
            rss_growth_limit_kib: self.rss_growth_mb * 1024,
            ids: self.ids,
            faults: self.faults,
        };
        let Cluster {
            project,
            state,
            runtime,
        } = &mut cluster;
        let json = self.json;
        let report = soak::run(
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
        // Restarted members may have new pids, and shapes were made and removed.
        cluster.save()?;
        let report = report?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        if report.problems.is_empty() {
            Ok(())
        } else {
            Err(Exit(1).into())
        }
    }
}

fn print_report(report: &SoakReport) {
    let f = &report.failover;
    println!();
    println!(
        "leader kills: {} (failover median {:.0} ms, max {:.0} ms); reads {} ok, {} failed",
        f.kills, f.median_ms, f.max_ms, report.kill_phase_reads.ok, report.kill_phase_reads.failed
    );
    println!(
        "mixed faults: {}; reads {} ok, {} failed",
        report.faults.len(),
        report.fault_phase_reads.ok,
        report.fault_phase_reads.failed
    );
    if let Some(first) = &report.fault_phase_reads.first_failure {
        println!("  first failed read under mixed faults: {first}");
    }
    println!(
        "corrupt bytes: client refused {}, edges refused {}",
        report.kill_phase_reads.refused_bytes + report.fault_phase_reads.refused_bytes,
        report.edge_digest_mismatches
    );
    println!(
        "resident memory (KiB; flat means after <= before + {}):",
        report.rss_growth_limit_kib
    );
    println!(
        "  {:<28} {:>9} {:>9} {:>9}",
        "member", "before", "peak", "after"
    );
    for m in &report.memory {
        println!(
            "  {:<28} {:>9} {:>9} {:>9}{}",
            m.member,
            m.before_kib,
            m.peak_kib,
            m.after_kib,
            if m.restarted {
                "  (restarted: not compared)"
            } else {
                ""
            }
        );
    }
    if report.problems.is_empty() {
        println!("soak passed (seed {})", report.seed);
    } else {
        for problem in &report.problems {
            println!("FAILED: {problem}");
        }
    }
}
