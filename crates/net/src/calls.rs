//! Typed peer calls: one method per request kind on [`Pool`], each sending its request and
//! turning the reply into a value or a [`CallError`]. The only place that matches a
//! [`Response`] on the requesting side, so the client, the edges and the console read replies
//! the same way.

use bytes::Bytes;
use wire::election::ElectionMessage;
use wire::message::{CacheOutcome, ErrorKind};
use wire::{ImageId, NodeStatus, Request, Response, SealError, SignedMeta, Term, VerifiedMeta};

use crate::frame::FrameError;
use crate::pool::{Exchange, NetError, Pool, Target};

/// An image as a server sent it: its metadata verified against the canonical's signature, its
/// body against the signed digest.
pub struct ImageReply {
    pub meta: VerifiedMeta,
    pub body: Bytes,
    pub served_by: String,
    pub outcome: CacheOutcome,
}

/// An image whose body was read and dropped ([`Pool::drain_image`]).
pub struct DrainedReply {
    pub meta: VerifiedMeta,
    /// Body bytes read: the signed size.
    pub bytes: u64,
    pub served_by: String,
    pub outcome: CacheOutcome,
}

/// A `GetImage` reply's header, its signature checked.
struct ImageHead {
    meta: VerifiedMeta,
    served_by: String,
    outcome: CacheOutcome,
}

/// Why a call did not produce its answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("image {0} not found on the canonical")]
    NotFound(ImageId),
    /// The server answered with an error other than not-found.
    #[error("{message}")]
    Refused { kind: ErrorKind, message: String },
    /// The image's metadata does not carry a valid signature of the canonical.
    #[error("image {id} from {address} refused: {source}")]
    BadSignature {
        id: ImageId,
        address: String,
        source: SealError,
    },
    #[error("{address} answered {request} with an unexpected reply")]
    Unexpected {
        address: String,
        request: &'static str,
    },
    #[error(transparent)]
    Net(#[from] NetError),
}

impl CallError {
    /// Whether the image's metadata was not signed by the canonical (here or upstream).
    pub fn is_bad_signature(&self) -> bool {
        matches!(
            self,
            CallError::BadSignature { .. }
                | CallError::Refused {
                    kind: ErrorKind::BadSignature,
                    ..
                }
        )
    }

    /// Whether the body failed digest verification.
    pub fn is_digest_mismatch(&self) -> bool {
        matches!(
            self,
            CallError::Net(NetError::Frame {
                source: FrameError::DigestMismatch { .. },
                ..
            }) | CallError::Refused {
                kind: ErrorKind::DigestMismatch,
                ..
            }
        )
    }
}

/// The reply of `exchange` when it is not the expected one: an error reply becomes
/// [`CallError::Refused`] (or [`CallError::NotFound`] for `id`), anything else unexpected.
fn unexpected(
    target: &Target,
    request: &Request,
    response: Response,
    id: Option<ImageId>,
) -> CallError {
    match (response, id) {
        (
            Response::Error {
                kind: ErrorKind::NotFound,
                ..
            },
            Some(id),
        ) => CallError::NotFound(id),
        (Response::Error { kind, message }, _) => CallError::Refused { kind, message },
        _ => CallError::Unexpected {
            address: target.address.clone(),
            request: request.kind(),
        },
    }
}

impl Pool {
    async fn ask(&self, target: &Target, request: &Request) -> Result<Exchange, CallError> {
        Ok(self.call(target, request, None).await?)
    }

    /// Liveness: the responder's name.
    pub async fn ping(&self, target: &Target) -> Result<String, CallError> {
        let request = Request::Ping;
        match self.ask(target, &request).await?.response {
            Response::Pong { name } => Ok(name),
            other => Err(unexpected(target, &request, other, None)),
        }
    }

    /// Replaces the faults in the member's UDP socket (an operator's pool only; the member
    /// refuses anyone else).
    pub async fn set_net_faults(
        &self,
        target: &Target,
        faults: wire::NetFaults,
    ) -> Result<(), CallError> {
        let request = Request::NetFaults(faults);
        match self.ask(target, &request).await?.response {
            Response::Ack => Ok(()),
            other => Err(unexpected(target, &request, other, None)),
        }
    }

    /// The member's status row.
    pub async fn status(&self, target: &Target) -> Result<NodeStatus, CallError> {
        let request = Request::Status;
        match self.ask(target, &request).await?.response {
            Response::Status(status) => Ok(status),
            other => Err(unexpected(target, &request, other, None)),
        }
    }

    /// The size of image `id` in bytes, from metadata.
    pub async fn image_size(&self, target: &Target, id: ImageId) -> Result<u64, CallError> {
        let request = Request::ImageSize { id };
        match self.ask(target, &request).await?.response {
            Response::Size { size, .. } => Ok(size),
            other => Err(unexpected(target, &request, other, Some(id))),
        }
    }

    /// Asks `target` for image `id`, checks the canonical's signature on its metadata (before
    /// a byte of the body is read), then reads the body and checks it against the signed
    /// digest.
    pub async fn get_image(&self, target: &Target, id: ImageId) -> Result<ImageReply, CallError> {
        let (mut exchange, head) = self.image_head(target, id).await?;
        let body = exchange.read_body(&head.meta).await?;
        Ok(ImageReply {
            meta: head.meta,
            body,
            served_by: head.served_by,
            outcome: head.outcome,
        })
    }

    /// As [`Pool::get_image`], but the body is read and dropped, checked as `check` asks
    /// (`client bench`: a load generator keeps no bodies).
    pub async fn drain_image(
        &self,
        target: &Target,
        id: ImageId,
        check: crate::frame::BodyCheck,
    ) -> Result<DrainedReply, CallError> {
        let (mut exchange, head) = self.image_head(target, id).await?;
        let bytes = exchange.drain_body(&head.meta, check).await?;
        Ok(DrainedReply {
            meta: head.meta,
            bytes,
            served_by: head.served_by,
            outcome: head.outcome,
        })
    }

    /// Sends `GetImage` and checks the reply header: the image asked for, signed by the
    /// canonical. The body is still to be read from the exchange.
    async fn image_head(
        &self,
        target: &Target,
        id: ImageId,
    ) -> Result<(Exchange, ImageHead), CallError> {
        let request = Request::GetImage { id };
        let mut exchange = self.ask(target, &request).await?;
        match std::mem::replace(&mut exchange.response, Response::Ack) {
            Response::Image {
                meta,
                served_by,
                outcome,
            } if meta.meta.id == id => {
                let meta =
                    self.origin()
                        .verify(meta)
                        .map_err(|source| CallError::BadSignature {
                            id,
                            address: target.address.clone(),
                            source,
                        })?;
                Ok((
                    exchange,
                    ImageHead {
                        meta,
                        served_by,
                        outcome,
                    },
                ))
            }
            other => Err(unexpected(target, &request, other, Some(id))),
        }
    }

    /// Pushes a replica of an image (the leader of `term` only), with the metadata the
    /// canonical signed: the body follows the header.
    pub async fn replicate(
        &self,
        target: &Target,
        term: Term,
        meta: SignedMeta,
        body: Bytes,
    ) -> Result<(), CallError> {
        let request = Request::Replicate { term, meta };
        match self.call(target, &request, Some(body)).await?.response {
            Response::Ack => Ok(()),
            other => Err(unexpected(target, &request, other, None)),
        }
    }

    /// Sends one election message (edges only).
    pub async fn send_election(
        &self,
        target: &Target,
        message: ElectionMessage,
    ) -> Result<(), CallError> {
        let request = Request::Election(message);
        match self.ask(target, &request).await?.response {
            Response::Ack => Ok(()),
            other => Err(unexpected(target, &request, other, None)),
        }
    }
}
