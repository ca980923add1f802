//! Randomized fault schedules over clusters of 3 to 7 nodes, hundreds of seeds, each checked for
//! safety over its whole history and for the settled Bully leader after the last fault; and
//! schedules with a faulty member flooding forged election messages, after which the cluster
//! must regain a single agreed leader within a bound. Set `FLOTILLA_SIM_SEED` to replay one seed.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::checker::regain_within;
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

/// Mixed into the seed for the faulty-member schedules.
const FAULTY_SALT: u64 = 0xbad_f10a_7111_a000;

/// Shortest and longest time a faulty member floods the cluster.
const MIN_FAULTY_MS: u64 = 200;
const MAX_FAULTY_MS: u64 = 3000;

/// Once the faulty member stops (and the network is clean, possibly split in two), the cluster
/// must have a single agreed leader in every majority component within this much virtual time:
/// the followers of a forged leader time out, a probe, a vote.
const REGAIN_BOUND: Duration = Duration::from_secs(3);

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

/// What one faulty-member history showed.
struct FaultyRun {
    size: u16,
    forged: u64,
    flood: Duration,
    regained: Duration,
}

/// Whether the faulty member may find an honest node alone while it floods.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// Every node up and the network whole (lossy and slow) while the member floods: every
    /// honest node hears another honest one, so the flood cannot move any node far from the
    /// others, and the cluster settles within [`REGAIN_BOUND`].
    None,
    /// A random partition and maybe a crash while it floods: a node cut off with the faulty
    /// member can be pushed ahead one step per recent window, and the others climb after it
    /// at the same pace, so settling may take [`REGAIN_BOUND`] plus twice the flood.
    PartitionsAndCrashes,
}

/// One history with a faulty member: start-up and a few random faults, then every node up and
/// the network healed but lossy and slow, then one member floods every other with forged
/// messages (any kind, any term: `u64::MAX`, near it, random, one step above the receiver's)
/// for a while and stops for good; on a clean network, possibly split in two, the cluster must
/// then settle within [`REGAIN_BOUND`] and stay settled.
fn run_faulty_schedule(seed: u64, isolation: Isolation) -> Result<FaultyRun, String> {
    let mut schedule = SmallRng::seed_from_u64(seed ^ FAULTY_SALT);
    let size = schedule.random_range(3..=7);
    let mut sim = Sim::new(seed, size);
    sim.run_for(millis(schedule.random_range(0..=1500)));
    for _ in 0..schedule.random_range(0..=4) {
        random_fault(&mut sim, &mut schedule, size);
        sim.run_for(millis(schedule.random_range(50..=1000)));
    }

    sim.heal();
    for index in 1..=size {
        if sim.node(index).is_none() {
            sim.restart(index);
        }
    }
    let percent = schedule.random_range(0..=MAX_FAULT_LOSS_PERCENT);
    sim.set_loss(f64::from(percent) / 100.0);
    sim.set_max_delay(millis(schedule.random_range(1..=MAX_FAULT_DELAY_MS)));
    sim.run_for(millis(schedule.random_range(0..=1000)));
    let faulty = schedule.random_range(1..=size);
    sim.make_faulty(faulty);
    let flood_ms = schedule.random_range(MIN_FAULTY_MS..=MAX_FAULTY_MS);
    if isolation == Isolation::PartitionsAndCrashes {
        sim.partition(&random_groups(&mut schedule, size, 2));
        let crashed = schedule.random_range(1..=size);
        if crashed != faulty && schedule.random_bool(0.3) {
            sim.crash(crashed);
        }
    }
    sim.run_for(millis(flood_ms));
    sim.stop_faulty();
    sim.heal();

    sim.set_loss(0.0);
    sim.set_max_delay(DEFAULT_MAX_DELAY);
    if schedule.random_bool(0.5) {
        sim.partition(&random_groups(&mut schedule, size, 2));
    }
    let stopped_ms = sim.elapsed_ms();
    let flood = millis(flood_ms);
    let bound = match isolation {
        Isolation::None => REGAIN_BOUND,
        Isolation::PartitionsAndCrashes => REGAIN_BOUND + 2 * flood,
    };
    let regained = regain_within(&mut sim, bound);
    sim.watch_settled(true);
    sim.run_for(SETTLE_WATCH);

    let forged = sim.forged;
    sim.checker
        .verdict()
        .map(|()| FaultyRun {
            size,
            forged,
            flood,
            regained,
        })
        .map_err(|violation| {
            format!(
                "seed {seed} ({size} nodes, node {faulty} faulty for {flood_ms} ms, {forged} \
                 forged messages, stopped at {stopped_ms} ms): {violation}; \
                 replay with {SEED_VARIABLE}={seed}"
            )
        })
}

/// Runs every seed with a faulty member; panics at the first failure, else prints the figures.
fn run_faulty_seeds(isolation: Isolation, what: &str) {
    let mut runs = 0;
    let mut forged = 0;
    let mut sizes = (u16::MAX, 0);
    let mut worst = (Duration::ZERO, Duration::ZERO, 0);
    for seed in seeds() {
        match run_faulty_schedule(seed, isolation) {
            Ok(run) => {
                runs += 1;
                forged += run.forged;
                sizes = (sizes.0.min(run.size), sizes.1.max(run.size));
                if run.regained >= worst.0 {
                    worst = (run.regained, run.flood, seed);
                }
            }
            Err(failure) => panic!("{what}: {failure}"),
        }
    }
    let (regained, flood, seed) = worst;
    eprintln!(
        "{what}: {runs} seeds, {}..={} nodes, {forged} forged messages, worst time to regain a \
         single agreed leader after the faulty member stopped {regained:?} (seed {seed}, after \
         a flood of {flood:?})",
        sizes.0, sizes.1
    );
}

#[test]
fn a_faulty_member_cannot_wedge_the_election() {
    run_faulty_seeds(Isolation::None, "faulty member");
}

#[test]
fn a_faulty_member_with_a_node_cut_off_alone_with_it_cannot_wedge_the_election() {
    run_faulty_seeds(
        Isolation::PartitionsAndCrashes,
        "faulty member with partitions and crashes",
    );
}
