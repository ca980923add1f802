//! An in-memory network of election state machines on a virtual clock: seeded delays and
//! loss, crashes, restarts with fresh state, partitions, one-way cuts. Every step is reported to
//! the [`Checker`], so tests only script faults and read its verdict.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wire::election::{ElectionKind, ElectionMessage};
use wire::{NodeIndex, Term};

use super::checker::{settled_violation, Checker};
use super::{Config, Election, Output, MAX_TERM_STEP, TERM_CEILING};

/// Shortest delivery delay: never zero, so a reply always lands after its cause.
const MIN_DELAY: Duration = Duration::from_millis(1);

/// Longest delivery delay unless a test changes it: a busy LAN.
pub(super) const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(20);

/// Events the loop may process at one virtual instant before it calls the machine stuck
/// (a `next_wakeup` that never moves forward would otherwise spin forever).
const MAX_EVENTS_PER_INSTANT: u32 = 10_000;

/// Shortest and longest gap between two messages of a faulty member: it floods the cluster
/// with hundreds of messages a second.
const FAULTY_MIN_GAP: Duration = Duration::from_millis(1);
const FAULTY_MAX_GAP: Duration = Duration::from_millis(5);

/// How far below `u64::MAX` (and around the ceiling) a faulty member's "near the top" terms go.
const NEAR_TOP: u64 = 1 << 20;

/// Environment variable that makes the simulation print every delivery and state change
/// (run one seed with `-- --nocapture`).
const TRACE_VARIABLE: &str = "FLOTILLA_SIM_TRACE";

/// A message on the wire, delivered at `at`; `sequence` breaks ties in sending order.
struct InFlight {
    at: Instant,
    sequence: u64,
    from: NodeIndex,
    to: NodeIndex,
    msg: ElectionMessage,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

/// A member gone bad: it runs no state machine and sends forged election messages, with
/// arbitrary terms and kinds, to every other member until it is stopped.
struct Faulty {
    index: NodeIndex,
    next_send: Instant,
}

/// Delay and loss added to everything one node sends (netem on its egress).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Egress {
    pub delay: Duration,
    /// Each message's extra delay is `delay` plus or minus up to this much.
    pub jitter: Duration,
    /// Probability of dropping each message, 0 to 1.
    pub loss: f64,
}

/// The simulated cluster of edges `1..=size`.
pub struct Sim {
    rng: SmallRng,
    start: Instant,
    now: Instant,
    members: Vec<NodeIndex>,
    /// Every configured node; `None` while crashed.
    nodes: BTreeMap<NodeIndex, Option<Election>>,
    queue: BinaryHeap<Reverse<InFlight>>,
    next_sequence: u64,
    /// Partition group of each node; nodes talk only within their group.
    groups: BTreeMap<NodeIndex, usize>,
    /// One-way cuts: messages from `.0` to `.1` are dropped.
    cuts: BTreeSet<(NodeIndex, NodeIndex)>,
    loss: f64,
    max_delay: Duration,
    /// Frozen nodes (SIGSTOP): they keep their state but neither tick nor receive.
    paused: BTreeSet<NodeIndex>,
    /// Extra delay and loss on what a node sends, as netem on its egress.
    egress: BTreeMap<NodeIndex, Egress>,
    #[cfg_attr(not(test), allow(dead_code))]
    without_quorum: bool,
    /// Whether every step checks the settled-cluster property too.
    watch_settled: bool,
    /// Whether to print every delivery and state change (`FLOTILLA_SIM_TRACE` set).
    trace: bool,
    faulty: Option<Faulty>,
    /// Messages forged by faulty members so far.
    pub forged: u64,
    pub checker: Checker,
}

impl Sim {
    /// `size` nodes started together, seeded by `seed`, fully connected, no loss.
    pub fn new(seed: u64, size: u16) -> Sim {
        let start = Instant::now();
        let members: Vec<NodeIndex> = (1..=size).map(NodeIndex).collect();
        let mut sim = Sim {
            rng: SmallRng::seed_from_u64(seed),
            start,
            now: start,
            members: members.clone(),
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            next_sequence: 0,
            groups: members.iter().map(|&index| (index, 0)).collect(),
            cuts: BTreeSet::new(),
            loss: 0.0,
            max_delay: DEFAULT_MAX_DELAY,
            paused: BTreeSet::new(),
            egress: BTreeMap::new(),
            without_quorum: false,
            watch_settled: false,
            trace: std::env::var_os(TRACE_VARIABLE).is_some(),
            faulty: None,
            forged: 0,
            checker: Checker::default(),
        };
        for index in members {
            sim.restart(index.0);
        }
        sim
    }

    /// The same cluster with the deliberately broken no-quorum machines.
    #[cfg(test)]
    pub fn without_quorum(mut self) -> Sim {
        self.without_quorum = true;
        for index in self.members.clone() {
            self.restart(index.0);
        }
        self
    }

    /// Milliseconds of virtual time since the start, for messages.
    pub fn elapsed_ms(&self) -> u128 {
        (self.now - self.start).as_millis()
    }

    pub fn members(&self) -> &[NodeIndex] {
        &self.members
    }

    /// The state machine of node `index`, if it is up.
    pub fn node(&self, index: u16) -> Option<&Election> {
        self.nodes.get(&NodeIndex(index)).and_then(Option::as_ref)
    }

    /// Live nodes grouped by partition, each group sorted.
    pub fn components(&self) -> Vec<Vec<NodeIndex>> {
        let mut by_group: BTreeMap<usize, Vec<NodeIndex>> = BTreeMap::new();
        for (&index, node) in &self.nodes {
            if node.is_some() {
                by_group.entry(self.groups[&index]).or_default().push(index);
            }
        }
        by_group.into_values().collect()
    }

    /// Whether a message from `from` to `to` would be delivered now (loss aside).
    pub fn reachable(&self, from: NodeIndex, to: NodeIndex) -> bool {
        self.node(to.0).is_some()
            && !self.paused.contains(&to)
            && !self.paused.contains(&from)
            && self.groups.get(&from) == self.groups.get(&to)
            && !self.cuts.contains(&(from, to))
    }

    /// Freeze node `index` (SIGSTOP): it keeps its state, but neither ticks nor receives until
    /// [`Sim::resume`]; what is sent to it meanwhile is lost.
    pub fn pause(&mut self, index: u16) {
        self.trace(|| format!("pause {index}"));
        self.paused.insert(NodeIndex(index));
    }

    /// Thaw node `index`: its overdue timers fire at once, as a resumed process's would.
    pub fn resume(&mut self, index: u16) {
        self.trace(|| format!("resume {index}"));
        self.paused.remove(&NodeIndex(index));
    }

    /// Whether node `index` is frozen.
    pub fn is_paused(&self, index: u16) -> bool {
        self.paused.contains(&NodeIndex(index))
    }

    /// Delay and drop what node `index` sends (`None`: send normally again).
    pub fn set_egress(&mut self, index: u16, egress: Option<Egress>) {
        self.trace(|| format!("egress of {index}: {egress:?}"));
        match egress {
            Some(egress) => self.egress.insert(NodeIndex(index), egress),
            None => self.egress.remove(&NodeIndex(index)),
        };
    }

    pub fn crash(&mut self, index: u16) {
        self.trace(|| format!("crash {index}"));
        self.paused.remove(&NodeIndex(index));
        self.nodes.insert(NodeIndex(index), None);
        self.checker.forget(NodeIndex(index));
    }

    /// Start node `index` again with fresh state, as a restarted process would.
    pub fn restart(&mut self, index: u16) {
        let me = NodeIndex(index);
        self.trace(|| format!("start {index} with fresh state"));
        if self
            .faulty
            .as_ref()
            .is_some_and(|faulty| faulty.index == me)
        {
            self.stop_faulty();
        }
        #[cfg_attr(not(test), allow(unused_mut))]
        let mut node = Election::new(Config::default(), me, self.members.clone(), self.now);
        // The broken variant exists only in tests; the flag is never set elsewhere.
        #[cfg(test)]
        if self.without_quorum {
            node = node.without_quorum();
        }
        self.checker.forget(me);
        self.paused.remove(&me);
        self.nodes.insert(me, Some(node));
    }

    /// Node `index` goes bad: its state machine stops (the checker no longer watches it) and
    /// from now on it floods every other member with forged election messages.
    pub fn make_faulty(&mut self, index: u16) {
        self.crash(index);
        self.trace(|| format!("node {index} turns faulty"));
        self.faulty = Some(Faulty {
            index: NodeIndex(index),
            next_send: self.now,
        });
    }

    /// The faulty member stops sending; it stays down (a stopped process) until restarted.
    pub fn stop_faulty(&mut self) {
        if let Some(faulty) = self.faulty.take() {
            self.trace(|| format!("faulty node {} stops", faulty.index));
        }
    }

    /// Put one message on the wire as if member `from` had sent it (a forged or replayed
    /// message: `from` may be running and know nothing of it).
    pub fn inject(&mut self, from: u16, to: u16, msg: ElectionMessage) {
        self.trace(|| format!("inject {from} -> {to}: {msg:?}"));
        self.forged += 1;
        self.route(
            NodeIndex(from),
            vec![Output::Send {
                to: NodeIndex(to),
                msg,
            }],
        );
    }

    /// Split the nodes into `groups`; nodes not listed form one more group.
    pub fn partition(&mut self, groups: &[Vec<u16>]) {
        self.trace(|| format!("partition {groups:?}"));
        for (&index, group) in self.groups.iter_mut() {
            *group = groups
                .iter()
                .position(|members| members.contains(&index.0))
                .unwrap_or(groups.len());
        }
    }

    /// Drop every message from `from` to `to` (the other direction still works).
    pub fn cut(&mut self, from: u16, to: u16) {
        self.trace(|| format!("cut {from} -> {to}"));
        self.cuts.insert((NodeIndex(from), NodeIndex(to)));
    }

    /// Undo every partition and cut.
    pub fn heal(&mut self) {
        self.trace(|| "heal".to_string());
        self.groups.values_mut().for_each(|group| *group = 0);
        self.cuts.clear();
    }

    /// Drop each message with this probability.
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss.clamp(0.0, 1.0);
    }

    /// Deliver each message after a uniform delay between 1 ms and `max_delay`.
    pub fn set_max_delay(&mut self, max_delay: Duration) {
        self.max_delay = max_delay.max(MIN_DELAY);
    }

    /// Check the settled-cluster property after every step from now on.
    pub fn watch_settled(&mut self, watch: bool) {
        self.watch_settled = watch;
        if let Some(violation) = settled_violation(self).filter(|_| watch) {
            self.checker.record(violation);
        }
    }

    /// Let `duration` of virtual time pass.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until(self.now + duration);
    }

    fn run_until(&mut self, end: Instant) {
        let mut last_instant = self.now;
        let mut events_at_instant = 0;
        loop {
            let next_message = self.queue.peek().map(|Reverse(message)| message.at);
            let next_timer = self
                .nodes
                .iter()
                .filter(|(index, _)| !self.paused.contains(index))
                .filter_map(|(_, node)| node.as_ref())
                .map(Election::next_wakeup)
                .min();
            let next_forgery = self.faulty.as_ref().map(|faulty| faulty.next_send);
            let next = next_message
                .into_iter()
                .chain(next_timer)
                .chain(next_forgery)
                .min();
            let Some(next) = next.filter(|&next| next <= end) else {
                self.now = end;
                return;
            };
            self.now = self.now.max(next);
            if self.now == last_instant {
                events_at_instant += 1;
                if events_at_instant > MAX_EVENTS_PER_INSTANT {
                    let message =
                        format!("at {} ms the machines stopped advancing", self.elapsed_ms());
                    self.checker.record(message);
                    return;
                }
            } else {
                last_instant = self.now;
                events_at_instant = 0;
            }
            self.step();
        }
    }

    /// Deliver every message that is due, then tick every node whose timer is due.
    fn step(&mut self) {
        self.forge_if_due();
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(message)| message.at <= self.now)
        {
            let Some(Reverse(message)) = self.queue.pop() else {
                break;
            };
            if !self.reachable(message.from, message.to) {
                continue;
            }
            let now = self.now;
            if let Some(Some(node)) = self.nodes.get_mut(&message.to) {
                if self.trace {
                    let elapsed = now - self.start;
                    let (from, to, msg) = (message.from, message.to, &message.msg);
                    eprintln!("{elapsed:?} {from} -> {to}: {msg:?}");
                }
                let outputs = node.handle(now, message.from, message.msg);
                self.route(message.to, outputs);
            }
        }
        for index in self.members.clone() {
            let now = self.now;
            if self.paused.contains(&index) {
                continue;
            }
            if let Some(Some(node)) = self.nodes.get_mut(&index) {
                if node.next_wakeup() <= now {
                    let outputs = node.tick(now);
                    self.route(index, outputs);
                }
            }
        }
        if self.watch_settled {
            if let Some(violation) = settled_violation(self) {
                self.checker.record(violation);
            }
        }
    }

    /// Let the faulty member send its next forged message if it is due.
    fn forge_if_due(&mut self) {
        let Some(faulty) = &self.faulty else {
            return;
        };
        if faulty.next_send > self.now {
            return;
        }
        let from = faulty.index;
        let gap = self.rng.random_range(FAULTY_MIN_GAP..=FAULTY_MAX_GAP);
        if let Some(faulty) = &mut self.faulty {
            faulty.next_send = self.now + gap;
        }
        let others: Vec<NodeIndex> = self
            .members
            .iter()
            .copied()
            .filter(|&index| index != from)
            .collect();
        let Some(&to) = others.get(self.rng.random_range(0..others.len().max(1))) else {
            return;
        };
        let msg = self.forgery(to);
        self.forged += 1;
        self.route(from, vec![Output::Send { to, msg }]);
    }

    /// An arbitrary election message for `to`: any kind, and a term at the very top, near the
    /// top, anywhere, at or just below the ceiling, one or two steps above `to`'s term (the
    /// most a single message could move it), a plausible next term, or a stale one.
    fn forgery(&mut self, to: NodeIndex) -> ElectionMessage {
        let current = self.node(to.0).map_or(0, |node| node.term().0);
        let size = self.members.len() as u64;
        let term = match self.rng.random_range(0..8) {
            0 => u64::MAX,
            1 => u64::MAX - self.rng.random_range(0..=NEAR_TOP),
            2 => self.rng.random(),
            3 => TERM_CEILING - self.rng.random_range(0..=NEAR_TOP),
            4 => TERM_CEILING + self.rng.random_range(1..=NEAR_TOP),
            5 => current.saturating_add(self.rng.random_range(1..=2 * MAX_TERM_STEP)),
            6 => current.saturating_add(self.rng.random_range(0..=size)),
            _ => self.rng.random_range(0..=current),
        };
        let kind = match self.rng.random_range(0..6) {
            0 => ElectionKind::Election,
            1 => ElectionKind::Alive,
            2 => ElectionKind::VoteRequest,
            3 => ElectionKind::Vote {
                granted: self.rng.random_bool(0.5),
            },
            4 => ElectionKind::Heartbeat,
            _ => ElectionKind::HeartbeatAck,
        };
        ElectionMessage {
            term: Term(term),
            kind,
        }
    }

    fn trace(&self, line: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("{:?} {}", self.now - self.start, line());
        }
    }

    /// Put `from`'s outputs on the wire and report its new state to the checker.
    fn route(&mut self, from: NodeIndex, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, msg } => {
                    if !self.reachable(from, to) || self.rng.random_bool(self.loss) {
                        continue;
                    }
                    let mut delay = self.rng.random_range(MIN_DELAY..=self.max_delay);
                    if let Some(egress) = self.egress.get(&from).copied() {
                        if self.rng.random_bool(egress.loss.clamp(0.0, 1.0)) {
                            continue;
                        }
                        let low = egress.delay.saturating_sub(egress.jitter);
                        delay += self.rng.random_range(low..=egress.delay + egress.jitter);
                    }
                    self.queue.push(Reverse(InFlight {
                        at: self.now + delay,
                        sequence: self.next_sequence,
                        from,
                        to,
                        msg,
                    }));
                    self.next_sequence += 1;
                }
                Output::ViewChanged(view) => {
                    let node = self.node(from.0);
                    if node.map(|node| node.view()) != Some(view) {
                        let message = format!(
                            "at {} ms node {from} announced {view:?} but its state says otherwise",
                            self.elapsed_ms()
                        );
                        self.checker.record(message);
                    }
                }
            }
        }
        if let Some(node) = self.node(from.0) {
            let (role, term, leader) = (node.role(), node.term(), node.leader());
            self.checker.observe(self.elapsed_ms(), from, role, term);
            self.trace(|| format!("node {from}: {role} in term {term}, leader {leader:?}"));
        }
    }
}
