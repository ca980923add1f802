//! `cargo xtask scenario run FILE`, `scenario sim FILE [--seeds 100]` and `scenario check
//! RUN_DIR`: a scenario on a cluster (`lab::scenario`), its steps in the election simulation,
//! and the checker over a recorded run (the file, the history and the checker: the `scenario`
//! crate).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use lab::project::Project;
use lab::runtime;
use lab::state::{RuntimeKind, State};
use lab::UsageError;
use scenario::{runs, Scenario, Sweep, Verdict};
use xshell::Shell;

use crate::cluster::Cluster;
use crate::commands::{down::Down, up::Up};
use crate::Exit;

/// Most seeds one `scenario sim` runs.
const MAX_SEEDS: u64 = 100_000;
/// Failing seeds named one by one before the rest are only counted.
const FAILURES_LISTED: usize = 10;

/// Run a scenario file in the election simulation, or check a recorded run.
#[derive(Debug, clap::Args)]
pub struct ScenarioCommand {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    Run(Run),
    Sim(Sim),
    Check(Check),
}

/// Run the scenario's workload and steps on a cluster (one of the right size is started when
/// none runs, and taken down afterwards), record the history under .cluster/runs/, repair
/// every fault, then check it.
#[derive(Debug, clap::Args)]
pub struct Run {
    /// A scenario file, e.g. scenarios/leader-kill-loop.toml.
    file: PathBuf,
    /// Where to start the cluster when none runs [default: docker when an engine answers].
    #[arg(long, value_enum)]
    runtime: Option<RuntimeKind>,
    /// Seed of the client's ids and of the presets that pick nodes at random.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Leave a cluster this run started running afterwards.
    #[arg(long)]
    keep: bool,
}

/// Drive the election simulation with the scenario's steps, once per seed, and check every
/// history; the first failing seed's history (or seed 1's) is kept under .cluster/runs/.
#[derive(Debug, clap::Args)]
pub struct Sim {
    /// A scenario file, e.g. scenarios/leader-kill-loop.toml.
    file: PathBuf,
    /// How many seeds to run, starting at --first-seed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=MAX_SEEDS))]
    seeds: u64,
    /// The first seed (a failing seed is printed; run it alone with --first-seed N --seeds 1).
    #[arg(long, default_value_t = 1)]
    first_seed: u64,
}

/// Check the history a run recorded (RUN_DIR holds scenario.toml and history.jsonl); exit 1
/// on a violation, naming the first one and its time.
#[derive(Debug, clap::Args)]
pub struct Check {
    /// A run folder, e.g. .cluster/runs/leader-kill-loop-20261204T170512Z.
    run_dir: PathBuf,
}

impl ScenarioCommand {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        match self.command {
            Sub::Run(command) => command.run(sh),
            Sub::Sim(command) => command.run(sh),
            Sub::Check(command) => command.run(),
        }
    }
}

/// Reads and parses a scenario file; a mistake in it is a usage error (exit 2).
pub fn load(file: &Path) -> anyhow::Result<(Scenario, String)> {
    let scenario = scenario::load(file).map_err(|e| UsageError(e.to_string()))?;
    // `load` just read it, so a second read fails only if it vanished meanwhile.
    let text = std::fs::read_to_string(file)
        .map_err(|e| UsageError(format!("{}: cannot read it ({e})", file.display())))?;
    Ok((scenario, text))
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Run {
    fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let (scenario, text) = load(&self.file)?;
        let project = Project::locate()?;
        let running = State::load(&project.cluster_dir)?.filter(|state| {
            runtime::of(state.runtime, &project).has_members(sh, &state.prefix, Some(state))
        });
        if let Some(state) = &running {
            if state.node_count() != scenario.nodes {
                return Err(UsageError(format!(
                    "a cluster of {} nodes runs and {} needs {}; run `cargo xtask down` first",
                    state.node_count(),
                    scenario.name,
                    scenario.nodes
                ))
                .into());
            }
            if self.runtime.is_some_and(|kind| kind != state.runtime) {
                return Err(UsageError(format!(
                    "the running cluster is on the {} runtime; run `cargo xtask down` first or leave out --runtime",
                    state.runtime
                ))
                .into());
            }
        }
        let started_here = running.is_none();
        if started_here {
            println!(
                "starting a cluster of {} nodes for {}",
                scenario.nodes, scenario.name
            );
            Up::new(scenario.nodes, self.runtime).run(sh)?;
        }
        let result = self.run_on_cluster(sh, &project, &scenario, &text);
        if started_here && !self.keep {
            println!("taking down the cluster this run started (keep it with --keep)");
            Down::new().run(sh)?;
        }
        result
    }

    fn run_on_cluster(
        &self,
        sh: &Shell,
        project: &Project,
        scenario: &Scenario,
        text: &str,
    ) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let client = lab::client::binary(project)?;
        let folder = runs::folder_name(&scenario.name, None, unix_ms());
        let dir = runs::create(&project.cluster_dir.join("runs"), &folder, text)?;
        println!(
            "{}: {} for {:.0} s, {} steps, on the {} runtime; recording into {}",
            scenario.name,
            scenario.description,
            scenario.duration.as_secs_f64(),
            scenario.steps.len(),
            cluster.state.runtime,
            dir.display()
        );
        let Cluster { state, runtime, .. } = &mut cluster;
        let outcome = lab::scenario::run(
            sh,
            project,
            runtime.as_ref(),
            state,
            &client,
            scenario,
            self.seed,
            &dir,
            |line| println!("{line}"),
        );
        // Restarted members have new pids; faults were made and repaired.
        cluster.save()?;
        let outcome = outcome?;
        if outcome.interrupted {
            println!("interrupted: every fault is repaired; the history so far is checked below");
        }
        for skipped in &outcome.skipped {
            println!("note: a step was skipped: {skipped}");
        }
        let (scenario, history) = runs::read(&dir)?;
        let verdict = scenario::check(&scenario, &history);
        runs::write_verdict(&dir, &verdict)?;
        let page = runs::write_report(&dir, &scenario, &history, &verdict)?;
        print_verdict(&scenario, &history.header, &verdict);
        println!("  report: {}", page.display());
        println!(
            "run folder: {} (check it again: cargo xtask scenario check {})",
            dir.display(),
            dir.display()
        );
        match verdict.passed() && !outcome.interrupted {
            true => Ok(()),
            false => Err(Exit(1).into()),
        }
    }
}

impl Sim {
    fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let (scenario, text) = load(&self.file)?;
        let last_seed = self.first_seed.saturating_add(self.seeds - 1);
        println!(
            "{} in simulation: {} nodes, {:.0} s, {} steps, seeds {}..={last_seed}",
            scenario.name,
            scenario.nodes,
            scenario.duration.as_secs_f64(),
            scenario.steps.len(),
            self.first_seed
        );
        let mut kept = None;
        let mut listed = 0;
        let sweep = Sweep::run(
            &scenario,
            self.first_seed,
            self.seeds,
            |seed, history, verdict| {
                if kept.is_none() && (!verdict.passed() || seed == last_seed) {
                    kept = Some((seed, history.clone(), verdict.clone()));
                }
                if let Some(first) = verdict.first() {
                    if listed < FAILURES_LISTED {
                        listed += 1;
                        println!("seed {seed}: FAILED {first}");
                    }
                }
            },
        );
        print_sim_summary(&sweep);
        if let Some((seed, history, verdict)) = kept {
            let project = Project::locate()?;
            let folder =
                runs::folder_name(&scenario.name, Some(&format!("sim-seed{seed}")), unix_ms());
            let dir = runs::create(&project.cluster_dir.join("runs"), &folder, &text)?;
            runs::write_history(&dir, &history)?;
            runs::write_verdict(&dir, &verdict)?;
            runs::write_report(&dir, &scenario, &history, &verdict)?;
            println!(
                "history of seed {seed}: {} (check it again: cargo xtask scenario check {})",
                dir.display(),
                dir.display()
            );
        }
        match sweep.failing.is_empty() {
            true => Ok(()),
            false => Err(Exit(1).into()),
        }
    }
}

fn print_sim_summary(sweep: &Sweep) {
    let (least, mean, most) = sweep.leaderless_ms;
    println!(
        "{} of {} seeds passed; elections per run {} to {}; {}; leaderless {:.1} s per run on average ({:.1} to {:.1} s)",
        sweep.passed(),
        sweep.seeds,
        sweep.elections.0,
        sweep.elections.1,
        match sweep.failover_p50_max() {
            Some((p50, max)) => format!(
                "failovers {} (p50 {p50:.0} ms, max {max:.0} ms)",
                sweep.failovers_ms.len()
            ),
            None => "no failovers".to_string(),
        },
        mean / 1000.0,
        least / 1000.0,
        most / 1000.0
    );
}

impl Check {
    fn run(self) -> anyhow::Result<()> {
        let (scenario, history) =
            runs::read(&self.run_dir).map_err(|e| UsageError(e.to_string()))?;
        let verdict = scenario::check(&scenario, &history);
        runs::write_verdict(&self.run_dir, &verdict)?;
        let page = runs::write_report(&self.run_dir, &scenario, &history, &verdict)?;
        print_verdict(&scenario, &history.header, &verdict);
        println!("  report: {}", page.display());
        match verdict.passed() {
            true => Ok(()),
            false => Err(Exit(1).into()),
        }
    }
}

/// The checker's summary and its first violation, as a person reads them.
pub fn print_verdict(scenario: &Scenario, header: &wire::history::Header, verdict: &Verdict) {
    let s = &verdict.summary;
    println!(
        "{} ({}, seed {}, {} nodes): {}",
        scenario.name,
        header.source,
        header.seed,
        header.nodes,
        match verdict.passed() {
            true => "passed",
            false => "FAILED",
        }
    );
    let failovers = match s.failover_p50_max() {
        Some((p50, max)) => format!(
            "{} failovers (p50 {p50:.0} ms, max {max:.0} ms)",
            s.failovers_ms.len()
        ),
        None => "no failovers".to_string(),
    };
    println!(
        "  elections {}, {failovers}, leaderless {:.1} s, fault windows {}",
        s.elections,
        s.leaderless_ms / 1000.0,
        s.fault_windows.len()
    );
    if s.reads > 0 {
        let percent = |share: Option<f64>| {
            share.map_or_else(|| "-".to_string(), |a| format!("{:.1}%", a * 100.0))
        };
        println!(
            "  reads {} ({} hits, {} misses, {} errors), availability {} ({} outside fault windows)",
            s.reads,
            s.hits,
            s.misses,
            s.errors,
            percent(s.availability),
            percent(s.availability_outside_faults)
        );
    }
    if let Some(first) = verdict.first() {
        println!("  first violation {first}");
        if verdict.violations.len() > 1 {
            println!("  ({} violations in all)", verdict.violations.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use scenario::history::HISTORY_FILE;

    /// A run folder holding leader-kill-loop's simulated history of seed 1, with `extra`
    /// lines appended to the history.
    fn run_folder(tag: &str, extra: &str) -> PathBuf {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/leader-kill-loop.toml");
        let (scenario, text) = load(&file).unwrap();
        let runs_dir = std::env::temp_dir().join(format!("flotilla-xtask-{}", std::process::id()));
        let dir = runs::create(&runs_dir, tag, &text).unwrap();
        let history = scenario::sim::run(&scenario, 1);
        std::fs::write(dir.join(HISTORY_FILE), history.to_jsonl() + extra).unwrap();
        dir
    }

    #[test]
    fn a_bad_scenario_file_is_a_usage_error_before_anything_starts() {
        let dir = std::env::temp_dir().join(format!("flotilla-xtask-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(
            &file,
            "nodes = 3\nduration = \"10s\"\n[workload]\nconcurrency = 1\nids = \"1..3\"\n[[step]]\nat = \"2s\"\nkill = 7\n",
        )
        .unwrap();
        // `run` reads the file before it looks for a cluster, so nothing is started here.
        let error = Run {
            file: file.clone(),
            runtime: Some(RuntimeKind::Process),
            seed: 1,
            keep: false,
        }
        .run(&Shell::new().unwrap())
        .unwrap_err();
        let message = error
            .downcast_ref::<UsageError>()
            .expect("a usage error (exit 2)")
            .to_string();
        assert!(
            message.starts_with(&format!("{}:8: there is no node 7", file.display())),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_passes_a_clean_run_and_exits_1_on_a_violation() {
        let clean = run_folder("clean", "");
        Check {
            run_dir: clean.clone(),
        }
        .run()
        .unwrap();
        assert!(clean.join(runs::VERDICT_FILE).is_file());

        // Node 1 claims term 5, which node 5 led from the start.
        let two_leaders = run_folder(
            "two-leaders",
            r#"{"kind":"sample","at_ms":20000,"node":1,"state":{"state":"up","role":"leader","term":5,"leader":1}}"#,
        );
        let error = Check {
            run_dir: two_leaders.clone(),
        }
        .run()
        .unwrap_err();
        assert!(
            matches!(error.downcast_ref::<Exit>(), Some(Exit(1))),
            "{error:#}"
        );
        let verdict = std::fs::read_to_string(two_leaders.join(runs::VERDICT_FILE)).unwrap();
        assert!(verdict.contains("two leaders in one term"), "{verdict}");

        let error = Check {
            run_dir: clean.parent().unwrap().join("missing"),
        }
        .run()
        .unwrap_err();
        assert!(error.downcast_ref::<UsageError>().is_some(), "{error:#}");
        std::fs::remove_dir_all(clean.parent().unwrap()).unwrap();
    }
}
