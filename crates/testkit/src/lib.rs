//! Flotilla's test kit: a whole cluster in one process for integration tests — a canonical (or
//! an origin of the test's own making) and N edges on 127.0.0.1, every socket bound before any
//! member starts, every certificate from one test CA, every member started through its crate's
//! own `start`. The whole-system tests live beside it in `tests/`.
//!
//! - [`cluster`]: [`TestCluster`] and its [`Builder`]; dropping a cluster stops it.
//! - [`ca`]: the shared test CA, per-role credentials, an origin signer and a pool.
//! - [`prometheus`]: reading counters out of Prometheus text.
//! - [`wait_until`]: polling a condition with a generous deadline instead of sleeping.

pub mod ca;
pub mod cluster;
pub mod prometheus;

use std::path::Path;
use std::time::{Duration, Instant};

pub use ca::{credentials, origin_signer, pool_with, test_ca};
pub use cluster::{Builder, TestCluster, TestNode};
pub use prometheus::{counter, counter_with};

/// Polls `condition` until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F: FnMut() -> bool>(deadline: Duration, mut condition: F) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Reads `<id>.<ext>` from `dir`.
pub fn find_file(dir: &Path, id: u64) -> Option<Vec<u8>> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name().to_string_lossy().to_string();
        (name.split('.').next() == Some(&id.to_string()) && !name.starts_with('.'))
            .then(|| std::fs::read(entry.path()).ok())
            .flatten()
    })
}
