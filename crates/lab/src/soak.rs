//! `soak`: a long run of faults under load on a running cluster, checking what a user of an
//! edge cache cares about after hours in production: no read failed while the cluster had a
//! majority, no corrupt byte was ever served, and no member's memory grew.
//!
//! Two phases share one client loop (`client bench` runs back to back, every read checked
//! against the canonical's signature and digest by the client itself):
//! 1. leader kills: [`failover::measure`] kills the leader again and again and restarts it;
//!    every read during the phase must succeed (a majority is always up);
//! 2. mixed faults for a while, one at a time from a seeded random sequence: pause and resume
//!    a node, cut the nodes into two random halves and heal, delay and lose a node's packets,
//!    kill and restart a follower. Reads may fail here (a paused edge holds a client's attempt
//!    until it times out); the phase checks memory and corruption instead.
//!
//! Memory is each member's resident set (`VmRSS` of its process, read from `/proc` through
//! the pid the runtime reports), sampled before the mixed phase, after every fault and at
//! the end once every fault is healed. A member whose process was restarted in the phase is
//! reported but not judged: its memory began again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chaos::partition::Cut;
use chaos::shape::Shape;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use xshell::Shell;

use crate::failover;
use crate::faults;
use crate::project::Project;
use crate::reads::{self, ReadLoop, Reads};
use crate::runtime::Runtime;
use crate::scrape;
use crate::state::State;

/// How long one fault of the mixed phase lasts before it is repaired.
const FAULT_HOLD: Duration = Duration::from_secs(5);
/// How long the cluster may take to agree on a leader again after a fault is repaired.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
/// Budget of one metrics scrape on 127.0.0.1.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(1000);

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// Leader kills in the first phase.
    pub kills: u32,
    /// Length of the mixed-fault phase.
    pub fault_time: Duration,
    /// Seed of the fault sequence and of the read loop's ids.
    pub seed: u64,
    /// Largest growth of a member's resident memory over the mixed phase that still counts
    /// as flat.
    pub rss_growth_limit_kib: u64,
    /// Image ids the read loop asks for (inclusive).
    pub ids: (u64, u64),
    /// The kinds of fault the mixed phase picks from (at least one).
    pub faults: Vec<FaultKind>,
}

/// A kind of fault of the mixed phase. Without `Kill`, no member restarts, so every
/// member's memory is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// Freeze a node for a while, then thaw it.
    Pause,
    /// Cut the nodes into two random halves, then heal.
    Partition,
    /// Delay, jitter and lose a node's packets, then clear it.
    Netem,
    /// Kill a node, then start it again.
    Kill,
}

/// One member's resident memory over the mixed phase, in KiB.
#[derive(Clone, Debug, Serialize)]
pub struct Memory {
    pub member: String,
    pub before_kib: u64,
    pub peak_kib: u64,
    pub after_kib: u64,
    /// Its process was restarted during the phase, so its figures are not compared.
    pub restarted: bool,
}

/// One fault of the mixed phase.
#[derive(Clone, Debug, Serialize)]
pub struct FaultEvent {
    pub at_seconds: f64,
    pub fault: String,
}

/// What a soak saw.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub seed: u64,
    pub failover: failover::Report,
    pub kill_phase_reads: Reads,
    pub faults: Vec<FaultEvent>,
    pub fault_phase_reads: Reads,
    pub memory: Vec<Memory>,
    /// Bodies the edges refused for failing the digest check, summed over the members
    /// still running at the end (`flotilla_digest_mismatches_total`).
    pub edge_digest_mismatches: u64,
    pub rss_growth_limit_kib: u64,
    /// Everything that makes the soak fail, one line each; empty when it passed.
    pub problems: Vec<String>,
}

/// Runs both phases on `state`'s running cluster. `progress` gets one line per event.
pub fn run(
    sh: &Shell,
    project: &Project,
    runtime: &dyn Runtime,
    state: &mut State,
    client: &Path,
    config: &SoakConfig,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(
        state.node_count() >= 3,
        "a soak kills leaders and needs a majority without one: start at least 3 nodes (`cargo xtask up 5`)"
    );
    let interrupted = interrupt_flag();
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let read_config = reads::config(client, &project.cluster_dir, config.ids, config.seed);

    progress("warming the caches (every id once)");
    let warm = reads::sweep(&read_config)?;
    anyhow::ensure!(
        warm.failed == 0,
        "the cluster failed reads before any fault: {}",
        warm.first_failure.unwrap_or_default()
    );

    progress(&format!(
        "phase 1: {} leader kills under load",
        config.kills
    ));
    let reads = ReadLoop::start(&read_config);
    let report = failover::measure(sh, project, runtime, state, config.kills, |n, round| {
        progress(&format!(
            "kill {n}: node {} -> node {} leads term {} after {:.0} ms",
            round.killed, round.new_leader, round.new_term, round.failover_ms
        ));
    });
    let kill_phase_reads = reads.stop();
    let failover = report?;

    progress(&format!(
        "phase 2: mixed faults for {} s under load",
        config.fault_time.as_secs()
    ));
    // Leaders killed in phase 1 came back with empty caches: fill them again, so that the
    // memory compared below is a warm member's and cache growth is not taken for a leak.
    let warm = reads::sweep(&read_config)?;
    anyhow::ensure!(
        warm.failed == 0,
        "reads failed after the leader kills, with no fault in place: {}",
        warm.first_failure.unwrap_or_default()
    );
    let before = resident(sh, runtime, state)?;
    let mut peak = before.clone();
    let mut restarted = Vec::new();
    let mut faults_seen = Vec::new();
    let reads = ReadLoop::start(&read_config);
    let started = Instant::now();
    let mut outcome = Ok(());
    while started.elapsed() < config.fault_time && !interrupted.load(Ordering::SeqCst) {
        let fault = Fault::pick(&mut rng, state.node_count(), &config.faults);
        let at_seconds = started.elapsed().as_secs_f64();
        progress(&format!("{at_seconds:>6.1} s: {}", fault.describe()));
        faults_seen.push(FaultEvent {
            at_seconds,
            fault: fault.describe(),
        });
        if let Fault::KillRestart(index) = fault {
            restarted.push(index);
        }
        outcome = fault.apply(sh, project, runtime, state, interrupted);
        if outcome.is_err() {
            break;
        }
        for (member, kib) in resident(sh, runtime, state)? {
            let entry = peak.entry(member).or_insert(kib);
            *entry = (*entry).max(kib);
        }
        let all: Vec<u16> = state.nodes().map(|n| n.index).collect();
        if let Err(error) = failover::wait_for_leader(state, &all, None, SETTLE_DEADLINE) {
            outcome = Err(error.context("the cluster did not settle after a fault"));
            break;
        }
    }
    let fault_phase_reads = reads.stop();
    // Whatever happened, leave no fault behind.
    repair(sh, project, runtime, state);
    outcome?;
    anyhow::ensure!(
        !interrupted.load(Ordering::SeqCst),
        "interrupted; every fault is repaired"
    );
    let after = resident(sh, runtime, state)?;

    let memory = before
        .iter()
        .map(|(member, before_kib)| Memory {
            member: member.clone(),
            before_kib: *before_kib,
            peak_kib: peak.get(member).copied().unwrap_or(*before_kib),
            after_kib: after.get(member).copied().unwrap_or(0),
            restarted: restarted
                .iter()
                .any(|i| state.member_by_index(*i).is_ok_and(|m| &m.name == member)),
        })
        .collect::<Vec<_>>();
    let edge_digest_mismatches = digest_mismatches(state);
    let mut problems = Vec::new();
    if kill_phase_reads.failed > 0 {
        problems.push(format!(
            "{} reads failed during the leader kills, first: {}",
            kill_phase_reads.failed,
            kill_phase_reads.first_failure.clone().unwrap_or_default()
        ));
    }
    for reads in [&kill_phase_reads, &fault_phase_reads] {
        if reads.refused_bytes > 0 {
            problems.push(format!(
                "the client refused bytes {} times (digest or signature)",
                reads.refused_bytes
            ));
        }
    }
    if edge_digest_mismatches > 0 {
        problems.push(format!(
            "edges refused {edge_digest_mismatches} bodies for a digest mismatch"
        ));
    }
    for m in memory.iter().filter(|m| !m.restarted) {
        if m.after_kib > m.before_kib + config.rss_growth_limit_kib {
            problems.push(format!(
                "{} grew from {} KiB to {} KiB (limit: +{} KiB)",
                m.member, m.before_kib, m.after_kib, config.rss_growth_limit_kib
            ));
        }
    }
    Ok(SoakReport {
        seed: config.seed,
        failover,
        kill_phase_reads,
        faults: faults_seen,
        fault_phase_reads,
        memory,
        edge_digest_mismatches,
        rss_growth_limit_kib: config.rss_growth_limit_kib,
        problems,
    })
}

/// One fault of the mixed phase, held for [`FAULT_HOLD`] and then repaired.
#[derive(Clone, Debug)]
enum Fault {
    Pause(u16),
    Halves(Vec<u16>, Vec<u16>),
    Shape(u16),
    KillRestart(u16),
}

impl Fault {
    fn pick(rng: &mut SmallRng, node_count: u16, kinds: &[FaultKind]) -> Fault {
        let node = rng.random_range(1..=node_count);
        let kind = kinds
            .get(rng.random_range(0..kinds.len().max(1)))
            .copied()
            .unwrap_or(FaultKind::Pause);
        match kind {
            FaultKind::Pause => Fault::Pause(node),
            FaultKind::Partition => {
                let mut nodes: Vec<u16> = (1..=node_count).collect();
                nodes.shuffle(rng);
                let (left, right) = nodes.split_at(usize::from(node_count) / 2);
                let sorted = |side: &[u16]| {
                    let mut side = side.to_vec();
                    side.sort_unstable();
                    side
                };
                Fault::Halves(sorted(left), sorted(right))
            }
            FaultKind::Netem => Fault::Shape(node),
            FaultKind::Kill => Fault::KillRestart(node),
        }
    }

    fn describe(&self) -> String {
        let list = |side: &[u16]| {
            side.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Fault::Pause(node) => format!("pause node {node}"),
            Fault::Halves(left, right) => format!("partition {} | {}", list(left), list(right)),
            Fault::Shape(node) => format!("netem node {node}: {}", shape().describe()),
            Fault::KillRestart(node) => format!("kill node {node}, then restart it"),
        }
    }

    fn apply(
        &self,
        sh: &Shell,
        project: &Project,
        runtime: &dyn Runtime,
        state: &mut State,
        interrupted: &AtomicBool,
    ) -> anyhow::Result<()> {
        match self {
            Fault::Pause(node) => {
                let member = state.member_by_index(*node)?.clone();
                runtime.pause(sh, &member)?;
                hold(interrupted);
                runtime.resume(sh, &member)?;
            }
            Fault::Halves(left, right) => {
                let cut = Cut::new(vec![left.clone(), right.clone()], false, state.node_count())
                    .map_err(anyhow::Error::msg)?;
                faults::partition(sh, runtime, state, cut)?;
                hold(interrupted);
                faults::heal(sh, runtime, state)?;
            }
            Fault::Shape(node) => {
                faults::shape(sh, project, runtime, state, *node, shape())?;
                hold(interrupted);
                faults::unshape(sh, runtime, state, *node)?;
            }
            Fault::KillRestart(node) => {
                let member = state.member_by_index(*node)?.clone();
                runtime.kill(sh, &member)?;
                hold(interrupted);
                runtime.restart(sh, state, *node)?;
                faults::restore(sh, project, runtime, state, &[*node])?;
            }
        }
        Ok(())
    }
}

/// The delay and loss of the mixed phase's netem fault.
fn shape() -> Shape {
    Shape {
        delay_us: 40_000,
        jitter_us: 10_000,
        loss_ppm: 10_000,
    }
}

/// Waits out [`FAULT_HOLD`], or less when interrupted.
fn hold(interrupted: &AtomicBool) {
    let until = Instant::now() + FAULT_HOLD;
    while Instant::now() < until && !interrupted.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Heals the partition, removes every shape, resumes paused members and starts stopped
/// ones; each failure is printed and the rest still done.
pub(crate) fn repair(sh: &Shell, project: &Project, runtime: &dyn Runtime, state: &mut State) {
    // Only a recorded partition: a runtime without partitions would refuse to heal.
    if state.cut().is_some() {
        if let Err(error) = faults::heal(sh, runtime, state) {
            eprintln!("warning: healing the partition: {error:#}");
        }
    }
    let shaped: Vec<u16> = state.netem.keys().copied().collect();
    for index in shaped {
        if let Err(error) = faults::unshape(sh, runtime, state, index) {
            eprintln!("warning: removing node {index}'s netem: {error:#}");
        }
    }
    let Ok(statuses) = runtime.statuses(sh, state) else {
        return;
    };
    let members = state.members.clone();
    for member in members {
        match crate::runtime::status_of(state, &statuses, member.index) {
            crate::runtime::MemberStatus::Paused => {
                if let Err(error) = runtime.resume(sh, &member) {
                    eprintln!("warning: resuming {}: {error:#}", member.label());
                }
            }
            crate::runtime::MemberStatus::Stopped { .. } => {
                let restarted = runtime
                    .restart(sh, state, member.index)
                    .and_then(|()| faults::restore(sh, project, runtime, state, &[member.index]));
                if let Err(error) = restarted {
                    eprintln!("warning: restarting {}: {error:#}", member.label());
                }
            }
            _ => {}
        }
    }
}

/// Resident memory of every running member, in KiB, by member name.
fn resident(
    sh: &Shell,
    runtime: &dyn Runtime,
    state: &State,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let targets = runtime.fault_targets(sh, state, "soak")?;
    targets
        .into_iter()
        .map(|target| {
            let status = std::fs::read_to_string(format!("/proc/{}/status", target.pid))
                .with_context(|| format!("reading the memory of {}", target.name))?;
            let kib = status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no VmRSS line for {}", target.name))?;
            Ok((target.name, kib))
        })
        .collect()
}

/// `flotilla_digest_mismatches_total` summed over the nodes that answer.
fn digest_mismatches(state: &State) -> u64 {
    state
        .nodes()
        .filter_map(|node| scrape::fetch(&node.metrics_url(), SCRAPE_TIMEOUT).ok())
        .filter_map(|metrics| metrics.value("flotilla_digest_mismatches_total", &[]))
        .sum::<f64>() as u64
}

/// A flag set by SIGINT and SIGTERM, so a soak stops between steps and repairs what it broke
/// instead of dying with a partition in place.
pub(crate) fn interrupt_flag() -> &'static AtomicBool {
    static INTERRUPTED: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    &INTERRUPTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_sequence_is_fixed_by_its_seed_and_names_real_nodes() {
        let sequence = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..40)
                .map(|_| Fault::pick(&mut rng, 5, ALL).describe())
                .collect::<Vec<_>>()
        };
        assert_eq!(sequence(7), sequence(7));
        assert_ne!(sequence(7), sequence(8));
        let faults = sequence(7);
        for kind in ["pause", "partition", "netem", "kill"] {
            assert!(
                faults.iter().any(|f| f.starts_with(kind)),
                "{kind} never picked"
            );
        }
        assert!(
            faults
                .iter()
                .all(|f| !f.contains("node 0") && !f.contains("node 6")),
            "{faults:?}"
        );
    }

    const ALL: &[FaultKind] = &[
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Netem,
        FaultKind::Kill,
    ];

    #[test]
    fn only_the_kinds_asked_for_are_picked() {
        let mut rng = SmallRng::seed_from_u64(3);
        let kinds = [FaultKind::Pause, FaultKind::Netem];
        let faults: Vec<String> = (0..40)
            .map(|_| Fault::pick(&mut rng, 5, &kinds).describe())
            .collect();
        assert!(faults
            .iter()
            .all(|f| f.starts_with("pause") || f.starts_with("netem")));
        assert!(faults.iter().any(|f| f.starts_with("pause")));
        assert!(faults.iter().any(|f| f.starts_with("netem")));
    }
}
