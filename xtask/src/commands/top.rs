//! `cargo xtask top`: a live view of the cluster, refreshed every second: each node's role and
//! term, cache hit ratio, image requests per second, and the peer round-trip-time matrix.
//! It polls `client status --json`, so it shows exactly what the client sees.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use lab::client;
use lab::project::Project;

/// Shortest refresh interval: `client status` itself takes a few milliseconds per node.
const MIN_INTERVAL_SECONDS: f64 = 0.1;
/// Longest refresh interval accepted.
const MAX_INTERVAL_SECONDS: f64 = 3600.0;

/// One node's row of `client status --json`.
type Row = wire::status::StatusRow;

/// Image requests a node answered so far (hits and misses).
fn requests(row: &Row) -> u64 {
    row.cache_hits.unwrap_or(0) + row.cache_misses.unwrap_or(0)
}

/// One poll of the cluster.
struct Sample {
    at: Instant,
    rows: Vec<Row>,
}

/// Watch the cluster live: roles, terms, hit ratio, requests/s and the peer RTT matrix.
#[derive(Debug, clap::Args)]
pub struct Top {
    /// Seconds between refreshes (0.1 to 3600).
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
    /// Print one frame (two polls an interval apart, for the rates) and exit, e.g. for scripts.
    #[arg(long)]
    once: bool,
}

fn parse_interval(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| (MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(s))
        .ok_or_else(|| {
            format!(
                "`{text}` is not a number of seconds between {MIN_INTERVAL_SECONDS} and {MAX_INTERVAL_SECONDS}"
            )
        })
}

impl Top {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let cluster = wire::cluster::ClusterFile::load(&project.cluster_dir)
            .context("reading the cluster description")?;
        let client = client::binary(&project)?;
        let interval = Duration::from_secs_f64(self.interval);
        let poll = || poll(sh, &client, &project);
        if self.once {
            let first = poll()?;
            std::thread::sleep(interval);
            let second = poll()?;
            print!("{}", render(&cluster.prefix, &second, Some(&first)));
            return Ok(());
        }
        let mut previous: Option<Sample> = None;
        loop {
            let frame = match poll() {
                Ok(sample) => {
                    let frame = render(&cluster.prefix, &sample, previous.as_ref());
                    previous = Some(sample);
                    frame
                }
                // Keep watching: the cluster may come back.
                Err(error) => format!("cluster `{}`: {error:#}\n", cluster.prefix),
            };
            let mut stdout = std::io::stdout().lock();
            // Home the cursor, clear each line as it is rewritten, then the rest of the screen:
            // no flicker from clearing everything first.
            write!(stdout, "\x1b[H")?;
            for line in frame.lines() {
                write!(stdout, "{line}\x1b[K\r\n")?;
            }
            write!(
                stdout,
                "\r\nrefreshing every {} s; Ctrl-C to quit\x1b[K\r\n\x1b[J",
                self.interval
            )?;
            stdout.flush()?;
            drop(stdout);
            std::thread::sleep(interval);
        }
    }
}

/// Runs `client status --json` once.
fn poll(sh: &Shell, client: &std::path::Path, project: &Project) -> anyhow::Result<Sample> {
    let cluster_dir = &project.cluster_dir;
    let output = cmd!(sh, "{client} status --json --cluster {cluster_dir}")
        .quiet()
        .ignore_status()
        .output()
        .context("running `client status --json`")?;
    let rows = wire::status::rows_from_json(&output.stdout).map_err(|_| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::anyhow!(
            "no status from the cluster ({}); is it running? (`cargo xtask status`)",
            stderr.lines().last().unwrap_or("no output").trim()
        )
    })?;
    Ok(Sample {
        at: Instant::now(),
        rows,
    })
}

/// The frame for `sample`; request rates come from the difference to `previous`.
fn render(prefix: &str, sample: &Sample, previous: Option<&Sample>) -> String {
    let rows = &sample.rows;
    let dash = || "-".to_string();
    let mut out = String::new();
    let leaders: Vec<String> = rows
        .iter()
        .filter(|r| r.role.as_deref() == Some("leader"))
        .map(|r| format!("node {} (term {})", r.index, r.term.unwrap_or(0)))
        .collect();
    let up = rows.iter().filter(|r| r.reachable).count();
    let _ = writeln!(
        out,
        "cluster `{prefix}`: {up} of {} nodes answering, leader: {}",
        rows.len(),
        if leaders.is_empty() {
            "none".to_string()
        } else {
            leaders.join(", ")
        }
    );
    out.push('\n');
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(
        out,
        "{:<5} {:<width$} {:<5} {:<9} {:>5} {:>6} {:>7} {:>6} {:>8} {:>8}",
        "index", "name", "state", "role", "term", "leader", "images", "hit %", "req/s", "rtt ms"
    );
    for row in rows {
        let ratio = match requests(row) {
            0 => dash(),
            total => format!(
                "{:.1}",
                row.cache_hits.unwrap_or(0) as f64 * 100.0 / total as f64
            ),
        };
        let before = previous.and_then(|p| p.rows.iter().find(|r| r.index == row.index));
        let rate = match (previous, before) {
            (Some(previous), Some(before)) if row.reachable && before.reachable => {
                let seconds = sample.at.duration_since(previous.at).as_secs_f64();
                let count = requests(row).saturating_sub(requests(before));
                if seconds > 0.0 {
                    format!("{:.1}", count as f64 / seconds)
                } else {
                    dash()
                }
            }
            _ => dash(),
        };
        let _ = writeln!(
            out,
            "{:<5} {:<width$} {:<5} {:<9} {:>5} {:>6} {:>7} {:>6} {:>8} {:>8}",
            row.index,
            row.name,
            if row.reachable { "up" } else { "DOWN" },
            row.role.clone().unwrap_or_else(dash),
            row.term.map_or_else(dash, |t| t.to_string()),
            row.leader.map_or_else(dash, |l| l.to_string()),
            row.cache_items.map_or_else(dash, |i| i.to_string()),
            ratio,
            rate,
            row.rtt_ms.map_or_else(dash, |r| format!("{r:.2}")),
        );
    }
    out.push_str("\npeer RTT (ms) measured by the row's node to the column's; c = canonical\n");
    let _ = write!(out, "{:>6}{:>8}", "", "c");
    for column in rows {
        let _ = write!(out, "{:>8}", column.index);
    }
    out.push('\n');
    for row in rows {
        let _ = write!(out, "{:>6}", row.index);
        let cell = |peer: u16| match row
            .peer_rtt_ms
            .as_ref()
            .and_then(|p| p.get(&peer.to_string()))
        {
            Some(rtt) => format!("{rtt:>8.2}"),
            None => format!("{:>8}", "·"),
        };
        out.push_str(&cell(0));
        for column in rows {
            if column.index == row.index {
                let _ = write!(out, "{:>8}", "-");
            } else {
                out.push_str(&cell(column.index));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(index: u16, hits: u64, reachable: bool) -> Row {
        Row {
            index,
            name: format!("demo_node_{index}"),
            reachable,
            role: Some(if index == 2 { "leader" } else { "follower" }.to_string()),
            term: Some(7),
            leader: Some(2),
            cache_items: Some(3),
            cache_hits: Some(hits),
            cache_misses: Some(10),
            rtt_ms: Some(1.5),
            peer_rtt_ms: Some([("0".to_string(), 0.25), ("2".to_string(), 0.5)].into()),
            ..Row::default()
        }
    }

    #[test]
    fn a_frame_shows_every_node_rates_and_the_matrix() {
        let start = Instant::now();
        let before = Sample {
            at: start,
            rows: vec![row(1, 10, true), row(2, 0, true)],
        };
        let after = Sample {
            at: start + Duration::from_secs(2),
            rows: vec![row(1, 30, true), row(2, 0, false)],
        };
        let frame = render("demo", &after, Some(&before));
        assert!(frame.contains("leader: node 2 (term 7)"), "{frame}");
        assert!(frame.contains("demo_node_1") && frame.contains("demo_node_2"));
        // 20 more requests in 2 s; 30 hits of 40 requests.
        let line = frame.lines().find(|l| l.contains("demo_node_1")).unwrap();
        assert!(line.contains("10.0") && line.contains("75.0"), "{line}");
        assert!(frame
            .lines()
            .any(|l| l.contains("demo_node_2") && l.contains("DOWN")));
        assert!(frame.contains("0.25") && frame.contains("0.50"), "{frame}");
    }

    #[test]
    fn intervals_are_checked() {
        assert_eq!(parse_interval("0.5"), Ok(0.5));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("x").is_err());
    }
}
