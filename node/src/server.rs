//! What an edge answers, by request kind and by the role in the requester's certificate.

use std::sync::Arc;

use net::server::{reply, reply_error, reply_image, Handler};
use net::CallError;
use quinn::{RecvStream, SendStream};
use wire::message::ErrorKind;
use wire::{Request, Response, Role};

use crate::fetch::unreachable_reason;
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
                        image.meta.into_signed(),
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
            Request::NetFaults(faults) => {
                net::faults::answer(
                    peer,
                    faults,
                    &self.socket_faults,
                    &self.config.name,
                    &mut send,
                )
                .await
            }
            Request::Election(_) | Request::Replicate { .. } if !matches!(peer, Role::Node(_)) => {
                tracing::warn!(%peer, kind, "refusing an edge-only request");
                if kind == "replicate" {
                    self.metrics.replica_refused("forbidden");
                }
                reply_error(&mut send, ErrorKind::Forbidden, format!("{kind} requests are for edge nodes only; {peer} certificates may not send them")).await;
                "forbidden"
            }
            Request::Election(message) => {
                let Role::Node(from) = peer else { return };
                self.metrics.election_messages.received(message.kind);
                self.on_election_message(from, message);
                reply(&mut send, &Response::Ack).await;
                "ok"
            }
            Request::Replicate { term, meta } => {
                let Role::Node(from) = peer else { return };
                self.accept_replica(from, term, meta, &mut send, &mut recv)
                    .await
            }
        };
        self.metrics.request(kind, outcome);
    }
}

impl Node {
    /// The error message for a size the canonical could not be asked for.
    fn no_size(&self, id: wire::ImageId, reason: &str) -> String {
        format!(
            "the canonical ({}) did not answer ({reason}); image {id} is not cached on {}",
            self.peers.canonical.address, self.config.name
        )
    }

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
            Ok(Err(CallError::Net(error))) if unreachable_reason(&error).is_some() => {
                tracing::warn!(%peer, %error, "no size from the canonical");
                let reason = unreachable_reason(&error).unwrap_or_default();
                let message = self.no_size(id, &reason);
                reply_error(send, ErrorKind::OriginUnavailable, message).await;
                "error"
            }
            Ok(Err(error)) => {
                tracing::warn!(%peer, %error, "no size from the canonical");
                let message =
                    format!("the canonical's answer about image {id} was unusable: {error}");
                reply_error(send, ErrorKind::Unavailable, message).await;
                "error"
            }
            Err(_) => {
                let seconds = wire::limits::REQUEST_TIMEOUT.as_secs();
                let message = self.no_size(id, &format!("no answer within {seconds} s"));
                reply_error(send, ErrorKind::OriginUnavailable, message).await;
                "error"
            }
        }
    }
}
