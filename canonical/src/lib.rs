//! The canonical origin: stores the original images and serves them over QUIC to edges (and,
//! read-only, to clients). See [`run`].

pub mod samples;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use net::metrics::Registry;
use net::server::{reply, reply_error, reply_image};
use net::tls::Credentials;
use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;
use wire::message::ErrorKind;
use wire::{CacheOutcome, ImageId, OriginSigner, Request, Response, Role};

pub use store::Store;

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
}

/// Opens the store, binds the endpoint and metrics, and serves until `shutdown` fires.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    use anyhow::Context as _;
    let signer = config
        .credentials
        .origin_signer()
        .context("the canonical's certificate and key must sign image metadata")?;
    let data = config.data.clone();
    let samples = config.samples;
    let store = tokio::task::spawn_blocking(move || Store::open(&data, samples))
        .await
        .context("opening the image store")??;
    if samples > 0 {
        let store = store.clone();
        let stop = shutdown.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(error) = store.fill_samples(&|| stop.is_cancelled()) {
                tracing::error!(%error, "sample generation stopped");
            }
        });
    }
    let bound = net::server::bind(
        config.listen,
        config.metrics,
        &config.credentials,
        &shutdown,
    )
    .await?;
    let canonical = Arc::new(Canonical {
        name: config.name,
        store,
        signer,
        registry: bound.registry.clone(),
    });
    tracing::info!(quic = %bound.quic, metrics = ?bound.metrics, "canonical serving");
    let task = tokio::spawn(net::server::serve(bound.endpoint, canonical, shutdown));
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
    ) -> Result<Option<T>, String> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || operation(&store)).await {
            Ok(result) => result.map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
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
            Request::GetImage { id } => match self.with_store(move |store| store.read(id)).await {
                Ok(Some((meta, body))) => match self.signer.sign(meta) {
                    Ok(signed) => {
                        tracing::debug!(%peer, %id, size = signed.meta.size, "serving image");
                        let sent =
                            reply_image(&mut send, signed, &self.name, CacheOutcome::Origin, body)
                                .await;
                        match sent {
                            Ok(()) => "ok",
                            Err(_) => "aborted",
                        }
                    }
                    Err(error) => {
                        tracing::error!(%id, %error, "cannot sign image metadata");
                        reply_error(&mut send, ErrorKind::Internal, error.to_string()).await;
                        "error"
                    }
                },
                Ok(None) => {
                    reply_error(&mut send, ErrorKind::NotFound, not_found(id)).await;
                    "not_found"
                }
                Err(error) => {
                    tracing::error!(%id, %error, "cannot serve image");
                    reply_error(&mut send, ErrorKind::Internal, error).await;
                    "error"
                }
            },
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
                    reply_error(&mut send, ErrorKind::Internal, error).await;
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
