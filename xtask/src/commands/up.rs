//! `cargo xtask up N`: build what is stale, make the certificates, start the canonical and N
//! edges (on Docker, or as local processes), wait until every member answers, print the table.
//! Running it again on a running cluster starts only what is missing.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use lab::project::{parse_prefix, Project};
use lab::runtime::{self, MemberStatus, Runtime};
use lab::state::{member_name, new_cluster_id, MemberState, Options, RuntimeKind, State};
use lab::{certs, client, docker, faults, ports};
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
    /// Accept the canonical's images as they are now: rebuild its catalog of digests (the
    /// canonical restarts), printing one line per image added, changed or removed.
    #[arg(long)]
    reindex: bool,
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
            reindex: false,
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
        };
        let live = existing.filter(|state| state.prefix == prefix && is_alive(state));
        let kind = self.choose_runtime(sh, live.as_ref())?;
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
        let runtime = runtime::of(kind, &project);
        runtime.build(sh)?;
        if live.is_none() && runtime.has_members(sh, &prefix, None) {
            anyhow::bail!(
                "members of cluster `{prefix}` exist but {} does not describe them; remove them with `cargo xtask down --name {prefix}`",
                project.cluster_dir.display()
            );
        }
        let fresh = live.is_none();
        let mut state = match live {
            Some(live) => live,
            None => self.plan(prefix, kind, options, &runtime.reserved_ports(sh)?)?,
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
        let changed = |given: bool, same: bool| given && !same;
        if changed(
            options.images.is_some(),
            options.images == live.options.images,
        ) || changed(
            options.cache_mb.is_some(),
            options.cache_mb == live.options.cache_mb,
        ) || changed(
            options.replicas.is_some(),
            options.replicas == live.options.replicas,
        ) {
            anyhow::bail!(
                "cluster `{}` is running with other options ({:?}); run `cargo xtask down` first to change them",
                live.prefix,
                live.options
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
        })
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
    for (position, status) in statuses.into_iter().enumerate() {
        let member = state.members[position].clone();
        match status {
            MemberStatus::Running => continue,
            MemberStatus::Paused => {
                runtime.resume(sh, &member)?;
                actions.push(format!("resumed {}", member.name));
                continue;
            }
            MemberStatus::Stopped { .. } | MemberStatus::Missing => {
                let how = runtime.start(sh, state, member.index, status)?;
                state.save(&project.cluster_dir)?;
                actions.push(format!("{how} {}", member.name));
                started.push(member.index);
            }
        }
    }
    Ok(started)
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
    println!();
    println!(
        "  {:<5}  {:<width$}  {:<15}  metrics",
        "index", "name", "QUIC (udp)"
    );
    for member in members {
        println!(
            "  {:<5}  {:<width$}  {:<15}  {}",
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
