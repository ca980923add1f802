//! A Flotilla edge node: caches images in a byte-bounded LRU, coalesces misses, elects a
//! leader with its peers and replicates through it, and exposes status, metrics and a console.
//!
//! [`start`] runs a node on a tokio runtime until its shutdown token fires; `main.rs` only
//! parses flags and handles signals.

pub mod cache;
pub mod console;
pub mod election;
pub mod elector;
pub mod fetch;
pub mod metrics;
pub mod peers;
pub mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use net::pool::Pool;
use net::tls::Credentials;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wire::{ElectionRole, NodeIndex, NodeStatus, Term};

use crate::cache::ImageCache;
use crate::fetch::InFlight;
use crate::metrics::NodeMetrics;
use crate::peers::Peers;

/// Default cache size: enough for a few hundred sample images, small enough for a 256 MB
/// container memory limit.
pub const DEFAULT_CACHE_MB: u64 = 128;

/// Default replication factor: the primary edge for an id and its first failover.
pub const DEFAULT_REPLICAS: usize = 2;

/// Number of cached ids listed in a status reply.
const STATUS_CACHED_IDS: usize = 32;

/// Everything a node needs to run.
pub struct Config {
    pub index: NodeIndex,
    /// Name reported to clients, e.g. `flotilla_node_2`.
    pub name: String,
    /// QUIC address to serve on.
    pub listen: SocketAddr,
    /// Prometheus metrics address; `None` serves no metrics.
    pub metrics: Option<SocketAddr>,
    /// QUIC address of the canonical (`host:port`).
    pub canonical: String,
    /// QUIC address of every configured edge, this one included.
    pub peers: BTreeMap<NodeIndex, String>,
    pub cache_bytes: u64,
    /// How many edges should hold each image the leader fetches.
    pub replicas: usize,
    pub credentials: Credentials,
    /// Election timing; [`election::Config::default`] replaces a dead leader in about a second.
    pub election: election::Config,
}

/// The node's current view of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub role: ElectionRole,
    pub term: Term,
    pub leader: Option<NodeIndex>,
}

/// Hit and miss counts kept for status replies (the Prometheus counters are write-only).
#[derive(Default)]
pub struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Counters {
    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running node's shared state.
pub struct Node {
    pub config: Config,
    pub cache: ImageCache,
    pub metrics: Arc<NodeMetrics>,
    pub peers: Arc<Peers>,
    counters: Counters,
    in_flight: InFlight,
    leadership: watch::Sender<Leadership>,
    elector: std::sync::OnceLock<Arc<elector::Elector>>,
}

impl Node {
    /// The current election view.
    pub fn leadership(&self) -> Leadership {
        *self.leadership.borrow()
    }

    /// Replaces the election view (called by the election driver).
    pub fn set_leadership(&self, view: Leadership) {
        self.metrics
            .set_election(view.term.0, view.leader, view.role == ElectionRole::Leader);
        self.leadership.send_replace(view);
    }

    /// Hands an election message from edge `from` to the election driver.
    pub fn on_election_message(&self, from: NodeIndex, message: wire::election::ElectionMessage) {
        if let Some(elector) = self.elector.get() {
            elector.receive(from, message);
        }
    }

    /// Subscribes to election view changes.
    pub fn watch_leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.subscribe()
    }

    fn publish_cache_stats(&self) {
        let stats = self.cache.stats();
        self.metrics.cache_bytes.set(stats.bytes as f64);
        self.metrics.cache_items.set(stats.items as f64);
    }

    /// This node's row of the status table.
    pub fn status(&self) -> NodeStatus {
        let view = self.leadership();
        let cache = self.cache.stats();
        NodeStatus {
            index: self.config.index,
            name: self.config.name.clone(),
            role: view.role,
            term: view.term,
            leader: view.leader,
            cache_items: cache.items,
            cache_bytes: cache.bytes,
            cache_capacity_bytes: cache.capacity_bytes,
            cache_hits: self.counters.hits.load(Ordering::Relaxed),
            cache_misses: self.counters.misses.load(Ordering::Relaxed),
            peer_rtt_ms: self.peers.rtt_ms(),
            cached_ids: self.cache.ids(STATUS_CACHED_IDS),
        }
    }
}

/// A started node: its addresses, its state (for tests and the election driver) and the task
/// to await for its end.
pub struct Running {
    pub quic: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub node: Arc<Node>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the endpoint and metrics and starts serving, pinging peers and electing.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    anyhow::ensure!(
        config.peers.contains_key(&config.index),
        "--peer list must include this node ({})",
        config.index
    );
    anyhow::ensure!(
        config.credentials.role == wire::Role::Node(config.index),
        "the certificate is for {}, not node-{}; pass the certificate folder of node {}",
        config.credentials.role,
        config.index,
        config.index
    );
    let bound = net::server::bind(
        config.listen,
        config.metrics,
        &config.credentials,
        &shutdown,
    )
    .await?;
    let metrics = Arc::new(NodeMetrics::new(bound.registry));
    let peers = Arc::new(Peers::new(
        config.index,
        Pool::new(bound.endpoint.clone()),
        config.canonical.clone(),
        &config.peers,
    ));
    let (leadership, _) = watch::channel(Leadership {
        role: ElectionRole::Follower,
        term: Term(0),
        leader: None,
    });
    let node = Arc::new(Node {
        cache: ImageCache::new(config.cache_bytes),
        config,
        metrics: metrics.clone(),
        peers: peers.clone(),
        counters: Counters::default(),
        in_flight: InFlight::default(),
        leadership,
        elector: std::sync::OnceLock::new(),
    });
    node.set_leadership(node.leadership());
    let elector = elector::Elector::start(&node, node.config.election.clone(), shutdown.clone());
    // Set exactly once, right here, before the server accepts any election message.
    let _ = node.elector.set(elector);
    node.publish_cache_stats();
    tokio::spawn(peers.monitor(metrics, shutdown.clone()));
    tracing::info!(index = %node.config.index, quic = %bound.quic, metrics = ?bound.metrics, "edge serving");
    let task = tokio::spawn(net::server::serve(bound.endpoint, node.clone(), shutdown));
    Ok(Running {
        quic: bound.quic,
        metrics: bound.metrics,
        node,
        task,
    })
}

/// Runs a node until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await?;
    Ok(())
}
