//! `flotilla-node console`: a line-oriented REPL on a node's admin interface, used by
//! `cargo xtask attach`. A scratch image has no shell, so this is what "attaching" opens.
//! It dials the node over QUIC with the node's own certificate and reads commands from stdin
//! (interactive or piped).

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::Context as _;
use net::pool::{Pool, Target};
use net::tls::Credentials;
use wire::{ImageId, NodeStatus};

const HELP: &str = "\
commands:
  status      this node's role, term, leader and cache
  peers       round-trip times to the other edges and the canonical
  leader      who leads, in which term
  cache       cache size, hit ratio and the most recently used ids
  get ID      fetch image ID through this node (reports hit or miss)
  ping [I]    round trip to this node, or this node's latest RTT to edge I
  help        this list
  quit        leave the console (the node keeps running)";

/// Runs the console against `target` until stdin ends or the user quits.
pub async fn run(credentials: Credentials, target: String) -> anyhow::Result<()> {
    let any = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let endpoint = net::pool::endpoint(net::bind_udp(any)?, &credentials, false)?;
    let pool = Pool::new(endpoint, credentials.origin_trust());
    let target = Target::new(target, credentials.role);
    let interactive = std::io::stdin().is_terminal();
    let status = fetch_status(&pool, &target).await.with_context(|| {
        format!(
            "cannot reach the node's admin interface at {}",
            target.address
        )
    })?;
    println!(
        "connected to {} (node {}, {} in term {}). Type `help` for commands.",
        status.name, status.index, status.role, status.term
    );
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(16);
    // Stdin is blocking; read it on its own thread and hand lines over.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let prompt = format!("node-{}> ", status.index);
    loop {
        if interactive {
            print!("{prompt}");
            let _ = std::io::stdout().flush();
        }
        let Some(line) = lines.recv().await else {
            break;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((&command, arguments)) = words.split_first() else {
            continue;
        };
        if matches!(command, "quit" | "exit") {
            break;
        }
        if let Err(error) = execute(&pool, &target, command, arguments).await {
            println!("error: {error:#}");
        }
    }
    Ok(())
}

async fn fetch_status(pool: &Pool, target: &Target) -> anyhow::Result<NodeStatus> {
    Ok(pool.status(target).await?)
}

async fn execute(
    pool: &Pool,
    target: &Target,
    command: &str,
    arguments: &[&str],
) -> anyhow::Result<()> {
    match command {
        "help" | "?" => println!("{HELP}"),
        "status" => {
            let s = fetch_status(pool, target).await?;
            println!("node {} ({})", s.index, s.name);
            println!(
                "  role {}  term {}  leader {}",
                s.role,
                s.term,
                leader_text(&s)
            );
            println!(
                "  cache {} images, {:.1} of {:.1} MB, {} hits / {} misses",
                s.cache_items,
                mb(s.cache_bytes),
                mb(s.cache_capacity_bytes),
                s.cache_hits,
                s.cache_misses
            );
            println!("  peers answering: {}", s.peer_rtt_ms.len());
        }
        "leader" => {
            let s = fetch_status(pool, target).await?;
            println!(
                "leader {} in term {} (this node is {})",
                leader_text(&s),
                s.term,
                s.role
            );
        }
        "peers" => {
            let s = fetch_status(pool, target).await?;
            println!("{:<12} {:>10}", "peer", "rtt");
            for (peer, rtt) in &s.peer_rtt_ms {
                let name = if *peer == 0 {
                    "canonical".to_string()
                } else {
                    format!("node {peer}")
                };
                println!("{name:<12} {rtt:>7.2} ms");
            }
            if s.peer_rtt_ms.is_empty() {
                println!("(no peer has answered a ping yet)");
            }
        }
        "cache" => {
            let s = fetch_status(pool, target).await?;
            let total = s.cache_hits + s.cache_misses;
            let ratio = if total == 0 {
                0.0
            } else {
                s.cache_hits as f64 * 100.0 / total as f64
            };
            println!(
                "{} images, {:.1} / {:.1} MB, hit ratio {ratio:.1}% ({} of {total})",
                s.cache_items,
                mb(s.cache_bytes),
                mb(s.cache_capacity_bytes),
                s.cache_hits
            );
            let ids: Vec<String> = s.cached_ids.iter().map(ToString::to_string).collect();
            println!(
                "most recent: {}",
                if ids.is_empty() {
                    "(empty)".to_string()
                } else {
                    ids.join(" ")
                }
            );
        }
        "get" => {
            let id: ImageId = arguments
                .first()
                .context("usage: get ID")?
                .parse()
                .map_err(anyhow::Error::msg)?;
            let started = Instant::now();
            let deadline = wire::limits::CONSOLE_GET_TIMEOUT;
            match tokio::time::timeout(deadline, pool.get_image(target, id)).await {
                Err(_) => println!(
                    "image {id}: no complete reply from {} within {} s; the node or its upstream is stuck (try `status`)",
                    target.address,
                    deadline.as_secs()
                ),
                Ok(Ok(reply)) => println!(
                    "image {id}: {} bytes {} from {}, {}, signature and digest verified, {:.1} ms",
                    reply.body.len(),
                    reply.meta.content_type,
                    reply.served_by,
                    reply.outcome,
                    started.elapsed().as_secs_f64() * 1000.0
                ),
                Ok(Err(error)) => println!("{error}"),
            }
        }
        "ping" => match arguments.first() {
            None => {
                let started = Instant::now();
                let name = pool.ping(target).await?;
                println!(
                    "{name} answered in {:.2} ms",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Some(peer) => {
                let peer: u16 = peer
                    .parse()
                    .context("usage: ping [I] with I a node index")?;
                let s = fetch_status(pool, target).await?;
                match s.peer_rtt_ms.get(&peer) {
                    Some(rtt) => {
                        println!("node {} -> node {peer}: {rtt:.2} ms (latest ping)", s.index)
                    }
                    None => println!("node {peer} is not answering node {}'s pings", s.index),
                }
            }
        },
        other => println!("unknown command `{other}`; type `help`"),
    }
    Ok(())
}

fn leader_text(status: &NodeStatus) -> String {
    status
        .leader
        .map_or("none".to_string(), |leader| format!("node {leader}"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
