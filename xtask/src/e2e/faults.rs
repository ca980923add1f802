//! End-to-end steps on injected faults: a one-way cut, and netem delay.
//!
//! A one-way cut cannot be seen through QUIC: every request needs its reply in the other
//! direction, so cutting 1→2 breaks 2's pings of 1 as surely as 1's pings of 2. So the suite
//! looks at single packets: `xtask udp-probe` runs on the host inside one node's network
//! namespace (`nsenter --net` changes nothing else, so the host's binary runs there) and counts
//! the datagrams that a second probe, inside another node's namespace, sends to it. Before the
//! cut both directions deliver (the method works), after it 1→2 delivers nothing and 2→1
//! still delivers, and after `heal` 1→2 delivers again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use super::{run_with_timeout, Suite, COMMAND_TIMEOUT, NODES};
use crate::commands::LISTENING;
use crate::scrape;

/// UDP port the probe listens on inside a node's namespace (the node uses 7000 and 9100).
const PROBE_PORT: u16 = 7999;
/// Datagrams sent per direction, and the pause between them.
const PROBE_DATAGRAMS: u32 = 20;
const PROBE_INTERVAL: &str = "20ms";
/// How long the listener counts: the sender's 0.4 s with a wide margin.
const PROBE_LISTEN: &str = "1200ms";
/// The delay `netem` puts on node 2, and what the client and peers must then measure.
const DELAY: &str = "150ms";
const DELAY_MS: f64 = 150.0;
/// The node netem slows.
const SLOWED: u16 = 2;
/// How long the RTT gauges may take to show the delay (each peer pings every second).
const NETEM_DEADLINE: Duration = Duration::from_secs(30);

/// Kills a probe listener that is still running when the step ends early.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Suite<'_> {
    pub(super) fn one_way(&self) -> anyhow::Result<()> {
        let before = (self.datagrams(1, 2)?, self.datagrams(2, 1)?);
        eprintln!(
            "before the cut: 1->2 {} of {PROBE_DATAGRAMS} datagrams arrive, 2->1 {}",
            before.0, before.1
        );
        anyhow::ensure!(
            before.0 > 0 && before.1 > 0,
            "datagrams do not cross between nodes 1 and 2 even before the cut, so the probe shows nothing"
        );
        self.xtask_ok(&["partition", "--one-way", "1", "2"], COMMAND_TIMEOUT)?;
        anyhow::ensure!(
            self.has_partition_table(2)? && !self.has_partition_table(1)?,
            "a one-way cut 1->2 must put rules on node 2 only"
        );
        let cut = (self.datagrams(1, 2)?, self.datagrams(2, 1)?);
        eprintln!(
            "cut one way: 1->2 {} of {PROBE_DATAGRAMS} datagrams arrive, 2->1 {}",
            cut.0, cut.1
        );
        anyhow::ensure!(cut.0 == 0, "{} datagrams crossed the cut 1->2", cut.0);
        anyhow::ensure!(
            cut.1 > 0,
            "no datagram went 2->1, which the one-way cut must leave open"
        );
        self.xtask_ok(&["heal"], COMMAND_TIMEOUT)?;
        let healed = self.datagrams(1, 2)?;
        eprintln!("healed: 1->2 {healed} of {PROBE_DATAGRAMS} datagrams arrive");
        anyhow::ensure!(healed > 0, "1->2 stays cut after heal");
        self.one_agreed_leader()?;
        Ok(())
    }

    /// How many probe datagrams sent from node `from`'s namespace arrive in node `to`'s.
    fn datagrams(&self, from: u16, to: u16) -> anyhow::Result<u32> {
        let sender = self.running(from)?;
        let receiver = self.running(to)?;
        let address = receiver
            .ip
            .clone()
            .with_context(|| format!("node {to} has no address"))?;
        let xtask = self.xtask_binary();
        let mut listener = Command::new("nsenter");
        listener
            .arg(format!("--target={}", receiver.pid))
            .arg("--net")
            .arg("--")
            .arg(&xtask)
            .args(["udp-probe", "listen"])
            .arg(format!("--port={PROBE_PORT}"))
            .arg(format!("--duration={PROBE_LISTEN}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut listener = Reaped(listener.spawn().context("starting the probe listener")?);
        let mut lines = BufReader::new(
            listener
                .0
                .stdout
                .take()
                .context("the probe listener has no stdout")?,
        )
        .lines();
        // The listener prints once it is bound, or ends (EOF) if it cannot bind.
        let first = lines.next().transpose()?.unwrap_or_default();
        anyhow::ensure!(
            first == LISTENING,
            "the probe listener in node {to} did not start (`{first}`)"
        );
        let mut send = Command::new("nsenter");
        send.arg(format!("--target={}", sender.pid))
            .arg("--net")
            .arg("--")
            .arg(&xtask)
            .args(["udp-probe", "send"])
            .arg(format!("--to={address}:{PROBE_PORT}"))
            .arg(format!("--count={PROBE_DATAGRAMS}"))
            .arg(format!("--interval={PROBE_INTERVAL}"));
        let sent = run_with_timeout(send, None, COMMAND_TIMEOUT)?;
        anyhow::ensure!(
            sent.status.success(),
            "the probe sender in node {from} failed: {}",
            String::from_utf8_lossy(&sent.stderr).trim()
        );
        let mut received = None;
        for line in lines {
            if let Some(count) = line?.strip_prefix("received ") {
                received = count.trim().parse().ok();
            }
        }
        received.with_context(|| format!("the probe listener in node {to} reported no count"))
    }

    pub(super) fn netem(&self) -> anyhow::Result<()> {
        let slowed = SLOWED.to_string();
        let said = self.xtask_ok(&["netem", &slowed, "--delay", DELAY], COMMAND_TIMEOUT)?;
        anyhow::ensure!(
            said.contains("delay 150 ms"),
            "netem did not say what it applied: {said}"
        );
        let rtt = |rows: &[super::NodeStatus], index: u16| {
            rows.iter()
                .find(|r| r.index == index && r.reachable)
                .and_then(|r| r.rtt_ms)
        };
        let (slow, other) = self.wait_until(
            &format!("client ping reporting at least {DELAY_MS} ms to node {SLOWED}"),
            NETEM_DEADLINE,
            || {
                let rows = self.ping()?;
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
        let seen = self.wait_until(
            &format!("every other node's flotilla_peer_rtt_seconds{{peer=\"node_{SLOWED}\"}} at least {}", DELAY_MS / 1e3),
            NETEM_DEADLINE,
            || self.peer_rtts(&peers, |rtt| rtt >= DELAY_MS / 1e3),
        )?;
        eprintln!("peers' RTT gauges to node {SLOWED} with netem: {seen}");
        self.xtask_ok(&["netem", &slowed, "--clear"], COMMAND_TIMEOUT)?;
        let cleared = self.wait_until(
            &format!("client ping back under {DELAY_MS} ms to node {SLOWED}"),
            NETEM_DEADLINE,
            || {
                let rows = self.ping()?;
                Ok(match rtt(&rows, SLOWED) {
                    Some(rtt) if rtt < DELAY_MS => Ok(rtt),
                    seen => Err(format!("rtt to node {SLOWED}: {seen:?} ms")),
                })
            },
        )?;
        eprintln!("client ping after --clear: node {SLOWED} {cleared:.1} ms");
        let seen = self.wait_until(
            &format!(
                "every other node's RTT gauge to node {SLOWED} back under {}",
                DELAY_MS / 1e3
            ),
            NETEM_DEADLINE,
            || self.peer_rtts(&peers, |rtt| rtt < DELAY_MS / 1e3),
        )?;
        eprintln!("peers' RTT gauges to node {SLOWED} after --clear: {seen}");
        // The delay must not have unsettled the election for the steps after this one.
        self.one_agreed_leader()?;
        Ok(())
    }

    /// `Ok(summary)` when every node of `peers` has an RTT gauge to the slowed node that
    /// passes `wanted`.
    fn peer_rtts(
        &self,
        peers: &[u16],
        wanted: impl Fn(f64) -> bool,
    ) -> anyhow::Result<Result<String, String>> {
        let cluster = wire::cluster::ClusterFile::load(&self.cluster_dir)?;
        let label = format!("node_{SLOWED}");
        let mut seen = Vec::new();
        let mut all = true;
        for index in peers {
            let node = cluster
                .nodes
                .iter()
                .find(|n| n.index == *index)
                .with_context(|| format!("cluster.toml has no node {index}"))?;
            let page = scrape::fetch(&node.metrics, Duration::from_secs(5))?;
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
}
