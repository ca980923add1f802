//! Election input from a peer holding a node certificate: a forged term must not wedge the
//! cluster. Reproduces the finding "a `Heartbeat` carrying term u64::MAX moves every edge to that
//! term with no leader" over real QUIC, with a node's own credentials.

use net::pool::{Pool, Target};
use testkit::cluster::SETTLE;
use testkit::{credentials, pool_with, wait_until, TestCluster};
use wire::election::{ElectionKind, ElectionMessage};
use wire::{NodeIndex, Role, Term};

/// Edges in the cluster; the highest one is the Bully leader.
const NODES: u16 = 3;

/// A pool that speaks with edge `index`'s certificate, as a faulty or compromised edge would.
fn pool_as_node(index: u16) -> Pool {
    pool_with(&credentials(Role::Node(NodeIndex(index))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_with_term_u64_max_from_a_node_certificate_does_not_wedge_the_cluster() {
    let cluster = TestCluster::builder().nodes(NODES).start().await;
    cluster.wait_for_leader(NODES).await;

    // Node 1's certificate: the receivers take the sender from it, so this is node 1 speaking.
    let pool = pool_as_node(1);
    let forged = ElectionMessage {
        term: Term(u64::MAX),
        kind: ElectionKind::Heartbeat,
    };
    for member in &cluster.file.nodes {
        let target = Target::new(member.quic.clone(), Role::Node(NodeIndex(member.index)));
        pool.send_election(&target, forged.clone())
            .await
            .expect("an edge acknowledges an election message from a node certificate");
    }

    // The same from the node that owns term u64::MAX (node 3 of 3): its own word is no better.
    let owner = NodeIndex(NODES);
    assert_eq!(
        ((u64::MAX - 1) % u64::from(NODES) + 1) as u16,
        owner.0,
        "node {owner} owns term u64::MAX"
    );
    let pool = pool_as_node(NODES);
    for member in cluster.file.nodes.iter().filter(|m| m.index != NODES) {
        let target = Target::new(member.quic.clone(), Role::Node(NodeIndex(member.index)));
        pool.send_election(&target, forged.clone())
            .await
            .expect("an edge acknowledges an election message from a node certificate");
    }

    // The cluster keeps (or regains) one agreed leader, the Bully leader, in a term below the
    // forged one: once no edge stands in a term it could still leave, it is wedged for good.
    let settled = wait_until(SETTLE, || {
        cluster.agreed_on(NODES)
            && cluster
                .election_views()
                .iter()
                .all(|&(_, _, term, _)| term != u64::MAX && term <= election::TERM_CEILING)
    })
    .await;
    assert!(
        settled,
        "no agreed leader below term u64::MAX after the forged heartbeat: {:?}",
        cluster.election_views()
    );
}
