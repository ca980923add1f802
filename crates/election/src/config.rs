//! Timing of the election: every interval and timeout the state machine uses, with defaults
//! chosen so that a dead leader is replaced in about 300 ms (follower at `N - 1`: one election
//! timeout plus its stagger after the last heartbeat, then the alive wait, then one round trip
//! of votes). `cargo xtask bench failover` measures it, and its full-load phase watches for
//! elections nobody asked for, which timeouts this short would show first.

use std::time::Duration;

use wire::NodeIndex;

/// How often a leader sends [`wire::election::ElectionKind::Heartbeat`] to every peer: 8
/// messages every interval at N=5 (heartbeats and acknowledgements), a few hundred bytes each.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(50);

/// How long a follower goes without a heartbeat from a higher leader before it starts an
/// election. Over three heartbeat intervals, so a few lost heartbeats do not unseat a leader;
/// and even then the Bully probe is a pre-vote: a live leader's `Alive` stops the election.
pub const DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_millis(180);

/// Extra election timeout per index below the highest configured one, so the highest live
/// node starts its election first and lower nodes find it already running.
/// Smaller than the alive wait: a lower node that starts a moment after a higher one probes
/// it and hears `Alive`, so the order matters for speed only, never for safety.
pub const DEFAULT_ELECTION_STAGGER: Duration = Duration::from_millis(10);

/// How long a node that probed the higher nodes waits for an `Alive` before it stands as
/// candidate. Longer than a round trip over a slow (`netem --delay 50ms`) link; a dead
/// leader costs every failover this long once more, so it is not longer than that.
pub const DEFAULT_ALIVE_WAIT: Duration = Duration::from_millis(80);

/// How long a candidate waits for a majority of votes before it gives up on its term.
pub const DEFAULT_VOTE_WAIT: Duration = Duration::from_millis(200);

/// A leader that has not had acknowledgements from a majority (itself included) within this
/// window steps down. Equal to the election timeout, so a cut-off leader has stepped down by
/// about the time the others start electing.
pub const DEFAULT_LEADER_LEASE: Duration = Duration::from_millis(180);

/// A node counts a peer as live if it heard from it within this window, and refuses its vote to
/// candidates lower than the highest live node it knows. Shorter than the election timeout, so a
/// dead leader has stopped counting by the time anyone stands for election.
pub const DEFAULT_RECENT_WINDOW: Duration = Duration::from_millis(150);

/// Timing of one node's election state machine. All fields are plain durations; the driver
/// usually takes [`Config::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// See [`DEFAULT_HEARTBEAT_INTERVAL`].
    pub heartbeat_interval: Duration,
    /// See [`DEFAULT_ELECTION_TIMEOUT`].
    pub election_timeout: Duration,
    /// See [`DEFAULT_ELECTION_STAGGER`].
    pub election_stagger: Duration,
    /// See [`DEFAULT_ALIVE_WAIT`].
    pub alive_wait: Duration,
    /// See [`DEFAULT_VOTE_WAIT`].
    pub vote_wait: Duration,
    /// See [`DEFAULT_LEADER_LEASE`].
    pub leader_lease: Duration,
    /// See [`DEFAULT_RECENT_WINDOW`].
    pub recent_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
            election_stagger: DEFAULT_ELECTION_STAGGER,
            alive_wait: DEFAULT_ALIVE_WAIT,
            vote_wait: DEFAULT_VOTE_WAIT,
            leader_lease: DEFAULT_LEADER_LEASE,
            recent_window: DEFAULT_RECENT_WINDOW,
        }
    }
}

impl Config {
    /// The election timeout of node `me` in a cluster whose highest index is `highest`:
    /// the base timeout plus one stagger step per index below the highest.
    pub fn election_timeout_of(&self, me: NodeIndex, highest: NodeIndex) -> Duration {
        let steps = u32::from(highest.0.saturating_sub(me.0));
        self.election_timeout + self.election_stagger.saturating_mul(steps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_nodes_wait_longer() {
        let config = Config::default();
        let highest = NodeIndex(5);
        assert_eq!(
            config.election_timeout_of(highest, highest),
            DEFAULT_ELECTION_TIMEOUT
        );
        assert_eq!(
            config.election_timeout_of(NodeIndex(1), highest),
            DEFAULT_ELECTION_TIMEOUT + 4 * DEFAULT_ELECTION_STAGGER
        );
    }
}
