//! Fuzz target `catalog`: a thin wrapper around `canonical::fuzzing::catalog`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| canonical::fuzzing::catalog(bytes));
