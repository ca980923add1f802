//! `cargo xtask partition 1,2 3,4,5`, `partition --one-way 1 2` and `heal`: cut the network
//! between groups of nodes, both ways or one way.
//!
//! Nodes have no NET_ADMIN, so the cut is made from the host: in each node container's network
//! namespace (`nsenter -t <pid> -n`), an nftables table `inet flotilla_partition` drops packets
//! arriving from the addresses of nodes it is cut off from. Dropping on input only means a
//! sender sees silence (as on a real cut) rather than an error from its own kernel, and it is
//! what makes a one-way cut possible: for `--one-way A B` only the nodes of B get a table
//! (dropping what comes from A), so B's packets still reach A. For a plain partition every
//! partitioned node gets one, so both directions are cut. Nodes in no group, the canonical and
//! the client keep talking to everyone. `heal` deletes exactly that table; Docker's own rules
//! (the embedded DNS in the `ip nat` table) are never touched.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use xshell::{cmd, Shell};

use crate::docker::{self, Container};
use crate::project::Project;
use crate::state::State;
use crate::tools;
use crate::UsageError;

/// The nftables table xtask owns inside a node's network namespace.
const TABLE: &str = "flotilla_partition";

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

/// One group of node indices: `1,2`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Group(Vec<u16>);

impl FromStr for Group {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(|part| {
                part.parse::<wire::NodeIndex>()
                    .map(|index| index.0)
                    .map_err(|_| format!("`{text}` is not a group of node indices such as 1,2"))
            })
            .collect::<Result<Vec<u16>, String>>()
            .map(Group)
    }
}

impl Partition {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let mut state = State::require(&project.cluster_dir)?;
        state.require_docker("partition")?;
        let groups: Vec<Vec<u16>> = self.groups.into_iter().map(|g| g.0).collect();
        if self.one_way && groups.len() != 2 {
            return Err(UsageError(format!(
                "--one-way takes exactly two groups, FROM and TO (e.g. `partition --one-way 1 2`), not {}",
                groups.len()
            ))
            .into());
        }
        check_groups(&groups, state.node_count())?;
        let described = describe(&groups, self.one_way);
        state.partition = Some(groups);
        state.partition_one_way = self.one_way;
        apply(sh, &state)?;
        state.save(&project.cluster_dir)?;
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
        let project = Project::locate()?;
        let mut state = State::require(&project.cluster_dir)?;
        state.require_docker("heal")?;
        tools::ensure(sh, "nsenter", "util-linux")?;
        tools::ensure(sh, "nft", "nftables")?;
        let mut healed = 0;
        for container in reachable_nodes(sh, &state)? {
            if remove_table(sh, &container)? {
                healed += 1;
            }
        }
        let was = state.partition.take();
        state.partition_one_way = false;
        state.save(&project.cluster_dir)?;
        match (was, healed) {
            (None, 0) => println!("no partition to heal"),
            _ => println!("healed: every node reaches every other again"),
        }
        Ok(())
    }
}

/// Every index is a node of the cluster and appears in one group only.
fn check_groups(groups: &[Vec<u16>], node_count: u16) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    for index in groups.iter().flatten() {
        if *index > node_count {
            return Err(UsageError(format!(
                "there is no node {index}: the cluster has nodes 1 to {node_count}"
            ))
            .into());
        }
        if !seen.insert(*index) {
            return Err(UsageError(format!("node {index} is in more than one group")).into());
        }
    }
    Ok(())
}

/// `1,2 | 3,4,5`, or `1 -> 2` for a one-way cut.
pub fn describe(groups: &[Vec<u16>], one_way: bool) -> String {
    groups
        .iter()
        .map(|g| g.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
        .collect::<Vec<_>>()
        .join(if one_way { " -> " } else { " | " })
}

/// For every node in a group, the nodes whose packets it drops: those of every other group,
/// or, one way, the first group's for the nodes of the second (and none for the first).
fn blocked_sources(groups: &[Vec<u16>], one_way: bool) -> BTreeMap<u16, Vec<u16>> {
    let mut blocked = BTreeMap::new();
    for (position, group) in groups.iter().enumerate() {
        let sources: Vec<u16> = if one_way {
            match position {
                1 => groups[0].clone(),
                _ => Vec::new(),
            }
        } else {
            groups
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != position)
                .flat_map(|(_, g)| g.iter().copied())
                .collect()
        };
        for index in group {
            blocked.insert(*index, sources.clone());
        }
    }
    blocked
}

/// Node containers with a network namespace to enter (running or paused).
fn reachable_nodes(sh: &Shell, state: &State) -> anyhow::Result<Vec<Container>> {
    Ok(docker::containers(sh, Some(&state.prefix))?
        .into_iter()
        .filter(|c| c.index > 0 && c.pid > 0)
        .collect())
}

/// Installs `state.partition` in every node's namespace, replacing any earlier table.
pub fn apply(sh: &Shell, state: &State) -> anyhow::Result<()> {
    let Some(groups) = &state.partition else {
        return Ok(());
    };
    tools::ensure(sh, "nsenter", "util-linux")?;
    tools::ensure(sh, "nft", "nftables")?;
    let nodes = reachable_nodes(sh, state)?;
    let address = |index: u16| {
        nodes
            .iter()
            .find(|c| c.index == index)
            .and_then(|c| c.ip.clone())
    };
    for (index, sources) in blocked_sources(groups, state.partition_one_way) {
        let Some(container) = nodes.iter().find(|c| c.index == index) else {
            eprintln!("node {index} is not running; it gets the partition when restarted");
            continue;
        };
        remove_table(sh, container)?;
        let addresses: Vec<String> = sources.iter().filter_map(|i| address(*i)).collect();
        if addresses.is_empty() {
            continue;
        }
        let script = rules(&addresses);
        let pid = container.pid.to_string();
        cmd!(sh, "nsenter --target {pid} --net nft --file -")
            .quiet()
            .stdin(script)
            .run()
            .map_err(|e| anyhow::anyhow!("cutting node {index} off with nft failed: {e}"))?;
    }
    Ok(())
}

/// The nftables script dropping traffic that arrives from `addresses` (with a counter, so
/// `nft list table inet flotilla_partition` shows how much was cut).
fn rules(addresses: &[String]) -> String {
    let set = addresses.join(", ");
    format!(
        "table inet {TABLE} {{\n\
         \tchain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} counter drop; }}\n\
         }}\n"
    )
}

/// Deletes xtask's table from a container's namespace; true when there was one.
fn remove_table(sh: &Shell, container: &Container) -> anyhow::Result<bool> {
    let pid = container.pid.to_string();
    let tables = cmd!(sh, "nsenter --target {pid} --net nft list tables")
        .quiet()
        .read()
        .map_err(|e| anyhow::anyhow!("listing nft tables of {}: {e}", container.name))?;
    if !tables
        .lines()
        .any(|line| line.trim() == format!("table inet {TABLE}"))
    {
        return Ok(false);
    }
    cmd!(
        sh,
        "nsenter --target {pid} --net nft delete table inet {TABLE}"
    )
    .quiet()
    .run()
    .map_err(|e| anyhow::anyhow!("removing the partition from {}: {e}", container.name))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_parse_and_are_checked() {
        assert_eq!("1,2".parse(), Ok(Group(vec![1, 2])));
        assert!("1,,2".parse::<Group>().is_err());
        assert!("0".parse::<Group>().is_err());
        assert!(check_groups(&[vec![1, 2], vec![3]], 3).is_ok());
        assert!(check_groups(&[vec![1, 2], vec![4]], 3).is_err());
        assert!(check_groups(&[vec![1, 2], vec![2]], 3).is_err());
        assert_eq!(describe(&[vec![1, 2], vec![3, 4, 5]], false), "1,2 | 3,4,5");
        assert_eq!(describe(&[vec![1], vec![2]], true), "1 -> 2");
    }

    #[test]
    fn a_partition_cuts_both_ways_and_a_one_way_cut_only_one() {
        let groups = [vec![1, 2], vec![3, 4, 5]];
        let both = blocked_sources(&groups, false);
        assert_eq!(both[&1], vec![3, 4, 5]);
        assert_eq!(both[&4], vec![1, 2]);
        let one_way = blocked_sources(&[vec![1], vec![2, 3]], true);
        assert_eq!(one_way[&1], Vec::<u16>::new());
        assert_eq!(one_way[&2], vec![1]);
        assert_eq!(one_way[&3], vec![1]);
        assert!(!one_way.contains_key(&4));
    }

    #[test]
    fn rules_drop_what_arrives_from_the_other_groups() {
        let script = rules(&["172.18.0.4".into(), "172.18.0.5".into()]);
        assert!(script.contains("hook input"));
        assert!(script.contains("ip saddr { 172.18.0.4, 172.18.0.5 } counter drop"));
        assert!(script.starts_with("table inet flotilla_partition {"));
    }
}
