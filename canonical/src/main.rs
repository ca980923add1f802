//! `flotilla-canonical`: the origin server binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Flotilla's canonical origin: serves the original images to the edge nodes over QUIC.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Name reported to clients.
    #[arg(long, default_value = "flotilla_canonical")]
    name: String,
    /// QUIC address to serve on.
    #[arg(long, default_value = "0.0.0.0:7000")]
    listen: SocketAddr,
    /// Prometheus metrics HTTP address.
    #[arg(long, default_value = "0.0.0.0:9100")]
    metrics: SocketAddr,
    /// Folder of `<id>.<ext>` image files.
    #[arg(long, default_value = "/data")]
    data: PathBuf,
    /// Generate deterministic sample PNGs for ids 1..=N that are missing.
    #[arg(long, default_value_t = 0)]
    samples: u64,
    /// Folder holding ca.pem, cert.pem and key.pem.
    #[arg(long, default_value = "/certs")]
    certs: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    net::signals::main("info", || run(args))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let credentials = net::tls::Credentials::load(&args.certs)
        .with_context(|| format!("loading certificates from {}", args.certs.display()))?;
    let shutdown = net::signals::shutdown_on_termination();
    canonical::run(
        canonical::Config {
            name: args.name,
            listen: args.listen.into(),
            metrics: Some(args.metrics.into()),
            data: args.data,
            samples: args.samples,
            credentials,
        },
        shutdown,
    )
    .await
}
