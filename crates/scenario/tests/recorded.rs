//! The checker on a history that `cargo xtask scenario run` recorded (on the process runtime:
//! 3 nodes, the leader killed and restarted, a node paused, 450 reads; the same run the
//! report's browser test draws): as recorded it passes, and each of the three things no run
//! may show — two leaders in one term, a corrupt read, a leader on a partition's minority
//! side — put into it is caught with its own message.

use std::path::Path;
use std::time::Duration;

use scenario::{check, runs, History, Scenario};
use wire::history::{Effect, Event, Fault, NodeState, OpOutcome, Sample};
use wire::ElectionRole;

fn recorded() -> (Scenario, History) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/browser-fixture");
    runs::read(&dir).unwrap()
}

/// The first sample of `node` leading, as (time, term).
fn first_lead(history: &History, node: u16) -> (u64, u64) {
    history
        .events
        .iter()
        .find_map(|event| match event {
            Event::Sample(Sample {
                at_ms,
                node: sampled,
                state:
                    NodeState::Up {
                        role: ElectionRole::Leader,
                        term,
                        ..
                    },
            }) if *sampled == node => Some((*at_ms, *term)),
            _ => None,
        })
        .expect("the node led")
}

#[test]
fn the_recorded_run_passes_with_its_figures() {
    let (scenario, history) = recorded();
    assert_eq!(history.header.source, "process");
    let verdict = check(&scenario, &history);
    assert!(verdict.passed(), "{:?}", verdict.first());
    assert_eq!(verdict.summary.reads, 450);
    assert_eq!(verdict.summary.errors, 0);
    // Node 3 led, was killed, node 2 took over, node 3 came back and led again.
    assert_eq!(verdict.summary.elections, 3);
    assert_eq!(verdict.summary.failovers_ms.len(), 1);
}

#[test]
fn two_leaders_in_one_term_are_caught_in_a_recorded_run() {
    let (scenario, mut history) = recorded();
    let (at_ms, term) = first_lead(&history, 3);
    history.events.push(Event::Sample(Sample {
        at_ms: at_ms + 500,
        node: 1,
        state: NodeState::Up {
            role: ElectionRole::Leader,
            term,
            leader: Some(1),
        },
    }));
    let first = check(&scenario, &history).first().unwrap().to_string();
    let expected = format!(
        "node 1 leads term {term}, which node 3 led at {:.3} s: two leaders in one term",
        at_ms as f64 / 1000.0
    );
    assert!(first.ends_with(&expected), "{first}");
}

#[test]
fn a_corrupt_read_is_caught_in_a_recorded_run() {
    let (scenario, mut history) = recorded();
    let op = history
        .events
        .iter_mut()
        .filter_map(|event| match event {
            Event::Op(op) if op.outcome == OpOutcome::Hit && op.digest.is_some() => Some(op),
            _ => None,
        })
        .nth(200)
        .expect("a verified hit");
    op.digest = Some("00".repeat(32));
    let (id, edge) = (op.id, op.edge.unwrap());
    let first = check(&scenario, &history).first().unwrap().to_string();
    assert!(
        first.contains(&format!(
            "a read of image {id} from node {edge} returned bytes with digest 0000000000000000…"
        )) && first.ends_with("a corrupt read"),
        "{first}"
    );
}

#[test]
fn a_minority_leader_is_caught_in_a_recorded_run() {
    let (mut scenario, mut history) = recorded();
    // Cut node 3, which leads from the start, from the other two at 0.5 s: in the recorded
    // samples it goes on leading until it is killed at 3 s, so once the cut has settled
    // (1 s here) it leads on the minority side.
    scenario.expect.settle = Duration::from_secs(1);
    let (_, term) = first_lead(&history, 3);
    history.events.push(Event::Fault(Fault {
        at_ms: 500,
        step: "partition 3 | 1,2".into(),
        effect: Effect::Partition {
            cut: "3 | 1,2".into(),
            blocked: vec![[1, 3], [2, 3], [3, 1], [3, 2]],
        },
    }));
    let first = check(&scenario, &history).first().unwrap().to_string();
    assert!(
        first.contains(&format!(
            "node 3 leads term {term} on the minority side: it exchanges packets both ways with 1 of 3 nodes"
        )),
        "{first}"
    );
}
