//! `client`: fetch images from a Flotilla cluster, check on it, and benchmark it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use client::bench::{self, BenchConfig};
use client::{Client, ClientError, Probe};
use wire::routing::Routing;
use wire::status::StatusRow;
use wire::ImageId;

/// Fetch images from a Flotilla cluster's edges, with routing and failover.
#[derive(Parser, Debug)]
#[command(version, name = "client")]
struct Args {
    /// Cluster folder (default: $FLOTILLA_CLUSTER, else the nearest .cluster/ upwards).
    #[arg(long, global = true)]
    cluster: Option<PathBuf>,
    /// How ids map to edges.
    #[arg(long, global = true, value_enum, default_value_t = RoutingArg::Rendezvous)]
    routing: RoutingArg,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoutingArg {
    /// Highest-random-weight hashing over the edges.
    Rendezvous,
    /// Plain `id % N`.
    Modulo,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Set the faults in MEMBER's own UDP socket (edge index or `canonical`), replacing any
    /// before; with no option, clear them. Needs the operator certificate (`.cluster/operator`);
    /// `cargo xtask partition` and `netem` use this for swarm members on other machines.
    NetFaults {
        member: String,
        /// Drop datagrams arriving from these addresses (IP, or IP:PORT; comma-separated).
        #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
        drop_from: Vec<std::net::SocketAddr>,
        /// Drop datagrams sent to these addresses instead of sending them.
        #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
        drop_to: Vec<std::net::SocketAddr>,
        /// Delay every datagram sent, in microseconds.
        #[arg(long, default_value_t = 0)]
        delay_us: u64,
        /// Uniform jitter around the delay, in microseconds.
        #[arg(long, default_value_t = 0)]
        jitter_us: u64,
        /// Share of sent datagrams lost, in parts per million.
        #[arg(long, default_value_t = 0)]
        loss_ppm: u32,
    },
    /// Fetch image ID and save it (default: <ID>.<ext> in the current folder).
    GetImage {
        /// Negative numbers are taken as ids so that they are refused as ids, in one line.
        #[arg(allow_negative_numbers = true)]
        id: ImageId,
        /// Where to write the image.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print the size of image ID in bytes (from metadata; the image is not moved).
    GetImageSize {
        #[arg(allow_negative_numbers = true)]
        id: ImageId,
    },
    /// Ping the canonical and every edge; exit 1 if any does not answer.
    Ping {
        #[arg(long)]
        json: bool,
    },
    /// Every edge's role, term, leader, cache and RTT.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Load-test the cluster and report throughput and latency percentiles.
    Bench {
        /// Total requests [default: 2000, or no limit with --seconds].
        #[arg(long)]
        requests: Option<u64>,
        /// Run for S seconds instead of a number of requests (both: whichever ends first).
        #[arg(long, value_name = "S", value_parser = parse_seconds)]
        seconds: Option<f64>,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Id range A..B (inclusive).
        #[arg(long, default_value = "1..1000", value_parser = parse_range)]
        ids: (u64, u64),
        /// Zipf exponent for id popularity (0: uniform).
        #[arg(long, default_value_t = 0.0)]
        zipf: f64,
        /// Seed for the id sequence.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Request the ids in order instead of at random (with --requests equal to the
        /// range's size, every request is a cold fetch).
        #[arg(long, conflicts_with = "zipf")]
        sweep: bool,
        /// Start about this many requests per second (at most --concurrency in flight).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Print every read as one JSON line on stdout as it ends (`wire::history::Op`, times
        /// in ms since the Unix epoch), and the report on stderr.
        #[arg(long, conflicts_with = "json")]
        ops: bool,
        /// Check the SHA-256 digest of one body in N and only the size of the others, as wrk
        /// checks an HTTP body (hashing is most of the client's work on a hit). The signature
        /// on every reply's metadata is always checked.
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        check_digest_every: u64,
        #[arg(long)]
        json: bool,
    },
}

/// Requests `bench` issues when neither `--requests` nor `--seconds` is given.
const DEFAULT_REQUESTS: u64 = 2000;
/// Longest `bench --seconds` run (an hour): a longer one is more likely a typo.
const MAX_BENCH_SECONDS: f64 = 3600.0;

fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= MAX_BENCH_SECONDS => Ok(seconds),
        _ => Err(format!(
            "`{text}` is not a duration in seconds above 0 and at most {MAX_BENCH_SECONDS}"
        )),
    }
}

/// `10.0.1.3` (every port) or `10.0.1.3:7000`.
fn parse_peer(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, 0));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not an IP address or IP:PORT"))
}

fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let (start, end) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a range like 1..1000"))?;
    let end = end.trim_start_matches('=');
    let start: u64 = start
        .parse()
        .map_err(|_| format!("`{start}` is not a number"))?;
    let end: u64 = end
        .parse()
        .map_err(|_| format!("`{end}` is not a number"))?;
    if start > end {
        return Err(format!("range {start}..{end} is empty"));
    }
    Ok((start, end))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate from 0 to 1000000 requests per second"
        )),
    }
}

fn main() -> ExitCode {
    net::signals::end_quietly_on_closed_stdout();
    net::logging::init("warn");
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => return usage_error(&error),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", wire::one_line(error.as_ref()));
            let bad_input = error
                .downcast_ref::<ClientError>()
                .is_some_and(ClientError::is_bad_input);
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

/// What a command line clap refused becomes: help and version as clap prints them, any other
/// error as one line on stderr with exit code 2.
fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(error.exit_code() as u8)
        }
        _ => {
            eprintln!("{}", one_line(error));
            ExitCode::from(2)
        }
    }
}

/// clap's usage error in one line: its first paragraph (the error, and the arguments it lists),
/// with its tip (if any) or a pointer to `--help` instead of the usage block after it.
fn one_line(error: &clap::Error) -> String {
    let text = error.to_string();
    let mut lines = text.lines().map(str::trim);
    let first: Vec<&str> = lines.by_ref().take_while(|line| !line.is_empty()).collect();
    let first = match first.join(" ") {
        joined if joined.is_empty() => "error: bad command line".to_string(),
        joined => joined,
    };
    match lines.find_map(|line| line.strip_prefix("tip: ")) {
        Some(tip) => format!("{first} ({tip})"),
        None => format!("{first}; see `cargo client --help`"),
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let routing = match args.routing {
        RoutingArg::Rendezvous => Routing::Rendezvous,
        RoutingArg::Modulo => Routing::Modulo,
    };
    let dir = wire::cluster::find_dir(args.cluster.as_deref()).map_err(ClientError::from)?;
    if let Command::NetFaults {
        member,
        drop_from,
        drop_to,
        delay_us,
        jitter_us,
        loss_ppm,
    } = args.command
    {
        let faults = wire::NetFaults {
            drop_from,
            drop_to,
            delay_us,
            jitter_us,
            loss_ppm,
        };
        let operator = Client::open_as_operator(&dir)?;
        let described = faults.to_string();
        let name = operator.set_net_faults(&member, faults).await?;
        println!("{name}: {described}");
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::open(&dir, routing)?;
    match args.command {
        Command::GetImage { id, output } => {
            client.connect_all().await?;
            let fetched = client.get_image(id).await?;
            let path = output
                .unwrap_or_else(|| PathBuf::from(format!("{id}.{}", fetched.meta.extension())));
            write_atomic(&path, &fetched.body)?;
            println!(
                "image {id}: {} bytes ({}) from {}, {} -> {}",
                fetched.body.len(),
                fetched.meta.content_type,
                fetched.served_by,
                fetched.outcome,
                path.display()
            );
        }
        Command::GetImageSize { id } => {
            client.connect_all().await?;
            println!("{}", client.image_size(id).await?);
        }
        Command::Ping { json } => {
            let probes = client.probe_all(true).await;
            print_probes(&probes, json, false)?;
            if probes.iter().any(|p| p.rtt.is_none()) {
                return Ok(ExitCode::FAILURE);
            }
        }
        // Answered above, with the operator's certificate.
        Command::NetFaults { .. } => {}
        Command::Status { json } => {
            let probes = client.probe_all(false).await;
            print_probes(&probes, json, true)?;
            if probes.iter().all(|p| p.rtt.is_none()) {
                eprintln!("error: no edge answered; is the cluster running? (`cargo xtask up 3`)");
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Bench {
            requests,
            seconds,
            concurrency,
            ids,
            zipf,
            seed,
            sweep,
            rate,
            ops,
            check_digest_every,
            json,
        } => {
            let client = Arc::new(client);
            client.connect_all().await?;
            let duration = seconds.map(std::time::Duration::from_secs_f64);
            let requests = requests.unwrap_or(if duration.is_some() {
                u64::MAX
            } else {
                DEFAULT_REQUESTS
            });
            let sink = ops.then(|| {
                bench::OpSink(Arc::new(|op: &wire::history::Op| {
                    // Plain data with string keys: encoding cannot fail. A closed stdout
                    // ends the process quietly (`end_quietly_on_closed_stdout`).
                    let line = serde_json::to_string(op).expect("an op encodes");
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                }))
            });
            let config = BenchConfig {
                requests,
                duration,
                concurrency,
                ids: ids.0..=ids.1,
                zipf,
                seed,
                sweep,
                rate,
                ops: sink,
                digest_every: check_digest_every,
            };
            if !json {
                let amount = match (seconds, requests) {
                    (Some(seconds), u64::MAX) => format!("{seconds} s"),
                    (Some(seconds), requests) => format!("{seconds} s or {requests} requests"),
                    (None, requests) => format!("{requests} requests"),
                };
                eprintln!(
                    "bench: {amount}, concurrency {concurrency}, ids {}..{}, {}{}",
                    ids.0,
                    ids.1,
                    if sweep {
                        "in order".to_string()
                    } else if zipf > 0.0 {
                        format!("zipf {zipf}")
                    } else {
                        "uniform".to_string()
                    },
                    if check_digest_every > 1 {
                        format!(", digest checked on 1 body in {check_digest_every}")
                    } else {
                        String::new()
                    }
                );
            }
            let report = bench::run(client, config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if ops {
                eprintln!(
                    "{} requests ({} errors) in {:.2} s",
                    report.requests, report.errors, report.seconds
                );
            } else {
                println!(
                    "requests     {} ({} errors) in {:.2} s",
                    report.requests, report.errors, report.seconds
                );
                println!(
                    "throughput   {:.0} req/s, {:.1} MB/s",
                    report.requests_per_second, report.megabytes_per_second
                );
                println!(
                    "latency      p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
                    report.p50_ms, report.p99_ms, report.p999_ms, report.max_ms
                );
                println!("hit ratio    {:.1}%", report.hit_ratio * 100.0);
                if let Some(error) = &report.first_error {
                    println!("first error  {error}");
                }
            }
            if report.errors > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_atomic(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .context("the output path names no file")?
        .to_string_lossy();
    let temp = dir.join(format!(".{name}.{}.part", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn print_probes(probes: &[Probe], json: bool, with_status: bool) -> anyhow::Result<()> {
    if json {
        let rows: Vec<StatusRow> = probes.iter().map(probe_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if with_status {
        println!(
            "{:<5} {:<24} {:<10} {:<10} {:>5} {:>6} {:>7} {:>9} {:>9}",
            "index", "name", "state", "role", "term", "leader", "images", "cache MB", "rtt ms"
        );
    } else {
        println!(
            "{:<5} {:<24} {:<15} {:>9}",
            "index", "name", "state", "rtt ms"
        );
    }
    for probe in probes {
        let state = if probe.rtt.is_some() {
            "responding"
        } else {
            "not responding"
        };
        let rtt = probe.rtt.map_or("-".to_string(), |rtt| {
            format!("{:.2}", rtt.as_secs_f64() * 1000.0)
        });
        let index = if probe.member.index == 0 {
            "-".to_string()
        } else {
            probe.member.index.to_string()
        };
        if with_status {
            let (role, term, leader, items, mb) = match &probe.status {
                Some(s) => (
                    s.role.to_string(),
                    s.term.to_string(),
                    s.leader.map_or("-".to_string(), |l| l.to_string()),
                    s.cache_items.to_string(),
                    format!("{:.1}", s.cache_bytes as f64 / 1048576.0),
                ),
                None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            };
            let state = if probe.rtt.is_some() { "up" } else { "DOWN" };
            println!("{index:<5} {:<24} {state:<10} {role:<10} {term:>5} {leader:>6} {items:>7} {mb:>9} {rtt:>9}", probe.member.name);
        } else {
            println!("{index:<5} {:<24} {state:<15} {rtt:>9}", probe.member.name);
        }
        if let (Some(error), false) = (&probe.error, json) {
            tracing::debug!(name = %probe.member.name, %error, "probe failed");
        }
    }
    Ok(())
}

fn probe_json(probe: &Probe) -> StatusRow {
    let status = probe.status.as_ref();
    StatusRow {
        index: probe.member.index,
        name: probe.member.name.clone(),
        reachable: probe.rtt.is_some(),
        role: if probe.member.index == 0 {
            Some("canonical".to_string())
        } else {
            status.map(|s| s.role.to_string())
        },
        term: status.map(|s| s.term.0),
        leader: status.and_then(|s| s.leader.map(|l| l.0)),
        cache_items: status.map(|s| s.cache_items),
        cache_bytes: status.map(|s| s.cache_bytes),
        cache_hits: status.map(|s| s.cache_hits),
        cache_misses: status.map(|s| s.cache_misses),
        rtt_ms: probe.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
        peer_rtt_ms: status.map(|s| {
            s.peer_rtt_ms
                .iter()
                .map(|(peer, rtt)| (peer.to_string(), *rtt))
                .collect()
        }),
        error: probe.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bad id is bad input: one line naming the value and what an id is, exit code 2.
    #[test]
    fn bad_image_ids_are_one_line_usage_errors() {
        let cases = [
            ("-1", "never negative"),
            (
                "18446744073709551616",
                "the largest id is 18446744073709551615",
            ),
            ("abc", "expected a number"),
        ];
        for command in ["get-image", "get-image-size"] {
            for (bad, says) in cases {
                let error = Args::try_parse_from(["client", command, bad]).unwrap_err();
                assert_eq!(error.exit_code(), 2, "{command} {bad}");
                assert_eq!(usage_error(&error), ExitCode::from(2), "{command} {bad}");
                let line = one_line(&error);
                assert!(!line.contains('\n'), "{command} {bad}: {line:?}");
                assert!(
                    line.contains(&format!("`{bad}`")),
                    "{command} {bad}: {line}"
                );
                assert!(line.contains(says), "{command} {bad}: {line}");
            }
        }
        let Command::GetImage { id, .. } = Args::try_parse_from(["client", "get-image", "7"])
            .expect("7 is an id")
            .command
        else {
            panic!("get-image parses as get-image");
        };
        assert_eq!(id, ImageId(7));
    }

    #[test]
    fn other_usage_errors_are_one_line_too() {
        let error = Args::try_parse_from(["client", "get-image"]).unwrap_err();
        let line = one_line(&error);
        assert!(!line.contains('\n') && line.contains("<ID>"), "{line}");
        let error = Args::try_parse_from(["client", "get-image", "1", "--bogus"]).unwrap_err();
        let line = one_line(&error);
        assert!(!line.contains('\n') && line.contains("--bogus"), "{line}");
    }
}
