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
    /// The catalog of digests every read is checked against [default: `.flotilla-catalog`
    /// in the --data folder]; give a writable place when that folder is read-only.
    #[arg(long, value_name = "PATH")]
    catalog: Option<PathBuf>,
    /// Accept the --data folder as it is now: rebuild the catalog from its files, print one
    /// line per image added, changed or removed, and exit (without serving).
    #[arg(long)]
    reindex: bool,
    /// Generate deterministic sample PNGs for ids 1..=N that are missing.
    #[arg(long, default_value_t = 0)]
    samples: u64,
    /// Folder holding ca.pem, cert.pem and key.pem.
    #[arg(long, default_value = "/certs")]
    certs: PathBuf,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.reindex {
        return net::signals::main("warn", || reindex(&args));
    }
    net::signals::main("info", || run(args))
}

/// `--reindex`: what changed goes to stdout, one line each, then a summary line.
fn reindex(args: &Args) -> anyhow::Result<()> {
    let catalog = args
        .catalog
        .clone()
        .unwrap_or_else(|| canonical::store::default_catalog_path(&args.data));
    let reindexed = canonical::reindex(&args.data, &catalog)
        .with_context(|| format!("reindexing {}", args.data.display()))?;
    let changes = reindexed
        .notices
        .iter()
        .filter(|notice| !matches!(notice, canonical::Notice::Skipped { .. }))
        .count();
    for notice in &reindexed.notices {
        println!("{notice}");
    }
    println!(
        "reindexed {}: {} images catalogued in {}, {changes} changes",
        args.data.display(),
        reindexed.images,
        catalog.display()
    );
    Ok(())
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
            catalog: args.catalog,
            samples: args.samples,
            credentials,
        },
        shutdown,
    )
    .await
}
