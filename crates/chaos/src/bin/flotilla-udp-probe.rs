//! `flotilla-udp-probe`: sends or counts plain UDP datagrams, run inside a member's network
//! namespace to see which directions of a cut let packets through (see `chaos::probe`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use chaos::probe;
use chaos::shape::parse_duration;
use clap::Parser;

/// Send or count probe datagrams.
#[derive(Debug, Parser)]
#[command(name = "flotilla-udp-probe", version)]
enum Mode {
    /// Count probe datagrams arriving on PORT for a while, then print `received N`.
    Listen {
        #[arg(long)]
        port: u16,
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
    },
    /// Send COUNT probe datagrams to ADDRESS, one per interval.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        count: u32,
        #[arg(long, value_parser = parse_duration)]
        interval: Duration,
    },
}

fn main() -> ExitCode {
    let result = match Mode::parse() {
        Mode::Listen { port, duration } => {
            probe::listen(port, duration, || println!("{}", probe::LISTENING))
                .map(|received| println!("received {received}"))
        }
        Mode::Send {
            to,
            count,
            interval,
        } => probe::send(to, count, interval),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
