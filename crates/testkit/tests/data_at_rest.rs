//! Data at rest: the canonical's catalog of digests outlives the canonical, so a file changed
//! on disk while the canonical was down is refused when it is read after the restart (one
//! clear error, counted, nothing cached on an edge), and only `--reindex` accepts it. (A file
//! changed while the canonical runs is `security.rs`'s
//! `an_image_changed_on_the_canonical_disk_is_never_served_whole`.)

use std::path::Path;
use std::time::Duration;

use net::pool::Target;
use net::CallError;
use testkit::{credentials, pool_with, TestCluster};
use wire::limits::BODY_CHUNK_BYTES;
use wire::message::ErrorKind;
use wire::{ImageId, Role};

/// An image of several chunks, so a flip in its middle is far from both ends.
fn write_image(dir: &Path, id: u64) -> Vec<u8> {
    let size = 3 * BODY_CHUNK_BYTES + 5;
    let body: Vec<u8> = (0..size)
        .map(|i| ((i * 7 + id as usize) % 251) as u8)
        .collect();
    std::fs::write(dir.join(format!("{id}.png")), &body).unwrap();
    body
}

/// One byte flipped in the middle of the file: same size, another SHA-256.
fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

async fn start(images: &Path) -> TestCluster {
    TestCluster::builder()
        .nodes(1)
        .replicas(1)
        .images(images)
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_corrupted_while_the_canonical_was_down_is_refused_after_the_restart() {
    let images = tempfile::tempdir().unwrap();
    write_image(images.path(), 5);
    let other = write_image(images.path(), 6);
    // The first start catalogues the files as they are.
    drop(start(images.path()).await);
    flip_middle_byte(&images.path().join("5.png"));

    let cluster = start(images.path()).await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let error = client
        .get_image(ImageId(5))
        .await
        .err()
        .expect("a file corrupted at rest must not be served");
    let line = error.to_string();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("image 5"), "{line}");
    assert!(
        line.contains("5.png no longer matches the catalog"),
        "{line}"
    );
    assert!(line.contains("--reindex"), "{line}");
    assert_eq!(
        cluster.node(1).status().cache_items,
        0,
        "nothing was cached"
    );

    // Asked directly, the canonical refuses before a byte of the body: an error reply, not
    // a reset stream.
    let pool = pool_with(&credentials(Role::Client));
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    match pool.get_image(&canonical, ImageId(5)).await {
        Err(CallError::Refused {
            kind: ErrorKind::Internal,
            message,
        }) => assert!(message.starts_with("image 5: "), "{message}"),
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("served a corrupted file"),
    }
    // The requests counter is bumped once the reply has gone out, so it may trail the
    // client's answer by a moment.
    let counted = |name: &str, labels: &str| {
        testkit::counter_with(&cluster.canonical().registry.render(), name, labels)
    };
    testkit::wait_until(Duration::from_secs(5), || {
        counted("flotilla_requests_total", "outcome=\"corrupt\"") >= 2.0
    })
    .await;
    let corrupt = counted("flotilla_corrupt_images_total", "");
    assert!(corrupt >= 2.0, "counted {corrupt} refusals");
    let outcome = counted("flotilla_requests_total", "outcome=\"corrupt\"");
    assert!(outcome >= 2.0, "counted {outcome} corrupt replies");

    // The other images are served as before.
    let fetched = client.get_image(ImageId(6)).await.unwrap();
    assert_eq!(&fetched.body[..], &other[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_accepts_a_deliberate_change_and_says_what_changed() {
    let images = tempfile::tempdir().unwrap();
    write_image(images.path(), 5);
    drop(start(images.path()).await);
    let path = images.path().join("5.png");
    flip_middle_byte(&path);
    let changed = std::fs::read(&path).unwrap();
    write_image(images.path(), 7);

    let catalog = canonical::store::default_catalog_path(images.path());
    let reindexed = canonical::reindex(images.path(), &catalog).unwrap();
    let lines: Vec<String> = reindexed.notices.iter().map(|n| n.to_string()).collect();
    assert_eq!(reindexed.images, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("image 5: changed 5.png (sha-256 "),
        "{lines:?}"
    );
    assert!(lines[1].starts_with("image 7: added 7.png"), "{lines:?}");

    let cluster = start(images.path()).await;
    let client = cluster.client();
    client.connect_all().await.unwrap();
    let fetched = client.get_image(ImageId(5)).await.unwrap();
    assert_eq!(&fetched.body[..], &changed[..]);
}
