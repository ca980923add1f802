//! Every shipped scenario passes its checker in the election simulation, over several seeds,
//! and a seed fixes the history byte for byte.

use std::path::PathBuf;

use scenario::{check, sim};

/// Seeds per shipped scenario in `cargo test`; `cargo xtask scenario sim --seeds 100` runs more.
const SEEDS: u64 = 5;

fn shipped() -> Vec<PathBuf> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_scenario_passes_in_simulation() {
    for path in shipped() {
        let scenario = scenario::load(&path).unwrap();
        for seed in 1..=SEEDS {
            let history = sim::run(&scenario, seed);
            let verdict = check(&scenario, &history);
            assert!(
                verdict.passed(),
                "{} seed {seed}: {}",
                scenario.name,
                verdict.first().unwrap()
            );
            assert!(
                verdict.summary.elections >= 1,
                "{} seed {seed}",
                scenario.name
            );
        }
    }
}

#[test]
fn leader_faults_are_measured_as_failovers_in_simulation() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/leader-kill-loop.toml");
    let scenario = scenario::load(&path).unwrap();
    let verdict = check(&scenario, &sim::run(&scenario, 1));
    assert_eq!(
        verdict.summary.failovers_ms.len(),
        3,
        "three kills, three failovers"
    );
    let (_, max) = verdict.summary.failover_p50_max().unwrap();
    assert!(max <= 3000.0, "{max}");
}

#[test]
fn the_same_seed_gives_the_same_history_byte_for_byte() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/bridge.toml");
    let scenario = scenario::load(&path).unwrap();
    let first = sim::run(&scenario, 42).to_jsonl();
    assert_eq!(first, sim::run(&scenario, 42).to_jsonl());
    assert_ne!(
        first,
        sim::run(&scenario, 43).to_jsonl(),
        "the seed matters"
    );
}
