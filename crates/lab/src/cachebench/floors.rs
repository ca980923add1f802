//! The floors a cache hit cannot beat on this machine, measured in the same run as the table:
//! how fast ring seals AES-128-GCM (every byte of a hit is sealed once) and how fast memory
//! copies a 5 MB buffer. Each is measured on the server's core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use serde::{Deserialize, Serialize};

/// Bytes sealed per call: about one full-size QUIC packet on a 1500-byte MTU.
const SEAL_PACKET_BYTES: usize = 1_400;
/// Bytes copied per memcpy.
const MEMCPY_BYTES: usize = 5 * 1024 * 1024;
/// Calls between two looks at the clock.
const CALLS_PER_CLOCK_READ: u64 = 64;

/// The floors, in MB/s (10^6 bytes per second).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Floors {
    /// AES-128-GCM seal with ring, in packets of [`SEAL_PACKET_BYTES`].
    pub aes_128_gcm_seal_mb_per_s: f64,
    /// Bytes of the seal's packets.
    pub seal_packet_bytes: usize,
    /// `copy_from_slice` of a 5 MiB buffer.
    pub memcpy_5mb_mb_per_s: f64,
    /// The core both ran on (the server's), when pinning worked.
    pub core: Option<usize>,
}

/// Measures both floors for about `each` apiece, on `core` when it can pin to it.
pub fn measure(each: Duration, core: usize) -> anyhow::Result<Floors> {
    let worker = std::thread::spawn(move || {
        let pinned = pin_current_thread(core);
        let seal = seal_rate(each);
        let memcpy = memcpy_rate(each);
        Floors {
            aes_128_gcm_seal_mb_per_s: seal,
            seal_packet_bytes: SEAL_PACKET_BYTES,
            memcpy_5mb_mb_per_s: memcpy,
            core: pinned.then_some(core),
        }
    });
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("measuring the floors failed"))
}

/// Runs `step` (which handles `bytes_per_call` bytes) for about `duration`; MB/s.
fn rate(duration: Duration, bytes_per_call: usize, mut step: impl FnMut(u64)) -> f64 {
    let started = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..CALLS_PER_CLOCK_READ {
            step(calls);
            calls += 1;
        }
        let elapsed = started.elapsed();
        if elapsed >= duration {
            return (calls * bytes_per_call as u64) as f64 / elapsed.as_secs_f64() / 1e6;
        }
    }
}

fn seal_rate(duration: Duration) -> f64 {
    // A fixed key is fine: the rate does not depend on the key.
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("16 bytes is an AES-128 key"),
    );
    let mut packet = vec![0x5au8; SEAL_PACKET_BYTES];
    rate(duration, SEAL_PACKET_BYTES, |counter| {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut packet,
            )
            .expect("a 1400-byte packet is within AES-GCM's bound");
        let _sealed = black_box(tag);
    })
}

fn memcpy_rate(duration: Duration) -> f64 {
    let source = vec![0xa5u8; MEMCPY_BYTES];
    let mut target = vec![0u8; MEMCPY_BYTES];
    rate(duration, MEMCPY_BYTES, |_| {
        target.copy_from_slice(black_box(&source));
        black_box(&mut target);
    })
}

/// Pins the calling thread to `core`; false when the kernel refuses (e.g. no such core).
fn pin_current_thread(core: usize) -> bool {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set, and CPU_SET stays within it
    // for any core below CPU_SETSIZE (checked); sched_setaffinity(0, …) acts on this thread.
    unsafe {
        if core >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_positive_rates() {
        let floors = measure(Duration::from_millis(20), 0).unwrap();
        assert!(floors.aes_128_gcm_seal_mb_per_s > 0.0);
        assert!(floors.memcpy_5mb_mb_per_s > 0.0);
    }
}
