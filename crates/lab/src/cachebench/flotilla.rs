//! The Flotilla side: a cluster of one edge started by xtask's own `up` in a cluster folder of
//! its own (`FLOTILLA_CLUSTER`), serving the objects folder; its members started on the
//! server's core (`up --cpus`); loaded by the release `client bench` on the load core. [`Cluster`]'s Drop
//! runs `down --volumes`, also on failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;
use wire::cluster::CLUSTER_ENV;
use xshell::{cmd, Shell};

use super::Cell;
use crate::state::RuntimeKind;

/// What a bench cluster is: the canonical and `nodes` edges on `runtime`, named `prefix`,
/// serving `objects`, all started on `core` if given.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    pub prefix: &'a str,
    pub runtime: RuntimeKind,
    pub objects: &'a Path,
    pub nodes: u16,
    pub core: Option<usize>,
}

/// A running bench cluster, stopped and removed when dropped.
pub struct Cluster {
    xtask: PathBuf,
    pub dir: PathBuf,
    pub runtime: RuntimeKind,
}

impl Cluster {
    /// Starts the cluster `spec` describes, recorded in `dir`.
    pub fn up(sh: &Shell, xtask: &Path, dir: &Path, spec: &Spec<'_>) -> anyhow::Result<Cluster> {
        let Spec {
            prefix,
            runtime,
            objects,
            nodes,
            core,
        } = *spec;
        // What an interrupted run left behind goes first; its catalogs with it.
        if dir.join("state.json").exists() {
            down(xtask, dir);
        }
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cluster = Cluster {
            xtask: xtask.to_path_buf(),
            dir: dir.to_path_buf(),
            runtime,
        };
        let runtime_word = runtime.to_string();
        let nodes = nodes.to_string();
        // Started on their core, not moved there later: a runtime sizes its thread pool by
        // the CPUs it may use at start, and two threads sharing one core spend a quarter of
        // it switching between them (perf, 10k objects).
        let cpus = core.map(|core| vec!["--cpus".to_string(), core.to_string()]);
        let cpus = cpus.unwrap_or_default();
        cmd!(
            sh,
            "{xtask} up {nodes} --runtime {runtime_word} --name {prefix} --images {objects} {cpus...}"
        )
        .env(CLUSTER_ENV, dir)
        .quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("starting the {runtime} bench cluster `{prefix}`"))?;
        Ok(cluster)
    }

    /// One `client bench` run of `load`, from `core`.
    fn client_bench(
        &self,
        sh: &Shell,
        client: &Path,
        load: &Load,
        core: usize,
    ) -> anyhow::Result<ClientReport> {
        let (core, ids, concurrency, digest_every) = (
            core.to_string(),
            format!("{id}..{id}", id = load.id),
            load.concurrency.to_string(),
            load.digest_every.to_string(),
        );
        let dir = &self.dir;
        let amount = match load.amount {
            Amount::Seconds(seconds) => vec!["--seconds".to_string(), seconds.to_string()],
            Amount::OneRequest => vec!["--requests".to_string(), "1".to_string()],
        };
        let output = cmd!(
            sh,
            "taskset -c {core} {client} --cluster {dir} bench --ids {ids} --concurrency {concurrency} {amount...} --check-digest-every {digest_every} --json"
        )
        .quiet()
        .ignore_status()
        .output()
        .context("running client bench")?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "client bench printed no report ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    }

    /// Fetches `load`'s image once (a miss that fills the edge's cache, its digest checked),
    /// then runs `load` and reports what it measured.
    pub fn measure(
        &self,
        sh: &Shell,
        client: &Path,
        load: &Load,
        core: usize,
    ) -> anyhow::Result<Cell> {
        let warm = Load {
            concurrency: 1,
            amount: Amount::OneRequest,
            digest_every: 1,
            ..*load
        };
        let warm = self.client_bench(sh, client, &warm, core)?;
        if warm.errors > 0 {
            anyhow::bail!(
                "warming image {} failed: {}",
                load.id,
                warm.first_error.unwrap_or_default()
            );
        }
        let report = self.client_bench(sh, client, load, core)?;
        let good = report.requests - report.errors;
        let hits = (report.hit_ratio * good as f64).round() as u64;
        Ok(Cell {
            requests: report.requests,
            errors: report.errors,
            hits,
            not_hits: report.requests - hits,
            requests_per_second: report.requests_per_second,
            megabytes_per_second: report.megabytes_per_second,
            p50_ms: report.p50_ms,
            p99_ms: report.p99_ms,
            seconds: report.seconds,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        down(&self.xtask, &self.dir);
    }
}

/// `xtask down --volumes` on the cluster recorded in `dir`; a failure is said, not raised
/// (it runs from Drop).
fn down(xtask: &Path, dir: &Path) {
    let status = Command::new(xtask)
        .args(["down", "--volumes"])
        .env(CLUSTER_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    if !matches!(status, Ok(status) if status.success()) {
        eprintln!(
            "stopping the bench cluster in {} failed; run `FLOTILLA_CLUSTER={} cargo xtask down --volumes`",
            dir.display(),
            dir.display()
        );
    }
}

/// One `client bench` run on one image.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub id: u64,
    pub concurrency: u32,
    pub amount: Amount,
    /// `--check-digest-every`.
    pub digest_every: u64,
}

/// How long one `client bench` runs.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    Seconds(u32),
    OneRequest,
}

/// The part of `client bench --json` this reads.
#[derive(Deserialize)]
struct ClientReport {
    requests: u64,
    errors: u64,
    seconds: f64,
    requests_per_second: f64,
    megabytes_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    hit_ratio: f64,
    first_error: Option<String>,
}
