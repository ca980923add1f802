//! Fuzz target `election_messages`: a thin wrapper around `election::fuzzing::messages`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| election::fuzzing::messages(bytes));
