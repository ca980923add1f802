//! Leader election among the edges: Bully (the highest live index leads) with terms and a
//! majority quorum, as a sans-IO state machine. No tokio, quinn or clock inside: the driver
//! passes `now` in, calls [`Election::handle`] for every election message and
//! [`Election::tick`] when [`Election::next_wakeup`] comes, and carries out the [`Output`]s.
//!
//! # Protocol
//!
//! Every message carries the sender's term. A message from a lower term is never acted on;
//! `Election`, `VoteRequest` and `Heartbeat` are answered with `Alive`, `Vote { granted: false }`
//! and `HeartbeatAck` in the receiver's term so the sender catches up. A higher term is adopted
//! and the node steps down to follower, with two exceptions: the fence below, and the step rule
//! ("Terms from messages") that keeps a forged term from wedging the cluster.
//!
//! 1. A follower that hears no heartbeat from a higher leader for its election timeout (base
//!    timeout plus a stagger that is larger for lower indices) probes every higher node with
//!    `Election`, in its current term.
//! 2. A higher node answers `Alive` and, unless it leads or follows a higher leader, runs its
//!    own election. A prober that hears `Alive` waits one election timeout for a heartbeat.
//! 3. A prober that hears no `Alive` within `alive_wait` stands: it moves to the next term it
//!    owns (see below), votes for itself and sends `VoteRequest` to every edge.
//! 4. It leads once votes from a majority of the configured edges (its own included) arrive
//!    within `vote_wait`; otherwise it becomes a follower again and retries after a timeout.
//! 5. The leader sends `Heartbeat` every interval; followers answer `HeartbeatAck`. A leader
//!    without acknowledgements from a majority (itself included) within its lease steps down,
//!    so a partitioned minority has no leader.
//! 6. A follower of a *lower* leader does not hold off its election timer, so a returning
//!    higher node takes over in a higher term after one election timeout.
//!
//! Because a node only raises its term after no higher node answered its probe, a node that
//! merely lost the leader's heartbeats (a one-way cut, lost packets) does not disturb the
//! cluster: the Bully probe acts as a pre-vote.
//!
//! # Voting
//!
//! A node grants its vote in term `t` to candidate `c` only if
//! - `c` is at least as high as every node it heard from within `recent_window` (itself
//!   included). This check comes *before* the term rules: a lower candidate neither gets the
//!   vote nor moves the voter's term, so a node that inflated its term while cut off cannot
//!   unseat a live higher leader with it;
//! - `t` is the voter's current term (after adopting it) and `c` owns `t`;
//! - the voter has not voted for another candidate in `t`.
//!
//! # No two leaders in one term, even across restarts
//!
//! Nodes keep no state on disk (they run `--read-only`), so a restarted node has forgotten the
//! terms it saw and the votes it cast, and could vote twice in one term. Timing guards (wait an
//! election timeout before voting) only help if message delays are bounded. Instead terms are
//! owned: term `t` belongs to node `(t - 1) % highest_index + 1` (see `members.rs`), a
//! candidate only stands in terms it owns, and voters refuse a `VoteRequest` from anyone but the
//! owner, followers ignore heartbeats from anyone but the owner. Two *different* leaders in one
//! term are then impossible whatever any voter remembers; the majority quorum keeps a minority
//! from ever leading. The worst a restart can do is let the owner lead its own term a second
//! time (it restarted within one election timeout and nobody moved on), which is still one
//! leader. Terms therefore grow in jumps of up to the cluster size; they still only grow.
//! A restarted node also listens for one election timeout before it stands, so it usually
//! learns the current term from heartbeats first.
//!
//! # Terms from messages
//!
//! Every node holds a node certificate, so a faulty or compromised edge can send any election
//! message with any term. Before this rule, one `Heartbeat` in term `u64::MAX` moved every edge
//! to that term, from which no node owned a higher one: no leader ever again, and restarted
//! nodes relearned the term from the others. Now a message whose term is above the receiver's
//! moves it only as `terms.rs` allows:
//!
//! 1. **Ceiling.** No term above `TERM_CEILING` (`u64::MAX / 2`) is ever taken. No honest node
//!    gets there (below), so such a term is forged; and every member owns terms above any term a
//!    node can hold, so standing never runs out and no term arithmetic overflows.
//! 2. **Vouched step.** A term at most `MAX_TERM_STEP` (2^16) above the *base* is taken: the
//!    base is the highest term claimed by a *third* member — neither the sender nor the
//!    receiver — heard within the recent window. The sender cannot lift its own base, and the
//!    receiver's own term does not count, so with vouched steps a faulty member cannot ratchet a
//!    node up step by step: it can push it at most one step past a term some other member holds.
//! 3. **Owner's round.** A term at most one round (the highest index) above the receiver's own,
//!    sent by the term's owner, is taken: a candidate standing or a leader leading, exactly as an
//!    honest cluster raises its term.
//! 4. **Lone step.** Otherwise a node climbs towards the term by at most `MAX_TERM_STEP`, at most
//!    once per recent window, and does not act on the message; every refused or lone step also
//!    asks every member for its term (an `Election` probe in the node's term, which every member
//!    answers with `Alive` in its own term), so a node that is really behind hears a third member
//!    vouch for the term within a round trip. The lone step is how a node catches up when nobody
//!    can vouch: it hears only one other member, or a faulty member pushed one node far ahead
//!    while it had it cut off alone.
//!
//! A node that is not the owner of its current term stands in the next term it owns, as
//! before; one that already owns its current term stands in it again rather than in the next
//! (a retry after a lost vote or lease): a node cut off alone no longer raises its term on every
//! retry, so it never drifts out of the others' reach.
//!
//! Why this is safe: it only ever *refuses* or *delays* terms, and all of the safety argument
//! above holds whatever terms nodes hold: a term has one owner, only the owner stands and leads
//! in it, and leading needs votes and then acknowledgements from a majority. So there is still
//! at most one leader per term, and a minority still has no leader (a faulty member is one
//! configured member: its vote and acknowledgements count once, like any member's). Terms still
//! never go down while a node is up.
//!
//! Why it cannot wedge: with one faulty member, the highest term an honest node holds grows by
//! at most `MAX_TERM_STEP` per honest message exchange or per recent window (steps 2 and 4),
//! and by one round per election (step 3). Reaching `TERM_CEILING` would take 2^47 steps, so the
//! term space never runs out, and `u64::MAX` or anything near it is refused outright. Once the
//! faulty member stops, its claims drop out of every base within the recent window. While it
//! flooded, a node could move past every term another honest node held only by lone steps, one
//! per recent window; so the honest nodes end up at most that many steps apart, vouch for each
//! other's terms where they are within a step, and otherwise reach the highest with lone steps
//! at the same pace — then elect a leader as after any crash. How fast is measured, not
//! assumed: the simulation (`random.rs`)
//! floods with forged messages of every kind, with terms at and near `u64::MAX`, at the
//! ceiling, random, and one or two steps above the receiver's, and checks both cases.
//!
//! # Driver
//!
//! Map [`Output::Send`] to a `Request::Election(msg)` on a new stream to edge `to`, fire and
//! forget (the `Response::Ack` carries nothing; answers arrive as separate messages). Feed a
//! received `Request::Election(msg)` to [`Election::handle`] with the sender's index from its
//! certificate. [`Output::ViewChanged`] is the node's view of the election (role, term,
//! leader): the driver publishes it to the rest of the node, its metrics and its logs.

mod config;
pub mod fuzzing;
mod machine;
mod members;
mod receive;
mod terms;

// The simulation and its checker are public behind the `sim` feature, so `cargo xtask scenario
// sim` drives the same in-memory network the tests use.
#[cfg(any(test, feature = "sim"))]
pub mod checker;
#[cfg(test)]
mod random;
#[cfg(test)]
mod scenarios;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use config::{
    Config, DEFAULT_ALIVE_WAIT, DEFAULT_ELECTION_STAGGER, DEFAULT_ELECTION_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEADER_LEASE, DEFAULT_RECENT_WINDOW, DEFAULT_VOTE_WAIT,
};
pub use machine::Election;
pub use members::Members;
pub use terms::{MAX_TERM_STEP, TERM_CEILING};

use wire::election::ElectionMessage;
use wire::{ElectionRole, NodeIndex, Term};

/// What the state machine asks its driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to edge `to` as `Request::Election(msg)`. Loss is tolerated: never retry.
    Send { to: NodeIndex, msg: ElectionMessage },
    /// The role, the term or the known leader changed; the new view, as [`Election::view`]
    /// would report it now.
    ViewChanged(View),
}

/// One node's view of the election: what `status` reports and what the node acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub role: ElectionRole,
    pub term: Term,
    /// The leader of `term` as far as this node knows (`Some(me)` when it leads).
    pub leader: Option<NodeIndex>,
}

impl View {
    /// The view of a node that has just started: a follower in term 0 that knows no leader.
    pub const INITIAL: View = View {
        role: ElectionRole::Follower,
        term: Term(0),
        leader: None,
    };
}
