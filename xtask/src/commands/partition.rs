//! `cargo xtask partition 1,2 3,4,5`, `partition --one-way 1 2` and `heal`: cut the network
//! between groups of nodes, both ways or one way (how: `chaos::partition`).

use chaos::partition::{Cut, Group};
use lab::faults;
use lab::UsageError;
use xshell::Shell;

use crate::cluster::Cluster;

/// Cut the network between groups of nodes, e.g. `partition 1,2 3,4,5`, or one way with
/// `partition --one-way 1 2` (Docker runtime).
#[derive(Debug, clap::Args)]
pub struct Partition {
    /// Two or more comma-separated groups of node indices (with --one-way: exactly two, FROM TO).
    #[arg(value_name = "GROUP", num_args = 2.., required = true)]
    groups: Vec<Group>,
    /// Drop only the packets from the first group to the second; the second still reaches the
    /// first.
    #[arg(long)]
    one_way: bool,
}

/// Undo `partition`: every node reaches every other again (Docker runtime).
#[derive(Debug, clap::Args)]
pub struct Heal {}

impl Partition {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let groups = self.groups.into_iter().map(|g| g.0).collect();
        let cut = Cut::new(groups, self.one_way, cluster.state.node_count())
            .map_err(|e| UsageError(e.to_string()))?;
        let described = cut.describe();
        faults::partition(sh, cluster.runtime.as_ref(), &mut cluster.state, cut)?;
        cluster.save()?;
        if self.one_way {
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
