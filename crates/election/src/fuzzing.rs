//! What the election fuzzer checks: any sequence of election messages from peers (decoded
//! from untrusted CBOR, as an edge decodes `Request::Election`), with time passing between
//! them, keeps the state machine within its invariants. Called by `fuzz/fuzz_targets/` and,
//! on every corpus input, by `cargo test` (`crates/testkit/tests/fuzz_corpus.rs`).

use std::time::{Duration, Instant};

use wire::election::ElectionMessage;
use wire::{ElectionRole, NodeIndex};

use crate::{Config, Election, Members, Output, View, TERM_CEILING};

/// The node under test and the configured edges: a five-member cluster, so a majority needs
/// two peers besides the node.
const ME: NodeIndex = NodeIndex(3);
const MEMBERS: [NodeIndex; 5] = [
    NodeIndex(1),
    NodeIndex(2),
    NodeIndex(3),
    NodeIndex(4),
    NodeIndex(5),
];

/// `bytes` as records `[sender][milliseconds to wait][length][length bytes of CBOR]`. The
/// sender byte ranges over 0..=6, so messages from non-members and from the node itself are
/// tried too; a message that does not decode is skipped, as the edge refuses it. Time is
/// logical: before each message the node gets every `tick` that came due, at its instant, and
/// each tick moves the next wake-up past it (the driver sleeps until then).
///
/// After every step the node's term never went down nor above [`TERM_CEILING`], it only
/// sends to other members and never in a term above its own, the last view it announced
/// is its view (and it announced one whenever its view changed), and it leads only in a term
/// it owns.
pub fn messages(bytes: &[u8]) {
    let start = Instant::now();
    let members = Members::new(ME, MEMBERS);
    let mut now = start;
    let mut election = Election::new(Config::default(), ME, MEMBERS, now);
    let mut rest = bytes;
    while let [sender, wait, length, tail @ ..] = rest {
        let length = usize::from(*length).min(tail.len());
        let (cbor, after) = tail.split_at(length);
        rest = after;
        now += Duration::from_millis(u64::from(*wait));
        // An on-time driver: every wake-up that came due, at its own instant.
        while election.next_wakeup() <= now {
            let due = election.next_wakeup();
            let before = election.view();
            let outputs = election.tick(due);
            check(&election, &members, before, &outputs);
            assert!(
                election.next_wakeup() > due,
                "a tick left its wake-up due: the driver would spin"
            );
        }
        let Ok(msg) = wire::frame::decode_header::<ElectionMessage>(cbor) else {
            continue;
        };
        let before = election.view();
        let outputs = election.handle(now, NodeIndex(u16::from(*sender % 7)), msg);
        check(&election, &members, before, &outputs);
    }
}

/// Valid inputs for [`messages`]: a heartbeat from the highest member, a vote-winning run in
/// a term the node owns, a lone far term, and one of each kind.
pub fn seeds() -> Vec<Vec<u8>> {
    use wire::election::ElectionKind;
    use wire::Term;

    let record = |sender: u8, wait: u8, term: u64, kind: ElectionKind| {
        let frame = wire::frame::encode_header(&ElectionMessage {
            term: Term(term),
            kind,
        })
        .expect("a message encodes");
        let cbor = &frame[4..];
        let mut bytes = vec![sender, wait, cbor.len() as u8];
        bytes.extend(cbor);
        bytes
    };
    let kinds = ElectionKind::ALL;
    // Node 3 owns terms 3, 8, 13, … in a five-member cluster.
    let won: Vec<u8> = [
        record(1, 250, 0, ElectionKind::HeartbeatAck),
        record(1, 250, 0, ElectionKind::HeartbeatAck),
        record(1, 250, 3, ElectionKind::Vote { granted: true }),
        record(2, 0, 3, ElectionKind::Vote { granted: true }),
        record(1, 100, 3, ElectionKind::HeartbeatAck),
        record(2, 0, 3, ElectionKind::HeartbeatAck),
    ]
    .concat();
    vec![
        record(5, 10, 5, ElectionKind::Heartbeat),
        won,
        record(4, 0, u64::MAX, ElectionKind::Heartbeat),
        kinds
            .iter()
            .enumerate()
            .flat_map(|(i, kind)| record(i as u8 + 1, 60, 7, *kind))
            .collect(),
    ]
}

fn check(election: &Election, members: &Members, before: View, outputs: &[Output]) {
    let view = election.view();
    assert!(
        view.term >= before.term,
        "term went down: {before:?} -> {view:?}"
    );
    assert!(
        view.term.0 <= TERM_CEILING,
        "term above the ceiling: {view:?}"
    );
    let mut announced = None;
    for output in outputs {
        match output {
            Output::Send { to, msg } => {
                assert!(*to != ME && members.contains(*to), "sent to {to}");
                assert!(msg.term <= view.term, "sent {msg:?} from {view:?}");
            }
            Output::ViewChanged(changed) => announced = Some(*changed),
        }
    }
    match announced {
        Some(last) => assert_eq!(last, view, "announced a view that is not the node's"),
        None => assert_eq!(before, view, "the view changed unannounced"),
    }
    if view.role == ElectionRole::Leader {
        assert_eq!(view.leader, Some(ME));
        assert_eq!(
            members.owner_of(view.term),
            Some(ME),
            "leads a term it does not own"
        );
    }
}
