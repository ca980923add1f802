//! Cache misses: one upstream fetch per id however many requests wait for it (coalescing), run
//! in its own task so a waiter that goes away never cancels the fetch for the others. The
//! upstream is the leader (origin shield) when there is one, otherwise the canonical; the
//! leader replicates what it fetched from the canonical to the id's routing targets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use net::pool::{GetImageError, Target};
use tokio::sync::watch;
use wire::message::ErrorKind;
use wire::routing::{rank, Routing};
use wire::{CacheOutcome, ImageId, ImageMeta, NodeIndex, Request, Response, Role, Term};

use crate::cache::CachedImage;
use crate::Node;

/// Why an image could not be produced.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    #[error("image {0} not found on the canonical")]
    NotFound(ImageId),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DigestMismatch(String),
}

impl FetchError {
    /// The wire error kind for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::NotFound(_) => ErrorKind::NotFound,
            FetchError::Unavailable(_) => ErrorKind::Unavailable,
            FetchError::DigestMismatch(_) => ErrorKind::DigestMismatch,
        }
    }
}

type FetchResult = Result<CachedImage, FetchError>;

/// How long an edge waits for the leader's answer before going to the canonical itself. The
/// leader answers once it holds the image, which takes one canonical fetch at most; a leader
/// that was just killed would otherwise stall every miss until its connection times out.
const LEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Fetches in flight, by id. Each entry is removed by the fetch task itself when it ends.
#[derive(Default)]
pub struct InFlight {
    fetches: Mutex<HashMap<ImageId, watch::Receiver<Option<FetchResult>>>>,
}

impl Node {
    /// The image `id` for a request from `requester`: from the cache, or fetched once.
    pub async fn image(
        self: &Arc<Self>,
        id: ImageId,
        requester: Role,
    ) -> Result<(CachedImage, CacheOutcome), FetchError> {
        if let Some(image) = self.cache.get(id) {
            self.metrics.cache_hits.increment(1);
            self.counters.hit();
            return Ok((image, CacheOutcome::Hit));
        }
        self.metrics.cache_misses.increment(1);
        self.counters.miss();
        let (mut receiver, started) = {
            let mut fetches = self
                .in_flight
                .fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match fetches.get(&id) {
                Some(receiver) => (receiver.clone(), false),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    fetches.insert(id, receiver.clone());
                    let node = self.clone();
                    tokio::spawn(async move {
                        let result = node.fetch_upstream(id, requester).await;
                        node.in_flight
                            .fetches
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        let _ = sender.send(Some(result));
                    });
                    (receiver, true)
                }
            }
        };
        if !started {
            self.metrics.coalesced_waits.increment(1);
        }
        let result = receiver
            .wait_for(Option::is_some)
            .await
            .map_err(|_| FetchError::Unavailable(format!("fetch of image {id} was abandoned")))?
            .clone();
        let outcome = if started {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Coalesced
        };
        // `wait_for` only returns once the value is `Some`.
        match result {
            Some(Ok(image)) => Ok((image, outcome)),
            Some(Err(error)) => Err(error),
            None => Err(FetchError::Unavailable(format!(
                "fetch of image {id} ended without a result"
            ))),
        }
    }

    /// Runs one upstream fetch and caches its verified result.
    async fn fetch_upstream(self: &Arc<Self>, id: ImageId, requester: Role) -> FetchResult {
        let view = self.leadership();
        let leader = view.leader.filter(|leader| *leader != self.config.index);
        // An edge asking us is treated as asking the origin shield: we never forward it on,
        // so a stale view of who leads cannot make two edges bounce a request between them.
        let via_leader = match (leader, requester) {
            (Some(leader), Role::Client) => self.peers.edge(leader).cloned(),
            _ => None,
        };
        let mut image = None;
        if let Some(target) = via_leader {
            match self.fetch_from(&target, id, LEADER_TIMEOUT).await {
                Ok(fetched) => {
                    self.metrics.leader_fetches.increment(1);
                    image = Some(fetched);
                }
                Err(FetchError::NotFound(id)) => return Err(FetchError::NotFound(id)),
                Err(error) => {
                    tracing::warn!(%id, %error, "leader fetch failed; going to the canonical");
                }
            }
        }
        let fetched_from_origin = image.is_none();
        let image = match image {
            Some(image) => image,
            None => {
                self.metrics.origin_fetches.increment(1);
                let canonical = self.peers.canonical.clone();
                self.fetch_from(&canonical, id, wire::limits::REQUEST_TIMEOUT)
                    .await?
            }
        };
        let inserted = self.cache.insert(image.clone());
        self.metrics.cache_evictions.increment(inserted.evicted);
        self.publish_cache_stats();
        if fetched_from_origin && view.role == wire::ElectionRole::Leader {
            let node = self.clone();
            let replica = image.clone();
            tokio::spawn(async move { node.replicate(replica, view.term, requester).await });
        }
        Ok(image)
    }

    /// Fetches `id` from `target` and verifies it against its digest.
    async fn fetch_from(
        &self,
        target: &Target,
        id: ImageId,
        answer_within: Duration,
    ) -> FetchResult {
        let fetched = tokio::time::timeout(answer_within, self.peers.pool.get_image(target, id))
            .await
            .map_err(|_| {
                FetchError::Unavailable(format!(
                    "{} did not send image {id} in time",
                    target.address
                ))
            })?;
        match fetched {
            Ok(reply) => Ok(CachedImage {
                meta: reply.meta,
                body: reply.body,
            }),
            Err(GetImageError::NotFound(id)) => Err(FetchError::NotFound(id)),
            Err(error) if error.is_digest_mismatch() => {
                self.metrics.digest_mismatches.increment(1);
                Err(FetchError::DigestMismatch(format!(
                    "image {id} from {} failed digest verification; not cached",
                    target.address
                )))
            }
            Err(error) => Err(FetchError::Unavailable(error.to_string())),
        }
    }

    /// Pushes `image` to the edges the client's routing sends its id to, until `replicas` edges
    /// (counting this one) hold it.
    async fn replicate(self: Arc<Self>, image: CachedImage, term: Term, requester: Role) {
        let members = self.peers.members();
        let mut holders = 0;
        for edge in rank(image.meta.id, &members, Routing::Rendezvous) {
            if holders >= self.config.replicas {
                break;
            }
            if edge == self.config.index || requester == Role::Node(edge) {
                // We hold it already; the requesting edge caches its own copy.
                holders += 1;
                continue;
            }
            match self.push(edge, term, &image.meta, image.body.clone()).await {
                Ok(()) => {
                    self.metrics.replication_push("ok");
                    holders += 1;
                }
                Err(error) => {
                    self.metrics.replication_push("failed");
                    tracing::debug!(%edge, id = %image.meta.id, %error, "replication push failed");
                }
            }
        }
    }

    async fn push(
        &self,
        edge: NodeIndex,
        term: Term,
        meta: &ImageMeta,
        body: Bytes,
    ) -> Result<(), String> {
        let target = self.peers.edge(edge).ok_or("unknown edge")?.clone();
        let request = Request::Replicate {
            term,
            meta: meta.clone(),
        };
        let call = self.peers.pool.call(&target, &request, Some(body));
        match tokio::time::timeout(wire::limits::REQUEST_TIMEOUT, call).await {
            Ok(Ok(exchange)) => match exchange.response {
                Response::Ack => Ok(()),
                Response::Error { message, .. } => Err(message),
                other => Err(format!("unexpected reply {other:?}")),
            },
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("timed out".to_string()),
        }
    }
}
