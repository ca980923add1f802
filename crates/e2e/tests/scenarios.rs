//! Shipped scenarios on scratch containers: `cargo xtask scenario run` on the test's cluster
//! must pass its checker, leave a history, a verdict and a report, and leave the cluster
//! whole. A short subset of `scenarios/` (leader-kill-loop: kills and restarts;
//! majorities-ring: a non-transitive partition); every shipped scenario runs in the
//! simulation in `cargo test -p flotilla-scenario`. Each report is opened in headless
//! chromium (`tests/report.rs` says how). Runs only when `FLOTILLA_E2E=1` is set.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use e2e::{Cluster, NODES};

/// Budget of one scenario: its 40 s, the client's last reads, the repairs and the report.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(4 * 60);

/// The shipped scenarios this suite runs.
const SUBSET: [&str; 2] = ["leader-kill-loop", "majorities-ring"];

#[test]
fn shipped_scenarios_pass_their_checker_on_containers() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("scenarios")?;
    cluster.wait_highest_leads()?;
    for name in SUBSET {
        let file = cluster
            .project()
            .root
            .join("scenarios")
            .join(format!("{name}.toml"));
        let file = file.to_string_lossy();
        let stdout = cluster.xtask_ok(&["scenario", "run", &file], SCENARIO_TIMEOUT)?;
        anyhow::ensure!(
            stdout.contains(&format!("{name} (docker, seed 1, {NODES} nodes): passed")),
            "{name}: no passing verdict in {stdout}"
        );
        let folder: PathBuf = stdout
            .lines()
            .find_map(|line| line.strip_prefix("run folder: "))
            .and_then(|rest| rest.split(" (").next())
            .map(PathBuf::from)
            .with_context(|| format!("{name}: no run folder named in {stdout}"))?;
        for file in [
            "history.jsonl",
            "verdict.json",
            "timeline.png",
            "timeline.svg",
            "report.html",
        ] {
            anyhow::ensure!(
                folder.join(file).is_file(),
                "{name}: no {file} in {}",
                folder.display()
            );
        }
        // The page of this run in a real browser: no console message, a lane per node.
        let browser = tempfile::tempdir()?;
        let loaded =
            lab::browser::load(cluster.shell(), &folder.join("report.html"), browser.path())?;
        anyhow::ensure!(
            loaded.console.is_empty(),
            "{name}: the report wrote to the console: {:?}",
            loaded.console
        );
        let colours: Vec<(u8, u8, u8)> = scenario::report::lane_colours().collect();
        let lanes = loaded
            .screenshot
            .bands(&colours, 300)
            .into_iter()
            .filter(|&(_, rows)| rows >= 20)
            .count();
        anyhow::ensure!(
            lanes == usize::from(NODES),
            "{name}: the report's screenshot shows {lanes} lanes"
        );
        // Every fault repaired: all members run, no partition table is left.
        anyhow::ensure!(cluster.running_count()? == usize::from(NODES) + 1);
        for index in 1..=NODES {
            anyhow::ensure!(
                !cluster.has_partition_table(index)?,
                "{name}: node {index} still has a partition table"
            );
        }
        cluster.wait_highest_leads()?;
    }
    Ok(())
}
