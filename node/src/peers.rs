//! The edge's view of its peers: pooled QUIC connections to every other edge and to the
//! canonical, and a monitor that pings each of them continuously to measure round-trip time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use net::pool::{Pool, Target};
use tokio_util::sync::CancellationToken;
use wire::limits::{PING_INTERVAL, PING_TIMEOUT};
use wire::{NodeIndex, Role};

use crate::metrics::NodeMetrics;

/// Peer index used for the canonical in RTT tables.
pub const CANONICAL_PEER: u16 = 0;

/// Addresses of the peers and the latest RTT to each.
pub struct Peers {
    pub me: NodeIndex,
    pub pool: Pool,
    pub canonical: Target,
    edges: BTreeMap<NodeIndex, Target>,
    rtt_ms: Mutex<BTreeMap<u16, f64>>,
}

impl Peers {
    pub fn new(
        me: NodeIndex,
        pool: Pool,
        canonical: String,
        edges: &BTreeMap<NodeIndex, String>,
    ) -> Peers {
        Peers {
            me,
            pool,
            canonical: Target::new(canonical, Role::Canonical),
            edges: edges
                .iter()
                .map(|(index, address)| (*index, Target::new(address.clone(), Role::Node(*index))))
                .collect(),
            rtt_ms: Mutex::new(BTreeMap::new()),
        }
    }

    /// Every configured edge, this one included.
    pub fn members(&self) -> Vec<NodeIndex> {
        self.edges.keys().copied().collect()
    }

    /// The target for edge `index`.
    pub fn edge(&self, index: NodeIndex) -> Option<&Target> {
        self.edges.get(&index)
    }

    /// Latest round-trip times in ms, by peer index (0 = canonical); unreachable peers absent.
    pub fn rtt_ms(&self) -> BTreeMap<u16, f64> {
        self.rtt_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, peer: u16, rtt: Option<Duration>) {
        let mut table = self.rtt_ms.lock().unwrap_or_else(|p| p.into_inner());
        match rtt {
            Some(rtt) => table.insert(peer, rtt.as_secs_f64() * 1000.0),
            None => table.remove(&peer),
        };
    }

    /// Pings every peer once per [`PING_INTERVAL`] until `shutdown` fires.
    pub async fn monitor(self: Arc<Self>, metrics: Arc<NodeMetrics>, shutdown: CancellationToken) {
        let mut targets: Vec<(u16, String, Target)> = vec![(
            CANONICAL_PEER,
            "canonical".to_string(),
            self.canonical.clone(),
        )];
        for (index, target) in &self.edges {
            if *index != self.me {
                targets.push((index.0, format!("node_{index}"), target.clone()));
            }
        }
        for (peer, label, target) in targets {
            let peers = self.clone();
            let rtt_gauge = metrics.peer_rtt(&label);
            let up_gauge = metrics.peer_up(&label);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(PING_INTERVAL);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = ticker.tick() => {}
                    }
                    // The dial is left to finish (it is bounded by the connect timeout), so
                    // a fetch waiting on the same dial learns its outcome instead of dialling
                    // again; the ping alone is timed.
                    let rtt = match peers.pool.connection(&target).await {
                        Ok(_) => {
                            let started = Instant::now();
                            let answered =
                                tokio::time::timeout(PING_TIMEOUT, peers.pool.ping(&target)).await;
                            matches!(answered, Ok(Ok(_))).then(|| started.elapsed())
                        }
                        Err(_) => None,
                    };
                    peers.record(peer, rtt);
                    match rtt {
                        Some(rtt) => {
                            rtt_gauge.set(rtt.as_secs_f64());
                            up_gauge.set(1.0);
                        }
                        None => up_gauge.set(0.0),
                    }
                }
            });
        }
    }
}
