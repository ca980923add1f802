//! Which replicas an edge accepts. A replica is cached only when it is pushed by the leader of
//! the receiver's current term (the leader its election view names, which must also own that
//! term) and carries metadata the canonical signed, with a body matching the signed digest.
//! Anything else gets an error reply saying what was wrong, is counted in
//! `flotilla_replicas_refused_total{reason}`, and is never cached. Who may push is decided
//! before a byte of the body is read.

use std::sync::Arc;

use election::{Members, View};
use net::server::{reply, reply_error};
use quinn::{RecvStream, SendStream};
use wire::message::ErrorKind;
use wire::{NodeIndex, Response, SignedMeta, Term};

use crate::cache::CachedImage;
use crate::Node;

/// Why a push is refused before its body is read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("replication push from term {term}, current term is {current}")]
    StaleTerm { term: Term, current: Term },
    #[error("replication push from node {from} in term {term} refused: {}", leader_text(*.current, *.leader))]
    NotLeader {
        from: NodeIndex,
        term: Term,
        current: Term,
        leader: Option<NodeIndex>,
    },
}

fn leader_text(current: Term, leader: Option<NodeIndex>) -> String {
    match leader {
        Some(leader) => format!(
            "node {leader} leads the current term {current}; only the leader of the current term replicates"
        ),
        None => format!(
            "no leader is known in the current term {current}; only the leader of the current term replicates"
        ),
    }
}

impl Refusal {
    /// The error kind of the reply.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Refusal::StaleTerm { .. } => ErrorKind::StaleTerm,
            Refusal::NotLeader { .. } => ErrorKind::NotLeader,
        }
    }

    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::StaleTerm { .. } => "stale_term",
            Refusal::NotLeader { .. } => "not_leader",
        }
    }
}

/// Whether edge `from` may push a replica in `term`, as this edge sees the election: only
/// the leader of the current term may, and it must own the term too. The election already
/// guarantees that a view's leader owns its term; checking both means a confused view can
/// never let a follower's key plant bytes.
pub fn admit(view: &View, members: &Members, from: NodeIndex, term: Term) -> Result<(), Refusal> {
    if term < view.term {
        return Err(Refusal::StaleTerm {
            term,
            current: view.term,
        });
    }
    let leads = term == view.term
        && view.leader == Some(from)
        && members.owner_of(term) == Some(from)
        && members.contains(from);
    if !leads {
        return Err(Refusal::NotLeader {
            from,
            term,
            current: view.term,
            leader: view.leader,
        });
    }
    Ok(())
}

impl Node {
    /// Serves a `Replicate` from edge `from` (its index from its certificate); returns the
    /// request's outcome label.
    pub(crate) async fn accept_replica(
        self: &Arc<Self>,
        from: NodeIndex,
        term: Term,
        meta: SignedMeta,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> &'static str {
        let id = meta.meta.id;
        if let Err(refusal) = admit(&self.leadership(), &self.members, from, term) {
            let outcome = match refusal {
                Refusal::StaleTerm { .. } => "stale",
                Refusal::NotLeader { .. } => "refused",
            };
            self.refuse_replica(send, from, refusal.reason(), refusal.kind(), refusal)
                .await;
            return outcome;
        }
        let meta = match self.peers.pool.origin().verify(meta) {
            Ok(meta) => meta,
            Err(error) => {
                self.metrics.bad_signatures.increment(1);
                let message = format!("replica of image {id} from node {from} refused: {error}");
                self.refuse_replica(
                    send,
                    from,
                    "bad_signature",
                    ErrorKind::BadSignature,
                    message,
                )
                .await;
                return "refused";
            }
        };
        let body = tokio::time::timeout(
            wire::limits::REQUEST_TIMEOUT,
            net::frame::read_body(recv, &meta),
        )
        .await;
        match body {
            Ok(Ok(body)) => {
                let inserted = self.cache.insert(CachedImage { meta, body });
                self.metrics.cache_evictions.increment(inserted.evicted);
                self.publish_cache_stats();
                reply(send, &Response::Ack).await;
                "ok"
            }
            Ok(Err(error)) => {
                // Only a body that arrived whole and hashed wrong is a digest mismatch; a short,
                // long or oversized body is a malformed request.
                let (reason, kind) = match error {
                    net::frame::FrameError::DigestMismatch { .. } => {
                        self.metrics.digest_mismatches.increment(1);
                        ("digest_mismatch", ErrorKind::DigestMismatch)
                    }
                    _ => ("malformed", ErrorKind::BadRequest),
                };
                self.refuse_replica(send, from, reason, kind, error).await;
                "rejected"
            }
            Err(_) => {
                let message = "replica body did not arrive in time";
                self.refuse_replica(send, from, "timeout", ErrorKind::BadRequest, message)
                    .await;
                "timeout"
            }
        }
    }

    async fn refuse_replica(
        &self,
        send: &mut SendStream,
        from: NodeIndex,
        reason: &'static str,
        kind: ErrorKind,
        message: impl ToString,
    ) {
        let message = message.to_string();
        tracing::warn!(%from, reason, %message, "replica refused");
        self.metrics.replica_refused(reason);
        reply_error(send, kind, message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::ElectionRole;

    fn view(role: ElectionRole, term: u64, leader: Option<u16>) -> View {
        View {
            role,
            term: Term(term),
            leader: leader.map(NodeIndex),
        }
    }

    #[test]
    fn only_the_leader_of_the_current_term_may_replicate() {
        // Five edges: term 5 and 10 belong to node 5, term 7 to node 2.
        let members = Members::new(NodeIndex(1), (1..=5).map(NodeIndex));
        let follower = ElectionRole::Follower;
        let cases: &[(&str, View, u16, u64, Option<&str>)] = &[
            (
                "the leader, current term",
                view(follower, 5, Some(5)),
                5,
                5,
                None,
            ),
            (
                "a follower, current term",
                view(follower, 5, Some(5)),
                2,
                5,
                Some("not_leader"),
            ),
            (
                "the leader, an older term",
                view(follower, 10, Some(5)),
                5,
                5,
                Some("stale_term"),
            ),
            (
                "the owner of a future term",
                view(follower, 5, Some(5)),
                2,
                7,
                Some("not_leader"),
            ),
            (
                "the leader, a future term",
                view(follower, 5, Some(5)),
                5,
                10,
                Some("not_leader"),
            ),
            (
                "no leader known",
                view(ElectionRole::Candidate, 5, None),
                5,
                5,
                Some("not_leader"),
            ),
            (
                "a leader that does not own the term",
                view(follower, 7, Some(5)),
                5,
                7,
                Some("not_leader"),
            ),
            (
                "to the leader itself",
                view(ElectionRole::Leader, 5, Some(5)),
                4,
                5,
                Some("not_leader"),
            ),
            (
                "an unknown edge",
                view(follower, 9, Some(9)),
                9,
                9,
                Some("not_leader"),
            ),
        ];
        for (what, view, from, term, refused) in cases {
            let verdict = admit(view, &members, NodeIndex(*from), Term(*term));
            assert_eq!(
                verdict.as_ref().err().map(Refusal::reason),
                *refused,
                "{what}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_refusal_says_who_leads() {
        let members = Members::new(NodeIndex(1), (1..=3).map(NodeIndex));
        let refusal = admit(
            &view(ElectionRole::Follower, 3, Some(3)),
            &members,
            NodeIndex(2),
            Term(3),
        )
        .unwrap_err();
        assert_eq!(refusal.kind(), ErrorKind::NotLeader);
        let text = refusal.to_string();
        assert!(
            text.contains("node 2") && text.contains("node 3 leads"),
            "{text}"
        );
    }
}
