//! Cache misses: one upstream fetch per id however many requests wait for it (coalescing), run
//! in its own task so a waiter that goes away never cancels the fetch for the others. Which
//! upstream to ask is `upstream::plan_upstream`'s decision: the leader (origin shield) when
//! there is one, otherwise the canonical; the leader replicates what it fetched from the
//! canonical to the id's routing targets.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use net::pool::NetError;
use net::{CallError, Target};
use tokio::sync::watch;
use wire::limits::{ORIGIN_FETCH_TIMEOUT, REQUEST_TIMEOUT, UPSTREAM_BUDGET};
use wire::message::ErrorKind;
use wire::routing::{rank, Routing};
use wire::{CacheOutcome, ImageId, Role, Term};

use crate::cache::CachedImage;
use crate::upstream::{plan_upstream, Asked, Plan};
use crate::Node;

/// Why an image could not be produced. Shared by every request waiting on one fetch, hence
/// `Clone` (the call error behind it is reference-counted).
#[derive(Clone, Debug, thiserror::Error)]
pub enum FetchError {
    #[error("image {0} not found on the canonical")]
    NotFound(ImageId),
    #[error("image {id}: {from} failed: {source}")]
    Upstream {
        id: ImageId,
        from: String,
        source: Arc<CallError>,
    },
    #[error("image {id} from {from} failed digest verification; not cached")]
    DigestMismatch { id: ImageId, from: String },
    #[error("image {id} from {from} is not signed by the canonical; not cached")]
    BadSignature { id: ImageId, from: String },
    /// The canonical could not be reached, by this edge or by the leader it asked. Answered
    /// at once with its own error kind: another edge would ask the same canonical.
    #[error(
        "the canonical ({canonical}) did not answer ({reason}); image {id} is not cached on {edge}"
    )]
    OriginUnavailable {
        id: ImageId,
        canonical: String,
        reason: String,
        edge: String,
    },
    #[error("image {id}: no upstream answered within {seconds} s")]
    OutOfTime { id: ImageId, seconds: u64 },
    #[error("the fetch of image {0} was abandoned (the node is shutting down)")]
    Abandoned(ImageId),
}

impl FetchError {
    /// The wire error kind for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            FetchError::NotFound(_) => ErrorKind::NotFound,
            FetchError::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            FetchError::BadSignature { .. } => ErrorKind::BadSignature,
            FetchError::OriginUnavailable { .. } => ErrorKind::OriginUnavailable,
            FetchError::Upstream { .. }
            | FetchError::OutOfTime { .. }
            | FetchError::Abandoned(_) => ErrorKind::Unavailable,
        }
    }
}

type FetchResult = Result<CachedImage, FetchError>;

/// A fetch from the leader under way.
type LeaderFetch = Pin<Box<dyn Future<Output = FetchResult> + Send>>;

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
            .map_err(|_| FetchError::Abandoned(id))?
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
            None => Err(FetchError::Abandoned(id)),
        }
    }

    /// Runs one upstream fetch within [`UPSTREAM_BUDGET`] and caches its verified result.
    /// What to ask is [`plan_upstream`]'s call, made again whenever the leader fails or the
    /// election view moves; a live leader is never bypassed because the origin is slow.
    async fn fetch_upstream(self: &Arc<Self>, id: ImageId, requester: Role) -> FetchResult {
        let deadline = Instant::now() + UPSTREAM_BUDGET;
        let mut views = self.elector.subscribe();
        let mut watching = true;
        let mut asked = Asked::Nobody;
        let mut pending: Option<LeaderFetch> = None;
        let image = loop {
            let view = *views.borrow_and_update();
            match plan_upstream(&view, requester, self.config.index, asked) {
                Plan::AskCanonical => break None,
                Plan::Wait => {}
                Plan::AskLeader(leader) => {
                    let Some(target) = self.peers.edge(leader).cloned() else {
                        break None;
                    };
                    let node = self.clone();
                    pending = Some(Box::pin(async move { node.fetch_from(&target, id).await }));
                    asked = Asked::Waiting(leader);
                }
            }
            let (Some(fetch), Asked::Waiting(leader)) = (pending.as_mut(), asked) else {
                break None;
            };
            tokio::select! {
                result = fetch => {
                    pending = None;
                    match result {
                        Ok(image) => break Some(image),
                        Err(FetchError::NotFound(id)) => return Err(FetchError::NotFound(id)),
                        // The leader is alive and could not reach the canonical; asking it
                        // ourselves would cost another connect timeout, past the client's
                        // attempt, for the same answer.
                        Err(error @ FetchError::OriginUnavailable { .. }) => return Err(error),
                        Err(error) => {
                            tracing::warn!(%id, %leader, %error, "leader fetch failed");
                            asked = Asked::Failed(leader);
                        }
                    }
                }
                changed = views.changed(), if watching => watching = changed.is_ok(),
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(FetchError::OutOfTime { id, seconds: UPSTREAM_BUDGET.as_secs() });
                }
            }
        };
        let fetched_from_origin = image.is_none();
        let image = match image {
            Some(image) => {
                self.metrics.leader_fetches.increment(1);
                image
            }
            None => {
                self.metrics.origin_fetches.increment(1);
                let left = deadline.saturating_duration_since(Instant::now());
                let canonical = self.peers.canonical.clone();
                match tokio::time::timeout(
                    left.min(ORIGIN_FETCH_TIMEOUT),
                    self.fetch_from(&canonical, id),
                )
                .await
                {
                    Ok(fetched) => fetched?,
                    Err(_) if left < ORIGIN_FETCH_TIMEOUT => {
                        return Err(FetchError::OutOfTime {
                            id,
                            seconds: UPSTREAM_BUDGET.as_secs(),
                        })
                    }
                    Err(_) => {
                        let seconds = ORIGIN_FETCH_TIMEOUT.as_secs();
                        return Err(
                            self.origin_unavailable(id, format!("no image within {seconds} s"))
                        );
                    }
                }
            }
        };
        let inserted = self.cache.insert(image.clone());
        self.metrics.cache_evictions.increment(inserted.evicted);
        self.publish_cache_stats();
        let view = self.leadership();
        if fetched_from_origin && view.role == wire::ElectionRole::Leader {
            let node = self.clone();
            let replica = image.clone();
            tokio::spawn(async move { node.replicate(replica, view.term, requester).await });
        }
        Ok(image)
    }

    /// Fetches `id` from `target`; the pool has checked the canonical's signature on its
    /// metadata and the body against the signed digest.
    async fn fetch_from(&self, target: &Target, id: ImageId) -> FetchResult {
        match self.peers.pool.get_image(target, id).await {
            Ok(reply) => Ok(CachedImage {
                meta: reply.meta,
                body: reply.body,
            }),
            Err(CallError::NotFound(id)) => Err(FetchError::NotFound(id)),
            Err(CallError::Refused {
                kind: ErrorKind::OriginUnavailable,
                ..
            }) => {
                let reason = match target.role {
                    Role::Node(leader) => format!("when the leader, node {leader}, asked"),
                    _ => format!("{} says so", target.address),
                };
                Err(self.origin_unavailable(id, reason))
            }
            Err(CallError::Net(error))
                if target.role == Role::Canonical && unreachable_reason(&error).is_some() =>
            {
                tracing::warn!(%id, canonical = %target.address, %error, "the canonical did not answer");
                let reason = unreachable_reason(&error).unwrap_or_default();
                Err(self.origin_unavailable(id, reason))
            }
            Err(error) if error.is_bad_signature() => {
                self.metrics.bad_signatures.increment(1);
                tracing::warn!(%id, from = %target.address, %error, "unsigned image refused");
                Err(FetchError::BadSignature {
                    id,
                    from: target.address.clone(),
                })
            }
            Err(error) if error.is_digest_mismatch() => {
                self.metrics.digest_mismatches.increment(1);
                Err(FetchError::DigestMismatch {
                    id,
                    from: target.address.clone(),
                })
            }
            Err(error) => Err(FetchError::Upstream {
                id,
                from: target.address.clone(),
                source: Arc::new(error),
            }),
        }
    }

    fn origin_unavailable(&self, id: ImageId, reason: String) -> FetchError {
        FetchError::OriginUnavailable {
            id,
            canonical: self.peers.canonical.address.clone(),
            reason,
            edge: self.config.name.clone(),
        }
    }

    /// Pushes `image` to the edges the client's routing sends its id to, until `replicas` edges
    /// (counting this one) hold it.
    async fn replicate(self: Arc<Self>, image: CachedImage, term: Term, requester: Role) {
        let members = self.peers.members();
        let started = Instant::now();
        let mut pushed = false;
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
            let Some(target) = self.peers.edge(edge) else {
                continue;
            };
            pushed = true;
            let meta = image.meta.signed().clone();
            let push = self
                .peers
                .pool
                .replicate(target, term, meta, image.body.clone());
            match tokio::time::timeout(REQUEST_TIMEOUT, push).await {
                Ok(Ok(())) => {
                    self.metrics.replication_push("ok");
                    holders += 1;
                }
                Ok(Err(error)) => {
                    self.metrics.replication_push("failed");
                    tracing::debug!(%edge, id = %image.meta.id, %error, "replication push failed");
                }
                Err(_) => {
                    self.metrics.replication_push("failed");
                    tracing::debug!(%edge, id = %image.meta.id, "replication push timed out");
                }
            }
        }
        if pushed {
            // The whole fan-out, as a replica set waits for it: every push, one after another.
            self.metrics
                .replication_fanout
                .record(started.elapsed().as_secs_f64());
        }
    }
}

/// Why a peer did not answer, in a few words for an error reply (the address is named
/// beside it); `None` when it did answer, badly (a bad frame is not an unreachable peer).
pub(crate) fn unreachable_reason(error: &NetError) -> Option<String> {
    match error {
        NetError::Timeout { seconds, .. } => Some(format!("no answer within {seconds} s")),
        NetError::Connect { detail, .. } => Some(format!("cannot connect: {detail}")),
        NetError::Resolve { detail, .. } => Some(format!("its address does not resolve: {detail}")),
        NetError::Lost { detail, .. } => Some(format!("connection lost: {detail}")),
        NetError::Bind { .. } | NetError::Tls(_) | NetError::Frame { .. } => None,
    }
}
