//! The swarm runtime: each member is a one-replica Docker Swarm service on an attachable
//! overlay network, with its key as a secret and its certificates as configs (they follow a
//! task to any machine; bind mounts would not), its ports published in host mode on the
//! machine that runs it, and no restart unless asked (a kill stays a kill).
//!
//! Faults act on a task's container: through this engine when the task runs on this machine,
//! through a Docker context named after the machine otherwise (kill, pause, resume, attach);
//! partitions and netem need the task's network namespace, so only tasks on this machine.
//!
//! - `live.rs`: each member's service, newest task and local container; the engine of a task.
//! - `objects.rs`: the network, secrets, configs and volume around the services; `down`.

mod live;
mod objects;

use self::live::Live;
use self::objects::is_own;
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
use crate::docker::{self, CANONICAL_IMAGE, CLUSTER_LABEL, INDEX_LABEL, NODE_IMAGE, ROLE_LABEL};
use crate::launch::member_args;
use crate::project::Project;
use crate::release;
use crate::state::{MemberState, RuntimeKind, State};
use crate::swarm::{self, Machine};
use crate::time::parse_utc;

/// How long a member's task may take to run after its service is created or updated
/// (placing it, creating its container, mounting secrets) before `up` gives up on it.
const TASK_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `down` waits for removed services' containers to go before it removes the
/// network they were attached to.
pub(super) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at the swarm while waiting.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Label a stack deploy puts on its services and networks.
pub(super) const STACK_LABEL: &str = "com.docker.stack.namespace";

/// One replica per member as Swarm services.
pub struct SwarmRuntime {
    project: Project,
}

impl SwarmRuntime {
    pub fn new(project: Project) -> SwarmRuntime {
        SwarmRuntime { project }
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
        self.teardown(sh, prefix, recorded, volumes)
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

    fn socket_route(
        &self,
        sh: &Shell,
        state: &State,
    ) -> anyhow::Result<Option<crate::socket_faults::SocketRoute>> {
        let network = docker::network_name(&state.prefix);
        let live = self.live(sh, state)?;
        if !live
            .iter()
            .any(|(_, live)| !live.local && live.status().is_alive())
        {
            return Ok(None);
        }
        let targets = live
            .into_iter()
            .filter(|(_, live)| live.status().is_alive())
            .map(|(index, live)| FaultTarget {
                index,
                name: live.service.name.clone(),
                pid: live.pid(),
                ip: live.task.and_then(|t| t.addresses.get(&network).cloned()),
            })
            .collect();
        Ok(Some(crate::socket_faults::SocketRoute {
            client: crate::client::binary(&self.project)?,
            cluster_dir: self.project.cluster_dir.clone(),
            targets,
        }))
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
