//! `cargo xtask restart I`: stop a member if it runs (SIGTERM, then SIGKILL after a grace
//! period) and start it again on the same ports, then wait until it answers.

use std::time::Instant;

use xshell::Shell;

use super::partition;
use super::up::first_stopped;
use crate::client;
use crate::containers;
use crate::docker;
use crate::netem;
use crate::process::{self, Binaries};
use crate::project::Project;
use crate::state::{Runtime, State, Target};

/// Seconds Docker waits after SIGTERM before it kills a member.
const STOP_GRACE_SECONDS: &str = "5";

/// Restart node I (or `canonical`), whether it runs, was killed or is paused.
#[derive(Debug, clap::Args)]
pub struct Restart {
    /// Node index, or `canonical`.
    target: Target,
}

impl Restart {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let mut state = State::require(&project.cluster_dir)?;
        let member = state.member(self.target)?.clone();
        let started = Instant::now();
        match state.runtime {
            Runtime::Docker => {
                let container = docker::containers(sh, Some(&state.prefix))?
                    .into_iter()
                    .find(|c| c.index == member.index)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{} has no container; run `cargo xtask up {}` to recreate it",
                            member.label(),
                            state.node_count()
                        )
                    })?;
                if container.status == "paused" {
                    docker::run(sh, &["unpause".into(), member.name.clone()])?;
                }
                docker::run(
                    sh,
                    &[
                        "restart".into(),
                        format!("--time={STOP_GRACE_SECONDS}"),
                        member.name.clone(),
                    ],
                )
                .map_err(|error| containers::explain_start_failure(&member, error))?;
                // A new container network namespace starts without the partition's rules,
                // and the address may have changed: apply the whole partition again.
                if state.partition.is_some() {
                    partition::apply(sh, &state)?;
                }
                // Likewise for a delay or loss asked with `netem`.
                if state.netem.contains_key(&member.index) {
                    netem::reapply(sh, &project, &mut state, &[member.index])?;
                    state.save(&project.cluster_dir)?;
                }
            }
            Runtime::Process => {
                let binaries = Binaries::locate(&project);
                process::stop(sh, &binaries, &member)?;
                let pid = process::spawn(&project, &binaries, &state, &member)?;
                if let Some(recorded) = state.member_mut(member.index) {
                    recorded.pid = Some(pid);
                }
                state.save(&project.cluster_dir)?;
            }
        }
        let restarted = started.elapsed();
        let client = client::binary(&project)?;
        let answering = client::wait_until_answering(
            sh,
            &client,
            &project.cluster_dir,
            &[member.index],
            || {
                // Only this member matters here; others may be down on purpose.
                first_stopped(sh, &project, &state, &[member.index])
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
