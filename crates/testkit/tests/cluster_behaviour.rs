//! Election, origin shield and replication in an in-process cluster over real QUIC.

use testkit::cluster::SETTLE;
use testkit::{wait_until, TestCluster};
use wire::routing::{rank, Routing};
use wire::{ImageId, NodeIndex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_node_leads_and_the_next_takes_over_in_a_higher_term() {
    let mut cluster = TestCluster::builder().nodes(5).start().await;
    cluster.wait_for_leader(5).await;
    let first_term = cluster.node(5).status().term;

    cluster.stop_node(5).await;
    cluster.wait_for_leader(4).await;
    let second_term = cluster.node(4).status().term;
    assert!(
        second_term > first_term,
        "term {second_term} is not above {first_term}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fetch_lands_in_the_caches_its_routing_names() {
    let cluster = TestCluster::builder().nodes(5).start().await;
    cluster.wait_for_leader(5).await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let id = ImageId(321);
    let fetched = client.get_image(id).await.unwrap();
    assert_eq!(&fetched.body[..], &cluster.canonical_file(321)[..]);

    let members: Vec<NodeIndex> = (1..=5).map(NodeIndex).collect();
    let replicas = &rank(id, &members, Routing::Rendezvous)[..2];
    assert!(
        wait_until(SETTLE, || replicas.iter().all(|r| cluster
            .node(r.0)
            .cache
            .meta(id)
            .is_some()))
        .await,
        "image {id} not on its routing targets {replicas:?}"
    );
    let canonical_fetches = cluster.canonical_image_fetches();
    assert_eq!(
        canonical_fetches, 1.0,
        "the leader fetched from the canonical once"
    );
    let origin_fetches_by_leader = cluster.node_counter(5, "flotilla_origin_fetches_total");
    assert_eq!(
        origin_fetches_by_leader, 1.0,
        "the leader shields the canonical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_primary_lands_on_a_warm_replica() {
    let mut cluster = TestCluster::builder().nodes(5).start().await;
    cluster.wait_for_leader(5).await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    // An id whose primary edge is not the leader, so stopping it keeps the election quiet.
    let members: Vec<NodeIndex> = (1..=5).map(NodeIndex).collect();
    let id = (1..1000)
        .map(ImageId)
        .find(|id| rank(*id, &members, Routing::Rendezvous)[0] != NodeIndex(5))
        .unwrap();
    let ranked = rank(id, &members, Routing::Rendezvous);
    client.get_image(id).await.unwrap();
    assert!(
        wait_until(SETTLE, || cluster
            .node(ranked[1].0)
            .cache
            .meta(id)
            .is_some())
        .await
    );

    cluster.stop_node(ranked[0].0).await;
    let fetched = client.get_image(id).await.unwrap();
    assert_eq!(fetched.edge, ranked[1]);
    assert_eq!(
        fetched.outcome,
        wire::CacheOutcome::Hit,
        "failover landed on a cold cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_images_stay_servable_while_the_leader_is_replaced() {
    let mut cluster = TestCluster::builder().nodes(5).start().await;
    cluster.wait_for_leader(5).await;
    let client = std::sync::Arc::new(cluster.client());
    client.connect_all().await.unwrap();
    let ids: Vec<ImageId> = (1..=40).map(ImageId).collect();
    for id in &ids {
        client.get_image(*id).await.unwrap();
    }
    let fetcher = {
        let client = client.clone();
        let ids = ids.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..5 {
                for id in &ids {
                    if let Err(error) = client.get_image(*id).await {
                        failures.push(format!("round {round} id {id}: {error}"));
                    }
                }
            }
            failures
        })
    };
    cluster.stop_node(5).await;
    let failures = fetcher.await.unwrap();
    assert!(
        failures.is_empty(),
        "requests failed during failover: {failures:?}"
    );
    cluster.wait_for_leader(4).await;
}
