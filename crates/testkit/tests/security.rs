//! Bad peers and bad bytes: foreign certificates, client certificates sending edge-only
//! requests, malformed and oversized frames, and an upstream that sends corrupted bodies.

use std::sync::Arc;

use bytes::Bytes;
use net::pool::{Pool, Target};
use net::tls::Credentials;
use net::CallError;
use testkit::{credentials, origin_signer, pool_with, TestCluster};
use wire::election::{ElectionKind, ElectionMessage};
use wire::message::ErrorKind;
use wire::pki::ClusterCa;
use wire::Role;
use wire::{CacheOutcome, Digest, ImageId, ImageMeta, NodeIndex, Request, Response, Term};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_rejected() {
    let cluster = TestCluster::builder().start().await;
    let stranger = Credentials::issue(&ClusterCa::generate().unwrap(), Role::Client).unwrap();
    let pool = pool_with(&stranger);
    let target = Target::new(cluster.file.nodes[0].quic.clone(), Role::Node(NodeIndex(1)));
    let result = pool.call(&target, &Request::Ping, None).await;
    assert!(
        result.is_err(),
        "a foreign client certificate must not be served"
    );

    // A foreign server is rejected by our client as well.
    let canonical_target = Target::new(cluster.origin.to_string(), Role::Canonical);
    assert!(pool
        .call(&canonical_target, &Request::Ping, None)
        .await
        .is_err());

    // The node keeps serving legitimate peers.
    let client = cluster.client();
    client.connect_all().await.unwrap();
    client.get_image(ImageId(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_cannot_send_edge_only_requests() {
    let cluster = TestCluster::builder().start().await;
    let pool = pool_with(&credentials(Role::Client));
    let target = Target::new(cluster.file.nodes[1].quic.clone(), Role::Node(NodeIndex(2)));

    let election = Request::Election(ElectionMessage {
        term: Term(99),
        kind: ElectionKind::Heartbeat,
    });
    let reply = pool.call(&target, &election, None).await.unwrap().response;
    assert!(
        matches!(
            reply,
            Response::Error {
                kind: ErrorKind::Forbidden,
                ..
            }
        ),
        "{reply:?}"
    );

    let body = Bytes::from_static(b"planted");
    let meta = ImageMeta {
        id: ImageId(1),
        size: 7,
        content_type: "image/png".into(),
        digest: Digest::of(&body),
    };
    let replicate = Request::Replicate {
        term: Term(99),
        meta: origin_signer().sign(meta).unwrap(),
    };
    let reply = pool
        .call(&target, &replicate, Some(body))
        .await
        .unwrap()
        .response;
    assert!(
        matches!(
            reply,
            Response::Error {
                kind: ErrorKind::Forbidden,
                ..
            }
        ),
        "{reply:?}"
    );
    assert_eq!(
        cluster.node(2).status().cache_items,
        0,
        "nothing planted in the cache"
    );
}

/// Sends raw bytes on a fresh stream and returns what came back (if anything).
async fn send_raw(pool: &Pool, target: &Target, bytes: &[u8]) -> Option<Response> {
    let connection = pool.connection(target).await.unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        net::frame::read_header(&mut recv),
    )
    .await;
    match read {
        Ok(Ok(response)) => Some(response),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_never_stop_a_server() {
    let cluster = TestCluster::builder().start().await;
    let pool = pool_with(&credentials(Role::Client));
    let node = Target::new(cluster.file.nodes[0].quic.clone(), Role::Node(NodeIndex(1)));
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    let mut garbage_cbor = 6u32.to_be_bytes().to_vec();
    garbage_cbor.extend_from_slice(&[0xbf, 0xff, 0x13, 0x37, 0xde, 0xad]);
    let mut wrong_shape = Vec::new();
    ciborium::into_writer(&("not", "a", "request"), &mut wrong_shape).unwrap();
    let mut wrong_shape_frame = (wrong_shape.len() as u32).to_be_bytes().to_vec();
    wrong_shape_frame.extend_from_slice(&wrong_shape);
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("oversized length", u32::MAX.to_be_bytes().to_vec()),
        ("garbage cbor", garbage_cbor),
        ("wrong shape", wrong_shape_frame),
        ("truncated", vec![0, 0, 0, 40, 1, 2, 3]),
        ("empty", vec![]),
    ];
    for target in [&node, &canonical] {
        for (what, bytes) in &frames {
            if let Some(reply) = send_raw(&pool, target, bytes).await {
                assert!(
                    matches!(
                        reply,
                        Response::Error {
                            kind: ErrorKind::BadRequest,
                            ..
                        }
                    ),
                    "{what} to {}: {reply:?}",
                    target.role
                );
            }
        }
        let reply = pool
            .call(target, &Request::Ping, None)
            .await
            .unwrap()
            .response;
        assert!(
            matches!(reply, Response::Pong { .. }),
            "{} stopped answering",
            target.role
        );
    }
    let client = cluster.client();
    client.connect_all().await.unwrap();
    client.get_image(ImageId(8)).await.unwrap();
}

/// An "origin" holding the canonical's certificate that corrupts every body it sends (after
/// signing the metadata of the uncorrupted one).
struct CorruptingOrigin(wire::OriginSigner);

impl net::server::Handler for CorruptingOrigin {
    async fn handle(
        self: Arc<Self>,
        _peer: Role,
        request: Request,
        mut send: quinn::SendStream,
        _recv: quinn::RecvStream,
    ) {
        let Request::GetImage { id } = request else {
            net::server::reply_error(&mut send, ErrorKind::BadRequest, "only images here").await;
            return;
        };
        let body = vec![7u8; 4096];
        let meta = ImageMeta {
            id,
            size: 4096,
            content_type: "image/png".into(),
            digest: Digest::of(&body),
        };
        let mut corrupted = body;
        corrupted[100] ^= 1;
        let Ok(meta) = self.0.sign(meta) else {
            net::server::reply_error(&mut send, ErrorKind::Internal, "signing failed").await;
            return;
        };
        let _ = net::server::reply_image(
            &mut send,
            meta,
            "evil",
            CacheOutcome::Origin,
            Bytes::from(corrupted),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_body_is_neither_cached_nor_returned() {
    let cluster = TestCluster::builder()
        .nodes(1)
        .replicas(1)
        .cache_mb(1)
        .origin(Arc::new(CorruptingOrigin(origin_signer())))
        .start()
        .await;
    let running = &cluster.nodes[&NodeIndex(1)].running;

    let pool = pool_with(&credentials(Role::Client));
    let target = Target::new(running.quic.to_string(), Role::Node(NodeIndex(1)));
    let reply = pool
        .call(&target, &Request::GetImage { id: ImageId(3) }, None)
        .await
        .unwrap()
        .response;
    match reply {
        Response::Error {
            kind: ErrorKind::DigestMismatch,
            message,
        } => {
            assert!(message.contains("digest"), "{message}");
        }
        other => panic!("corrupted body was not refused: {other:?}"),
    }
    assert_eq!(
        running.node.status().cache_items,
        0,
        "corrupted image must not be cached"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_replica_is_refused_for_what_is_wrong_with_it_and_not_cached() {
    let cluster = TestCluster::builder().start().await;
    // The leader's certificate and genuinely signed metadata: replication is allowed, the
    // bytes are checked.
    cluster.wait_for_leader(3).await;
    let pool = pool_with(&credentials(Role::Node(NodeIndex(3))));
    let target = Target::new(cluster.file.nodes[0].quic.clone(), Role::Node(NodeIndex(1)));
    let body = Bytes::from(vec![9u8; 1000]);
    let meta = ImageMeta {
        id: ImageId(55),
        size: 1000,
        content_type: "image/png".into(),
        digest: Digest::of(&body),
    };
    let meta = origin_signer().sign(meta).unwrap();
    let term = cluster.node(1).leadership().term;

    let short = pool
        .replicate(&target, term, meta.clone(), body.slice(..999))
        .await
        .unwrap_err();
    assert!(
        matches!(
            short,
            CallError::Refused {
                kind: ErrorKind::BadRequest,
                ..
            }
        ),
        "a short body is a malformed request, not a digest mismatch: {short:?}"
    );

    let mut forged = body.to_vec();
    forged[10] ^= 1;
    let forged = pool
        .replicate(&target, term, meta, Bytes::from(forged))
        .await
        .unwrap_err();
    assert!(
        matches!(
            forged,
            CallError::Refused {
                kind: ErrorKind::DigestMismatch,
                ..
            }
        ),
        "{forged:?}"
    );
    assert_eq!(
        cluster.node(1).status().cache_items,
        0,
        "nothing was cached"
    );
}
