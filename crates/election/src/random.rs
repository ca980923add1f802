//! Randomized fault schedules over clusters of 3 to 7 nodes, hundreds of seeds, each checked for
//! safety over its whole history and for the settled Bully leader after the last fault. Set
//! `FLOTILLA_SIM_SEED` to replay one seed.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::sim::{Sim, DEFAULT_MAX_DELAY};

/// How many seeds the randomized test runs (each is a few virtual seconds).
const SEEDS: u64 = 500;

/// How many seeds the broken no-quorum variant gets to show the checker catches it.
const BROKEN_SEEDS: u64 = 50;

/// Environment variable that replays one seed instead of all of them.
const SEED_VARIABLE: &str = "FLOTILLA_SIM_SEED";

/// After the last fault, the cluster must have settled within this much virtual time.
const SETTLE_BOUND: Duration = Duration::from_secs(3);

/// After the settle bound, how long the settled property must hold without a break.
const SETTLE_WATCH: Duration = Duration::from_secs(1);

/// Mixed into the seed for the schedule, so it is independent of the network's draws.
const SCHEDULE_SALT: u64 = 0x5eed_f10a_7111_a000;

/// Longest extra delay a fault may put on the network.
const MAX_FAULT_DELAY_MS: u64 = 80;

/// Highest message loss a fault may set, in percent.
const MAX_FAULT_LOSS_PERCENT: u32 = 30;

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Every node `1..=size` put in one of `count` random groups.
fn random_groups(schedule: &mut SmallRng, size: u16, count: usize) -> Vec<Vec<u16>> {
    let mut groups = vec![Vec::new(); count];
    for index in 1..=size {
        groups[schedule.random_range(0..count)].push(index);
    }
    groups
}

fn random_fault(sim: &mut Sim, schedule: &mut SmallRng, size: u16) {
    let node = schedule.random_range(1..=size);
    match schedule.random_range(0..7) {
        0 => sim.crash(node),
        // A restart of a running node models a crash and a quick restart.
        1 => sim.restart(node),
        2 => {
            let count = schedule.random_range(2..=3);
            let groups = random_groups(schedule, size, count);
            sim.partition(&groups);
        }
        3 => {
            let other = schedule.random_range(1..=size);
            if other != node {
                sim.cut(node, other);
            }
        }
        4 => sim.heal(),
        5 => {
            let percent = schedule.random_range(0..=MAX_FAULT_LOSS_PERCENT);
            sim.set_loss(f64::from(percent) / 100.0);
        }
        _ => sim.set_max_delay(millis(schedule.random_range(1..=MAX_FAULT_DELAY_MS))),
    }
}

/// One random history: start-up, a few random faults, then a last fault that leaves a clean
/// network, possibly split in two and with nodes down, which must settle.
fn run_schedule(seed: u64, without_quorum: bool) -> Result<(), String> {
    let mut schedule = SmallRng::seed_from_u64(seed ^ SCHEDULE_SALT);
    let size = schedule.random_range(3..=7);
    let mut sim = Sim::new(seed, size);
    if without_quorum {
        sim = sim.without_quorum();
    }
    sim.run_for(millis(schedule.random_range(0..=1500)));
    for _ in 0..schedule.random_range(2..=8) {
        random_fault(&mut sim, &mut schedule, size);
        sim.run_for(millis(schedule.random_range(50..=1000)));
    }

    sim.heal();
    sim.set_loss(0.0);
    sim.set_max_delay(DEFAULT_MAX_DELAY);
    if schedule.random_bool(0.5) {
        sim.partition(&random_groups(&mut schedule, size, 2));
    }
    let last_fault_ms = sim.elapsed_ms();
    sim.run_for(SETTLE_BOUND);
    sim.watch_settled(true);
    sim.run_for(SETTLE_WATCH);

    sim.checker.verdict().map_err(|violation| {
        format!(
            "seed {seed} ({size} nodes, last fault at {last_fault_ms} ms): {violation}; \
             replay with {SEED_VARIABLE}={seed}"
        )
    })
}

/// The seeds to run: the one in `FLOTILLA_SIM_SEED`, or all of them.
fn seeds() -> Vec<u64> {
    match std::env::var(SEED_VARIABLE) {
        Ok(text) => match text.trim().parse() {
            Ok(seed) => vec![seed],
            Err(_) => panic!("{SEED_VARIABLE}={text} is not a seed (expected a number)"),
        },
        Err(_) => (0..SEEDS).collect(),
    }
}

#[test]
fn random_faults_keep_one_leader_per_term_and_settle_on_the_bully_leader() {
    for seed in seeds() {
        if let Err(failure) = run_schedule(seed, false) {
            panic!("{failure}");
        }
    }
}

/// The checker has teeth: machines that lead without a majority are caught on some seed.
#[test]
fn checker_catches_a_leader_without_quorum() {
    let caught = (0..BROKEN_SEEDS).any(|seed| run_schedule(seed, true).is_err());
    assert!(
        caught,
        "no seed in 0..{BROKEN_SEEDS} caught the no-quorum variant"
    );
}
