//! Election and heartbeat messages exchanged between edges. The sender is never named in the
//! message: receivers take it from the peer's certificate.

use serde::{Deserialize, Serialize};

use crate::ids::Term;

/// One election message. Every kind carries the sender's current term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionMessage {
    pub term: Term,
    pub kind: ElectionKind,
}

/// What an election message says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionKind {
    /// Bully probe: a node asks the higher-indexed nodes whether any of them is alive.
    Election,
    /// Answer to [`ElectionKind::Election`] from a higher node: "I am alive, stand down".
    Alive,
    /// A candidate that heard from no higher node asks every edge for its vote in `term`.
    VoteRequest,
    /// Reply to [`ElectionKind::VoteRequest`]; a node grants at most one vote per term.
    Vote { granted: bool },
    /// The leader of `term` asserts itself; sent periodically.
    Heartbeat,
    /// A follower acknowledges the heartbeat of `term`; the leader counts these for its quorum.
    HeartbeatAck,
}

impl ElectionKind {
    /// One of each kind (a granted vote for `Vote`): what fuzzing seeds start from.
    pub const ALL: [ElectionKind; 6] = [
        ElectionKind::Election,
        ElectionKind::Alive,
        ElectionKind::VoteRequest,
        ElectionKind::Vote { granted: true },
        ElectionKind::Heartbeat,
        ElectionKind::HeartbeatAck,
    ];

    /// The kind's name in metrics labels and logs (a vote is `vote`, granted or not).
    pub fn name(self) -> &'static str {
        match self {
            ElectionKind::Election => "election",
            ElectionKind::Alive => "alive",
            ElectionKind::VoteRequest => "vote_request",
            ElectionKind::Vote { .. } => "vote",
            ElectionKind::Heartbeat => "heartbeat",
            ElectionKind::HeartbeatAck => "heartbeat_ack",
        }
    }

    /// Whether the kind belongs to electing a leader rather than to keeping one (heartbeats
    /// and their acknowledgements flow all the time a leader leads).
    pub fn is_electing(self) -> bool {
        !matches!(self, ElectionKind::Heartbeat | ElectionKind::HeartbeatAck)
    }
}
