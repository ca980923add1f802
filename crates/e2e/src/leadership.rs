//! Who leads whom, read from the rows of `client status --json`: a group led by one node in
//! one term, a group with no leader, exactly one leader named by everyone. Each check returns
//! the rows described in one line when it does not hold, so that a wait that times out says
//! what the cluster looked like last. The rows are wire's own [`StatusRow`], the type the
//! client writes them with.

use wire::status::StatusRow;

/// `1: follower t9 -> 5` for every row, for messages.
pub fn describe(rows: &[StatusRow]) -> String {
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
pub fn led_by(
    rows: &[StatusRow],
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
pub fn leaderless(rows: &[StatusRow], members: &[u16]) -> Result<(), String> {
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
pub fn one_leader(rows: &[StatusRow]) -> Result<(u16, u64), String> {
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

    fn row(index: u16, term: u64, leader: Option<u16>) -> StatusRow {
        StatusRow {
            index,
            name: format!("e2e_node_{index}"),
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
            ..StatusRow::default()
        }
    }

    #[test]
    fn leadership_checks_read_the_status_rows() {
        let agreed: Vec<StatusRow> = (1..=5).map(|i| row(i, 5, Some(5))).collect();
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

    #[test]
    fn status_json_rows_parse() {
        let rows: Vec<StatusRow> = serde_json::from_str(
            r#"[{"index": 1, "name": "x_node_1", "reachable": true, "role": "follower",
                 "term": 3, "leader": 5, "rtt_ms": 0.4},
                {"index": 2, "name": "x_node_2", "reachable": false}]"#,
        )
        .expect("the sample is valid JSON");
        assert_eq!(describe(&rows), "1: follower t3 -> 5, 2: unreachable");
    }
}
