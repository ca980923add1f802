//! The swarm runtime: each member is a one-replica Docker Swarm service on an attachable
//! overlay network, with its key as a secret and its certificates as configs (they follow a
//! task to any machine; bind mounts would not), its ports published in host mode on the
//! machine that runs it, and no restart unless asked (a kill stays a kill).
//!
//! Faults act on a task's container: through this engine when the task runs on this machine,
//! through a Docker context named after the machine otherwise (kill, pause, resume, attach);
//! partitions and netem need the task's network namespace, so only tasks on this machine.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use chaos::FaultTarget;
use serde_json::Value;
use xshell::{cmd, Shell};

use super::docker::{
    canonical_mounts, explain_start_failure, labels, placement, run_reindex, CERTS_MOUNT,
    LOG_MAX_FILES, LOG_MAX_SIZE, METRICS_PORT, QUIC_PORT, STOP_GRACE_SECONDS,
};
use super::{memory_limit_mb, MemberStatus, Placed, Runtime, Started};
use crate::docker::{
    self, CANONICAL_IMAGE, CHECKOUT_LABEL, CLUSTER_LABEL, ID_LABEL, INDEX_LABEL, NODE_IMAGE,
    ROLE_LABEL,
};
use crate::launch::member_args;
use crate::project::Project;
use crate::release;
use crate::state::{MemberState, RuntimeKind, State};
use crate::swarm::{self, Machine, Service, Task};
use crate::time::parse_utc;

/// How long a member's task may take to run after its service is created or updated
/// (placing it, creating its container, mounting secrets) before `up` gives up on it.
const TASK_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits for removed services' containers to go before it removes the
/// network they were attached to.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at the swarm while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Label a stack deploy puts on its services and networks.
const STACK_LABEL: &str = "com.docker.stack.namespace";

/// A member as the swarm runs it now.
struct Live {
    service: Service,
    /// The service's newest task.
    task: Option<Task>,
    /// The task's container, when it is on this machine: state, pid, exit time.
    container: Option<Value>,
    /// The task runs on this machine (or has not been placed yet).
    local: bool,
}

impl Live {
    fn status(&self) -> MemberStatus {
        let Some(task) = &self.task else {
            return MemberStatus::Stopped { exit_code: None };
        };
        if task.state == "running" {
            let container_state = self
                .container
                .as_ref()
                .and_then(|c| c.pointer("/State/Status"))
                .and_then(Value::as_str);
            return match container_state {
                Some("paused") => MemberStatus::Paused,
                // A killed container is seen here before the manager hears of it.
                Some("exited") | Some("dead") => MemberStatus::Stopped {
                    exit_code: self.exit_code(),
                },
                _ => MemberStatus::Running,
            };
        }
        if task.is_starting() {
            return MemberStatus::Running;
        }
        MemberStatus::Stopped {
            exit_code: self.exit_code(),
        }
    }

    fn exit_code(&self) -> Option<i64> {
        self.container
            .as_ref()
            .and_then(|c| c.pointer("/State/ExitCode"))
            .and_then(Value::as_i64)
            .or_else(|| self.task.as_ref().and_then(|t| t.exit_code))
    }

    fn pid(&self) -> u32 {
        self.container
            .as_ref()
            .and_then(|c| c.pointer("/State/Pid"))
            .and_then(Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0)
    }
}

/// One replica per member as Swarm services.
pub struct SwarmRuntime {
    project: Project,
}

impl SwarmRuntime {
    pub fn new(project: Project) -> SwarmRuntime {
        SwarmRuntime { project }
    }

    /// The services of `state`'s cluster with their newest tasks, by member index.
    fn live(&self, sh: &Shell, state: &State) -> anyhow::Result<BTreeMap<u16, Live>> {
        let here = swarm::membership(sh)?;
        let services: Vec<Service> = swarm::services(sh)?
            .into_iter()
            .filter(|service| is_own(service, state))
            .collect();
        let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
        let tasks = swarm::tasks(sh, &names)?;
        let mut newest: BTreeMap<String, Task> = BTreeMap::new();
        for task in tasks {
            let newer = newest
                .get(&task.service_id)
                .is_none_or(|known| task.version > known.version);
            if newer {
                newest.insert(task.service_id.clone(), task);
            }
        }
        let local_ids: Vec<String> = newest
            .values()
            .filter(|task| task.node_id == here.node_id)
            .filter_map(|task| task.container_id.clone())
            .collect();
        let containers = inspect_containers(sh, &local_ids);
        let mut live = BTreeMap::new();
        for service in services {
            let Some(index) = service
                .labels
                .get(INDEX_LABEL)
                .and_then(|index| index.parse::<u16>().ok())
            else {
                continue;
            };
            let task = newest.remove(&service.id);
            let local = task
                .as_ref()
                .is_none_or(|t| t.node_id.is_empty() || t.node_id == here.node_id);
            let container = task
                .as_ref()
                .and_then(|t| t.container_id.as_ref())
                .and_then(|id| containers.get(id).cloned());
            live.insert(
                index,
                Live {
                    service,
                    task,
                    container,
                    local,
                },
            );
        }
        Ok(live)
    }

    /// Member `index` as it runs now, or one line saying how to make it.
    fn one(&self, sh: &Shell, state: &State, index: u16) -> anyhow::Result<Live> {
        self.live(sh, state)?.remove(&index).ok_or_else(|| {
            let member = state.member_by_index(index).map(MemberState::label);
            anyhow::anyhow!(
                "{} has no service; run `cargo xtask up {}` to recreate it",
                member.unwrap_or_else(|_| format!("member {index}")),
                state.node_count()
            )
        })
    }

    /// `docker` arguments that reach the engine running `live`'s task, and its container id:
    /// this engine for a task here, a Docker context named after the machine otherwise.
    fn engine_of(
        &self,
        sh: &Shell,
        member: &MemberState,
        live: &Live,
    ) -> anyhow::Result<(Vec<String>, String)> {
        let task = live
            .task
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("{} has no task", member.label()))?;
        let container = task.container_id.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "{}'s task has no container yet ({})",
                member.label(),
                task.state
            )
        })?;
        if live.local {
            return Ok((Vec::new(), container));
        }
        let machines = swarm::machines(sh)?;
        let machine = machines
            .get(&task.node_id)
            .map_or(task.node_id.as_str(), |m| m.hostname.as_str());
        if docker::run(
            sh,
            &["context".into(), "inspect".into(), machine.to_string()],
        )
        .is_err()
        {
            anyhow::bail!(
                "{} runs on machine `{machine}`; make a Docker context for it (`docker context create {machine} --docker host=ssh://USER@{machine}`) to reach it from here",
                member.label()
            );
        }
        Ok((vec!["--context".into(), machine.to_string()], container))
    }

    /// Runs `docker {verb} CONTAINER` on the engine of `member`'s task.
    fn on_task(&self, sh: &Shell, member: &MemberState, verb: &str) -> anyhow::Result<()> {
        let live = self.one(sh, &self.state_for(member)?, member.index)?;
        let (mut args, container) = self.engine_of(sh, member, &live)?;
        args.push(verb.to_string());
        args.push(container);
        docker::run(sh, &args).map(drop)
    }

    /// The recorded state (kill, pause and resume get a member only).
    fn state_for(&self, member: &MemberState) -> anyhow::Result<State> {
        let state = State::require(&self.project.cluster_dir)?;
        anyhow::ensure!(
            state.member_by_index(member.index)?.name == member.name,
            "{} is not a member of the recorded cluster `{}`",
            member.name,
            state.prefix
        );
        Ok(state)
    }

    /// The image reference a member's service runs: the local image, or its copy in the
    /// registry `up --registry` pushed to.
    fn image(state: &State, member: &MemberState) -> String {
        let local = if member.is_canonical() {
            CANONICAL_IMAGE
        } else {
            NODE_IMAGE
        };
        match state.swarm.as_ref().and_then(|s| s.registry.as_deref()) {
            Some(registry) => format!("{registry}/{local}"),
            None => local.to_string(),
        }
    }

    /// Creates member `member`'s service (which starts its task).
    fn create(&self, sh: &Shell, state: &State, member: &MemberState) -> anyhow::Result<()> {
        let role = if member.is_canonical() {
            "canonical"
        } else {
            "node"
        };
        let restart = match state.swarm.as_ref().is_some_and(|s| s.restart_on_failure) {
            true => "on-failure",
            false => "none",
        };
        let mut args: Vec<String> = vec![
            "service".into(),
            "create".into(),
            "--detach".into(),
            "--quiet".into(),
            // Nothing is pulled: the image is local (or in the user's registry), and asking a
            // registry for its digest would reach out to the internet.
            "--no-resolve-image".into(),
            format!("--name={}", member.name),
            format!("--hostname={}", member.name),
            "--replicas=1".into(),
            format!("--network={}", docker::network_name(&state.prefix)),
            // Peers reach the task's own address, not a virtual IP in front of it.
            "--endpoint-mode=dnsrr".into(),
            format!("--restart-condition={restart}"),
            format!("--label={ROLE_LABEL}={role}"),
            format!("--label={INDEX_LABEL}={}", member.index),
            // Hardening: nothing writable but the canonical's data volume, no capabilities.
            // (Services have no `no-new-privileges`; the image runs as a non-root user.)
            "--read-only".into(),
            "--cap-drop=ALL".into(),
            format!("--limit-memory={}m", memory_limit_mb(state, member)),
            format!("--stop-grace-period={STOP_GRACE_SECONDS}s"),
            "--log-driver=json-file".into(),
            format!("--log-opt={LOG_MAX_SIZE}"),
            format!("--log-opt={LOG_MAX_FILES}"),
            // Host mode: on the machine that runs the task, at the port `up` chose.
            format!(
                "--publish=mode=host,target={QUIC_PORT},published={},protocol=udp",
                member.quic_port
            ),
            format!(
                "--publish=mode=host,target={METRICS_PORT},published={},protocol=tcp",
                member.metrics_port
            ),
            "--placement-pref=spread=node.id".into(),
            format!(
                "--secret=source={},target={CERTS_MOUNT}/{},mode=0444",
                swarm::key_secret_name(&member.name),
                wire::pki::KEY_FILE
            ),
            format!(
                "--config=source={},target={CERTS_MOUNT}/{},mode=0444",
                swarm::cert_config_name(&member.name),
                wire::pki::CERT_FILE
            ),
            format!(
                "--config=source={},target={CERTS_MOUNT}/{},mode=0444",
                swarm::ca_config_name(&state.prefix),
                wire::pki::CA_FILE
            ),
        ];
        args.extend(labels(&self.project, state));
        if member.is_canonical() {
            // Its data volume (and an `--images` folder) live on this machine.
            let here = swarm::membership(sh)?;
            args.push(format!("--constraint=node.id=={}", here.node_id));
            args.extend(canonical_mounts(state));
        }
        if let Ok(filter) = std::env::var("RUST_LOG") {
            args.push(format!("--env=RUST_LOG={filter}"));
        }
        args.push(Self::image(state, member));
        args.extend(member_args(member, &placement(state), &state.options));
        docker::run(sh, &args).map_err(|error| explain_start_failure(member, error))?;
        Ok(())
    }

    /// Replaces member `member`'s task with a new one (which starts it again).
    fn replace_task(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        docker::run(
            sh,
            &[
                "service".into(),
                "update".into(),
                "--detach".into(),
                "--quiet".into(),
                "--force".into(),
                "--replicas=1".into(),
                member.name.clone(),
            ],
        )
        .map_err(|error| explain_start_failure(member, error))
        .map(drop)
    }

    /// Waits until member `index` has a running task newer than `after` (a task's version),
    /// or says in one line why it does not run.
    fn wait_running(
        &self,
        sh: &Shell,
        state: &State,
        member: &MemberState,
        after: u64,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + TASK_START_TIMEOUT;
        let mut last = String::from("no task yet");
        while Instant::now() < deadline {
            if let Some(task) = self
                .live(sh, state)?
                .remove(&member.index)
                .and_then(|live| live.task)
                .filter(|task| task.version > after)
            {
                match task.state.as_str() {
                    "running" => return Ok(()),
                    _ if task.is_starting() => {
                        last = format!("{}: {}", task.state, task.message);
                    }
                    _ => anyhow::bail!(
                        "{}'s task did not start ({}: {}); {}",
                        member.label(),
                        task.state,
                        task.message,
                        explain_task_problem(&task.message)
                    ),
                }
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        anyhow::bail!(
            "{}'s task was not running after {} s ({last}); {}",
            member.label(),
            TASK_START_TIMEOUT.as_secs(),
            explain_task_problem(&last)
        )
    }

    /// Creates the network, the secrets and the configs the members use unless they
    /// exist; returns what it made.
    fn ensure_objects(&self, sh: &Shell, state: &State) -> anyhow::Result<Vec<String>> {
        let mut made = Vec::new();
        let network = docker::network_name(&state.prefix);
        if docker::run(sh, &["network".into(), "inspect".into(), network.clone()]).is_err() {
            let mut args = vec![
                "network".to_string(),
                "create".to_string(),
                "--driver=overlay".to_string(),
                // `attachable` lets a plain container join it too (a debugging shell, a
                // benchmark client on the overlay).
                "--attachable".to_string(),
            ];
            args.extend(labels(&self.project, state));
            args.push(network.clone());
            docker::run(sh, &args)?;
            made.push(format!("network {network}"));
        }
        let mut objects = vec![(
            "config",
            swarm::ca_config_name(&state.prefix),
            self.project
                .member_certs(&state.canonical().role().stem())
                .join(wire::pki::CA_FILE),
        )];
        for member in &state.members {
            let folder = self.project.member_certs(&member.role().stem());
            objects.push((
                "config",
                swarm::cert_config_name(&member.name),
                folder.join(wire::pki::CERT_FILE),
            ));
            objects.push((
                "secret",
                swarm::key_secret_name(&member.name),
                folder.join(wire::pki::KEY_FILE),
            ));
        }
        let mut created = 0;
        for (kind, name, file) in &objects {
            if docker::run(sh, &[(*kind).into(), "inspect".into(), name.clone()]).is_ok() {
                continue;
            }
            let mut args = vec![kind.to_string(), "create".to_string()];
            args.extend(labels(&self.project, state));
            args.push(name.clone());
            args.push(file.display().to_string());
            docker::run(sh, &args).with_context(|| format!("storing {name} in the swarm"))?;
            created += 1;
        }
        if created > 0 {
            made.push(format!("{created} secrets and configs"));
        }
        Ok(made)
    }

    /// Fails when a name this cluster needs is taken by something it did not make: a
    /// stack's service or network, or anyone else's.
    fn check_names_free(&self, sh: &Shell, state: &State) -> anyhow::Result<()> {
        let services = swarm::services(sh)?;
        for member in &state.members {
            let Some(service) = services.iter().find(|s| s.name == member.name) else {
                continue;
            };
            if is_own(service, state) {
                continue;
            }
            anyhow::bail!(
                "the name `{}` is taken by {}; pick another prefix with `--name`",
                member.name,
                owner_words(&service.labels, "service")
            );
        }
        let network = docker::network_name(&state.prefix);
        if let Ok(found) = docker::run(
            sh,
            &[
                "network".into(),
                "inspect".into(),
                "--format={{json .Labels}}".into(),
                network.clone(),
            ],
        ) {
            let labels: BTreeMap<String, String> = serde_json::from_str(&found).unwrap_or_default();
            let ours = labels.get(CLUSTER_LABEL) == Some(&state.prefix)
                && state
                    .cluster_id
                    .as_ref()
                    .is_none_or(|id| labels.get(ID_LABEL) == Some(id));
            if !ours {
                anyhow::bail!(
                    "the name `{network}` is taken by {}; pick another prefix with `--name`",
                    owner_words(&labels, "network")
                );
            }
        }
        Ok(())
    }
}

/// Whether `service` is a member of `state`'s cluster.
fn is_own(service: &Service, state: &State) -> bool {
    service.labels.get(CLUSTER_LABEL) == Some(&state.prefix)
        && state
            .cluster_id
            .as_ref()
            .is_none_or(|id| service.labels.get(ID_LABEL) == Some(id))
}

/// Who made a service or network with `labels`, for a refusal.
fn owner_words(labels: &BTreeMap<String, String>, kind: &str) -> String {
    if let Some(stack) = labels.get(STACK_LABEL) {
        return format!("a {kind} of the stack `{stack}` (`docker stack rm {stack}` removes it)");
    }
    if let Some(checkout) = labels.get(CHECKOUT_LABEL) {
        return format!("a {kind} of the cluster started from {checkout}");
    }
    format!("a {kind} Flotilla did not make")
}

/// The advice that goes with a task that does not start, from the engine's message.
fn explain_task_problem(message: &str) -> &'static str {
    if message.contains("No such image") || message.contains("image") {
        "every machine needs the images: with more than one machine, run `up` with `--registry HOST:PORT`"
    } else if message.contains("no suitable node") {
        "no machine of the swarm can run it (see `docker node ls`)"
    } else if message.contains("port") {
        "a host port it publishes is taken on that machine; `cargo xtask down` and `up` again pick free ports"
    } else {
        "see `cargo xtask logs` and `docker service ps --no-trunc` for more"
    }
}

/// `docker inspect` of the containers `ids` on this engine, by id.
fn inspect_containers(sh: &Shell, ids: &[String]) -> BTreeMap<String, Value> {
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let output = cmd!(sh, "docker inspect --type container {ids...}")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output();
    let values: Vec<Value> = output
        .ok()
        .and_then(|output| serde_json::from_slice(&output.stdout).ok())
        .unwrap_or_default();
    values
        .into_iter()
        .filter_map(|value| {
            let id = value.get("Id")?.as_str()?.to_string();
            Some((id, value))
        })
        .collect()
}

/// Removes the canonical's data volume on this machine, if there is one; says so.
fn remove_volume(sh: &Shell, prefix: &str) -> anyhow::Result<Option<String>> {
    let volume = docker::volume_name(prefix);
    if docker::run(sh, &["volume".into(), "inspect".into(), volume.clone()]).is_err() {
        return Ok(None);
    }
    docker::run(sh, &["volume".into(), "rm".into(), volume.clone()])?;
    Ok(Some(format!("removed volume {volume}")))
}

/// Names of `kind` (`network`, `secret`, `config`) carrying `prefix`'s cluster label that
/// `owned` accepts (given their cluster id and checkout labels).
fn labelled(
    sh: &Shell,
    kind: &str,
    prefix: &str,
    owned: &dyn Fn(Option<&str>, Option<&str>) -> bool,
) -> anyhow::Result<Vec<String>> {
    let listed = docker::run(
        sh,
        &[
            kind.into(),
            "ls".into(),
            format!("--filter=label={CLUSTER_LABEL}={prefix}"),
            "--format={{.Name}}".into(),
        ],
    )?;
    let mut names = Vec::new();
    for name in listed.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let labels = docker::run(
            sh,
            &[
                kind.into(),
                "inspect".into(),
                "--format={{json .Spec.Labels}}".into(),
                name.to_string(),
            ],
        )
        .or_else(|_| {
            docker::run(
                sh,
                &[
                    kind.into(),
                    "inspect".into(),
                    "--format={{json .Labels}}".into(),
                    name.to_string(),
                ],
            )
        })
        .unwrap_or_default();
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
        if owned(
            labels.get(ID_LABEL).map(String::as_str),
            labels.get(CHECKOUT_LABEL).map(String::as_str),
        ) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

impl Runtime for SwarmRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Swarm
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
        let mut ports = docker::reserved_ports(sh)?;
        for service in swarm::services(sh)? {
            ports.extend(service.published);
        }
        Ok(ports)
    }

    fn has_members(&self, sh: &Shell, prefix: &str, state: Option<&State>) -> bool {
        if !swarm::membership(sh).is_ok_and(|m| m.manager) {
            return false;
        }
        swarm::services(sh).is_ok_and(|services| {
            services.iter().any(|service| match state {
                Some(state) => is_own(service, state),
                None => service.labels.get(CLUSTER_LABEL).map(String::as_str) == Some(prefix),
            })
        })
    }

    fn prepare(&self, sh: &Shell, state: &State, fresh: bool) -> anyhow::Result<Vec<String>> {
        if fresh {
            self.check_names_free(sh, state)?;
        }
        self.ensure_objects(sh, state)
    }

    fn statuses(&self, sh: &Shell, state: &State) -> anyhow::Result<Vec<MemberStatus>> {
        let live = self.live(sh, state)?;
        Ok(state
            .members
            .iter()
            .map(|m| {
                live.get(&m.index)
                    .map_or(MemberStatus::Missing, Live::status)
            })
            .collect())
    }

    fn start(
        &self,
        sh: &Shell,
        state: &mut State,
        index: u16,
        status: MemberStatus,
    ) -> anyhow::Result<Started> {
        let member = state.member_by_index(index)?.clone();
        let existing = match status {
            MemberStatus::Missing => None,
            _ => self.live(sh, state)?.remove(&index),
        };
        let Some(live) = existing else {
            self.create(sh, state, &member)?;
            self.wait_running(sh, state, &member, 0)?;
            return Ok(Started::Created);
        };
        let after = live.task.as_ref().map_or(0, |t| t.version);
        self.replace_task(sh, &member)?;
        self.wait_running(sh, state, &member, after)?;
        Ok(Started::Started)
    }

    fn restart(&self, sh: &Shell, state: &mut State, index: u16) -> anyhow::Result<()> {
        let member = state.member_by_index(index)?.clone();
        let live = self.one(sh, state, index)?;
        if live.status() == MemberStatus::Paused {
            let (mut args, container) = self.engine_of(sh, &member, &live)?;
            args.extend(["unpause".to_string(), container]);
            docker::run(sh, &args)?;
        }
        let after = live.task.as_ref().map_or(0, |t| t.version);
        self.replace_task(sh, &member)?;
        self.wait_running(sh, state, &member, after)
    }

    fn placements(&self, sh: &Shell, state: &State) -> BTreeMap<u16, Placed> {
        let (Ok(live), Ok(machines)) = (self.live(sh, state), swarm::machines(sh)) else {
            return BTreeMap::new();
        };
        live.into_iter()
            .filter_map(|(index, live)| {
                let task = live.task?;
                let machine: &Machine = machines.get(&task.node_id)?;
                Some((
                    index,
                    Placed {
                        machine: machine.hostname.clone(),
                        address: (!live.local).then(|| machine.address.clone()),
                    },
                ))
            })
            .collect()
    }

    fn reindex(&self, sh: &Shell, state: &State) -> anyhow::Result<String> {
        let canonical = state.canonical().clone();
        if self.live(sh, state)?.contains_key(&0) {
            // Scaled to nothing, so that its data volume is free; `up` creates a task again.
            docker::run(
                sh,
                &[
                    "service".into(),
                    "scale".into(),
                    "--detach".into(),
                    format!("{}=0", canonical.name),
                ],
            )?;
            let deadline = Instant::now() + TEARDOWN_TIMEOUT;
            while self
                .live(sh, state)?
                .get(&0)
                .is_some_and(|live| live.status().is_alive() || live.container.is_some())
                && Instant::now() < deadline
            {
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        run_reindex(sh, state)
    }

    fn kill(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        self.on_task(sh, member, "kill")
    }

    fn pause(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        self.on_task(sh, member, "pause")
    }

    fn resume(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        self.on_task(sh, member, "unpause")
    }

    fn remove(
        &self,
        sh: &Shell,
        prefix: &str,
        recorded: Option<&State>,
        volumes: bool,
    ) -> anyhow::Result<Vec<String>> {
        let ours_recorded = recorded.is_some_and(|s| s.runtime == RuntimeKind::Swarm);
        let manager = swarm::membership(sh).is_ok_and(|m| m.manager);
        if !manager {
            // The swarm is gone (its services with it); only the local volume may be left.
            let mut removed = Vec::new();
            if ours_recorded {
                if volumes {
                    removed.extend(remove_volume(sh, prefix)?);
                }
                eprintln!(
                    "this engine is not a swarm manager: no service of cluster `{prefix}` can be left here"
                );
            }
            return Ok(removed);
        }
        let here = &self.project.cluster_dir;
        let owned = |id: Option<&str>, checkout: Option<&str>| match recorded {
            Some(state) if state.runtime != RuntimeKind::Swarm => false,
            Some(State {
                cluster_id: Some(own),
                ..
            }) => id == Some(own.as_str()),
            _ => checkout.is_some_and(|c| std::path::Path::new(c) == here),
        };
        let mut removed = Vec::new();
        let ours: Vec<Service> = swarm::services(sh)?
            .into_iter()
            .filter(|s| s.labels.get(CLUSTER_LABEL).map(String::as_str) == Some(prefix))
            .filter(|s| {
                owned(
                    s.labels.get(ID_LABEL).map(String::as_str),
                    s.labels.get(CHECKOUT_LABEL).map(String::as_str),
                )
            })
            .collect();
        if !ours.is_empty() {
            let ids: Vec<String> = ours.iter().map(|s| s.id.clone()).collect();
            let mut args = vec!["service".to_string(), "rm".to_string()];
            args.extend(ids.iter().cloned());
            docker::run(sh, &args)?;
            removed.push(format!("removed {} services", ours.len()));
            // Their containers go a moment later; the network and volume are in use until then.
            let deadline = Instant::now() + TEARDOWN_TIMEOUT;
            let format = "{{.Label \"com.docker.swarm.service.id\"}}";
            loop {
                let left = cmd!(
                    sh,
                    "docker ps --all --filter label=com.docker.swarm.service.id --format {format}"
                )
                .quiet()
                .read()
                .unwrap_or_default();
                let waiting = left
                    .lines()
                    .any(|id| ids.iter().any(|own| own == id.trim()));
                if !waiting || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        for kind in ["secret", "config", "network"] {
            let names = labelled(sh, kind, prefix, &owned)?;
            if names.is_empty() {
                continue;
            }
            let mut args = vec![kind.to_string(), "rm".to_string()];
            args.extend(names.iter().cloned());
            // The overlay network may be detached from the last task a moment late.
            let deadline = Instant::now() + TEARDOWN_TIMEOUT;
            loop {
                match docker::run(sh, &args) {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                    Err(error) => return Err(error),
                }
            }
            if kind == "network" {
                // The engine removes a swarm network a moment after it says so.
                let deadline = Instant::now() + TEARDOWN_TIMEOUT;
                while names.iter().any(|name| swarm::network_exists(sh, name))
                    && Instant::now() < deadline
                {
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
            removed.push(match kind {
                "network" => format!("removed network {}", names.join(", ")),
                kind => format!("removed {} {kind}s", names.len()),
            });
        }
        if volumes && ours_recorded {
            removed.extend(remove_volume(sh, prefix)?);
        }
        let made = recorded
            .filter(|s| s.runtime == RuntimeKind::Swarm)
            .and_then(|s| s.swarm.clone())
            .unwrap_or_default();
        if made.initialised {
            let others = swarm::services(sh)?.len();
            if others == 0 {
                swarm::leave(sh, made.gateway_bridge)?;
                removed.push("left the single-node swarm `up --init` made".to_string());
            } else {
                eprintln!(
                    "kept the swarm `up --init` made: it runs {others} services of others now; `docker swarm leave --force` ends it"
                );
            }
        }
        Ok(removed)
    }

    fn logs(&self, member: &MemberState, follow: bool) -> Command {
        let mut command = Command::new("docker");
        command.args(["service", "logs", "--raw"]);
        if follow {
            command.arg("--follow");
        }
        command.arg(&member.name);
        command
    }

    fn log_tail(&self, sh: &Shell, member: &MemberState, count: usize) -> String {
        let count = count.to_string();
        let name = &member.name;
        let format = "{{.CurrentState}}: {{.Error}}";
        let mut text = cmd!(
            sh,
            "docker service ps --no-trunc --format {format} --filter desired-state=shutdown {name}"
        )
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .read()
        .unwrap_or_default()
        .lines()
        .next()
        .map(|line| format!("last task: {line}\n"))
        .unwrap_or_default();
        let logs = cmd!(sh, "docker service logs --raw --tail {count} {name}")
            .quiet()
            .ignore_status()
            .output();
        if let Ok(output) = logs {
            text.push_str(&String::from_utf8_lossy(&output.stdout));
            text.push_str(&String::from_utf8_lossy(&output.stderr));
        }
        text.trim_end().to_string()
    }

    fn console(&self, member: &MemberState) -> Command {
        use std::io::IsTerminal;
        let sh = Shell::new();
        let found = sh
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .and_then(|sh| {
                let live = self.one(sh, &self.state_for(member)?, member.index)?;
                self.engine_of(sh, member, &live)
            });
        let (engine, container) = match found {
            Ok(found) => found,
            Err(error) => {
                // `attach` runs this command: `false` fails it after the reason is printed.
                eprintln!("{error:#}");
                return Command::new("false");
            }
        };
        let mut command = Command::new("docker");
        command.args(engine).arg("exec").arg("--interactive");
        if std::io::stdin().is_terminal() {
            command.arg("--tty");
        }
        command.arg(container).args(["/flotilla-node", "console"]);
        command
    }

    fn fault_targets(
        &self,
        sh: &Shell,
        state: &State,
        command: &str,
    ) -> anyhow::Result<Vec<FaultTarget>> {
        let network = docker::network_name(&state.prefix);
        let live = self.live(sh, state)?;
        if let Some((index, _)) = live
            .iter()
            .find(|(_, live)| !live.local && live.status().is_alive())
        {
            let name = state
                .member_by_index(*index)
                .map_or_else(|_| index.to_string(), |m| m.name.clone());
            anyhow::bail!(
                "`{command}` works in members' network namespaces on this machine, and {name} runs on another machine of the swarm (see ARCHITECTURE.md, \"Swarm faults\")"
            );
        }
        Ok(live
            .into_iter()
            .filter_map(|(index, live)| {
                let pid = live.pid();
                if pid == 0 || !live.status().is_alive() {
                    return None;
                }
                Some(FaultTarget {
                    index,
                    name: live.service.name.clone(),
                    pid,
                    ip: live.task.and_then(|t| t.addresses.get(&network).cloned()),
                })
            })
            .collect())
    }

    fn records_exit_times(&self) -> bool {
        true
    }

    fn exit_time(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<SystemTime> {
        let live = self.one(sh, &self.state_for(member)?, member.index)?;
        let finished = live
            .container
            .as_ref()
            .and_then(|c| c.pointer("/State/FinishedAt"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| live.task.as_ref().map(|t| t.changed_at.clone()))
            .unwrap_or_default();
        parse_utc(&finished)
            .with_context(|| format!("`{finished}` is not a time (exit of {})", member.name))
    }
}
