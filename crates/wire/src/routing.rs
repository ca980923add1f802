//! Which edges an image id belongs to. The client routes requests with it and the leader
//! replicates with it, so both must rank edges identically: rendezvous (highest-random-weight)
//! hashing over SHA-256, which is stable across processes, platforms and versions.

use sha2::Digest as _;

use crate::ids::{ImageId, NodeIndex};

/// How a client picks the edge for an id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Routing {
    /// Highest-random-weight hashing: adding or losing an edge moves only that edge's ids.
    #[default]
    Rendezvous,
    /// Plain `id % N` over the configured edges, as the older tool did.
    Modulo,
}

/// Weight of `node` for `id`; the highest weight wins.
fn weight(id: ImageId, node: NodeIndex) -> u64 {
    let mut hasher = sha2::Sha256::new();
    hasher.update(id.0.to_be_bytes());
    hasher.update(node.0.to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// `nodes` ordered by preference for `id`: the first is the primary, then the failovers.
pub fn rank(id: ImageId, nodes: &[NodeIndex], routing: Routing) -> Vec<NodeIndex> {
    let mut ranked = nodes.to_vec();
    match routing {
        Routing::Rendezvous => {
            ranked.sort_by_key(|node| std::cmp::Reverse((weight(id, *node), *node)));
        }
        Routing::Modulo => {
            ranked.sort();
            if !ranked.is_empty() {
                let start = (id.0 % ranked.len() as u64) as usize;
                ranked.rotate_left(start);
            }
        }
    }
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(count: u16) -> Vec<NodeIndex> {
        (1..=count).map(NodeIndex).collect()
    }

    #[test]
    fn ranking_is_a_permutation_and_stable() {
        let all = nodes(5);
        let ranked = rank(ImageId(123), &all, Routing::Rendezvous);
        let mut sorted = ranked.clone();
        sorted.sort();
        assert_eq!(sorted, all);
        assert_eq!(ranked, rank(ImageId(123), &all, Routing::Rendezvous));
    }

    #[test]
    fn losing_an_edge_moves_only_its_ids() {
        let all = nodes(5);
        let without_three: Vec<_> = all.iter().copied().filter(|n| n.0 != 3).collect();
        for id in 0..2000 {
            let before = rank(ImageId(id), &all, Routing::Rendezvous)[0];
            let after = rank(ImageId(id), &without_three, Routing::Rendezvous)[0];
            if before.0 != 3 {
                assert_eq!(before, after, "id {id} moved although its edge stayed");
            }
        }
    }

    #[test]
    fn load_spreads_over_every_edge() {
        let all = nodes(5);
        let mut counts = [0u32; 5];
        for id in 0..5000 {
            counts[(rank(ImageId(id), &all, Routing::Rendezvous)[0].0 - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "uneven spread {counts:?}");
    }

    #[test]
    fn modulo_matches_id_mod_n() {
        let all = nodes(4);
        assert_eq!(rank(ImageId(8), &all, Routing::Modulo)[0], NodeIndex(1));
        assert_eq!(rank(ImageId(10), &all, Routing::Modulo)[0], NodeIndex(3));
    }
}
