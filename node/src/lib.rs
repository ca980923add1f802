//! A Flotilla edge node: caches images in a byte-bounded LRU, coalesces misses, elects a
//! leader with its peers and replicates through it, and exposes status, metrics and a console.
//!
//! [`start`] runs a node on a tokio runtime until its shutdown token fires; `main.rs` only
//! parses flags and handles signals.

pub mod cache;
pub mod console;
pub mod elector;
pub mod fetch;
pub mod metrics;
pub mod peers;
pub mod replica;
pub mod server;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use net::pool::Pool;
use net::tls::Credentials;
use net::Listen;
use tokio_util::sync::CancellationToken;
use wire::{NodeIndex, NodeStatus};

use crate::cache::ImageCache;
use crate::elector::{Elector, QuicTransport};
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
    /// QUIC socket to serve on.
    pub listen: net::QuicListen,
    /// Prometheus metrics socket; `None` serves no metrics.
    pub metrics: Option<net::MetricsListen>,
    /// QUIC address of the canonical (`host:port`).
    pub canonical: String,
    /// QUIC address of every configured edge, this one included.
    pub peers: BTreeMap<NodeIndex, String>,
    pub cache_bytes: u64,
    /// How many edges should hold each image the leader fetches.
    pub replicas: usize,
    pub credentials: Credentials,
    /// Election timing; `election::Config::default()` replaces a dead leader in about 300 ms.
    pub election: election::Config,
}

/// The node's current view of the election, as its elector published it last.
pub use election::View as Leadership;

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
    /// The configured edges, for who owns which term (replicas come only from the owner).
    members: election::Members,
    counters: Counters,
    in_flight: InFlight,
    elector: Arc<Elector>,
    /// The fault layer of the QUIC socket, set by an operator (`partition`, `netem` on a
    /// member the operator's host cannot enter).
    pub socket_faults: net::SocketFaults,
}

impl Node {
    /// The current election view.
    pub fn leadership(&self) -> Leadership {
        self.elector.view()
    }

    /// Hands an election message from edge `from` to the election driver.
    pub fn on_election_message(&self, from: NodeIndex, message: wire::election::ElectionMessage) {
        self.elector.receive(from, message);
    }

    /// Subscribes to election view changes.
    pub fn watch_leadership(&self) -> tokio::sync::watch::Receiver<Leadership> {
        self.elector.subscribe()
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
pub async fn start(mut config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
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
    // The sockets move into the server; the config keeps the addresses they ended up on.
    let unbound = Listen::Address(SocketAddr::from(([0, 0, 0, 0], 0)));
    let listen = std::mem::replace(&mut config.listen, unbound);
    let bound = net::server::bind(
        listen,
        config.metrics.take(),
        &config.credentials,
        &shutdown,
    )
    .await?;
    config.listen = Listen::Address(bound.quic);
    config.metrics = bound.metrics.map(Listen::Address);
    let metrics = Arc::new(NodeMetrics::new(bound.registry));
    let peers = Arc::new(Peers::new(
        config.index,
        Pool::new(bound.endpoint.clone(), config.credentials.origin_trust()),
        config.canonical.clone(),
        &config.peers,
    ));
    let elector = Elector::start(
        config.index,
        &peers.members(),
        config.election.clone(),
        Arc::new(QuicTransport::new(peers.clone(), metrics.clone())),
        shutdown.clone(),
    );
    tokio::spawn(publish_election_metrics(
        elector.subscribe(),
        metrics.clone(),
        shutdown.clone(),
    ));
    let members = election::Members::new(config.index, peers.members());
    let node = Arc::new(Node {
        cache: ImageCache::new(config.cache_bytes),
        members,
        config,
        metrics: metrics.clone(),
        peers: peers.clone(),
        counters: Counters::default(),
        in_flight: InFlight::default(),
        elector,
        socket_faults: bound.faults,
    });
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

/// Mirrors every published election view into the metrics (term, leader, role).
async fn publish_election_metrics(
    mut views: tokio::sync::watch::Receiver<Leadership>,
    metrics: Arc<NodeMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        let view = *views.borrow_and_update();
        metrics.set_election(view.term.0, view.leader, view.role);
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = views.changed() => if changed.is_err() { return },
        }
    }
}
