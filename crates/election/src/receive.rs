//! How the election state machine answers each message kind: the term rules first (stale
//! messages are refused, higher terms adopted), then one handler per kind.

use std::time::Instant;

use wire::election::{ElectionKind, ElectionMessage};
use wire::{NodeIndex, Term};

use super::machine::{Election, Phase};
use super::terms::{step, Step, StepInput, TERM_CEILING};
use super::Output;

impl Election {
    /// Take in one message from peer `from` (as named by its certificate, never by the
    /// message). Messages from unknown indices or from this node itself are ignored.
    pub fn handle(&mut self, now: Instant, from: NodeIndex, msg: ElectionMessage) -> Vec<Output> {
        let before = self.view();
        let mut outputs = Vec::new();
        if from != self.me && self.members.contains(from) {
            self.receive(now, from, msg, &mut outputs);
        }
        self.announce(before, &mut outputs);
        outputs
    }

    fn receive(
        &mut self,
        now: Instant,
        from: NodeIndex,
        msg: ElectionMessage,
        outputs: &mut Vec<Output>,
    ) {
        self.last_heard.insert(from, now);
        self.claims.insert(from, msg.term);

        // Bully fence, before any term rule: a candidate lower than a live node this one knows
        // of can neither win its vote nor move its term, so it cannot unseat a live higher
        // leader however high a term it has reached while cut off.
        if msg.kind == ElectionKind::VoteRequest && from < self.highest_live(now) {
            self.reply(from, ElectionKind::Vote { granted: false }, outputs);
            if from < self.me {
                self.answer_lower_node(now, outputs);
            }
            return;
        }

        if msg.term < self.term {
            // Never act on a stale message; answer those that expect an answer with the
            // current term, so the sender catches up (a stale leader then steps down).
            let answer = match msg.kind {
                ElectionKind::Election => Some(ElectionKind::Alive),
                ElectionKind::VoteRequest => Some(ElectionKind::Vote { granted: false }),
                ElectionKind::Heartbeat => Some(ElectionKind::HeartbeatAck),
                ElectionKind::Alive | ElectionKind::Vote { .. } | ElectionKind::HeartbeatAck => {
                    None
                }
            };
            if let Some(kind) = answer {
                self.reply(from, kind, outputs);
            }
            return;
        }
        if msg.term > self.term {
            let input = StepInput {
                term: msg.term,
                own: self.term,
                base: self.reach_base(now, from),
                from_owner: self.members.owner_of(msg.term) == Some(from),
                round: u64::from(self.members.highest().0),
                lone_step_allowed: now >= self.next_lone_step,
            };
            let Step::Adopt { term, lone } = step(input) else {
                // A faulty member could send any term: this message alone cannot move the node
                // there. Ask everyone for their terms, so that a node that really is behind
                // hears a third member vouch for the term.
                if msg.term.0 <= TERM_CEILING {
                    self.ask_for_terms(now, outputs);
                }
                return;
            };
            if lone {
                self.next_lone_step = now + self.config.recent_window;
                self.ask_for_terms(now, outputs);
            }
            self.term = term;
            self.vote = None;
            self.follow(now, None);
            if term != msg.term {
                // Climbed part of the way: the message itself is of a term still above ours.
                return;
            }
        }

        match msg.kind {
            ElectionKind::Election => self.on_election(now, from, outputs),
            ElectionKind::Alive => self.on_alive(now, from),
            ElectionKind::VoteRequest => self.on_vote_request(now, from, outputs),
            ElectionKind::Vote { granted } => self.on_vote(now, from, granted, outputs),
            ElectionKind::Heartbeat => self.on_heartbeat(now, from, outputs),
            ElectionKind::HeartbeatAck => self.on_heartbeat_ack(now, from),
        }
    }

    /// A lower node probes: say we are alive, and run our own election unless we lead, follow
    /// a higher leader, or are already electing.
    fn on_election(&mut self, now: Instant, from: NodeIndex, outputs: &mut Vec<Output>) {
        if from > self.me {
            // Probes only go up: a higher node asks for terms (see `ask_for_terms`). Answer
            // with ours and do nothing else.
            self.reply(from, ElectionKind::Alive, outputs);
            return;
        }
        self.reply(from, ElectionKind::Alive, outputs);
        self.answer_lower_node(now, outputs);
    }

    /// A lower node wants a leader: Bully says the higher live node runs its own election.
    /// Nothing to do if this node leads, follows a higher leader, or is electing already.
    fn answer_lower_node(&mut self, now: Instant, outputs: &mut Vec<Output>) {
        if let Phase::Follower { leader } = self.phase {
            if leader.is_none_or(|leader| leader < self.me) {
                self.start_probe(now, outputs);
            }
        }
    }

    /// A higher node is alive: stop electing and give it an election timeout to take over.
    fn on_alive(&mut self, now: Instant, from: NodeIndex) {
        let electing = matches!(self.phase, Phase::Probing | Phase::Candidate { .. });
        if from > self.me && electing {
            self.follow(now, None);
        }
    }

    /// A candidate at least as high as every live node we know asks for our vote in the
    /// current term: grant it if the term is the candidate's own and our vote is free.
    fn on_vote_request(&mut self, now: Instant, from: NodeIndex, outputs: &mut Vec<Output>) {
        let owns_term = self.members.owner_of(self.term) == Some(from);
        let vote_free = self.vote.is_none_or(|voted_for| voted_for == from);
        let granted = owns_term && vote_free && !matches!(self.phase, Phase::Leader { .. });
        if granted {
            self.vote = Some(from);
            // Give the candidate a full timeout to win, unless this is a late copy of the
            // request of the leader we already follow.
            if self.leader() != Some(from) {
                self.follow(now, None);
            }
        }
        self.reply(from, ElectionKind::Vote { granted }, outputs);
    }

    /// A vote for this candidate; a majority (its own vote included) makes it leader.
    fn on_vote(&mut self, now: Instant, from: NodeIndex, granted: bool, outputs: &mut Vec<Output>) {
        let Phase::Candidate { votes } = &mut self.phase else {
            return;
        };
        if granted {
            votes.insert(from);
        }
        if votes.len() >= self.quorum {
            self.lead(now, outputs);
        }
    }

    /// The leader of the current term asserts itself: follow and acknowledge it. Only a higher
    /// leader holds off our election timer; under a lower one the timer runs on, so a returning
    /// higher node takes over (Bully).
    fn on_heartbeat(&mut self, now: Instant, from: NodeIndex, outputs: &mut Vec<Output>) {
        if self.members.owner_of(self.term) != Some(from) {
            // Only the owner of a term can lead it; anything else is a confused peer.
            return;
        }
        match self.phase {
            Phase::Leader { .. } => return,
            Phase::Probing if from < self.me => {}
            _ => {
                let deadline = self.deadline;
                self.follow(now, Some(from));
                if from < self.me {
                    self.deadline = deadline;
                }
            }
        }
        self.reply(from, ElectionKind::HeartbeatAck, outputs);
    }

    /// A follower acknowledges this leader's term: it counts towards the lease.
    fn on_heartbeat_ack(&mut self, now: Instant, from: NodeIndex) {
        if let Phase::Leader { acks, .. } = &mut self.phase {
            acks.insert(from, now);
        }
    }

    /// The base of a step to a term `sender` sent: the highest term claimed by a member other
    /// than the sender and this node that was heard from within the recent window. The
    /// sender's own claim never counts, so a faulty sender cannot lift its own base; this
    /// node's term does not count either, so a faulty member cannot ratchet it up step by step.
    fn reach_base(&self, now: Instant, sender: NodeIndex) -> Option<Term> {
        self.claims
            .iter()
            .filter(|(&peer, _)| peer != sender && self.heard_recently(now, peer))
            .map(|(_, &term)| term)
            .max()
    }

    /// Ask every other member for its term: an `Election` probe in this node's term, which
    /// every member answers with `Alive` in its own term (a higher node by the stale-message
    /// rule or as the Bully answer, a lower one in `on_election`), at most once per recent
    /// window.
    fn ask_for_terms(&mut self, now: Instant, outputs: &mut Vec<Output>) {
        if now < self.next_catch_up {
            return;
        }
        self.next_catch_up = now + self.config.recent_window;
        let message = self.message(ElectionKind::Election);
        for peer in self.members.others(self.me) {
            outputs.push(Output::Send {
                to: peer,
                msg: message.clone(),
            });
        }
    }

    /// Whether `peer` was heard from within the recent window.
    fn heard_recently(&self, now: Instant, peer: NodeIndex) -> bool {
        self.last_heard
            .get(&peer)
            .is_some_and(|&heard| now.saturating_duration_since(heard) <= self.config.recent_window)
    }

    /// The highest index among this node and the peers heard from within the recent window.
    fn highest_live(&self, now: Instant) -> NodeIndex {
        self.last_heard
            .iter()
            .filter(|(_, &heard)| now.saturating_duration_since(heard) <= self.config.recent_window)
            .map(|(&peer, _)| peer)
            .fold(self.me, NodeIndex::max)
    }

    fn reply(&self, to: NodeIndex, kind: ElectionKind, outputs: &mut Vec<Output>) {
        outputs.push(Output::Send {
            to,
            msg: self.message(kind),
        });
    }
}
