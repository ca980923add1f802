//! A Prometheus registry per process (or per in-process server in tests) and the tiny HTTP
//! endpoint that exposes it. Rendering is metrics-exporter-prometheus's; this module only
//! registers handles and answers `GET /metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::listen::{Listen, MetricsListen};

/// Largest HTTP request head read from a scraper; anything longer is answered and closed.
const MAX_HTTP_REQUEST_BYTES: usize = 8 * 1024;

/// A registry that hands out counters and gauges and renders them as Prometheus text.
#[derive(Clone)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    /// `flotilla_requests_total` by (kind, outcome), registered the first time each pair is
    /// counted and kept: registering builds a labelled key, describes the metric and looks
    /// the key up in the recorder under its locks, which a request should not pay for.
    requests: Arc<RwLock<HashMap<(&'static str, &'static str), Counter>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            recorder: Arc::new(PrometheusBuilder::new().build_recorder()),
            requests: Arc::default(),
        }
    }

    fn key(name: &'static str, labels: &[(&'static str, String)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(key, value)| Label::new(*key, value.clone()))
            .collect();
        Key::from_parts(name, labels)
    }

    fn metadata() -> Metadata<'static> {
        Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
    }

    /// A counter named `name` with `labels`, described by `help`.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, String)],
    ) -> Counter {
        self.recorder
            .describe_counter(KeyName::from(name), None, SharedString::from(help));
        self.recorder
            .register_counter(&Self::key(name, labels), &Self::metadata())
    }

    /// A gauge named `name` with `labels`, described by `help`.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, String)],
    ) -> Gauge {
        self.recorder
            .describe_gauge(KeyName::from(name), None, SharedString::from(help));
        self.recorder
            .register_gauge(&Self::key(name, labels), &Self::metadata())
    }

    /// A histogram named `name` with `labels`, in seconds. The exporter renders it as a
    /// summary: quantiles over a rolling window of about a minute, and the total sum and count.
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, String)],
    ) -> Histogram {
        self.recorder.describe_histogram(
            KeyName::from(name),
            Some(Unit::Seconds),
            SharedString::from(help),
        );
        self.recorder
            .register_histogram(&Self::key(name, labels), &Self::metadata())
    }

    /// A gauge measured in bytes.
    pub fn bytes_gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.recorder.describe_gauge(
            KeyName::from(name),
            Some(Unit::Bytes),
            SharedString::from(help),
        );
        self.recorder
            .register_gauge(&Self::key(name, &[]), &Self::metadata())
    }

    /// Counts one request of `kind` ending in `outcome` (`flotilla_requests_total`), the
    /// counter every Flotilla server exports.
    /// The handle of each pair is registered once; later requests take a read lock and
    /// increment an atomic.
    pub fn count_request(&self, kind: &'static str, outcome: &'static str) {
        if let Some(counter) = self
            .requests
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(kind, outcome))
        {
            counter.increment(1);
            return;
        }
        self.requests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, outcome))
            .or_insert_with(|| {
                self.counter(
                    "flotilla_requests_total",
                    "Requests served, by kind and outcome",
                    &[("kind", kind.to_string()), ("outcome", outcome.to_string())],
                )
            })
            .increment(1);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// Binds `address` and serves `GET /metrics` until `shutdown` fires. Returns the bound address.
pub async fn serve(
    listen: MetricsListen,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = match listen {
        Listen::Address(address) => TcpListener::bind(address).await?,
        Listen::Bound(listener) => {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)?
        }
    };
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "metrics accept failed");
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                // Read until the end of the request head: a scraper may send it in pieces.
                let mut head = vec![0u8; MAX_HTTP_REQUEST_BYTES];
                let mut read = 0;
                let complete = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while read < head.len() {
                        match stream.read(&mut head[read..]).await {
                            Ok(0) | Err(_) => return false,
                            Ok(count) => read += count,
                        }
                        if head[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            return true;
                        }
                    }
                    true
                })
                .await;
                if !matches!(complete, Ok(true)) {
                    return;
                }
                let request_line = String::from_utf8_lossy(&head[..read]);
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = if path == "/metrics" || path == "/" {
                    ("200 OK", registry.render())
                } else {
                    ("404 Not Found", "metrics are at /metrics\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok((bound, task))
}
