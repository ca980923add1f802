//! What an edge answers, by request kind and by the role in the requester's certificate.

use std::sync::Arc;

use net::server::{reply, reply_error, reply_image, Handler};
use net::CallError;
use quinn::{RecvStream, SendStream};
use wire::message::ErrorKind;
use wire::{ImageMeta, Request, Response, Role, Term};

use crate::cache::CachedImage;
use crate::Node;

impl Handler for Node {
    async fn handle(
        self: Arc<Self>,
        peer: Role,
        request: Request,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let kind = request.kind();
        let outcome = match request {
            Request::GetImage { id } => match self.image(id, peer).await {
                Ok((image, outcome)) => {
                    match reply_image(
                        &mut send,
                        image.meta,
                        &self.config.name,
                        outcome,
                        image.body,
                    )
                    .await
                    {
                        Ok(()) => "ok",
                        Err(_) => "aborted",
                    }
                }
                Err(error) => {
                    reply_error(&mut send, error.kind(), error.to_string()).await;
                    "error"
                }
            },
            Request::ImageSize { id } => self.image_size(id, peer, &mut send).await,
            Request::Status => {
                reply(&mut send, &Response::Status(self.status())).await;
                "ok"
            }
            Request::Ping => {
                reply(
                    &mut send,
                    &Response::Pong {
                        name: self.config.name.clone(),
                    },
                )
                .await;
                "ok"
            }
            Request::Election(_) | Request::Replicate { .. } if !matches!(peer, Role::Node(_)) => {
                tracing::warn!(%peer, kind, "refusing an edge-only request");
                reply_error(&mut send, ErrorKind::Forbidden, format!("{kind} requests are for edge nodes only; {peer} certificates may not send them")).await;
                "forbidden"
            }
            Request::Election(message) => {
                let Role::Node(from) = peer else { return };
                self.on_election_message(from, message);
                reply(&mut send, &Response::Ack).await;
                "ok"
            }
            Request::Replicate { term, meta } => {
                self.accept_replica(peer, term, meta, &mut send, &mut recv)
                    .await
            }
        };
        self.metrics.request(kind, outcome);
    }
}

impl Node {
    async fn image_size(
        self: &Arc<Self>,
        id: wire::ImageId,
        peer: Role,
        send: &mut SendStream,
    ) -> &'static str {
        if let Some(meta) = self.cache.meta(id) {
            reply(
                send,
                &Response::Size {
                    id,
                    size: meta.size,
                },
            )
            .await;
            return "ok";
        }
        // Metadata only: ask the canonical for the size, never move the image.
        let canonical = &self.peers.canonical;
        let answer = tokio::time::timeout(
            wire::limits::REQUEST_TIMEOUT,
            self.peers.pool.image_size(canonical, id),
        )
        .await;
        match answer {
            Ok(Ok(size)) => {
                reply(send, &Response::Size { id, size }).await;
                "ok"
            }
            Ok(Err(CallError::NotFound(id))) => {
                let message = format!("image {id} not found on the canonical");
                reply_error(send, ErrorKind::NotFound, message).await;
                "error"
            }
            Ok(Err(CallError::Refused { kind, message })) => {
                reply_error(send, kind, message).await;
                "error"
            }
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "no size from the canonical");
                let message = format!("canonical unreachable: {error}");
                reply_error(send, ErrorKind::Unavailable, message).await;
                "error"
            }
            Err(_) => {
                let message = "canonical did not answer in time";
                reply_error(send, ErrorKind::Unavailable, message).await;
                "error"
            }
        }
    }

    async fn accept_replica(
        self: &Arc<Self>,
        peer: Role,
        term: Term,
        meta: ImageMeta,
        send: &mut SendStream,
        recv: &mut RecvStream,
    ) -> &'static str {
        let current = self.leadership().term;
        if term < current {
            reply_error(
                send,
                ErrorKind::StaleTerm,
                format!("replication push from term {term}, current term is {current}"),
            )
            .await;
            return "stale";
        }
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
                tracing::warn!(%peer, %error, "replica rejected");
                // Only a body that arrived whole and hashed wrong is a digest mismatch; a short,
                // long or oversized body is a malformed request.
                let kind = match error {
                    net::frame::FrameError::DigestMismatch { .. } => {
                        self.metrics.digest_mismatches.increment(1);
                        ErrorKind::DigestMismatch
                    }
                    _ => ErrorKind::BadRequest,
                };
                reply_error(send, kind, error.to_string()).await;
                "rejected"
            }
            Err(_) => {
                reply_error(
                    send,
                    ErrorKind::BadRequest,
                    "replica body did not arrive in time",
                )
                .await;
                "timeout"
            }
        }
    }
}
