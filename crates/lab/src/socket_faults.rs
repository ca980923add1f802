//! Faults through the members' own sockets: where the host cannot enter a member's network
//! namespace (a swarm task on another machine), `partition`, `heal` and `netem` ask each
//! member, over QUIC with the operator's certificate (`client net-faults`), to drop datagrams
//! from the peers it is cut off from and to delay or lose what it sends.
//!
//! A member holds one set of faults, so what it is sent is always the whole of its share of
//! the recorded state: the sources its part of the cut drops, and its shape. Every change
//! (a cut, a heal, a shape, a clear, a member back in a fresh task) sends the members their
//! whole share again.

use std::path::PathBuf;

use anyhow::Context;
use chaos::FaultTarget;
use xshell::{cmd, Shell};

use crate::state::State;

/// Running members reached through their sockets, and the operator's client that reaches them.
#[derive(Clone, Debug)]
pub struct SocketRoute {
    /// The client binary (`client net-faults`).
    pub client: PathBuf,
    /// The cluster folder holding `cluster.toml` and `operator/`.
    pub cluster_dir: PathBuf,
    /// Every running member, with its address on the cluster network.
    pub targets: Vec<FaultTarget>,
}

impl SocketRoute {
    /// Sends every running member (or, with `only`, those members) its share of `state`.
    pub fn apply(&self, sh: &Shell, state: &State, only: Option<&[u16]>) -> anyhow::Result<()> {
        for target in &self.targets {
            if only.is_some_and(|only| !only.contains(&target.index)) {
                continue;
            }
            self.send(sh, target, &self.arguments(state, target.index))?;
        }
        Ok(())
    }

    /// The `client net-faults` options for member `index` under `state`.
    fn arguments(&self, state: &State, index: u16) -> Vec<String> {
        let mut arguments = Vec::new();
        if let Some(cut) = state.cut().filter(|_| index > 0) {
            let sources: Vec<String> = cut
                .blocked_sources()
                .get(&index)
                .into_iter()
                .flatten()
                .filter_map(|source| self.address_of(*source))
                .collect();
            if !sources.is_empty() {
                arguments.push(format!("--drop-from={}", sources.join(",")));
            }
        }
        if let Some(shaping) = state.netem.get(&index) {
            let shape = shaping.shape;
            arguments.push(format!("--delay-us={}", shape.delay_us));
            arguments.push(format!("--jitter-us={}", shape.jitter_us));
            arguments.push(format!("--loss-ppm={}", shape.loss_ppm));
        }
        arguments
    }

    /// Member `index`'s address as its peers see it (every port of it), when it runs.
    fn address_of(&self, index: u16) -> Option<String> {
        self.targets
            .iter()
            .find(|t| t.index == index)
            .and_then(|t| t.ip.clone())
    }

    fn send(&self, sh: &Shell, target: &FaultTarget, arguments: &[String]) -> anyhow::Result<()> {
        let client = &self.client;
        let cluster = &self.cluster_dir;
        let member = match target.index {
            0 => "canonical".to_string(),
            index => index.to_string(),
        };
        let output = cmd!(
            sh,
            "{client} --cluster {cluster} net-faults {member} {arguments...}"
        )
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", client.display()))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
            anyhow::bail!(
                "setting the socket faults of {} failed: {said}",
                target.name
            );
        }
        Ok(())
    }
}
