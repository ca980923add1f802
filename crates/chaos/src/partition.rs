//! Partitions: cut the network between groups of nodes, both ways or one way.
//!
//! Nodes have no NET_ADMIN, so the cut is made from the host: in each node's network
//! namespace (`nsenter -t <pid> -n`), an nftables table `inet flotilla_partition` drops packets
//! arriving from the addresses of nodes it is cut off from. Dropping on input only means a
//! sender sees silence (as on a real cut) rather than an error from its own kernel, and it is
//! what makes a one-way cut possible: for a one-way cut A -> B only the nodes of B get a table
//! (dropping what comes from A), so B's packets still reach A. For a plain partition every
//! partitioned node gets one, so both directions are cut. Nodes in no group, the canonical and
//! the client keep talking to everyone. [`remove_table`] deletes exactly that table; the
//! runtime's own rules (Docker's embedded DNS in the `ip nat` table) are never touched.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::tools;
use crate::FaultTarget;

/// The nftables table Flotilla owns inside a node's network namespace.
const TABLE: &str = "flotilla_partition";

/// A partition as asked for and recorded: groups of node indices, cut from each other both
/// ways, or only the first group's packets to the second (`one_way`); and pairs of nodes cut
/// from each other both ways (`pairs`), which groups cannot say: reachability that is not
/// transitive, as in a ring where every node sees its neighbours but not the far side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub groups: Vec<Vec<u16>>,
    pub one_way: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<[u16; 2]>,
}

/// Why a cut cannot be made as asked: a usage error of whoever asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CutError {
    #[error(
        "--one-way takes exactly two groups, FROM and TO (e.g. `partition --one-way 1 2`), not {0}"
    )]
    OneWayGroups(usize),
    #[error("there is no node {index}: the cluster has nodes 1 to {node_count}")]
    NoSuchNode { index: u16, node_count: u16 },
    #[error("node {0} is in more than one group")]
    InTwoGroups(u16),
}

impl Cut {
    /// A cut over `groups` of a cluster with nodes `1..=node_count`; a usage error when a
    /// group names a node that does not exist, a node is in two groups, or a one-way cut
    /// has other than two groups.
    pub fn new(groups: Vec<Vec<u16>>, one_way: bool, node_count: u16) -> Result<Cut, CutError> {
        if one_way && groups.len() != 2 {
            return Err(CutError::OneWayGroups(groups.len()));
        }
        check_groups(&groups, node_count)?;
        Ok(Cut {
            groups,
            one_way,
            pairs: Vec::new(),
        })
    }

    /// A cut of the links between each of `pairs`, both ways, and no other.
    pub fn of_pairs(pairs: Vec<[u16; 2]>, node_count: u16) -> Result<Cut, CutError> {
        for &index in pairs.iter().flatten() {
            if index == 0 || index > node_count {
                return Err(CutError::NoSuchNode { index, node_count });
            }
        }
        Ok(Cut {
            groups: Vec::new(),
            one_way: false,
            pairs,
        })
    }

    /// `1,2 | 3,4,5`, `1 -> 2` for a one-way cut, `1x3 2x4` for cut pairs.
    pub fn describe(&self) -> String {
        let pairs = self
            .pairs
            .iter()
            .map(|[a, b]| format!("{a}x{b}"))
            .collect::<Vec<_>>()
            .join(" ");
        match (self.groups.is_empty(), pairs.is_empty()) {
            (_, true) => describe(&self.groups, self.one_way),
            (true, false) => pairs,
            (false, false) => format!("{} and {pairs}", describe(&self.groups, self.one_way)),
        }
    }

    /// For every node, the nodes whose packets it drops (only nodes that drop any).
    pub fn blocked_sources(&self) -> BTreeMap<u16, Vec<u16>> {
        let mut blocked = blocked_sources(&self.groups, self.one_way);
        for &[a, b] in &self.pairs {
            for (to, from) in [(a, b), (b, a)] {
                let sources = blocked.entry(to).or_default();
                if !sources.contains(&from) {
                    sources.push(from);
                    sources.sort_unstable();
                }
            }
        }
        blocked.retain(|_, sources| !sources.is_empty());
        blocked
    }

    /// Whether a packet from node `from` reaches node `to` under this cut.
    pub fn passes(&self, from: u16, to: u16) -> bool {
        from == to
            || !self
                .blocked_sources()
                .get(&to)
                .is_some_and(|sources| sources.contains(&from))
    }
}

/// One group of node indices: `1,2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group(pub Vec<u16>);

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

/// Every index is a node of the cluster and appears in one group only.
fn check_groups(groups: &[Vec<u16>], node_count: u16) -> Result<(), CutError> {
    let mut seen = HashSet::new();
    for &index in groups.iter().flatten() {
        if index > node_count {
            return Err(CutError::NoSuchNode { index, node_count });
        }
        if !seen.insert(index) {
            return Err(CutError::InTwoGroups(index));
        }
    }
    Ok(())
}

/// `1,2 | 3,4,5`, or `1 -> 2` for a one-way cut.
fn describe(groups: &[Vec<u16>], one_way: bool) -> String {
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

/// Installs `cut` in the namespace of every node among `nodes` (the running ones, with
/// their addresses), replacing any earlier table. Nodes of the cut that are not among
/// `nodes` are named on stderr: they get the cut when they start again.
pub fn apply(sh: &Shell, cut: &Cut, nodes: &[FaultTarget]) -> anyhow::Result<()> {
    tools::ensure(sh, "nsenter", "util-linux")?;
    tools::ensure(sh, "nft", "nftables")?;
    let address = |index: u16| {
        nodes
            .iter()
            .find(|n| n.index == index)
            .and_then(|n| n.ip.clone())
    };
    for (index, sources) in cut.blocked_sources() {
        let Some(node) = nodes.iter().find(|n| n.index == index) else {
            eprintln!("node {index} is not running; it gets the partition when restarted");
            continue;
        };
        remove_table(sh, node)?;
        let addresses: Vec<String> = sources.iter().filter_map(|i| address(*i)).collect();
        if addresses.is_empty() {
            continue;
        }
        let script = rules(&addresses);
        let pid = node.pid.to_string();
        cmd!(sh, "nsenter --target {pid} --net nft --file -")
            .quiet()
            .stdin(script)
            .run()
            .map_err(|e| anyhow::anyhow!("cutting node {index} off with nft failed: {e}"))?;
    }
    Ok(())
}

/// Removes the partition table from every one of `nodes`; how many had one.
pub fn heal(sh: &Shell, nodes: &[FaultTarget]) -> anyhow::Result<usize> {
    tools::ensure(sh, "nsenter", "util-linux")?;
    tools::ensure(sh, "nft", "nftables")?;
    let mut healed = 0;
    for node in nodes {
        if remove_table(sh, node)? {
            healed += 1;
        }
    }
    Ok(healed)
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

/// Deletes the partition table from a node's namespace; true when there was one.
pub fn remove_table(sh: &Shell, node: &FaultTarget) -> anyhow::Result<bool> {
    let pid = node.pid.to_string();
    let tables = cmd!(sh, "nsenter --target {pid} --net nft list tables")
        .quiet()
        .read()
        .map_err(|e| anyhow::anyhow!("listing nft tables of {}: {e}", node.name))?;
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
    .map_err(|e| anyhow::anyhow!("removing the partition from {}: {e}", node.name))?;
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
    fn cut_pairs_drop_both_ways_between_the_pair_only() {
        let cut = Cut::of_pairs(vec![[1, 3], [2, 4]], 5).unwrap();
        assert!(!cut.passes(1, 3) && !cut.passes(3, 1));
        assert!(!cut.passes(2, 4) && !cut.passes(4, 2));
        assert!(cut.passes(1, 2) && cut.passes(3, 4) && cut.passes(5, 1));
        assert_eq!(cut.describe(), "1x3 2x4");
        assert!(Cut::of_pairs(vec![[1, 6]], 5).is_err());
    }

    #[test]
    fn rules_drop_what_arrives_from_the_other_groups() {
        let script = rules(&["172.18.0.4".into(), "172.18.0.5".into()]);
        assert!(script.contains("hook input"));
        assert!(script.contains("ip saddr { 172.18.0.4, 172.18.0.5 } counter drop"));
        assert!(script.starts_with("table inet flotilla_partition {"));
    }
}
