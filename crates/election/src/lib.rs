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
//! at once and the node steps down to follower, with one exception (the fence below).
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
//! # Driver
//!
//! Map [`Output::Send`] to a `Request::Election(msg)` on a new stream to edge `to`, fire and
//! forget (the `Response::Ack` carries nothing; answers arrive as separate messages). Feed a
//! received `Request::Election(msg)` to [`Election::handle`] with the sender's index from its
//! certificate. [`Output::ViewChanged`] is the node's view of the election (role, term,
//! leader): the driver publishes it to the rest of the node, its metrics and its logs.

mod config;
mod machine;
mod members;
mod receive;

#[cfg(test)]
mod checker;
#[cfg(test)]
mod random;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod sim;

pub use config::{
    Config, DEFAULT_ALIVE_WAIT, DEFAULT_ELECTION_STAGGER, DEFAULT_ELECTION_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_LEADER_LEASE, DEFAULT_RECENT_WINDOW, DEFAULT_VOTE_WAIT,
};
pub use machine::Election;
pub use members::Members;

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
