//! Shipped scenarios on scratch containers: `cargo xtask scenario run` on the test's cluster
//! must pass its checker, leave a history, a verdict and a report, and leave the cluster
//! whole. A short subset of `scenarios/` (leader-kill-loop: kills and restarts;
//! majorities-ring: a non-transitive partition); every shipped scenario runs in the
//! simulation in `cargo test -p flotilla-scenario`. Each report is opened in headless
//! chromium (`tests/report.rs` says how). A run interrupted with Ctrl-C repairs its faults
//! and keeps its history. Runs only when `FLOTILLA_E2E=1` is set.

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

/// A scenario that pauses, kills and partitions, long enough to be interrupted in the middle.
const INTERRUPTED_SCENARIO: &str = r#"description = "pause, kill and cut, then wait: interrupted with Ctrl-C"
nodes = 5
duration = "60s"

[workload]
concurrency = 2
ids = "1..100"

[[step]]
at = "2s"
pause = 1

[[step]]
at = "3s"
kill = 2

[[step]]
at = "4s"
partition = [[3], [4, 5]]
"#;

/// Longest wait for the run to reach its last fault, and to end after Ctrl-C.
const INTERRUPT_WAIT: Duration = Duration::from_secs(90);

#[test]
fn ctrl_c_repairs_every_fault_and_keeps_the_history() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("interrupt")?;
    cluster.wait_highest_leads()?;
    let file = cluster.work().join("interrupted.toml");
    std::fs::write(&file, INTERRUPTED_SCENARIO)?;
    let said = cluster.work().join("interrupted.out");
    let mut command = cluster.command(&cluster.xtask_path());
    command
        .arg("scenario")
        .arg("run")
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&said)?)
        .stderr(std::process::Stdio::inherit());
    let mut run = command.spawn()?;
    let read_said = || std::fs::read_to_string(&said).unwrap_or_default();
    let started = std::time::Instant::now();
    while !read_said().contains("partitioned") {
        if started.elapsed() > INTERRUPT_WAIT || run.try_wait()?.is_some() {
            let _ = run.kill();
            let _ = run.wait();
            anyhow::bail!("the run never partitioned: {}", read_said());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ctrl-C, as a terminal sends it (xtask's client child is stopped by xtask itself).
    let pid = run.id().to_string();
    anyhow::ensure!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()?
        .success());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = run.try_wait()? {
            break status;
        }
        if started.elapsed() > INTERRUPT_WAIT {
            let _ = run.kill();
            let _ = run.wait();
            anyhow::bail!("the run did not end after Ctrl-C: {}", read_said());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = read_said();
    eprint!("{stdout}");
    anyhow::ensure!(
        status.code() == Some(1),
        "an interrupted run exits 1: {status}"
    );
    anyhow::ensure!(stdout.contains("interrupted: every fault is repaired"));
    let folder: PathBuf = stdout
        .lines()
        .find_map(|line| line.strip_prefix("run folder: "))
        .and_then(|rest| rest.split(" (").next())
        .map(PathBuf::from)
        .context("no run folder named")?;
    let history = std::fs::read_to_string(folder.join("history.jsonl"))?;
    for effect in ["\"pause\"", "\"kill\"", "\"partition\""] {
        anyhow::ensure!(
            history.contains(&format!("\"effect\":{effect}")),
            "the history kept no {effect} fault"
        );
    }
    anyhow::ensure!(
        history.contains("\"kind\":\"op\""),
        "the history kept the reads"
    );
    // The cluster as it was: every member runs (none paused or stopped), no cut is left.
    let containers = cluster.containers()?;
    anyhow::ensure!(
        containers.iter().all(|c| c.status == "running")
            && containers.len() == usize::from(NODES) + 1,
        "not every member runs: {:?}",
        containers
            .iter()
            .map(|c| (&c.name, &c.status))
            .collect::<Vec<_>>()
    );
    for index in 1..=NODES {
        anyhow::ensure!(
            !cluster.has_partition_table(index)?,
            "node {index} still has a partition table"
        );
    }
    cluster.wait_highest_leads()?;
    Ok(())
}
