//! `cargo xtask up N`: build what is stale, make the certificates, start the canonical and N
//! edges (on Docker, or as local processes), wait until every member answers, print the table.
//! Running it again on a running cluster starts only what is missing.

use std::path::PathBuf;
use std::time::Instant;

use xshell::Shell;

use super::partition;
use crate::certs;
use crate::client;
use crate::containers;
use crate::docker;
use crate::netem;
use crate::ports;
use crate::process::{self, Binaries, ProcessStatus};
use crate::project::{existing_dir, parse_prefix, Project};
use crate::release;
use crate::state::{member_name, MemberState, Options, Runtime, State};

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
    runtime: Option<Runtime>,
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
}

/// What `up` did, for its closing message.
struct Outcome {
    state: State,
    /// When the first member was started (after building).
    launched: Instant,
    /// One phrase per member started, e.g. "created main_node_3".
    actions: Vec<String>,
}

impl Up {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let started = Instant::now();
        let project = Project::locate()?;
        let existing = State::load(&project.cluster_dir)?;
        let prefix = self
            .prefix
            .clone()
            .or_else(|| existing.as_ref().map(|state| state.prefix.clone()))
            .unwrap_or_else(|| project.default_prefix());
        let other_cluster = existing
            .as_ref()
            .filter(|state| state.prefix != prefix && is_alive(sh, &project, state));
        if let Some(existing) = other_cluster {
            anyhow::bail!(
                "{} already describes cluster `{}`; run `cargo xtask down` first (or set FLOTILLA_CLUSTER to another folder for a second cluster)",
                project.cluster_dir.display(),
                existing.prefix
            );
        }
        let options = Options {
            images: self
                .images
                .as_deref()
                .map(|dir| existing_dir(dir, "the --images folder"))
                .transpose()?,
            cache_mb: self.cache_mb,
            replicas: self.replicas,
        };
        let live = existing.filter(|state| state.prefix == prefix && is_alive(sh, &project, state));
        let runtime = self.choose_runtime(sh, live.as_ref())?;
        // Before any build: a wrong size or option is known at once.
        if let Some(live) = &live {
            self.check_shape(live, &options)?;
        }
        let outcome = match runtime {
            Runtime::Docker => self.docker(sh, &project, prefix, options, live)?,
            Runtime::Process => self.process(sh, &project, prefix, options, live)?,
        };
        let state = outcome.state;
        let client = match runtime {
            Runtime::Process => Binaries::locate(&project).client,
            Runtime::Docker => client::binary(&project)?,
        };
        let all: Vec<u16> = state.members.iter().map(|m| m.index).collect();
        client::wait_until_answering(sh, &client, &project.cluster_dir, &all, || {
            first_stopped(sh, &project, &state, &all)
        })?;
        let ready_in = outcome.launched.elapsed();
        if outcome.actions.is_empty() {
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
            outcome.actions.join(", "),
            ready_in.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        print_table(&state);
        print_next_steps(&state);
        Ok(())
    }

    fn choose_runtime(&self, sh: &Shell, live: Option<&State>) -> anyhow::Result<Runtime> {
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
            (Some(Runtime::Process), _) => Ok(Runtime::Process),
            (_, Ok(_)) => Ok(Runtime::Docker),
            (Some(Runtime::Docker), Err(reason)) => anyhow::bail!(
                "no Docker engine answered ({reason}); start Docker or use `--runtime process`"
            ),
            (None, Err(reason)) => {
                eprintln!(
                    "no Docker engine answered ({reason}); running the cluster as local processes"
                );
                Ok(Runtime::Process)
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

    /// The state to complete: the live one when its shape matches what was asked, else a
    /// fresh one on free ports.
    fn plan(
        &self,
        prefix: String,
        runtime: Runtime,
        options: Options,
        live: Option<State>,
        reserved: &std::collections::HashSet<u16>,
    ) -> anyhow::Result<State> {
        if let Some(live) = live {
            self.check_shape(&live, &options)?;
            return Ok(live);
        }
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
            })
            .collect();
        Ok(State {
            prefix,
            runtime,
            options,
            members,
            partition: None,
            partition_one_way: false,
            netem: Default::default(),
        })
    }

    fn docker(
        &self,
        sh: &Shell,
        project: &Project,
        prefix: String,
        options: Options,
        live: Option<State>,
    ) -> anyhow::Result<Outcome> {
        let binaries = release::build_binaries(sh, project)?;
        for report in release::build_images(sh, project, &binaries)? {
            if report.rebuilt {
                eprintln!(
                    "built image {} ({})",
                    report.image,
                    release::megabytes(report.size_bytes)
                );
            }
        }
        let existing = docker::containers(sh, Some(&prefix))?;
        let live = match (live, existing.is_empty()) {
            (live @ Some(_), _) => live,
            (None, true) => None,
            (None, false) => anyhow::bail!(
                "containers of cluster `{prefix}` exist but {} does not describe them; remove them with `cargo xtask down --name {prefix}`",
                project.cluster_dir.display()
            ),
        };
        let reserved = docker::reserved_ports(sh)?;
        let mut state = self.plan(prefix, Runtime::Docker, options, live, &reserved)?;
        let ca = certs::ensure_ca(project)?;
        let roles: Vec<_> = state.members.iter().map(MemberState::role).collect();
        certs::ensure_credentials(project, &ca, &roles)?;
        // Saved before anything starts, so that `down` finds whatever a failure leaves.
        state.save(&project.cluster_dir)?;
        let launched = Instant::now();
        let mut actions = Vec::new();
        if containers::ensure_network(sh, &state.prefix)? {
            actions.push(format!("network {}", docker::network_name(&state.prefix)));
        }
        if state.options.images.is_none() {
            containers::ensure_volume(sh, &state.prefix)?;
        }
        let current_images = [
            docker::image_id(sh, docker::CANONICAL_IMAGE),
            docker::image_id(sh, docker::NODE_IMAGE),
        ];
        let mut outdated = Vec::new();
        // Members whose containers started in fresh network namespaces.
        let mut started = Vec::new();
        for member in &state.members {
            let container = existing.iter().find(|c| c.index == member.index);
            let current = &current_images[usize::from(!member.is_canonical())];
            let outdated_image = container.is_some_and(|c| Some(&c.image) != current.as_ref());
            let verb = match container.map(|c| c.status.as_str()) {
                None => {
                    containers::run(sh, project, &state, member)?;
                    "created"
                }
                Some("running") => {
                    if outdated_image {
                        outdated.push(member.name.clone());
                    }
                    continue;
                }
                Some("paused") => {
                    docker::run(sh, &["unpause".into(), member.name.clone()])?;
                    "resumed"
                }
                // A stopped container of an older image is replaced: nothing runs in it.
                Some(_) if outdated_image => {
                    docker::run(sh, &["rm".into(), member.name.clone()])?;
                    containers::run(sh, project, &state, member)?;
                    "recreated"
                }
                Some(_) => {
                    docker::run(sh, &["start".into(), member.name.clone()])
                        .map_err(|error| containers::explain_start_failure(member, error))?;
                    "started"
                }
            };
            actions.push(format!("{verb} {}", member.name));
            started.push(member.index);
        }
        if !outdated.is_empty() {
            eprintln!(
                "note: {} run an older image; `cargo xtask down` and `up` again to replace them",
                outdated.join(", ")
            );
        }
        if state.partition.is_some() && !actions.is_empty() {
            // Started containers come up in fresh network namespaces.
            partition::apply(sh, &state)?;
        }
        if !started.is_empty() && !state.netem.is_empty() {
            netem::reapply(sh, project, &mut state, &started)?;
            state.save(&project.cluster_dir)?;
        }
        Ok(Outcome {
            state,
            launched,
            actions,
        })
    }

    fn process(
        &self,
        sh: &Shell,
        project: &Project,
        prefix: String,
        options: Options,
        live: Option<State>,
    ) -> anyhow::Result<Outcome> {
        process::build(sh)?;
        let binaries = Binaries::locate(project);
        let fresh = live.is_none();
        let mut state = self.plan(prefix, Runtime::Process, options, live, &Default::default())?;
        if fresh {
            // A new cluster starts with new logs; restarts of a running one append.
            let _ = std::fs::remove_dir_all(project.logs_dir());
        }
        let ca = certs::ensure_ca(project)?;
        let roles: Vec<_> = state.members.iter().map(MemberState::role).collect();
        certs::ensure_credentials(project, &ca, &roles)?;
        let launched = Instant::now();
        let mut actions = Vec::new();
        for position in 0..state.members.len() {
            let member = &state.members[position];
            match process::status(&binaries, member) {
                ProcessStatus::Running => continue,
                ProcessStatus::Paused => {
                    process::signal(sh, member, "CONT")?;
                    actions.push(format!("resumed {}", member.name));
                }
                ProcessStatus::Gone => {
                    let pid = process::spawn(project, &binaries, &state, member)?;
                    actions.push(format!("started {}", member.name));
                    state.members[position].pid = Some(pid);
                    // Saved after every start, so that `down` stops whatever a failure leaves.
                    state.save(&project.cluster_dir)?;
                }
            }
        }
        state.save(&project.cluster_dir)?;
        Ok(Outcome {
            state,
            launched,
            actions,
        })
    }
}

/// Whether anything of `state`'s cluster still exists (a container, a live process).
fn is_alive(sh: &Shell, project: &Project, state: &State) -> bool {
    match state.runtime {
        Runtime::Docker => docker::containers(sh, Some(&state.prefix)).is_ok_and(|c| !c.is_empty()),
        Runtime::Process => {
            let binaries = Binaries::locate(project);
            state
                .members
                .iter()
                .any(|m| process::status(&binaries, m) != ProcessStatus::Gone)
        }
    }
}

/// Fails, showing its last log lines, when one of the `watched` members stopped while we
/// wait for it.
pub fn first_stopped(
    sh: &Shell,
    project: &Project,
    state: &State,
    watched: &[u16],
) -> anyhow::Result<()> {
    /// Log lines shown for a member that stopped.
    const TAIL_LINES: usize = 15;
    let stopped = match state.runtime {
        Runtime::Docker => docker::containers(sh, Some(&state.prefix))?
            .into_iter()
            .find(|c| watched.contains(&c.index) && !c.is_running() && c.status != "paused")
            .map(|c| {
                let tail = containers::log_tail(sh, &c.name, TAIL_LINES);
                (c.name, format!("exit code {}", c.exit_code), tail)
            }),
        Runtime::Process => {
            let binaries = Binaries::locate(project);
            state
                .members
                .iter()
                .filter(|m| watched.contains(&m.index))
                .find(|m| process::status(&binaries, m) == ProcessStatus::Gone)
                .map(|m| {
                    let tail = process::log_tail(project, m, TAIL_LINES);
                    (m.name.clone(), "it exited".to_string(), tail)
                })
        }
    };
    match stopped {
        None => Ok(()),
        Some((name, how, tail)) => {
            if !tail.is_empty() {
                eprintln!("last lines of {name}'s log:\n{tail}");
            }
            anyhow::bail!("{name} stopped while starting ({how}); see `cargo xtask logs` for more")
        }
    }
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
