//! End-to-end steps on what users watch: every member's metrics URL (from `cluster.toml`)
//! passes `promtool check metrics`, shows an RTT gauge for every peer and counts a fetch;
//! `top --once` shows every node; `logs all --out` writes one non-empty file per container,
//! which `down` leaves alone.

use std::time::Duration;

use anyhow::Context;
use xshell::cmd;

use super::{Suite, COMMAND_TIMEOUT, NODES, PREFIX};
use crate::scrape::{self, Metrics};
use crate::tools;

/// A sample id no earlier step fetches, so its first fetch is a cold one through the leader
/// to the canonical.
const COLD_ID: u64 = 777;
/// Budget of one metrics request.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long RTT gauges and counters may take to show up (pings run every second).
const METRICS_DEADLINE: Duration = Duration::from_secs(30);
/// Folder (under the suite's work folder) that `logs all --out` writes to.
const LOGS_DIR: &str = "collected-logs";

impl Suite<'_> {
    pub(super) fn metrics(&self) -> anyhow::Result<()> {
        let cluster = wire::cluster::ClusterFile::load(&self.cluster_dir)?;
        let members: Vec<_> = std::iter::once(&cluster.canonical)
            .chain(&cluster.nodes)
            .collect();
        tools::ensure(self.sh, "promtool", "prometheus")?;
        for member in &members {
            let page = scrape::fetch(&member.metrics, SCRAPE_TIMEOUT)?;
            let output = cmd!(self.sh, "promtool check metrics")
                .quiet()
                .ignore_status()
                .stdin(page.text.as_bytes())
                .output()
                .context("running promtool")?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            anyhow::ensure!(
                output.status.success(),
                "promtool check metrics rejects {} ({}): {}",
                member.metrics,
                member.name,
                said.trim()
            );
            eprintln!(
                "promtool check metrics: {} passes ({} samples){}",
                member.name,
                page.samples.len(),
                if said.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", said.trim())
                }
            );
        }
        for node in &cluster.nodes {
            let peers: Vec<String> = std::iter::once("canonical".to_string())
                .chain(
                    (1..=NODES)
                        .filter(|i| *i != node.index)
                        .map(|i| format!("node_{i}")),
                )
                .collect();
            self.wait_until(
                &format!(
                    "{}'s RTT gauge for each of its {} peers",
                    node.name,
                    peers.len()
                ),
                METRICS_DEADLINE,
                || {
                    let page = scrape::fetch(&node.metrics, SCRAPE_TIMEOUT)?;
                    let missing: Vec<&str> = peers
                        .iter()
                        .filter(|peer| {
                            page.value("flotilla_peer_rtt_seconds", &[("peer", peer)])
                                .is_none_or(|rtt| rtt <= 0.0)
                        })
                        .map(String::as_str)
                        .collect();
                    Ok(match missing.as_slice() {
                        [] => Ok(()),
                        _ => Err(format!("no RTT yet for {}", missing.join(", "))),
                    })
                },
            )?;
        }
        let totals = |pages: &[Metrics]| Counters::of(pages);
        let scrape_all = || -> anyhow::Result<Vec<Metrics>> {
            members
                .iter()
                .map(|m| scrape::fetch(&m.metrics, SCRAPE_TIMEOUT))
                .collect()
        };
        let before = totals(&scrape_all()?);
        let out = self.work.join(format!("metrics-{COLD_ID}"));
        self.client_ok(
            &[
                "get-image",
                &COLD_ID.to_string(),
                "-o",
                &out.display().to_string(),
            ],
            &self.work,
        )?;
        let after = self.wait_until(
            &format!("counters moving after `client get-image {COLD_ID}`"),
            METRICS_DEADLINE,
            || {
                let after = totals(&scrape_all()?);
                Ok(match after.moved_from(&before) {
                    true => Ok(after),
                    false => Err(format!("before {before:?}, now {after:?}")),
                })
            },
        )?;
        eprintln!("counters before the fetch {before:?}, after {after:?}");
        Ok(())
    }

    pub(super) fn top(&self) -> anyhow::Result<()> {
        let frame = self.xtask_ok(&["top", "--once", "--interval", "0.5"], COMMAND_TIMEOUT)?;
        for index in 1..=NODES {
            let name = format!("{PREFIX}_node_{index}");
            anyhow::ensure!(
                frame
                    .lines()
                    .any(|line| line.contains(&name) && line.contains(" up ")),
                "top does not show {name} as up:\n{frame}"
            );
        }
        anyhow::ensure!(
            frame.contains(&format!("leader: node {NODES}")),
            "top does not name node {NODES} as the leader:\n{frame}"
        );
        anyhow::ensure!(
            frame.contains("peer RTT"),
            "top shows no RTT matrix:\n{frame}"
        );
        Ok(())
    }

    pub(super) fn logs(&self) -> anyhow::Result<()> {
        let dir = self.work.join(LOGS_DIR);
        self.xtask_ok(
            &["logs", "all", "--out", &dir.display().to_string()],
            COMMAND_TIMEOUT,
        )?;
        self.collected_logs_are_there()
    }

    /// One non-empty `<container>.log` per container in the folder `logs` wrote.
    pub(super) fn collected_logs_are_there(&self) -> anyhow::Result<()> {
        let dir = self.work.join(LOGS_DIR);
        let names = std::iter::once(format!("{PREFIX}_canonical"))
            .chain((1..=NODES).map(|i| format!("{PREFIX}_node_{i}")));
        for name in names {
            let path = dir.join(format!("{name}.log"));
            let size = std::fs::metadata(&path)
                .with_context(|| format!("no log file {}", path.display()))?
                .len();
            anyhow::ensure!(size > 0, "{} is empty", path.display());
        }
        let files = std::fs::read_dir(&dir)?.count();
        anyhow::ensure!(
            files == usize::from(NODES) + 1,
            "{} holds {files} files, expected {}",
            dir.display(),
            NODES + 1
        );
        Ok(())
    }
}

/// Counters a fetch must move, summed over the members.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Counters {
    /// `get_image` requests served by any member (edges and canonical).
    image_requests: f64,
    /// Cache hits and misses on the edges.
    cache_lookups: f64,
    /// Images the edges fetched from the canonical.
    origin_fetches: f64,
}

impl Counters {
    fn of(pages: &[Metrics]) -> Counters {
        let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
            pages.iter().map(|page| page.sum(name, labels)).sum()
        };
        Counters {
            image_requests: sum("flotilla_requests_total", &[("kind", "get_image")]),
            cache_lookups: sum("flotilla_cache_hits_total", &[])
                + sum("flotilla_cache_misses_total", &[]),
            origin_fetches: sum("flotilla_origin_fetches_total", &[]),
        }
    }

    /// Whether a cold fetch happened since `before`: a request, a lookup, an origin fetch.
    fn moved_from(&self, before: &Counters) -> bool {
        self.image_requests > before.image_requests
            && self.cache_lookups > before.cache_lookups
            && self.origin_fetches > before.origin_fetches
    }
}
