//! End-to-end steps on the election, read through `client status --json`: the highest node
//! leads, a killed leader is replaced in a higher term while cached images stay servable, a
//! returning higher node takes over again (Bully), a minority partition has no leader while
//! the majority keeps one, and after `heal` exactly one leader is named by every node.

use anyhow::Context;

use super::{NodeStatus, Suite, COMMAND_TIMEOUT, COMPARED_IDS, ELECTION_DEADLINE, NODES};

impl Suite<'_> {
    pub(super) fn highest_leads(&self) -> anyhow::Result<()> {
        let everyone: Vec<u16> = (1..=NODES).collect();
        let term = self.wait_until(
            &format!("node {NODES} leading, named by every node"),
            ELECTION_DEADLINE,
            || Ok(led_by(&self.status()?, &everyone, NODES, None)),
        )?;
        eprintln!("node {NODES} leads term {term}");
        Ok(())
    }

    pub(super) fn kill_leader(&self) -> anyhow::Result<()> {
        let everyone: Vec<u16> = (1..=NODES).collect();
        let old_term = self.wait_until(
            &format!("node {NODES} leading every node before the kill"),
            ELECTION_DEADLINE,
            || Ok(led_by(&self.status()?, &everyone, NODES, None)),
        )?;
        self.xtask_ok(&["kill", &NODES.to_string()], COMMAND_TIMEOUT)?;
        // While the survivors elect a new leader, images cached earlier must still be served
        // (the client may retry on another edge, but no request may fail).
        for id in COMPARED_IDS {
            let out = self.work.join(format!("during-failover-{id}"));
            self.client_ok(
                &[
                    "get-image",
                    &id.to_string(),
                    "-o",
                    &out.display().to_string(),
                ],
                &self.work,
            )
            .with_context(|| format!("fetching cached image {id} while the leader is down"))?;
        }
        let survivors: Vec<u16> = (1..NODES).collect();
        let next = NODES - 1;
        let new_term = self.wait_until(
            &format!("node {next} leading nodes 1 to {next} in a term above {old_term}"),
            ELECTION_DEADLINE,
            || Ok(led_by(&self.status()?, &survivors, next, Some(old_term))),
        )?;
        eprintln!("node {next} leads term {new_term} (node {NODES} led term {old_term})");
        Ok(())
    }

    pub(super) fn restart_leader(&self) -> anyhow::Result<()> {
        let survivors: Vec<u16> = (1..NODES).collect();
        let old_term = self.wait_until(
            &format!(
                "node {} leading nodes 1 to {} before the restart",
                NODES - 1,
                NODES - 1
            ),
            ELECTION_DEADLINE,
            || Ok(led_by(&self.status()?, &survivors, NODES - 1, None)),
        )?;
        self.xtask_ok(&["restart", &NODES.to_string()], COMMAND_TIMEOUT)?;
        let everyone: Vec<u16> = (1..=NODES).collect();
        let term = self.wait_until(
            &format!("node {NODES} leading every node again in a term above {old_term}"),
            ELECTION_DEADLINE,
            || Ok(led_by(&self.status()?, &everyone, NODES, Some(old_term))),
        )?;
        eprintln!("node {NODES} leads again, term {term}");
        Ok(())
    }

    pub(super) fn partition(&self) -> anyhow::Result<()> {
        self.xtask_ok(&["partition", "1,2", "3,4,5"], COMMAND_TIMEOUT)?;
        anyhow::ensure!(
            self.has_partition_table(1)?,
            "node 1 has no partition rules"
        );
        anyhow::ensure!(
            self.has_partition_table(5)?,
            "node 5 has no partition rules"
        );
        let term = self.wait_until(
            "nodes 1 and 2 without a leader, node 5 leading 3, 4 and 5",
            ELECTION_DEADLINE,
            || {
                let rows = self.status()?;
                Ok(leaderless(&rows, &[1, 2]).and_then(|()| led_by(&rows, &[3, 4, 5], 5, None)))
            },
        )?;
        eprintln!("minority 1,2 has no leader; node 5 leads 3,4,5 in term {term}");
        self.xtask_ok(&["heal"], COMMAND_TIMEOUT)?;
        for index in 1..=NODES {
            anyhow::ensure!(
                !self.has_partition_table(index)?,
                "node {index} keeps partition rules after heal"
            );
        }
        self.one_agreed_leader()?;
        self.ping_all()
    }

    /// Waits until exactly one node leads and every node names it; returns (leader, term).
    pub(super) fn one_agreed_leader(&self) -> anyhow::Result<(u16, u64)> {
        let (leader, term) = self.wait_until(
            "exactly one leader, named by every node",
            ELECTION_DEADLINE,
            || Ok(one_leader(&self.status()?)),
        )?;
        eprintln!("one leader: node {leader}, term {term}");
        Ok((leader, term))
    }
}

/// `1: follower t9 → 5` for every row, for messages.
fn describe(rows: &[NodeStatus]) -> String {
    rows.iter()
        .map(|r| match r.reachable {
            false => format!("{}: unreachable", r.index),
            true => format!(
                "{}: {} t{} -> {}",
                r.index,
                r.role.as_deref().unwrap_or("?"),
                r.term.map_or("?".to_string(), |t| t.to_string()),
                r.leader.map_or("none".to_string(), |l| l.to_string())
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Ok(term)` when every node of `members` answers, names `leader`, and is in one term
/// (above `above` if given), and `leader` itself says it leads.
fn led_by(
    rows: &[NodeStatus],
    members: &[u16],
    leader: u16,
    above: Option<u64>,
) -> Result<u64, String> {
    let mut terms = Vec::new();
    for index in members {
        let row = rows
            .iter()
            .find(|r| r.index == *index && r.reachable)
            .ok_or_else(|| format!("node {index} does not answer ({})", describe(rows)))?;
        if row.leader != Some(leader) {
            return Err(describe(rows));
        }
        if *index == leader && row.role.as_deref() != Some("leader") {
            return Err(describe(rows));
        }
        terms.push(row.term.unwrap_or(0));
    }
    let term = terms.first().copied().unwrap_or(0);
    if terms.iter().any(|t| *t != term) || above.is_some_and(|above| term <= above) {
        return Err(describe(rows));
    }
    Ok(term)
}

/// `Ok(())` when every node of `members` answers, knows no leader and does not lead.
fn leaderless(rows: &[NodeStatus], members: &[u16]) -> Result<(), String> {
    let settled = members.iter().all(|index| {
        rows.iter().any(|r| {
            r.index == *index
                && r.reachable
                && r.leader.is_none()
                && r.role.as_deref() != Some("leader")
        })
    });
    if settled {
        Ok(())
    } else {
        Err(describe(rows))
    }
}

/// `Ok((leader, term))` when every node answers, exactly one leads, and all name it.
fn one_leader(rows: &[NodeStatus]) -> Result<(u16, u64), String> {
    let leaders: Vec<u16> = rows
        .iter()
        .filter(|r| r.role.as_deref() == Some("leader"))
        .map(|r| r.index)
        .collect();
    let [leader] = leaders.as_slice() else {
        return Err(describe(rows));
    };
    let everyone: Vec<u16> = rows.iter().map(|r| r.index).collect();
    led_by(rows, &everyone, *leader, None).map(|term| (*leader, term))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: u16, term: u64, leader: Option<u16>) -> NodeStatus {
        NodeStatus {
            index,
            reachable: true,
            role: Some(
                if leader == Some(index) {
                    "leader"
                } else {
                    "follower"
                }
                .to_string(),
            ),
            term: Some(term),
            leader,
            rtt_ms: Some(1.0),
        }
    }

    #[test]
    fn leadership_checks_read_the_status_rows() {
        let agreed: Vec<NodeStatus> = (1..=5).map(|i| row(i, 5, Some(5))).collect();
        assert_eq!(led_by(&agreed, &[1, 2, 3, 4, 5], 5, None), Ok(5));
        assert!(led_by(&agreed, &[1, 2, 3, 4, 5], 5, Some(5)).is_err());
        assert_eq!(one_leader(&agreed), Ok((5, 5)));
        let split = vec![
            row(1, 9, None),
            row(2, 9, None),
            row(3, 10, Some(5)),
            row(4, 10, Some(5)),
            row(5, 10, Some(5)),
        ];
        assert_eq!(leaderless(&split, &[1, 2]), Ok(()));
        assert!(leaderless(&split, &[1, 3]).is_err());
        assert_eq!(led_by(&split, &[3, 4, 5], 5, None), Ok(10));
        assert!(one_leader(&split).is_err());
        let mut down = agreed.clone();
        down[4].reachable = false;
        assert!(led_by(&down, &[1, 2, 3, 4, 5], 5, None).is_err());
        let mut two = agreed;
        two[3].role = Some("leader".to_string());
        assert!(one_leader(&two).is_err());
    }
}
