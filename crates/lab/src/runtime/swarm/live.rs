//! What the swarm runs now for a cluster: each member's service, its newest task and, when
//! that task runs on this machine, its container; and which engine reaches a task's container
//! (this one, or a Docker context named after the task's machine).

use std::collections::BTreeMap;

use serde_json::Value;
use xshell::{cmd, Shell};

use super::objects::is_own;
use super::SwarmRuntime;
use crate::docker::{self, INDEX_LABEL};
use crate::runtime::MemberStatus;
use crate::state::{MemberState, State};
use crate::swarm::{self, Service, Task};

/// A member as the swarm runs it now.
pub(super) struct Live {
    pub(super) service: Service,
    /// The service's newest task.
    pub(super) task: Option<Task>,
    /// The task's container, when it is on this machine or on one with a Docker context:
    /// state, exit code and time (and, on this machine, its pid).
    pub(super) container: Option<Value>,
    /// The task runs on this machine (or has not been placed yet).
    pub(super) local: bool,
}

impl Live {
    pub(super) fn status(&self) -> MemberStatus {
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

    pub(super) fn exit_code(&self) -> Option<i64> {
        self.container
            .as_ref()
            .and_then(|c| c.pointer("/State/ExitCode"))
            .and_then(Value::as_i64)
            .or_else(|| self.task.as_ref().and_then(|t| t.exit_code))
    }

    /// The host pid of the task's container, on this machine only (0 otherwise): a pid of
    /// another machine names nothing here.
    pub(super) fn pid(&self) -> u32 {
        if !self.local {
            return 0;
        }
        self.container
            .as_ref()
            .and_then(|c| c.pointer("/State/Pid"))
            .and_then(Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or(0)
    }
}

impl SwarmRuntime {
    /// The services of `state`'s cluster with their newest tasks, by member index.
    pub(super) fn live(&self, sh: &Shell, state: &State) -> anyhow::Result<BTreeMap<u16, Live>> {
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
        let mut containers = inspect_containers(sh, &[], &local_ids);
        // Tasks elsewhere: through the Docker context of their machine, when there is one,
        // so that a frozen or exited container there is seen as such (and its exit time).
        let mut elsewhere: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for task in newest.values().filter(|t| t.node_id != here.node_id) {
            if let Some(id) = &task.container_id {
                elsewhere
                    .entry(task.node_id.as_str())
                    .or_default()
                    .push(id.clone());
            }
        }
        if !elsewhere.is_empty() {
            let machines = swarm::machines(sh)?;
            for (node_id, ids) in elsewhere {
                let Some(machine) = machines.get(node_id) else {
                    continue;
                };
                if let Some(engine) = context_of(sh, &machine.hostname) {
                    containers.extend(inspect_containers(sh, &engine, &ids));
                }
            }
        }
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
    pub(super) fn one(&self, sh: &Shell, state: &State, index: u16) -> anyhow::Result<Live> {
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
    pub(super) fn engine_of(
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
        let engine = context_of(sh, machine).ok_or_else(|| {
            anyhow::anyhow!(
                "{} runs on machine `{machine}`; make a Docker context for it (`docker context create {machine} --docker host=ssh://USER@{machine}`) to reach it from here",
                member.label()
            )
        })?;
        Ok((engine, container))
    }

    /// Runs `docker {verb} CONTAINER` on the engine of `member`'s task.
    pub(super) fn on_task(
        &self,
        sh: &Shell,
        member: &MemberState,
        verb: &str,
    ) -> anyhow::Result<()> {
        let live = self.one(sh, &self.state_for(member)?, member.index)?;
        let (mut args, container) = self.engine_of(sh, member, &live)?;
        args.push(verb.to_string());
        args.push(container);
        docker::run(sh, &args).map(drop)
    }

    /// The recorded state (kill, pause and resume get a member only).
    pub(super) fn state_for(&self, member: &MemberState) -> anyhow::Result<State> {
        let state = State::require(&self.project.cluster_dir)?;
        anyhow::ensure!(
            state.member_by_index(member.index)?.name == member.name,
            "{} is not a member of the recorded cluster `{}`",
            member.name,
            state.prefix
        );
        Ok(state)
    }
}

/// The `docker` arguments that reach the engine of machine `hostname`: its Docker context,
/// when one of that name exists.
fn context_of(sh: &Shell, hostname: &str) -> Option<Vec<String>> {
    docker::run(sh, &["context".into(), "inspect".into(), hostname.into()])
        .ok()
        .map(|_| vec!["--context".to_string(), hostname.to_string()])
}

/// `docker inspect` of the containers `ids` on the engine `engine` reaches (this one when
/// empty), by id.
fn inspect_containers(sh: &Shell, engine: &[String], ids: &[String]) -> BTreeMap<String, Value> {
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let output = cmd!(sh, "docker {engine...} inspect --type container {ids...}")
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
