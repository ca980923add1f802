//! `cargo xtask restart I`: stop a member if it runs (SIGTERM, then SIGKILL after a grace
//! period) and start it again on the same ports, then wait until it answers. Its partition
//! rules and netem shape are applied again in its fresh network namespace.

use std::time::Instant;

use lab::state::Target;
use lab::{client, faults, runtime};
use xshell::Shell;

use crate::cluster::Cluster;

/// Restart node I (or `canonical`), whether it runs, was killed or is paused.
#[derive(Debug, clap::Args)]
pub struct Restart {
    /// Node index, or `canonical`.
    target: Target,
}

impl Restart {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let member = cluster.member(self.target)?;
        let started = Instant::now();
        cluster
            .runtime
            .restart(sh, &mut cluster.state, member.index)?;
        // Saved at once: the process runtime recorded a new pid.
        cluster.save()?;
        let Cluster {
            project,
            state,
            runtime,
        } = &mut cluster;
        faults::restore(sh, project, runtime.as_ref(), state, &[member.index])?;
        // A restarted container may come back at another address on its network.
        let bridges = runtime.bridge_addresses(sh, state);
        state.set_bridges(&bridges);
        // A restarted swarm task may run on another machine.
        let hosts = super::up::host_addresses(runtime.placements(sh, state));
        state.set_hosts(&hosts);
        cluster.save()?;
        let restarted = started.elapsed();
        let client = client::binary(&cluster.project)?;
        let answering = client::wait_until_answering(
            sh,
            &client,
            &cluster.project.cluster_dir,
            &[member.index],
            // Only this member matters here; others may be down on purpose.
            || {
                runtime::first_stopped(
                    sh,
                    cluster.runtime.as_ref(),
                    &cluster.state,
                    &[member.index],
                )
            },
        )?;
        println!(
            "restarted {} (stopped and started in {:.2} s, answering {:.2} s later)",
            member.label(),
            restarted.as_secs_f64(),
            answering.as_secs_f64(),
        );
        Ok(())
    }
}
