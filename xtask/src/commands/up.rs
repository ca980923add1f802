//! `cargo xtask up N`: build what is stale, make the certificates, start the canonical and N
//! edges (on Docker, or as local processes), wait until every member answers, print the table.
//! Running it again on a running cluster starts only what is missing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use lab::project::{parse_prefix, Project};
use lab::runtime::{self, MemberStatus, Runtime};
use lab::state::{
    member_name, new_cluster_id, CpuList, MemberState, Options, RuntimeKind, State, SwarmChoices,
};
use lab::{certs, client, docker, faults, ports, swarm, UsageError};
use xshell::Shell;

/// Most edges a cluster may have.
const MAX_NODES: i64 = 64;

/// Start a cluster of N edge nodes and the canonical, or complete a running one.
#[derive(Debug, clap::Args)]
pub struct Up {
    /// Number of edge nodes, 1 to 64.
    #[arg(value_parser = clap::value_parser!(u16).range(1..=MAX_NODES))]
    nodes: u16,
    /// Where to run; docker when an engine answers, else process.
    #[arg(long, value_enum)]
    runtime: Option<RuntimeKind>,
    /// Name prefix of containers, network and volume [default: the repository folder's name].
    #[arg(long = "name", value_name = "PREFIX", value_parser = parse_prefix)]
    prefix: Option<String>,
    /// Serve the files of DIR (`<id>.<ext>`) instead of generated sample images.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Cache size of each edge, in MiB [default: the node's].
    #[arg(long, value_name = "M", value_parser = clap::value_parser!(u32).range(1..=65536))]
    cache_mb: Option<u32>,
    /// How many edges the leader replicates an image to [default: the node's].
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u16).range(1..=MAX_NODES))]
    replicas: Option<u16>,
    /// Run every member on these CPUs only, e.g. `0` or `0,2-3` (process: the members'
    /// affinity; docker: `--cpuset-cpus`) [default: every CPU].
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    cpus: Option<CpuList>,
    /// Accept the canonical's images as they are now: rebuild its catalog of digests (the
    /// canonical restarts), printing one line per image added, changed or removed.
    #[arg(long)]
    reindex: bool,
    /// Swarm: make this engine a single-node swarm when it is not in one (`down` leaves it).
    #[arg(long)]
    init: bool,
    /// Swarm: push the images to this registry and run them from there, so that every
    /// machine of the swarm can pull them.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_registry)]
    registry: Option<String>,
    /// Swarm: whether the swarm starts a failed member again [default: never, a kill is a kill].
    #[arg(long, value_enum, value_name = "POLICY")]
    restart: Option<RestartPolicy>,
}

/// When a swarm starts a member's task again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RestartPolicy {
    None,
    OnFailure,
}

/// `--cpus`: a CPU list whose every CPU this machine has.
fn parse_cpus(text: &str) -> Result<CpuList, String> {
    let list: CpuList = text.parse()?;
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    match list.cpus().iter().find(|&&cpu| cpu >= online) {
        Some(cpu) => Err(format!(
            "this machine has CPUs 0-{} for the cluster; there is no CPU {cpu}",
            online - 1
        )),
        None => Ok(list),
    }
}

/// `HOST:PORT` of a registry, checked for shape only.
fn parse_registry(text: &str) -> Result<String, String> {
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            && port.parse::<u16>().is_ok_and(|port| port > 0)
    });
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "`{text}` is not a registry address HOST:PORT (e.g. registry.lan:5000)"
        ))
    }
}

impl Up {
    /// `up NODES [--runtime RUNTIME]` with every other option at its default.
    pub fn new(nodes: u16, runtime: Option<RuntimeKind>) -> Up {
        Up {
            nodes,
            runtime,
            prefix: None,
            images: None,
            cache_mb: None,
            replicas: None,
            cpus: None,
            reindex: false,
            init: false,
            registry: None,
            restart: None,
        }
    }

    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let project = Project::locate()?;
        let existing = State::load(&project.cluster_dir)?;
        let prefix = self
            .prefix
            .clone()
            .or_else(|| existing.as_ref().map(|state| state.prefix.clone()))
            .unwrap_or_else(|| project.default_prefix());
        let is_alive = |state: &State| {
            runtime::of(state.runtime, &project).has_members(sh, &state.prefix, Some(state))
        };
        let other_cluster = existing
            .as_ref()
            .filter(|state| state.prefix != prefix && is_alive(state));
        if let Some(existing) = other_cluster {
            anyhow::bail!(
                "{} already describes cluster `{}`; run `cargo xtask down` first (or set FLOTILLA_CLUSTER to another folder for a second cluster)",
                project.cluster_dir.display(),
                existing.prefix
            );
        }
        let images = self
            .images
            .as_deref()
            .map(lab::project::images_dir)
            .transpose()?;
        if let Some(images) = &images {
            for skipped in &images.skipped {
                eprintln!(
                    "note: {} holds {skipped}: the canonical will not serve it",
                    images.path.display()
                );
            }
        }
        let options = Options {
            images: images.map(|images| images.path),
            cache_mb: self.cache_mb,
            replicas: self.replicas,
            cpus: self.cpus.clone(),
        };
        let live = existing.filter(|state| state.prefix == prefix && is_alive(state));
        let kind = self.choose_runtime(sh, live.as_ref())?;
        self.check_swarm_options(kind, live.as_ref())?;
        // Before any build: a wrong size or option is known at once.
        if let Some(live) = &live {
            self.check_shape(live, &options)?;
        }
        if live.is_none() && docker::engine(sh).is_ok() {
            if let Some(owner) = docker::owner_elsewhere(sh, &prefix, &project.cluster_dir)? {
                anyhow::bail!(
                    "the name `{prefix}` is taken by a cluster started from {owner}; pick another with `--name`, or run `cargo xtask down` there"
                );
            }
        }
        if kind == RuntimeKind::Swarm && live.is_none() && !self.init {
            // Before the build: without a manager nothing can start.
            swarm::ensure_manager(sh, false)?;
        }
        let runtime = runtime::of(kind, &project);
        runtime.build(sh)?;
        let initialised = match (kind, &live) {
            (RuntimeKind::Swarm, None) => {
                let made = swarm::ensure_manager(sh, self.init)?;
                if made.swarm {
                    eprintln!(
                        "made this engine a single-node swarm (`docker swarm init`); `cargo xtask down` leaves it again"
                    );
                }
                made
            }
            _ => swarm::Initialised::default(),
        };
        if let Some(registry) = self.registry.as_deref() {
            if let Err(error) = swarm::push_images(sh, registry) {
                leave_made_swarm(sh, initialised);
                return Err(error);
            }
        }
        if live.is_none() && runtime.has_members(sh, &prefix, None) {
            anyhow::bail!(
                "members of cluster `{prefix}` exist but {} does not describe them; remove them with `cargo xtask down --name {prefix}`",
                project.cluster_dir.display()
            );
        }
        let fresh = live.is_none();
        let mut state = match live {
            Some(live) => live,
            None => {
                let planned = runtime
                    .reserved_ports(sh)
                    .and_then(|reserved| self.plan(prefix, kind, options, &reserved));
                match planned {
                    Ok(mut state) => {
                        if kind == RuntimeKind::Swarm {
                            state.swarm = Some(SwarmChoices {
                                initialised: initialised.swarm,
                                gateway_bridge: initialised.gateway_bridge,
                                registry: self.registry.clone(),
                                restart_on_failure: self.restart == Some(RestartPolicy::OnFailure),
                            });
                        }
                        state
                    }
                    Err(error) => {
                        leave_made_swarm(sh, initialised);
                        return Err(error);
                    }
                }
            }
        };
        let ca = certs::ensure_ca(&project)?;
        let roles: Vec<_> = state.members.iter().map(MemberState::role).collect();
        certs::ensure_credentials(&project, &ca, &roles)?;
        // Saved before anything starts, so that `down` finds whatever a failure leaves.
        state.save(&project.cluster_dir)?;
        let launched = Instant::now();
        let mut actions = Vec::new();
        let launched_members = launch(
            sh,
            runtime.as_ref(),
            &project,
            &mut state,
            Launch {
                fresh,
                reindex: self.reindex,
            },
            &mut actions,
        );
        if let (Err(error), true) = (&launched_members, fresh) {
            // Nothing of a cluster that never came up is left running.
            let how = match runtime.remove(sh, &state.prefix, Some(&state), false) {
                Ok(_) => "stopped what this `up` started".to_string(),
                Err(stop_error) => format!("stopping what it started failed too: {stop_error:#}"),
            };
            let _ = State::remove(&project.cluster_dir);
            anyhow::bail!("{error:#} ({how})");
        }
        launched_members?;
        let ready_in = launched.elapsed();
        if actions.is_empty() {
            println!(
                "cluster `{}` already running with {} ({}); nothing to do",
                state.prefix,
                nodes(state.node_count()),
                state.runtime
            );
            print_table(&state);
            return Ok(());
        }
        println!(
            "cluster `{}` is up: the canonical and {} on {} ({}; all answering {:.2} s after the first start, {:.1} s in all)",
            state.prefix,
            nodes(state.node_count()),
            state.runtime,
            actions.join(", "),
            ready_in.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        print_table(&state);
        print_next_steps(&state);
        Ok(())
    }

    fn choose_runtime(&self, sh: &Shell, live: Option<&State>) -> anyhow::Result<RuntimeKind> {
        if let Some(live) = live {
            if self.runtime.is_some_and(|wanted| wanted != live.runtime) {
                anyhow::bail!(
                    "cluster `{}` is running on the {} runtime; run `cargo xtask down` first",
                    live.prefix,
                    live.runtime
                );
            }
            return Ok(live.runtime);
        }
        match (self.runtime, docker::engine(sh)) {
            (Some(RuntimeKind::Process), _) => Ok(RuntimeKind::Process),
            (Some(RuntimeKind::Swarm), Ok(_)) => Ok(RuntimeKind::Swarm),
            (Some(RuntimeKind::Swarm), Err(reason)) => anyhow::bail!(
                "no Docker engine answered ({reason}); the swarm runtime needs one that is a swarm manager"
            ),
            (_, Ok(_)) => Ok(RuntimeKind::Docker),
            (Some(RuntimeKind::Docker), Err(reason)) => anyhow::bail!(
                "no Docker engine answered ({reason}); start Docker or use `--runtime process`"
            ),
            (None, Err(reason)) => {
                eprintln!(
                    "no Docker engine answered ({reason}); running the cluster as local processes"
                );
                Ok(RuntimeKind::Process)
            }
        }
    }

    /// Fails when a swarm-only option is given for another runtime, or to a running cluster.
    fn check_swarm_options(&self, kind: RuntimeKind, live: Option<&State>) -> anyhow::Result<()> {
        if kind == RuntimeKind::Swarm && self.cpus.is_some() {
            return Err(UsageError(
                "`--cpus` is for the docker and process runtimes: a swarm places its tasks on machines of its own".to_string(),
            )
            .into());
        }
        let given: Vec<&str> = [
            (self.init, "--init"),
            (self.registry.is_some(), "--registry"),
            (self.restart.is_some(), "--restart"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect();
        let Some(first) = given.first() else {
            return Ok(());
        };
        if kind != RuntimeKind::Swarm {
            return Err(UsageError(format!(
                "`{first}` is for the swarm runtime; add `--runtime swarm`"
            ))
            .into());
        }
        if let Some(live) = live {
            let choices = live.swarm.clone().unwrap_or_default();
            let same = self
                .registry
                .as_ref()
                .is_none_or(|r| Some(r) == choices.registry.as_ref())
                && self
                    .restart
                    .is_none_or(|r| (r == RestartPolicy::OnFailure) == choices.restart_on_failure);
            if !same {
                anyhow::bail!(
                    "cluster `{}` is running with other swarm options; run `cargo xtask down` first to change them",
                    live.prefix
                );
            }
        }
        Ok(())
    }

    /// Fails unless a running cluster has the size and options asked for.
    fn check_shape(&self, live: &State, options: &Options) -> anyhow::Result<()> {
        if live.node_count() != self.nodes {
            anyhow::bail!(
                "cluster `{}` already runs {}; run `cargo xtask down` before `up {}`",
                live.prefix,
                nodes(live.node_count()),
                self.nodes
            );
        }
        let differences = option_differences(&live.options, options);
        if !differences.is_empty() {
            anyhow::bail!(
                "cluster `{}` runs with {}; run `cargo xtask down` first to change that",
                live.prefix,
                differences.join(", ")
            );
        }
        Ok(())
    }

    /// A new cluster's state, on free ports.
    fn plan(
        &self,
        prefix: String,
        runtime: RuntimeKind,
        options: Options,
        reserved: &HashSet<u16>,
    ) -> anyhow::Result<State> {
        let count = usize::from(self.nodes) + 1;
        let ports = ports::allocate(count, reserved)?;
        let members = ports
            .into_iter()
            .zip(0u16..)
            .map(|(pair, index)| MemberState {
                index,
                name: member_name(&prefix, index),
                quic_port: pair.quic,
                metrics_port: pair.metrics,
                pid: None,
                bridge: None,
                host: None,
            })
            .collect();
        Ok(State {
            prefix,
            cluster_id: Some(new_cluster_id()),
            runtime,
            options,
            members,
            partition: None,
            partition_one_way: false,
            partition_pairs: Vec::new(),
            netem: Default::default(),
            swarm: None,
        })
    }
}

/// Makes this engine leave the swarm this `up` made, when it fails before recording it.
fn leave_made_swarm(sh: &Shell, initialised: swarm::Initialised) {
    if initialised.swarm {
        match swarm::leave(sh, initialised.gateway_bridge) {
            Ok(()) => eprintln!("left the single-node swarm this `up` made"),
            Err(error) => eprintln!("leaving the swarm this `up` made failed: {error:#}"),
        }
    }
}

/// What this `up` does besides starting what is missing.
struct Launch {
    /// No member of the cluster ran before.
    fresh: bool,
    /// Rebuild the canonical's catalog first (`--reindex`).
    reindex: bool,
}

/// Makes what surrounds the members, reindexes the canonical's images when asked (which
/// stops the canonical), starts those that do not run, applies recorded faults to them again
/// and waits until every member answers; returns the members started.
fn launch(
    sh: &Shell,
    runtime: &dyn Runtime,
    project: &Project,
    state: &mut State,
    how: Launch,
    actions: &mut Vec<String>,
) -> anyhow::Result<Vec<u16>> {
    actions.extend(runtime.prepare(sh, state, how.fresh)?);
    if how.reindex {
        eprintln!("reindexing the canonical's images (the canonical stops meanwhile)");
        let report = runtime.reindex(sh, state)?;
        for line in report.lines() {
            println!("  {line}");
        }
        actions.push("reindexed the canonical's images".to_string());
    }
    let started = start_missing(sh, runtime, project, state, actions)?;
    let outdated = runtime.outdated(sh, state);
    if !outdated.is_empty() {
        eprintln!(
            "note: {} run an older image; `cargo xtask down` and `up` again to replace them",
            outdated.join(", ")
        );
    }
    // Started members came up in fresh network namespaces.
    faults::restore(sh, project, runtime, state, &started)?;
    let bridges = runtime.bridge_addresses(sh, state);
    state.set_bridges(&bridges);
    let hosts = host_addresses(runtime.placements(sh, state));
    state.set_hosts(&hosts);
    state.save(&project.cluster_dir)?;
    let client = client::binary(project)?;
    let all: Vec<u16> = state.members.iter().map(|m| m.index).collect();
    client::wait_until_answering(sh, &client, &project.cluster_dir, &all, || {
        runtime::first_stopped(sh, runtime, state, &all)
    })?;
    Ok(started)
}

/// Starts (or thaws) every member that does not run, saving the state after each start so
/// that `down` stops whatever a failure leaves; returns the members that started in fresh
/// network namespaces and adds a phrase per member to `actions` ("created main_node_3").
fn start_missing(
    sh: &Shell,
    runtime: &dyn Runtime,
    project: &Project,
    state: &mut State,
    actions: &mut Vec<String>,
) -> anyhow::Result<Vec<u16>> {
    let statuses = runtime.statuses(sh, state)?;
    let mut started = Vec::new();
    let mut missing = Vec::new();
    for (position, status) in statuses.into_iter().enumerate() {
        let member = state.members[position].clone();
        match status {
            MemberStatus::Running => continue,
            MemberStatus::Paused => {
                runtime.resume(sh, &member)?;
                actions.push(format!("resumed {}", member.name));
                continue;
            }
            MemberStatus::Missing => missing.push(member.index),
            MemberStatus::Stopped { .. } => {
                let how = runtime.start(sh, state, member.index, status)?;
                state.save(&project.cluster_dir)?;
                actions.push(format!("{how} {}", member.name));
                started.push(member.index);
            }
        }
    }
    // The canonical first, then the rest together (when the runtime can): edges ask the
    // canonical as soon as they start.
    let (first, rest) = match missing.split_first() {
        Some((&0, rest)) => (vec![0], rest.to_vec()),
        _ => (Vec::new(), missing),
    };
    let mut failure = None;
    for batch in [first, rest] {
        let results = runtime.create(sh, state, &batch);
        // Saved whatever happened: `down` stops what a failure leaves.
        state.save(&project.cluster_dir)?;
        for (index, result) in batch.into_iter().zip(results) {
            match result {
                Ok(how) => {
                    actions.push(format!("{how} {}", state.member_by_index(index)?.name));
                    started.push(index);
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
    }
    Ok(started)
}

/// The addresses of members that run on other machines, by member index.
pub fn host_addresses(
    placements: std::collections::BTreeMap<u16, runtime::Placed>,
) -> std::collections::BTreeMap<u16, String> {
    placements
        .into_iter()
        .filter_map(|(index, placed)| Some((index, placed.address?)))
        .collect()
}

/// Each option `asked` gives that differs from what the running cluster has, as
/// `--cpus 1 (asked: 0)`; an option not given is not a difference.
fn option_differences(running: &Options, asked: &Options) -> Vec<String> {
    fn shown<T: std::fmt::Display>(value: Option<&T>) -> String {
        value.map_or_else(|| "its default".to_string(), ToString::to_string)
    }
    fn differ<T: PartialEq + std::fmt::Display>(
        flag: &str,
        running: Option<&T>,
        asked: Option<&T>,
    ) -> Option<String> {
        let asked_value = asked?;
        (running != Some(asked_value))
            .then(|| format!("{flag} {} (asked: {asked_value})", shown(running)))
    }
    let images = |options: &Options| {
        options
            .images
            .as_ref()
            .map(|path| path.display().to_string())
    };
    [
        differ("--images", images(running).as_ref(), images(asked).as_ref()),
        differ(
            "--cache-mb",
            running.cache_mb.as_ref(),
            asked.cache_mb.as_ref(),
        ),
        differ(
            "--replicas",
            running.replicas.as_ref(),
            asked.replicas.as_ref(),
        ),
        differ("--cpus", running.cpus.as_ref(), asked.cpus.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// `1 node`, `5 nodes`.
fn nodes(count: u16) -> String {
    match count {
        1 => "1 node".to_string(),
        count => format!("{count} nodes"),
    }
}

/// The node table: index, name, QUIC address and metrics URL on the host.
pub fn print_table(state: &State) {
    let file = state.cluster_file();
    let members: Vec<_> = std::iter::once(&file.canonical)
        .chain(&file.nodes)
        .collect();
    let width = members
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let quic_width = members
        .iter()
        .map(|m| m.quic.len())
        .max()
        .unwrap_or(0)
        .max("QUIC (udp)".len());
    println!();
    println!(
        "  {:<5}  {:<width$}  {:<quic_width$}  metrics",
        "index", "name", "QUIC (udp)"
    );
    for member in members {
        println!(
            "  {:<5}  {:<width$}  {:<quic_width$}  {}",
            member.index, member.name, member.quic, member.metrics
        );
    }
    println!();
}

fn print_next_steps(state: &State) {
    let count = state.node_count();
    let attach = 2.min(count);
    let kill = 3.min(count);
    println!("next:");
    for (command, what) in [
        (
            "cargo client get-image 123".to_string(),
            "fetch image 123 through the edges",
        ),
        (
            "cargo client status".to_string(),
            "role, term and cache of every node",
        ),
        (
            format!("cargo xtask attach {attach}"),
            "node's console: status, peers, leader, cache",
        ),
        (
            format!("cargo xtask kill {kill}"),
            "kill a node; images stay servable",
        ),
        ("cargo xtask logs all -f".to_string(), "follow every log"),
        ("cargo xtask down".to_string(), "stop and remove everything"),
    ] {
        println!("  {command:<28}  {what}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_option_is_named_with_both_values() {
        let running = Options {
            cache_mb: Some(64),
            cpus: Some("1".parse().unwrap()),
            ..Options::default()
        };
        let same = Options {
            cache_mb: Some(64),
            ..Options::default()
        };
        assert!(option_differences(&running, &same).is_empty());
        assert!(option_differences(&running, &Options::default()).is_empty());
        let asked = Options {
            cpus: Some("0-1".parse().unwrap()),
            replicas: Some(2),
            ..Options::default()
        };
        assert_eq!(
            option_differences(&running, &asked),
            vec![
                "--replicas its default (asked: 2)".to_string(),
                "--cpus 1 (asked: 0-1)".to_string()
            ]
        );
    }
}
