//! Bad peers and bad bytes: foreign certificates, client certificates sending edge-only
//! requests, malformed and oversized frames, an upstream that sends corrupted bodies, a file
//! changed on the canonical's disk, and a peer opening more connections than it may hold.
//! (The stalled-reader attack has a test binary of its own: `stalled_readers.rs`.)

use std::sync::Arc;

use bytes::Bytes;
use net::frame::BodyCheck;
use net::pool::{Pool, Target};
use net::tls::Credentials;
use net::CallError;
use testkit::{credentials, origin_signer, pool_with, TestCluster};
use wire::election::{ElectionKind, ElectionMessage};
use wire::limits::{BODY_CHUNK_BYTES, ORIGIN_CONNECTIONS_PER_PEER, STREAM_RECEIVE_WINDOW};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_header_gets_a_plain_sentence_not_decoder_debug_text() {
    let cluster = TestCluster::builder().start().await;
    let pool = pool_with(&credentials(Role::Client));
    let node = Target::new(cluster.file.nodes[0].quic.clone(), Role::Node(NodeIndex(1)));
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    let frame = |cbor: &[u8]| {
        let mut frame = (cbor.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(cbor);
        frame
    };
    let mut wrong_shape = Vec::new();
    ciborium::into_writer(&("not", "a", "request"), &mut wrong_shape).unwrap();
    let mut unknown_kind = Vec::new();
    ciborium::into_writer(
        &std::collections::BTreeMap::from([("Reboot", 1)]),
        &mut unknown_kind,
    )
    .unwrap();
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("garbage cbor", frame(&[0xbf, 0xff, 0x13, 0x37, 0xde, 0xad])),
        ("wrong shape", frame(&wrong_shape)),
        ("unknown request kind", frame(&unknown_kind)),
        ("invalid cbor", frame(&[0x1c, 0x00])),
        ("cut short", frame(&[0x82, 0x01])),
    ];
    for target in [&node, &canonical] {
        for (what, bytes) in &frames {
            let reply = send_raw(&pool, target, bytes).await;
            let Some(Response::Error {
                kind: ErrorKind::BadRequest,
                message,
            }) = reply
            else {
                panic!("{what} to {}: no bad-request reply: {reply:?}", target.role);
            };
            assert!(
                message.starts_with("the header is not a valid Flotilla message: "),
                "{what} to {}: the reply must say what was wrong: {message}",
                target.role
            );
            for debug in ["Semantic(", "Syntax(", "Io(", "Some(", "None", "Recursion"] {
                assert!(
                    !message.contains(debug),
                    "{what} to {}: debug text `{debug}` in {message:?}",
                    target.role
                );
            }
            assert!(!message.contains('\n'), "{what}: one line: {message:?}");
        }
    }
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
async fn a_drained_body_is_checked_as_asked() {
    // `client bench` drains bodies: with the digest checked a corrupt one is an error, with
    // the size only (as wrk reads nginx) it is counted, and a kept body is always checked.
    let cluster = TestCluster::builder()
        .nodes(1)
        .origin(Arc::new(CorruptingOrigin(origin_signer())))
        .start()
        .await;
    let pool = pool_with(&credentials(Role::Client));
    let target = Target::new(cluster.file.canonical.quic.clone(), Role::Canonical);
    let id = ImageId(3);
    let error = match pool.drain_image(&target, id, BodyCheck::Digest).await {
        Err(error) => error.to_string(),
        Ok(reply) => panic!("a corrupt body was drained as good: {} bytes", reply.bytes),
    };
    assert!(error.contains("digest mismatch"), "{error}");
    let drained = pool
        .drain_image(&target, id, BodyCheck::Size)
        .await
        .unwrap();
    assert_eq!((drained.bytes, drained.meta.size), (4096, 4096));
    let error = match pool.get_image(&target, id).await {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a corrupt body was returned"),
    };
    assert!(error.contains("digest mismatch"), "{error}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_changed_on_the_canonical_disk_is_never_served_whole() {
    let images = tempfile::tempdir().unwrap();
    // Larger than a stream's receive window: the canonical cannot have read the end of the
    // file before the reader takes most of the body, so a change made once the reply has
    // started is read mid-stream.
    let size = STREAM_RECEIVE_WINDOW as usize + 64 * BODY_CHUNK_BYTES + 5;
    let body: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let path = images.path().join("21.png");
    std::fs::write(&path, &body).unwrap();
    let cluster = TestCluster::builder()
        .nodes(1)
        .replicas(1)
        .images(images.path())
        .start()
        .await;
    let pool = pool_with(&credentials(Role::Client));
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    let mut exchange = pool
        .call(&canonical, &Request::GetImage { id: ImageId(21) }, None)
        .await
        .unwrap();
    let Response::Image { meta, .. } = exchange.response.clone() else {
        panic!("no image header: {:?}", exchange.response);
    };
    // The file matched when the reply started. Same length, one byte changed in the last
    // chunk: only the digest of the whole stream can tell, after most of the body went out.
    let mut changed = body;
    changed[size - 2] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    let error = exchange
        .read_body(&meta.meta)
        .await
        .expect_err("a file changed behind the catalog must not be served");
    assert!(error.to_string().contains("reset"), "{error}");

    // Asked again, the changed file is refused before a byte of it goes out.
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let refused = client.get_image(ImageId(21)).await.err().unwrap();
    assert!(
        refused
            .to_string()
            .contains("no longer matches the catalog"),
        "{refused}"
    );
    assert_eq!(
        cluster.node(1).status().cache_items,
        0,
        "nothing was cached"
    );
    let corrupt = testkit::counter_with(
        &cluster.canonical().registry.render(),
        "flotilla_requests_total",
        "outcome=\"corrupt\"",
    );
    assert!(
        corrupt >= 2.0,
        "the canonical counted {corrupt} corrupt replies"
    );
    // The canonical serves its other images as before.
    pool.ping(&canonical).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_its_connection_bound_loses_its_oldest_connection() {
    let cluster = TestCluster::builder().nodes(0).samples(10).start().await;
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    let mut pools = Vec::new();
    for _ in 0..=ORIGIN_CONNECTIONS_PER_PEER {
        // Each pool is its own endpoint: a new connection from the same peer (the client
        // certificate on 127.0.0.1). A ping answered means the canonical admitted it.
        let pool = pool_with(&credentials(Role::Client));
        pool.ping(&canonical).await.unwrap();
        pools.push(pool);
    }
    let oldest = pools[0].existing(&canonical);
    let closed = match oldest {
        None => true,
        Some(connection) => {
            tokio::time::timeout(std::time::Duration::from_secs(10), connection.closed())
                .await
                .is_ok()
        }
    };
    assert!(closed, "the oldest connection past the bound stays open");
    for pool in &pools[1..] {
        assert!(
            pool.existing(&canonical).is_some(),
            "a newer connection was closed"
        );
        pool.ping(&canonical).await.unwrap();
    }
    // A peer that reconnects is served again: its newest connection always wins.
    pools[0].ping(&canonical).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_slower_than_the_minimum_pace_is_reset() {
    let images = tempfile::tempdir().unwrap();
    let size = 4 * BODY_CHUNK_BYTES;
    std::fs::write(images.path().join("5.png"), vec![5u8; size]).unwrap();
    let cluster = TestCluster::builder()
        .nodes(0)
        .images(images.path())
        .start()
        .await;
    // A client certificate on a connection that lets the canonical send 1 KiB at a time.
    let mut config = credentials(Role::Client).client_config().unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(1024u32.into());
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(cluster.origin, &Role::Canonical.server_name())
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let header = wire::frame::encode_header(&Request::GetImage { id: ImageId(5) }).unwrap();
    send.write_all(&header).await.unwrap();
    let _ = send.finish();

    // Reads 1 KiB a quarter second, 4 KiB/s: it never stalls, but is far below the pace.
    let started = std::time::Instant::now();
    let mut received = 0;
    let mut buffer = [0u8; 1024];
    let ended = loop {
        match recv.read(&mut buffer).await {
            Ok(Some(read)) => received += read,
            Ok(None) => break None,
            Err(quinn::ReadError::Reset(code)) => break Some(code),
            Err(error) => panic!("unexpected read error: {error}"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "a reader at 4 KiB/s was served for a minute"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert_eq!(ended, Some(wire::frame::RESET_STALLED.into()));
    assert!(received < size, "the whole body went to a too-slow reader");
    assert!(received > 0, "the reader got nothing at all: {received}");
}
