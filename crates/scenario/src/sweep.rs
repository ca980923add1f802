//! A scenario in the simulation over many seeds (`scenario sim FILE --seeds 100`, and the
//! report of a container run): every seed's history checked, and the figures a run on
//! containers is compared with — elections, failover p50 and max, leaderless time, seeds
//! that broke an invariant — with the plain-words list of where a run falls outside them.

use crate::check::{check, Summary, Verdict, Violation};
use crate::file::Scenario;
use crate::history::History;
use crate::sim;

/// Seeds the report of a container run simulates beside it (as `scenario sim` by default).
pub const REPORT_SEEDS: u64 = 100;
/// How far a run's failover p50 or max, or its leaderless time, may lie outside the
/// simulation's before the report says they disagree: containers add scheduling, QUIC
/// timers and 10 Hz sampling of metrics on top of the protocol.
pub const TOLERANCE_MS: f64 = 1000.0;

/// What many seeds of one scenario did in the simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub first_seed: u64,
    pub seeds: u64,
    /// Failing seeds with their first violation, in seed order.
    pub failing: Vec<(u64, Violation)>,
    /// Fewest and most elections in one seed.
    pub elections: (usize, usize),
    /// Fewest and most failovers in one seed.
    pub failover_counts: (usize, usize),
    /// Every failover of every seed, in ms.
    pub failovers_ms: Vec<f64>,
    /// Shortest, mean and longest leaderless time of one seed, in ms.
    pub leaderless_ms: (f64, f64, f64),
}

impl Sweep {
    /// Runs `seeds` seeds from `first_seed`; `keep` sees every seed's history and verdict (to
    /// keep one, or print failures as they come).
    pub fn run(
        scenario: &Scenario,
        first_seed: u64,
        seeds: u64,
        mut keep: impl FnMut(u64, &History, &Verdict),
    ) -> Sweep {
        let mut summaries: Vec<Summary> = Vec::new();
        let mut failing = Vec::new();
        for seed in first_seed..first_seed.saturating_add(seeds) {
            let history = sim::run(scenario, seed);
            let verdict = check(scenario, &history);
            keep(seed, &history, &verdict);
            if let Some(first) = verdict.first() {
                failing.push((seed, first.clone()));
            }
            summaries.push(verdict.summary);
        }
        let range = |values: Vec<usize>| {
            let min = values.iter().copied().min().unwrap_or(0);
            (min, values.into_iter().max().unwrap_or(0))
        };
        let leaderless: Vec<f64> = summaries.iter().map(|s| s.leaderless_ms).collect();
        let mut failovers_ms: Vec<f64> = summaries
            .iter()
            .flat_map(|s| s.failovers_ms.iter().copied())
            .collect();
        failovers_ms.sort_by(f64::total_cmp);
        Sweep {
            first_seed,
            seeds: summaries.len() as u64,
            failing,
            elections: range(summaries.iter().map(|s| s.elections).collect()),
            failover_counts: range(summaries.iter().map(|s| s.failovers_ms.len()).collect()),
            failovers_ms,
            leaderless_ms: (
                leaderless.iter().copied().fold(f64::INFINITY, f64::min),
                leaderless.iter().sum::<f64>() / leaderless.len().max(1) as f64,
                leaderless.iter().copied().fold(0.0, f64::max),
            ),
        }
    }

    /// Seeds that kept every invariant.
    pub fn passed(&self) -> u64 {
        self.seeds - self.failing.len() as u64
    }

    /// Median and largest failover over every seed, in ms.
    pub fn failover_p50_max(&self) -> Option<(f64, f64)> {
        let max = *self.failovers_ms.last()?;
        Some((self.failovers_ms[(self.failovers_ms.len() - 1) / 2], max))
    }

    /// Where `run` (on containers) falls outside what the simulation did, in plain words;
    /// empty when they agree.
    pub fn disagreements(&self, run: &Verdict) -> Vec<String> {
        let mut lines = Vec::new();
        let seeds = self.seeds;
        match (run.passed(), self.failing.len()) {
            (false, 0) => lines.push(format!(
                "the run broke an invariant that all {seeds} simulated seeds kept"
            )),
            (true, failing) if failing > 0 => lines.push(format!(
                "the simulation broke an invariant in {failing} of {seeds} seeds (first: seed {}), the run did not",
                self.failing[0].0
            )),
            _ => {}
        }
        let outside = |value: usize, (min, max): (usize, usize)| value < min || value > max;
        if outside(run.summary.elections, self.elections) {
            lines.push(format!(
                "the run saw {} elections; the simulation {}",
                run.summary.elections,
                between(self.elections)
            ));
        }
        let failovers = run.summary.failovers_ms.len();
        if outside(failovers, self.failover_counts) {
            lines.push(format!(
                "the run measured {failovers} failovers; the simulation {}",
                between(self.failover_counts)
            ));
        }
        if let (Some((sim_p50, sim_max)), Some((run_p50, run_max))) =
            (self.failover_p50_max(), run.summary.failover_p50_max())
        {
            if (run_p50 - sim_p50).abs() > TOLERANCE_MS {
                lines.push(format!(
                    "the median failover took {run_p50:.0} ms in the run and {sim_p50:.0} ms in the simulation"
                ));
            }
            if run_max > sim_max + TOLERANCE_MS {
                lines.push(format!(
                    "the longest failover took {run_max:.0} ms in the run, longer than any of the simulation's ({sim_max:.0} ms)"
                ));
            }
        }
        let (least, _, most) = self.leaderless_ms;
        let leaderless = run.summary.leaderless_ms;
        if leaderless > most + TOLERANCE_MS || leaderless < least - TOLERANCE_MS {
            lines.push(format!(
                "the run was without a leader for {:.1} s; the simulation for {:.1} to {:.1} s",
                leaderless / 1000.0,
                least / 1000.0,
                most / 1000.0
            ));
        }
        lines
    }
}

/// "saw 7" or "saw 6 to 8" for a range over seeds.
fn between((min, max): (usize, usize)) -> String {
    match min == max {
        true => format!("saw {min} in every seed"),
        false => format!("saw {min} to {max}"),
    }
}
