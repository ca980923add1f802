//! The canonical origin: stores the original images and serves them over QUIC to edges (and,
//! read-only, to clients). See [`run`].

pub mod samples;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proto::message::ErrorKind;
use proto::metrics::Registry;
use proto::server::{reply, reply_error, reply_image};
use proto::tls::Credentials;
use proto::{CacheOutcome, Request, Response, Role};
use quinn::{RecvStream, SendStream};
use tokio_util::sync::CancellationToken;

pub use store::Store;

/// Everything the canonical needs to run.
pub struct Config {
    /// Name reported to clients, e.g. `flotilla_canonical`.
    pub name: String,
    /// QUIC address to serve on.
    pub listen: SocketAddr,
    /// Prometheus metrics address; `None` serves no metrics.
    pub metrics: Option<SocketAddr>,
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

struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn request(&self, kind: &'static str, outcome: &'static str) {
        self.registry
            .counter(
                "flotilla_requests_total",
                "Requests served, by kind and outcome",
                &[("kind", kind.to_string()), ("outcome", outcome.to_string())],
            )
            .increment(1);
    }
}

struct Canonical {
    name: String,
    store: Store,
    metrics: Metrics,
}

/// Opens the store, binds the endpoint and metrics, and serves until `shutdown` fires.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    use anyhow::Context as _;
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
    let endpoint = proto::net::endpoint(config.listen, &config.credentials, true)
        .with_context(|| format!("binding QUIC on {}", config.listen))?;
    let quic = endpoint.local_addr().context("reading the bound address")?;
    let registry = Registry::new();
    let metrics = match config.metrics {
        Some(address) => Some(
            proto::metrics::serve(address, registry.clone(), shutdown.clone())
                .await
                .with_context(|| format!("binding metrics on {address}"))?
                .0,
        ),
        None => None,
    };
    let canonical = Arc::new(Canonical {
        name: config.name,
        store,
        metrics: Metrics {
            registry: registry.clone(),
        },
    });
    tracing::info!(%quic, ?metrics, "canonical serving");
    let task = tokio::spawn(proto::server::serve(endpoint, canonical, shutdown));
    Ok(Running {
        quic,
        metrics,
        registry,
        task,
    })
}

/// Runs the canonical until `shutdown` fires.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(config, shutdown).await?;
    running.task.await?;
    Ok(())
}

impl proto::server::Handler for Canonical {
    async fn handle(
        self: Arc<Self>,
        peer: Role,
        request: Request,
        mut send: SendStream,
        _recv: RecvStream,
    ) {
        let kind = request.kind();
        match request {
            Request::GetImage { id } => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.read(id)).await {
                    Ok(Ok(Some((meta, body)))) => {
                        tracing::debug!(%peer, %id, size = meta.size, "serving image");
                        let outcome =
                            if reply_image(&mut send, meta, &self.name, CacheOutcome::Origin, body)
                                .await
                                .is_ok()
                            {
                                "ok"
                            } else {
                                "aborted"
                            };
                        self.metrics.request(kind, outcome);
                    }
                    Ok(Ok(None)) => {
                        self.metrics.request(kind, "not_found");
                        reply_error(
                            &mut send,
                            ErrorKind::NotFound,
                            format!("image {id} not found on the canonical"),
                        )
                        .await;
                    }
                    Ok(Err(error)) => {
                        tracing::error!(%id, %error, "cannot serve image");
                        self.metrics.request(kind, "error");
                        reply_error(&mut send, ErrorKind::Internal, error.to_string()).await;
                    }
                    Err(error) => {
                        self.metrics.request(kind, "error");
                        reply_error(&mut send, ErrorKind::Internal, error.to_string()).await;
                    }
                }
            }
            Request::ImageSize { id } => {
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.meta(id)).await {
                    Ok(Ok(Some(meta))) => {
                        self.metrics.request(kind, "ok");
                        reply(
                            &mut send,
                            &Response::Size {
                                id,
                                size: meta.size,
                            },
                        )
                        .await;
                    }
                    Ok(Ok(None)) => {
                        self.metrics.request(kind, "not_found");
                        reply_error(
                            &mut send,
                            ErrorKind::NotFound,
                            format!("image {id} not found on the canonical"),
                        )
                        .await;
                    }
                    Ok(Err(error)) => {
                        self.metrics.request(kind, "error");
                        reply_error(&mut send, ErrorKind::Internal, error.to_string()).await;
                    }
                    Err(error) => {
                        self.metrics.request(kind, "error");
                        reply_error(&mut send, ErrorKind::Internal, error.to_string()).await;
                    }
                }
            }
            Request::Ping => {
                self.metrics.request(kind, "ok");
                reply(
                    &mut send,
                    &Response::Pong {
                        name: self.name.clone(),
                    },
                )
                .await;
            }
            Request::Status | Request::Election(_) | Request::Replicate { .. } => {
                self.metrics.request(kind, "refused");
                reply_error(
                    &mut send,
                    ErrorKind::BadRequest,
                    format!("the canonical does not answer {kind} requests; ask an edge"),
                )
                .await;
            }
        }
    }
}
