//! Network faults a member makes in its own UDP socket, as an operator asks over
//! [`crate::Request::NetFaults`]: datagrams from or to given peers dropped, and delay, jitter
//! and loss on what it sends. This is how partitions and netem reach a member on another
//! machine of a swarm, where the host side cannot enter its network namespace.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Most peer addresses one list may name: far more than any cluster has members, so a
/// request cannot make a member hold an unbounded list.
pub const MAX_FAULT_PEERS: usize = 256;
/// Longest delay or jitter a member accepts (as `netem` on the host side).
pub const MAX_FAULT_DELAY_US: u64 = 60_000_000;
/// Loss of every datagram, in parts per million.
pub const ALL_LOST_PPM: u32 = 1_000_000;

/// The faults of one member's socket; the default is none (what `heal` and `netem --clear`
/// set). A peer address with port 0 stands for every port of that IP address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetFaults {
    /// Datagrams arriving from these addresses are dropped.
    pub drop_from: Vec<SocketAddr>,
    /// Datagrams addressed to these are dropped instead of sent.
    pub drop_to: Vec<SocketAddr>,
    /// Every datagram sent waits this long (plus a uniform draw in ±`jitter_us`).
    pub delay_us: u64,
    pub jitter_us: u64,
    /// Share of sent datagrams dropped, in parts per million.
    pub loss_ppm: u32,
}

/// Why a [`NetFaults`] request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetFaultsError {
    #[error("a fault list names {0} peers; at most {MAX_FAULT_PEERS} are allowed")]
    TooManyPeers(usize),
    #[error("a delay or jitter of {0} us is longer than the 60 s allowed")]
    TooLong(u64),
    #[error("a loss of {0} parts per million is more than all of them (1000000)")]
    TooMuchLoss(u32),
}

impl NetFaults {
    /// Whether these faults change nothing.
    pub fn is_none(&self) -> bool {
        *self == NetFaults::default()
    }

    /// The same faults if every bound holds; what a member checks before it applies them.
    pub fn checked(self) -> Result<NetFaults, NetFaultsError> {
        for list in [&self.drop_from, &self.drop_to] {
            if list.len() > MAX_FAULT_PEERS {
                return Err(NetFaultsError::TooManyPeers(list.len()));
            }
        }
        for value in [self.delay_us, self.jitter_us] {
            if value > MAX_FAULT_DELAY_US {
                return Err(NetFaultsError::TooLong(value));
            }
        }
        if self.loss_ppm > ALL_LOST_PPM {
            return Err(NetFaultsError::TooMuchLoss(self.loss_ppm));
        }
        Ok(self)
    }

    /// Whether `peer` is named by `list` (port 0 in the list matches any port). IPv4 peers
    /// seen through a dual-stack socket as `::ffff:a.b.c.d` match their IPv4 spelling.
    pub fn names(list: &[SocketAddr], peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        list.iter().any(|entry| {
            entry.ip().to_canonical() == ip && (entry.port() == 0 || entry.port() == peer.port())
        })
    }
}

impl fmt::Display for NetFaults {
    /// `drop from 10.0.1.3, 10.0.1.4; delay 100 ms ± 10 ms, loss 1%`, or `no faults`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("no faults");
        }
        let list = |addresses: &[SocketAddr]| {
            addresses
                .iter()
                .map(|a| match a.port() {
                    0 => a.ip().to_string(),
                    _ => a.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.drop_from.is_empty() {
            parts.push(format!("drop from {}", list(&self.drop_from)));
        }
        if !self.drop_to.is_empty() {
            parts.push(format!("drop to {}", list(&self.drop_to)));
        }
        if self.delay_us > 0 {
            let mut delay = format!("delay {} ms", self.delay_us as f64 / 1e3);
            if self.jitter_us > 0 {
                delay.push_str(&format!(" ± {} ms", self.jitter_us as f64 / 1e3));
            }
            parts.push(delay);
        }
        if self.loss_ppm > 0 {
            parts.push(format!("loss {}%", f64::from(self.loss_ppm) / 1e4));
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_names_every_port_of_an_address() {
        let list: Vec<SocketAddr> = vec![
            "10.0.1.3:0".parse().unwrap(),
            "127.0.0.1:4433".parse().unwrap(),
        ];
        assert!(NetFaults::names(&list, "10.0.1.3:7000".parse().unwrap()));
        assert!(NetFaults::names(
            &list,
            "[::ffff:10.0.1.3]:7000".parse().unwrap()
        ));
        assert!(NetFaults::names(&list, "127.0.0.1:4433".parse().unwrap()));
        assert!(!NetFaults::names(&list, "127.0.0.1:4434".parse().unwrap()));
        assert!(!NetFaults::names(&list, "10.0.1.4:7000".parse().unwrap()));
    }

    #[test]
    fn out_of_bounds_faults_are_refused() {
        let too_long = NetFaults {
            delay_us: MAX_FAULT_DELAY_US + 1,
            ..NetFaults::default()
        };
        assert_eq!(too_long.checked(), Err(NetFaultsError::TooLong(60_000_001)));
        let too_lossy = NetFaults {
            loss_ppm: ALL_LOST_PPM + 1,
            ..NetFaults::default()
        };
        assert!(too_lossy.checked().is_err());
        let crowded = NetFaults {
            drop_from: vec!["10.0.0.1:0".parse().unwrap(); MAX_FAULT_PEERS + 1],
            ..NetFaults::default()
        };
        assert_eq!(crowded.checked(), Err(NetFaultsError::TooManyPeers(257)));
        let fine = NetFaults {
            drop_to: vec!["10.0.0.1:0".parse().unwrap()],
            delay_us: 100_000,
            jitter_us: 10_000,
            loss_ppm: 10_000,
            ..NetFaults::default()
        };
        assert_eq!(fine.clone().checked(), Ok(fine.clone()));
        assert_eq!(
            fine.to_string(),
            "drop to 10.0.0.1; delay 100 ms ± 10 ms; loss 1%"
        );
        assert_eq!(NetFaults::default().to_string(), "no faults");
    }
}
