//! `bench cache`: Flotilla's cache hits beside nginx `proxy_cache` over TLS 1.3, in one run,
//! on the same objects, at the same concurrency and duration, the servers on one core and the
//! load generators on another, with the floors of this machine (AES-128-GCM seal, memcpy)
//! measured in the same run. Every measured response must be a hit; a cell that is not, or
//! that failed, is reported as such and the run fails.

mod floors;
pub mod flotilla;
mod nginx;
pub(crate) mod sizes;
mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::project::Project;
use crate::release;
use crate::state::RuntimeKind;

pub use floors::Floors;
pub use sizes::{parse_sizes, size_label};
pub use table::render;

/// Sizes of a full run.
pub const DEFAULT_SIZES: [u64; 4] = [10 * 1024, 100 * 1024, 1024 * 1024, 5 * 1024 * 1024];
/// Sizes of a `--quick` run.
pub const QUICK_SIZES: [u64; 2] = [10 * 1024, 1024 * 1024];
/// Seconds of load per cell in a full run.
pub const DEFAULT_SECONDS: u32 = 8;
/// Seconds of load per cell in a `--quick` run.
pub const QUICK_SECONDS: u32 = 2;
/// How long each floor is measured.
const FLOOR_DURATION: Duration = Duration::from_millis(500);
/// Default of `--check-digest-every`: one body in 16 hashed costs the client about 3% of
/// what hashing every body does, and still catches a server that corrupts bodies.
pub const DEFAULT_DIGEST_EVERY: u64 = 16;
/// How long wrk warms nginx's cache (one connection) before a measured run.
const NGINX_WARM_SECONDS: u32 = 1;
/// Core of the servers (nginx, the Flotilla members) and of the floors.
const SERVER_CORE: usize = 0;
/// Core of the load generators (wrk, `client bench`).
const LOAD_CORE: usize = 1;

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub sizes: Vec<u64>,
    pub concurrency: u32,
    pub seconds: u32,
    pub runtimes: Vec<RuntimeKind>,
    /// Name prefix of the bench clusters (`<prefix>_process`, `<prefix>_docker`).
    pub prefix: String,
    /// The xtask binary, run for `up` and `down` of the bench clusters.
    pub xtask: PathBuf,
    /// `client bench --check-digest-every`: the client checks the digest of one body in this
    /// many and the size of every body (wrk checks the size).
    pub digest_every: u64,
}

/// One server at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub requests: u64,
    pub errors: u64,
    /// Responses that were cache hits.
    pub hits: u64,
    /// Responses that were not (misses, errors): a complete run has none.
    pub not_hits: u64,
    pub requests_per_second: f64,
    pub megabytes_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub seconds: f64,
}

/// A cell's numbers, or why there are none.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Measured(Cell),
    Failed(String),
}

impl Outcome {
    fn of(result: anyhow::Result<Cell>) -> Outcome {
        match result {
            Ok(cell) => Outcome::Measured(cell),
            Err(error) => Outcome::Failed(format!("{error:#}")),
        }
    }

    /// The numbers, when the cell is complete: measured, no errors, every response a hit.
    pub fn complete(&self) -> Option<&Cell> {
        match self {
            Outcome::Measured(cell) if cell.errors == 0 && cell.not_hits == 0 && cell.hits > 0 => {
                Some(cell)
            }
            _ => None,
        }
    }
}

/// One size across the servers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub size_bytes: u64,
    pub size: String,
    pub nginx: Outcome,
    /// By runtime: `process`, `docker`.
    pub flotilla: BTreeMap<String, Outcome>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub concurrency: u32,
    pub seconds: u32,
    pub server_core: usize,
    pub load_core: usize,
    /// The Flotilla client checked the digest of one body in this many.
    pub digest_every: u64,
    pub floors: Floors,
    pub runtimes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// One line per cell that has no complete numbers: empty when the table is complete.
    pub fn incomplete(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for row in &self.rows {
            let mut check = |server: &str, outcome: Option<&Outcome>| match outcome {
                Some(outcome) if outcome.complete().is_some() => {}
                Some(Outcome::Failed(error)) => {
                    missing.push(format!("{} {server}: {error}", row.size))
                }
                Some(Outcome::Measured(cell)) => missing.push(format!(
                    "{} {server}: {} of {} responses were not cache hits ({} errors)",
                    row.size, cell.not_hits, cell.requests, cell.errors
                )),
                None => missing.push(format!("{} {server}: not measured", row.size)),
            };
            check("nginx", Some(&row.nginx));
            for runtime in &self.runtimes {
                check(&format!("flotilla {runtime}"), row.flotilla.get(runtime));
            }
        }
        missing
    }
}

/// Runs the whole benchmark; `progress` gets one line per step.
pub fn run(sh: &Shell, project: &Project, config: &Config) -> anyhow::Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    anyhow::ensure!(
        cores > LOAD_CORE,
        "bench cache needs at least 2 cores (server on core {SERVER_CORE}, load on core {LOAD_CORE}); this machine lets it use {cores}"
    );
    let work = project.target_dir.join("bench-cache").join(&config.prefix);
    let objects = work.join("objects");
    eprintln!("bench cache: measuring the floors on core {SERVER_CORE}");
    let floors = floors::measure(FLOOR_DURATION, SERVER_CORE)?;
    eprintln!(
        "bench cache: writing {} objects to {}",
        config.sizes.len(),
        objects.display()
    );
    sizes::write_objects(&objects, &config.sizes)?;
    nginx::ensure_tools(sh)?;
    let client = release::build_binaries(sh, project)?.client;

    let mut rows: Vec<Row> = config
        .sizes
        .iter()
        .map(|size| Row {
            size_bytes: *size,
            size: size_label(*size),
            nginx: Outcome::Failed("not measured".to_string()),
            flotilla: BTreeMap::new(),
        })
        .collect();

    eprintln!("bench cache: starting nginx (cache and origin) on core {SERVER_CORE}");
    {
        let nginx_dir = work.join("nginx");
        let server = nginx::Nginx::start(&nginx_dir, &objects, SERVER_CORE)?;
        for (position, row) in rows.iter_mut().enumerate() {
            let url = server.url(sizes::object_id(position));
            eprintln!(
                "bench cache: nginx, {} objects, {} s at concurrency {}",
                row.size, config.seconds, config.concurrency
            );
            // The warm-up fills the cache (its first response is the one miss).
            let warm = nginx::load(sh, &nginx_dir, &url, 1, NGINX_WARM_SECONDS, LOAD_CORE);
            row.nginx = Outcome::of(warm.and_then(|_| {
                nginx::load(
                    sh,
                    &nginx_dir,
                    &url,
                    config.concurrency,
                    config.seconds,
                    LOAD_CORE,
                )
            }));
        }
    }

    for runtime in &config.runtimes {
        let name = format!("{}_{runtime}", config.prefix);
        eprintln!("bench cache: starting Flotilla `{name}` (one edge, {runtime} runtime) on core {SERVER_CORE}");
        let cluster = flotilla::Cluster::up(
            sh,
            &config.xtask,
            &work.join(format!("cluster-{runtime}")),
            &flotilla::Spec {
                prefix: &name,
                runtime: *runtime,
                objects: &objects,
                nodes: 1,
                core: Some(SERVER_CORE),
            },
        );
        let cluster = match cluster {
            Ok(cluster) => cluster,
            Err(error) => {
                let why = format!("{error:#}");
                eprintln!("bench cache: {why}");
                for row in &mut rows {
                    row.flotilla
                        .insert(runtime.to_string(), Outcome::Failed(why.clone()));
                }
                continue;
            }
        };
        for (position, row) in rows.iter_mut().enumerate() {
            eprintln!(
                "bench cache: Flotilla {runtime}, {} objects, {} s at concurrency {}",
                row.size, config.seconds, config.concurrency
            );
            let load = flotilla::Load {
                id: sizes::object_id(position),
                concurrency: config.concurrency,
                amount: flotilla::Amount::Seconds(config.seconds),
                digest_every: config.digest_every,
            };
            let measured = cluster.measure(sh, &client, &load, LOAD_CORE);
            row.flotilla
                .insert(runtime.to_string(), Outcome::of(measured));
        }
        eprintln!("bench cache: stopping `{name}`");
        drop(cluster);
    }

    Ok(Report {
        concurrency: config.concurrency,
        seconds: config.seconds,
        server_core: SERVER_CORE,
        load_core: LOAD_CORE,
        digest_every: config.digest_every,
        floors,
        runtimes: config.runtimes.iter().map(ToString::to_string).collect(),
        rows,
    })
}
