//! Fuzz target `origin_seal`: a thin wrapper around `wire::fuzzing::origin_seal`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wire::fuzzing::origin_seal(bytes));
