//! The short soak: `cargo xtask soak --kills 3 --minutes 0.75` on a cluster of scratch
//! containers. Not one read may fail while leaders die, no member may grow its memory, no
//! corrupt byte may be refused anywhere, and the soak must leave no fault behind. The long
//! soak (`--kills 50 --minutes 10`) is run by hand; its figures are in the hardening notes.
//! The test brings up its own cluster (see `e2e::Cluster`) and runs only when
//! `FLOTILLA_E2E=1` is set.

use std::time::Duration;

use anyhow::Context;
use e2e::{Cluster, NODES};

/// Budget of the soak command: three kill rounds and 45 s of faults, each settled.
const SOAK_TIMEOUT: Duration = Duration::from_secs(8 * 60);

#[test]
fn a_short_soak_loses_no_read_and_leaves_the_cluster_whole() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("soak")?;
    cluster.wait_highest_leads()?;
    let output = cluster.xtask(
        &[
            "soak",
            "--kills",
            "3",
            "--minutes",
            "0.75",
            "--seed",
            "5",
            "--json",
        ],
        SOAK_TIMEOUT,
    )?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "soak printed no JSON report (exit {:?}): {stdout}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    eprintln!("{report:#}");
    let problems = report["problems"].as_array().context("a problems list")?;
    anyhow::ensure!(
        problems.is_empty() && output.status.success(),
        "the soak failed: {problems:?}"
    );
    let number = |pointer: &str| {
        report
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {pointer} in the report"))
    };
    anyhow::ensure!(number("/failover/kills")? == 3, "not every kill was made");
    anyhow::ensure!(
        number("/kill_phase_reads/ok")? > 0 && number("/fault_phase_reads/ok")? > 0,
        "the client loop read nothing"
    );
    anyhow::ensure!(number("/kill_phase_reads/failed")? == 0);
    let faults = report["faults"].as_array().context("a faults list")?;
    anyhow::ensure!(!faults.is_empty(), "no fault was made in the mixed phase");
    let memory = report["memory"].as_array().context("a memory table")?;
    anyhow::ensure!(
        memory.len() == usize::from(NODES) + 1,
        "memory of {} members, not every member's: {memory:?}",
        memory.len()
    );
    // Nothing left behind: every member runs and answers, no partition table remains.
    anyhow::ensure!(cluster.running_count()? == usize::from(NODES) + 1);
    for index in 1..=NODES {
        anyhow::ensure!(
            !cluster.has_partition_table(index)?,
            "node {index} still has a partition table"
        );
    }
    cluster.ping_all()?;
    Ok(())
}
