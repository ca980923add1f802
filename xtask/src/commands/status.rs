//! `cargo xtask status`: what runs (containers or processes), then the client's view of every
//! node (role, term, leader, cache).

use std::process::Command;

use xshell::Shell;

use super::partition;
use crate::client;
use crate::docker;
use crate::process::{self, Binaries, ProcessStatus};
use crate::project::Project;
use crate::state::{member_name, Runtime, State};
use crate::Exit;

/// Show the cluster's containers or processes and every node's status.
#[derive(Debug, clap::Args)]
pub struct Status {}

impl Status {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let state = State::require(&project.cluster_dir)?;
        let width = state
            .members
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(4);
        println!("cluster `{}` on {}", state.prefix, state.runtime);
        println!(
            "  {:<width$}  {:<8}  {:<15}  metrics",
            "name", "state", "QUIC (udp)"
        );
        let states: Vec<String> = match state.runtime {
            Runtime::Docker => {
                let containers = docker::containers(sh, Some(&state.prefix))?;
                state
                    .members
                    .iter()
                    .map(|m| {
                        containers
                            .iter()
                            .find(|c| c.index == m.index)
                            .map_or_else(|| "missing".to_string(), |c| c.status.clone())
                    })
                    .collect()
            }
            Runtime::Process => {
                let binaries = Binaries::locate(&project);
                state
                    .members
                    .iter()
                    .map(|m| match process::status(&binaries, m) {
                        ProcessStatus::Running => "running",
                        ProcessStatus::Paused => "paused",
                        ProcessStatus::Gone => "stopped",
                    })
                    .map(str::to_string)
                    .collect()
            }
        };
        let file = state.cluster_file();
        let described = std::iter::once(&file.canonical).chain(&file.nodes);
        for (member, status) in described.zip(&states) {
            println!(
                "  {:<width$}  {:<8}  {:<15}  {}",
                member.name, status, member.quic, member.metrics
            );
        }
        if let Some(groups) = &state.partition {
            println!(
                "{}: {} (undo with `cargo xtask heal`)",
                if state.partition_one_way {
                    "cut one way"
                } else {
                    "partitioned"
                },
                partition::describe(groups, state.partition_one_way)
            );
        }
        for (index, shaping) in &state.netem {
            println!(
                "netem on {}: {} ({}; undo with `cargo xtask netem {} --clear`)",
                member_name(&state.prefix, *index),
                shaping.shape.describe(),
                shaping.mechanism(),
                if *index == 0 {
                    "canonical".to_string()
                } else {
                    index.to_string()
                }
            );
        }
        println!();
        let client = client::binary(&project)?;
        let status = Command::new(&client)
            .arg("status")
            .arg("--cluster")
            .arg(&project.cluster_dir)
            .status()
            .map_err(|e| anyhow::anyhow!("running {}: {e}", client.display()))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(Exit(code.clamp(1, 255) as u8).into()),
            None => Err(Exit(1).into()),
        }
    }
}
