//! The checker catches what it exists for, each with a message naming the offending
//! observation and its time, and passes a clean history.

use std::sync::atomic::{AtomicU64, Ordering};

use scenario::history::{Recorder, HISTORY_FILE};
use scenario::{check, History};
use wire::history::{Effect, Event, Fault, Header, NodeState, Op, OpOutcome, Sample};
use wire::ElectionRole;

const SCENARIO: &str = r#"nodes = 3
duration = "10s"

[workload]
concurrency = 1
ids = "1..3"

[expect]
max_failover = "2s"
availability = 0.9
settle = "1s"
"#;

const GOOD: &str = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";
const BAD: &str = "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22";

fn up(at_ms: u64, node: u16, role: ElectionRole, term: u64, leader: u16) -> Event {
    Event::Sample(Sample {
        at_ms,
        node,
        state: NodeState::Up {
            role,
            term,
            leader: Some(leader),
        },
    })
}

fn read(at_ms: f64, id: u64, digest: &str) -> Event {
    Event::Op(Op {
        invoke_ms: at_ms,
        complete_ms: at_ms + 5.0,
        id,
        edge: Some(1),
        outcome: OpOutcome::Hit,
        digest: Some(digest.to_string()),
        expected: Some(GOOD.to_string()),
        error: None,
    })
}

/// Ten seconds of a healthy 3-node cluster: node 3 leads term 3, a read every 100 ms.
fn clean() -> Vec<Event> {
    let mut events = Vec::new();
    for tick in 0..100u64 {
        let at = tick * 100;
        events.push(up(at, 1, ElectionRole::Follower, 3, 3));
        events.push(up(at, 2, ElectionRole::Follower, 3, 3));
        events.push(up(at, 3, ElectionRole::Leader, 3, 3));
        events.push(read(at as f64, tick % 3 + 1, GOOD));
    }
    events
}

fn verdict(events: Vec<Event>) -> scenario::Verdict {
    let scenario = scenario::parse("test.toml", "test", SCENARIO).unwrap();
    let history = History {
        header: Header {
            scenario: "test".into(),
            source: "docker".into(),
            nodes: 3,
            seed: 1,
            started_unix_ms: 0,
            duration_ms: 10_000,
        },
        events,
    };
    // Through `history.jsonl` and back, as `scenario check RUN_DIR` reads a recorded run.
    let folder = std::env::temp_dir().join(format!(
        "flotilla-check-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join(HISTORY_FILE);
    let mut recorder = Recorder::create(&path, &history.header).unwrap();
    for event in &history.events {
        recorder.record(event).unwrap();
    }
    recorder.flush().unwrap();
    let recorded = History::read(&path).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    assert_eq!(recorded, history, "a history reads back as written");
    check(&scenario, &recorded)
}

/// Tells apart the folders of tests running at once.
static RUNS: AtomicU64 = AtomicU64::new(0);

#[test]
fn a_clean_history_passes_with_its_figures() {
    let verdict = verdict(clean());
    assert!(verdict.passed(), "{:?}", verdict.first());
    assert_eq!(verdict.summary.elections, 1);
    assert_eq!(verdict.summary.reads, 100);
    assert_eq!(verdict.summary.availability, Some(1.0));
    assert_eq!(verdict.summary.leaderless_ms, 0.0);
}

#[test]
fn two_leaders_in_one_term_are_caught() {
    let mut events = clean();
    events.push(up(4200, 2, ElectionRole::Leader, 3, 2));
    let verdict = verdict(events);
    let first = verdict.first().expect("a violation").to_string();
    assert_eq!(
        first,
        "at 4.200 s: node 2 leads term 3, which node 3 led at 0.000 s: two leaders in one term"
    );
}

#[test]
fn a_corrupt_read_is_caught() {
    let mut events = clean();
    events.push(read(6000.0, 2, BAD));
    let first = verdict(events).first().expect("a violation").to_string();
    assert!(
        first.starts_with("at 6.005 s: a read of image 2 from node 1 returned bytes with digest bb22bb22bb22bb22…, not the canonical's aa11aa11aa11aa11…: a corrupt read"),
        "{first}"
    );
}

#[test]
fn a_leader_on_the_minority_side_is_caught_once_settled() {
    let mut events = clean();
    // Node 3 is cut off from 1 and 2 at 2 s; the majority elects node 2 in term 5, but node 3
    // keeps saying it leads term 3 long after the settle time.
    events.retain(|e| !matches!(e, Event::Sample(s) if s.at_ms >= 2000));
    events.push(Event::Fault(Fault {
        at_ms: 2000,
        step: "partition 3 | 1,2".into(),
        effect: Effect::Partition {
            cut: "3 | 1,2".into(),
            blocked: vec![[1, 3], [2, 3], [3, 1], [3, 2]],
        },
    }));
    for tick in 20..100u64 {
        let at = tick * 100;
        events.push(up(at, 1, ElectionRole::Follower, 5, 2));
        events.push(up(at, 2, ElectionRole::Leader, 5, 2));
        events.push(up(at, 3, ElectionRole::Leader, 3, 3));
    }
    let verdict = verdict(events);
    let first = verdict.first().expect("a violation").to_string();
    assert!(
        first.starts_with("at 3.000 s: node 3 leads term 3 on the minority side: it exchanges packets both ways with 1 of 3 nodes"),
        "{first}"
    );
    // The majority's new leader came at once: a failover of 0 ms was measured, not a violation.
    assert_eq!(verdict.summary.failovers_ms, vec![0.0]);
}

#[test]
fn a_slow_failover_is_caught() {
    let mut events = clean();
    events.retain(|e| !matches!(e, Event::Sample(s) if s.at_ms >= 2000));
    events.push(Event::Fault(Fault {
        at_ms: 2000,
        step: "kill the leader".into(),
        effect: Effect::Kill { members: vec![3] },
    }));
    for tick in 20..100u64 {
        let at = tick * 100;
        let (role, term, leader) = match at >= 5000 {
            true => (ElectionRole::Leader, 5, 2),
            false => (ElectionRole::Follower, 3, 3),
        };
        events.push(up(at, 1, ElectionRole::Follower, term, leader));
        events.push(up(at, 2, role, term, leader));
    }
    let verdict = verdict(events);
    let first = verdict.first().expect("a violation").to_string();
    assert_eq!(
        first,
        "at 4.000 s: no new leader within 2.0 s after node 3 (leader of term 3) was lost at 2.000 s"
    );
}

#[test]
fn failed_reads_outside_fault_windows_are_caught() {
    let mut events = clean();
    for event in events.iter_mut() {
        if let Event::Op(op) = event {
            if (7000.0..8000.0).contains(&op.invoke_ms) && (op.invoke_ms as u64).is_multiple_of(200)
            {
                op.outcome = OpOutcome::Error;
                op.error = Some("node 1 timed out".into());
            }
        }
    }
    let first = verdict(events).first().expect("a violation").to_string();
    assert!(
        first.starts_with("at 7.000 s: outside any fault window only 5 of 10 reads succeeded"),
        "{first}"
    );
    assert!(first.contains("node 1 timed out"), "{first}");
}
