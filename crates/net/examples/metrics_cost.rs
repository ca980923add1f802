//! What counting one request costs: `cargo run --release -p flotilla-net --example
//! metrics_cost`. Side by side in one run: registering the labelled counter on every request
//! (what `Registry::count_request` did before its handles were kept) and the kept handle,
//! single-threaded and from two threads at once.

use std::hint::black_box;
use std::time::Instant;

use net::metrics::Registry;

/// Requests counted per measurement.
const ROUNDS: u32 = 1_000_000;

/// The old per-request path: build the key, describe and register the counter, increment.
fn register_every_time(registry: &Registry, kind: &'static str, outcome: &'static str) {
    registry
        .counter(
            "flotilla_requests_total",
            "Requests served, by kind and outcome",
            &[("kind", kind.to_string()), ("outcome", outcome.to_string())],
        )
        .increment(1);
}

/// Mean nanoseconds of `count` over [`ROUNDS`] calls on each of `threads` threads.
fn mean_ns(threads: u32, count: fn(&Registry, &'static str, &'static str)) -> f64 {
    let registry = Registry::new();
    count(&registry, "get_image", "ok");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let registry = registry.clone();
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    count(black_box(&registry), "get_image", "ok");
                }
            });
        }
    });
    let text = registry.render();
    assert!(text.contains("flotilla_requests_total"), "{text}");
    started.elapsed().as_secs_f64() * 1e9 / f64::from(ROUNDS)
}

fn main() {
    println!("counting one request (mean ns per call; wall time per call with 2 threads)");
    for threads in [1, 2] {
        let before = mean_ns(threads, register_every_time);
        let after = mean_ns(threads, |registry, kind, outcome| {
            registry.count_request(kind, outcome)
        });
        println!(
            "{threads} thread(s): registered per request {before:>7.0} ns, kept handle {after:>5.0} ns ({:.0}x)",
            before / after
        );
    }
}
