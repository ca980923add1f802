//! `cargo xtask status`: what runs (containers or processes), the faults in force, then the
//! client's view of every node (role, term, leader, cache).

use std::process::Command;

use lab::client;
use lab::state::member_name;
use xshell::Shell;

use crate::cluster::Cluster;
use crate::Exit;

/// Show the cluster's containers or processes and every node's status.
#[derive(Debug, clap::Args)]
pub struct Status {}

impl Status {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let cluster = Cluster::open()?;
        let state = &cluster.state;
        let statuses = cluster.runtime.statuses(sh, state)?;
        let placements = cluster.runtime.placements(sh, state);
        let width = state
            .members
            .iter()
            .map(|m| m.name.len())
            .max()
            .unwrap_or(4);
        println!("cluster `{}` on {}", state.prefix, state.runtime);
        // On a runtime that spans machines, which machine runs each member.
        let machine_width = placements
            .values()
            .map(|p| p.machine.len())
            .max()
            .map(|width| width.max("machine".len()));
        let machine = |text: &str| match machine_width {
            Some(width) => format!("{text:<width$}  "),
            None => String::new(),
        };
        let file = state.cluster_file();
        let quic_width = std::iter::once(&file.canonical)
            .chain(&file.nodes)
            .map(|m| m.quic.len())
            .max()
            .unwrap_or(0)
            .max("QUIC (udp)".len());
        println!(
            "  {:<width$}  {:<8}  {}{:<quic_width$}  metrics",
            "name",
            "state",
            machine("machine"),
            "QUIC (udp)"
        );
        let described = std::iter::once(&file.canonical).chain(&file.nodes);
        for (member, status) in described.zip(&statuses) {
            let placed = placements
                .get(&member.index)
                .map_or("-", |p| p.machine.as_str());
            println!(
                "  {:<width$}  {:<8}  {}{:<quic_width$}  {}",
                member.name,
                status.to_string(),
                machine(placed),
                member.quic,
                member.metrics
            );
        }
        if let Some(cut) = state.cut() {
            println!(
                "{}: {} (undo with `cargo xtask heal`)",
                if cut.one_way {
                    "cut one way"
                } else {
                    "partitioned"
                },
                cut.describe()
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
        let client = client::binary(&cluster.project)?;
        let status = Command::new(&client)
            .arg("status")
            .arg("--cluster")
            .arg(&cluster.project.cluster_dir)
            .status()
            .map_err(|e| anyhow::anyhow!("running {}: {e}", client.display()))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(Exit(code.clamp(1, 255) as u8).into()),
            None => Err(Exit(1).into()),
        }
    }
}
