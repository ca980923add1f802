//! The classic election scenarios as a table: start-up, leader crash, leader return, minority
//! and majority partitions, heal, one-way cuts, message loss, forged terms and a faulty member.
//! Each row is a script of faults and expectations run in the simulated network; the history
//! checker runs over every row too.

use std::time::Duration;

use wire::election::{ElectionKind, ElectionMessage};
use wire::{ElectionRole, NodeIndex, Term};

use super::checker::regain_within;
use super::sim::Sim;
use super::{MAX_TERM_STEP, TERM_CEILING};

/// One step of a scenario script.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Let this many milliseconds of virtual time pass.
    Run(u64),
    Crash(u16),
    Restart(u16),
    Partition(&'static [&'static [u16]]),
    /// Drop messages from the first node to the second.
    Cut(u16, u16),
    Heal,
    /// Drop this percentage of messages.
    Loss(u32),
    /// This node leads, alone in its partition, and every live node it can reach follows it in
    /// its term. The term is remembered for the steps below.
    Leader(u16),
    /// As `Leader`, in a higher term than the one remembered.
    NewLeader(u16),
    /// As `Leader`, in the very term remembered: nothing disturbed the leader.
    SameLeader(u16),
    /// None of these nodes leads or knows a leader.
    NoLeader(&'static [u16]),
    /// A message of this kind and term, sent with the first node's identity (as a faulty or
    /// compromised member would) to every other node.
    Forge(u16, u64, ElectionKind),
    /// This node turns faulty: it floods every other node with forged messages.
    Faulty(u16),
    /// The faulty node stops for good; the cluster must then settle within this many
    /// milliseconds (the time is used up whatever happens).
    StopFaultyAndSettleWithin(u64),
    /// No live node is in a term above this.
    TermsAtMost(u64),
}

use Step::*;

struct Case {
    name: &'static str,
    size: u16,
    steps: &'static [Step],
}

/// Virtual time to let an election settle; a dead leader is replaced in about a second.
const SETTLE: u64 = 2000;

/// The table; one row per line of script, so it is kept out of rustfmt's hands.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "start-up: the highest node leads", size: 5,
        steps: &[Run(SETTLE), Leader(5)] },
    Case { name: "leader crash: the next highest leads in a higher term within about a second", size: 5,
        steps: &[Run(SETTLE), Leader(5), Crash(5), Run(1200), NewLeader(4)] },
    Case { name: "leader returns: it takes over in a higher term", size: 5,
        steps: &[Run(SETTLE), Crash(5), Run(SETTLE), NewLeader(4), Restart(5), Run(SETTLE), NewLeader(5)] },
    Case { name: "crashes down to a minority: no leader", size: 5,
        steps: &[Run(SETTLE), Crash(5), Crash(4), Run(SETTLE), NewLeader(3),
                 Crash(3), Run(SETTLE), NoLeader(&[1, 2])] },
    Case { name: "partition 1,2 | 3,4,5: the leader keeps its term, the minority has none", size: 5,
        steps: &[Run(SETTLE), Leader(5), Partition(&[&[1, 2], &[3, 4, 5]]), Run(SETTLE),
                 SameLeader(5), NoLeader(&[1, 2])] },
    Case { name: "partition 4,5 | 1,2,3: the cut-off leader steps down, 3 leads, heal gives 5 back", size: 5,
        steps: &[Run(SETTLE), Leader(5), Partition(&[&[4, 5], &[1, 2, 3]]), Run(SETTLE),
                 NoLeader(&[4, 5]), NewLeader(3), Heal, Run(SETTLE), NewLeader(5)] },
    Case { name: "heal after a long minority partition: one leader again", size: 5,
        steps: &[Run(SETTLE), Partition(&[&[1, 2], &[3, 4, 5]]), Run(3 * SETTLE), Heal, Run(SETTLE),
                 Leader(5)] },
    Case { name: "one-way cut leader to follower: the follower probes but nobody is unseated", size: 5,
        steps: &[Run(SETTLE), Leader(5), Cut(5, 2), Run(SETTLE), SameLeader(5)] },
    Case { name: "one-way cut follower to leader: the leader keeps its majority", size: 5,
        steps: &[Run(SETTLE), Leader(5), Cut(2, 5), Run(SETTLE), SameLeader(5)] },
    Case { name: "20% message loss: the leader holds its term", size: 5,
        steps: &[Run(SETTLE), Leader(5), Loss(20), Run(3000), SameLeader(5)] },
    Case { name: "three nodes: crash and return of the leader", size: 3,
        steps: &[Run(SETTLE), Leader(3), Crash(3), Run(SETTLE), NewLeader(2), Restart(3), Run(SETTLE),
                 NewLeader(3)] },
    Case { name: "heartbeat with term u64::MAX: refused, the leader keeps its term", size: 5,
        steps: &[Run(SETTLE), Leader(5), Forge(1, u64::MAX, ElectionKind::Heartbeat), Run(SETTLE),
                 SameLeader(5), TermsAtMost(MAX_TERM_STEP)] },
    Case { name: "heartbeat with term u64::MAX from the node that owns it: refused all the same", size: 5,
        steps: &[Run(SETTLE), Leader(5), Forge(5, u64::MAX, ElectionKind::Heartbeat), Run(SETTLE),
                 SameLeader(5), TermsAtMost(MAX_TERM_STEP)] },
    Case { name: "vote request and probe just above the ceiling: refused", size: 3,
        steps: &[Run(SETTLE), Leader(3), Forge(3, TERM_CEILING + 3, ElectionKind::VoteRequest),
                 Forge(1, TERM_CEILING + 1, ElectionKind::Election), Run(SETTLE), SameLeader(3),
                 TermsAtMost(MAX_TERM_STEP)] },
    Case { name: "a far term from one member moves a node one step at most, the Bully leader again", size: 5,
        steps: &[Run(SETTLE), Leader(5), Forge(2, 10 * MAX_TERM_STEP, ElectionKind::Heartbeat),
                 Run(SETTLE), Leader(5), TermsAtMost(2 * MAX_TERM_STEP)] },
    Case { name: "a faulty member floods for 2 s: the Bully leader again within 3 s after it stops", size: 5,
        steps: &[Run(SETTLE), Leader(5), Faulty(2), Run(2000), StopFaultyAndSettleWithin(3000), Leader(5),
                 TermsAtMost(TERM_CEILING)] },
    Case { name: "the leader turns faulty: the next highest leads within 3 s after it stops", size: 5,
        steps: &[Run(SETTLE), Leader(5), Faulty(5), Run(2000), StopFaultyAndSettleWithin(3000), NewLeader(4),
                 TermsAtMost(TERM_CEILING)] },
    Case { name: "three nodes, one faulty: the two others agree again", size: 3,
        steps: &[Run(SETTLE), Leader(3), Faulty(1), Run(3000), StopFaultyAndSettleWithin(3000), Leader(3),
                 TermsAtMost(TERM_CEILING)] },
];

/// Checks that `index` leads as described at [`Step::Leader`] and returns its term.
fn leads(sim: &Sim, index: u16) -> Result<Term, String> {
    let leader = NodeIndex(index);
    let node = sim.node(index).ok_or(format!("node {index} is down"))?;
    if node.role() != ElectionRole::Leader {
        return Err(format!(
            "node {index} is {} in term {}",
            node.role(),
            node.term()
        ));
    }
    let component = sim
        .components()
        .into_iter()
        .find(|component| component.contains(&leader))
        .unwrap_or_default();
    for peer in component {
        let Some(view) = sim.node(peer.0) else {
            continue;
        };
        if peer != leader && view.role() == ElectionRole::Leader {
            return Err(format!("node {peer} leads too, in term {}", view.term()));
        }
        let follows = view.leader() == Some(leader) && view.term() == node.term();
        if sim.reachable(leader, peer) && !follows {
            return Err(format!(
                "node {peer} sees leader {:?} in term {}, not {index} in term {}",
                view.leader(),
                view.term(),
                node.term()
            ));
        }
    }
    Ok(node.term())
}

fn run_case(seed: u64, case: &Case) -> Result<(), String> {
    let mut sim = Sim::new(seed, case.size);
    let mut remembered = Term(0);
    for (position, &step) in case.steps.iter().enumerate() {
        let outcome = match step {
            Run(ms) => {
                sim.run_for(Duration::from_millis(ms));
                Ok(())
            }
            Crash(index) => {
                sim.crash(index);
                Ok(())
            }
            Restart(index) => {
                sim.restart(index);
                Ok(())
            }
            Partition(groups) => {
                let groups: Vec<Vec<u16>> = groups.iter().map(|group| group.to_vec()).collect();
                sim.partition(&groups);
                Ok(())
            }
            Cut(from, to) => {
                sim.cut(from, to);
                Ok(())
            }
            Heal => {
                sim.heal();
                Ok(())
            }
            Loss(percent) => {
                sim.set_loss(f64::from(percent) / 100.0);
                Ok(())
            }
            Forge(from, term, kind) => {
                let msg = ElectionMessage {
                    term: Term(term),
                    kind,
                };
                for to in 1..=case.size {
                    if to != from {
                        sim.inject(from, to, msg.clone());
                    }
                }
                Ok(())
            }
            Faulty(index) => {
                sim.make_faulty(index);
                Ok(())
            }
            StopFaultyAndSettleWithin(ms) => {
                sim.stop_faulty();
                regain_within(&mut sim, Duration::from_millis(ms));
                sim.checker.verdict()
            }
            TermsAtMost(highest) => sim
                .members()
                .iter()
                .filter_map(|index| sim.node(index.0).map(|node| (index, node.term())))
                .find(|(_, term)| term.0 > highest)
                .map_or(Ok(()), |(index, term)| {
                    Err(format!("node {index} is in term {term}, above {highest}"))
                }),
            Leader(index) => leads(&sim, index).map(|term| remembered = term),
            NewLeader(index) => leads(&sim, index).and_then(|term| {
                if term > remembered {
                    remembered = term;
                    Ok(())
                } else {
                    Err(format!("term {term} is not above {remembered}"))
                }
            }),
            SameLeader(index) => leads(&sim, index).and_then(|term| {
                if term == remembered {
                    Ok(())
                } else {
                    Err(format!("term moved from {remembered} to {term}"))
                }
            }),
            NoLeader(indices) => indices.iter().try_for_each(|&index| match sim.node(index) {
                Some(node) if node.role() == ElectionRole::Leader || node.leader().is_some() => {
                    Err(format!("node {index} sees leader {:?}", node.leader()))
                }
                _ => Ok(()),
            }),
        };
        outcome.map_err(|error| {
            format!(
                "step {position} {step:?} at {} ms: {error}",
                sim.elapsed_ms()
            )
        })?;
    }
    sim.checker.verdict()
}

#[test]
fn classic_scenarios() {
    let mut failures = Vec::new();
    for (seed, case) in (1..).zip(CASES) {
        if let Err(error) = run_case(seed, case) {
            failures.push(format!("{} (seed {seed}): {error}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A dead leader must be replaced in about a second of virtual time.
const MAX_FAILOVER: Duration = Duration::from_millis(1200);

/// Resolution of the failover measurement.
const FAILOVER_STEP: Duration = Duration::from_millis(10);

#[test]
fn a_dead_leader_is_replaced_within_about_a_second() {
    for size in 3..=7 {
        for seed in 0..20 {
            let mut sim = Sim::new(seed, size);
            sim.run_for(Duration::from_millis(SETTLE));
            assert!(
                leads(&sim, size).is_ok(),
                "seed {seed}: {size} does not lead"
            );
            sim.crash(size);
            let mut waited = Duration::ZERO;
            while leads(&sim, size - 1).is_err() {
                assert!(
                    waited <= MAX_FAILOVER,
                    "seed {seed}, {size} nodes: no new leader {waited:?} after the crash"
                );
                sim.run_for(FAILOVER_STEP);
                waited += FAILOVER_STEP;
            }
            assert_eq!(sim.checker.verdict(), Ok(()), "seed {seed}, {size} nodes");
        }
    }
}
