//! The swarm runtime on a single-node swarm of this machine's engine: `up 5 --runtime swarm
//! --init` makes the swarm when there is none, every member is a dnsrr service on an overlay,
//! images come back byte-identical to the canonical's, a killed leader is replaced in a
//! higher term, a 1,2 | 3,4,5 partition leaves the minority without a leader until `heal`,
//! and `down` leaves no service, network, secret or config behind, and the swarm as it was
//! found (a guard makes the engine leave a swarm the test made, also when the test fails).
//! Runs only when `FLOTILLA_E2E=1` is set.

use anyhow::Context;
use e2e::cluster::{COMMAND_TIMEOUT, ELECTION_DEADLINE};
use e2e::leadership::{leaderless, led_by};
use e2e::{Cluster, NODES};
use lab::docker::{self, CLUSTER_LABEL};
use lab::swarm;
use xshell::Shell;

/// Sample ids fetched and compared with the canonical's files.
const COMPARED_IDS: [u64; 3] = [123, 1, 1000];

/// Puts the engine's swarm back as it was found when dropped: a swarm made while the guard
/// lived is left again.
struct SwarmAsFound {
    sh: Shell,
    was_active: bool,
    /// The engine had the swarm's gateway bridge network before the test.
    had_bridge: bool,
}

impl SwarmAsFound {
    fn record() -> anyhow::Result<SwarmAsFound> {
        let sh = Shell::new().context("creating a shell")?;
        let was_active = swarm::membership(&sh)?.is_active();
        let had_bridge = swarm::network_exists(&sh, swarm::GATEWAY_BRIDGE);
        Ok(SwarmAsFound {
            sh,
            was_active,
            had_bridge,
        })
    }

    fn is_as_found(&self) -> anyhow::Result<bool> {
        Ok(swarm::membership(&self.sh)?.is_active() == self.was_active
            && swarm::network_exists(&self.sh, swarm::GATEWAY_BRIDGE) == self.had_bridge)
    }
}

impl Drop for SwarmAsFound {
    fn drop(&mut self) {
        if self.was_active {
            return;
        }
        let left = if swarm::membership(&self.sh).is_ok_and(|m| m.is_active()) {
            eprintln!("the test left a swarm behind; leaving it");
            swarm::leave(&self.sh, !self.had_bridge)
        } else if !self.had_bridge && swarm::network_exists(&self.sh, swarm::GATEWAY_BRIDGE) {
            eprintln!("the test left the swarm's gateway bridge behind; removing it");
            docker::run(
                &self.sh,
                &["network".into(), "rm".into(), swarm::GATEWAY_BRIDGE.into()],
            )
            .map(drop)
        } else {
            Ok(())
        };
        if let Err(error) = left {
            eprintln!(
                "PUTTING THE SWARM BACK FAILED: {error:#}; run `docker swarm leave --force` and `docker network rm {}`",
                swarm::GATEWAY_BRIDGE
            );
        }
    }
}

/// Names of `kind` (`service`, `network`, `secret`, `config`) labelled with `prefix`.
fn labelled(sh: &Shell, kind: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
    let listed = docker::run(
        sh,
        &[
            kind.into(),
            "ls".into(),
            format!("--filter=label={CLUSTER_LABEL}={prefix}"),
            "--format={{.Name}}".into(),
        ],
    )?;
    Ok(listed.lines().map(str::to_string).collect())
}

#[test]
fn a_swarm_cluster_serves_fails_over_partitions_and_leaves_nothing_behind() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    // Declared first, so dropped last: after the cluster's own `down`.
    let found = SwarmAsFound::record()?;
    let cluster = Cluster::start_on("swarm", "swarm", &["--init"])?;
    let sh = cluster.shell();
    let prefix = cluster.prefix().to_string();

    // Every member is a service of its own that peers reach at its task's address.
    for index in 0..=NODES {
        let name = match index {
            0 => cluster.canonical_name(),
            index => cluster.node_name(index),
        };
        let mode = docker::run(
            sh,
            &[
                "service".into(),
                "inspect".into(),
                "--format={{.Spec.EndpointSpec.Mode}} {{.Spec.TaskTemplate.RestartPolicy.Condition}}".into(),
                name.clone(),
            ],
        )?;
        anyhow::ensure!(
            mode == "dnsrr none",
            "{name}: endpoint mode and restart condition are `{mode}`"
        );
    }
    let status = cluster.xtask_ok(&["status"], COMMAND_TIMEOUT)?;
    anyhow::ensure!(
        status.contains("machine"),
        "`status` names no machine per member:\n{status}"
    );

    // Images through the edges are the canonical's bytes.
    let old_term = cluster.wait_highest_leads()?;
    let canonical_container = docker::run(
        sh,
        &[
            "ps".into(),
            "--quiet".into(),
            format!(
                "--filter=label=com.docker.swarm.service.name={}",
                cluster.canonical_name()
            ),
        ],
    )?;
    let work = cluster.work();
    for id in COMPARED_IDS {
        let dir = work.join(format!("fetch-{id}"));
        std::fs::create_dir_all(&dir)?;
        cluster.client_ok(&["get-image", &id.to_string()], &dir)?;
        let fetched = std::fs::read_dir(&dir)?
            .next()
            .context("get-image wrote no file")??
            .path();
        let file_name = fetched
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let original = work.join(format!("canonical-{file_name}"));
        docker::run(
            sh,
            &[
                "cp".into(),
                format!("{canonical_container}:/data/{file_name}"),
                original.display().to_string(),
            ],
        )?;
        let (fetched_bytes, original_bytes) = (std::fs::read(&fetched)?, std::fs::read(&original)?);
        anyhow::ensure!(
            fetched_bytes == original_bytes,
            "image {id}: the edges returned {} bytes (sha256 {}), the canonical holds {} bytes (sha256 {})",
            fetched_bytes.len(),
            wire::Digest::of(&fetched_bytes),
            original_bytes.len(),
            wire::Digest::of(&original_bytes)
        );
    }

    // A killed leader stays dead (restart condition none) and is replaced in a higher term.
    cluster.xtask_ok(&["kill", &NODES.to_string()], COMMAND_TIMEOUT)?;
    let survivors: Vec<u16> = (1..NODES).collect();
    let next = NODES - 1;
    let new_term = cluster.wait_led_by(
        &format!("node {next} leading nodes 1 to {next} in a term above {old_term}"),
        &survivors,
        next,
        Some(old_term),
    )?;
    eprintln!("node {next} leads term {new_term} (node {NODES} led term {old_term})");
    cluster.xtask_ok(&["restart", &NODES.to_string()], COMMAND_TIMEOUT)?;
    cluster.wait_highest_leads()?;

    // The minority of a partition has no leader; heal reunites.
    cluster.xtask_ok(&["partition", "1,2", "3,4,5"], COMMAND_TIMEOUT)?;
    let term = cluster.wait_until(
        "nodes 1 and 2 without a leader, node 5 leading 3, 4 and 5",
        ELECTION_DEADLINE,
        || {
            let rows = cluster.status()?;
            Ok(leaderless(&rows, &[1, 2]).and_then(|()| led_by(&rows, &[3, 4, 5], 5, None)))
        },
    )?;
    eprintln!("minority 1,2 has no leader; node 5 leads 3,4,5 in term {term}");
    cluster.xtask_ok(&["heal"], COMMAND_TIMEOUT)?;
    cluster.one_agreed_leader()?;
    cluster.ping_all()?;

    // `down` (the fixture's drop) removes everything `up` made, and the swarm if it made it.
    drop(cluster);
    let sh = Shell::new()?;
    if swarm::membership(&sh)?.manager {
        for kind in ["service", "network", "secret", "config"] {
            let left = labelled(&sh, kind, &prefix)?;
            anyhow::ensure!(left.is_empty(), "`down` left {kind}s: {left:?}");
        }
    }
    anyhow::ensure!(
        found.is_as_found()?,
        "the engine's swarm is not as it was found (it was {})",
        if found.was_active {
            "active"
        } else {
            "inactive"
        }
    );
    Ok(())
}
