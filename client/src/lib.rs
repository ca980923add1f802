//! The Flotilla client library: finds the cluster from `.cluster/`, keeps one QUIC connection
//! per edge, routes each image id to its edges by rendezvous hashing and fails over to the
//! next edge when one does not answer. The `client` binary and the bench are built on it.

pub mod bench;
mod silence;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
pub use net::frame::BodyCheck;
use net::pool::{NetError, Pool, Target};
use net::tls::Credentials;
use net::CallError;
use wire::cluster::{ClusterFile, Member};
use wire::limits::{
    BRIDGE_PROBE_TIMEOUT, CLIENT_ATTEMPT_TIMEOUT, CLIENT_CONNECT_GRACE, CLIENT_DOWN_RETRY,
    CLIENT_EDGES_AFTER_ORIGIN_DOWN, CLIENT_KEEP_ALIVE, HEADER_TIMEOUT,
};
use wire::message::ErrorKind;
use wire::routing::{rank, Routing};
use wire::{CacheOutcome, ImageId, ImageMeta, NodeIndex, NodeStatus, Role};

/// Name of the client's credentials folder inside `.cluster/`.
pub const CLIENT_CERTS_DIR: &str = "client";
/// Name of the operator's credentials folder inside `.cluster/`: the certificate that may set
/// faults in members' sockets (`client net-faults`, used by `cargo xtask partition` and
/// `netem` on a swarm).
pub const OPERATOR_CERTS_DIR: &str = "operator";

/// A client failure, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("image {0} not found on the canonical")]
    NotFound(ImageId),
    #[error(transparent)]
    Cluster(#[from] wire::cluster::ClusterError),
    #[error("loading the client certificate from {path}: {detail}; re-run `cargo xtask up`")]
    Credentials { path: String, detail: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("no edge answered within {seconds} s: is the cluster running? (`cargo xtask status`, or start one with `cargo xtask up 3`)")]
    NoEdges { seconds: u64 },
    #[error("the canonical ({canonical}) did not answer, and image {id} is not cached on {edges}: check the canonical with `cargo xtask status` and `cargo xtask logs canonical`")]
    OriginUnavailable {
        id: ImageId,
        canonical: String,
        edges: String,
    },
    #[error("no edge could serve image {id}: {last}")]
    Exhausted { id: ImageId, last: String },
    #[error("{0}")]
    Remote(String),
    #[error("there is no member `{0}` in this cluster: name an edge index or `canonical`")]
    NoSuchMember(String),
}

impl ClientError {
    /// Whether the failure lies in what the user asked for rather than in the cluster.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ClientError::NotFound(_) | ClientError::NoSuchMember(_)
        )
    }
}

/// An image as fetched: its metadata verified against the canonical's signature, its body
/// against the signed digest.
pub struct Fetched {
    pub meta: ImageMeta,
    pub body: Bytes,
    pub served_by: String,
    pub outcome: CacheOutcome,
    pub edge: NodeIndex,
}

/// An image read and dropped by [`Client::drain_image`].
#[derive(Clone, Debug)]
pub struct Drained {
    /// Body bytes read (the signed size).
    pub bytes: u64,
    /// The signed digest the body matched, when it was checked ([`BodyCheck::Digest`]).
    pub digest: Option<wire::Digest>,
    pub outcome: CacheOutcome,
    pub edge: NodeIndex,
}

/// How one edge is asked for an image: [`KeepBody`] or [`DrainBody`].
trait ImageCall {
    type Reply;
    fn call<'a>(
        &'a self,
        pool: &'a Pool,
        target: &'a Target,
        id: ImageId,
    ) -> impl Future<Output = Result<Self::Reply, CallError>> + 'a;
}

/// The body read whole and checked against the signed digest.
struct KeepBody;

impl ImageCall for KeepBody {
    type Reply = net::ImageReply;
    fn call<'a>(
        &'a self,
        pool: &'a Pool,
        target: &'a Target,
        id: ImageId,
    ) -> impl Future<Output = Result<Self::Reply, CallError>> + 'a {
        pool.get_image(target, id)
    }
}

/// The body read and dropped, checked as asked.
struct DrainBody(BodyCheck);

impl ImageCall for DrainBody {
    type Reply = net::DrainedReply;
    fn call<'a>(
        &'a self,
        pool: &'a Pool,
        target: &'a Target,
        id: ImageId,
    ) -> impl Future<Output = Result<Self::Reply, CallError>> + 'a {
        pool.drain_image(target, id, self.0)
    }
}

/// Answer from one member to ping/status.
#[derive(Clone, Debug)]
pub struct Probe {
    pub member: Member,
    pub rtt: Option<Duration>,
    pub status: Option<NodeStatus>,
    pub error: Option<String>,
}

/// A connected client.
pub struct Client {
    pub cluster: ClusterFile,
    pool: Pool,
    routing: Routing,
    /// Edges that failed in this process, with when: tried only after the others for
    /// [`CLIENT_DOWN_RETRY`], then in their routing place again.
    down: Mutex<HashMap<NodeIndex, Instant>>,
    /// The address each member is reached at, by index, once chosen: its bridge address
    /// when that answered a probe, else its published port.
    addresses: Mutex<HashMap<u16, String>>,
}

impl Client {
    /// Loads the cluster description and client certificate from `cluster_dir`.
    pub fn open(cluster_dir: &Path, routing: Routing) -> Result<Client, ClientError> {
        let cluster = ClusterFile::load(cluster_dir)?;
        let certs = cluster_dir.join(CLIENT_CERTS_DIR);
        let credentials = Credentials::load(&certs).map_err(|source| ClientError::Credentials {
            path: certs.display().to_string(),
            detail: source.to_string(),
        })?;
        Client::with_credentials(cluster, &credentials, routing)
    }

    /// Loads the cluster description and the operator's certificate from `cluster_dir`: a
    /// client that may also set members' socket faults ([`Client::set_net_faults`]).
    pub fn open_as_operator(cluster_dir: &Path) -> Result<Client, ClientError> {
        let cluster = ClusterFile::load(cluster_dir)?;
        let certs = cluster_dir.join(OPERATOR_CERTS_DIR);
        let credentials = Credentials::load(&certs).map_err(|source| {
            ClientError::Remote(format!(
                "loading the operator certificate from {}: {source}; re-run `cargo xtask up` to make it",
                certs.display()
            ))
        })?;
        Client::with_credentials(cluster, &credentials, Routing::Rendezvous)
    }

    /// Replaces the faults in the UDP socket of `member` (an edge index, or `canonical`) and
    /// returns its name. Only a client opened with the operator's certificate is obeyed.
    pub async fn set_net_faults(
        &self,
        member: &str,
        faults: wire::NetFaults,
    ) -> Result<String, ClientError> {
        let index = match member {
            "canonical" => Some(0),
            other => other.parse::<u16>().ok().filter(|index| *index > 0),
        };
        let found = index.and_then(|index| {
            std::iter::once(&self.cluster.canonical)
                .chain(&self.cluster.nodes)
                .find(|m| m.index == index)
        });
        let Some(found) = found else {
            return Err(ClientError::NoSuchMember(member.to_string()));
        };
        let target = self.target(found).await;
        match self.pool.set_net_faults(&target, faults).await {
            Ok(()) => Ok(found.name.clone()),
            Err(error) => Err(ClientError::Remote(format!("{}: {error}", found.name))),
        }
    }

    /// A client for `cluster` using `credentials` (tests build these directly).
    pub fn with_credentials(
        cluster: ClusterFile,
        credentials: &Credentials,
        routing: Routing,
    ) -> Result<Client, ClientError> {
        let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let mut endpoint = net::pool::endpoint(net::bind_udp(any)?, credentials, false)?;
        // A short keep-alive, so that a live edge is never silent for long (`silence`).
        endpoint.set_default_client_config(
            credentials
                .client_config_keeping_alive(CLIENT_KEEP_ALIVE)
                .map_err(NetError::from)?,
        );
        Ok(Client {
            cluster,
            pool: Pool::new(endpoint, credentials.origin_trust()),
            routing,
            down: Mutex::new(HashMap::new()),
            addresses: Mutex::new(HashMap::new()),
        })
    }

    /// Where to reach `member`. The first call for a member with a bridge address (Docker
    /// on Linux: no docker-proxy in the way) dials it for at most [`BRIDGE_PROBE_TIMEOUT`];
    /// if that fails the published port is used from then on. The connection the probe made
    /// is the one later requests use. Certificates are checked by role name, not address.
    async fn target(&self, member: &Member) -> Target {
        let role = if member.index == 0 {
            Role::Canonical
        } else {
            Role::Node(NodeIndex(member.index))
        };
        let chosen = self
            .addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&member.index)
            .cloned();
        if let Some(address) = chosen {
            return Target::new(address, role);
        }
        let address = match &member.bridge {
            Some(bridge) => {
                let probe = Target::new(bridge.clone(), role);
                match tokio::time::timeout(BRIDGE_PROBE_TIMEOUT, self.pool.connection(&probe)).await
                {
                    Ok(Ok(_)) => bridge.clone(),
                    _ => {
                        tracing::debug!(name = %member.name, %bridge, "bridge address did not answer; using the published port");
                        member.quic.clone()
                    }
                }
            }
            None => member.quic.clone(),
        };
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(member.index, address.clone());
        Target::new(address, role)
    }

    fn edges(&self) -> Vec<NodeIndex> {
        self.cluster
            .nodes
            .iter()
            .map(|m| NodeIndex(m.index))
            .collect()
    }

    fn member(&self, edge: NodeIndex) -> Option<&Member> {
        self.cluster.nodes.iter().find(|m| m.index == edge.0)
    }

    fn mark(&self, edge: NodeIndex, down: bool) {
        let mut failed = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down {
            failed.insert(edge, Instant::now());
        } else {
            failed.remove(&edge);
        }
    }

    /// Runs one attempt on `member`: for at most [`CLIENT_ATTEMPT_TIMEOUT`], and only as long
    /// as the edge is heard from (see [`silence`]): one that sends nothing at all meanwhile is
    /// given up on as soon as that is clear, so a killed or paused edge costs a read about half
    /// a second instead of the whole attempt.
    async fn attempt<T>(
        &self,
        member: &Member,
        target: &Target,
        call: impl Future<Output = T>,
    ) -> Result<T, String> {
        let watch = async {
            let mut silence = silence::Silence::new(Instant::now());
            loop {
                tokio::time::sleep(silence::LOOK_EVERY).await;
                let connection = self.pool.existing(target);
                let received = connection.as_ref().map(|c| c.stats().udp_rx.datagrams);
                let bound = silence::silent_after(connection.map_or(Duration::ZERO, |c| c.rtt()));
                if silence.look(received, Instant::now(), bound) {
                    return bound;
                }
            }
        };
        tokio::select! {
            done = tokio::time::timeout(CLIENT_ATTEMPT_TIMEOUT, call) => done.map_err(|_| {
                format!(
                    "{} did not finish within {} s",
                    member.name,
                    CLIENT_ATTEMPT_TIMEOUT.as_secs()
                )
            }),
            bound = watch => Err(format!(
                "{} sent nothing for {} ms (stopped, paused or cut off?)",
                member.name,
                bound.as_millis()
            )),
        }
    }

    /// Dials every edge at once and returns how many answered. It returns soon after the first
    /// edge answers ([`CLIENT_CONNECT_GRACE`] later), so one dead edge does not cost every command a
    /// whole connect timeout; edges that have not answered by then are tried last.
    pub async fn connect_all(&self) -> Result<usize, ClientError> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut dials: FuturesUnordered<_> = self
            .cluster
            .nodes
            .iter()
            .map(|member| async move {
                let target = self.target(member).await;
                let ok = self.pool.connection(&target).await.is_ok();
                (NodeIndex(member.index), ok)
            })
            .collect();
        let mut answered = BTreeSet::new();
        let mut grace_ends: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace_ends {
                Some(end) => match tokio::time::timeout_at(end, dials.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => dials.next().await,
            };
            let Some((edge, ok)) = next else { break };
            if ok {
                answered.insert(edge);
                grace_ends
                    .get_or_insert_with(|| tokio::time::Instant::now() + CLIENT_CONNECT_GRACE);
            }
        }
        for member in &self.cluster.nodes {
            let edge = NodeIndex(member.index);
            self.mark(edge, !answered.contains(&edge));
        }
        if answered.is_empty() {
            return Err(ClientError::NoEdges {
                seconds: wire::limits::CONNECT_TIMEOUT.as_secs(),
            });
        }
        Ok(answered.len())
    }

    /// Edges in the order to try for `id`: routing order, edges that failed within the last
    /// [`CLIENT_DOWN_RETRY`] last.
    pub fn route(&self, id: ImageId) -> Vec<NodeIndex> {
        let ranked = rank(id, &self.edges(), self.routing);
        let (mut up, failed): (Vec<_>, Vec<_>) = {
            let down = self.down.lock().unwrap_or_else(|p| p.into_inner());
            ranked.into_iter().partition(|edge| {
                down.get(edge)
                    .is_none_or(|since| since.elapsed() >= CLIENT_DOWN_RETRY)
            })
        };
        up.extend(failed);
        up
    }

    /// Fetches image `id`, trying its edges in routing order until one serves it. An edge
    /// that answers that the canonical did not answer it is alive; past it only
    /// [`CLIENT_EDGES_AFTER_ORIGIN_DOWN`] more edges are asked (one may hold a replica), since
    /// the rest would ask the same canonical.
    pub async fn get_image(&self, id: ImageId) -> Result<Fetched, ClientError> {
        let (reply, edge) = self.fetch(id, &KeepBody).await?;
        Ok(Fetched {
            meta: reply.meta.into_signed().meta,
            body: reply.body,
            served_by: reply.served_by,
            outcome: reply.outcome,
            edge,
        })
    }

    /// As [`Client::get_image`], but the body is read and dropped, checked as `check` asks:
    /// for a load generator, which keeps no bodies.
    pub async fn drain_image(&self, id: ImageId, check: BodyCheck) -> Result<Drained, ClientError> {
        let (reply, edge) = self.fetch(id, &DrainBody(check)).await?;
        Ok(Drained {
            bytes: reply.bytes,
            digest: (check == BodyCheck::Digest).then_some(reply.meta.digest),
            outcome: reply.outcome,
            edge,
        })
    }

    /// The routing-order walk of [`Client::get_image`], asking each edge as `how` does; the
    /// reply and the edge that gave it.
    async fn fetch<C: ImageCall>(
        &self,
        id: ImageId,
        how: &C,
    ) -> Result<(C::Reply, NodeIndex), ClientError> {
        let mut last = String::from("no edges configured");
        let mut origin_down: Vec<NodeIndex> = Vec::new();
        let mut asked_since = 0;
        for edge in self.route(id) {
            if !origin_down.is_empty() {
                if asked_since == CLIENT_EDGES_AFTER_ORIGIN_DOWN {
                    break;
                }
                asked_since += 1;
            }
            match self.get_from(edge, id, how).await {
                Ok(reply) => {
                    self.mark(edge, false);
                    return Ok((reply, edge));
                }
                Err(ClientError::NotFound(id)) => return Err(ClientError::NotFound(id)),
                Err(ClientError::OriginUnavailable { .. }) => {
                    tracing::debug!(%edge, "the canonical did not answer the edge");
                    self.mark(edge, false);
                    origin_down.push(edge);
                }
                Err(error) => {
                    tracing::debug!(%edge, %error, "edge failed; trying the next");
                    self.mark(edge, true);
                    last = format!("node {edge}: {error}");
                }
            }
        }
        if !origin_down.is_empty() {
            return Err(self.origin_unavailable(id, &origin_down));
        }
        Err(ClientError::Exhausted { id, last })
    }

    /// The error for an image no edge asked had cached while the canonical did not answer them.
    fn origin_unavailable(&self, id: ImageId, edges: &[NodeIndex]) -> ClientError {
        let names: Vec<String> = edges
            .iter()
            .map(|edge| match self.member(*edge) {
                Some(member) => member.name.clone(),
                None => format!("node {edge}"),
            })
            .collect();
        ClientError::OriginUnavailable {
            id,
            canonical: self.cluster.canonical.name.clone(),
            edges: names.join(" or "),
        }
    }

    async fn get_from<C: ImageCall>(
        &self,
        edge: NodeIndex,
        id: ImageId,
        how: &C,
    ) -> Result<C::Reply, ClientError> {
        let member = self
            .member(edge)
            .ok_or(ClientError::Remote(format!("unknown edge {edge}")))?;
        let target = self.target(member).await;
        let fetched = self
            .attempt(member, &target, how.call(&self.pool, &target, id))
            .await
            .map_err(ClientError::Remote)?;
        match fetched {
            Ok(reply) => Ok(reply),
            Err(CallError::NotFound(id)) => Err(ClientError::NotFound(id)),
            Err(CallError::Refused {
                kind: ErrorKind::OriginUnavailable,
                ..
            }) => Err(self.origin_unavailable(id, &[edge])),
            Err(CallError::Net(error)) => Err(ClientError::Net(error)),
            Err(error) => Err(ClientError::Remote(error.to_string())),
        }
    }

    /// The size of image `id`, from metadata only.
    pub async fn image_size(&self, id: ImageId) -> Result<u64, ClientError> {
        let mut last = String::from("no edges configured");
        let mut origin_down: Vec<NodeIndex> = Vec::new();
        let mut asked_since = 0;
        for edge in self.route(id) {
            // As for images: past an edge the canonical did not answer, only the next may
            // know the size from its cache.
            if !origin_down.is_empty() {
                if asked_since == CLIENT_EDGES_AFTER_ORIGIN_DOWN {
                    break;
                }
                asked_since += 1;
            }
            let Some(member) = self.member(edge) else {
                continue;
            };
            let target = self.target(member).await;
            let answer = self
                .attempt(member, &target, self.pool.image_size(&target, id))
                .await;
            match answer {
                Ok(Ok(size)) => return Ok(size),
                Ok(Err(CallError::NotFound(id))) => return Err(ClientError::NotFound(id)),
                Ok(Err(CallError::Refused {
                    kind: ErrorKind::OriginUnavailable,
                    ..
                })) => origin_down.push(edge),
                Ok(Err(CallError::Net(error))) => {
                    self.mark(edge, true);
                    last = format!("node {edge}: {error}");
                }
                Ok(Err(error)) => last = format!("node {edge}: {error}"),
                Err(gone) => {
                    self.mark(edge, true);
                    last = format!("node {edge}: {gone}");
                }
            }
        }
        if !origin_down.is_empty() {
            return Err(self.origin_unavailable(id, &origin_down));
        }
        Err(ClientError::Exhausted { id, last })
    }

    /// Pings every member (the canonical first), with status from the edges.
    pub async fn probe_all(&self, with_canonical: bool) -> Vec<Probe> {
        let mut members: Vec<Member> = Vec::new();
        if with_canonical {
            members.push(self.cluster.canonical.clone());
        }
        members.extend(self.cluster.nodes.iter().cloned());
        let probes = members.into_iter().map(|member| self.probe(member));
        futures::future::join_all(probes).await
    }

    async fn probe(&self, member: Member) -> Probe {
        let target = self.target(&member).await;
        let mut probe = Probe {
            member,
            rtt: None,
            status: None,
            error: None,
        };
        // Dial first so the RTT measures a request, not the handshake.
        if let Err(error) = self.pool.connection(&target).await {
            probe.error = Some(error.to_string());
            return probe;
        }
        let started = Instant::now();
        match tokio::time::timeout(HEADER_TIMEOUT, self.pool.ping(&target)).await {
            Ok(Ok(_)) => probe.rtt = Some(started.elapsed()),
            Ok(Err(error)) => probe.error = Some(error.to_string()),
            Err(_) => probe.error = Some("no answer in time".to_string()),
        }
        if probe.rtt.is_some() && probe.member.index != 0 {
            if let Ok(Ok(status)) =
                tokio::time::timeout(HEADER_TIMEOUT, self.pool.status(&target)).await
            {
                probe.status = Some(status);
            }
        }
        probe
    }
}
