//! Telling a gone edge from a slow one while a request to it is under way: a live edge
//! acknowledges what the client sends within a round trip, and the client's keep-alive makes it
//! send something whenever it has been quiet, even while it waits on its origin. An edge that
//! sends nothing at all for [`silent_after`] is taken for gone (killed, paused, cut off), and
//! the client asks the next edge instead of waiting out the whole attempt.

use std::time::{Duration, Instant};

use wire::limits::{CLIENT_SILENT_EDGE, CLIENT_SILENT_RTTS};

/// How often an attempt looks at its connection's received-datagram count.
pub const LOOK_EVERY: Duration = Duration::from_millis(50);

/// How long an edge whose smoothed round trip is `rtt` may send nothing before it counts as
/// gone: [`CLIENT_SILENT_EDGE`], or [`CLIENT_SILENT_RTTS`] round trips on a slower path.
pub fn silent_after(rtt: Duration) -> Duration {
    CLIENT_SILENT_EDGE.max(rtt.saturating_mul(CLIENT_SILENT_RTTS))
}

/// The datagrams received on one connection, looked at over time.
#[derive(Debug)]
pub struct Silence {
    received: Option<u64>,
    since: Instant,
}

impl Silence {
    /// Starts watching at `now`: silence is counted from here, whatever came before.
    pub fn new(now: Instant) -> Silence {
        Silence {
            received: None,
            since: now,
        }
    }

    /// Records the connection's datagram count at `now` (`None` while there is no connection,
    /// e.g. during a dial, which has its own timeout) and says whether the edge has been silent
    /// for at least `bound`.
    pub fn look(&mut self, received: Option<u64>, now: Instant, bound: Duration) -> bool {
        match (self.received, received) {
            (Some(before), Some(count)) if count == before => {}
            (None, Some(count)) => self.received = Some(count),
            (_, count) => {
                self.received = count;
                self.since = now;
            }
        }
        self.received.is_some() && now.saturating_duration_since(self.since) >= bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn an_edge_that_sends_nothing_is_silent_once_the_bound_has_passed() {
        let start = Instant::now();
        let mut silence = Silence::new(start);
        let bound = silent_after(MS);
        assert_eq!(bound, CLIENT_SILENT_EDGE);
        assert!(!silence.look(Some(7), start, bound));
        assert!(!silence.look(Some(7), start + bound - MS, bound));
        assert!(silence.look(Some(7), start + bound, bound));
    }

    #[test]
    fn every_datagram_restarts_the_count() {
        let start = Instant::now();
        let mut silence = Silence::new(start);
        let bound = CLIENT_SILENT_EDGE;
        assert!(!silence.look(Some(1), start, bound));
        // An acknowledgement arrives just before the bound: the edge is alive.
        assert!(!silence.look(Some(2), start + bound - MS, bound));
        assert!(!silence.look(Some(2), start + bound + bound / 2, bound));
        assert!(silence.look(Some(2), start + 2 * bound, bound));
    }

    #[test]
    fn no_connection_yet_is_not_silence() {
        let start = Instant::now();
        let mut silence = Silence::new(start);
        let bound = CLIENT_SILENT_EDGE;
        assert!(!silence.look(None, start + 10 * bound, bound));
        // The dial finished: silence is counted from the first look at the connection.
        assert!(!silence.look(Some(3), start + 10 * bound, bound));
        assert!(!silence.look(Some(3), start + 10 * bound + bound - MS, bound));
        assert!(silence.look(Some(3), start + 11 * bound, bound));
    }

    #[test]
    fn a_slow_path_stretches_the_bound_to_round_trips() {
        assert_eq!(silent_after(Duration::from_millis(300)), 1200 * MS);
    }
}
