//! `flotilla-delayer`: the NFQUEUE delayer that `cargo xtask netem` starts on the host inside
//! one member's network namespace (through `nsenter --net`) on kernels without the netem
//! qdisc. It is not meant to be run by hand; see `chaos::nfqueue`.

use std::process::ExitCode;

use chaos::nfqueue;
use chaos::shape::Shape;
use clap::Parser;

/// Delay or drop the packets NFQUEUE 7000 of this network namespace receives, until a
/// process (the member's PID 1) is gone.
#[derive(Debug, Parser)]
#[command(name = "flotilla-delayer", version)]
struct Args {
    /// Delay of every packet, in microseconds.
    #[arg(long)]
    delay_us: u64,
    /// Uniform variation of the delay either way, in microseconds.
    #[arg(long, default_value_t = 0)]
    jitter_us: u64,
    /// Share of packets dropped, in parts per million.
    #[arg(long, default_value_t = 0)]
    loss_ppm: u32,
    /// Host pid of the member's PID 1; the delayer exits when it is gone.
    #[arg(long)]
    container_pid: u32,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let shape = Shape {
        delay_us: args.delay_us,
        jitter_us: args.jitter_us,
        loss_ppm: args.loss_ppm,
    };
    // Only the caller reads stdout, and only this line; everything else goes to stderr.
    let ready = || println!("{}", nfqueue::READY);
    match nfqueue::run(shape, args.container_pid, ready) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
