//! `flotilla-node`: run an edge (`serve`) or open a console on one (`console`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wire::NodeIndex;

/// A Flotilla edge node: caches images, elects a leader with its peers, serves clients.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve as edge node INDEX.
    Serve(Serve),
    /// Open an interactive console on a node's admin interface.
    Console {
        /// Folder holding ca.pem, cert.pem and key.pem.
        #[arg(long, default_value = "/certs")]
        certs: PathBuf,
        /// The node's QUIC address.
        #[arg(long, default_value = "127.0.0.1:7000")]
        target: String,
    },
}

#[derive(clap::Args, Debug)]
struct Serve {
    /// This node's index (1-based).
    #[arg(long)]
    index: NodeIndex,
    /// Name reported to clients (default: node-INDEX).
    #[arg(long)]
    name: Option<String>,
    /// QUIC address to serve on.
    #[arg(long, default_value = "0.0.0.0:7000")]
    listen: SocketAddr,
    /// Prometheus metrics HTTP address.
    #[arg(long, default_value = "0.0.0.0:9100")]
    metrics: SocketAddr,
    /// Folder holding ca.pem, cert.pem and key.pem.
    #[arg(long, default_value = "/certs")]
    certs: PathBuf,
    /// The canonical's QUIC address (host:port).
    #[arg(long)]
    canonical: String,
    /// Every configured edge as INDEX=HOST:PORT, this one included; repeat the flag.
    #[arg(long = "peer", value_parser = parse_peer, required = true)]
    peers: Vec<(NodeIndex, String)>,
    /// Cache size in MiB.
    #[arg(long, default_value_t = node::DEFAULT_CACHE_MB)]
    cache_mb: u64,
    /// Edges that should hold each image the leader fetches (replication factor).
    #[arg(long, default_value_t = node::DEFAULT_REPLICAS)]
    replicas: usize,
}

fn parse_peer(text: &str) -> Result<(NodeIndex, String), String> {
    let (index, address) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not INDEX=HOST:PORT"))?;
    if !address.contains(':') {
        return Err(format!("`{address}` has no port (expected HOST:PORT)"));
    }
    Ok((index.parse()?, address.to_string()))
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let console = matches!(args.command, Command::Console { .. });
    // The console's output is for a human; keep library logs out of it.
    net::signals::main(if console { "warn" } else { "info" }, || run(args))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Console { certs, target } => {
            let credentials = net::tls::Credentials::load(&certs)
                .with_context(|| format!("loading certificates from {}", certs.display()))?;
            node::console::run(credentials, target).await
        }
        Command::Serve(serve) => {
            let credentials = net::tls::Credentials::load(&serve.certs)
                .with_context(|| format!("loading certificates from {}", serve.certs.display()))?;
            let mut peers = BTreeMap::new();
            for (index, address) in serve.peers {
                anyhow::ensure!(
                    peers.insert(index, address).is_none(),
                    "--peer {index} given twice"
                );
            }
            let shutdown = net::signals::shutdown_on_termination();
            node::run(
                node::Config {
                    name: serve
                        .name
                        .unwrap_or_else(|| format!("node-{}", serve.index)),
                    index: serve.index,
                    listen: serve.listen.into(),
                    metrics: Some(serve.metrics.into()),
                    canonical: serve.canonical,
                    peers,
                    cache_bytes: serve.cache_mb * 1024 * 1024,
                    replicas: serve.replicas,
                    credentials,
                    election: election::Config::default(),
                },
                shutdown,
            )
            .await
        }
    }
}
