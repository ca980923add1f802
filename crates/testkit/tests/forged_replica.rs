//! Origin-authenticated content. An edge caches a replica only when the leader of its current
//! term pushes it with metadata the canonical signed, and edges and clients accept an image
//! only under the canonical's signature; so no edge key, a follower's or the leader's, can make
//! another edge or a client take bytes the canonical never published.

use std::sync::Arc;

use bytes::Bytes;
use net::pool::{Pool, Target};
use net::tls::Credentials;
use net::CallError;
use testkit::cluster::SETTLE;
use testkit::{counter_with, credentials, pool_with, test_ca, wait_until, TestCluster};
use tokio_util::sync::CancellationToken;
use wire::message::ErrorKind;
use wire::routing::{rank, Routing};
use wire::{
    CacheOutcome, Digest, ImageId, ImageMeta, NodeIndex, OriginSigner, Request, Response, Role,
    SignedMeta, Term,
};

/// An edge's certificate and key, as someone who took over that edge holds them: its TLS
/// identity and a signer with the same key.
fn compromised(index: u16) -> (Credentials, OriginSigner) {
    let issued = test_ca().issue(Role::Node(NodeIndex(index))).unwrap();
    let credentials =
        Credentials::from_pem(test_ca().cert_pem(), &issued.cert_pem, &issued.key_pem).unwrap();
    let signer = OriginSigner::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    (credentials, signer)
}

fn forged_meta(id: u64, body: &[u8]) -> ImageMeta {
    ImageMeta {
        id: ImageId(id),
        size: body.len() as u64,
        content_type: "image/png".into(),
        digest: Digest::of(body),
    }
}

fn edge(cluster: &TestCluster, index: u16) -> Target {
    let member = &cluster.file.nodes[usize::from(index) - 1];
    Target::new(member.quic.clone(), Role::Node(NodeIndex(member.index)))
}

/// Pushes a replica and returns the reply header.
async fn push(pool: &Pool, target: &Target, term: Term, meta: SignedMeta, body: Bytes) -> Response {
    let request = Request::Replicate { term, meta };
    pool.call(target, &request, Some(body))
        .await
        .expect("the edge answers")
        .response
}

fn error_kind(reply: &Response) -> Option<ErrorKind> {
    match reply {
        Response::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn refused(cluster: &TestCluster, index: u16, reason: &str) -> f64 {
    counter_with(
        &cluster.node(index).metrics.registry.render(),
        "flotilla_replicas_refused_total",
        &format!("reason=\"{reason}\""),
    )
}

/// Metadata and body exactly as the canonical publishes them, fetched by `pool` itself.
async fn genuine(cluster: &TestCluster, pool: &Pool, id: u64) -> (SignedMeta, Bytes) {
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    let reply = pool.get_image(&canonical, ImageId(id)).await.unwrap();
    (reply.meta.into_signed(), reply.body)
}

/// The finding as found: with node 2's key (a follower) a `Replicate` for id 77 with a made-up
/// body and its own digest went to every edge, every edge acknowledged it, and
/// `client get-image 77` then served the forged bytes as a cache hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_key_cannot_make_any_edge_serve_forged_bytes() {
    let cluster = TestCluster::builder().start().await;
    cluster.wait_for_leader(3).await;
    let (node_2, node_2_key) = compromised(2);
    let pool = pool_with(&node_2);
    let forged = Bytes::from_static(b"forged bytes the canonical never published");
    // The best node 2 can do: its own digest, sealed with its own key.
    let meta = node_2_key.sign(forged_meta(77, &forged)).unwrap();
    let current = cluster.node(1).leadership().term;
    // The current term, and the next term node 2 owns (terms 2, 5, 8, ... of three edges).
    let owned = Term((current.0 / 3 + 1) * 3 + 2);
    let mut acknowledged = Vec::new();
    for term in [current, owned] {
        for index in 1..=3 {
            let reply = push(
                &pool,
                &edge(&cluster, index),
                term,
                meta.clone(),
                forged.clone(),
            )
            .await;
            match error_kind(&reply) {
                Some(ErrorKind::NotLeader) => {}
                _ => acknowledged.push(format!("node {index} in term {term}: {reply:?}")),
            }
        }
    }
    for index in 1..=3 {
        assert!(
            cluster.node(index).cache.meta(ImageId(77)).is_none(),
            "node {index} cached it"
        );
        assert_eq!(
            refused(&cluster, index, "not_leader"),
            2.0,
            "node {index}'s metric"
        );
    }

    let client = cluster.client();
    client.connect_all().await.unwrap();
    let fetched = client.get_image(ImageId(77)).await.unwrap();
    assert!(
        acknowledged.is_empty() && fetched.body != forged,
        "forged replicas not refused: {acknowledged:?}; the client got {} bytes ({}) from {}",
        if fetched.body == forged {
            "FORGED"
        } else {
            "genuine"
        },
        fetched.outcome,
        fetched.served_by
    );
    assert_eq!(&fetched.body[..], &cluster.canonical_file(77)[..]);
    assert_eq!(fetched.outcome, CacheOutcome::Miss, "nothing was planted");
    // The real leader's replication of 77 still lands on its routing targets.
    let members: Vec<NodeIndex> = (1..=3).map(NodeIndex).collect();
    let targets = &rank(ImageId(77), &members, Routing::Rendezvous)[..2];
    assert!(
        wait_until(SETTLE, || targets.iter().all(|t| cluster
            .node(t.0)
            .cache
            .meta(ImageId(77))
            .is_some()))
        .await,
        "image 77 did not reach {targets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_is_refused_even_with_genuine_signed_metadata() {
    let cluster = TestCluster::builder().start().await;
    cluster.wait_for_leader(3).await;
    let pool = pool_with(&credentials(Role::Node(NodeIndex(1))));
    let (meta, body) = genuine(&cluster, &pool, 88).await;
    let term = cluster.node(2).leadership().term;
    let reply = push(&pool, &edge(&cluster, 2), term, meta, body).await;
    match &reply {
        Response::Error {
            kind: ErrorKind::NotLeader,
            message,
        } => assert!(message.contains("node 3 leads"), "{message}"),
        other => panic!("a follower's replica was not refused: {other:?}"),
    }
    assert!(cluster.node(2).cache.meta(ImageId(88)).is_none(), "cached");
    assert_eq!(refused(&cluster, 2, "not_leader"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_cannot_replicate_what_the_canonical_did_not_sign() {
    let cluster = TestCluster::builder().start().await;
    cluster.wait_for_leader(3).await;
    let (leader, leader_key) = compromised(3);
    let pool = pool_with(&leader);
    let term = cluster.node(1).leadership().term;
    let (genuine_meta, genuine_body) = genuine(&cluster, &pool, 99).await;
    let forged = Bytes::from(vec![0x42; 2048]);

    let mut tampered = genuine_meta.clone();
    let last = tampered.seal.signature.len() - 1;
    tampered.seal.signature[last] ^= 1;
    let mut swapped = genuine_meta.clone();
    swapped.meta = forged_meta(99, &forged);
    let self_signed = leader_key.sign(forged_meta(99, &forged)).unwrap();
    let attempts = [
        ("a tampered signature", tampered, genuine_body.clone()),
        (
            "the canonical's seal over other metadata",
            swapped,
            forged.clone(),
        ),
        ("the leader's own seal", self_signed, forged.clone()),
    ];
    for (what, meta, body) in attempts {
        let reply = push(&pool, &edge(&cluster, 1), term, meta, body).await;
        assert_eq!(
            error_kind(&reply),
            Some(ErrorKind::BadSignature),
            "{what}: {reply:?}"
        );
    }
    assert!(cluster.node(1).cache.meta(ImageId(99)).is_none(), "cached");
    assert_eq!(refused(&cluster, 1, "bad_signature"), 3.0);

    // The same leader with the canonical's untouched seal is accepted.
    let reply = push(&pool, &edge(&cluster, 1), term, genuine_meta, genuine_body).await;
    assert!(matches!(reply, Response::Ack), "{reply:?}");
    let cached = cluster.node(1).cache.get(ImageId(99)).expect("cached");
    assert_eq!(&cached.body[..], &cluster.canonical_file(99)[..]);
}

/// An edge (here: a server holding node 1's certificate) that serves bytes of its own making.
struct RogueEdge {
    signer: OriginSigner,
    body: Bytes,
}

impl net::server::Handler for RogueEdge {
    async fn handle(
        self: Arc<Self>,
        _peer: Role,
        request: Request,
        mut send: quinn::SendStream,
        _recv: quinn::RecvStream,
    ) {
        let Request::GetImage { id } = request else {
            net::server::reply_error(&mut send, ErrorKind::BadRequest, "images only").await;
            return;
        };
        let meta = self.signer.sign(forged_meta(id.0, &self.body)).unwrap();
        let outcome = CacheOutcome::Hit;
        let _ =
            net::server::reply_image(&mut send, meta, "rogue", outcome, self.body.clone()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_an_image_the_canonical_did_not_sign() {
    let (node_1, node_1_key) = compromised(1);
    let socket = net::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = net::endpoint(socket, &node_1, true).unwrap();
    let address = endpoint.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let rogue = Arc::new(RogueEdge {
        signer: node_1_key,
        body: Bytes::from_static(b"not an image the canonical published"),
    });
    tokio::spawn(net::server::serve(endpoint, rogue, shutdown.clone()));

    let client = pool_with(&credentials(Role::Client));
    let target = Target::new(address.to_string(), Role::Node(NodeIndex(1)));
    match client.get_image(&target, ImageId(77)).await {
        Err(error @ CallError::BadSignature { .. }) => {
            assert!(
                error.to_string().contains("not by the canonical"),
                "{error}"
            );
        }
        Err(other) => panic!("refused for the wrong reason: {other}"),
        Ok(reply) => panic!("the client accepted {} forged bytes", reply.body.len()),
    }
    shutdown.cancel();
}
