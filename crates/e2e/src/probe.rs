//! Counting UDP datagrams from one node's network namespace to another's, to see which
//! directions of a cut let packets through.
//!
//! A one-way cut cannot be seen through QUIC: every request needs its reply in the other
//! direction, so cutting 1→2 breaks 2's pings of 1 as surely as 1's pings of 2. So the test
//! looks at single packets: chaos's `flotilla-udp-probe` runs on the host inside one node's
//! network namespace (`nsenter --net` changes nothing else, so the host's binary runs there)
//! and counts the datagrams that a second probe, inside another node's namespace, sends to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use anyhow::Context;
use chaos::probe::LISTENING;

use crate::cargo::build_binary;
use crate::cluster::{Cluster, BUILD_TIMEOUT, COMMAND_TIMEOUT};
use crate::process::run_with_timeout;

/// UDP port the probe listens on inside a node's namespace (the node uses 7000 and 9100).
const PROBE_PORT: u16 = 7999;
/// Datagrams sent per direction.
pub const PROBE_DATAGRAMS: u32 = 20;
/// The pause between two datagrams.
const PROBE_INTERVAL: &str = "20ms";
/// How long the listener counts: the sender's 0.4 s with a wide margin.
const PROBE_LISTEN: &str = "1200ms";
/// The probe's package and binary.
const PROBE_PACKAGE: &str = "flotilla-chaos";
const PROBE_BINARY: &str = "flotilla-udp-probe";

/// The probe binary, built once per test process (or why it did not build).
static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Kills a probe listener that is still running when the count ends early.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many of [`PROBE_DATAGRAMS`] probe datagrams sent from node `from`'s namespace arrive
/// in node `to`'s.
pub fn datagrams(cluster: &Cluster, from: u16, to: u16) -> anyhow::Result<u32> {
    let probe = probe_binary(cluster)?;
    let sender = cluster.running(from)?;
    let receiver = cluster.running(to)?;
    let address = receiver
        .ip
        .clone()
        .with_context(|| format!("node {to} has no address"))?;
    let mut listener = Command::new("nsenter");
    listener
        .arg(format!("--target={}", receiver.pid))
        .arg("--net")
        .arg("--")
        .arg(&probe)
        .arg("listen")
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
        .arg(&probe)
        .arg("send")
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

/// Builds the probe once per process and returns its binary.
fn probe_binary(cluster: &Cluster) -> anyhow::Result<PathBuf> {
    let project = cluster.project();
    PROBE
        .get_or_init(|| {
            build_binary(
                &project.root,
                &project.target_dir,
                PROBE_PACKAGE,
                PROBE_BINARY,
                BUILD_TIMEOUT,
            )
            .map_err(|error| format!("{error:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
