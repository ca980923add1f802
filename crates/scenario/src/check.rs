//! The checker: what must hold in every history, from a container run or a simulation.
//!
//! - no read returned bytes whose digest differs from the one the canonical signed (or from
//!   what an earlier read of the same image returned);
//! - at most one leader per term, over every observation;
//! - once the network has been still for `settle`, no node leads unless it exchanges packets
//!   both ways with a majority of the configured nodes (live ones, itself included);
//! - after each leader loss (the leader killed, paused, or cut from its majority) a new leader
//!   with a majority within `max_failover`;
//! - outside fault windows (from a fault until `settle` after the cluster is whole again), the
//!   share of reads that succeed in every second is at least `availability`.
//!
//! The first violation in time is what `scenario check` names; the [`Summary`] has the figures
//! the report shows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use wire::history::{Effect, Event, NodeState, Op, OpOutcome};
use wire::ElectionRole;

use crate::file::Scenario;
use crate::history::History;

/// One broken property, at the time of the observation that broke it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    pub at_ms: f64,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {:.3} s: {}", self.at_ms / 1000.0, self.message)
    }
}

/// The figures of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Terms in which some node was seen leading.
    pub elections: usize,
    /// Time from each leader loss to the next leader with a majority.
    pub failovers_ms: Vec<f64>,
    /// Time with no node leading, over the whole run.
    pub leaderless_ms: f64,
    pub reads: usize,
    pub hits: usize,
    pub misses: usize,
    pub errors: usize,
    /// Share of reads that succeeded, over the whole run (`None` without reads).
    pub availability: Option<f64>,
    /// Share of reads that succeeded outside fault windows.
    pub availability_outside_faults: Option<f64>,
    /// Fault windows, as (start, end) in ms.
    pub fault_windows: Vec<(f64, f64)>,
}

impl Summary {
    /// Median and largest failover, in ms.
    pub fn failover_p50_max(&self) -> Option<(f64, f64)> {
        let mut sorted = self.failovers_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let max = *sorted.last()?;
        Some((sorted[(sorted.len() - 1) / 2], max))
    }
}

/// What the checker found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// In time order; empty when the history passed.
    pub violations: Vec<Violation>,
    pub summary: Summary,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The first violation, if any.
    pub fn first(&self) -> Option<&Violation> {
        self.violations.first()
    }
}

/// Who is down, paused and cut off, as the faults so far left it.
#[derive(Debug, Default)]
struct Network {
    nodes: u16,
    down: BTreeSet<u16>,
    paused: BTreeSet<u16>,
    /// Packets dropped from `.0` to `.1`.
    blocked: BTreeSet<(u16, u16)>,
    shaped: BTreeSet<u16>,
    canonical_down: bool,
}

impl Network {
    fn live(&self, node: u16) -> bool {
        !self.down.contains(&node) && !self.paused.contains(&node)
    }

    /// The live nodes `node` exchanges packets with both ways, itself included.
    fn reach(&self, node: u16) -> usize {
        (1..=self.nodes)
            .filter(|&other| self.live(other))
            .filter(|&other| {
                other == node
                    || (!self.blocked.contains(&(node, other))
                        && !self.blocked.contains(&(other, node)))
            })
            .count()
    }

    fn majority(&self) -> usize {
        usize::from(self.nodes / 2 + 1)
    }

    fn has_majority(&self, node: u16) -> bool {
        self.live(node) && self.reach(node) >= self.majority()
    }

    fn whole(&self) -> bool {
        self.down.is_empty()
            && self.paused.is_empty()
            && self.blocked.is_empty()
            && self.shaped.is_empty()
            && !self.canonical_down
    }

    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Kill { members } => {
                for &member in members {
                    match member {
                        0 => self.canonical_down = true,
                        node => {
                            self.down.insert(node);
                        }
                    }
                }
            }
            Effect::Restart { members } => {
                for &member in members {
                    match member {
                        0 => self.canonical_down = false,
                        node => {
                            self.down.remove(&node);
                            self.paused.remove(&node);
                        }
                    }
                }
            }
            Effect::Pause { nodes } => self.paused.extend(nodes),
            Effect::Resume { nodes } => nodes.iter().for_each(|node| {
                self.paused.remove(node);
            }),
            Effect::Partition { blocked, .. } => {
                self.blocked = blocked.iter().map(|&[from, to]| (from, to)).collect();
            }
            Effect::Heal => {
                self.blocked.clear();
                self.shaped.clear();
            }
            Effect::Netem { nodes, .. } => self.shaped.extend(nodes),
            Effect::Skipped { .. } => {}
        }
    }
}

/// A leader lost and not yet replaced.
struct Loss {
    since_ms: f64,
    leader: u16,
    term: u64,
    reported: bool,
}

/// Checks `history` against `scenario`'s expectations.
pub fn check(scenario: &Scenario, history: &History) -> Verdict {
    let nodes = history.header.nodes;
    let settle_ms = scenario.expect.settle.as_secs_f64() * 1000.0;
    let max_failover_ms = scenario
        .expect
        .max_failover
        .map(|d| d.as_secs_f64() * 1000.0);
    // A run interrupted with Ctrl-C ends at its last observation, not at its planned end.
    let last_seen = history.events.iter().map(event_time_ms).fold(0.0, f64::max);
    let end_ms = (history.header.duration_ms as f64).min(last_seen);

    let mut violations = Vec::new();
    let mut summary = Summary::default();

    // Samples and faults in time order, faults first at the same instant.
    let mut timeline: Vec<(u64, u8, &Event)> = history
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Fault(fault) => Some((fault.at_ms, 0, event)),
            Event::Sample(sample) => Some((sample.at_ms, 1, event)),
            Event::Op(_) => None,
        })
        .collect();
    timeline.sort_by_key(|&(at, order, _)| (at, order));

    let mut network = Network {
        nodes,
        ..Network::default()
    };
    let mut views: BTreeMap<u16, NodeState> = BTreeMap::new();
    let mut leader_of_term: BTreeMap<u64, (u16, u64)> = BTreeMap::new();
    let mut last_change_ms = 0.0;
    let mut loss: Option<Loss> = None;
    let mut window_start: Option<f64> = None;
    let mut windows: Vec<(f64, f64)> = Vec::new();
    let mut last_instant: Option<(u64, bool)> = None;

    let current_leader = |views: &BTreeMap<u16, NodeState>, network: &Network| {
        views
            .iter()
            .filter_map(|(&node, state)| match state {
                NodeState::Up {
                    role: ElectionRole::Leader,
                    term,
                    ..
                } if network.has_majority(node) => Some((node, *term)),
                _ => None,
            })
            .max_by_key(|&(_, term)| term)
    };

    for &(at, _, event) in &timeline {
        let at_ms = at as f64;
        match event {
            Event::Fault(fault) => {
                if matches!(fault.effect, Effect::Skipped { .. }) {
                    continue;
                }
                let before = current_leader(&views, &network);
                let was_whole = network.whole();
                network.apply(&fault.effect);
                last_change_ms = at_ms;
                // A dead or paused node's last view no longer holds.
                for node in network.down.iter().chain(&network.paused) {
                    views.remove(node);
                }
                if was_whole && !network.whole() && window_start.is_none() {
                    window_start = Some(at_ms);
                }
                if network.whole() {
                    if let Some(start) = window_start.take() {
                        windows.push((start, (at_ms + settle_ms).min(end_ms)));
                    }
                }
                if let Some((leader, term)) = before {
                    let anyone_can_lead = (1..=nodes).any(|n| network.has_majority(n));
                    if !network.has_majority(leader) && anyone_can_lead && loss.is_none() {
                        loss = Some(Loss {
                            since_ms: at_ms,
                            leader,
                            term,
                            reported: false,
                        });
                    }
                }
            }
            Event::Sample(sample) => {
                if let Some(loss) = loss.as_mut().filter(|loss| !loss.reported) {
                    if let Some(max) = max_failover_ms.filter(|&max| at_ms - loss.since_ms > max) {
                        violations.push(Violation {
                            at_ms: loss.since_ms + max,
                            message: format!(
                                "no new leader within {:.1} s after node {} (leader of term {}) was lost at {:.3} s",
                                max / 1000.0,
                                loss.leader,
                                loss.term,
                                loss.since_ms / 1000.0
                            ),
                        });
                        loss.reported = true;
                    }
                }
                views.insert(sample.node, sample.state);
                if let NodeState::Up {
                    role: ElectionRole::Leader,
                    term,
                    ..
                } = sample.state
                {
                    let node = sample.node;
                    match leader_of_term.get(&term) {
                        Some(&(first, first_at)) if first != node => violations.push(Violation {
                            at_ms,
                            message: format!(
                                "node {node} leads term {term}, which node {first} led at {:.3} s: two leaders in one term",
                                first_at as f64 / 1000.0
                            ),
                        }),
                        Some(_) => {}
                        None => {
                            leader_of_term.insert(term, (node, at));
                        }
                    }
                    if !network.has_majority(node) && at_ms - last_change_ms >= settle_ms {
                        violations.push(Violation {
                            at_ms,
                            message: format!(
                                "node {node} leads term {term} on the minority side: it exchanges packets both ways with {} of {nodes} nodes (itself included), and the network has not changed since {:.3} s",
                                network.reach(node),
                                last_change_ms / 1000.0
                            ),
                        });
                    }
                    if let Some(lost) = &loss {
                        if term > lost.term && network.has_majority(node) {
                            let failover = at_ms - lost.since_ms;
                            summary.failovers_ms.push(failover);
                            loss = None;
                        }
                    }
                }
                // Leaderless time: between two sampling instants, whether anyone led.
                let led = current_leader(&views, &network).is_some();
                if let Some((previous, false)) = last_instant.filter(|&(p, _)| p != at) {
                    summary.leaderless_ms += (at - previous) as f64;
                }
                last_instant = Some((at, led));
            }
            Event::Op(_) => {}
        }
    }
    if let Some(start) = window_start {
        windows.push((start, end_ms));
    }
    if let (Some(lost), Some(max)) = (&loss, max_failover_ms) {
        if !lost.reported && end_ms - lost.since_ms > max {
            violations.push(Violation {
                at_ms: lost.since_ms + max,
                message: format!(
                    "no new leader within {:.1} s after node {} (leader of term {}) was lost at {:.3} s",
                    max / 1000.0,
                    lost.leader,
                    lost.term,
                    lost.since_ms / 1000.0
                ),
            });
        }
    }
    summary.elections = leader_of_term.len();
    summary.fault_windows = windows.clone();

    let ops: Vec<&Op> = history.ops().collect();
    check_reads(&ops, &mut violations);
    check_availability(
        scenario,
        &ops,
        &windows,
        end_ms,
        &mut summary,
        &mut violations,
    );

    violations.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    Verdict {
        violations,
        summary,
    }
}

/// When an observation was made (a read: when it completed).
fn event_time_ms(event: &Event) -> f64 {
    match event {
        Event::Op(op) => op.complete_ms,
        Event::Sample(sample) => sample.at_ms as f64,
        Event::Fault(fault) => fault.at_ms as f64,
    }
}

/// Abbreviates a hex digest for messages.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(16)]
}

/// Every successful read returned the bytes the canonical signed, and the same bytes as
/// every other read of that image.
fn check_reads(ops: &[&Op], violations: &mut Vec<Violation>) {
    let mut seen: BTreeMap<u64, (&str, f64)> = BTreeMap::new();
    let mut by_completion: Vec<&&Op> = ops.iter().collect();
    by_completion.sort_by(|a, b| a.complete_ms.total_cmp(&b.complete_ms));
    for op in by_completion {
        if op.outcome == OpOutcome::Error {
            continue;
        }
        let edge = op
            .edge
            .map_or_else(|| "an edge".to_string(), |e| format!("node {e}"));
        let Some(digest) = op.digest.as_deref() else {
            continue;
        };
        if let Some(expected) = op.expected.as_deref() {
            if digest != expected {
                violations.push(Violation {
                    at_ms: op.complete_ms,
                    message: format!(
                        "a read of image {} from {edge} returned bytes with digest {}…, not the canonical's {}…: a corrupt read",
                        op.id,
                        short(digest),
                        short(expected)
                    ),
                });
                continue;
            }
        }
        match seen.get(&op.id) {
            Some(&(first, first_at)) if first != digest => violations.push(Violation {
                at_ms: op.complete_ms,
                message: format!(
                    "a read of image {} from {edge} returned bytes with digest {}…, but the read at {:.3} s returned {}…: a corrupt read",
                    op.id,
                    short(digest),
                    first_at / 1000.0,
                    short(first)
                ),
            }),
            Some(_) => {}
            None => {
                seen.insert(op.id, (digest, op.complete_ms));
            }
        }
    }
}

/// Per-second availability outside fault windows, and the run's read counts.
fn check_availability(
    scenario: &Scenario,
    ops: &[&Op],
    windows: &[(f64, f64)],
    end_ms: f64,
    summary: &mut Summary,
    violations: &mut Vec<Violation>,
) {
    summary.reads = ops.len();
    summary.hits = ops.iter().filter(|o| o.outcome == OpOutcome::Hit).count();
    summary.misses = ops.iter().filter(|o| o.outcome == OpOutcome::Miss).count();
    summary.errors = ops.iter().filter(|o| o.outcome == OpOutcome::Error).count();
    if ops.is_empty() {
        return;
    }
    summary.availability = Some((summary.reads - summary.errors) as f64 / summary.reads as f64);
    let seconds = (end_ms / 1000.0).ceil() as u64;
    let (mut ok_outside, mut all_outside) = (0usize, 0usize);
    for second in 0..seconds {
        let (start, end) = (second as f64 * 1000.0, (second + 1) as f64 * 1000.0);
        if windows.iter().any(|&(s, e)| s < end && start < e) {
            continue;
        }
        let completed: Vec<&&Op> = ops
            .iter()
            .filter(|op| op.complete_ms >= start && op.complete_ms < end)
            .collect();
        let ok = completed
            .iter()
            .filter(|op| op.outcome != OpOutcome::Error)
            .count();
        let stuck = ops
            .iter()
            .any(|op| op.invoke_ms < start && op.complete_ms >= end);
        ok_outside += ok;
        all_outside += completed.len();
        let share = match completed.len() {
            0 if stuck => 0.0,
            0 => continue,
            n => ok as f64 / n as f64,
        };
        if let Some(wanted) = scenario.expect.availability {
            if share < wanted {
                let first_error = completed
                    .iter()
                    .find_map(|op| op.error.clone())
                    .map(|e| format!(" (first error: {e})"))
                    .unwrap_or_default();
                violations.push(Violation {
                    at_ms: start,
                    message: format!(
                        "outside any fault window only {ok} of {} reads succeeded in this second ({:.0}%, expected at least {:.0}%){first_error}",
                        completed.len(),
                        share * 100.0,
                        wanted * 100.0
                    ),
                });
            }
        }
    }
    summary.availability_outside_faults =
        (all_outside > 0).then(|| ok_outside as f64 / all_outside as f64);
}
