//! CI's smoke run of `cargo xtask bench cache --quick` on both runtimes: the table comes out
//! complete — every size has numbers for nginx and for Flotilla on each runtime, and every
//! measured response was a cache hit. It asserts nothing about speed: figures come from
//! benchmarks, never from tests. Runs only when `FLOTILLA_E2E=1` is set.

use std::time::Duration;

use e2e::cluster::{xtask_for, PREFIX_START, UP_TIMEOUT};
use e2e::process::{run_with_timeout, text};
use lab::cachebench::{Report, QUICK_SIZES};

/// Budget of the whole quick run: a release build if it is stale, two clusters, nginx.
const BENCH_TIMEOUT: Duration = UP_TIMEOUT;

#[test]
fn bench_cache_quick_fills_the_whole_table() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let project = lab::project::Project::locate()?;
    let prefix = format!("{PREFIX_START}bench");
    // bench cache keeps each cluster's folder of its own; this one is never used.
    let unused = project.target_dir.join("flotilla-e2e").join("bench");
    let mut command = xtask_for(&unused)?;
    command.args([
        "bench",
        "cache",
        "--quick",
        "--json",
        "--runtime",
        "both",
        "--name",
        &prefix,
    ]);
    let output = run_with_timeout(command, None, BENCH_TIMEOUT)?;
    let said = text(&output);
    anyhow::ensure!(
        output.status.success(),
        "bench cache --quick failed ({}):\n{said}",
        output.status
    );
    let report: Report = serde_json::from_slice(&output.stdout)
        .map_err(|error| anyhow::anyhow!("reading the JSON report ({error}):\n{said}"))?;
    assert_eq!(report.runtimes, ["process", "docker"]);
    let sizes: Vec<u64> = report.rows.iter().map(|row| row.size_bytes).collect();
    assert_eq!(sizes, QUICK_SIZES, "one row per quick size");
    assert_eq!(report.incomplete(), Vec::<String>::new(), "{said}");
    for row in &report.rows {
        assert!(row.nginx.complete().is_some(), "{} nginx", row.size);
        for runtime in &report.runtimes {
            let cell = row
                .flotilla
                .get(runtime)
                .and_then(|outcome| outcome.complete());
            assert!(cell.is_some(), "{} flotilla {runtime}", row.size);
        }
    }
    Ok(())
}
