//! The canonical is down: an image no edge holds fails at once with one line that names the
//! canonical as the one not answering (not an edge that "did not finish" in time, after a
//! failover through every edge), and images the edges hold are still served.

use std::time::Instant;

use client::ClientError;
use net::{CallError, Target};
use testkit::{credentials, pool_with, TestCluster};
use wire::limits::REQUEST_TIMEOUT;
use wire::message::ErrorKind;
use wire::{ImageId, NodeIndex, Role};

/// An image fetched while the canonical was up, so the edges hold it.
const CACHED: ImageId = ImageId(5);
/// An image nobody fetched.
const UNCACHED: ImageId = ImageId(123);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncached_image_with_the_canonical_down_fails_naming_the_canonical() {
    let mut cluster = TestCluster::builder().nodes(3).start().await;
    cluster.wait_for_leader(3).await;
    let client = cluster.client();
    client.connect_all().await.expect("the edges answer");
    client
        .get_image(CACHED)
        .await
        .expect("served while the canonical is up");
    cluster.stop_origin().await;

    let started = Instant::now();
    let error = fetch_fails(&client, UNCACHED).await;
    let took = started.elapsed();
    let message = error.to_string();
    eprintln!("stopped canonical: {took:?}: {message}");
    assert!(
        matches!(error, ClientError::OriginUnavailable { id, .. } if id == UNCACHED),
        "the error must be the canonical's, not an edge's: {message}"
    );
    assert!(
        message.starts_with("the canonical (test_canonical) did not answer")
            && message.contains(&format!("image {UNCACHED} is not cached on test_node_")),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message:?}");
    // Generous: the point is that the client stops instead of timing out edge after edge.
    assert!(
        took < REQUEST_TIMEOUT,
        "took {took:?} (more than the client's request timeout): {message}"
    );

    let error = client
        .image_size(ImageId(124))
        .await
        .expect_err("no size without the canonical or a cached copy");
    assert!(
        matches!(error, ClientError::OriginUnavailable { .. }),
        "{error}"
    );

    // What the edges hold is still served: a dead canonical is not a dead cluster.
    let fetched = client
        .get_image(CACHED)
        .await
        .expect("a cached image is served with the canonical down");
    assert_eq!(fetched.meta.id, CACHED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_canonical_is_named_too_not_an_edge_that_ran_out_of_time() {
    // Packets to a silent canonical vanish, so every dial to it waits out the connect
    // timeout; the edges must still answer before the client gives up on them.
    let cluster = TestCluster::builder()
        .nodes(3)
        .silent_origin()
        .start()
        .await;
    cluster.wait_for_leader(3).await;
    let client = cluster.client();
    client.connect_all().await.expect("the edges answer");
    let started = Instant::now();
    let error = fetch_fails(&client, UNCACHED).await;
    let took = started.elapsed();
    eprintln!("silent canonical: {took:?}: {error}");
    assert!(
        matches!(error, ClientError::OriginUnavailable { id, .. } if id == UNCACHED),
        "{error}"
    );
    assert!(took < REQUEST_TIMEOUT, "took {took:?}: {error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_answers_origin_unavailable_whether_it_leads_or_asks_its_leader() {
    let mut cluster = TestCluster::builder().nodes(3).start().await;
    cluster.wait_for_leader(3).await;
    cluster.stop_origin().await;
    let canonical = cluster.origin.to_string();
    let pool = pool_with(&credentials(Role::Client));
    // Node 1 asks its leader, node 3, which asks the canonical; node 3 asks it itself.
    for (edge, id) in [(1u16, ImageId(201)), (3, ImageId(202))] {
        let target = Target::new(
            cluster.file.nodes[usize::from(edge) - 1].quic.clone(),
            Role::Node(NodeIndex(edge)),
        );
        let result = pool.get_image(&target, id).await;
        if let Err(error) = &result {
            eprintln!("node {edge}: {error}");
        }
        let Err(CallError::Refused {
            kind: ErrorKind::OriginUnavailable,
            message,
        }) = result
        else {
            panic!(
                "node {edge}: expected an origin-unavailable reply, got {:?}",
                result.map(|reply| reply.served_by)
            );
        };
        assert!(
            message.starts_with(&format!("the canonical ({canonical}) did not answer"))
                && message.ends_with(&format!("image {id} is not cached on test_node_{edge}")),
            "node {edge}: {message}"
        );
    }
}

/// Fetches `id`, which must fail with no canonical to fetch it from; returns the error.
async fn fetch_fails(client: &client::Client, id: ImageId) -> ClientError {
    match client.get_image(id).await {
        Ok(fetched) => panic!(
            "image {id} served by {} with no canonical",
            fetched.served_by
        ),
        Err(error) => error,
    }
}
