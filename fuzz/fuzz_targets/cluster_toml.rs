//! Fuzz target `cluster_toml`: a thin wrapper around `wire::fuzzing::cluster_toml`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wire::fuzzing::cluster_toml(bytes));
