//! `bench fanout`: how long the leader takes to push an image it fetched from the canonical
//! to its replicas. A measurement, not a test.
//!
//! It needs cold caches and images of one known size, so it starts a cluster of its own
//! (through xtask's `up`, in a cluster folder of its own, like `bench cache`) serving a folder
//! of seeded random objects of `--size` bytes, reads every object once through the client
//! (each read a miss: the edge asks the leader, the leader fetches from the canonical and
//! replicates), and then reads the leader's own measurement: the
//! `flotilla_replication_fanout_seconds` summary, timed where the push happens, from the first
//! push to the last acknowledgement, so neither the client nor the poll adds to it. The
//! cluster is taken down afterwards, also on failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use xshell::Shell;

use crate::cachebench::flotilla::{Cluster, Spec};
use crate::cachebench::sizes::{self, Seeded};
use crate::failover;
use crate::project::Project;
use crate::reads;
use crate::scrape;
use crate::state::{RuntimeKind, State};

/// Seed of the objects' bytes (each id its own stream, so no two objects are alike).
const OBJECT_SEED: u64 = 0x6661_6e6f_7574;
/// How long the cluster may take to agree on a leader before the reads start.
const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Budget of one metrics scrape on 127.0.0.1.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long the leader's last pushes may take after the last read returned.
const PUSH_SETTLE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub nodes: u16,
    /// Bytes of each object.
    pub size: u64,
    /// Objects read (each one fan-out).
    pub images: u64,
    pub runtime: RuntimeKind,
    /// Name prefix of the cluster.
    pub prefix: String,
    /// The xtask binary that runs `up` and `down`.
    pub xtask: PathBuf,
    /// The client binary.
    pub client: PathBuf,
}

/// What the leader measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub nodes: u16,
    pub size_bytes: u64,
    pub runtime: String,
    pub leader: u16,
    /// Reads made, and how many failed.
    pub reads: u64,
    pub failed_reads: u64,
    /// Fan-outs the leader timed, and the pushes in them that were acknowledged or failed.
    pub fanouts: u64,
    pub pushes_ok: u64,
    pub pushes_failed: u64,
    /// Quantiles of one fan-out, from the leader's summary (over its last minute).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Starts the cluster, reads every object once, reads the leader's figures, takes the cluster
/// down.
pub fn run(sh: &Shell, project: &Project, config: &Config) -> anyhow::Result<Report> {
    let work = project.target_dir.join("bench-fanout").join(&config.prefix);
    let objects = work.join("objects");
    eprintln!(
        "bench fanout: writing {} objects of {} bytes to {}",
        config.images,
        config.size,
        objects.display()
    );
    write_objects(&objects, config.images, config.size)?;
    eprintln!(
        "bench fanout: starting `{}` ({} edges, {} runtime)",
        config.prefix, config.nodes, config.runtime
    );
    let cluster = Cluster::up(
        sh,
        &config.xtask,
        &work.join("cluster"),
        &Spec {
            prefix: &config.prefix,
            runtime: config.runtime,
            objects: &objects,
            nodes: config.nodes,
            core: None,
        },
    )?;
    let state = State::require(&cluster.dir)?;
    let all: Vec<u16> = state.nodes().map(|n| n.index).collect();
    let (leader, _) = failover::wait_for_leader(&state, &all, None, LEADER_DEADLINE)
        .map_err(|e| e.context("the bench cluster has no agreed leader"))?;
    eprintln!(
        "bench fanout: node {leader} leads; reading each object once (every read a miss the leader replicates)"
    );
    // One read at a time: each fan-out is timed alone, not beside three others.
    let read_config = reads::ReadConfig {
        concurrency: 1,
        ..reads::config(&config.client, &cluster.dir, (1, config.images), 1)
    };
    let read = reads::sweep(&read_config)?;
    std::thread::sleep(PUSH_SETTLE);
    let member = state.member_by_index(leader)?;
    let metrics = scrape::fetch(&member.metrics_url(), SCRAPE_TIMEOUT)
        .with_context(|| format!("reading the metrics of node {leader}, the leader"))?;
    let name = "flotilla_replication_fanout_seconds";
    let quantile = |q: &str| {
        metrics
            .value(name, &[("quantile", q)])
            .map(|seconds| seconds * 1e3)
            .with_context(|| format!("node {leader} exports no {name} (an older node?)"))
    };
    let fanouts = metrics.sum(&format!("{name}_count"), &[]) as u64;
    let total_seconds = metrics.sum(&format!("{name}_sum"), &[]);
    let pushes = |outcome: &str| {
        metrics.sum("flotilla_replication_pushes_total", &[("outcome", outcome)]) as u64
    };
    let report = Report {
        nodes: config.nodes,
        size_bytes: config.size,
        runtime: config.runtime.to_string(),
        leader,
        reads: read.ok + read.failed,
        failed_reads: read.failed,
        fanouts,
        pushes_ok: pushes("ok"),
        pushes_failed: pushes("failed"),
        p50_ms: quantile("0.5")?,
        p99_ms: quantile("0.99")?,
        max_ms: quantile("1")?,
        mean_ms: total_seconds * 1e3 / fanouts.max(1) as f64,
    };
    drop(cluster);
    Ok(report)
}

/// Writes objects `1.bin` ..= `<count>.bin` of `size` bytes each into `dir`
/// ([`sizes::write_seeded`]: rewriting only what differs, removing any other file).
fn write_objects(dir: &Path, count: u64, size: u64) -> anyhow::Result<()> {
    let objects: Vec<Seeded> = (1..=count)
        .map(|id| Seeded {
            id,
            size,
            seed: OBJECT_SEED ^ id,
        })
        .collect();
    sizes::write_seeded(dir, &objects).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn objects_have_the_size_asked_for_and_differ_from_each_other() {
        let dir = std::env::temp_dir().join(format!("flotilla-fanout-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("stale.bin"), b"from an earlier run").unwrap();
        write_objects(&dir, 3, 4096).unwrap();
        let read = |id: u64| fs::read(dir.join(format!("{id}.bin"))).unwrap();
        assert!((1..=3).all(|id| read(id).len() == 4096));
        assert_ne!(read(1), read(2));
        assert!(!dir.join("stale.bin").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
