//! `cargo xtask udp-probe` (hidden): plain UDP datagrams between two members' network
//! namespaces, to see which directions of a cut let packets through. The end-to-end suite
//! runs it on the host with `nsenter --net` (only the network namespace changes, so the host's
//! xtask binary runs there): a listener in one member's namespace counts what arrives from
//! a sender in another's. QUIC cannot show a one-way cut, since every request needs a reply in
//! the other direction; single datagrams can.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::Shell;

/// First bytes of every probe datagram, so stray packets are not counted.
const MAGIC: &[u8] = b"flotilla-udp-probe";
/// Printed by the listener once it is bound.
pub const LISTENING: &str = "listening";

/// Internal: send or count probe datagrams (run inside a namespace by the e2e suite).
#[derive(Debug, clap::Args)]
pub struct UdpProbe {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// Count probe datagrams arriving on PORT for a while, then print `received N`.
    Listen {
        #[arg(long)]
        port: u16,
        #[arg(long, value_parser = crate::netem::parse_duration)]
        duration: Duration,
    },
    /// Send COUNT probe datagrams to ADDRESS, one per interval.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, value_parser = crate::netem::parse_duration)]
        interval: Duration,
    },
}

impl UdpProbe {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        match self.mode {
            Mode::Listen { port, duration } => {
                let socket = UdpSocket::bind(("0.0.0.0", port))
                    .with_context(|| format!("binding UDP port {port}"))?;
                println!("{LISTENING}");
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
                println!("received {received}");
                Ok(())
            }
            Mode::Send {
                to,
                count,
                interval,
            } => {
                let socket = UdpSocket::bind(("0.0.0.0", 0)).context("binding a UDP socket")?;
                for _ in 0..count {
                    // A lost datagram or an ICMP error is what is being measured, not a failure.
                    let _ = socket.send_to(MAGIC, to);
                    std::thread::sleep(interval);
                }
                Ok(())
            }
        }
    }
}
