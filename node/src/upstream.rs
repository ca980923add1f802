//! Where a missing image comes from, decided without IO: [`plan_upstream`] looks at the
//! election view, who asked, and how asking the leader has gone so far, and says what to do
//! next. The fetch loop in `fetch.rs` carries the plan out and asks again whenever something
//! changes (the leader answered with an error, the view moved).

use election::View;
use wire::{NodeIndex, Role};

/// How the request to the leader has gone so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// The leader has not been asked.
    Nobody,
    /// This leader was asked and has not answered yet.
    Waiting(NodeIndex),
    /// This leader was asked and failed (connection lost, error reply other than not-found).
    Failed(NodeIndex),
}

/// What the fetch does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Ask this leader (the origin shield).
    AskLeader(NodeIndex),
    /// Keep waiting for the leader already asked: it is alive and still leads, so it is
    /// fetching from the origin for us, and asking the origin too would duplicate that.
    Wait,
    /// Fetch from the canonical directly.
    AskCanonical,
}

/// The next step of one upstream fetch on edge `me` for a request from `requester`.
///
/// - No leader, or this edge leads: the canonical.
/// - An edge asked us: the canonical. An edge only asks the node it believes leads, so we act
///   as the shield and never forward, and a stale view cannot bounce a request between edges.
/// - A leader that has not been asked: ask it.
/// - The leader asked is still the leader and has not answered: wait, however slow the
///   origin behind it is (the fetch's budget bounds the wait).
/// - The leader asked failed: the canonical, unless another leader has been elected since.
/// - The leader asked is no longer the leader: ask the new one, or the canonical if none.
pub fn plan_upstream(view: &View, requester: Role, me: NodeIndex, asked: Asked) -> Plan {
    if requester != Role::Client {
        return Plan::AskCanonical;
    }
    let Some(leader) = view.leader.filter(|leader| *leader != me) else {
        return Plan::AskCanonical;
    };
    match asked {
        Asked::Nobody => Plan::AskLeader(leader),
        Asked::Waiting(asked) if asked == leader => Plan::Wait,
        Asked::Failed(asked) if asked == leader => Plan::AskCanonical,
        // The view moved to another leader since we asked: that one is the shield now.
        Asked::Waiting(_) | Asked::Failed(_) => Plan::AskLeader(leader),
    }
}

#[cfg(test)]
mod tests {
    use wire::{ElectionRole, Term};

    use super::*;

    const ME: NodeIndex = NodeIndex(2);

    fn led_by(leader: Option<u16>) -> View {
        View {
            role: if leader == Some(ME.0) {
                ElectionRole::Leader
            } else {
                ElectionRole::Follower
            },
            term: Term(7),
            leader: leader.map(NodeIndex),
        }
    }

    #[test]
    fn plans_for_every_case() {
        let five = NodeIndex(5);
        let client = Role::Client;
        let edge = Role::Node(NodeIndex(3));
        let cases = [
            // (what happened, view, requester, asked, plan)
            (
                "leader, not asked yet",
                led_by(Some(5)),
                client,
                Asked::Nobody,
                Plan::AskLeader(five),
            ),
            (
                "no leader",
                led_by(None),
                client,
                Asked::Nobody,
                Plan::AskCanonical,
            ),
            (
                "this edge leads",
                led_by(Some(2)),
                client,
                Asked::Nobody,
                Plan::AskCanonical,
            ),
            (
                "requester is an edge",
                led_by(Some(5)),
                edge,
                Asked::Nobody,
                Plan::AskCanonical,
            ),
            (
                "the canonical asks",
                led_by(Some(5)),
                Role::Canonical,
                Asked::Nobody,
                Plan::AskCanonical,
            ),
            (
                "leader slow, still leads",
                led_by(Some(5)),
                client,
                Asked::Waiting(five),
                Plan::Wait,
            ),
            (
                "leader failed",
                led_by(Some(5)),
                client,
                Asked::Failed(five),
                Plan::AskCanonical,
            ),
            (
                "leader replaced while waiting",
                led_by(Some(4)),
                client,
                Asked::Waiting(five),
                Plan::AskLeader(NodeIndex(4)),
            ),
            (
                "leader replaced after failing",
                led_by(Some(4)),
                client,
                Asked::Failed(five),
                Plan::AskLeader(NodeIndex(4)),
            ),
            (
                "leader lost while waiting",
                led_by(None),
                client,
                Asked::Waiting(five),
                Plan::AskCanonical,
            ),
            (
                "this edge took over while waiting",
                led_by(Some(2)),
                client,
                Asked::Waiting(five),
                Plan::AskCanonical,
            ),
        ];
        for (case, view, requester, asked, expected) in cases {
            assert_eq!(
                plan_upstream(&view, requester, ME, asked),
                expected,
                "{case}"
            );
        }
    }
}
