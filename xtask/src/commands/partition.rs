//! `cargo xtask partition 1,2 3,4,5`, `partition --one-way 1 2`, `partition --preset NAME` and
//! `heal`: cut the network between groups of nodes, both ways or one way, or in one of the
//! preset shapes (how: `chaos::partition`, `chaos::presets`).

use chaos::partition::{Cut, Group};
use chaos::presets::{self, Preset};
use lab::UsageError;
use lab::{failover, faults};
use xshell::Shell;

use crate::cluster::Cluster;

/// Cut the network between groups of nodes, e.g. `partition 1,2 3,4,5`, or one way with
/// `partition --one-way 1 2` (Docker runtime).
#[derive(Debug, clap::Args)]
pub struct Partition {
    /// Two or more comma-separated groups of node indices (with --one-way: exactly two, FROM TO).
    #[arg(value_name = "GROUP", num_args = 2.., required_unless_present = "preset")]
    groups: Vec<Group>,
    /// Drop only the packets from the first group to the second; the second still reaches the
    /// first.
    #[arg(long, conflicts_with = "preset")]
    one_way: bool,
    /// A preset shape instead of groups: majorities-ring, bridge, isolate-leader,
    /// isolate-leader-outbound, isolate-leader-inbound, random-halves.
    #[arg(long, value_name = "NAME", conflicts_with = "groups")]
    preset: Option<Preset>,
    /// Seed of the presets that pick nodes at random (bridge, random-halves).
    #[arg(long, default_value_t = 1, requires = "preset")]
    seed: u64,
}

/// Undo `partition`: every node reaches every other again (Docker runtime).
#[derive(Debug, clap::Args)]
pub struct Heal {}

impl Partition {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let nodes = cluster.state.node_count();
        let cut = match self.preset {
            Some(preset) => {
                let leader = match preset.needs_leader() {
                    true => failover::leader_now(&cluster.state).map(|(leader, _)| leader),
                    false => None,
                };
                presets::cut(preset, nodes, leader, self.seed)
                    .map_err(|e| UsageError(e.to_string()))?
            }
            None => {
                let groups = self.groups.into_iter().map(|g| g.0).collect();
                Cut::new(groups, self.one_way, nodes).map_err(|e| UsageError(e.to_string()))?
            }
        };
        let described = cut.describe();
        faults::partition(sh, cluster.runtime.as_ref(), &mut cluster.state, cut)?;
        cluster.save()?;
        if let Some(preset) = self.preset {
            println!(
                "partitioned as {preset}: {described} (`AxB`: A and B cannot exchange packets, `->`: one way); undo with `cargo xtask heal`"
            );
        } else if self.one_way {
            println!(
                "cut {described} one way: packets from the first group to the second are dropped, the second still reaches the first; undo with `cargo xtask heal`"
            );
        } else {
            println!(
                "partitioned {described}: nodes in different groups cannot exchange packets; undo with `cargo xtask heal`"
            );
        }
        Ok(())
    }
}

impl Heal {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let healed = faults::heal(sh, cluster.runtime.as_ref(), &mut cluster.state)?;
        cluster.save()?;
        match healed {
            false => println!("no partition to heal"),
            true => println!("healed: every node reaches every other again"),
        }
        Ok(())
    }
}
