//! The edge's Prometheus metrics. Handles are registered once at start-up; the hot path only
//! increments atomics.

use metrics::{Counter, Gauge, Histogram};
use net::metrics::Registry;
use wire::election::ElectionKind;
use wire::{ElectionRole, NodeIndex};

/// Every metric an edge exports.
pub struct NodeMetrics {
    pub registry: Registry,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_evictions: Counter,
    pub cache_bytes: Gauge,
    pub cache_items: Gauge,
    pub coalesced_waits: Counter,
    pub origin_fetches: Counter,
    pub leader_fetches: Counter,
    pub digest_mismatches: Counter,
    pub bad_signatures: Counter,
    pub term: Gauge,
    pub leader_index: Gauge,
    pub is_leader: Gauge,
    pub is_candidate: Gauge,
    /// Election messages by direction and kind (`flotilla_election_messages_total`).
    pub election_messages: ElectionMessages,
    /// Seconds the leader took to push one image it fetched to all the replicas it pushed
    /// to, one after another (`flotilla_replication_fanout_seconds`).
    pub replication_fanout: Histogram,
}

/// `flotilla_election_messages_total{direction, kind}`: one handle per pair, registered at
/// start-up, so counting a heartbeat is one atomic increment.
pub struct ElectionMessages {
    sent: [Counter; ElectionKind::ALL.len()],
    received: [Counter; ElectionKind::ALL.len()],
}

impl ElectionMessages {
    fn new(registry: &Registry) -> ElectionMessages {
        let handles = |direction: &'static str| {
            ElectionKind::ALL.map(|kind| {
                registry.counter(
                    "flotilla_election_messages_total",
                    "Election messages handed to the network (sent) or taken in (received), by kind",
                    &[
                        ("direction", direction.to_string()),
                        ("kind", kind.name().to_string()),
                    ],
                )
            })
        };
        ElectionMessages {
            sent: handles("sent"),
            received: handles("received"),
        }
    }

    fn slot(kind: ElectionKind) -> usize {
        // `ALL` holds one of each kind in this order.
        match kind {
            ElectionKind::Election => 0,
            ElectionKind::Alive => 1,
            ElectionKind::VoteRequest => 2,
            ElectionKind::Vote { .. } => 3,
            ElectionKind::Heartbeat => 4,
            ElectionKind::HeartbeatAck => 5,
        }
    }

    /// Counts one message of `kind` handed to the network.
    pub fn sent(&self, kind: ElectionKind) {
        self.sent[Self::slot(kind)].increment(1);
    }

    /// Counts one message of `kind` received from an edge.
    pub fn received(&self, kind: ElectionKind) {
        self.received[Self::slot(kind)].increment(1);
    }
}

impl NodeMetrics {
    pub fn new(registry: Registry) -> NodeMetrics {
        NodeMetrics {
            cache_hits: registry.counter(
                "flotilla_cache_hits_total",
                "Image requests answered from the cache",
                &[],
            ),
            cache_misses: registry.counter(
                "flotilla_cache_misses_total",
                "Image requests that missed the cache",
                &[],
            ),
            cache_evictions: registry.counter(
                "flotilla_cache_evictions_total",
                "Images evicted to stay within the cache's byte bound",
                &[],
            ),
            cache_bytes: registry.bytes_gauge(
                "flotilla_cache_bytes",
                "Bytes of image bodies held in the cache",
            ),
            cache_items: registry.gauge("flotilla_cache_items", "Images held in the cache", &[]),
            coalesced_waits: registry.counter(
                "flotilla_coalesced_waits_total",
                "Misses that waited on a fetch already in flight",
                &[],
            ),
            origin_fetches: registry.counter(
                "flotilla_origin_fetches_total",
                "Images fetched from the canonical",
                &[],
            ),
            leader_fetches: registry.counter(
                "flotilla_leader_fetches_total",
                "Images fetched from the leader (origin shield)",
                &[],
            ),
            digest_mismatches: registry.counter(
                "flotilla_digest_mismatches_total",
                "Received bodies that failed digest verification",
                &[],
            ),
            bad_signatures: registry.counter(
                "flotilla_bad_signatures_total",
                "Image metadata refused for lacking a valid signature of the canonical",
                &[],
            ),
            term: registry.gauge("flotilla_term", "Current election term", &[]),
            leader_index: registry.gauge(
                "flotilla_leader_index",
                "Index of the known leader (0: none)",
                &[],
            ),
            is_leader: registry.gauge("flotilla_is_leader", "1 while this node leads", &[]),
            is_candidate: registry.gauge(
                "flotilla_is_candidate",
                "1 while this node is electing (probing higher nodes or collecting votes)",
                &[],
            ),
            election_messages: ElectionMessages::new(&registry),
            replication_fanout: registry.histogram(
                "flotilla_replication_fanout_seconds",
                "Seconds the leader took to push an image it fetched to all its replicas (a summary over the last minute)",
                &[],
            ),
            registry,
        }
    }

    /// Counts one request of `kind` ending in `outcome`.
    pub fn request(&self, kind: &'static str, outcome: &'static str) {
        self.registry.count_request(kind, outcome);
    }

    /// Counts one replication push ending in `outcome`.
    pub fn replication_push(&self, outcome: &'static str) {
        self.registry
            .counter(
                "flotilla_replication_pushes_total",
                "Images the leader pushed to replicas, by outcome",
                &[("outcome", outcome.to_string())],
            )
            .increment(1);
    }

    /// Counts one replica this edge refused, and why (`not_leader`, `bad_signature`, ...).
    pub fn replica_refused(&self, reason: &'static str) {
        self.registry
            .counter(
                "flotilla_replicas_refused_total",
                "Replication pushes this edge refused and did not cache, by reason",
                &[("reason", reason.to_string())],
            )
            .increment(1);
    }

    /// Round-trip time gauge to `peer` (index 0 is the canonical).
    pub fn peer_rtt(&self, peer: &str) -> Gauge {
        self.registry.gauge(
            "flotilla_peer_rtt_seconds",
            "Round-trip time of a QUIC ping to each peer",
            &[("peer", peer.to_string())],
        )
    }

    /// 1 while `peer` answers pings.
    pub fn peer_up(&self, peer: &str) -> Gauge {
        self.registry.gauge(
            "flotilla_peer_up",
            "1 while the peer answers pings",
            &[("peer", peer.to_string())],
        )
    }

    /// Publishes the election view.
    ///
    /// The role is published as two gauges, so a scraper tells a candidate from a follower
    /// that knows no leader (both have leader index 0).
    pub fn set_election(&self, term: u64, leader: Option<NodeIndex>, role: ElectionRole) {
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        self.term.set(term as f64);
        self.leader_index
            .set(leader.map_or(0.0, |l| f64::from(l.0)));
        self.is_leader.set(flag(role == ElectionRole::Leader));
        self.is_candidate.set(flag(role == ElectionRole::Candidate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of an unlabelled gauge in rendered metrics text.
    fn gauge(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_candidate_is_told_from_a_follower_that_knows_no_leader() {
        let metrics = NodeMetrics::new(Registry::new());
        let cases = [
            (ElectionRole::Candidate, None, (0.0, 1.0, 0.0)),
            (ElectionRole::Follower, None, (0.0, 0.0, 0.0)),
            (ElectionRole::Follower, Some(NodeIndex(3)), (0.0, 0.0, 3.0)),
            (ElectionRole::Leader, Some(NodeIndex(2)), (1.0, 0.0, 2.0)),
        ];
        for (role, leader, (leads, electing, leader_index)) in cases {
            metrics.set_election(7, leader, role);
            let text = metrics.registry.render();
            assert_eq!(gauge(&text, "flotilla_is_leader"), Some(leads), "{role:?}");
            assert_eq!(
                gauge(&text, "flotilla_is_candidate"),
                Some(electing),
                "{role:?}"
            );
            assert_eq!(gauge(&text, "flotilla_leader_index"), Some(leader_index));
            assert_eq!(gauge(&text, "flotilla_term"), Some(7.0));
        }
    }
}
