//! The recorded history of a scenario run, as `cargo xtask scenario run` and `scenario sim`
//! write it and `scenario check` reads it: `history.jsonl` in a run folder, one [`Event`] per
//! line after a [`Header`] line. Times are milliseconds since the run started.

use serde::{Deserialize, Serialize};

use crate::ElectionRole;

/// The first line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub scenario: String,
    /// Where it ran: `docker`, `process` or `sim`.
    pub source: String,
    pub nodes: u16,
    pub seed: u64,
    /// Wall-clock start (Unix ms); 0 in a simulation, whose clock is virtual.
    pub started_unix_ms: u64,
    pub duration_ms: u64,
}

/// One observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Op(Op),
    Sample(Sample),
    Fault(Fault),
}

/// One client read, from invocation to completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub invoke_ms: f64,
    pub complete_ms: f64,
    pub id: u64,
    /// The edge that answered, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<u16>,
    pub outcome: OpOutcome,
    /// SHA-256 (hex) of the bytes the client received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// SHA-256 (hex) the canonical signed for this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a read ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpOutcome {
    Hit,
    Miss,
    Error,
}

/// One node's state at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    pub node: u16,
    pub state: NodeState,
}

/// What a node was doing when sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeState {
    Up {
        role: ElectionRole,
        term: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        leader: Option<u16>,
    },
    /// Killed by the scenario.
    Down,
    /// Paused by the scenario.
    Paused,
    /// Running, as far as the scenario knows, but its metrics did not answer.
    Unreachable,
}

/// A fault or repair the scenario made, with what it did to the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_ms: u64,
    /// The step as written, e.g. `kill the leader`.
    pub step: String,
    pub effect: Effect,
}

/// What a fault did, resolved (`leader` replaced by the node that led).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Members stopped; 0 is the canonical.
    Kill {
        members: Vec<u16>,
    },
    /// Members started again.
    Restart {
        members: Vec<u16>,
    },
    Pause {
        nodes: Vec<u16>,
    },
    Resume {
        nodes: Vec<u16>,
    },
    /// The network now drops packets `from -> to` for each of `blocked` (and nothing else).
    Partition {
        cut: String,
        blocked: Vec<[u16; 2]>,
    },
    /// Every partition and netem shape removed.
    Heal,
    Netem {
        nodes: Vec<u16>,
        delay_ms: f64,
        jitter_ms: f64,
        loss: f64,
    },
    /// The step could not be carried out (e.g. `kill leader` with no leader); it changed nothing.
    Skipped {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_written() {
        let events = vec![
            Event::Sample(Sample {
                at_ms: 100,
                node: 3,
                state: NodeState::Up {
                    role: ElectionRole::Leader,
                    term: 7,
                    leader: Some(3),
                },
            }),
            Event::Fault(Fault {
                at_ms: 5000,
                step: "partition majorities-ring".into(),
                effect: Effect::Partition {
                    cut: "1x3".into(),
                    blocked: vec![[1, 3], [3, 1]],
                },
            }),
        ];
        for event in events {
            let line = serde_json::to_string(&event).unwrap();
            assert_eq!(
                serde_json::from_str::<Event>(&line).unwrap(),
                event,
                "{line}"
            );
        }
    }
}
