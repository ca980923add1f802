//! The configured edges and what follows from them: the majority size, and which node owns
//! which term.
//!
//! Terms are dealt out round-robin: term `t` belongs to node `(t - 1) % highest + 1`, so node 5
//! of 5 stands in terms 5, 10, 15, … and node 2 in 2, 7, 12, …. A candidate only ever stands in
//! a term it owns and voters refuse any other, so two different nodes can never lead the same
//! term even if a restarted voter, having forgotten its vote, votes twice in one term.

use wire::{NodeIndex, Term};

/// The fixed set of configured edges, sorted by index, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Members {
    indices: Vec<NodeIndex>,
}

impl Members {
    /// The configured edges: `configured` plus `me` (added if the list forgot it), deduplicated.
    pub fn new(me: NodeIndex, configured: impl IntoIterator<Item = NodeIndex>) -> Members {
        let mut indices: Vec<NodeIndex> = configured.into_iter().collect();
        indices.push(me);
        indices.sort_unstable();
        indices.dedup();
        Members { indices }
    }

    /// Whether `index` is a configured edge.
    pub fn contains(&self, index: NodeIndex) -> bool {
        self.indices.binary_search(&index).is_ok()
    }

    /// How many configured edges make a majority: `N / 2 + 1`, counting the node itself.
    pub fn majority(&self) -> usize {
        self.indices.len() / 2 + 1
    }

    /// The highest configured index; it is also the stride of term ownership.
    pub fn highest(&self) -> NodeIndex {
        // `new` always pushes `me`, so the list is never empty.
        self.indices.last().copied().unwrap_or(NodeIndex(1))
    }

    /// The configured edges other than `me`.
    pub fn others(&self, me: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.indices
            .iter()
            .copied()
            .filter(move |&index| index != me)
    }

    /// The configured edges with an index above `me`: the ones a Bully probe goes to.
    pub fn higher_than(&self, me: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.indices
            .iter()
            .copied()
            .filter(move |&index| index > me)
    }

    /// The only node that may stand as candidate (and so lead) in `term`; none for term 0,
    /// the term every node starts in.
    pub fn owner_of(&self, term: Term) -> Option<NodeIndex> {
        let stride = u64::from(self.highest().0.max(1));
        let offset = term.0.checked_sub(1)? % stride;
        // `offset < stride <= u16::MAX`, so the index fits.
        Some(NodeIndex(u16::try_from(offset + 1).ok()?))
    }

    /// The lowest term above `after` that `me` owns, or `None` if the term space is exhausted
    /// (only reachable if a peer sent a term near `u64::MAX`).
    pub fn next_term_of(&self, me: NodeIndex, after: Term) -> Option<Term> {
        let stride = u64::from(self.highest().0.max(1));
        let own = u64::from(me.0);
        let round_start = after.0 - after.0 % stride;
        let candidate = round_start.checked_add(own)?;
        let term = if candidate > after.0 {
            candidate
        } else {
            candidate.checked_add(stride)?
        };
        Some(Term(term))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five() -> Members {
        Members::new(NodeIndex(3), (1..=5).map(NodeIndex))
    }

    #[test]
    fn majority_counts_every_configured_edge() {
        assert_eq!(five().majority(), 3);
        assert_eq!(Members::new(NodeIndex(1), []).majority(), 1);
        assert_eq!(
            Members::new(NodeIndex(1), (1..=4).map(NodeIndex)).majority(),
            3
        );
    }

    #[test]
    fn each_term_has_exactly_one_owner() {
        let members = five();
        assert_eq!(members.owner_of(Term(0)), None);
        for term in 1..=30 {
            let owner = members.owner_of(Term(term)).map(|index| index.0);
            assert_eq!(owner, Some(((term - 1) % 5 + 1) as u16), "term {term}");
        }
    }

    #[test]
    fn next_term_is_owned_and_strictly_higher() {
        let members = five();
        for me in 1..=5 {
            for after in 0..=25 {
                let next = members.next_term_of(NodeIndex(me), Term(after));
                let next = next.map(|term| term.0).unwrap_or(0);
                assert!(next > after && next <= after + 5, "me {me} after {after}");
                assert_eq!(members.owner_of(Term(next)), Some(NodeIndex(me)));
            }
        }
    }

    #[test]
    fn every_member_owns_terms_above_any_term_a_node_can_hold() {
        // The largest possible cluster; a node holds at most the ceiling, or a term it stood
        // in from there (one round above it).
        let members = Members::new(NodeIndex(1), (1..=u16::MAX).map(NodeIndex));
        let highest_held = Term(crate::TERM_CEILING + u64::from(u16::MAX));
        for me in [1, 2, u16::MAX - 1, u16::MAX] {
            let next = members.next_term_of(NodeIndex(me), highest_held);
            assert!(next.is_some_and(|next| next > highest_held), "node {me}");
        }
    }

    #[test]
    fn exhausted_term_space_is_not_a_panic() {
        assert_eq!(five().next_term_of(NodeIndex(5), Term(u64::MAX)), None);
    }
}
