//! What one cache hit costs, for a profiler: a one-edge cluster in this process, one object of
//! `SIZE` bytes fetched once (the miss), then `HITS` hits from one client, one at a time.
//!
//! Run it twice under valgrind's callgrind, with 0 hits and with N, and divide the difference
//! of the instruction counts by N: the instructions of one hit, client and edge together
//! (TLS both ways, QUIC, the client's digest check), repeatable on a busy machine where wall
//! time is not:
//!
//! ```sh
//! cargo build --release -p flotilla-testkit --example hit_cost
//! valgrind --tool=callgrind --callgrind-out-file=hits.out target/release/examples/hit_cost 1m 50
//! callgrind_annotate --inclusive=yes hits.out | head -60
//! ```

use std::time::Instant;

use testkit::TestCluster;
use wire::{CacheOutcome, ImageId};

fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.char_indices().last()? {
        (at, 'k') => (&text[..at], 1024),
        (at, 'm') => (&text[..at], 1024 * 1024),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok().map(|n| n * unit)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: hit_cost SIZE HITS (e.g. hit_cost 1m 50)";
    let size = args
        .next()
        .as_deref()
        .and_then(parse_size)
        .ok_or_else(|| anyhow::anyhow!(usage))?;
    let hits: u32 = args
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| anyhow::anyhow!(usage))?;
    let images = tempfile::tempdir()?;
    // Bytes that do not compress or repeat, as an image's would not.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let body: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(images.path().join("1.bin"), &body)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cluster = TestCluster::builder()
            .nodes(1)
            .images(images.path())
            .start()
            .await;
        let client = cluster.client();
        let first = client.get_image(ImageId(1)).await?;
        anyhow::ensure!(first.body.len() == size, "the miss returned the wrong size");
        let started = Instant::now();
        for _ in 0..hits {
            let hit = client.get_image(ImageId(1)).await?;
            anyhow::ensure!(
                hit.outcome == CacheOutcome::Hit && hit.body.len() == size,
                "a read that should have hit did not"
            );
        }
        let elapsed = started.elapsed();
        eprintln!(
            "{hits} hits of {size} bytes in {:.1} ms ({:.2} ms each)",
            elapsed.as_secs_f64() * 1e3,
            elapsed.as_secs_f64() * 1e3 / f64::from(hits.max(1))
        );
        drop(cluster);
        Ok(())
    })
}
