//! Free host ports for the members, picked at `up` time and then kept, so that a restarted
//! container or process comes back on the same address.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// First host UDP port tried for QUIC endpoints: the canonical usually gets 17000 and node
/// `i` 17000 + i, which keeps the node table easy to read.
const QUIC_BASE: u16 = 17000;
/// First host TCP port tried for metrics endpoints.
const METRICS_BASE: u16 = 19100;
/// How far above a base we look before giving up.
const SEARCH_SPAN: u16 = 2000;

/// Host ports of one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberPorts {
    pub quic: u16,
    pub metrics: u16,
}

/// Picks `count` pairs of ports free on 127.0.0.1 (UDP for QUIC, TCP for metrics), skipping
/// `reserved` (ports published by stopped Flotilla containers, which would take them back).
pub fn allocate(count: usize, reserved: &HashSet<u16>) -> anyhow::Result<Vec<MemberPorts>> {
    let quic = scan(QUIC_BASE, count, reserved, udp_free)?;
    let metrics = scan(METRICS_BASE, count, reserved, tcp_free)?;
    Ok(quic
        .into_iter()
        .zip(metrics)
        .map(|(quic, metrics)| MemberPorts { quic, metrics })
        .collect())
}

fn scan(
    base: u16,
    count: usize,
    reserved: &HashSet<u16>,
    free: fn(u16) -> bool,
) -> anyhow::Result<Vec<u16>> {
    let ports: Vec<u16> = (base..base + SEARCH_SPAN)
        .filter(|port| !reserved.contains(port) && free(*port))
        .take(count)
        .collect();
    if ports.len() < count {
        anyhow::bail!(
            "found only {} free ports on 127.0.0.1 between {base} and {}; stop other clusters with `cargo xtask down`",
            ports.len(),
            base + SEARCH_SPAN
        );
    }
    Ok(ports)
}

/// Whether a UDP port can be bound on 127.0.0.1 (and so is not held on 0.0.0.0 either).
pub fn udp_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether a TCP port can be bound on 127.0.0.1.
pub fn tcp_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_skips_taken_and_reserved_ports() {
        let held = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let held_port = held.local_addr().unwrap().port();
        assert!(!udp_free(held_port));
        let reserved: HashSet<u16> = [QUIC_BASE, METRICS_BASE].into();
        let ports = allocate(3, &reserved).unwrap();
        assert_eq!(ports.len(), 3);
        for pair in &ports {
            assert_ne!(pair.quic, QUIC_BASE);
            assert_ne!(pair.metrics, METRICS_BASE);
        }
        let distinct: HashSet<u16> = ports.iter().map(|p| p.quic).collect();
        assert_eq!(distinct.len(), 3);
    }
}
