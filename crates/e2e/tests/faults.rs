//! Injected delay: `netem 2 --delay 150ms` slows node 2 alone, for the client and for its
//! peers' RTT gauges, and `--clear` takes it away again without unsettling the election. The
//! test brings up its own cluster (see `e2e::Cluster`) and runs only when `FLOTILLA_E2E=1`
//! is set.

use std::time::Duration;

use anyhow::Context;
use e2e::cluster::COMMAND_TIMEOUT;
use e2e::{Cluster, NODES};
use wire::cluster::ClusterFile;
use wire::status::StatusRow;

/// The delay `netem` puts on node 2, and what the client and peers must then measure.
const DELAY: &str = "150ms";
const DELAY_MS: f64 = 150.0;
/// The node netem slows.
const SLOWED: u16 = 2;
/// How long the RTT gauges may take to show the delay (each peer pings every second).
const NETEM_DEADLINE: Duration = Duration::from_secs(30);
/// Budget of one metrics request.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn netem_slows_one_node_for_the_client_and_its_peers() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("netem")?;
    // The test ends by checking that the election stayed settled, so it starts settled.
    cluster.wait_highest_leads()?;
    let slowed = SLOWED.to_string();
    let said = cluster.xtask_ok(&["netem", &slowed, "--delay", DELAY], COMMAND_TIMEOUT)?;
    anyhow::ensure!(
        said.contains("delay 150 ms"),
        "netem did not say what it applied: {said}"
    );
    let rtt = |rows: &[StatusRow], index: u16| {
        rows.iter()
            .find(|r| r.index == index && r.reachable)
            .and_then(|r| r.rtt_ms)
    };
    let (slow, other) = cluster.wait_until(
        &format!("client ping reporting at least {DELAY_MS} ms to node {SLOWED}"),
        NETEM_DEADLINE,
        || {
            let rows = cluster.ping()?;
            Ok(match (rtt(&rows, SLOWED), rtt(&rows, 1)) {
                (Some(slow), Some(other)) if slow >= DELAY_MS => Ok((slow, other)),
                seen => Err(format!("rtt to node {SLOWED} and node 1: {seen:?} ms")),
            })
        },
    )?;
    eprintln!("client ping with netem: node {SLOWED} {slow:.1} ms, node 1 {other:.1} ms");
    anyhow::ensure!(
        other < DELAY_MS,
        "node 1 is as slow as node {SLOWED} ({other:.1} ms): the delay is not node {SLOWED}'s alone"
    );
    let peers: Vec<u16> = (1..=NODES).filter(|i| *i != SLOWED).collect();
    let seen = cluster.wait_until(
        &format!(
            "every other node's flotilla_peer_rtt_seconds{{peer=\"node_{SLOWED}\"}} at least {}",
            DELAY_MS / 1e3
        ),
        NETEM_DEADLINE,
        || peer_rtts(&cluster, &peers, |rtt| rtt >= DELAY_MS / 1e3),
    )?;
    eprintln!("peers' RTT gauges to node {SLOWED} with netem: {seen}");
    cluster.xtask_ok(&["netem", &slowed, "--clear"], COMMAND_TIMEOUT)?;
    let cleared = cluster.wait_until(
        &format!("client ping back under {DELAY_MS} ms to node {SLOWED}"),
        NETEM_DEADLINE,
        || {
            let rows = cluster.ping()?;
            Ok(match rtt(&rows, SLOWED) {
                Some(rtt) if rtt < DELAY_MS => Ok(rtt),
                seen => Err(format!("rtt to node {SLOWED}: {seen:?} ms")),
            })
        },
    )?;
    eprintln!("client ping after --clear: node {SLOWED} {cleared:.1} ms");
    let seen = cluster.wait_until(
        &format!(
            "every other node's RTT gauge to node {SLOWED} back under {}",
            DELAY_MS / 1e3
        ),
        NETEM_DEADLINE,
        || peer_rtts(&cluster, &peers, |rtt| rtt < DELAY_MS / 1e3),
    )?;
    eprintln!("peers' RTT gauges to node {SLOWED} after --clear: {seen}");
    // The delay must not have unsettled the election.
    cluster.one_agreed_leader()?;
    Ok(())
}

/// `Ok(summary)` when every node of `peers` has an RTT gauge to the slowed node that passes
/// `wanted`, else `Err(summary)`.
fn peer_rtts(
    cluster: &Cluster,
    peers: &[u16],
    wanted: impl Fn(f64) -> bool,
) -> anyhow::Result<Result<String, String>> {
    let file = ClusterFile::load(cluster.cluster_dir())?;
    let label = format!("node_{SLOWED}");
    let mut seen = Vec::new();
    let mut all = true;
    for index in peers {
        let node = file
            .nodes
            .iter()
            .find(|n| n.index == *index)
            .with_context(|| format!("cluster.toml has no node {index}"))?;
        let page = lab::scrape::fetch(&node.metrics, SCRAPE_TIMEOUT)?;
        let rtt = page.value("flotilla_peer_rtt_seconds", &[("peer", &label)]);
        all &= rtt.is_some_and(&wanted);
        seen.push(format!(
            "node {index}: {}",
            rtt.map_or("none".to_string(), |r| format!("{r:.3} s"))
        ));
    }
    Ok(if all {
        Ok(seen.join(", "))
    } else {
        Err(seen.join(", "))
    })
}
