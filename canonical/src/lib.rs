//! The canonical origin: stores the original images and serves them over QUIC to edges (and,
//! read-only, to clients). See [`run`].
//!
//! A reply streams its image from disk one [`wire::limits::BODY_CHUNK_BYTES`] chunk at a time,
//! at the reader's pace but no slower than [`wire::limits::MIN_SEND_BYTES_PER_SECOND`] and
//! within [`wire::limits::REPLY_SEND_DEADLINE`], so what a reader can make the canonical hold
//! is bounded by [`net::server::ServerLimits::ORIGIN`], not by the images it asks for.

pub mod catalog;
pub mod folder;
pub mod fuzzing;
pub mod samples;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use net::metrics::Registry;
use net::server::{reply, reply_error, ImageSender, ReplyError, ServerLimits};
use net::tls::Credentials;
use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use wire::frame::{RESET_CORRUPT, RESET_FAILED};
use wire::limits::BODY_CHUNK_BYTES;
use wire::message::ErrorKind;
use wire::{CacheOutcome, ImageId, OriginSigner, Request, Response, Role};

pub use folder::Notice;
pub use store::{reindex, ImageReader, Reindexed, Store, StoreError};

/// Everything the canonical needs to run.
pub struct Config {
    /// Name reported to clients, e.g. `flotilla_canonical`.
    pub name: String,
    /// QUIC socket to serve on.
    pub listen: net::QuicListen,
    /// Prometheus metrics socket; `None` serves no metrics.
    pub metrics: Option<net::MetricsListen>,
    /// Folder of `<id>.<ext>` files.
    pub data: PathBuf,
    /// The catalog file; `None` keeps it beside the images ([`store::default_catalog_path`]).
    pub catalog: Option<PathBuf>,
    /// Generate sample PNGs for ids 1..=samples that are missing (0: none).
    pub samples: u64,
    pub credentials: Credentials,
}

/// A running canonical: where it listens, and the task to await for its end.
pub struct Running {
    pub quic: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The canonical's metrics, also readable in-process (tests count origin fetches with it).
    pub registry: Registry,
    pub task: tokio::task::JoinHandle<()>,
}

struct Canonical {
    name: String,
    store: Store,
    /// Signs each image's metadata as it is served, so every receiver can tell what the
    /// canonical published from what a peer made up.
    signer: OriginSigner,
    registry: Registry,
    /// Bytes of image bodies read from disk for replies and not yet taken by QUIC
    /// (`flotilla_reply_buffer_bytes`): what stalled readers make the canonical hold.
    reply_bytes: metrics::Gauge,
    /// Replies refused because the file no longer matches the catalog
    /// (`flotilla_corrupt_images_total`).
    corrupt_images: metrics::Counter,
    /// The fault layer of the QUIC socket, set by an operator (`partition`, `netem` on a
    /// member the operator's host cannot enter).
    socket_faults: net::SocketFaults,
}

/// Name of the counter of replies refused because the image's file no longer matches the
/// catalog, before or while it was sent.
pub const CORRUPT_IMAGES_COUNTER: &str = "flotilla_corrupt_images_total";

/// Name of the gauge of body bytes held for replies (see `Canonical::reply_bytes`).
pub const REPLY_BUFFER_GAUGE: &str = "flotilla_reply_buffer_bytes";

/// One chunk counted in the reply-bytes gauge while a reply holds it.
struct HeldChunk<'a> {
    gauge: &'a metrics::Gauge,
    bytes: f64,
}

impl<'a> HeldChunk<'a> {
    fn new(gauge: &'a metrics::Gauge, bytes: usize) -> HeldChunk<'a> {
        let bytes = bytes as f64;
        gauge.increment(bytes);
        HeldChunk { gauge, bytes }
    }
}

impl Drop for HeldChunk<'_> {
    fn drop(&mut self) {
        self.gauge.decrement(self.bytes);
    }
}

/// Opens the store, binds the endpoint and metrics, and serves until `shutdown` fires.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    use anyhow::Context as _;
    let signer = config
        .credentials
        .origin_signer()
        .context("the canonical's certificate and key must sign image metadata")?;
    let data = config.data.clone();
    let catalog = config
        .catalog
        .clone()
        .unwrap_or_else(|| store::default_catalog_path(&data));
    let samples = config.samples;
    let (store, notices) =
        tokio::task::spawn_blocking(move || Store::open(&data, &catalog, samples))
            .await
            .context("opening the image store")??;
    for notice in &notices {
        tracing::warn!("{notice}");
    }
    if samples > 0 {
        let store = store.clone();
        let stop = shutdown.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.fill_samples(&|| stop.is_cancelled()) {
                tracing::error!(%error, "sample generation stopped");
            }
        });
    }
    let bound = net::server::bind_with(
        config.listen,
        config.metrics,
        &config.credentials,
        &shutdown,
        ServerLimits::ORIGIN,
    )
    .await?;
    let reply_bytes = bound.registry.bytes_gauge(
        REPLY_BUFFER_GAUGE,
        "Image body bytes read from disk for replies and not yet taken by QUIC",
    );
    let corrupt_images = bound.registry.counter(
        CORRUPT_IMAGES_COUNTER,
        "Image replies refused because the file no longer matches the catalog",
        &[],
    );
    let canonical = Arc::new(Canonical {
        name: config.name,
        store,
        signer,
        registry: bound.registry.clone(),
        reply_bytes,
        corrupt_images,
        socket_faults: bound.faults,
    });
    tracing::info!(quic = %bound.quic, metrics = ?bound.metrics, "canonical serving");
    let task = tokio::spawn(net::server::serve_with(
        bound.endpoint,
        canonical,
        shutdown,
        ServerLimits::ORIGIN,
    ));
    Ok(Running {
        quic: bound.quic,
        metrics: bound.metrics,
        registry: bound.registry,
        task,
    })
}

/// Runs the canonical until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await?;
    Ok(())
}

impl Canonical {
    /// Runs a store operation off the async threads; `None` means no such image.
    async fn with_store<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Store) -> Result<Option<T>, store::StoreError> + Send + 'static,
    ) -> Result<Option<T>, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || operation(&store))
            .await
            .map_err(|error| StoreError::Io {
                path: "a blocking read".to_string(),
                source: std::io::Error::other(error),
            })?
    }
}

impl Canonical {
    /// Streams image `id` to `send`; returns the outcome for the requests counter.
    async fn serve_image(&self, peer: Role, id: ImageId, send: &mut SendStream) -> &'static str {
        let reader = match self.with_store(move |store| store.open_image(id)).await {
            Ok(Some(reader)) => reader,
            Ok(None) => {
                reply_error(send, ErrorKind::NotFound, not_found(id)).await;
                return "not_found";
            }
            Err(error) => return self.refuse(send, id, error).await,
        };
        // The first chunk is read before the header, so an unreadable file (or a changed one
        // that fits in a chunk) gets an error reply rather than a reset stream.
        let (mut reader, mut chunk) = match read_chunk(reader).await {
            Ok(read) => read,
            Err(error) => return self.refuse(send, id, error).await,
        };
        let meta = match self.signer.sign(reader.meta().clone()) {
            Ok(signed) => signed,
            Err(error) => {
                tracing::error!(%id, %error, "cannot sign image metadata");
                reply_error(send, ErrorKind::Internal, error.to_string()).await;
                return "error";
            }
        };
        tracing::debug!(%peer, %id, size = meta.meta.size, "serving image");
        let mut sender =
            match ImageSender::start(send, meta, &self.name, CacheOutcome::Origin).await {
                Ok(sender) => sender,
                Err(error) => return reply_failed(peer, id, &error),
            };
        loop {
            let held = HeldChunk::new(&self.reply_bytes, chunk.len());
            if let Err(error) = sender.chunk(chunk).await {
                return reply_failed(peer, id, &error);
            }
            drop(held);
            if reader.is_done() {
                sender.finish();
                return "ok";
            }
            (reader, chunk) = match read_chunk(reader).await {
                Ok(read) => read,
                // The bytes sent so far are not a body: resetting withholds the rest, so the
                // reader's read fails instead of completing (and its digest check never runs
                // on a short body).
                Err(error) if error.is_corrupt() => {
                    tracing::error!(%id, %error, "image changed on disk mid-reply; reset");
                    self.corrupt_images.increment(1);
                    sender.reset(RESET_CORRUPT);
                    return "corrupt";
                }
                Err(error) => {
                    tracing::error!(%id, %error, "image read failed mid-reply; reset");
                    sender.reset(RESET_FAILED);
                    return "error";
                }
            };
        }
    }
}

impl Canonical {
    /// Answers a request for `id` that the store refused, before any of the body went out:
    /// one error reply naming the image and the file. Returns the outcome.
    async fn refuse(&self, send: &mut SendStream, id: ImageId, error: StoreError) -> &'static str {
        tracing::error!(%id, %error, "cannot serve image");
        let outcome = if error.is_corrupt() {
            self.corrupt_images.increment(1);
            "corrupt"
        } else {
            "error"
        };
        reply_error(send, ErrorKind::Internal, error.to_string()).await;
        outcome
    }
}

/// Reads `reader`'s next chunk off the async threads.
async fn read_chunk(mut reader: ImageReader) -> Result<(ImageReader, Bytes), StoreError> {
    tokio::task::spawn_blocking(move || {
        let chunk = reader.next_chunk(BODY_CHUNK_BYTES)?;
        Ok((reader, chunk))
    })
    .await
    .map_err(|error| StoreError::Io {
        path: "a blocking read".to_string(),
        source: std::io::Error::other(error),
    })?
}

/// Logs why a reply ended early and names the outcome.
fn reply_failed(peer: Role, id: ImageId, error: &ReplyError) -> &'static str {
    match error {
        ReplyError::Stalled(_) | ReplyError::OutOfTime(_) => {
            tracing::warn!(%peer, %id, %error, "reader too slow");
            "stalled"
        }
        ReplyError::Write(_) => {
            tracing::debug!(%peer, %id, %error, "reply not delivered");
            "aborted"
        }
        ReplyError::Header(_) => {
            tracing::error!(%peer, %id, %error, "reply failed");
            "error"
        }
    }
}

fn not_found(id: ImageId) -> String {
    format!("image {id} not found on the canonical")
}

impl net::server::Handler for Canonical {
    async fn handle(
        self: Arc<Self>,
        peer: Role,
        request: Request,
        mut send: SendStream,
        _recv: RecvStream,
    ) {
        let kind = request.kind();
        let outcome = match request {
            Request::GetImage { id } => self.serve_image(peer, id, &mut send).await,
            Request::ImageSize { id } => match self.with_store(move |store| store.meta(id)).await {
                Ok(Some(meta)) => {
                    reply(
                        &mut send,
                        &Response::Size {
                            id,
                            size: meta.size,
                        },
                    )
                    .await;
                    "ok"
                }
                Ok(None) => {
                    reply_error(&mut send, ErrorKind::NotFound, not_found(id)).await;
                    "not_found"
                }
                Err(error) => {
                    reply_error(&mut send, ErrorKind::Internal, error.to_string()).await;
                    "error"
                }
            },
            Request::Ping => {
                reply(
                    &mut send,
                    &Response::Pong {
                        name: self.name.clone(),
                    },
                )
                .await;
                "ok"
            }
            Request::NetFaults(faults) => {
                net::faults::answer(peer, faults, &self.socket_faults, &self.name, &mut send).await
            }
            Request::Status | Request::Election(_) | Request::Replicate { .. } => {
                reply_error(
                    &mut send,
                    ErrorKind::BadRequest,
                    format!("the canonical does not answer {kind} requests; ask an edge"),
                )
                .await;
                "refused"
            }
        };
        self.registry.count_request(kind, outcome);
    }
}
