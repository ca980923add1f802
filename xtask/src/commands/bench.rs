//! `cargo xtask bench failover [--kills 20] [--json]`: how long a running Docker cluster goes
//! without an agreed leader when its leader dies. A measurement, not a test.
//!
//! Each round SIGKILLs the current leader's container (`docker kill`), then polls every other
//! node's metrics (`flotilla_leader_index`, `flotilla_term`, `flotilla_is_leader`, over plain
//! HTTP: milliseconds per poll, where `client status` would wait seconds on the dead node's
//! connect timeout) until all of them name the same new leader in a higher term and that node
//! says it leads. The failover runs from the moment the engine recorded the container's exit
//! (`State.FinishedAt`, on the same host clock) to the first poll that sees the agreement, so
//! it includes up to one poll interval. Timing from the `docker kill` command instead would
//! be off by the CLI's own latency (hundreds of milliseconds on a busy two-core machine, and
//! varying; the signal lands somewhere inside it). Then the killed node is started again and the round ends when it
//! leads again, as Bully wants.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use xshell::Shell;

use super::partition;
use crate::docker;
use crate::netem;
use crate::project::Project;
use crate::scrape;
use crate::state::{metrics_url, Runtime, State};

/// Pause between two polls of the survivors.
const POLL: Duration = Duration::from_millis(10);
/// Budget of one metrics request (all on 127.0.0.1).
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a new leader may take before the round fails: far above the ~1 s goal.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
/// How long a restarted node may take to answer and lead again.
const RETURN_DEADLINE: Duration = Duration::from_secs(60);

/// Measurements on a running cluster.
#[derive(Debug, clap::Args)]
pub struct Bench {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// Kill the leader again and again; time until the survivors agree on a new one.
    Failover(Failover),
}

/// Kill the leader repeatedly and time the failovers (Docker runtime).
#[derive(Debug, clap::Args)]
struct Failover {
    /// How many times to kill the leader.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    kills: u32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

/// One node's election view, from its metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
struct View {
    index: u16,
    term: u64,
    /// 0 when it knows no leader.
    leader: u16,
    is_leader: bool,
}

/// One measured failover.
#[derive(Debug, Serialize)]
struct Round {
    killed: u16,
    old_term: u64,
    new_leader: u16,
    new_term: u64,
    /// From the container's recorded exit to the survivors' agreement.
    failover_ms: f64,
    /// How long `docker kill` took to return.
    kill_command_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    kills: usize,
    min_ms: f64,
    median_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    /// Slowest return of `docker kill`, for comparison.
    kill_command_max_ms: f64,
    rounds: Vec<Round>,
}

impl Bench {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self.which {
            Which::Failover(failover) => failover.run(sh),
        }
    }
}

impl Failover {
    fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let mut state = State::require(&project.cluster_dir)?;
        if state.runtime != Runtime::Docker {
            anyhow::bail!(
                "`bench failover` kills and times containers: start the cluster with `cargo xtask up N --runtime docker`"
            );
        }
        anyhow::ensure!(
            state.node_count() >= 3,
            "a failover needs a majority without the leader: start at least 3 nodes (`cargo xtask up 5`)"
        );
        let all: Vec<u16> = state.nodes().map(|n| n.index).collect();
        let (mut leader, mut term) = wait_for_leader(&state, &all, None, RETURN_DEADLINE)
            .map_err(|e| e.context("the cluster has no agreed leader to start from"))?;
        let mut rounds = Vec::new();
        for round in 1..=self.kills {
            let name = state.member_by_index(leader)?.name.clone();
            let kill_issued = Instant::now();
            docker::run(sh, &["kill".into(), name.clone()])?;
            let kill_command = kill_issued.elapsed();
            let survivors: Vec<u16> = all.iter().copied().filter(|i| *i != leader).collect();
            let waited = wait_for_leader(&state, &survivors, Some(term), FAILOVER_DEADLINE);
            let (new_leader, new_term) = waited.map_err(|e| {
                e.context(format!(
                    "no new leader after killing node {leader} ({name})"
                ))
            })?;
            let agreed_at = SystemTime::now();
            let exited_at = exit_time(sh, &name)?;
            let failover = agreed_at.duration_since(exited_at).with_context(|| {
                format!("{name}'s recorded exit lies after the agreement: is the clock stepping?")
            })?;
            if !self.json {
                println!(
                    "kill {round:>3}: node {leader} (led term {term}) -> node {new_leader} leads term {new_term} {:.0} ms after the exit (docker kill took {:.0} ms)",
                    failover.as_secs_f64() * 1e3,
                    kill_command.as_secs_f64() * 1e3
                );
            }
            rounds.push(Round {
                killed: leader,
                old_term: term,
                new_leader,
                new_term,
                failover_ms: failover.as_secs_f64() * 1e3,
                kill_command_ms: kill_command.as_secs_f64() * 1e3,
            });
            docker::run(sh, &["start".into(), name.clone()])?;
            // A fresh namespace: faults injected on purpose apply to it as before.
            if state.partition.is_some() {
                partition::apply(sh, &state)?;
            }
            if state.netem.contains_key(&leader) {
                netem::reapply(sh, &project, &mut state, &[leader])?;
                state.save(&project.cluster_dir)?;
            }
            let returned = leader;
            (leader, term) = wait_for_leader(&state, &all, Some(new_term), RETURN_DEADLINE)
                .map_err(|e| e.context(format!("node {returned} did not come back")))?;
            if leader != returned {
                eprintln!("note: node {returned} came back but node {leader} leads");
            }
        }
        let report = summarize(rounds);
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "failover over {} kills, from the leader's exit to an agreed new leader: min {:.0} ms, median {:.0} ms, max {:.0} ms (mean {:.0} ms; `docker kill` took up to {:.0} ms to return)",
                report.kills,
                report.min_ms,
                report.median_ms,
                report.max_ms,
                report.mean_ms,
                report.kill_command_max_ms
            );
        }
        Ok(())
    }
}

/// When the engine recorded that container `name` exited.
fn exit_time(sh: &Shell, name: &str) -> anyhow::Result<SystemTime> {
    let finished = docker::run(
        sh,
        &[
            "inspect".into(),
            "--format={{.State.FinishedAt}}".into(),
            name.to_string(),
        ],
    )?;
    parse_utc(&finished)
        .with_context(|| format!("`{finished}` is not a time (FinishedAt of {name})"))
}

/// An RFC 3339 UTC time as Docker prints it, `2026-11-22T04:47:46.588950442Z`; `None` for
/// anything else and for times before 1970 (Docker's zero time, for a container never stopped).
fn parse_utc(text: &str) -> Option<SystemTime> {
    let text = text.trim().strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let numbers = |text: &str, separator: char| -> Option<[i64; 3]> {
        let parts: Vec<i64> = text
            .split(separator)
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        parts.try_into().ok()
    };
    let [year, month, day] = numbers(date, '-')?;
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let [hour, minute, second] = numbers(clock, ':')?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.is_empty() {
        return None;
    }
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: u32 = format!("{digits:0<9}").parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = u64::try_from(days * 86_400 + hour * 3_600 + minute * 60 + second).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Polls `indices` until all answer and name one leader, in a term above `above` if given,
/// and that leader says it leads. Returns (leader, term).
fn wait_for_leader(
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

/// Scrapes the election view of every node in `indices`.
fn views(state: &State, indices: &[u16]) -> anyhow::Result<Vec<View>> {
    indices
        .iter()
        .map(|index| {
            let member = state.member_by_index(*index)?;
            let metrics = scrape::fetch(&metrics_url(member.metrics_port), SCRAPE_TIMEOUT)?;
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
    fn docker_times_parse() {
        let since_epoch = |text: &str| {
            parse_utc(text)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
        };
        // `date -u -d 2026-11-22T04:47:46Z +%s` says 1795322866.
        let at = since_epoch("2026-11-22T04:47:46.588950442Z");
        assert_eq!(at.as_secs(), 1_795_322_866);
        assert_eq!(at.subsec_nanos(), 588_950_442);
        assert_eq!(since_epoch("1970-01-01T00:00:00Z"), Duration::ZERO);
        assert_eq!(
            since_epoch("2000-03-01T00:00:00.5Z"),
            Duration::from_millis(951_868_800_500)
        );
        for bad in [
            "0001-01-01T00:00:00Z",
            "yesterday",
            "2026-11-22T04:47:46.Z",
            "",
        ] {
            assert!(parse_utc(bad).is_none(), "{bad}");
        }
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
