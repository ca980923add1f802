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

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use xshell::Shell;

use crate::faults;
use crate::project::Project;
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
        "`bench failover` times exits the engine records: start the cluster with `cargo xtask up N --runtime docker`"
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
        let kill_issued = Instant::now();
        runtime.kill(sh, &member)?;
        let kill_command = kill_issued.elapsed();
        let survivors: Vec<u16> = all.iter().copied().filter(|i| *i != leader).collect();
        let waited = wait_for_leader(state, &survivors, Some(term), FAILOVER_DEADLINE);
        let (new_leader, new_term) = waited.map_err(|e| {
            e.context(format!(
                "no new leader after killing node {leader} ({})",
                member.name
            ))
        })?;
        let agreed_at = SystemTime::now();
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

fn summarize(rounds: Vec<Round>) -> Report {
    let mut times: Vec<f64> = rounds.iter().map(|r| r.failover_ms).collect();
    times.sort_by(f64::total_cmp);
    let median = match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    Report {
        kills: times.len(),
        min_ms: times.first().copied().unwrap_or(0.0),
        median_ms: median,
        max_ms: times.last().copied().unwrap_or(0.0),
        mean_ms: times.iter().sum::<f64>() / times.len().max(1) as f64,
        kill_command_max_ms: rounds.iter().map(|r| r.kill_command_ms).fold(0.0, f64::max),
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
    fn summaries_have_the_median() {
        let round = |ms: f64| Round {
            killed: 5,
            old_term: 5,
            new_leader: 4,
            new_term: 9,
            failover_ms: ms,
            kill_command_ms: 50.0,
        };
        let report = summarize(vec![round(700.0), round(500.0), round(900.0), round(600.0)]);
        assert_eq!(
            (report.min_ms, report.median_ms, report.max_ms),
            (500.0, 650.0, 900.0)
        );
        assert_eq!(report.mean_ms, 675.0);
    }
}
