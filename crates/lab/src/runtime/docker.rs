//! The Docker runtime: how each member becomes a hardened scratch container on the cluster
//! network, the network and volume around them, and how containers are found (by label),
//! stopped, frozen and entered.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::SystemTime;

use anyhow::Context;
use chaos::FaultTarget;
use xshell::Shell;

use super::{MemberStatus, Runtime, Started};
use crate::docker::{
    self, bind_mount, Container, CANONICAL_IMAGE, CHECKOUT_LABEL, CLUSTER_LABEL, ID_LABEL,
    INDEX_LABEL, NODE_IMAGE, ROLE_LABEL,
};
use crate::launch::{images_catalog_name, member_args, reindex_args, Placement};
use crate::project::Project;
use crate::release;
use crate::state::{member_name, MemberState, RuntimeKind, State};
use crate::time::parse_utc;

/// QUIC port inside every container.
pub const QUIC_PORT: u16 = 7000;
/// Metrics port inside every container.
pub const METRICS_PORT: u16 = 9100;
/// Where a member's own credentials folder is mounted, read-only.
pub(super) const CERTS_MOUNT: &str = "/certs";
/// Where the canonical's named volume is mounted: its sample images and their catalog, or
/// the catalog of a user's `--images` folder (under `catalogs/`). Its only writable place.
pub(super) const DATA_MOUNT: &str = "/data";
/// Where a user's `--images` folder is mounted, read-only.
pub(super) const IMAGES_MOUNT: &str = "/images";
/// Memory limit of a node without `--cache-mb`.
const NODE_MEMORY_MB: u32 = 256;
/// Memory limit of the canonical, which encodes sample PNGs of a few MB.
const CANONICAL_MEMORY_MB: u32 = 512;
/// Memory beyond the cache a node may need (runtime, QUIC buffers, images in flight).
const NODE_OVERHEAD_MB: u32 = 192;
/// Seconds Docker waits after SIGTERM before it kills a member on `restart`.
pub(super) const STOP_GRACE_SECONDS: &str = "5";
/// Per-container log size before the engine rotates it, and files kept.
pub(super) const LOG_MAX_SIZE: &str = "max-size=50m";
pub(super) const LOG_MAX_FILES: &str = "max-file=2";

/// Where `member` listens and finds its files, inside its container.
pub(super) fn placement(state: &State) -> Placement {
    let on_network = |index: u16| format!("{}:{QUIC_PORT}", member_name(&state.prefix, index));
    let (data, samples, catalog) = match &state.options.images {
        Some(images) => (
            IMAGES_MOUNT,
            false,
            Some(format!(
                "{DATA_MOUNT}/catalogs/{}",
                images_catalog_name(images)
            )),
        ),
        None => (DATA_MOUNT, true, None),
    };
    Placement {
        listen: format!("0.0.0.0:{QUIC_PORT}"),
        metrics: format!("0.0.0.0:{METRICS_PORT}"),
        certs: CERTS_MOUNT.to_string(),
        data: data.to_string(),
        samples,
        catalog,
        canonical: on_network(0),
        peers: state.nodes().map(|node| on_network(node.index)).collect(),
    }
}

/// The container memory limit of `member`, in MiB: a cache of `--cache-mb` fits with room to
/// spare. Tests on the process runtime hold a member's resident memory to it too.
pub fn memory_limit_mb(state: &State, member: &MemberState) -> u32 {
    if member.is_canonical() {
        return CANONICAL_MEMORY_MB;
    }
    match state.options.cache_mb {
        Some(cache_mb) => NODE_MEMORY_MB.max(cache_mb.saturating_add(NODE_OVERHEAD_MB)),
        None => NODE_MEMORY_MB,
    }
}

/// How many `docker run`s [`DockerRuntime::create`] keeps in flight (4, 8 and 20 measured
/// the same within noise on 2 cores).
const CONCURRENT_RUNS: usize = 4;

/// Creates and starts `member`'s container.
fn run(sh: &Shell, project: &Project, state: &State, member: &MemberState) -> anyhow::Result<()> {
    let (role, image) = if member.is_canonical() {
        ("canonical", CANONICAL_IMAGE)
    } else {
        ("node", NODE_IMAGE)
    };
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        format!("--name={}", member.name),
        format!("--hostname={}", member.name),
        format!("--network={}", docker::network_name(&state.prefix)),
        format!("--label={CLUSTER_LABEL}={}", state.prefix),
        format!("--label={ROLE_LABEL}={role}"),
        format!("--label={CHECKOUT_LABEL}={}", project.cluster_dir.display()),
        format!("--label={INDEX_LABEL}={}", member.index),
        // Hardening: nothing writable but the data volume, no capabilities, no setuid.
        "--read-only".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--memory={}m", memory_limit_mb(state, member)),
        "--restart=no".into(),
        "--log-driver=json-file".into(),
        format!("--log-opt={LOG_MAX_SIZE}"),
        format!("--log-opt={LOG_MAX_FILES}"),
        // Fixed host ports, chosen at `up`, so `restart` brings a member back where it was.
        format!("--publish=127.0.0.1:{}:{QUIC_PORT}/udp", member.quic_port),
        format!(
            "--publish=127.0.0.1:{}:{METRICS_PORT}/tcp",
            member.metrics_port
        ),
        format!(
            "--mount={}",
            bind_mount(
                &project.member_certs(&member.role().stem()),
                CERTS_MOUNT,
                true
            )
        ),
    ];
    if member.is_canonical() {
        args.extend(canonical_mounts(state));
    }
    if let Some(cpus) = &state.options.cpus {
        args.push(format!("--cpuset-cpus={cpus}"));
    }
    if let Some(id) = &state.cluster_id {
        args.push(format!("--label={ID_LABEL}={id}"));
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        args.push(format!("--env=RUST_LOG={filter}"));
    }
    args.push(image.into());
    args.extend(member_args(member, &placement(state), &state.options));
    docker::run(sh, &args).map_err(|error| explain_start_failure(member, error))?;
    Ok(())
}

/// The canonical's mounts: the data volume (writable), and a user's `--images` folder
/// read-only.
pub(super) fn canonical_mounts(state: &State) -> Vec<String> {
    let mut mounts = vec![format!(
        "--mount=type=volume,source={},target={DATA_MOUNT}",
        docker::volume_name(&state.prefix)
    )];
    if let Some(images) = &state.options.images {
        mounts.push(format!(
            "--mount={}",
            bind_mount(images, IMAGES_MOUNT, true)
        ));
    }
    mounts
}

/// Runs the canonical image once with `--reindex` over the canonical's mounts, as hardened
/// as the canonical itself and without a network; returns what it printed.
pub(super) fn run_reindex(sh: &Shell, state: &State) -> anyhow::Result<String> {
    let canonical = state.canonical();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        format!("--name={}_reindex", canonical.name),
        "--network=none".into(),
        "--read-only".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--memory={CANONICAL_MEMORY_MB}m"),
    ];
    args.extend(canonical_mounts(state));
    args.push(CANONICAL_IMAGE.into());
    args.extend(reindex_args(canonical, &placement(state)));
    docker::run(sh, &args).context("reindexing the canonical's images")
}

/// Turns the engine's complaint about a taken port into the one line a user needs.
pub(super) fn explain_start_failure(member: &MemberState, error: anyhow::Error) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("port is already allocated") || text.contains("address already in use") {
        return anyhow::anyhow!(
            "a host port of {} (UDP {} or TCP {}) is taken by another program; stop that program, or run `cargo xtask down` and `up` again to pick free ports",
            member.label(),
            member.quic_port,
            member.metrics_port
        );
    }
    error.context(format!("starting {}", member.label()))
}

/// The labels of what `up` creates around the members: the prefix and, when the state has
/// one, the cluster id.
pub(super) fn labels(project: &Project, state: &State) -> Vec<String> {
    let mut labels = vec![
        format!("--label={CLUSTER_LABEL}={}", state.prefix),
        format!("--label={CHECKOUT_LABEL}={}", project.cluster_dir.display()),
    ];
    if let Some(id) = &state.cluster_id {
        labels.push(format!("--label={ID_LABEL}={id}"));
    }
    labels
}

/// Creates the cluster network unless it exists; true when it was created.
fn ensure_network(sh: &Shell, project: &Project, state: &State) -> anyhow::Result<bool> {
    let name = docker::network_name(&state.prefix);
    if docker::run(sh, &["network".into(), "inspect".into(), name.clone()]).is_ok() {
        return Ok(false);
    }
    let mut args = vec!["network".to_string(), "create".to_string()];
    args.extend(labels(project, state));
    args.push(name);
    docker::run(sh, &args)?;
    Ok(true)
}

/// Creates the canonical's data volume unless it exists (creating is idempotent).
fn ensure_volume(sh: &Shell, project: &Project, state: &State) -> anyhow::Result<()> {
    let mut args = vec!["volume".to_string(), "create".to_string()];
    args.extend(labels(project, state));
    args.push(docker::volume_name(&state.prefix));
    docker::run(sh, &args)?;
    Ok(())
}

/// The last `count` lines a container wrote, to show why it stopped.
fn log_tail(sh: &Shell, name: &str, count: usize) -> String {
    let count = count.to_string();
    xshell::cmd!(sh, "docker logs --tail {count} {name}")
        .quiet()
        .ignore_status()
        .output()
        .map(|output| {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.trim_end().to_string()
        })
        .unwrap_or_default()
}

/// Scratch containers on the local Docker engine.
pub struct DockerRuntime {
    project: Project,
}

impl DockerRuntime {
    pub fn new(project: Project) -> DockerRuntime {
        DockerRuntime { project }
    }

    /// The containers of `state`'s cluster: those of its prefix that carry its cluster id
    /// (all of the prefix for a state of an older version, which recorded none).
    fn own(&self, sh: &Shell, state: &State) -> anyhow::Result<Vec<Container>> {
        Ok(docker::containers(sh, Some(&state.prefix))?
            .into_iter()
            .filter(|c| state.cluster_id.is_none() || c.cluster_id == state.cluster_id)
            .collect())
    }

    /// The container of member `index`, or one line saying how to make it.
    fn container(&self, sh: &Shell, state: &State, index: u16) -> anyhow::Result<Container> {
        self.own(sh, state)?
            .into_iter()
            .find(|c| c.index == index)
            .ok_or_else(|| {
                let member = state.member_by_index(index).map(MemberState::label);
                anyhow::anyhow!(
                    "{} has no container; run `cargo xtask up {}` to recreate it",
                    member.unwrap_or_else(|_| format!("member {index}")),
                    state.node_count()
                )
            })
    }
}

/// A container's state in the runtime's common words.
fn status_of(container: &Container) -> MemberStatus {
    match container.status.as_str() {
        "running" | "restarting" => MemberStatus::Running,
        "paused" => MemberStatus::Paused,
        _ => MemberStatus::Stopped {
            exit_code: Some(container.exit_code),
        },
    }
}

impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn build(&self, sh: &Shell) -> anyhow::Result<()> {
        let binaries = release::build_binaries(sh, &self.project)?;
        for report in release::build_images(sh, &self.project, &binaries)? {
            if report.rebuilt {
                eprintln!(
                    "built image {} ({})",
                    report.image,
                    release::megabytes(report.size_bytes)
                );
            }
        }
        Ok(())
    }

    fn reserved_ports(&self, sh: &Shell) -> anyhow::Result<HashSet<u16>> {
        docker::reserved_ports(sh)
    }

    fn has_members(&self, sh: &Shell, prefix: &str, state: Option<&State>) -> bool {
        match state {
            Some(state) => self.own(sh, state).is_ok_and(|c| !c.is_empty()),
            None => docker::containers(sh, Some(prefix)).is_ok_and(|c| !c.is_empty()),
        }
    }

    fn prepare(&self, sh: &Shell, state: &State, _fresh: bool) -> anyhow::Result<Vec<String>> {
        let mut made = Vec::new();
        if ensure_network(sh, &self.project, state)? {
            made.push(format!("network {}", docker::network_name(&state.prefix)));
        }
        // Always: it holds the samples, or the catalog of an `--images` folder.
        ensure_volume(sh, &self.project, state)?;
        Ok(made)
    }

    fn statuses(&self, sh: &Shell, state: &State) -> anyhow::Result<Vec<MemberStatus>> {
        let containers = self.own(sh, state)?;
        Ok(state
            .members
            .iter()
            .map(|m| {
                containers
                    .iter()
                    .find(|c| c.index == m.index)
                    .map_or(MemberStatus::Missing, status_of)
            })
            .collect())
    }

    fn outdated(&self, sh: &Shell, state: &State) -> Vec<String> {
        let current = [
            docker::image_id(sh, CANONICAL_IMAGE),
            docker::image_id(sh, NODE_IMAGE),
        ];
        self.own(sh, state)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.is_running())
            .filter(|c| Some(&c.image) != current[usize::from(c.index != 0)].as_ref())
            .map(|c| c.name)
            .collect()
    }

    fn start(
        &self,
        sh: &Shell,
        state: &mut State,
        index: u16,
        status: MemberStatus,
    ) -> anyhow::Result<Started> {
        let member = state.member_by_index(index)?.clone();
        // A missing member needs no look-up: `up` starts a fresh cluster's members one after
        // another, and listing the containers for each would cost a `docker ps` and
        // `inspect` per member.
        let existing = match status {
            MemberStatus::Missing => None,
            _ => self.own(sh, state)?.into_iter().find(|c| c.index == index),
        };
        let Some(container) = existing else {
            run(sh, &self.project, state, &member)?;
            return Ok(Started::Created);
        };
        let image = if member.is_canonical() {
            CANONICAL_IMAGE
        } else {
            NODE_IMAGE
        };
        // A stopped container of an older image is replaced: nothing runs in it.
        if docker::image_id(sh, image).is_some_and(|current| current != container.image) {
            docker::run(sh, &["rm".into(), member.name.clone()])?;
            run(sh, &self.project, state, &member)?;
            return Ok(Started::Recreated);
        }
        docker::run(sh, &["start".into(), member.name.clone()])
            .map_err(|error| explain_start_failure(&member, error))?;
        Ok(Started::Started)
    }

    /// `docker run` for several members at once, at most [`CONCURRENT_RUNS`] in flight. The
    /// engine takes about 0.5 s per container here (0.16 s of it publishing the two ports),
    /// and overlaps part of that: twenty edges took 4.5 to 6 s this way, 8 s one after
    /// another.
    fn create(
        &self,
        _sh: &Shell,
        state: &mut State,
        indices: &[u16],
    ) -> Vec<anyhow::Result<Started>> {
        let state = &*state;
        let threads = CONCURRENT_RUNS.min(indices.len());
        // Thread t runs the members at positions t, t + threads, ...; results keep positions.
        let mut results: Vec<Option<anyhow::Result<Started>>> =
            indices.iter().map(|_| None).collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|first| {
                    scope.spawn(move || {
                        let runs = indices.iter().enumerate().skip(first).step_by(threads);
                        runs.map(|(position, &index)| {
                            let result = Shell::new().map_err(anyhow::Error::from).and_then(|sh| {
                                run(&sh, &self.project, state, state.member_by_index(index)?)
                            });
                            (position, result.map(|()| Started::Created))
                        })
                        .collect::<Vec<_>>()
                    })
                })
                .collect();
            for worker in workers {
                for (position, result) in worker.join().unwrap_or_default() {
                    results[position] = Some(result);
                }
            }
        });
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(anyhow::anyhow!("a start thread panicked"))))
            .collect()
    }

    fn bridge_addresses(&self, sh: &Shell, state: &State) -> BTreeMap<u16, String> {
        // Without a listing the client keeps the published ports, which always work.
        self.own(sh, state)
            .unwrap_or_default()
            .into_iter()
            .filter(|container| container.is_running())
            .filter_map(|container| {
                let ip = container.ip.filter(|ip| !ip.is_empty())?;
                Some((container.index, format!("{ip}:{QUIC_PORT}")))
            })
            .collect()
    }

    fn restart(&self, sh: &Shell, state: &mut State, index: u16) -> anyhow::Result<()> {
        let member = state.member_by_index(index)?.clone();
        let container = self.container(sh, state, index)?;
        if status_of(&container) == MemberStatus::Paused {
            docker::run(sh, &["unpause".into(), member.name.clone()])?;
        }
        docker::run(
            sh,
            &[
                "restart".into(),
                format!("--time={STOP_GRACE_SECONDS}"),
                member.name.clone(),
            ],
        )
        .map_err(|error| explain_start_failure(&member, error))?;
        Ok(())
    }

    fn reindex(&self, sh: &Shell, state: &State) -> anyhow::Result<String> {
        let canonical = state.canonical();
        if let Some(container) = self.own(sh, state)?.into_iter().find(|c| c.index == 0) {
            match status_of(&container) {
                MemberStatus::Paused => {
                    docker::run(sh, &["unpause".into(), canonical.name.clone()])?;
                    docker::run(sh, &["stop".into(), canonical.name.clone()])?;
                }
                MemberStatus::Running => {
                    docker::run(
                        sh,
                        &[
                            "stop".into(),
                            format!("--time={STOP_GRACE_SECONDS}"),
                            canonical.name.clone(),
                        ],
                    )?;
                }
                _ => {}
            }
        }
        run_reindex(sh, state)
    }

    fn kill(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        docker::run(sh, &["kill".into(), member.name.clone()]).map(drop)
    }

    fn pause(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        docker::run(sh, &["pause".into(), member.name.clone()]).map(drop)
    }

    fn resume(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        docker::run(sh, &["unpause".into(), member.name.clone()]).map(drop)
    }

    fn remove(
        &self,
        sh: &Shell,
        prefix: &str,
        recorded: Option<&State>,
        volumes: bool,
    ) -> anyhow::Result<Vec<String>> {
        let here = &self.project.cluster_dir;
        let owned = |id: Option<&str>, checkout: Option<&str>| match recorded {
            // This checkout's cluster of that prefix runs elsewhere (the process runtime):
            // containers of the prefix belong to someone else.
            Some(state) if state.runtime != RuntimeKind::Docker => false,
            Some(State {
                cluster_id: Some(own),
                ..
            }) => id == Some(own.as_str()),
            // A state of an older version, or none: what this checkout started (or what
            // carries no owner at all, from older versions).
            _ => docker::started_from(checkout, here),
        };
        let mut removed = Vec::new();
        let (ours, theirs): (Vec<Container>, Vec<Container>) =
            docker::containers(sh, Some(prefix))?
                .into_iter()
                .partition(|c| owned(c.cluster_id.as_deref(), c.checkout.as_deref()));
        if let Some(other) = theirs.iter().find_map(|c| c.checkout.as_ref()) {
            eprintln!(
                "left {} containers of `{prefix}` alone: they belong to the cluster of {other}; run `cargo xtask down` there",
                theirs.len()
            );
        }
        if !ours.is_empty() {
            let mut args = vec!["rm".into(), "--force".into(), "--volumes".into()];
            args.extend(ours.iter().map(|c| c.name.clone()));
            docker::run(sh, &args)?;
            removed.push(format!("removed {} containers", ours.len()));
        }
        let mut kinds = vec!["network"];
        if volumes {
            kinds.push("volume");
        }
        for kind in kinds {
            let listed = docker::run(
                sh,
                &[
                    kind.into(),
                    "ls".into(),
                    format!("--filter=label={CLUSTER_LABEL}={prefix}"),
                    format!(
                        "--format={{{{.Name}}}}|{{{{.Label \"{ID_LABEL}\"}}}}|{{{{.Label \"{CHECKOUT_LABEL}\"}}}}"
                    ),
                ],
            )?;
            let names: Vec<String> = listed
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split('|');
                    let name = fields.next()?.to_string();
                    let id = fields.next().filter(|f| !f.is_empty());
                    let checkout = fields.next().filter(|f| !f.is_empty());
                    owned(id, checkout).then_some(name)
                })
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut args = vec![kind.to_string(), "rm".to_string()];
            args.extend(names);
            docker::run(sh, &args)?;
            removed.push(match kind {
                "network" => format!("removed network {}", docker::network_name(prefix)),
                _ => format!("removed volume {}", docker::volume_name(prefix)),
            });
        }
        // Images replaced while these containers ran are unused now.
        release::prune_images(sh);
        Ok(removed)
    }

    fn logs(&self, member: &MemberState, follow: bool) -> Command {
        let mut command = Command::new("docker");
        command.arg("logs");
        if follow {
            command.arg("--follow");
        }
        command.arg(&member.name);
        command
    }

    fn log_tail(&self, sh: &Shell, member: &MemberState, count: usize) -> String {
        log_tail(sh, &member.name, count)
    }

    fn console(&self, member: &MemberState) -> Command {
        use std::io::IsTerminal;
        let mut command = Command::new("docker");
        command.arg("exec").arg("--interactive");
        // A terminal only when we have one: piped stdin (tests, scripts) works too.
        if std::io::stdin().is_terminal() {
            command.arg("--tty");
        }
        command
            .arg(&member.name)
            .args(["/flotilla-node", "console"]);
        command
    }

    fn fault_targets(
        &self,
        sh: &Shell,
        state: &State,
        _command: &str,
    ) -> anyhow::Result<Vec<FaultTarget>> {
        Ok(self
            .own(sh, state)?
            .into_iter()
            .filter(|c| c.pid > 0)
            .map(|c| FaultTarget {
                index: c.index,
                name: c.name,
                pid: c.pid,
                ip: c.ip,
            })
            .collect())
    }

    fn records_exit_times(&self) -> bool {
        true
    }

    fn exit_time(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<SystemTime> {
        let finished = docker::run(
            sh,
            &[
                "inspect".into(),
                "--format={{.State.FinishedAt}}".into(),
                member.name.clone(),
            ],
        )?;
        parse_utc(&finished)
            .with_context(|| format!("`{finished}` is not a time (FinishedAt of {})", member.name))
    }
}
