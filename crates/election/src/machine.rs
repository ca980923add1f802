//! The election state machine: its state, its timers (`tick`) and the transitions between
//! follower, prober, candidate and leader. Message handling is in `receive.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use wire::election::{ElectionKind, ElectionMessage};
use wire::{ElectionRole, NodeIndex, Term};

use super::config::Config;
use super::members::Members;
use super::{Output, View};

/// What the node is doing in its current term.
#[derive(Clone, Debug)]
pub(super) enum Phase {
    /// Following `leader`, or waiting to hear of one. The election timer runs.
    Follower { leader: Option<NodeIndex> },
    /// Sent `Election` to every higher node and waits `alive_wait` for an `Alive`.
    Probing,
    /// Stands in a term it owns and collects votes, its own included.
    Candidate { votes: BTreeSet<NodeIndex> },
    /// Leads its term: heartbeats every interval, counts acknowledgements for its lease.
    Leader {
        /// When each follower last acknowledged a heartbeat of this term.
        acks: BTreeMap<NodeIndex, Instant>,
        next_heartbeat: Instant,
    },
}

/// One edge's Bully election with terms and majority quorum. Sans-IO: feed it messages with
/// [`Election::handle`] and the passage of time with [`Election::tick`], and carry out the
/// [`Output`]s it returns.
#[derive(Clone, Debug)]
pub struct Election {
    pub(super) config: Config,
    pub(super) me: NodeIndex,
    pub(super) members: Members,
    /// The highest term this node has seen since it started.
    pub(super) term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub(super) vote: Option<NodeIndex>,
    pub(super) phase: Phase,
    /// When the follower's election timer, the prober's wait or the candidate's wait ends.
    pub(super) deadline: Instant,
    /// When each peer was last heard from, whatever it said.
    pub(super) last_heard: BTreeMap<NodeIndex, Instant>,
    /// The term each peer's last message carried: what it claims to hold. A faulty peer may
    /// claim anything, so a claim only ever serves as the base of *another* sender's step.
    pub(super) claims: BTreeMap<NodeIndex, Term>,
    /// Before this instant the node sends no catch-up probe (see `receive.rs`).
    pub(super) next_catch_up: Instant,
    /// Before this instant the node takes no lone step (see `terms.rs`).
    pub(super) next_lone_step: Instant,
    /// Votes a candidate needs and acknowledgements a leader needs, itself included.
    pub(super) quorum: usize,
}

impl Election {
    /// A node that has just started: a follower in term 0 that knows no leader. It listens for
    /// one election timeout before it stands, so it learns the current term from heartbeats.
    /// `members` are all configured edges (`me` is added if missing).
    pub fn new(
        config: Config,
        me: NodeIndex,
        members: impl IntoIterator<Item = NodeIndex>,
        now: Instant,
    ) -> Election {
        let members = Members::new(me, members);
        let quorum = members.majority();
        let deadline = now + config.election_timeout_of(me, members.highest());
        Election {
            config,
            me,
            members,
            term: Term(0),
            vote: None,
            phase: Phase::Follower { leader: None },
            deadline,
            last_heard: BTreeMap::new(),
            claims: BTreeMap::new(),
            next_catch_up: now,
            next_lone_step: now,
            quorum,
        }
    }

    /// A variant that needs no quorum (one vote, no acknowledgements): deliberately broken,
    /// used only to show that the simulation checker catches it.
    #[cfg(test)]
    pub(super) fn without_quorum(mut self) -> Election {
        self.quorum = 1;
        self
    }

    /// This node's index.
    pub fn me(&self) -> NodeIndex {
        self.me
    }

    /// The role reported by `status`; a node probing the higher nodes counts as candidate.
    pub fn role(&self) -> ElectionRole {
        match self.phase {
            Phase::Follower { .. } => ElectionRole::Follower,
            Phase::Probing | Phase::Candidate { .. } => ElectionRole::Candidate,
            Phase::Leader { .. } => ElectionRole::Leader,
        }
    }

    /// The highest term this node has seen.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The leader of the current term as far as this node knows.
    pub fn leader(&self) -> Option<NodeIndex> {
        match self.phase {
            Phase::Follower { leader } => leader,
            Phase::Leader { .. } => Some(self.me),
            Phase::Probing | Phase::Candidate { .. } => None,
        }
    }

    /// Role, term and leader together.
    pub fn view(&self) -> View {
        View {
            role: self.role(),
            term: self.term,
            leader: self.leader(),
        }
    }

    /// When the driver must call [`Election::tick`] next, at the latest.
    pub fn next_wakeup(&self) -> Instant {
        match &self.phase {
            Phase::Leader {
                acks,
                next_heartbeat,
            } => match self.lease(acks) {
                Lease::Until(end) => end.min(*next_heartbeat),
                Lease::Unbounded | Lease::Lost => *next_heartbeat,
            },
            _ => self.deadline,
        }
    }

    /// Let time pass: start an election when the timer runs out, stand as candidate when no
    /// higher node answered, give up a term without votes, heartbeat or step down as leader.
    pub fn tick(&mut self, now: Instant) -> Vec<Output> {
        let before = self.view();
        let mut outputs = Vec::new();
        let timer_expired = now >= self.deadline;
        match self.phase {
            Phase::Follower { .. } if timer_expired => self.start_probe(now, &mut outputs),
            Phase::Probing if timer_expired => self.stand(now, &mut outputs),
            Phase::Candidate { .. } if timer_expired => self.follow(now, None),
            Phase::Leader { .. } => self.tick_leader(now, &mut outputs),
            _ => {}
        }
        self.announce(before, &mut outputs);
        outputs
    }

    /// A leader steps down once its lease has run out, and otherwise heartbeats when due.
    fn tick_leader(&mut self, now: Instant, outputs: &mut Vec<Output>) {
        let Phase::Leader {
            acks,
            next_heartbeat,
        } = &self.phase
        else {
            return;
        };
        let lease_holds = match self.lease(acks) {
            Lease::Unbounded => true,
            Lease::Until(end) => now < end,
            Lease::Lost => false,
        };
        if !lease_holds {
            self.follow(now, None);
            return;
        }
        if now < *next_heartbeat {
            return;
        }
        if let Phase::Leader { next_heartbeat, .. } = &mut self.phase {
            *next_heartbeat = now + self.config.heartbeat_interval;
        }
        let message = self.message(ElectionKind::Heartbeat);
        for peer in self.members.others(self.me) {
            outputs.push(Output::Send {
                to: peer,
                msg: message.clone(),
            });
        }
    }

    /// How long the leader's lease holds: until the `quorum - 1`-th freshest acknowledgement
    /// (the leader counts itself) is older than the lease window.
    fn lease(&self, acks: &BTreeMap<NodeIndex, Instant>) -> Lease {
        let needed_from_others = self.quorum.saturating_sub(1);
        if needed_from_others == 0 {
            return Lease::Unbounded;
        }
        let mut times: Vec<Instant> = acks.values().copied().collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        match times.get(needed_from_others - 1) {
            Some(&since) => Lease::Until(since + self.config.leader_lease),
            None => Lease::Lost,
        }
    }

    /// Bully step one: ask every higher node whether it is alive. With no higher node
    /// configured, stand at once.
    pub(super) fn start_probe(&mut self, now: Instant, outputs: &mut Vec<Output>) {
        if self.members.higher_than(self.me).next().is_none() {
            self.stand(now, outputs);
            return;
        }
        self.phase = Phase::Probing;
        self.deadline = now + self.config.alive_wait;
        let message = self.message(ElectionKind::Election);
        for peer in self.members.higher_than(self.me) {
            outputs.push(Output::Send {
                to: peer,
                msg: message.clone(),
            });
        }
    }

    /// No higher node answered: stand in the term this node owns (its current term if it owns
    /// that already, else the next one), vote for itself and ask every other node for its vote.
    ///
    /// Standing again in a term of its own rather than in the next one keeps a node that is cut
    /// off alone from raising its term on every retry: its term only moves past the others'
    /// when it hears of a higher one, so it never drifts out of their reach (`terms.rs`).
    fn stand(&mut self, now: Instant, outputs: &mut Vec<Output>) {
        let term = if self.members.owner_of(self.term) == Some(self.me) {
            Some(self.term)
        } else {
            self.members.next_term_of(self.me, self.term)
        };
        let Some(term) = term else {
            // Term space exhausted: never stand again rather than reuse a term. Unreachable:
            // no node takes a term above `TERM_CEILING`, which leaves owned terms for all.
            self.follow(now, None);
            return;
        };
        self.term = term;
        self.vote = Some(self.me);
        self.phase = Phase::Candidate {
            votes: BTreeSet::from([self.me]),
        };
        self.deadline = now + self.config.vote_wait;
        if self.quorum <= 1 {
            self.lead(now, outputs);
            return;
        }
        let message = self.message(ElectionKind::VoteRequest);
        for peer in self.members.others(self.me) {
            outputs.push(Output::Send {
                to: peer,
                msg: message.clone(),
            });
        }
    }

    /// Votes from a majority arrived: lead the term. Voters count as fresh acknowledgements,
    /// and the first heartbeats go out at once.
    pub(super) fn lead(&mut self, now: Instant, outputs: &mut Vec<Output>) {
        let acks = match &self.phase {
            Phase::Candidate { votes } => votes
                .iter()
                .filter(|&&voter| voter != self.me)
                .map(|&voter| (voter, now))
                .collect(),
            _ => BTreeMap::new(),
        };
        self.phase = Phase::Leader {
            acks,
            next_heartbeat: now,
        };
        self.tick_leader(now, outputs);
    }

    /// Become a follower of `leader` (or of nobody yet) and restart the election timer.
    pub(super) fn follow(&mut self, now: Instant, leader: Option<NodeIndex>) {
        self.phase = Phase::Follower { leader };
        self.deadline = now
            + self
                .config
                .election_timeout_of(self.me, self.members.highest());
    }

    /// A message of this node's current term.
    pub(super) fn message(&self, kind: ElectionKind) -> ElectionMessage {
        ElectionMessage {
            term: self.term,
            kind,
        }
    }

    /// Report a change of role, term or leader to the driver.
    pub(super) fn announce(&self, before: View, outputs: &mut Vec<Output>) {
        let after = self.view();
        if after != before {
            outputs.push(Output::ViewChanged(after));
        }
    }
}

/// How long a leader's lease holds.
enum Lease {
    /// The quorum is this node alone (a one-node cluster): the lease never runs out.
    Unbounded,
    /// Holds until just before this instant unless fresher acknowledgements arrive.
    Until(Instant),
    /// Too few followers have ever acknowledged this term.
    Lost,
}
