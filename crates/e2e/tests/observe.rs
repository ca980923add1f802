//! What users watch: every member's metrics URL (from `cluster.toml`) passes `promtool check
//! metrics`, shows an RTT gauge for every peer, and counts a cold fetch. The test brings up
//! its own cluster (see `e2e::Cluster`) and runs only when `FLOTILLA_E2E=1` is set.

use std::time::Duration;

use anyhow::Context;
use e2e::{Cluster, NODES};
use lab::scrape::{fetch, Metrics};
use wire::cluster::ClusterFile;
use xshell::cmd;

/// A sample id the test fetches for the first time, so its fetch is a cold one through the
/// leader to the canonical.
const COLD_ID: u64 = 777;
/// Budget of one metrics request.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long RTT gauges and counters may take to show up (pings run every second).
const METRICS_DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn metrics_pass_promtool_show_every_peers_rtt_and_count_a_fetch() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("metrics")?;
    // A cold fetch goes through the leader to the canonical: let the election settle first.
    cluster.wait_highest_leads()?;
    let sh = cluster.shell();
    let file = ClusterFile::load(cluster.cluster_dir())?;
    let members: Vec<_> = std::iter::once(&file.canonical)
        .chain(&file.nodes)
        .collect();
    chaos::tools::ensure(sh, "promtool", "prometheus")?;
    for member in &members {
        let page = fetch(&member.metrics, SCRAPE_TIMEOUT)?;
        let output = cmd!(sh, "promtool check metrics")
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
    for node in &file.nodes {
        let peers: Vec<String> = std::iter::once("canonical".to_string())
            .chain(
                (1..=NODES)
                    .filter(|i| *i != node.index)
                    .map(|i| format!("node_{i}")),
            )
            .collect();
        cluster.wait_until(
            &format!(
                "{}'s RTT gauge for each of its {} peers",
                node.name,
                peers.len()
            ),
            METRICS_DEADLINE,
            || {
                let page = fetch(&node.metrics, SCRAPE_TIMEOUT)?;
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
    let scrape_all = || -> anyhow::Result<Vec<Metrics>> {
        members
            .iter()
            .map(|m| fetch(&m.metrics, SCRAPE_TIMEOUT))
            .collect()
    };
    let before = Counters::of(&scrape_all()?);
    cluster.get_image(COLD_ID, &cluster.work().join(format!("metrics-{COLD_ID}")))?;
    let after = cluster.wait_until(
        &format!("counters moving after `client get-image {COLD_ID}`"),
        METRICS_DEADLINE,
        || {
            let after = Counters::of(&scrape_all()?);
            Ok(match after.moved_from(&before) {
                true => Ok(after),
                false => Err(format!("before {before:?}, now {after:?}")),
            })
        },
    )?;
    eprintln!("counters before the fetch {before:?}, after {after:?}");
    Ok(())
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
