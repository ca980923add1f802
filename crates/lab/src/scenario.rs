//! `scenario run`: a scenario's workload and steps on a running cluster, recorded as a
//! history (`scenario::history`) while it happens, so an interrupted run keeps every line.
//!
//! Three kinds of observers write into one recorder:
//! - the client: one `client bench --ops` for the whole run, each read a JSON line on its
//!   stdout (ids, edge, hit or miss, the digest the client verified, or the error);
//! - a sampler per node: its term, leader and role from its metrics every [`SAMPLE_EVERY`]
//!   (`down` or `paused` when this run stopped it, `unreachable` when it does not answer);
//! - the steps themselves, each with what it did (`leader` resolved to a node) or why it
//!   could not be done.
//!
//! Faults go through the same code as `cargo xtask kill|pause|partition|netem` (the runtime
//! and [`crate::faults`]); at the end, and on Ctrl-C, every fault is repaired as the soak
//! repairs it.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::scenario::file::{Action, Load, PartitionSpec, Scenario, Target};
use ::scenario::history::{Recorder, HISTORY_FILE};
use anyhow::Context;
use chaos::partition::Cut;
use chaos::presets;
use chaos::shape::Shape;
use wire::history::{Effect, Event, Fault, Header, NodeState, Op, OpOutcome, Sample};
use wire::ElectionRole;
use xshell::Shell;

use crate::failover;
use crate::faults;
use crate::project::Project;
use crate::runtime::Runtime;
use crate::scrape;
use crate::soak;
use crate::state::State;

/// How often every node is sampled: 10 Hz, as in the simulation.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Budget of one metrics scrape on 127.0.0.1; a node slower than this is `unreachable`.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(300);
/// Most reads the client keeps in flight for a `rate` workload.
const RATE_CONCURRENCY: u32 = 32;
/// How long the client may take to finish its last reads after the scenario's end.
const CLIENT_GRACE: Duration = Duration::from_secs(15);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How one run went, apart from the history on disk.
#[derive(Debug)]
pub struct Outcome {
    /// Ctrl-C ended it before its end; the history holds what was seen until then.
    pub interrupted: bool,
    /// Steps that could not be carried out, with why.
    pub skipped: Vec<String>,
}

/// Who this run has stopped and paused, as the samplers report them.
#[derive(Default)]
struct Stopped {
    down: BTreeSet<u16>,
    paused: BTreeSet<u16>,
}

/// Everything the observers share.
struct Shared {
    recorder: Mutex<Recorder>,
    started: Instant,
    started_unix_ms: u64,
    stopped: Mutex<Stopped>,
    stop: AtomicBool,
    reads: AtomicU64,
    errors: AtomicU64,
}

impl Shared {
    fn record(&self, event: &Event) {
        // A history that cannot be written is reported once at the end (`flush`); the run
        // goes on so that the faults are still repaired.
        if let Ok(mut recorder) = self.recorder.lock() {
            let _ = recorder.record(event);
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// Runs `scenario` on `state`'s cluster, recording into `dir` (which holds `scenario.toml`
/// already). `progress` gets one line per step and every few seconds. The caller saves
/// `state` afterwards: restarted members have new pids.
#[allow(clippy::too_many_arguments)]
pub fn run(
    sh: &Shell,
    project: &Project,
    runtime: &dyn Runtime,
    state: &mut State,
    client: &Path,
    scenario: &Scenario,
    seed: u64,
    dir: &Path,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        state.node_count() == scenario.nodes,
        "the cluster has {} nodes and {} needs {}; run `cargo xtask down` and run the scenario again (it starts a cluster of the right size)",
        state.node_count(),
        scenario.name,
        scenario.nodes
    );
    let interrupted = soak::interrupt_flag();
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let header = Header {
        scenario: scenario.name.clone(),
        source: runtime.kind().to_string(),
        nodes: scenario.nodes,
        seed,
        started_unix_ms,
        duration_ms: scenario.duration.as_millis() as u64,
    };
    let path = dir.join(HISTORY_FILE);
    let recorder =
        Recorder::create(&path, &header).with_context(|| format!("creating {}", path.display()))?;
    let shared = Arc::new(Shared {
        recorder: Mutex::new(recorder),
        started: Instant::now(),
        started_unix_ms,
        stopped: Mutex::new(Stopped::default()),
        stop: AtomicBool::new(false),
        reads: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });

    let samplers: Vec<JoinHandle<()>> = state
        .nodes()
        .map(|node| {
            let (index, url) = (node.index, node.metrics_url());
            let shared = shared.clone();
            std::thread::spawn(move || sample_loop(&shared, index, &url))
        })
        .collect();
    let mut child = start_client(client, &project.cluster_dir, scenario, seed, dir)?;
    let reader = read_ops(&mut child, shared.clone())?;

    let mut skipped = Vec::new();
    let mut machine = Steps {
        sh,
        project,
        runtime,
        seed,
        stopped_here: BTreeSet::new(),
        shaped: BTreeSet::new(),
    };
    let mut next_progress = PROGRESS_EVERY;
    let mut steps = scenario.steps.iter().peekable();
    while !interrupted.load(Ordering::SeqCst) {
        let elapsed = shared.started.elapsed();
        if elapsed >= scenario.duration {
            break;
        }
        if let Some(step) = steps.next_if(|step| step.at <= elapsed) {
            let at_ms = shared.now_ms();
            let effect = match machine.apply(state, &step.action, &shared) {
                Ok(effect) => effect,
                Err(error) => Effect::Skipped {
                    reason: format!("{error:#}"),
                },
            };
            let line = match &effect {
                Effect::Skipped { reason } => {
                    skipped.push(format!("{} (line {}): {reason}", step.action, step.line));
                    format!("SKIPPED {}: {reason}", step.action)
                }
                effect => describe(effect),
            };
            progress(&format!("{:>6.1} s  {line}", at_ms as f64 / 1000.0));
            shared.record(&Event::Fault(Fault {
                at_ms,
                step: step.action.to_string(),
                effect,
            }));
            continue;
        }
        if elapsed >= next_progress {
            next_progress += PROGRESS_EVERY;
            let leader = failover::leader_now(state).map_or_else(
                || "no leader".to_string(),
                |(node, term)| format!("node {node} leads term {term}"),
            );
            progress(&format!(
                "{:>6.1} s  {leader}; reads {} ({} failed)",
                elapsed.as_secs_f64(),
                shared.reads.load(Ordering::SeqCst),
                shared.errors.load(Ordering::SeqCst)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let interrupted = interrupted.load(Ordering::SeqCst);

    // The client stops by itself at the end (`--seconds`); give it its last reads.
    let deadline = Instant::now() + CLIENT_GRACE;
    while !interrupted && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    shared.stop.store(true, Ordering::SeqCst);
    for sampler in samplers {
        let _ = sampler.join();
    }
    progress("repairing every fault");
    soak::repair(sh, project, runtime, state);
    let flushed = shared
        .recorder
        .lock()
        .map_err(|_| anyhow::anyhow!("a recorder thread panicked"))?
        .flush();
    flushed.with_context(|| format!("writing {}", path.display()))?;
    Ok(Outcome {
        interrupted,
        skipped,
    })
}

/// One line for an effect, as progress shows it.
fn describe(effect: &Effect) -> String {
    let list = |members: &[u16]| {
        members
            .iter()
            .map(|&m| match m {
                0 => "canonical".to_string(),
                node => format!("node {node}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match effect {
        Effect::Kill { members } => format!("killed {}", list(members)),
        Effect::Restart { members } => format!("restarted {}", list(members)),
        Effect::Pause { nodes } => format!("paused {}", list(nodes)),
        Effect::Resume { nodes } => format!("resumed {}", list(nodes)),
        Effect::Partition { cut, .. } => format!("partitioned {cut}"),
        Effect::Heal => "healed".to_string(),
        Effect::Netem {
            nodes,
            delay_ms,
            jitter_ms,
            loss,
        } => format!(
            "netem on {}: delay {delay_ms:.0} ms, jitter {jitter_ms:.0} ms, loss {:.1}%",
            list(nodes),
            loss * 100.0
        ),
        Effect::Skipped { reason } => format!("skipped: {reason}"),
    }
}

/// Carries out steps on the cluster.
struct Steps<'a> {
    sh: &'a Shell,
    project: &'a Project,
    runtime: &'a dyn Runtime,
    seed: u64,
    /// Members this run killed and has not restarted (0 is the canonical).
    stopped_here: BTreeSet<u16>,
    shaped: BTreeSet<u16>,
}

impl Steps<'_> {
    fn leader(&self, state: &State) -> anyhow::Result<u16> {
        failover::leader_now(state)
            .map(|(leader, _)| leader)
            .context("no node leads now")
    }

    fn resolve(&self, state: &State, target: Target) -> anyhow::Result<Vec<u16>> {
        Ok(match target {
            Target::Node(node) => vec![node],
            Target::Leader => vec![self.leader(state)?],
            Target::Canonical => vec![0],
            Target::All => state.nodes().map(|n| n.index).collect(),
        })
    }

    fn apply(
        &mut self,
        state: &mut State,
        action: &Action,
        shared: &Shared,
    ) -> anyhow::Result<Effect> {
        let (sh, runtime) = (self.sh, self.runtime);
        Ok(match action {
            Action::Kill(target) => {
                let members = self.resolve(state, *target)?;
                for &index in &members {
                    let member = state.member_by_index(index)?.clone();
                    runtime.kill(sh, &member)?;
                    self.stopped_here.insert(index);
                    lock(&shared.stopped).down.insert(index);
                }
                Effect::Kill { members }
            }
            Action::Restart(target) => {
                let members: Vec<u16> = match target {
                    Target::All => self.stopped_here.iter().copied().collect(),
                    other => self.resolve(state, *other)?,
                };
                anyhow::ensure!(!members.is_empty(), "nothing stopped to restart");
                for &index in &members {
                    runtime.restart(sh, state, index)?;
                    faults::restore(sh, self.project, runtime, state, &[index])?;
                    self.stopped_here.remove(&index);
                    let mut stopped = lock(&shared.stopped);
                    stopped.down.remove(&index);
                    stopped.paused.remove(&index);
                }
                Effect::Restart { members }
            }
            Action::Pause(target) => {
                let nodes = self.resolve(state, *target)?;
                for &index in &nodes {
                    let member = state.member_by_index(index)?.clone();
                    runtime.pause(sh, &member)?;
                    lock(&shared.stopped).paused.insert(index);
                }
                Effect::Pause { nodes }
            }
            Action::Resume(target) => {
                let nodes: Vec<u16> = match target {
                    Target::All => lock(&shared.stopped).paused.iter().copied().collect(),
                    other => self.resolve(state, *other)?,
                };
                anyhow::ensure!(!nodes.is_empty(), "nothing paused to resume");
                for &index in &nodes {
                    let member = state.member_by_index(index)?.clone();
                    runtime.resume(sh, &member)?;
                    lock(&shared.stopped).paused.remove(&index);
                }
                Effect::Resume { nodes }
            }
            Action::Partition(spec) => {
                let cut = match spec {
                    PartitionSpec::Groups { groups, one_way } => {
                        Cut::new(groups.clone(), *one_way, state.node_count())
                            .map_err(anyhow::Error::msg)?
                    }
                    PartitionSpec::Preset(preset) => {
                        let leader = match preset.needs_leader() {
                            true => Some(self.leader(state)?),
                            false => None,
                        };
                        presets::cut(*preset, state.node_count(), leader, self.seed)?
                    }
                };
                let mut blocked: Vec<[u16; 2]> = cut
                    .blocked_sources()
                    .into_iter()
                    .flat_map(|(to, sources)| sources.into_iter().map(move |from| [from, to]))
                    .collect();
                blocked.sort_unstable();
                let described = cut.describe();
                faults::partition(sh, runtime, state, cut)?;
                Effect::Partition {
                    cut: described,
                    blocked,
                }
            }
            Action::Heal => {
                faults::heal(sh, runtime, state)?;
                for index in std::mem::take(&mut self.shaped) {
                    faults::unshape(sh, runtime, state, index)?;
                }
                Effect::Heal
            }
            Action::Netem { target, shape } => {
                let nodes = self.resolve(state, *target)?;
                let made = Shape {
                    delay_us: shape.delay.as_micros() as u64,
                    jitter_us: shape.jitter.as_micros() as u64,
                    loss_ppm: (shape.loss * 1_000_000.0).round() as u32,
                };
                for &index in &nodes {
                    faults::shape(sh, self.project, runtime, state, index, made)?;
                    self.shaped.insert(index);
                }
                shape.effect(nodes)
            }
        })
    }
}

/// Locks `mutex`, also after a sampler panicked while holding it (the sets stay usable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Samples node `index` until the run stops.
fn sample_loop(shared: &Shared, index: u16, url: &str) {
    let mut next = shared.started;
    while !shared.stop.load(Ordering::SeqCst) {
        let at_ms = shared.now_ms();
        let (down, paused) = {
            let stopped = lock(&shared.stopped);
            (
                stopped.down.contains(&index),
                stopped.paused.contains(&index),
            )
        };
        let state = if down {
            NodeState::Down
        } else if paused {
            NodeState::Paused
        } else {
            scrape_state(url).unwrap_or(NodeState::Unreachable)
        };
        shared.record(&Event::Sample(Sample {
            at_ms,
            node: index,
            state,
        }));
        next += SAMPLE_EVERY;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // A slow scrape: skip the instants it missed rather than bunch samples up.
            None => next = now,
        }
    }
}

/// A node's election view from its metrics.
fn scrape_state(url: &str) -> Option<NodeState> {
    let metrics = scrape::fetch(url, SCRAPE_TIMEOUT).ok()?;
    let term = metrics.value("flotilla_term", &[])? as u64;
    let leader = metrics.value("flotilla_leader_index", &[])? as u16;
    let leads = metrics.value("flotilla_is_leader", &[])? > 0.0;
    // A node electing (probing the higher nodes or collecting votes) says so; a follower may
    // know no leader and still not be electing. Candidacies shorter than a sample interval
    // can fall between two samples.
    let electing = metrics.value("flotilla_is_candidate", &[])? > 0.0;
    let role = match (leads, electing) {
        (true, _) => ElectionRole::Leader,
        (false, true) => ElectionRole::Candidate,
        (false, false) => ElectionRole::Follower,
    };
    Some(NodeState::Up {
        role,
        term,
        leader: (leader != 0).then_some(leader),
    })
}

/// Starts `client bench --ops` for the scenario's whole duration.
fn start_client(
    client: &Path,
    cluster_dir: &Path,
    scenario: &Scenario,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<Child> {
    let workload = &scenario.workload;
    let mut command = Command::new(client);
    command
        .arg("bench")
        .arg("--ops")
        .args(["--requests", &u64::MAX.to_string()])
        .args(["--seconds", &scenario.duration.as_secs_f64().to_string()])
        .args(["--ids", &format!("{}..{}", workload.ids.0, workload.ids.1)])
        .args(["--seed", &seed.to_string()])
        .arg("--cluster")
        .arg(cluster_dir);
    match workload.load {
        Load::Concurrency(concurrency) => {
            command.args(["--concurrency", &concurrency.to_string()]);
        }
        Load::Rate(rate) => {
            command
                .args(["--concurrency", &rate.min(RATE_CONCURRENCY).to_string()])
                .args(["--rate", &rate.to_string()]);
        }
    }
    if workload.zipf > 0.0 {
        command.args(["--zipf", &workload.zipf.to_string()]);
    }
    let log = std::fs::File::create(dir.join("client.log")).context("creating client.log")?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", client.display()))
}

/// Records every read the client prints, with its times made relative to the run's start.
fn read_ops(child: &mut Child, shared: Arc<Shared>) -> anyhow::Result<JoinHandle<()>> {
    let stdout = child.stdout.take().context("the client's stdout")?;
    Ok(std::thread::spawn(move || {
        let origin = shared.started_unix_ms as f64;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(mut op) = serde_json::from_str::<Op>(&line) else {
                continue;
            };
            op.invoke_ms = (op.invoke_ms - origin).max(0.0);
            op.complete_ms = (op.complete_ms - origin).max(0.0);
            shared.reads.fetch_add(1, Ordering::SeqCst);
            if op.outcome == OpOutcome::Error {
                shared.errors.fetch_add(1, Ordering::SeqCst);
            }
            shared.record(&Event::Op(op));
        }
    }))
}
