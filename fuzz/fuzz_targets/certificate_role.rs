//! Fuzz target `certificate_role`: a thin wrapper around `wire::fuzzing::certificate_role`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| wire::fuzzing::certificate_role(bytes));
