//! Partition presets: the classic shapes of a broken network, as a pure function of the
//! cluster size, the current leader and a seed, returning the [`Cut`] to make. Used by
//! `cargo xtask partition --preset NAME` and by scenario files.
//!
//! - `majorities-ring`: nodes on a ring each reach their nearest neighbours, enough of them to
//!   see a majority (themselves included), and no two nodes see the same majority. Reachability
//!   is not transitive here, so the cut is made of pairs, not groups.
//! - `bridge`: two halves that cannot reach each other, joined by one node that reaches both.
//! - `isolate-leader`: the leader alone, cut both ways; `isolate-leader-outbound` drops only the
//!   leader's packets to the others, `isolate-leader-inbound` only theirs to the leader.
//! - `random-halves`: the nodes shuffled by the seed and cut into two halves, the smaller first.

use std::fmt;
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::partition::Cut;

/// A named partition shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    MajoritiesRing,
    Bridge,
    IsolateLeader,
    IsolateLeaderOutbound,
    IsolateLeaderInbound,
    RandomHalves,
}

impl Preset {
    /// Every preset, in the order help texts list them.
    pub const ALL: [Preset; 6] = [
        Preset::MajoritiesRing,
        Preset::Bridge,
        Preset::IsolateLeader,
        Preset::IsolateLeaderOutbound,
        Preset::IsolateLeaderInbound,
        Preset::RandomHalves,
    ];

    /// The name as typed: `majorities-ring`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::MajoritiesRing => "majorities-ring",
            Preset::Bridge => "bridge",
            Preset::IsolateLeader => "isolate-leader",
            Preset::IsolateLeaderOutbound => "isolate-leader-outbound",
            Preset::IsolateLeaderInbound => "isolate-leader-inbound",
            Preset::RandomHalves => "random-halves",
        }
    }

    /// `majorities-ring, bridge, …`, for messages that say what to write instead.
    pub fn names() -> String {
        Preset::ALL.map(Preset::name).join(", ")
    }

    /// Whether the cut depends on which node leads.
    pub fn needs_leader(self) -> bool {
        matches!(
            self,
            Preset::IsolateLeader | Preset::IsolateLeaderOutbound | Preset::IsolateLeaderInbound
        )
    }

    /// The smallest cluster the preset makes sense on.
    pub fn min_nodes(self) -> u16 {
        match self {
            Preset::MajoritiesRing => 4,
            Preset::Bridge => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|preset| preset.name() == text)
            .ok_or_else(|| {
                format!(
                    "there is no partition preset `{text}`; use one of {}",
                    Preset::names()
                )
            })
    }
}

/// Why a preset cannot be made on this cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PresetError {
    #[error("`{preset}` needs at least {min} nodes, the cluster has {nodes}")]
    TooFewNodes {
        preset: Preset,
        min: u16,
        nodes: u16,
    },
    #[error(
        "`{0}` isolates the leader, and no node leads now; wait for one (`cargo xtask status`)"
    )]
    NoLeader(Preset),
    #[error("the leader {leader} is not one of the nodes 1 to {nodes}")]
    NoSuchLeader { leader: u16, nodes: u16 },
}

/// The cut `preset` makes on nodes `1..=nodes` with `leader` leading, shuffled by `seed`
/// where the preset picks nodes at random.
pub fn cut(preset: Preset, nodes: u16, leader: Option<u16>, seed: u64) -> Result<Cut, PresetError> {
    if nodes < preset.min_nodes() {
        return Err(PresetError::TooFewNodes {
            preset,
            min: preset.min_nodes(),
            nodes,
        });
    }
    let all: Vec<u16> = (1..=nodes).collect();
    let leader = || -> Result<u16, PresetError> {
        let leader = leader.ok_or(PresetError::NoLeader(preset))?;
        if leader == 0 || leader > nodes {
            return Err(PresetError::NoSuchLeader { leader, nodes });
        }
        Ok(leader)
    };
    let others = |leader: u16| all.iter().copied().filter(|&i| i != leader).collect();
    let cut = match preset {
        Preset::MajoritiesRing => ring(nodes),
        Preset::Bridge => {
            let mut shuffled = all.clone();
            shuffled.shuffle(&mut SmallRng::seed_from_u64(seed));
            // The first shuffled node is the bridge: it keeps every link.
            let halves = &shuffled[1..];
            let (left, right) = halves.split_at(halves.len() / 2);
            let pairs = left
                .iter()
                .flat_map(|&a| right.iter().map(move |&b| [a.min(b), a.max(b)]))
                .collect();
            Cut {
                groups: Vec::new(),
                one_way: false,
                pairs,
            }
        }
        Preset::IsolateLeader => {
            let leader = leader()?;
            Cut {
                groups: vec![vec![leader], others(leader)],
                one_way: false,
                pairs: Vec::new(),
            }
        }
        Preset::IsolateLeaderOutbound => {
            let leader = leader()?;
            Cut {
                groups: vec![vec![leader], others(leader)],
                one_way: true,
                pairs: Vec::new(),
            }
        }
        Preset::IsolateLeaderInbound => {
            let leader = leader()?;
            Cut {
                groups: vec![others(leader), vec![leader]],
                one_way: true,
                pairs: Vec::new(),
            }
        }
        Preset::RandomHalves => {
            let mut shuffled = all;
            shuffled.shuffle(&mut SmallRng::seed_from_u64(seed));
            let (small, large) = shuffled.split_at(shuffled.len() / 2);
            let mut small = small.to_vec();
            let mut large = large.to_vec();
            small.sort_unstable();
            large.sort_unstable();
            Cut {
                groups: vec![small, large],
                one_way: false,
                pairs: Vec::new(),
            }
        }
    };
    Ok(cut)
}

/// Nodes on a ring in index order; each keeps the links to the nodes within `reach` steps
/// either way, the fewest that make itself and its neighbours a majority, and every longer
/// link is cut both ways.
fn ring(nodes: u16) -> Cut {
    let majority = nodes / 2 + 1;
    // Itself plus `reach` nodes on each side make at least a majority: 1 + 2 * reach >= majority.
    let reach = majority / 2;
    let mut pairs = Vec::new();
    for a in 1..=nodes {
        for b in a + 1..=nodes {
            let forward = b - a;
            let distance = forward.min(nodes - forward);
            if distance > reach {
                pairs.push([a, b]);
            }
        }
    }
    Cut {
        groups: Vec::new(),
        one_way: false,
        pairs,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The nodes `me` exchanges packets with both ways, itself included.
    fn sees(cut: &Cut, nodes: u16, me: u16) -> BTreeSet<u16> {
        (1..=nodes)
            .filter(|&other| cut.passes(me, other) && cut.passes(other, me))
            .collect()
    }

    #[test]
    fn in_a_majorities_ring_every_node_sees_a_majority_and_no_two_the_same() {
        for nodes in 4..=11 {
            let cut = cut(Preset::MajoritiesRing, nodes, None, 0).unwrap();
            let majority = usize::from(nodes / 2 + 1);
            let views: Vec<BTreeSet<u16>> = (1..=nodes).map(|me| sees(&cut, nodes, me)).collect();
            for (me, view) in views.iter().enumerate() {
                assert!(
                    view.len() >= majority,
                    "{nodes} nodes: node {} sees {view:?}",
                    me + 1
                );
                assert!(
                    view.len() < usize::from(nodes),
                    "{nodes} nodes: node {} sees all",
                    me + 1
                );
            }
            let distinct: BTreeSet<&BTreeSet<u16>> = views.iter().collect();
            assert_eq!(distinct.len(), views.len(), "{nodes} nodes: {views:?}");
        }
    }

    #[test]
    fn a_bridge_joins_two_halves_that_cannot_reach_each_other() {
        for seed in 0..20 {
            let nodes = 5;
            let cut = cut(Preset::Bridge, nodes, None, seed).unwrap();
            let everyone: Vec<u16> = (1..=nodes).collect();
            let bridges: Vec<u16> = everyone
                .iter()
                .copied()
                .filter(|&me| sees(&cut, nodes, me).len() == usize::from(nodes))
                .collect();
            assert_eq!(bridges.len(), 1, "seed {seed}: {}", cut.describe());
            for &a in &everyone {
                let view = sees(&cut, nodes, a);
                // Each half sees itself and the bridge: 2 + 1 of 5, a majority on each side.
                assert!(view.contains(&bridges[0]));
                if a != bridges[0] {
                    assert_eq!(view.len(), 3, "seed {seed}: node {a} sees {view:?}");
                }
            }
        }
    }

    #[test]
    fn isolate_leader_cuts_the_leader_off_in_the_direction_asked() {
        let both = cut(Preset::IsolateLeader, 5, Some(5), 0).unwrap();
        let outbound = cut(Preset::IsolateLeaderOutbound, 5, Some(5), 0).unwrap();
        let inbound = cut(Preset::IsolateLeaderInbound, 5, Some(5), 0).unwrap();
        for other in 1..=4 {
            assert!(!both.passes(5, other) && !both.passes(other, 5));
            assert!(!outbound.passes(5, other) && outbound.passes(other, 5));
            assert!(inbound.passes(5, other) && !inbound.passes(other, 5));
            assert!(both.passes(other, 1) && outbound.passes(other, 1));
        }
        assert_eq!(
            cut(Preset::IsolateLeader, 5, None, 0),
            Err(PresetError::NoLeader(Preset::IsolateLeader))
        );
    }

    #[test]
    fn random_halves_split_every_node_into_two_halves_fixed_by_the_seed() {
        let first = cut(Preset::RandomHalves, 5, None, 7).unwrap();
        assert_eq!(first, cut(Preset::RandomHalves, 5, None, 7).unwrap());
        let mut all: Vec<u16> = first.groups.concat();
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3, 4, 5]);
        assert_eq!((first.groups[0].len(), first.groups[1].len()), (2, 3));
        let differ = (0..20).any(|seed| cut(Preset::RandomHalves, 5, None, seed).unwrap() != first);
        assert!(differ, "the seed changes which nodes go where");
    }

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_the_others() {
        for preset in Preset::ALL {
            assert_eq!(preset.name().parse::<Preset>(), Ok(preset));
        }
        let error = "ring".parse::<Preset>().unwrap_err();
        assert!(error.contains("majorities-ring, bridge"), "{error}");
        assert!(cut(Preset::MajoritiesRing, 3, None, 0).is_err());
    }
}
