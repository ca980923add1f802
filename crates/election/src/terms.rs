//! Which higher terms a node takes from a message: the step rule that keeps one faulty member
//! from moving the cluster to a term it cannot leave (the crate's protocol notes, "Terms from
//! messages", say why it is safe). Pure: the state machine gathers the inputs.

use wire::Term;

/// How far above the base (the highest term a third member was recently heard to hold) a
/// message may move a node at once, and how far a node that hears no third member may climb
/// per recent window. Larger than a whole round of term ownership of the largest possible
/// cluster (`u16::MAX` edges), far more than an honest cluster goes through between two
/// messages a node hears, and small enough that climbing to [`TERM_CEILING`] one step per
/// message takes 2^47 messages.
pub const MAX_TERM_STEP: u64 = 1 << 16;

/// No term above this is ever taken from a message: no honest node can get there, so such a
/// term is forged. Far below `u64::MAX`, so every member owns terms above any term a node can
/// hold (`next_term_of` never runs out) and no term arithmetic can overflow.
pub const TERM_CEILING: u64 = u64::MAX / 2;

/// What a node knows when a message carries a term above its own.
#[derive(Clone, Copy, Debug)]
pub(super) struct StepInput {
    /// The message's term.
    pub term: Term,
    /// The node's own term, below `term`.
    pub own: Term,
    /// The highest term claimed by a member other than the sender and the node itself that
    /// was heard from within the recent window; `None` if there is no such member.
    pub base: Option<Term>,
    /// Whether the sender owns `term` (it stands or leads in it).
    pub from_owner: bool,
    /// One round of term ownership: the highest configured index.
    pub round: u64,
    /// Whether the node may take a lone step now (it took none within the recent window).
    pub lone_step_allowed: bool,
}

/// What a node does with a message whose term is above its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Move to `term`. If it is the message's term the message is then acted on; if it is
    /// lower (a lone climb towards a far term), the message is not acted on.
    Adopt { term: Term, lone: bool },
    /// Stay in the current term and do not act on the message.
    Refuse,
}

/// The step rule:
/// 1. a term above [`TERM_CEILING`] is refused;
/// 2. a term at most [`MAX_TERM_STEP`] above the base is adopted: a third member holds a term
///    near it, so the sender alone did not make it up;
/// 3. a term at most one round above the node's own, from its owner, is adopted: a candidate's
///    stand or its leadership, as an honest cluster makes them;
/// 4. otherwise the node climbs towards the term by at most [`MAX_TERM_STEP`], at most once per
///    recent window (a lone step: how a node catches up with a member whose term nobody else
///    can vouch for — one that hears only that member, or the rest of a cluster after a
///    faulty member pushed one node far ahead while it was cut off with it);
/// 5. else the message is refused.
pub(super) fn step(input: StepInput) -> Step {
    let StepInput {
        term,
        own,
        base,
        from_owner,
        round,
        lone_step_allowed,
    } = input;
    if term.0 > TERM_CEILING {
        return Step::Refuse;
    }
    let vouched = base.is_some_and(|base| term.0 <= base.0.saturating_add(MAX_TERM_STEP));
    let next_round = from_owner && term.0 <= own.0.saturating_add(round);
    if vouched || next_round {
        return Step::Adopt { term, lone: false };
    }
    if !lone_step_allowed {
        return Step::Refuse;
    }
    let climb = own.0.saturating_add(MAX_TERM_STEP).min(term.0);
    Step::Adopt {
        term: Term(climb),
        lone: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(term: u64, own: u64) -> StepInput {
        StepInput {
            term: Term(term),
            own: Term(own),
            base: None,
            from_owner: false,
            round: 5,
            lone_step_allowed: false,
        }
    }

    fn adopt(term: u64) -> Step {
        Step::Adopt {
            term: Term(term),
            lone: false,
        }
    }

    #[test]
    fn a_term_one_step_above_a_third_members_is_adopted() {
        let near = |term| StepInput {
            base: Some(Term(1000)),
            ..input(term, 10)
        };
        assert_eq!(
            step(near(1000 + MAX_TERM_STEP)),
            adopt(1000 + MAX_TERM_STEP)
        );
        assert_eq!(step(near(1001 + MAX_TERM_STEP)), Step::Refuse);
    }

    #[test]
    fn the_owner_moves_a_node_one_round_on_its_own_word() {
        let owner = |term| StepInput {
            from_owner: true,
            ..input(term, 10)
        };
        assert_eq!(step(owner(15)), adopt(15));
        assert_eq!(step(owner(16)), Step::Refuse);
        assert_eq!(step(input(15, 10)), Step::Refuse, "not from the owner");
    }

    #[test]
    fn a_lone_step_climbs_at_most_one_step() {
        let lone = |term| StepInput {
            lone_step_allowed: true,
            ..input(term, 10)
        };
        let climbed = Step::Adopt {
            term: Term(10 + MAX_TERM_STEP),
            lone: true,
        };
        assert_eq!(step(lone(TERM_CEILING)), climbed);
        let reached = Step::Adopt {
            term: Term(300),
            lone: true,
        };
        assert_eq!(step(lone(300)), reached);
    }

    #[test]
    fn at_most_one_lone_step_per_window() {
        let far = StepInput {
            base: Some(Term(10)),
            ..input(10 * MAX_TERM_STEP, 10)
        };
        assert_eq!(step(far), Step::Refuse);
    }

    #[test]
    fn terms_above_the_ceiling_are_never_taken() {
        for term in [TERM_CEILING + 1, u64::MAX - 1, u64::MAX] {
            let anything = StepInput {
                base: Some(Term(u64::MAX)),
                from_owner: true,
                lone_step_allowed: true,
                ..input(term, TERM_CEILING)
            };
            assert_eq!(step(anything), Step::Refuse, "term {term}");
        }
    }

    #[test]
    fn steps_near_the_top_do_not_overflow() {
        let top = StepInput {
            base: Some(Term(u64::MAX)),
            from_owner: true,
            lone_step_allowed: true,
            round: u64::from(u16::MAX),
            ..input(TERM_CEILING, TERM_CEILING - 1)
        };
        assert_eq!(step(top), adopt(TERM_CEILING));
        let lone = StepInput {
            lone_step_allowed: true,
            ..input(TERM_CEILING, u64::MAX - 1)
        };
        assert!(matches!(step(lone), Step::Adopt { .. }));
    }
}
