//! The image path end to end, in process: canonical + edges + client over real QUIC.

use std::time::{Duration, Instant};

use client::ClientError;
use testkit::TestCluster;
use wire::{CacheOutcome, ImageId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_image_returns_the_canonical_png_byte_for_byte() {
    let cluster = TestCluster::builder().start().await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let fetched = client.get_image(ImageId(123)).await.unwrap();
    assert_eq!(&fetched.body[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(fetched.meta.content_type, "image/png");
    assert_eq!(&fetched.body[..], &cluster.canonical_file(123)[..]);
    assert_eq!(fetched.outcome, CacheOutcome::Miss);

    let again = client.get_image(ImageId(123)).await.unwrap();
    assert_eq!(
        again.outcome,
        CacheOutcome::Hit,
        "second fetch of an id is a cache hit"
    );
    assert_eq!(again.served_by, fetched.served_by, "routing is stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_files_come_back_identical_with_exact_sizes() {
    let images = tempfile::tempdir().unwrap();
    let sizes: [(u64, usize, &str); 5] = [
        (1, 0, "bin"),
        (2, 1, "txt"),
        (3, 65_536, "jpg"),
        (4, 1_048_577, "png"),
        (5, 6 * 1024 * 1024 + 3, "bin"),
    ];
    for (id, size, extension) in sizes {
        let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8 ^ id as u8).collect();
        std::fs::write(images.path().join(format!("{id}.{extension}")), body).unwrap();
    }
    let cluster = TestCluster::builder().images(images.path()).start().await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    for (id, size, _) in sizes {
        let fetched = client.get_image(ImageId(id)).await.unwrap();
        assert_eq!(
            &fetched.body[..],
            &cluster.canonical_file(id)[..],
            "image {id}"
        );
        assert_eq!(
            client.image_size(ImageId(id)).await.unwrap(),
            size as u64,
            "size of {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_canonical_fetch() {
    let cluster = TestCluster::builder().start().await;
    let client = std::sync::Arc::new(cluster.client());
    client.connect_all().await.unwrap();
    let requests = (0..100).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.get_image(ImageId(777)).await })
    });
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.unwrap().unwrap().outcome);
    }
    let canonical_fetches = cluster.canonical_image_fetches();
    assert_eq!(
        canonical_fetches, 1.0,
        "one fetch from the canonical for 100 requests"
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == CacheOutcome::Miss)
            .count(),
        1
    );
    assert!(outcomes.iter().all(|o| *o != CacheOutcome::Origin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_are_reported_as_not_found() {
    let cluster = TestCluster::builder().start().await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let error = client.get_image(ImageId(999_999)).await.err().unwrap();
    assert!(matches!(error, ClientError::NotFound(_)), "{error}");
    assert_eq!(error.to_string(), "image 999999 not found on the canonical");
    assert!(error.is_bad_input());
    let error = client.image_size(ImageId(0)).await.err().unwrap();
    assert!(matches!(error, ClientError::NotFound(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_cluster_is_reported_within_seconds() {
    let mut cluster = TestCluster::builder().start().await;
    for index in 1..=3 {
        cluster.stop_node(index).await;
    }
    let client = cluster.client();
    let started = Instant::now();
    let error = client.connect_all().await.err().unwrap();
    assert!(matches!(error, ClientError::NoEdges { .. }), "{error}");
    assert!(
        error.to_string().contains("cargo xtask"),
        "says what to do: {error}"
    );
    // Not a timing goal: a hang would never return at all.
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_edge_is_skipped_and_the_next_serves() {
    let mut cluster = TestCluster::builder().start().await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let primary = client.route(ImageId(42))[0];
    cluster.stop_node(primary.0).await;
    let fetched = client.get_image(ImageId(42)).await.unwrap();
    assert_ne!(fetched.edge, primary);
    assert_eq!(&fetched.body[..], &cluster.canonical_file(42)[..]);
}
