//! The UDP probe (`flotilla-udp-probe`): plain UDP datagrams between two members' network
//! namespaces, to see which directions of a cut let packets through. The end-to-end suite
//! runs it on the host with `nsenter --net` (only the network namespace changes, so the host's
//! binary runs there): a listener in one member's namespace counts what arrives from
//! a sender in another's. QUIC cannot show a one-way cut, since every request needs a reply in
//! the other direction; single datagrams can.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;

/// First bytes of every probe datagram, so stray packets are not counted.
const MAGIC: &[u8] = b"flotilla-udp-probe";
/// Printed by the listener once it is bound.
pub const LISTENING: &str = "listening";

/// Counts probe datagrams arriving on UDP `port` for `duration`; calls `bound` once the
/// socket is bound (the binary prints [`LISTENING`] then, so a sender knows when to start).
pub fn listen(port: u16, duration: Duration, bound: impl FnOnce()) -> anyhow::Result<u32> {
    let socket =
        UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP port {port}"))?;
    bound();
    let deadline = Instant::now() + duration;
    let mut received = 0u32;
    let mut buffer = [0u8; 512];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match socket.recv(&mut buffer) {
            Ok(read) if buffer[..read].starts_with(MAGIC) => received += 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("receiving probe datagrams"),
        }
    }
    Ok(received)
}

/// Sends `count` probe datagrams to `to`, one per `interval`.
pub fn send(to: SocketAddr, count: u32, interval: Duration) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).context("binding a UDP socket")?;
    for _ in 0..count {
        // A lost datagram or an ICMP error is what is being measured, not a failure.
        let _ = socket.send_to(MAGIC, to);
        std::thread::sleep(interval);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_counts_only_probe_datagrams() {
        let port = {
            let probe = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
            probe.local_addr().unwrap().port()
        };
        let (bound, is_bound) = std::sync::mpsc::channel();
        let listener = std::thread::spawn(move || {
            listen(port, Duration::from_millis(500), || bound.send(()).unwrap())
        });
        is_bound.recv().unwrap();
        let to: SocketAddr = ([127, 0, 0, 1], port).into();
        UdpSocket::bind(("127.0.0.1", 0))
            .unwrap()
            .send_to(b"not a probe", to)
            .unwrap();
        send(to, 3, Duration::from_millis(10)).unwrap();
        assert_eq!(listener.join().unwrap().unwrap(), 3);
    }
}
