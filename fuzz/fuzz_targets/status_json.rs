//! Fuzz target `status_json`: a thin wrapper around `wire::fuzzing::status_json`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wire::fuzzing::status_json(bytes));
