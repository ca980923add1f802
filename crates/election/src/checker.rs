//! The properties every simulated history must have: never two leaders in one term, terms that
//! never go down while a node stays up, and once faults stop, exactly the Bully leader in every
//! majority component and none in a minority — reached within a bound after a faulty member
//! stops, in a term from which higher terms remain.

use std::collections::BTreeMap;
#[cfg(test)]
use std::time::Duration;

use wire::{ElectionRole, NodeIndex, Term};

#[cfg(test)]
use super::TERM_CEILING;

use super::sim::Sim;

/// Most violations kept: the first one explains a failure, the rest only repeat it.
const MAX_VIOLATIONS: usize = 8;

/// Watches every state a simulated node passes through.
#[derive(Debug, Default)]
pub struct Checker {
    /// The node seen leading each term, over the whole history.
    leader_of_term: BTreeMap<Term, NodeIndex>,
    /// Each running node's last observed term; cleared when it crashes or restarts.
    last_term: BTreeMap<NodeIndex, Term>,
    violations: Vec<String>,
}

impl Checker {
    /// Node `index` is in `role` and `term` at `at_ms` of virtual time.
    pub fn observe(&mut self, at_ms: u128, index: NodeIndex, role: ElectionRole, term: Term) {
        if let Some(&previous) = self.last_term.get(&index) {
            if term < previous {
                let message =
                    format!("at {at_ms} ms node {index} went back from term {previous} to {term}");
                self.record(message);
            }
        }
        self.last_term.insert(index, term);
        if role == ElectionRole::Leader {
            let first = *self.leader_of_term.entry(term).or_insert(index);
            if first != index {
                let message =
                    format!("at {at_ms} ms node {index} leads term {term}, which node {first} led");
                self.record(message);
            }
        }
    }

    /// Node `index` crashed or restarted: its term starts over.
    pub fn forget(&mut self, index: NodeIndex) {
        self.last_term.remove(&index);
    }

    pub fn record(&mut self, violation: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(violation);
        }
    }

    /// The first violation seen, if any.
    pub fn verdict(&self) -> Result<(), String> {
        match self.violations.first() {
            None => Ok(()),
            Some(first) => Err(first.clone()),
        }
    }
}

/// Resolution of [`regain_within`]'s measurement.
#[cfg(test)]
const REGAIN_STEP: Duration = Duration::from_millis(10);

/// Runs `sim` for `bound` and returns how long it took to settle for good within it (see
/// [`settled_violation`]): messages the faulty member sent before it stopped may still land and
/// unsettle it for a moment, so this is the time after which it stayed settled. Records a
/// violation if the cluster is not settled at the end of `bound`, or if a live node holds a term
/// above [`TERM_CEILING`] (beyond it a cluster could run out of terms to elect a leader in).
#[cfg(test)]
pub(super) fn regain_within(sim: &mut Sim, bound: Duration) -> Duration {
    let mut waited = Duration::ZERO;
    let mut settled_since = Duration::ZERO;
    let mut last_violation = settled_violation(sim);
    while waited < bound {
        if last_violation.is_some() {
            settled_since = waited + REGAIN_STEP;
        }
        sim.run_for(REGAIN_STEP);
        waited += REGAIN_STEP;
        last_violation = settled_violation(sim);
    }
    if let Some(violation) = last_violation {
        sim.checker.record(format!(
            "no single agreed leader {bound:?} after the faulty member stopped: {violation}"
        ));
    }
    let at = sim.elapsed_ms();
    let too_high: Vec<String> = sim
        .members()
        .iter()
        .filter_map(|index| sim.node(index.0).map(|node| (index, node.term())))
        .filter(|(_, term)| term.0 > TERM_CEILING)
        .map(|(index, term)| {
            format!("at {at} ms node {index} holds term {term}, above the ceiling")
        })
        .collect();
    for violation in too_high {
        sim.checker.record(violation);
    }
    settled_since
}

/// Whether the cluster is settled: in every component holding a majority of the configured
/// nodes the highest live node leads and every member follows it in its term; no node of a
/// minority component leads.
pub(super) fn settled_violation(sim: &Sim) -> Option<String> {
    let majority = sim.members().len() / 2 + 1;
    let at = sim.elapsed_ms();
    for component in sim.components() {
        let leaders: Vec<NodeIndex> = component
            .iter()
            .copied()
            .filter(|index| {
                sim.node(index.0)
                    .is_some_and(|node| node.role() == ElectionRole::Leader)
            })
            .collect();
        let Some(&highest) = component.last() else {
            continue;
        };
        if component.len() < majority {
            if !leaders.is_empty() {
                return Some(format!(
                    "at {at} ms minority {component:?} has leader(s) {leaders:?}"
                ));
            }
            continue;
        }
        if leaders != [highest] {
            return Some(format!(
                "at {at} ms majority {component:?} has leader(s) {leaders:?}, expected {highest}"
            ));
        }
        let term = sim.node(highest.0).map(|node| node.term());
        for &index in &component {
            let view = sim.node(index.0).map(|node| (node.term(), node.leader()));
            if view != term.map(|term| (term, Some(highest))) {
                return Some(format!(
                    "at {at} ms node {index} sees (term, leader) {view:?}, \
                     expected ({term:?}, {highest})"
                ));
            }
        }
    }
    None
}
