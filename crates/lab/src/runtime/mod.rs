//! Where a cluster's members run, behind one trait: every command says once what it does,
//! and each runtime says how (or, in one line, that it cannot).
//!
//! - [`DockerRuntime`]: hardened scratch containers on a Docker engine, found by label.
//! - [`ProcessRuntime`]: the static release binaries as local processes on 127.0.0.1, tracked
//!   by pid.
//! - [`SwarmRuntime`]: one Docker Swarm service per member on an overlay network, spread over
//!   the swarm's machines.

mod docker;
mod process;
mod swarm;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::process::Command;
use std::time::SystemTime;

use chaos::FaultTarget;
use xshell::Shell;

pub use self::docker::{memory_limit_mb, DockerRuntime};
pub use self::process::ProcessRuntime;
pub use self::swarm::SwarmRuntime;
use crate::project::Project;
use crate::state::{MemberState, RuntimeKind, State};

/// What a member is doing, in the same words on every runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    Running,
    /// Frozen (cgroup freezer or SIGSTOP): keeps its state, answers nothing.
    Paused,
    /// Exists but does not run (killed, crashed, stopped); `exit_code` when known.
    Stopped {
        exit_code: Option<i64>,
    },
    /// Nothing of it exists (never created, or removed).
    Missing,
}

impl MemberStatus {
    /// Running or paused: it has a process (and a network namespace) right now.
    pub fn is_alive(self) -> bool {
        matches!(self, MemberStatus::Running | MemberStatus::Paused)
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberStatus::Running => "running",
            MemberStatus::Paused => "paused",
            MemberStatus::Stopped { .. } => "stopped",
            MemberStatus::Missing => "missing",
        })
    }
}

/// How a member was brought up by [`Runtime::start`], for `up`'s closing line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Started {
    Created,
    Started,
    /// A stopped container of an older image was replaced.
    Recreated,
}

impl fmt::Display for Started {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Started::Created => "created",
            Started::Started => "started",
            Started::Recreated => "recreated",
        })
    }
}

/// Where a member runs, on a runtime that spans machines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The machine's name (its hostname).
    pub machine: String,
    /// The address its published ports are reached at, when it is not this machine.
    pub address: Option<String>,
}

/// One way of running a cluster's members.
pub trait Runtime {
    fn kind(&self) -> RuntimeKind;

    /// Builds what is stale (binaries, images) before anything starts.
    fn build(&self, sh: &Shell) -> anyhow::Result<()>;

    /// Host ports that members of any cluster hold, running or not, so that a new cluster
    /// picks others.
    fn reserved_ports(&self, sh: &Shell) -> anyhow::Result<HashSet<u16>>;

    /// Whether members of cluster `prefix` exist that `state` may not describe (e.g.
    /// containers found by label).
    fn has_members(&self, sh: &Shell, prefix: &str, state: Option<&State>) -> bool;

    /// What exists around the members (a network, a volume, a logs folder), made before the
    /// first start; `fresh` for a new cluster. Returns what it created, for `up`'s summary.
    fn prepare(&self, sh: &Shell, state: &State, fresh: bool) -> anyhow::Result<Vec<String>>;

    /// Every member's status, in `state.members` order.
    fn statuses(&self, sh: &Shell, state: &State) -> anyhow::Result<Vec<MemberStatus>>;

    /// Members that run but from an older build, to tell the user.
    fn outdated(&self, _sh: &Shell, _state: &State) -> Vec<String> {
        Vec::new()
    }

    /// Starts member `index`, which [`Runtime::statuses`] just found `status` (stopped or
    /// missing); may record a pid in `state` (the caller saves it).
    fn start(
        &self,
        sh: &Shell,
        state: &mut State,
        index: u16,
        status: MemberStatus,
    ) -> anyhow::Result<Started>;

    /// Creates the members `indices`, which [`Runtime::statuses`] just found missing; one
    /// result per member, in order. One after another unless a runtime can do better.
    fn create(
        &self,
        sh: &Shell,
        state: &mut State,
        indices: &[u16],
    ) -> Vec<anyhow::Result<Started>> {
        indices
            .iter()
            .map(|&index| self.start(sh, state, index, MemberStatus::Missing))
            .collect()
    }

    /// Stops member `index` if it runs (gracefully, then by force) and starts it again on
    /// the same ports; may record a pid in `state` (the caller saves it).
    fn restart(&self, sh: &Shell, state: &mut State, index: u16) -> anyhow::Result<()>;

    /// Each running member's QUIC address on the container network, by member index, for
    /// `cluster.toml`'s `bridge` (the client's fast path past docker-proxy); none on runtimes
    /// whose members the host reaches directly.
    fn bridge_addresses(&self, _sh: &Shell, _state: &State) -> BTreeMap<u16, String> {
        BTreeMap::new()
    }

    /// Which machine runs each member, by member index; none on runtimes that run everything
    /// on this machine.
    fn placements(&self, _sh: &Shell, _state: &State) -> BTreeMap<u16, Placed> {
        BTreeMap::new()
    }

    /// Accepts the canonical's images as they are now (`up --reindex`): stops the canonical
    /// if it runs (the caller starts it again), runs it once with `--reindex` over the same
    /// folder and catalog, and returns what it printed: one line per image added, changed or
    /// removed, and a summary.
    fn reindex(&self, sh: &Shell, state: &State) -> anyhow::Result<String>;

    /// SIGKILL, as a crash would.
    fn kill(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()>;

    /// Freezes a running member.
    fn pause(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()>;

    /// Thaws a paused member.
    fn resume(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()>;

    /// Stops and removes the members of cluster `prefix` that this checkout started, and
    /// what was made around them; `recorded` is this checkout's state of that prefix (on
    /// whatever runtime), and nothing another checkout started is touched. `volumes` also
    /// drops the canonical's sample images and its catalogs. Returns what it removed.
    fn remove(
        &self,
        sh: &Shell,
        prefix: &str,
        recorded: Option<&State>,
        volumes: bool,
    ) -> anyhow::Result<Vec<String>>;

    /// The command that prints `member`'s log (and keeps following it with `follow`).
    fn logs(&self, member: &MemberState, follow: bool) -> Command;

    /// The last `count` lines of `member`'s log, to show why it stopped.
    fn log_tail(&self, sh: &Shell, member: &MemberState, count: usize) -> String;

    /// The command that opens node `member`'s console, with the terminal inherited.
    fn console(&self, member: &MemberState) -> Command;

    /// The running members whose network namespaces faults can be made in; one line saying
    /// why not when this runtime cannot (`command` names what asked).
    fn fault_targets(
        &self,
        sh: &Shell,
        state: &State,
        command: &str,
    ) -> anyhow::Result<Vec<FaultTarget>>;

    /// The members whose faults go through their own sockets (an operator's request) instead
    /// of their network namespaces, or `None` where [`Runtime::fault_targets`] serves: a
    /// swarm with a member on another machine routes every member this way.
    fn socket_route(
        &self,
        _sh: &Shell,
        _state: &State,
    ) -> anyhow::Result<Option<crate::socket_faults::SocketRoute>> {
        Ok(None)
    }

    /// Whether [`Runtime::exit_time`] can say when a member exited.
    fn records_exit_times(&self) -> bool {
        false
    }

    /// When `member` last exited, as the runtime recorded it.
    fn exit_time(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<SystemTime>;
}

/// The runtime of `kind` for `project`.
pub fn of(kind: RuntimeKind, project: &Project) -> Box<dyn Runtime> {
    match kind {
        RuntimeKind::Docker => Box::new(DockerRuntime::new(project.clone())),
        RuntimeKind::Process => Box::new(ProcessRuntime::new(project.clone())),
        RuntimeKind::Swarm => Box::new(SwarmRuntime::new(project.clone())),
    }
}

/// The status of member `index` among `statuses` (as [`Runtime::statuses`] returns them).
pub fn status_of(state: &State, statuses: &[MemberStatus], index: u16) -> MemberStatus {
    state
        .members
        .iter()
        .position(|m| m.index == index)
        .and_then(|position| statuses.get(position).copied())
        .unwrap_or(MemberStatus::Missing)
}

/// Fails, showing its last log lines, when one of the `watched` members has stopped (while
/// something waits for it to answer).
pub fn first_stopped(
    sh: &Shell,
    runtime: &dyn Runtime,
    state: &State,
    watched: &[u16],
) -> anyhow::Result<()> {
    /// Log lines shown for a member that stopped.
    const TAIL_LINES: usize = 15;
    let statuses = runtime.statuses(sh, state)?;
    let stopped = state
        .members
        .iter()
        .zip(&statuses)
        .find(|(member, status)| watched.contains(&member.index) && !status.is_alive());
    let Some((member, status)) = stopped else {
        return Ok(());
    };
    let how = match status {
        MemberStatus::Stopped {
            exit_code: Some(code),
        } => format!("exit code {code}"),
        MemberStatus::Missing => "it is gone".to_string(),
        _ => "it exited".to_string(),
    };
    let tail = runtime.log_tail(sh, member, TAIL_LINES);
    if !tail.is_empty() {
        eprintln!("last lines of {}'s log:\n{tail}", member.name);
    }
    anyhow::bail!(
        "{} stopped while starting ({how}); see `cargo xtask logs` for more",
        member.name
    )
}
