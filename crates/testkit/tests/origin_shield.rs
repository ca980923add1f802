//! The leader is the origin shield even when the origin is slow: edges wait for a live leader
//! instead of going around it, so a burst of misses for one image costs one origin fetch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use net::server::{reply_error, reply_image, Handler};
use net::Target;
use quinn::{RecvStream, SendStream};
use testkit::{credentials, origin_signer, pool_with, wait_until, TestCluster};
use wire::message::ErrorKind;
use wire::{CacheOutcome, Digest, ImageId, ImageMeta, NodeIndex, OriginSigner, Request, Role};

/// How long the slow origin takes to answer: longer than an edge used to wait for the leader
/// (2 s) before going to the origin itself.
const ORIGIN_DELAY: Duration = Duration::from_secs(3);

/// Requests sent at once, spread over every edge.
const REQUESTS: usize = 50;

/// An origin that answers every image request after `delay` and counts them.
struct SlowOrigin {
    delay: Duration,
    image_requests: AtomicUsize,
    body: Bytes,
    signer: OriginSigner,
}

impl SlowOrigin {
    fn new(delay: Duration) -> Arc<SlowOrigin> {
        Arc::new(SlowOrigin {
            delay,
            image_requests: AtomicUsize::new(0),
            body: Bytes::from(
                (0..200_000u32)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            ),
            signer: origin_signer(),
        })
    }
}

impl Handler for SlowOrigin {
    async fn handle(
        self: Arc<Self>,
        _peer: Role,
        request: Request,
        mut send: SendStream,
        _recv: RecvStream,
    ) {
        let Request::GetImage { id } = request else {
            reply_error(&mut send, ErrorKind::BadRequest, "only images here").await;
            return;
        };
        self.image_requests.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let meta = ImageMeta {
            id,
            size: self.body.len() as u64,
            content_type: "image/png".into(),
            digest: Digest::of(&self.body),
        };
        let Ok(meta) = self.signer.sign(meta) else {
            reply_error(&mut send, ErrorKind::Internal, "signing failed").await;
            return;
        };
        let _ = reply_image(
            &mut send,
            meta,
            "slow_origin",
            CacheOutcome::Origin,
            self.body.clone(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_behind_a_live_leader_is_fetched_once() {
    let origin = SlowOrigin::new(ORIGIN_DELAY);
    let cluster = TestCluster::builder()
        .nodes(4)
        .origin(origin.clone())
        .start()
        .await;
    assert!(
        wait_until(Duration::from_secs(20), || cluster.agreed_on(4)).await,
        "node 4 never led"
    );

    let pool = Arc::new(pool_with(&credentials(Role::Client)));
    let edges: Vec<Target> = cluster
        .file
        .nodes
        .iter()
        .map(|member| Target::new(member.quic.clone(), Role::Node(NodeIndex(member.index))))
        .collect();
    let requests = (0..REQUESTS).map(|i| {
        let pool = pool.clone();
        let target = edges[i % edges.len()].clone();
        tokio::spawn(async move { pool.get_image(&target, ImageId(77)).await })
    });
    let replies = futures::future::join_all(requests).await;

    for reply in replies {
        let reply = reply
            .expect("the request task")
            .expect("every request is served");
        assert_eq!(reply.body, origin.body, "served bytes match the origin's");
    }
    assert_eq!(
        origin.image_requests.load(Ordering::SeqCst),
        1,
        "{REQUESTS} requests over {} edges must cost exactly one origin fetch",
        edges.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_failover_joins_the_fetch_under_way_instead_of_starting_another() {
    // Slower than the client's attempt on one edge, so the client fails over mid-fetch.
    let delay = wire::limits::CLIENT_ATTEMPT_TIMEOUT + Duration::from_secs(1);
    let origin = SlowOrigin::new(delay);
    let cluster = TestCluster::builder()
        .nodes(3)
        .origin(origin.clone())
        .start()
        .await;
    assert!(
        wait_until(Duration::from_secs(20), || cluster.agreed_on(3)).await,
        "node 3 never led"
    );
    let client = cluster.client();
    client.connect_all().await.expect("the edges answer");
    let primary = client.route(ImageId(91))[0];
    let fetched = client
        .get_image(ImageId(91))
        .await
        .expect("the failover edge serves the image");
    assert_eq!(fetched.body, origin.body);
    assert_ne!(
        fetched.edge, primary,
        "the primary edge cannot have answered in time"
    );
    assert_eq!(
        origin.image_requests.load(Ordering::SeqCst),
        1,
        "the failover must join the fetch under way, not start a second one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_a_live_edge_that_waits_on_a_slow_origin() {
    // The edge sends the client nothing of the image for seconds; it is alive all the same
    // (it acknowledges the client's keep-alives), so the client must not take it for gone.
    let origin = SlowOrigin::new(ORIGIN_DELAY);
    let cluster = TestCluster::builder()
        .nodes(1)
        .origin(origin.clone())
        .start()
        .await;
    assert!(
        wait_until(Duration::from_secs(20), || cluster.agreed_on(1)).await,
        "node 1 never led"
    );
    let client = cluster.client();
    let fetched = client
        .get_image(ImageId(92))
        .await
        .expect("the only edge serves the image once the origin answers");
    assert_eq!(fetched.body, origin.body);
    assert_eq!(origin.image_requests.load(Ordering::SeqCst), 1);
}
