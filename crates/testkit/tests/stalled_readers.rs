//! The stalled-reader attack on the canonical, in a test binary of its own so that this
//! process's resident memory is the canonical's (plus a small attacker): a holder of the client
//! certificate lets the canonical send at most 1 KiB per stream, asks for a 4 MB image on 100
//! streams of each of three connections, and never reads. Before the canonical streamed its
//! bodies this held a whole image per stream (1.2 GB for this attack); now the canonical keeps
//! answering others, resets every stalled stream within its bounds, and holds at most a chunk
//! per open stream meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net::pool::Target;
use testkit::{counter, counter_with, credentials, TestCluster};
use wire::frame::RESET_STALLED;
use wire::limits::{
    BODY_CHUNK_BYTES, ORIGIN_STREAMS_PER_CONNECTION, REPLY_SEND_DEADLINE, SEND_STALL_TIMEOUT,
};
use wire::{ImageId, Request, Role};

/// Distinct large images the attacker asks for, so no sharing between requests could help.
const IMAGES: u64 = 4;
const IMAGE_BYTES: usize = 4 * 1024 * 1024;
const CONNECTIONS: usize = 3;
const STREAMS_PER_CONNECTION: usize = 100;
/// What the attacker lets the canonical send on each stream before it must wait for a read.
const ATTACKER_STREAM_WINDOW: u32 = 1024;
/// A generous allowance for a loaded machine on top of each bound; the old canonical never
/// reset a stalled stream at all.
const SLACK: Duration = Duration::from_secs(20);
/// Growth of this process's resident memory allowed during the attack. The bound it stands
/// for: 3 connections × 64 streams × one 64 KiB chunk is 12 MiB, plus QUIC's per-stream state;
/// the old canonical grew by about 1,200 MiB here.
const RESIDENT_GROWTH_LIMIT: u64 = 96 * 1024 * 1024;

/// This process's resident set size, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Writes `IMAGES` images of `IMAGE_BYTES` pseudo-random bytes into `dir`.
fn write_images(dir: &std::path::Path) {
    for id in 1..=IMAGES {
        let body: Vec<u8> = (0..IMAGE_BYTES)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ id as u8)
            .collect();
        std::fs::write(dir.join(format!("{id}.png")), body).unwrap();
    }
}

/// One attacking connection: a client certificate, a 1 KiB stream receive window.
async fn attacker_connection(
    canonical: std::net::SocketAddr,
) -> (quinn::Endpoint, quinn::Connection) {
    let mut config = credentials(Role::Client).client_config().unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(ATTACKER_STREAM_WINDOW.into());
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(canonical, &Role::Canonical.server_name())
        .unwrap()
        .await
        .expect("the attacker's certificate is a valid client certificate");
    (endpoint, connection)
}

/// Asks for `id` on a new stream and never reads; returns the reset code the canonical sent
/// and how long after the request it came.
async fn stalled_request(
    connection: quinn::Connection,
    id: ImageId,
) -> (Option<quinn::VarInt>, Duration) {
    // Beyond the canonical's stream limit this waits for a stream, as a real attacker would.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let asked = Instant::now();
    let header = wire::frame::encode_header(&Request::GetImage { id }).unwrap();
    send.write_all(&header).await.unwrap();
    let _ = send.finish();
    // Waits for a reset without reading a byte of the reply.
    let reset = tokio::time::timeout(REPLY_SEND_DEADLINE + SLACK * 2, recv.received_reset())
        .await
        .ok()
        .and_then(|reset| reset.ok())
        .flatten();
    (reset, asked.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_are_reset_and_hold_bounded_memory() {
    let images = tempfile::tempdir().unwrap();
    write_images(images.path());
    let cluster = TestCluster::builder()
        .nodes(0)
        .images(images.path())
        .start()
        .await;
    let registry = cluster.canonical().registry.clone();
    let pool = testkit::pool_with(&credentials(Role::Client));
    let canonical = Target::new(cluster.origin.to_string(), Role::Canonical);
    // Warm up: a whole fetch, so the baseline includes what serving one costs.
    let warm = pool.get_image(&canonical, ImageId(1)).await.unwrap();
    assert_eq!(warm.body.len(), IMAGE_BYTES);
    drop(warm);
    let baseline = resident_bytes();

    // Samples resident memory and the canonical's reply-bytes gauge throughout the attack.
    let sampling = Arc::new(AtomicBool::new(true));
    let peak_resident = Arc::new(AtomicU64::new(baseline));
    let peak_held = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, peak_resident, peak_held) =
            (sampling.clone(), peak_resident.clone(), peak_held.clone());
        let registry = registry.clone();
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak_resident.fetch_max(resident_bytes(), Ordering::Relaxed);
                let held = counter(&registry.render(), canonical::REPLY_BUFFER_GAUGE);
                peak_held.fetch_max(held as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let mut endpoints = Vec::new();
    let mut requests = Vec::new();
    for _ in 0..CONNECTIONS {
        let (endpoint, connection) = attacker_connection(cluster.origin).await;
        for stream in 0..STREAMS_PER_CONNECTION {
            let id = ImageId(stream as u64 % IMAGES + 1);
            requests.push(tokio::spawn(stalled_request(connection.clone(), id)));
        }
        endpoints.push((endpoint, connection));
    }

    // Once the attack holds streams open, another client is still served, whole and verified.
    let landed = testkit::wait_until(SLACK, || {
        counter(&registry.render(), canonical::REPLY_BUFFER_GAUGE) > 0.0
    })
    .await;
    assert!(landed, "the attack never made the canonical hold a reply");
    let started = Instant::now();
    let served = tokio::time::timeout(SLACK, pool.get_image(&canonical, ImageId(2)))
        .await
        .expect("the canonical answered another client during the attack")
        .unwrap();
    assert_eq!(served.body.len(), IMAGE_BYTES);
    let served_in = started.elapsed();

    // Every stalled stream is reset by the canonical, in time, without the attacker reading.
    let mut slowest = Duration::ZERO;
    for request in requests {
        let (reset, after) = request.await.unwrap();
        assert_eq!(
            reset,
            Some(RESET_STALLED.into()),
            "a stalled stream was not reset as stalled"
        );
        assert!(
            after <= SEND_STALL_TIMEOUT + SLACK,
            "a stream that took nothing was reset only after {after:?}"
        );
        slowest = slowest.max(after);
    }
    let stalled = counter_with(
        &registry.render(),
        "flotilla_requests_total",
        "outcome=\"stalled\"",
    );
    assert_eq!(stalled, (CONNECTIONS * STREAMS_PER_CONNECTION) as f64);

    // What the canonical held for them was bounded, and is given back.
    let released = testkit::wait_until(SLACK, || {
        counter(&registry.render(), canonical::REPLY_BUFFER_GAUGE) == 0.0
    })
    .await;
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(
        released,
        "reply bytes still held after every stream was reset"
    );
    let peak_held = peak_held.load(Ordering::Relaxed);
    // Every stream the attacker may hold open, plus the one reply to the honest client above,
    // which the sampler can catch mid-chunk while all of the attacker's streams hold theirs.
    let held_bound = ((CONNECTIONS as u64) * u64::from(ORIGIN_STREAMS_PER_CONNECTION) + 1)
        * BODY_CHUNK_BYTES as u64;
    assert!(
        peak_held <= held_bound,
        "held {peak_held} reply bytes, over the bound of {held_bound}"
    );
    let peak = peak_resident.load(Ordering::Relaxed);
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "stalled-reader attack ({CONNECTIONS} connections x {STREAMS_PER_CONNECTION} streams x \
         {} MiB): resident {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB), {:.1} MiB after; \
         peak reply bytes held {:.1} MiB; other client served in {served_in:?}; slowest reset \
         {slowest:?}",
        IMAGE_BYTES / (1024 * 1024),
        mib(baseline),
        mib(peak),
        mib(growth),
        mib(resident_bytes()),
        mib(peak_held),
    );
    assert!(
        growth <= RESIDENT_GROWTH_LIMIT,
        "resident memory grew by {:.1} MiB under the attack (limit {:.1} MiB)",
        mib(growth),
        mib(RESIDENT_GROWTH_LIMIT)
    );

    // And the canonical still serves once the attack is over.
    let after = pool.get_image(&canonical, ImageId(3)).await.unwrap();
    assert_eq!(after.body.len(), IMAGE_BYTES);
    drop(endpoints);
}
