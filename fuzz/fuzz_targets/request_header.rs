//! Fuzz target `request_header`: a thin wrapper around `wire::fuzzing::request_header`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wire::fuzzing::request_header(bytes));
