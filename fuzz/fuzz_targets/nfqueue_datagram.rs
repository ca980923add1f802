//! Fuzz target `nfqueue_datagram`: a thin wrapper around `chaos::fuzzing::nfqueue_datagram`, which holds the properties and
//! which `cargo test` replays over this target's corpus and regressions.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| chaos::fuzzing::nfqueue_datagram(bytes));
