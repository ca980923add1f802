//! A client loop for measurements under faults: `client bench` runs back to back on a thread
//! until stopped, every read checked against the canonical's signature and digest by the
//! client itself, and the failures counted. The soak and `bench failover` run it through
//! their leader kills.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Requests of one `client bench` run of the loop; small, so a stop is seen quickly.
const READS_PER_RUN: u64 = 200;
/// Reads in flight at once in the loop.
pub const READ_CONCURRENCY: usize = 4;

/// What the loop reads.
#[derive(Clone, Debug)]
pub struct ReadConfig {
    /// The client binary.
    pub client: PathBuf,
    /// The cluster folder it reads `cluster.toml` from.
    pub cluster_dir: PathBuf,
    /// Image ids asked for (inclusive).
    pub ids: (u64, u64),
    /// Seed of the ids of the first run; each later run takes the next seed.
    pub seed: u64,
    /// Reads in flight at once.
    pub concurrency: usize,
}

/// Reads the client loop made, and how they ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Reads {
    pub ok: u64,
    pub failed: u64,
    /// The first failure's text, if any.
    pub first_failure: Option<String>,
    /// Failures whose text mentions a digest or signature check: the client refused bytes.
    pub refused_bytes: u64,
}

/// What `client bench --json` prints that the loop reads.
#[derive(Deserialize)]
struct BenchRun {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

/// `client bench` runs back to back on a thread until stopped.
pub struct ReadLoop {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Reads>,
}

impl ReadLoop {
    /// Starts the loop; [`ReadLoop::stop`] ends it after the run under way.
    pub fn start(config: &ReadConfig) -> ReadLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let config = config.clone();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut reads = Reads::default();
            let mut seed = config.seed;
            while !flag.load(Ordering::SeqCst) {
                seed = seed.wrapping_add(1);
                let run = run_once(
                    &ReadConfig {
                        seed,
                        ..config.clone()
                    },
                    false,
                );
                match run {
                    Ok(run) => reads.add(&run),
                    Err(error) => reads.add(&Reads {
                        ok: 0,
                        failed: 1,
                        first_failure: Some(format!("{error:#}")),
                        refused_bytes: 0,
                    }),
                }
            }
            reads
        });
        ReadLoop { stop, thread }
    }

    /// Stops the loop and returns what it counted.
    pub fn stop(self) -> Reads {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_else(|_| Reads {
            failed: 1,
            first_failure: Some("the read loop panicked".to_string()),
            ..Reads::default()
        })
    }
}

/// Every id of `config` once, in order: fills the caches before a measurement.
pub fn sweep(config: &ReadConfig) -> anyhow::Result<Reads> {
    run_once(config, true)
}

/// One `client bench` run: every id once in order (`sweep`) or [`READS_PER_RUN`] ids at
/// random.
fn run_once(config: &ReadConfig, sweep: bool) -> anyhow::Result<Reads> {
    let (first, last) = config.ids;
    let requests = if sweep {
        last - first + 1
    } else {
        READS_PER_RUN
    };
    let mut command = std::process::Command::new(&config.client);
    command
        .arg("bench")
        .args(["--requests", &requests.to_string()])
        .args(["--concurrency", &config.concurrency.to_string()])
        .args(["--ids", &format!("{first}..{last}")])
        .args(["--seed", &config.seed.to_string()])
        .arg("--json")
        .arg("--cluster")
        .arg(&config.cluster_dir);
    if sweep {
        command.arg("--sweep");
    }
    let output = command
        .output()
        .with_context(|| format!("running {}", config.client.display()))?;
    parse_run(&output.stdout, &output.stderr)
}

/// The counts of one `client bench --json` report; its last stderr line when it printed none.
fn parse_run(stdout: &[u8], stderr: &[u8]) -> anyhow::Result<Reads> {
    let run: BenchRun = serde_json::from_slice(stdout).map_err(|_| {
        let stderr = String::from_utf8_lossy(stderr);
        anyhow::anyhow!(
            "`client bench` printed no report: {}",
            stderr.lines().last().unwrap_or("no output").trim()
        )
    })?;
    let refused = run
        .first_error
        .as_deref()
        .is_some_and(|e| e.contains("digest") || e.contains("signature"));
    Ok(Reads {
        ok: run.requests - run.errors,
        failed: run.errors,
        refused_bytes: u64::from(refused),
        first_failure: run.first_error,
    })
}

/// Reads of `ids` of the cluster in `cluster_dir`, [`READ_CONCURRENCY`] at once.
pub fn config(client: &Path, cluster_dir: &Path, ids: (u64, u64), seed: u64) -> ReadConfig {
    ReadConfig {
        client: client.to_owned(),
        cluster_dir: cluster_dir.to_owned(),
        ids,
        seed,
        concurrency: READ_CONCURRENCY,
    }
}

impl Reads {
    /// Adds `other`'s counts; the first failure stays the first.
    pub fn add(&mut self, other: &Reads) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.refused_bytes += other.refused_bytes;
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&other.first_failure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keep_the_first_failure() {
        let mut reads = Reads::default();
        reads.add(&Reads {
            ok: 10,
            ..Reads::default()
        });
        reads.add(&Reads {
            ok: 5,
            failed: 2,
            first_failure: Some("first".into()),
            refused_bytes: 1,
        });
        reads.add(&Reads {
            failed: 1,
            first_failure: Some("second".into()),
            ..Reads::default()
        });
        assert_eq!((reads.ok, reads.failed, reads.refused_bytes), (15, 3, 1));
        assert_eq!(reads.first_failure.as_deref(), Some("first"));
    }

    #[test]
    fn a_run_without_a_report_is_a_failure_naming_the_clients_last_word() {
        let error = parse_run(b"", b"warming\nno cluster found in /nowhere\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`client bench` printed no report: no cluster found in /nowhere"
        );
        let reads = parse_run(
            br#"{"requests": 10, "errors": 2, "first_error": "image 4: digest mismatch"}"#,
            b"",
        )
        .unwrap();
        assert_eq!((reads.ok, reads.failed, reads.refused_bytes), (8, 2, 1));
    }
}
