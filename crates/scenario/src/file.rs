//! The scenario file: a TOML file a person reads and writes, parsed once into a [`Scenario`].
//! Every mistake becomes one [`FileError`] naming the file, the line and what to write
//! instead, before anything is started.
//!
//! ```toml
//! name = "leader-kill-loop"          # optional; the file's stem otherwise
//! description = "kill the leader again and again"
//! nodes = 5
//! duration = "40s"
//!
//! [workload]
//! concurrency = 4                    # or rate = 50 (reads per second)
//! ids = "1..200"
//! zipf = 1.0                         # optional; 0 is uniform
//!
//! [expect]
//! max_failover = "3s"                # a new leader within this after each leader loss
//! availability = 0.95                # share of reads that succeed, per second, outside faults
//! settle = "3s"                      # grace after a fault is repaired (default 3s)
//!
//! [[step]]
//! at = "5s"
//! kill = "leader"                    # a node index, "leader" or "canonical"
//! ```
//!
//! Steps: `kill`, `restart` (an index, `canonical` or `all`: every member this scenario
//! stopped), `pause` (an index or `leader`), `resume` (an index or `all`), `partition` (a preset
//! name or groups `[[1, 2], [3, 4, 5]]`, with `one_way = true` for two groups), `heal = true`
//! (undo the partition and every netem shape), `netem = { target = …, delay = "100ms",
//! jitter = "10ms", loss = "1%" }` (target an index, `leader` or `all`).

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use chaos::presets::Preset;
use serde::Deserialize;
use toml::Spanned;

/// Longest scenario: an hour.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Largest cluster a scenario may ask for, as `cargo xtask up` allows.
pub const MAX_NODES: u16 = 64;
/// Most reads in flight at once, or per second, a workload may ask for.
pub const MAX_LOAD: u32 = 10_000;
/// Grace after a fault is repaired before availability counts again, and after a fault
/// before a leader without a majority is a violation, unless `settle` says otherwise.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);
/// Longest netem delay or jitter, as `cargo xtask netem` allows.
pub const MAX_NETEM_DELAY: Duration = Duration::from_secs(60);

/// A parsed, checked scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub nodes: u16,
    pub duration: Duration,
    pub workload: Workload,
    /// In time order (steps at the same time keep the file's order).
    pub steps: Vec<Step>,
    pub expect: Expect,
}

/// The client load that runs for the whole scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    pub load: Load,
    /// First and last image id read (inclusive).
    pub ids: (u64, u64),
    /// Zipf exponent; 0 means uniform.
    pub zipf: f64,
}

/// How hard the client pushes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// This many reads in flight at all times (closed loop).
    Concurrency(u32),
    /// About this many reads started per second.
    Rate(u32),
}

/// What the checker holds the run to.
#[derive(Clone, Debug, PartialEq)]
pub struct Expect {
    /// A new leader within this after each leader loss (`None`: not checked).
    pub max_failover: Option<Duration>,
    /// Least share of reads that succeed in every second outside fault windows.
    pub availability: Option<f64>,
    /// See [`DEFAULT_SETTLE`].
    pub settle: Duration,
}

/// One fault at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
    /// Line of the step in the file, for messages.
    pub line: usize,
}

/// Which member a step acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(u16),
    /// The node leading when the step runs.
    Leader,
    Canonical,
    /// Every node (netem), or every member this scenario stopped or paused (restart, resume).
    All,
}

/// A fault or its repair.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Kill(Target),
    Restart(Target),
    Pause(Target),
    Resume(Target),
    Partition(PartitionSpec),
    Heal,
    Netem { target: Target, shape: NetShape },
}

/// How a partition step cuts the network.
#[derive(Clone, Debug, PartialEq)]
pub enum PartitionSpec {
    Groups {
        groups: Vec<Vec<u16>>,
        one_way: bool,
    },
    Preset(Preset),
}

/// Delay and loss on a node's egress.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetShape {
    pub delay: Duration,
    pub jitter: Duration,
    /// 0 to 1.
    pub loss: f64,
}

impl NetShape {
    /// What shaping `nodes` this way records in a history.
    pub fn effect(&self, nodes: Vec<u16>) -> wire::history::Effect {
        wire::history::Effect::Netem {
            nodes,
            delay_ms: self.delay.as_secs_f64() * 1000.0,
            jitter_ms: self.jitter.as_secs_f64() * 1000.0,
            loss: self.loss,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Node(index) => write!(f, "node {index}"),
            Target::Leader => f.write_str("the leader"),
            Target::Canonical => f.write_str("the canonical"),
            Target::All => f.write_str("all"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Kill(target) => write!(f, "kill {target}"),
            Action::Restart(target) => write!(f, "restart {target}"),
            Action::Pause(target) => write!(f, "pause {target}"),
            Action::Resume(target) => write!(f, "resume {target}"),
            Action::Partition(PartitionSpec::Preset(preset)) => write!(f, "partition {preset}"),
            Action::Partition(PartitionSpec::Groups { groups, one_way }) => {
                let groups: Vec<String> = groups
                    .iter()
                    .map(|g| g.iter().map(u16::to_string).collect::<Vec<_>>().join(","))
                    .collect();
                write!(
                    f,
                    "partition {}",
                    groups.join(if *one_way { " -> " } else { " | " })
                )
            }
            Action::Heal => f.write_str("heal"),
            Action::Netem { target, shape } => write!(
                f,
                "netem {target}: delay {:?} jitter {:?} loss {}%",
                shape.delay,
                shape.jitter,
                shape.loss * 100.0
            ),
        }
    }
}

/// A mistake in a scenario file: `file:line: what is wrong; what to write instead` (no line
/// when the mistake is the whole file, e.g. one that cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    pub file: String,
    /// 1-based; 0 when no one line is at fault.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}", self.file, self.message),
            line => write!(f, "{}:{line}: {}", self.file, self.message),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(default)]
    description: String,
    nodes: Spanned<i64>,
    duration: Spanned<String>,
    workload: Spanned<RawWorkload>,
    #[serde(default)]
    expect: Option<RawExpect>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    concurrency: Option<Spanned<i64>>,
    rate: Option<Spanned<i64>>,
    ids: Spanned<String>,
    #[serde(default)]
    zipf: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    max_failover: Option<Spanned<String>>,
    availability: Option<Spanned<f64>>,
    settle: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Spanned<String>,
    kill: Option<Spanned<toml::Value>>,
    restart: Option<Spanned<toml::Value>>,
    pause: Option<Spanned<toml::Value>>,
    resume: Option<Spanned<toml::Value>>,
    partition: Option<Spanned<toml::Value>>,
    one_way: Option<Spanned<bool>>,
    heal: Option<Spanned<bool>>,
    netem: Option<Spanned<RawNetem>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetem {
    target: toml::Value,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    jitter: Option<String>,
    #[serde(default)]
    loss: Option<String>,
}

/// Reads and parses the scenario at `path`.
pub fn load(path: &Path) -> Result<Scenario, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: path.display().to_string(),
        line: 0,
        message: format!("cannot read it ({e}); give the path of a scenario file such as scenarios/leader-kill-loop.toml"),
    })?;
    let stem = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".to_string());
    parse(&path.display().to_string(), &stem, &text)
}

/// Parses scenario `text`; `file` names it in messages, `stem` is its name unless it has one.
pub fn parse(file: &str, stem: &str, text: &str) -> Result<Scenario, FileError> {
    let error = |span: Range<usize>, message: String| FileError {
        file: file.to_string(),
        line: line_of(text, span.start),
        message,
    };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        error(e.span().unwrap_or(0..0), message)
    })?;

    let nodes = match *raw.nodes.get_ref() {
        n @ 1..=64 => n as u16,
        n => {
            return Err(error(
                raw.nodes.span(),
                format!("nodes = {n} is out of range; write a cluster size from 1 to {MAX_NODES}"),
            ))
        }
    };
    let duration = duration_at(&raw.duration, "duration", &error)?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(error(
            raw.duration.span(),
            "duration must be above 0 and at most 1h; write e.g. duration = \"60s\"".to_string(),
        ));
    }
    let workload = workload(&raw.workload, &error)?;
    let expect = expect(raw.expect.as_ref(), &error)?;
    let mut steps = Vec::with_capacity(raw.step.len());
    for step in &raw.step {
        let parsed = parse_step(step, nodes, &error)?;
        if parsed.at > duration {
            return Err(error(
                step.get_ref().at.span(),
                format!(
                    "this step at {} is after the end of the scenario (duration = {:?}); move it earlier or raise duration",
                    step.get_ref().at.get_ref(),
                    duration
                ),
            ));
        }
        steps.push(Step {
            line: line_of(text, step.span().start),
            ..parsed
        });
    }
    steps.sort_by_key(|step| step.at);
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| stem.to_string()),
        description: raw.description,
        nodes,
        duration,
        workload,
        steps,
        expect,
    })
}

type ErrorAt<'a> = &'a dyn Fn(Range<usize>, String) -> FileError;

fn workload(raw: &Spanned<RawWorkload>, error: ErrorAt) -> Result<Workload, FileError> {
    let w = raw.get_ref();
    let count = |value: &Spanned<i64>, key: &str| match *value.get_ref() {
        n @ 1..=10_000 => Ok(n as u32),
        n => Err(error(
            value.span(),
            format!("{key} = {n} is out of range; write a number from 1 to {MAX_LOAD}"),
        )),
    };
    let load = match (&w.concurrency, &w.rate) {
        (Some(c), None) => Load::Concurrency(count(c, "concurrency")?),
        (None, Some(r)) => Load::Rate(count(r, "rate")?),
        _ => {
            return Err(error(
                raw.span(),
                "the workload needs exactly one of concurrency = C (reads in flight) or rate = R (reads per second)".to_string(),
            ))
        }
    };
    let ids = parse_ids(w.ids.get_ref()).map_err(|message| error(w.ids.span(), message))?;
    let zipf = match &w.zipf {
        None => 0.0,
        Some(z) if z.get_ref().is_finite() && (0.0..=10.0).contains(z.get_ref()) => *z.get_ref(),
        Some(z) => {
            return Err(error(
                z.span(),
                "zipf must be from 0 (uniform) to 10; write e.g. zipf = 1.0".to_string(),
            ))
        }
    };
    Ok(Workload { load, ids, zipf })
}

fn expect(raw: Option<&RawExpect>, error: ErrorAt) -> Result<Expect, FileError> {
    let Some(raw) = raw else {
        return Ok(Expect {
            max_failover: None,
            availability: None,
            settle: DEFAULT_SETTLE,
        });
    };
    let max_failover = match &raw.max_failover {
        Some(value) => Some(duration_at(value, "max_failover", error)?),
        None => None,
    };
    let availability = match &raw.availability {
        Some(a) if (0.0..=1.0).contains(a.get_ref()) => Some(*a.get_ref()),
        Some(a) => {
            return Err(error(
                a.span(),
                "availability is a share from 0 to 1; write e.g. availability = 0.99".to_string(),
            ))
        }
        None => None,
    };
    let settle = match &raw.settle {
        Some(value) => duration_at(value, "settle", error)?,
        None => DEFAULT_SETTLE,
    };
    Ok(Expect {
        max_failover,
        availability,
        settle,
    })
}

fn parse_step(raw: &Spanned<RawStep>, nodes: u16, error: ErrorAt) -> Result<Step, FileError> {
    let step = raw.get_ref();
    let at = duration_at(&step.at, "at", error)?;
    let present: Vec<&str> = [
        ("kill", step.kill.is_some()),
        ("restart", step.restart.is_some()),
        ("pause", step.pause.is_some()),
        ("resume", step.resume.is_some()),
        ("partition", step.partition.is_some()),
        ("heal", step.heal.is_some()),
        ("netem", step.netem.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, present)| present.then_some(key))
    .collect();
    if present.len() != 1 {
        let found = match present.len() {
            0 => "none".to_string(),
            _ => present.join(" and "),
        };
        return Err(error(
            raw.span(),
            format!("a step needs exactly one of kill, restart, pause, resume, partition, heal, netem; this one has {found}"),
        ));
    }
    if let Some(one_way) = &step.one_way {
        if step.partition.is_none() {
            return Err(error(
                one_way.span(),
                "one_way only goes with partition = [[FROM], [TO]]; remove it".to_string(),
            ));
        }
    }
    let target = |value: &Spanned<toml::Value>, allowed: &[Target], key: &str| {
        parse_target(value.get_ref(), allowed, nodes, key).map_err(|m| error(value.span(), m))
    };
    use Target::{All, Canonical, Leader};
    let action = if let Some(value) = &step.kill {
        Action::Kill(target(value, &[Leader, Canonical], "kill")?)
    } else if let Some(value) = &step.restart {
        Action::Restart(target(value, &[Canonical, All], "restart")?)
    } else if let Some(value) = &step.pause {
        Action::Pause(target(value, &[Leader], "pause")?)
    } else if let Some(value) = &step.resume {
        Action::Resume(target(value, &[All], "resume")?)
    } else if let Some(value) = &step.partition {
        let one_way = step.one_way.as_ref().is_some_and(|o| *o.get_ref());
        let spec =
            parse_partition(value.get_ref(), one_way, nodes).map_err(|m| error(value.span(), m))?;
        Action::Partition(spec)
    } else if let Some(heal) = &step.heal {
        if !heal.get_ref() {
            return Err(error(
                heal.span(),
                "heal = false does nothing; write heal = true or remove the step".to_string(),
            ));
        }
        Action::Heal
    } else if let Some(netem) = &step.netem {
        let raw_netem = netem.get_ref();
        let target = parse_target(&raw_netem.target, &[Leader, All], nodes, "netem target")
            .map_err(|m| error(netem.span(), m))?;
        let shape = parse_shape(raw_netem).map_err(|m| error(netem.span(), m))?;
        Action::Netem { target, shape }
    } else {
        unreachable!("exactly one action key is present, checked above");
    };
    Ok(Step {
        at,
        action,
        line: 0,
    })
}

/// A node index, or one of the words in `allowed`.
fn parse_target(
    value: &toml::Value,
    allowed: &[Target],
    nodes: u16,
    key: &str,
) -> Result<Target, String> {
    let words: Vec<&str> = allowed
        .iter()
        .map(|target| match target {
            Target::Leader => "\"leader\"",
            Target::Canonical => "\"canonical\"",
            Target::All => "\"all\"",
            Target::Node(_) => "",
        })
        .collect();
    let instead = format!(
        "write a node index from 1 to {nodes} or {}",
        words.join(" or ")
    );
    match value {
        toml::Value::Integer(index) if (1..=i64::from(nodes)).contains(index) => {
            Ok(Target::Node(*index as u16))
        }
        toml::Value::Integer(index) => Err(format!(
            "there is no node {index}: the scenario has nodes 1 to {nodes}; {instead}"
        )),
        toml::Value::String(word) => {
            let target = match word.as_str() {
                "leader" => Target::Leader,
                "canonical" => Target::Canonical,
                "all" => Target::All,
                _ => return Err(format!("{key} = \"{word}\" names no member; {instead}")),
            };
            if allowed.contains(&target) {
                Ok(target)
            } else {
                Err(format!("{key} cannot take \"{word}\"; {instead}"))
            }
        }
        other => Err(format!("{key} = {other} names no member; {instead}")),
    }
}

fn parse_partition(
    value: &toml::Value,
    one_way: bool,
    nodes: u16,
) -> Result<PartitionSpec, String> {
    let groups_hint = "write a preset name (e.g. partition = \"majorities-ring\") or groups (e.g. partition = [[1, 2], [3, 4, 5]])";
    match value {
        toml::Value::String(name) => {
            if one_way {
                return Err(format!(
                    "one_way goes with groups; for the leader one way write partition = \"{}\" or \"{}\"",
                    Preset::IsolateLeaderOutbound,
                    Preset::IsolateLeaderInbound
                ));
            }
            let preset: Preset = name.parse()?;
            if nodes < preset.min_nodes() {
                return Err(format!(
                    "`{preset}` needs at least {} nodes and the scenario has {nodes}; raise nodes or pick another preset",
                    preset.min_nodes()
                ));
            }
            Ok(PartitionSpec::Preset(preset))
        }
        toml::Value::Array(groups) => {
            let mut parsed = Vec::new();
            for group in groups {
                let toml::Value::Array(members) = group else {
                    return Err(format!("`{group}` is not a group; {groups_hint}"));
                };
                let mut indices = Vec::new();
                for member in members {
                    match member {
                        toml::Value::Integer(i) if (1..=i64::from(nodes)).contains(i) => {
                            indices.push(*i as u16)
                        }
                        other => {
                            return Err(format!(
                                "there is no node {other}: the scenario has nodes 1 to {nodes}; write indices from 1 to {nodes}"
                            ))
                        }
                    }
                }
                parsed.push(indices);
            }
            chaos::partition::Cut::new(parsed.clone(), one_way, nodes)
                .map_err(|e| format!("{e}; {groups_hint}"))?;
            if parsed.len() < 2 && !one_way {
                return Err(format!(
                    "a partition needs at least two groups; {groups_hint}"
                ));
            }
            Ok(PartitionSpec::Groups {
                groups: parsed,
                one_way,
            })
        }
        _ => Err(groups_hint.to_string()),
    }
}

fn parse_shape(raw: &RawNetem) -> Result<NetShape, String> {
    let delay = match &raw.delay {
        Some(text) => parse_duration(text)?,
        None => Duration::ZERO,
    };
    let jitter = match &raw.jitter {
        Some(text) => parse_duration(text)?,
        None => Duration::ZERO,
    };
    if delay > MAX_NETEM_DELAY || jitter > MAX_NETEM_DELAY {
        return Err("netem delay and jitter are at most 60s".to_string());
    }
    let loss = match &raw.loss {
        Some(text) => parse_percent(text)?,
        None => 0.0,
    };
    if delay.is_zero() && loss == 0.0 {
        return Err(
            "netem needs a delay or a loss; write e.g. netem = { target = 2, delay = \"100ms\", loss = \"5%\" }"
                .to_string(),
        );
    }
    Ok(NetShape {
        delay,
        jitter,
        loss,
    })
}

fn duration_at(value: &Spanned<String>, key: &str, error: ErrorAt) -> Result<Duration, FileError> {
    parse_duration(value.get_ref())
        .map_err(|message| error(value.span(), format!("{key}: {message}")))
}

/// `500ms`, `5s`, `1.5s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration; write e.g. \"500ms\", \"5s\" or \"2m\"");
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|split| text.split_at(split))
        .ok_or_else(bad)?;
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds < 0.0 || seconds > MAX_DURATION.as_secs_f64() {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `5%` as 0.05.
fn parse_percent(text: &str) -> Result<f64, String> {
    let bad = || format!("loss `{text}` is not a percentage; write e.g. \"5%\"");
    let number: f64 = text
        .strip_suffix('%')
        .ok_or_else(bad)?
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if !(0.0..=100.0).contains(&number) {
        return Err(bad());
    }
    Ok(number / 100.0)
}

/// `1..200` (inclusive).
fn parse_ids(text: &str) -> Result<(u64, u64), String> {
    let bad =
        || format!("ids = \"{text}\" is not a range of image ids; write e.g. ids = \"1..200\"");
    let (first, last) = text.split_once("..").ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last
        .trim_start_matches('=')
        .trim()
        .parse()
        .map_err(|_| bad())?;
    if first == 0 || first > last {
        return Err(bad());
    }
    Ok((first, last))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
