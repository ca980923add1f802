//! `client bench`: a closed-loop load generator. C workers each keep one request in flight
//! over the shared connections (or, with a rate, start requests on a schedule); ids come from
//! a uniform or Zipf distribution over a range. Each read can also be reported as it ends
//! ([`OpSink`]), which is how `cargo xtask scenario run` records what the client saw.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::{BodyCheck, Client};
use wire::history::{Op, OpOutcome};
use wire::{CacheOutcome, ImageId};

/// Highest latency the histogram records, in microseconds (a minute: far past any timeout).
const MAX_LATENCY_MICROS: u64 = 60_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Most requests to issue; with `duration`, the run also ends when that time is up.
    pub requests: u64,
    /// Run for this long (requests started before the end are finished and counted).
    pub duration: Option<Duration>,
    pub concurrency: usize,
    pub ids: RangeInclusive<u64>,
    /// Zipf exponent; 0 means uniform.
    pub zipf: f64,
    /// Walk the ids in order (request i gets id A + i mod span) instead of sampling them:
    /// with `requests` equal to the span, every request is a first touch, i.e. a cold fetch.
    pub sweep: bool,
    pub seed: u64,
    /// Start about this many requests per second in all (still at most `concurrency` in
    /// flight); `None`: as fast as they complete.
    pub rate: Option<f64>,
    /// Where every read goes as it ends.
    pub ops: Option<OpSink>,
    /// Check the digest of one body in this many (1: every body). The others are checked for
    /// size only, as wrk checks an HTTP body; the signature on every reply's metadata is
    /// always checked.
    pub digest_every: u64,
}

/// Receives every read as it ends, with times in milliseconds since the Unix epoch (the
/// recorder that reads them makes them relative to its own start).
#[derive(Clone)]
pub struct OpSink(pub Arc<dyn Fn(&Op) + Send + Sync>);

impl std::fmt::Debug for OpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpSink")
    }
}

/// Now, in milliseconds since the Unix epoch.
fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub requests: u64,
    pub errors: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub megabytes_per_second: f64,
    pub bytes: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub hit_ratio: f64,
    pub first_error: Option<String>,
}

struct Worker {
    latencies: Histogram<u64>,
    bytes: u64,
    hits: u64,
    successes: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One read as the history records it. A history is only recorded with every digest checked
/// (`digest_every` 1): the client checks the body against the canonical's signed digest
/// before `drain_image` returns, so a corrupt body is an error here, and the digest recorded
/// is the signed one the bytes matched.
fn op_record(
    id: ImageId,
    invoke_ms: f64,
    result: &Result<crate::Drained, crate::ClientError>,
) -> Op {
    let complete_ms = unix_ms();
    match result {
        Ok(fetched) => Op {
            invoke_ms,
            complete_ms,
            id: id.0,
            edge: Some(fetched.edge.0),
            outcome: match fetched.outcome {
                CacheOutcome::Hit => OpOutcome::Hit,
                _ => OpOutcome::Miss,
            },
            digest: fetched.digest.map(|digest| digest.to_hex()),
            expected: fetched.digest.map(|digest| digest.to_hex()),
            error: None,
        },
        Err(error) => Op {
            invoke_ms,
            complete_ms,
            id: id.0,
            edge: None,
            outcome: OpOutcome::Error,
            digest: None,
            expected: None,
            error: Some(error.to_string()),
        },
    }
}

/// Runs the benchmark against `client`'s cluster.
pub async fn run(client: Arc<Client>, config: BenchConfig) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(config.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(!config.ids.is_empty(), "--ids range is empty");
    anyhow::ensure!(
        config.digest_every > 0,
        "--check-digest-every must be at least 1"
    );
    anyhow::ensure!(
        config.ops.is_none() || config.digest_every == 1,
        "--ops records every read's digest: run it with --check-digest-every 1"
    );
    let span = config.ids.end() - config.ids.start() + 1;
    let zipf = if config.zipf > 0.0 {
        Some(
            Zipf::new(span as f64, config.zipf)
                .map_err(|e| anyhow::anyhow!("--zipf {}: {e}", config.zipf))?,
        )
    } else {
        None
    };
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = config.duration.map(|duration| started + duration);
    let mut tasks = Vec::with_capacity(config.concurrency);
    for worker_index in 0..config.concurrency {
        let client = client.clone();
        let issued = issued.clone();
        let config = config.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(
                config.seed ^ (worker_index as u64).wrapping_mul(0x9e37_79b9),
            );
            // Three significant figures; bounds are constants, so creation cannot fail.
            let mut worker = Worker {
                latencies: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)
                    .expect("valid histogram bounds"),
                bytes: 0,
                hits: 0,
                successes: 0,
                errors: 0,
                first_error: None,
            };
            loop {
                let ticket = issued.fetch_add(1, Ordering::Relaxed);
                if ticket >= config.requests || deadline.is_some_and(|end| Instant::now() >= end) {
                    break;
                }
                if let Some(rate) = config.rate {
                    let due = started + Duration::from_secs_f64(ticket as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let offset = match &zipf {
                    _ if config.sweep => ticket % span,
                    Some(zipf) => (zipf.sample(&mut rng) as u64)
                        .saturating_sub(1)
                        .min(span - 1),
                    None => rng.random_range(0..span),
                };
                let id = ImageId(config.ids.start() + offset);
                let request_started = Instant::now();
                let invoke_ms = unix_ms();
                let check = if ticket.is_multiple_of(config.digest_every) {
                    BodyCheck::Digest
                } else {
                    BodyCheck::Size
                };
                let result = client.drain_image(id, check).await;
                if let Some(sink) = &config.ops {
                    (sink.0)(&op_record(id, invoke_ms, &result));
                }
                match result {
                    Ok(fetched) => {
                        tracing::debug!(%id, edge = %fetched.edge, outcome = ?fetched.outcome, "fetched");
                        let micros = request_started.elapsed().as_micros() as u64;
                        worker
                            .latencies
                            .saturating_record(micros.clamp(1, MAX_LATENCY_MICROS));
                        worker.bytes += fetched.bytes;
                        worker.successes += 1;
                        if fetched.outcome == CacheOutcome::Hit {
                            worker.hits += 1;
                        }
                    }
                    Err(error) => {
                        worker.errors += 1;
                        worker.first_error.get_or_insert_with(|| error.to_string());
                    }
                }
            }
            worker
        }));
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?;
    let (mut bytes, mut hits, mut successes, mut errors, mut first_error) = (0, 0, 0, 0, None);
    for task in tasks {
        let worker = task.await?;
        latencies.add(&worker.latencies)?;
        bytes += worker.bytes;
        hits += worker.hits;
        successes += worker.successes;
        errors += worker.errors;
        first_error = first_error.or(worker.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |quantile: f64| latencies.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(BenchReport {
        requests: successes + errors,
        errors,
        concurrency: config.concurrency,
        seconds,
        requests_per_second: successes as f64 / seconds,
        megabytes_per_second: bytes as f64 / seconds / 1_000_000.0,
        bytes,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latencies.max() as f64 / 1000.0,
        hit_ratio: if successes == 0 {
            0.0
        } else {
            hits as f64 / successes as f64
        },
        first_error,
    })
}
