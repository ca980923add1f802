//! [`TestCluster`]: a canonical (or a custom origin) and N edges in this process. Every UDP and
//! TCP socket is bound on 127.0.0.1:0 before any member starts, so each member is told its
//! peers' real addresses and no port is ever released and bound again.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use client::Client;
use net::server::Handler;
use net::Listen;
use tokio_util::sync::CancellationToken;
use wire::cluster::{ClusterFile, Member};
use wire::routing::Routing;
use wire::{NodeIndex, Role};

use crate::ca::credentials;

/// How long stopping one edge may take before the test goes on without waiting.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an election may take to settle in a test: it settles in about a second, and CI
/// machines can be slow.
pub const SETTLE: Duration = Duration::from_secs(20);

/// Starts a custom origin's accept loop on an endpoint; type-erases the handler.
type OriginStarter = Box<dyn FnOnce(quinn::Endpoint, CancellationToken) + Send>;

/// What serves as the cluster's origin.
enum Origin {
    /// The real canonical over a store of files.
    Canonical,
    /// A handler of the test's own, answering in the canonical's role.
    Custom(OriginStarter),
    /// Nothing: the origin's address is bound and never answers (a paused or unplugged
    /// canonical, whose packets vanish instead of being refused).
    Silent,
}

/// What to start; see [`TestCluster::builder`].
pub struct Builder {
    nodes: u16,
    samples: u64,
    images: Option<PathBuf>,
    cache_mb: u64,
    replicas: usize,
    metrics: bool,
    origin: Origin,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            nodes: 3,
            samples: 1000,
            images: None,
            cache_mb: 64,
            replicas: node::DEFAULT_REPLICAS,
            metrics: false,
            origin: Origin::Canonical,
        }
    }
}

impl Builder {
    /// Number of edges (default 3).
    pub fn nodes(mut self, nodes: u16) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sample images the canonical generates, ids 1..=samples (default 1000).
    pub fn samples(mut self, samples: u64) -> Self {
        self.samples = samples;
        self
    }

    /// Serve the files of `dir` instead of generated samples.
    pub fn images(mut self, dir: &Path) -> Self {
        self.images = Some(dir.to_path_buf());
        self
    }

    /// Each edge's cache size in MiB (default 64).
    pub fn cache_mb(mut self, cache_mb: u64) -> Self {
        self.cache_mb = cache_mb;
        self
    }

    /// Replication factor (default [`node::DEFAULT_REPLICAS`]).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Serve Prometheus metrics on 127.0.0.1 from every member.
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Use `handler` as the origin instead of the canonical (a slow, corrupting or counting
    /// origin). It is dialled with the canonical's role, so edges treat it as the canonical.
    pub fn origin<H: Handler>(mut self, handler: Arc<H>) -> Self {
        self.origin = Origin::Custom(Box::new(move |endpoint, shutdown| {
            tokio::spawn(net::server::serve(endpoint, handler, shutdown));
        }));
        self
    }

    /// An origin whose address answers nothing at all: every dial to it times out.
    pub fn silent_origin(mut self) -> Self {
        self.origin = Origin::Silent;
        self
    }

    /// Binds every socket, then starts the origin and the edges.
    pub async fn start(self) -> TestCluster {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let data = self
            .images
            .clone()
            .unwrap_or_else(|| dir.path().join("images"));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let origin_socket = UdpSocket::bind(loopback).expect("binding the origin's socket");
        let node_sockets: BTreeMap<NodeIndex, UdpSocket> = (1..=self.nodes)
            .map(|i| {
                (
                    NodeIndex(i),
                    UdpSocket::bind(loopback).expect("binding an edge's socket"),
                )
            })
            .collect();
        let address = |socket: &UdpSocket| socket.local_addr().expect("a bound address");
        let origin = address(&origin_socket);
        let peers: BTreeMap<NodeIndex, String> = node_sockets
            .iter()
            .map(|(index, socket)| (*index, address(socket).to_string()))
            .collect();
        let metrics_listener = || {
            self.metrics
                .then(|| Listen::Bound(TcpListener::bind(loopback).expect("binding metrics")))
        };

        let origin_shutdown = CancellationToken::new();
        let mut silent_origin = None;
        let canonical = match self.origin {
            Origin::Canonical => Some(
                canonical::start(
                    canonical::Config {
                        name: "test_canonical".into(),
                        listen: Listen::Bound(origin_socket),
                        metrics: metrics_listener(),
                        data: data.clone(),
                        catalog: None,
                        samples: if self.images.is_some() {
                            0
                        } else {
                            self.samples
                        },
                        credentials: credentials(Role::Canonical),
                    },
                    origin_shutdown.clone(),
                )
                .await
                .expect("starting the canonical"),
            ),
            Origin::Custom(start) => {
                let endpoint = net::endpoint(origin_socket, &credentials(Role::Canonical), true)
                    .expect("an endpoint for the custom origin");
                start(endpoint, origin_shutdown.clone());
                None
            }
            Origin::Silent => {
                silent_origin = Some(origin_socket);
                None
            }
        };

        let mut nodes = BTreeMap::new();
        for (index, socket) in node_sockets {
            let shutdown = CancellationToken::new();
            let running = node::start(
                node::Config {
                    index,
                    name: format!("test_node_{index}"),
                    listen: Listen::Bound(socket),
                    metrics: metrics_listener(),
                    canonical: origin.to_string(),
                    peers: peers.clone(),
                    cache_bytes: self.cache_mb * 1024 * 1024,
                    replicas: self.replicas,
                    credentials: credentials(Role::Node(index)),
                    election: election::Config::default(),
                },
                shutdown.clone(),
            )
            .await
            .expect("starting an edge");
            nodes.insert(index, TestNode { running, shutdown });
        }
        let file = ClusterFile {
            prefix: "test".into(),
            runtime: "in-process".into(),
            canonical: Member {
                name: "test_canonical".into(),
                index: 0,
                quic: origin.to_string(),
                bridge: None,
                metrics: String::new(),
            },
            nodes: nodes
                .iter()
                .map(|(index, node)| Member {
                    name: format!("test_node_{index}"),
                    index: index.0,
                    quic: node.running.quic.to_string(),
                    bridge: None,
                    metrics: String::new(),
                })
                .collect(),
        };
        TestCluster {
            dir,
            data,
            origin,
            canonical,
            origin_shutdown,
            _silent_origin: silent_origin,
            nodes,
            file,
        }
    }
}

/// One running edge and the token that stops it.
pub struct TestNode {
    pub running: node::Running,
    pub shutdown: CancellationToken,
}

/// A running in-process cluster; dropping it stops every member.
pub struct TestCluster {
    /// Holds the canonical's files (unless the test gave its own) for the cluster's lifetime.
    pub dir: tempfile::TempDir,
    /// The canonical's image folder.
    pub data: PathBuf,
    /// The origin's QUIC address (the canonical's or the custom origin's).
    pub origin: SocketAddr,
    canonical: Option<canonical::Running>,
    origin_shutdown: CancellationToken,
    /// A silent origin's socket, held so that nothing else takes its port.
    _silent_origin: Option<UdpSocket>,
    pub nodes: BTreeMap<NodeIndex, TestNode>,
    /// What a client reads from `.cluster/cluster.toml`, for this cluster.
    pub file: ClusterFile,
}

impl TestCluster {
    /// What to start: 3 edges, the canonical with 1000 samples, 64 MiB caches, no metrics.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The running canonical; a cluster with a custom origin has none.
    pub fn canonical(&self) -> &canonical::Running {
        self.canonical
            .as_ref()
            .expect("this cluster runs a custom origin, or its canonical was stopped")
    }

    /// Stops the origin as a crash would look to the edges: its endpoint closed, its address
    /// answering nothing. Edges keep running and serve what they cached.
    pub async fn stop_origin(&mut self) {
        self.origin_shutdown.cancel();
        if let Some(canonical) = self.canonical.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, canonical.task).await;
        }
    }

    /// A client with a fresh client certificate.
    pub fn client(&self) -> Client {
        Client::with_credentials(
            self.file.clone(),
            &credentials(Role::Client),
            Routing::Rendezvous,
        )
        .expect("a client for the test cluster")
    }

    /// Edge `index`'s shared state.
    pub fn node(&self, index: u16) -> &node::Node {
        &self.nodes[&NodeIndex(index)].running.node
    }

    /// Stops edge `index` as a crash would look to its peers (endpoint closed).
    pub async fn stop_node(&mut self, index: u16) {
        if let Some(node) = self.nodes.remove(&NodeIndex(index)) {
            node.shutdown.cancel();
            let _ = tokio::time::timeout(STOP_TIMEOUT, node.running.task).await;
        }
    }

    /// Whether every running edge agrees that `leader` leads, in one term, and only it leads.
    pub fn agreed_on(&self, leader: u16) -> bool {
        let views: Vec<_> = self
            .nodes
            .values()
            .map(|node| node.running.node.leadership())
            .collect();
        let Some(term) = views.first().map(|view| view.term) else {
            return false;
        };
        views
            .iter()
            .all(|view| view.leader == Some(NodeIndex(leader)) && view.term == term)
            && views
                .iter()
                .filter(|view| view.role == wire::ElectionRole::Leader)
                .count()
                == 1
    }

    /// Waits until every running edge agrees that `leader` leads; panics naming what each
    /// edge sees when that does not happen within [`SETTLE`].
    pub async fn wait_for_leader(&self, leader: u16) {
        assert!(
            crate::wait_until(SETTLE, || self.agreed_on(leader)).await,
            "node {leader} never led: {:?}",
            self.election_views()
        );
    }

    /// Every running edge's (index, role, term, leader), for failure messages.
    pub fn election_views(&self) -> Vec<(u16, wire::ElectionRole, u64, Option<u16>)> {
        self.nodes
            .values()
            .map(|n| {
                let s = n.running.node.status();
                (s.index.0, s.role, s.term.0, s.leader.map(|l| l.0))
            })
            .collect()
    }

    /// How many GetImage requests the canonical has answered.
    pub fn canonical_image_fetches(&self) -> f64 {
        crate::prometheus::counter_with(
            &self.canonical().registry.render(),
            "flotilla_requests_total",
            "kind=\"get_image\"",
        )
    }

    /// The canonical's file for `id`.
    pub fn canonical_file(&self, id: u64) -> Vec<u8> {
        crate::find_file(&self.data, id).expect("the canonical holds the file")
    }

    /// Sum of a counter in edge `index`'s metrics.
    pub fn node_counter(&self, index: u16, name: &str) -> f64 {
        crate::prometheus::counter(&self.node(index).metrics.registry.render(), name)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values() {
            node.shutdown.cancel();
        }
        self.origin_shutdown.cancel();
    }
}
