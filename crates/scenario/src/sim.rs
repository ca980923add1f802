//! A scenario's steps driving the election simulation (`election::sim`): kills are crashes,
//! restarts start a node with fresh state, pauses freeze it, partitions (presets included,
//! one-way too) drop messages, netem delays and drops what a node sends. Every node's role,
//! term and leader is sampled every [`SAMPLE_EVERY`] of virtual time. The result is a
//! [`History`] like a container run's, without client reads (the simulation has no data
//! path), so the same checker reads both. The same seed gives the same history, byte for byte.

use std::collections::BTreeSet;
use std::time::Duration;

use chaos::partition::Cut;
use chaos::presets;
use election::sim::{Egress, Sim};
use wire::history::{Effect, Event, Fault, Header, NodeState, Sample};
use wire::ElectionRole;

use crate::file::{Action, PartitionSpec, Scenario, Target};
use crate::history::History;

/// How long the simulated cluster runs before the scenario starts (its first election takes
/// about half a second).
pub const WARM_UP: Duration = Duration::from_secs(3);
/// How often every node is sampled: 10 Hz, as on containers.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What the simulated cluster looks like from the scenario's side.
struct Driver {
    sim: Sim,
    nodes: u16,
    seed: u64,
    down: BTreeSet<u16>,
    canonical_down: bool,
    shaped: BTreeSet<u16>,
}

/// Runs `scenario` in the simulation with `seed`.
pub fn run(scenario: &Scenario, seed: u64) -> History {
    let mut driver = Driver {
        sim: Sim::new(seed, scenario.nodes),
        nodes: scenario.nodes,
        seed,
        down: BTreeSet::new(),
        canonical_down: false,
        shaped: BTreeSet::new(),
    };
    // A run on containers starts on a cluster that `up` brought up and that has elected, so
    // the simulated cluster boots before the scenario's clock starts; otherwise its first
    // election would count as leaderless time that no container run has.
    driver.sim.run_for(WARM_UP);
    let mut events = Vec::new();
    let end = scenario.duration;
    let mut now = Duration::ZERO;
    let mut next_sample = Duration::ZERO;
    let mut steps = scenario.steps.iter().peekable();
    loop {
        let next_step = steps.peek().map(|step| step.at);
        let next = match next_step {
            Some(at) if at <= next_sample => at,
            _ => next_sample,
        };
        if next > end {
            break;
        }
        driver.sim.run_for(next - now);
        now = next;
        if next_step == Some(now) {
            if let Some(step) = steps.next() {
                let effect = driver.apply(&step.action);
                events.push(Event::Fault(Fault {
                    at_ms: now.as_millis() as u64,
                    step: step.action.to_string(),
                    effect,
                }));
            }
            continue;
        }
        for node in 1..=scenario.nodes {
            events.push(Event::Sample(Sample {
                at_ms: now.as_millis() as u64,
                node,
                state: driver.state(node),
            }));
        }
        next_sample += SAMPLE_EVERY;
    }
    History {
        header: Header {
            scenario: scenario.name.clone(),
            source: "sim".to_string(),
            nodes: scenario.nodes,
            seed,
            started_unix_ms: 0,
            duration_ms: scenario.duration.as_millis() as u64,
        },
        events,
    }
}

impl Driver {
    fn state(&self, node: u16) -> NodeState {
        if self.down.contains(&node) {
            return NodeState::Down;
        }
        if self.sim.is_paused(node) {
            return NodeState::Paused;
        }
        match self.sim.node(node) {
            Some(machine) => NodeState::Up {
                role: machine.role(),
                term: machine.term().0,
                leader: machine.leader().map(|leader| leader.0),
            },
            None => NodeState::Down,
        }
    }

    /// The live, running node that leads in the highest term.
    fn leader(&self) -> Option<u16> {
        (1..=self.nodes)
            .filter(|&node| !self.down.contains(&node) && !self.sim.is_paused(node))
            .filter_map(|node| self.sim.node(node).map(|machine| (node, machine)))
            .filter(|(_, machine)| machine.role() == ElectionRole::Leader)
            .max_by_key(|(_, machine)| machine.term())
            .map(|(node, _)| node)
    }

    /// Resolves `target` to nodes, or says why the step cannot run now.
    fn resolve(&self, target: Target) -> Result<Vec<u16>, String> {
        match target {
            Target::Node(node) => Ok(vec![node]),
            Target::Leader => self
                .leader()
                .map(|leader| vec![leader])
                .ok_or_else(|| "no node leads now".to_string()),
            Target::Canonical => Ok(vec![0]),
            Target::All => Ok((1..=self.nodes).collect()),
        }
    }

    fn apply(&mut self, action: &Action) -> Effect {
        match self.try_apply(action) {
            Ok(effect) => effect,
            Err(reason) => Effect::Skipped { reason },
        }
    }

    fn try_apply(&mut self, action: &Action) -> Result<Effect, String> {
        Ok(match action {
            Action::Kill(target) => {
                let members = self.resolve(*target)?;
                for &member in &members {
                    match member {
                        0 => self.canonical_down = true,
                        node => {
                            self.sim.crash(node);
                            self.down.insert(node);
                        }
                    }
                }
                Effect::Kill { members }
            }
            Action::Restart(target) => {
                let members: Vec<u16> = match target {
                    Target::All => {
                        let mut stopped: Vec<u16> = self.down.iter().copied().collect();
                        if self.canonical_down {
                            stopped.insert(0, 0);
                        }
                        stopped
                    }
                    other => self.resolve(*other)?,
                };
                let members: Vec<u16> = members
                    .into_iter()
                    .filter(|&m| (m == 0 && self.canonical_down) || self.down.contains(&m))
                    .collect();
                if members.is_empty() {
                    return Err("nothing stopped to restart".to_string());
                }
                for &member in &members {
                    match member {
                        0 => self.canonical_down = false,
                        node => {
                            self.sim.restart(node);
                            self.down.remove(&node);
                        }
                    }
                }
                Effect::Restart { members }
            }
            Action::Pause(target) => {
                let nodes = self.resolve(*target)?;
                for &node in &nodes {
                    self.sim.pause(node);
                }
                Effect::Pause { nodes }
            }
            Action::Resume(target) => {
                let nodes: Vec<u16> = self
                    .resolve(*target)?
                    .into_iter()
                    .filter(|&node| self.sim.is_paused(node))
                    .collect();
                if nodes.is_empty() {
                    return Err("nothing paused to resume".to_string());
                }
                for &node in &nodes {
                    self.sim.resume(node);
                }
                Effect::Resume { nodes }
            }
            Action::Partition(spec) => {
                let cut = self.cut(spec)?;
                self.sim.heal();
                let mut blocked = Vec::new();
                for (to, sources) in cut.blocked_sources() {
                    for from in sources {
                        self.sim.cut(from, to);
                        blocked.push([from, to]);
                    }
                }
                blocked.sort_unstable();
                Effect::Partition {
                    cut: cut.describe(),
                    blocked,
                }
            }
            Action::Heal => {
                self.sim.heal();
                for node in std::mem::take(&mut self.shaped) {
                    self.sim.set_egress(node, None);
                }
                Effect::Heal
            }
            Action::Netem { target, shape } => {
                let nodes = self.resolve(*target)?;
                for &node in &nodes {
                    self.sim.set_egress(
                        node,
                        Some(Egress {
                            delay: shape.delay,
                            jitter: shape.jitter,
                            loss: shape.loss,
                        }),
                    );
                    self.shaped.insert(node);
                }
                shape.effect(nodes)
            }
        })
    }

    fn cut(&self, spec: &PartitionSpec) -> Result<Cut, String> {
        match spec {
            PartitionSpec::Groups { groups, one_way } => {
                Cut::new(groups.clone(), *one_way, self.nodes).map_err(|e| e.to_string())
            }
            PartitionSpec::Preset(preset) => {
                presets::cut(*preset, self.nodes, self.leader(), self.seed)
                    .map_err(|e| e.to_string())
            }
        }
    }
}
