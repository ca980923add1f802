//! The fault layer in a member's own UDP socket, set over QUIC by an operator certificate:
//! what `partition` and `netem` use for members on another machine of a swarm. A cut made
//! there leaves the minority without a leader and clearing it brings one back; a delay shows
//! in the peers' round-trip times; only an operator may set any of it.

use std::net::SocketAddr;
use std::time::Duration;

use net::pool::Target;
use net::CallError;
use testkit::cluster::SETTLE;
use testkit::{credentials, pool_with, wait_until, TestCluster};
use wire::message::ErrorKind;
use wire::{ElectionRole, NetFaults, NodeIndex, Role};

fn target(cluster: &TestCluster, index: u16) -> Target {
    Target::new(
        cluster.nodes[&NodeIndex(index)].running.quic.to_string(),
        Role::Node(NodeIndex(index)),
    )
}

fn address(cluster: &TestCluster, index: u16) -> SocketAddr {
    cluster.nodes[&NodeIndex(index)].running.quic
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_certificate_sets_socket_faults() {
    let cluster = TestCluster::builder().nodes(2).start().await;
    let faults = NetFaults {
        delay_us: 50_000,
        ..NetFaults::default()
    };
    for role in [Role::Client, Role::Node(NodeIndex(2)), Role::Canonical] {
        let pool = pool_with(&credentials(role));
        match pool
            .set_net_faults(&target(&cluster, 1), faults.clone())
            .await
        {
            Err(CallError::Refused { kind, message }) => {
                assert_eq!(kind, ErrorKind::Forbidden, "{role}: {message}");
                assert!(message.contains("operator"), "{message}");
            }
            other => panic!("a {role} certificate set faults: {other:?}"),
        }
    }
    assert_eq!(
        cluster.node(1).socket_faults.snapshot(),
        NetFaults::default()
    );

    let operator = pool_with(&credentials(Role::Operator));
    let too_long = NetFaults {
        delay_us: 61_000_000,
        ..NetFaults::default()
    };
    match operator
        .set_net_faults(&target(&cluster, 1), too_long)
        .await
    {
        Err(CallError::Refused { kind, message }) => {
            assert_eq!(kind, ErrorKind::BadRequest, "{message}");
            assert!(message.contains("60 s"), "{message}");
        }
        other => panic!("a 61 s delay was accepted: {other:?}"),
    }
    operator
        .set_net_faults(&target(&cluster, 1), faults.clone())
        .await
        .unwrap();
    assert_eq!(cluster.node(1).socket_faults.snapshot(), faults);
    // The canonical has the same layer.
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    operator
        .set_net_faults(&canonical, faults.clone())
        .await
        .unwrap();
    operator
        .set_net_faults(&target(&cluster, 1), NetFaults::default())
        .await
        .unwrap();
    assert_eq!(
        cluster.node(1).socket_faults.snapshot(),
        NetFaults::default()
    );
    // The node keeps serving after all of it.
    let client = cluster.client();
    client.connect_all().await.unwrap();
    client.get_image(wire::ImageId(3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_in_the_sockets_leaves_the_minority_without_a_leader_until_cleared() {
    let cluster = TestCluster::builder().nodes(5).start().await;
    cluster.wait_for_leader(5).await;
    let operator = pool_with(&credentials(Role::Operator));
    let minority = [1u16, 2];
    let majority = [3u16, 4, 5];
    // 1,2 | 3,4,5 by sources dropped on receive, as `partition` does.
    for (side, other) in [
        (&minority[..], &majority[..]),
        (&majority[..], &minority[..]),
    ] {
        let drop_from: Vec<SocketAddr> = other.iter().map(|i| address(&cluster, *i)).collect();
        for index in side {
            let faults = NetFaults {
                drop_from: drop_from.clone(),
                ..NetFaults::default()
            };
            operator
                .set_net_faults(&target(&cluster, *index), faults)
                .await
                .unwrap();
        }
    }
    let minority_leaderless = || {
        minority.iter().all(|i| {
            let status = cluster.node(*i).status();
            status.role != ElectionRole::Leader && status.leader.is_none()
        })
    };
    assert!(
        wait_until(SETTLE, minority_leaderless).await,
        "the minority 1,2 kept a leader: {:?}",
        cluster.election_views()
    );
    assert!(
        majority
            .iter()
            .all(|i| cluster.node(*i).leadership().leader == Some(NodeIndex(5))),
        "the majority lost node 5 as leader: {:?}",
        cluster.election_views()
    );

    for index in 1..=5 {
        operator
            .set_net_faults(&target(&cluster, index), NetFaults::default())
            .await
            .unwrap();
    }
    cluster.wait_for_leader(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_cut_by_destination_stops_only_that_direction() {
    let cluster = TestCluster::builder().nodes(3).start().await;
    cluster.wait_for_leader(3).await;
    let operator = pool_with(&credentials(Role::Operator));
    // Node 3 (the leader) stops sending to nodes 1 and 2: they lose it, it still hears them.
    let faults = NetFaults {
        drop_to: vec![address(&cluster, 1), address(&cluster, 2)],
        ..NetFaults::default()
    };
    operator
        .set_net_faults(&target(&cluster, 3), faults)
        .await
        .unwrap();
    assert!(
        wait_until(SETTLE, || [1u16, 2].iter().all(|i| cluster
            .node(*i)
            .leadership()
            .leader
            != Some(NodeIndex(3))))
        .await,
        "nodes 1 and 2 still follow node 3, which sends them nothing: {:?}",
        cluster.election_views()
    );
    operator
        .set_net_faults(&target(&cluster, 3), NetFaults::default())
        .await
        .unwrap();
    cluster.wait_for_leader(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_on_send_shows_in_the_peers_round_trip_times() {
    let cluster = TestCluster::builder().nodes(3).start().await;
    cluster.wait_for_leader(3).await;
    let rtt_to_1 = |from: u16| {
        cluster
            .node(from)
            .status()
            .peer_rtt_ms
            .get(&1)
            .copied()
            .unwrap_or(0.0)
    };
    let operator = pool_with(&credentials(Role::Operator));
    let delayed = NetFaults {
        delay_us: 200_000,
        jitter_us: 10_000,
        ..NetFaults::default()
    };
    operator
        .set_net_faults(&target(&cluster, 1), delayed)
        .await
        .unwrap();
    assert!(
        wait_until(SETTLE, || rtt_to_1(2) > 150.0 && rtt_to_1(3) > 150.0).await,
        "RTT to node 1 did not rise with a 200 ms delay: {} and {} ms",
        rtt_to_1(2),
        rtt_to_1(3)
    );
    // The cluster still works through the delay.
    let client = cluster.client();
    client.connect_all().await.unwrap();
    client.get_image(wire::ImageId(11)).await.unwrap();

    operator
        .set_net_faults(&target(&cluster, 1), NetFaults::default())
        .await
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || rtt_to_1(2) < 50.0).await,
        "RTT to node 1 stayed at {} ms after the delay was cleared",
        rtt_to_1(2)
    );
}
