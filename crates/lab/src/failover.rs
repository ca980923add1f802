//! `bench failover`: how long a running cluster goes without an agreed leader when its
//! leader dies. A measurement, not a test.
//!
//! Each round SIGKILLs the current leader, then polls every other node's metrics
//! (`flotilla_leader_index`, `flotilla_term`, `flotilla_is_leader`, over plain HTTP:
//! milliseconds per poll, where `client status` would wait seconds on the dead node's connect
//! timeout) until all of them name the same new leader in a higher term and that node says it
//! leads. The failover runs from the moment the runtime recorded the member's exit (Docker's
//! `State.FinishedAt`, on the same host clock) to the first poll that sees the agreement, so
//! it includes up to one poll interval. Timing from the kill command instead would be off by
//! the CLI's own latency (hundreds of milliseconds on a busy two-core machine, and varying;
//! the signal lands somewhere inside it). Then the killed node is started again and the
//! round ends when it leads again, as Bully wants.
//!
//! [`run`] is the whole `bench failover`: a full-load phase first (`client bench` at
//! concurrency 16 for a minute, every node's election view polled all along: any new term
//! or lost leader is an election nobody asked for), then the kills under a client loop whose
//! failed reads are counted. Each round also counts the election messages the survivors
//! sent to elect the new leader (`flotilla_election_messages_total`, heartbeats and their
//! acknowledgements left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use xshell::Shell;

use crate::faults;
use crate::project::Project;
use crate::reads::{self, ReadLoop, Reads};
use crate::runtime::Runtime;
use crate::scrape;
use crate::state::State;

/// Pause between two polls of the survivors.
const POLL: Duration = Duration::from_millis(10);
/// Budget of one metrics request (all on 127.0.0.1).
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a new leader may take before the round fails: far above the ~1 s goal.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a restarted node may take to answer and lead again.
const RETURN_DEADLINE: Duration = Duration::from_secs(60);
/// How long after the agreement late election messages (votes of the slower survivors,
/// their catch-up probes) still count towards the round's election.
const MESSAGE_SETTLE: Duration = Duration::from_millis(300);
/// Pause between two polls of every node during the full-load phase: shorter than any
/// election, so none passes unseen.
const LOAD_POLL: Duration = Duration::from_millis(50);
/// Election message kinds that elect (heartbeats and their acknowledgements keep a leader).
const ELECTING_KINDS: [&str; 4] = ["election", "alive", "vote_request", "vote"];

/// One node's election view, from its metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
struct View {
    pub index: u16,
    pub term: u64,
    /// 0 when it knows no leader.
    pub leader: u16,
    pub is_leader: bool,
}

/// One measured failover.
#[derive(Debug, Serialize)]
pub struct Round {
    pub killed: u16,
    pub old_term: u64,
    pub new_leader: u16,
    pub new_term: u64,
    /// From the container's recorded exit to the survivors' agreement.
    pub failover_ms: f64,
    /// How long the kill command took to return.
    pub kill_command_ms: f64,
    /// Election messages (probes, alives, vote requests, votes) the survivors sent from just
    /// before the kill to shortly after the agreement; `None` when the nodes do not count
    /// them.
    pub election_messages: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub kills: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Slowest return of the kill command, for comparison.
    pub kill_command_max_ms: f64,
    /// Median of the rounds' election messages, when the nodes count them.
    pub election_messages_median: Option<f64>,
    pub rounds: Vec<Round>,
}

/// Kills the leader of `state`'s cluster `kills` times, calling `on_round` after each
/// measured failover, and summarizes them.
pub fn measure(
    sh: &Shell,
    project: &Project,
    runtime: &dyn Runtime,
    state: &mut State,
    kills: u32,
    mut on_round: impl FnMut(u32, &Round),
) -> anyhow::Result<Report> {
    anyhow::ensure!(
        runtime.records_exit_times(),
        "`bench failover` times exits the engine records: start the cluster with `cargo xtask up N --runtime docker` (or `--runtime swarm`)"
    );
    anyhow::ensure!(
        state.node_count() >= 3,
        "a failover needs a majority without the leader: start at least 3 nodes (`cargo xtask up 5`)"
    );
    let all: Vec<u16> = state.nodes().map(|n| n.index).collect();
    let (mut leader, mut term) = wait_for_leader(state, &all, None, RETURN_DEADLINE)
        .map_err(|e| e.context("the cluster has no agreed leader to start from"))?;
    let mut rounds = Vec::new();
    for round in 1..=kills {
        let member = state.member_by_index(leader)?.clone();
        let survivors: Vec<u16> = all.iter().copied().filter(|i| *i != leader).collect();
        let messages_before = electing_messages_sent(state, &survivors);
        let kill_issued = Instant::now();
        runtime.kill(sh, &member)?;
        let kill_command = kill_issued.elapsed();
        let waited = wait_for_leader(state, &survivors, Some(term), FAILOVER_DEADLINE);
        let (new_leader, new_term) = waited.map_err(|e| {
            e.context(format!(
                "no new leader after killing node {leader} ({})",
                member.name
            ))
        })?;
        let agreed_at = SystemTime::now();
        std::thread::sleep(MESSAGE_SETTLE);
        let messages_after = electing_messages_sent(state, &survivors);
        let exited_at = runtime.exit_time(sh, &member)?;
        let failover = agreed_at.duration_since(exited_at).with_context(|| {
            format!(
                "{}'s recorded exit lies after the agreement: is the clock stepping?",
                member.name
            )
        })?;
        let measured = Round {
            killed: leader,
            old_term: term,
            new_leader,
            new_term,
            failover_ms: failover.as_secs_f64() * 1e3,
            kill_command_ms: kill_command.as_secs_f64() * 1e3,
            election_messages: messages_before
                .zip(messages_after)
                .map(|(before, after)| after.saturating_sub(before)),
        };
        on_round(round, &measured);
        rounds.push(measured);
        runtime.restart(sh, state, leader)?;
        // A fresh namespace: faults injected on purpose apply to it as before.
        faults::restore(sh, project, runtime, state, &[leader])?;
        let returned = leader;
        (leader, term) = wait_for_leader(state, &all, Some(new_term), RETURN_DEADLINE)
            .map_err(|e| e.context(format!("node {returned} did not come back")))?;
        if leader != returned {
            eprintln!("note: node {returned} came back but node {leader} leads");
        }
    }
    Ok(summarize(rounds))
}

/// What `bench failover` runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub kills: u32,
    /// Length of the full-load phase; 0 skips it.
    pub load_seconds: u32,
    /// Requests in flight at once during the full-load phase.
    pub load_concurrency: u32,
    /// Image ids both phases read (inclusive).
    pub ids: (u64, u64),
}

/// The full-load phase: a steady cluster under `client bench`, watched for elections.
#[derive(Debug, Serialize)]
pub struct LoadPhase {
    pub seconds: f64,
    pub concurrency: u32,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub requests_per_second: f64,
    pub p99_ms: f64,
    /// Polls of every node's view.
    pub polls: u64,
    /// Polls at which some node did not answer its metrics in time (a busy node, not an
    /// election).
    pub unanswered_polls: u64,
    /// Terms any node was seen in after the first poll: each is an election.
    pub new_terms: u64,
    /// Times a node's (term, leader) differed from its previous poll, losing the leader
    /// included: 0 on a cluster that kept its leader.
    pub leader_changes: u64,
    /// The leader and term at the start.
    pub leader: u16,
    pub term: u64,
}

/// The whole `bench failover`.
#[derive(Debug, Serialize)]
pub struct FullReport {
    pub load: Option<LoadPhase>,
    pub failover: Report,
    /// The client loop through the kills: every read must succeed (a majority is always up).
    pub reads: Reads,
}

/// Runs the full-load phase (unless `load_seconds` is 0) and then `kills` leader kills under
/// a client loop, on `state`'s running cluster. `progress` gets one line per event.
pub fn run(
    sh: &Shell,
    project: &Project,
    runtime: &dyn Runtime,
    state: &mut State,
    client: &Path,
    config: &Config,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<FullReport> {
    anyhow::ensure!(
        runtime.records_exit_times(),
        "`bench failover` times exits the engine records: start the cluster with `cargo xtask up N --runtime docker` (or `--runtime swarm`)"
    );
    let read_config = reads::config(client, &project.cluster_dir, config.ids, 1);
    progress(&format!(
        "warming the caches (ids {}..{} once)",
        config.ids.0, config.ids.1
    ));
    let warm = reads::sweep(&read_config)?;
    anyhow::ensure!(
        warm.failed == 0,
        "the cluster failed reads before any kill: {}",
        warm.first_failure.unwrap_or_default()
    );
    let load = if config.load_seconds > 0 {
        progress(&format!(
            "full load: client bench at concurrency {} for {} s, every node's term and leader polled every {} ms",
            config.load_concurrency,
            config.load_seconds,
            LOAD_POLL.as_millis()
        ));
        let load = load_phase(state, client, &project.cluster_dir, config)?;
        progress(&format!(
            "full load done: {} reads ({} failed), {:.0} req/s, p99 {:.1} ms; {} polls ({} unanswered): {} new terms, {} leader changes",
            load.requests, load.errors, load.requests_per_second, load.p99_ms, load.polls,
            load.unanswered_polls, load.new_terms, load.leader_changes
        ));
        Some(load)
    } else {
        None
    };
    progress(&format!(
        "{} leader kills under a client loop",
        config.kills
    ));
    let loop_reads = ReadLoop::start(&read_config);
    let measured = measure(sh, project, runtime, state, config.kills, |n, round| {
        let messages = round
            .election_messages
            .map_or_else(|| "not counted".to_string(), |m| m.to_string());
        progress(&format!(
            "kill {n:>3}: node {} (led term {}) -> node {} leads term {} {:.0} ms after the exit (kill command {:.0} ms; election messages {messages})",
            round.killed, round.old_term, round.new_leader, round.new_term, round.failover_ms, round.kill_command_ms
        ));
    });
    let reads = loop_reads.stop();
    Ok(FullReport {
        load,
        failover: measured?,
        reads,
    })
}

/// What `client bench --json` prints that the full-load phase reads.
#[derive(Deserialize)]
struct LoadRun {
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    requests_per_second: f64,
    p99_ms: f64,
}

/// `client bench` for `load_seconds` while every node's view is polled.
fn load_phase(
    state: &State,
    client: &Path,
    cluster_dir: &Path,
    config: &Config,
) -> anyhow::Result<LoadPhase> {
    let all: Vec<u16> = state.nodes().map(|n| n.index).collect();
    let (leader, term) = wait_for_leader(state, &all, None, RETURN_DEADLINE)
        .map_err(|e| e.context("the cluster has no agreed leader to start the load from"))?;
    let mut bench = std::process::Command::new(client)
        .arg("bench")
        .args(["--seconds", &config.load_seconds.to_string()])
        .args(["--concurrency", &config.load_concurrency.to_string()])
        .args(["--ids", &format!("{}..{}", config.ids.0, config.ids.1)])
        .arg("--json")
        .arg("--cluster")
        .arg(cluster_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", client.display()))?;
    let mut watch = ViewWatch::default();
    let started = Instant::now();
    loop {
        match bench.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(error) => return Err(error).context("waiting for client bench"),
        }
        watch.poll(state, &all);
        std::thread::sleep(LOAD_POLL);
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = bench.wait_with_output().context("reading client bench")?;
    let run: LoadRun = serde_json::from_slice(&output.stdout).map_err(|_| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::anyhow!(
            "`client bench` printed no report: {}",
            stderr.lines().last().unwrap_or("no output").trim()
        )
    })?;
    Ok(LoadPhase {
        seconds,
        concurrency: config.load_concurrency,
        requests: run.requests,
        errors: run.errors,
        first_error: run.first_error,
        requests_per_second: run.requests_per_second,
        p99_ms: run.p99_ms,
        polls: watch.polls,
        unanswered_polls: watch.unanswered,
        new_terms: watch.new_terms(),
        leader_changes: watch.changes,
        leader,
        term,
    })
}

/// Every node's (term, leader) over a run of polls.
#[derive(Default)]
struct ViewWatch {
    polls: u64,
    unanswered: u64,
    changes: u64,
    last: BTreeMap<u16, (u64, u16)>,
    terms: BTreeSet<u64>,
    first_terms: Option<BTreeSet<u64>>,
}

impl ViewWatch {
    fn poll(&mut self, state: &State, indices: &[u16]) {
        self.polls += 1;
        let mut answered = Vec::new();
        for index in indices {
            match views(state, &[*index]) {
                Ok(mut view) => answered.append(&mut view),
                Err(_) => self.unanswered += 1,
            }
        }
        self.record(&answered);
    }

    fn record(&mut self, views: &[View]) {
        for view in views {
            let now = (view.term, view.leader);
            if let Some(before) = self.last.insert(view.index, now) {
                if before != now {
                    self.changes += 1;
                }
            }
            self.terms.insert(view.term);
        }
        if self.first_terms.is_none() {
            self.first_terms = Some(self.terms.clone());
        }
    }

    /// Terms seen that no node was in at the first poll.
    fn new_terms(&self) -> u64 {
        let first = self.first_terms.clone().unwrap_or_default();
        self.terms.difference(&first).count() as u64
    }
}

/// Election messages of the electing kinds that `indices` have sent in all, or `None` when
/// one does not answer or does not count them.
fn electing_messages_sent(state: &State, indices: &[u16]) -> Option<u64> {
    let mut total = 0.0;
    for index in indices {
        let member = state.member_by_index(*index).ok()?;
        let metrics = scrape::fetch(&member.metrics_url(), SCRAPE_TIMEOUT).ok()?;
        metrics
            .samples
            .iter()
            .any(|s| s.name == "flotilla_election_messages_total")
            .then_some(())?;
        for kind in ELECTING_KINDS {
            total += metrics.sum(
                "flotilla_election_messages_total",
                &[("direction", "sent"), ("kind", kind)],
            );
        }
    }
    Some(total as u64)
}

/// Polls `indices` until all answer and name one leader, in a term above `above` if given,
/// and that leader says it leads. Returns (leader, term).
pub fn wait_for_leader(
    state: &State,
    indices: &[u16],
    above: Option<u64>,
    deadline: Duration,
) -> anyhow::Result<(u16, u64)> {
    let started = Instant::now();
    let mut last = String::from("no poll yet");
    while started.elapsed() < deadline {
        match views(state, indices) {
            Ok(views) => {
                if let Some(agreed) = agreement(&views, above) {
                    return Ok(agreed);
                }
                last = views
                    .iter()
                    .map(|v| format!("node {} term {} leader {}", v.index, v.term, v.leader))
                    .collect::<Vec<_>>()
                    .join(", ");
            }
            Err(error) => last = format!("{error:#}"),
        }
        std::thread::sleep(POLL);
    }
    anyhow::bail!(
        "no agreement within {} s (last seen: {last})",
        deadline.as_secs()
    )
}

/// The node that says it leads, in the highest term any node leads, among the nodes that
/// answer now (`None` when none leads).
pub fn leader_now(state: &State) -> Option<(u16, u64)> {
    state
        .nodes()
        .filter_map(|member| {
            let metrics = scrape::fetch(&member.metrics_url(), SCRAPE_TIMEOUT).ok()?;
            let leads = metrics.value("flotilla_is_leader", &[])? > 0.0;
            let term = metrics.value("flotilla_term", &[])? as u64;
            leads.then_some((member.index, term))
        })
        .max_by_key(|&(_, term)| term)
}

/// Scrapes the election view of every node in `indices`.
fn views(state: &State, indices: &[u16]) -> anyhow::Result<Vec<View>> {
    indices
        .iter()
        .map(|index| {
            let member = state.member_by_index(*index)?;
            let metrics = scrape::fetch(&member.metrics_url(), SCRAPE_TIMEOUT)?;
            let gauge = |name: &str| {
                metrics
                    .value(name, &[])
                    .ok_or_else(|| anyhow::anyhow!("node {index} does not export {name}"))
            };
            Ok(View {
                index: *index,
                term: gauge("flotilla_term")? as u64,
                leader: gauge("flotilla_leader_index")? as u16,
                is_leader: gauge("flotilla_is_leader")? > 0.0,
            })
        })
        .collect()
}

/// The leader and term every view agrees on, if they do (and the leader is among them and
/// says it leads, in a term above `above`).
fn agreement(views: &[View], above: Option<u64>) -> Option<(u16, u64)> {
    let first = views.first()?;
    let leader = first.leader;
    let agreed = leader > 0
        && views
            .iter()
            .all(|v| v.leader == leader && v.term == first.term)
        && views.iter().any(|v| v.index == leader && v.is_leader)
        && above.is_none_or(|above| first.term > above);
    agreed.then_some((leader, first.term))
}

/// The median of `values` (0 for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn summarize(rounds: Vec<Round>) -> Report {
    let mut times: Vec<f64> = rounds.iter().map(|r| r.failover_ms).collect();
    times.sort_by(f64::total_cmp);
    let median_ms = median(times.clone());
    Report {
        kills: times.len(),
        min_ms: times.first().copied().unwrap_or(0.0),
        median_ms,
        max_ms: times.last().copied().unwrap_or(0.0),
        mean_ms: times.iter().sum::<f64>() / times.len().max(1) as f64,
        kill_command_max_ms: rounds.iter().map(|r| r.kill_command_ms).fold(0.0, f64::max),
        election_messages_median: {
            let counts: Option<Vec<f64>> = rounds
                .iter()
                .map(|r| r.election_messages.map(|m| m as f64))
                .collect();
            counts.filter(|c| !c.is_empty()).map(median)
        },
        rounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(index: u16, term: u64, leader: u16) -> View {
        View {
            index,
            term,
            leader,
            is_leader: index == leader,
        }
    }

    #[test]
    fn agreement_needs_one_leader_a_higher_term_and_the_leader_itself() {
        let agreed = [view(1, 9, 4), view(2, 9, 4), view(4, 9, 4)];
        assert_eq!(agreement(&agreed, Some(5)), Some((4, 9)));
        assert_eq!(agreement(&agreed, Some(9)), None);
        assert_eq!(agreement(&[view(1, 9, 4), view(2, 9, 0)], None), None);
        assert_eq!(agreement(&[view(1, 9, 4), view(2, 8, 4)], None), None);
        // The leader named is not among the answering nodes.
        assert_eq!(agreement(&[view(1, 9, 4), view(2, 9, 4)], None), None);
    }

    #[test]
    fn the_load_watch_counts_every_change_of_term_or_leader_and_each_new_term() {
        let mut watch = ViewWatch::default();
        watch.record(&[view(1, 5, 5), view(2, 5, 5), view(5, 5, 5)]);
        watch.record(&[view(1, 5, 5), view(2, 5, 5), view(5, 5, 5)]);
        assert_eq!((watch.changes, watch.new_terms()), (0, 0));
        // Node 2 lost the leader for a moment, then all moved to term 10 under node 5.
        watch.record(&[view(1, 5, 5), view(2, 5, 0), view(5, 5, 5)]);
        watch.record(&[view(1, 10, 5), view(2, 10, 5), view(5, 10, 5)]);
        assert_eq!((watch.changes, watch.new_terms()), (4, 1));
    }

    #[test]
    fn summaries_have_the_median() {
        let round = |ms: f64| Round {
            killed: 5,
            old_term: 5,
            new_leader: 4,
            new_term: 9,
            failover_ms: ms,
            kill_command_ms: 50.0,
            election_messages: Some(ms as u64 / 100),
        };
        let report = summarize(vec![round(700.0), round(500.0), round(900.0), round(600.0)]);
        assert_eq!(
            (report.min_ms, report.median_ms, report.max_ms),
            (500.0, 650.0, 900.0)
        );
        assert_eq!(report.mean_ms, 675.0);
        assert_eq!(report.election_messages_median, Some(6.5));
    }
}
