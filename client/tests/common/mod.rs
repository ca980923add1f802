//! An in-process Flotilla cluster for integration tests: a canonical and N edges on
//! 127.0.0.1, all with certificates from one test CA, started through the crates' own `start`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use client::Client;
use net::tls::Credentials;
use tokio_util::sync::CancellationToken;
use wire::cluster::{ClusterFile, Member};
use wire::pki::ClusterCa;
use wire::routing::Routing;
use wire::NodeIndex;
use wire::Role;

/// One CA for every test in the binary; certificates are issued per test from it.
pub fn test_ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| ClusterCa::generate().expect("test CA"))
}

pub fn credentials(role: Role) -> Credentials {
    Credentials::issue(test_ca(), role).expect("issuing a test certificate")
}

/// A free UDP port on 127.0.0.1 (bound and released; tests run on loopback only).
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding a probe socket");
    socket.local_addr().expect("probe address").port()
}

/// What to start.
pub struct Options {
    pub nodes: u16,
    pub samples: u64,
    pub images: Option<PathBuf>,
    pub cache_mb: u64,
    pub metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            samples: 1000,
            images: None,
            cache_mb: 64,
            metrics: false,
        }
    }
}

pub struct TestNode {
    pub running: node::Running,
    pub shutdown: CancellationToken,
}

/// A running in-process cluster; dropping it stops everything.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub canonical: canonical::Running,
    pub canonical_shutdown: CancellationToken,
    pub nodes: BTreeMap<NodeIndex, TestNode>,
    pub file: ClusterFile,
}

impl TestCluster {
    pub async fn start(options: Options) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = options
            .images
            .clone()
            .unwrap_or_else(|| dir.path().join("images"));
        let canonical_shutdown = CancellationToken::new();
        let canonical = canonical::start(
            canonical::Config {
                name: "test_canonical".into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                metrics: options.metrics.then(|| "127.0.0.1:0".parse().unwrap()),
                data: data.clone(),
                samples: if options.images.is_some() {
                    0
                } else {
                    options.samples
                },
                credentials: credentials(Role::Canonical),
            },
            canonical_shutdown.clone(),
        )
        .await
        .expect("starting the canonical");
        let ports: BTreeMap<NodeIndex, u16> = (1..=options.nodes)
            .map(|i| (NodeIndex(i), free_udp_port()))
            .collect();
        let peers: BTreeMap<NodeIndex, String> = ports
            .iter()
            .map(|(index, port)| (*index, format!("127.0.0.1:{port}")))
            .collect();
        let mut nodes = BTreeMap::new();
        for (index, port) in &ports {
            let shutdown = CancellationToken::new();
            let running = node::start(
                node::Config {
                    index: *index,
                    name: format!("test_node_{index}"),
                    listen: format!("127.0.0.1:{port}").parse().unwrap(),
                    metrics: options.metrics.then(|| "127.0.0.1:0".parse().unwrap()),
                    canonical: canonical.quic.to_string(),
                    peers: peers.clone(),
                    cache_bytes: options.cache_mb * 1024 * 1024,
                    replicas: 2,
                    credentials: credentials(Role::Node(*index)),
                    election: node::election::Config::default(),
                },
                shutdown.clone(),
            )
            .await
            .expect("starting an edge");
            nodes.insert(*index, TestNode { running, shutdown });
        }
        let file = ClusterFile {
            prefix: "test".into(),
            runtime: "in-process".into(),
            canonical: Member {
                name: "test_canonical".into(),
                index: 0,
                quic: canonical.quic.to_string(),
                metrics: String::new(),
            },
            nodes: nodes
                .iter()
                .map(|(index, node)| Member {
                    name: format!("test_node_{index}"),
                    index: index.0,
                    quic: node.running.quic.to_string(),
                    metrics: String::new(),
                })
                .collect(),
        };
        TestCluster {
            dir,
            data,
            canonical,
            canonical_shutdown,
            nodes,
            file,
        }
    }

    /// A client with a fresh client certificate.
    pub fn client(&self) -> Client {
        Client::with_credentials(
            self.file.clone(),
            &credentials(Role::Client),
            Routing::Rendezvous,
        )
        .expect("client")
    }

    pub fn node(&self, index: u16) -> &node::Node {
        &self.nodes[&NodeIndex(index)].running.node
    }

    /// Stops edge `index` as a crash would look to its peers (endpoint closed).
    pub async fn stop_node(&mut self, index: u16) {
        if let Some(node) = self.nodes.remove(&NodeIndex(index)) {
            node.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), node.running.task).await;
        }
    }

    /// The canonical's file for `id`.
    pub fn canonical_file(&self, id: u64) -> Vec<u8> {
        find_file(&self.data, id).expect("the canonical holds the file")
    }

    /// Sum of a counter in a node's metrics.
    pub fn node_counter(&self, index: u16, name: &str) -> f64 {
        counter(&self.node(index).metrics.registry.render(), name)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values() {
            node.shutdown.cancel();
        }
        self.canonical_shutdown.cancel();
    }
}

/// Reads `<id>.<ext>` from `dir`.
pub fn find_file(dir: &Path, id: u64) -> Option<Vec<u8>> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().to_string();
        (name.split('.').next() == Some(&id.to_string()) && !name.starts_with('.'))
            .then(|| std::fs::read(entry.path()).ok())
            .flatten()
    })
}

/// Sum over all label sets of `name` in Prometheus text.
pub fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sum of `name` series whose labels contain `label` (e.g. `kind="get_image"`).
pub fn counter_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F: FnMut() -> bool>(deadline: Duration, mut condition: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}
