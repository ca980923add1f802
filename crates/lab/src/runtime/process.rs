//! The process runtime: the same binaries as local processes on 127.0.0.1, each in its own
//! process group, logging to `.cluster/logs/<name>.log`, tracked by pid in `state.json` so
//! that `down` stops exactly them.

use std::collections::HashSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use chaos::FaultTarget;
use xshell::{cmd, Shell};

use super::{MemberStatus, Runtime, Started};
use crate::launch::{images_catalog_name, member_args, reindex_args, Placement};
use crate::project::Project;
use crate::release;
use crate::state::{CpuList, MemberState, RuntimeKind, State};

/// How long a member gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a stopping process is checked.
const POLL: Duration = Duration::from_millis(50);

/// The binaries the process runtime runs: the static release build `up` makes for the
/// Docker images (`target/<triple>/release`), so both runtimes run the same optimized code
/// and the heavy crates are compiled once for both.
struct Binaries {
    pub node: PathBuf,
    pub canonical: PathBuf,
}

impl Binaries {
    fn locate(project: &Project) -> Binaries {
        // Without rustc there is nothing to run anyway; `build` then says why in one line.
        let dir = Shell::new()
            .map_err(anyhow::Error::from)
            .and_then(|sh| release::binaries_dir(&sh, project))
            .unwrap_or_else(|_| project.target_dir.join("release"));
        Binaries {
            node: dir.join("flotilla-node"),
            canonical: dir.join("flotilla-canonical"),
        }
    }

    fn of(&self, member: &MemberState) -> &Path {
        if member.is_canonical() {
            &self.canonical
        } else {
            &self.node
        }
    }
}

/// Builds the static release binaries; cargo prints its own errors.
fn build(sh: &Shell, project: &Project) -> anyhow::Result<()> {
    release::build_binaries(sh, project).map(drop)
}

/// Status of `member`'s recorded pid; a pid now used by another program counts as gone.
fn status(binaries: &Binaries, member: &MemberState) -> MemberStatus {
    let gone = MemberStatus::Stopped { exit_code: None };
    let Some(pid) = member.pid else {
        return gone;
    };
    let expected = binaries.of(member);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    if program != expected.as_os_str().as_encoded_bytes() {
        return gone;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state letter follows the parenthesised command name.
    match stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim().chars().next())
    {
        Some('Z') | Some('X') | None => gone,
        Some('T') | Some('t') => MemberStatus::Paused,
        Some(_) => MemberStatus::Running,
    }
}

/// Where `member` listens and finds its files, for the process runtime.
fn placement(project: &Project, state: &State, member: &MemberState) -> Placement {
    let local = |port: u16| format!("127.0.0.1:{port}");
    let (data, samples, catalog) = match &state.options.images {
        Some(images) => {
            let catalog = project.catalogs_dir().join(images_catalog_name(images));
            (images.clone(), false, Some(catalog.display().to_string()))
        }
        None => (project.canonical_data_dir(), true, None),
    };
    Placement {
        listen: local(member.quic_port),
        metrics: local(member.metrics_port),
        certs: project
            .member_certs(&member.role().stem())
            .display()
            .to_string(),
        data: data.display().to_string(),
        samples,
        catalog,
        canonical: local(state.canonical().quic_port),
        peers: state.nodes().map(|node| local(node.quic_port)).collect(),
    }
}

/// The log file of `member`.
fn log_path(project: &Project, member: &MemberState) -> PathBuf {
    project.logs_dir().join(format!("{}.log", member.name))
}

/// Starts `member` detached in its own process group and returns its pid. The log file is
/// appended to, so a restart keeps what came before.
fn spawn(
    project: &Project,
    binaries: &Binaries,
    state: &State,
    member: &MemberState,
) -> anyhow::Result<u32> {
    let logs = project.logs_dir();
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    if member.is_canonical() && state.options.images.is_none() {
        let data = project.canonical_data_dir();
        fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    }
    let path = log_path(project, member);
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let log_too = log
        .try_clone()
        .with_context(|| format!("opening {}", path.display()))?;
    let binary = binaries.of(member);
    let mut command = Command::new(binary);
    command
        .args(member_args(
            member,
            &placement(project, state, member),
            &state.options,
        ))
        .current_dir(&project.root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_too)
        // Its own group: Ctrl-C in the terminal that ran `up` does not reach it.
        .process_group(0);
    if let Some(cpus) = &state.options.cpus {
        let mask = cpu_mask(cpus);
        // SAFETY: sched_setaffinity is async-signal-safe and reads only `mask`, which the
        // closure owns; nothing is allocated between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let size = std::mem::size_of::<libc::cpu_set_t>();
                if libc::sched_setaffinity(0, size, &mask) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
    let child = command.spawn().with_context(|| match &state.options.cpus {
        Some(cpus) => format!("starting {} on CPUs {cpus}", binary.display()),
        None => format!("starting {}", binary.display()),
    })?;
    Ok(child.id())
}

/// `cpus` as the kernel's affinity mask (numbers past the mask's 1024 bits are refused when
/// the list is parsed).
fn cpu_mask(cpus: &CpuList) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set. CPU_SET writes one
    // bit inside it for a number below its 1024 bits, which `CpuList` guarantees.
    unsafe {
        let mut mask: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.cpus() {
            libc::CPU_SET(cpu, &mut mask);
        }
        mask
    }
}

/// Sends `signal` (a `kill -s` name) to `member`'s process group.
fn signal(sh: &Shell, member: &MemberState, signal: &str) -> anyhow::Result<()> {
    let Some(pid) = member.pid else {
        anyhow::bail!("{} was never started", member.label());
    };
    let group = format!("-{pid}");
    cmd!(sh, "kill -s {signal} -- {group}")
        .quiet()
        .ignore_stderr()
        .run()
        .with_context(|| format!("sending SIG{signal} to {}", member.label()))
}

/// Stops `member` if it runs: SIGTERM (and SIGCONT, in case it is paused), then SIGKILL
/// after [`STOP_GRACE`].
fn stop(sh: &Shell, binaries: &Binaries, member: &MemberState) -> anyhow::Result<()> {
    if !status(binaries, member).is_alive() {
        return Ok(());
    }
    signal(sh, member, "TERM")?;
    let _ = signal(sh, member, "CONT");
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !status(binaries, member).is_alive() {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    eprintln!(
        "{} did not stop within {} s of SIGTERM; killing it",
        member.label(),
        STOP_GRACE.as_secs()
    );
    signal(sh, member, "KILL")
}

/// The last `count` lines of `member`'s log, to show why it stopped.
fn log_tail(project: &Project, member: &MemberState, count: usize) -> String {
    let text = fs::read_to_string(log_path(project, member)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

/// The release binaries as local processes on 127.0.0.1.
pub struct ProcessRuntime {
    project: Project,
    binaries: Binaries,
}

impl ProcessRuntime {
    pub fn new(project: Project) -> ProcessRuntime {
        let binaries = Binaries::locate(&project);
        ProcessRuntime { project, binaries }
    }

    /// Stops `member` and starts it again, recording the new pid in `state`.
    fn respawn(&self, sh: &Shell, state: &mut State, index: u16) -> anyhow::Result<()> {
        let member = state.member_by_index(index)?.clone();
        stop(sh, &self.binaries, &member)?;
        let pid = spawn(&self.project, &self.binaries, state, &member)?;
        if let Some(recorded) = state.member_mut(index) {
            recorded.pid = Some(pid);
        }
        Ok(())
    }

    /// One line: what needs separate network namespaces cannot be done here.
    fn needs_docker(command: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "`{command}` needs the docker runtime: local processes share one network stack (start with `cargo xtask up N --runtime docker`)"
        )
    }
}

impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    fn build(&self, sh: &Shell) -> anyhow::Result<()> {
        build(sh, &self.project)
    }

    fn reserved_ports(&self, _sh: &Shell) -> anyhow::Result<HashSet<u16>> {
        // Ports held by running processes are found busy when they are probed.
        Ok(HashSet::new())
    }

    fn has_members(&self, _sh: &Shell, _prefix: &str, state: Option<&State>) -> bool {
        state.is_some_and(|state| {
            state
                .members
                .iter()
                .any(|m| status(&self.binaries, m).is_alive())
        })
    }

    fn prepare(&self, _sh: &Shell, _state: &State, fresh: bool) -> anyhow::Result<Vec<String>> {
        if fresh {
            // A new cluster starts with new logs; restarts of a running one append.
            let _ = fs::remove_dir_all(self.project.logs_dir());
        }
        Ok(Vec::new())
    }

    fn statuses(&self, _sh: &Shell, state: &State) -> anyhow::Result<Vec<MemberStatus>> {
        Ok(state
            .members
            .iter()
            .map(|m| status(&self.binaries, m))
            .collect())
    }

    fn start(
        &self,
        sh: &Shell,
        state: &mut State,
        index: u16,
        _status: MemberStatus,
    ) -> anyhow::Result<Started> {
        self.respawn(sh, state, index)?;
        Ok(Started::Started)
    }

    fn restart(&self, sh: &Shell, state: &mut State, index: u16) -> anyhow::Result<()> {
        self.respawn(sh, state, index)
    }

    fn reindex(&self, sh: &Shell, state: &State) -> anyhow::Result<String> {
        let canonical = state.canonical();
        stop(sh, &self.binaries, canonical)?;
        if state.options.images.is_none() {
            let data = self.project.canonical_data_dir();
            fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        }
        let binary = &self.binaries.canonical;
        let args = reindex_args(canonical, &placement(&self.project, state, canonical));
        let output = Command::new(binary)
            .args(&args)
            .current_dir(&self.project.root)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --reindex", binary.display()))?;
        let printed = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string();
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            let reason = said
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("error: "))
                .unwrap_or(said.trim());
            anyhow::bail!("reindexing the canonical's images failed: {reason}");
        }
        Ok(printed)
    }

    fn kill(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        signal(sh, member, "KILL")
    }

    fn pause(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        signal(sh, member, "STOP")
    }

    fn resume(&self, sh: &Shell, member: &MemberState) -> anyhow::Result<()> {
        signal(sh, member, "CONT")
    }

    fn remove(
        &self,
        sh: &Shell,
        _prefix: &str,
        recorded: Option<&State>,
        volumes: bool,
    ) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut stopped = 0;
        // Only the processes this checkout recorded for a process cluster.
        let own = recorded.filter(|s| s.runtime == RuntimeKind::Process);
        for member in own.map(|s| s.members.as_slice()).unwrap_or_default() {
            if status(&self.binaries, member).is_alive() {
                stop(sh, &self.binaries, member)?;
                stopped += 1;
            }
        }
        if stopped > 0 {
            removed.push(format!("stopped {stopped} processes"));
        }
        for data in [
            self.project.canonical_data_dir(),
            self.project.catalogs_dir(),
        ] {
            if volumes && data.is_dir() {
                fs::remove_dir_all(&data)
                    .with_context(|| format!("removing {}", data.display()))?;
                removed.push(format!("removed {}", data.display()));
            }
        }
        Ok(removed)
    }

    fn logs(&self, member: &MemberState, follow: bool) -> Command {
        let mut command = Command::new("tail");
        command.args(["-n", "+1"]);
        if follow {
            command.arg("-F");
        }
        command.arg(log_path(&self.project, member));
        command
    }

    fn log_tail(&self, _sh: &Shell, member: &MemberState, count: usize) -> String {
        log_tail(&self.project, member, count)
    }

    fn console(&self, member: &MemberState) -> Command {
        let mut command = Command::new(&self.binaries.node);
        command
            .arg("console")
            .arg("--certs")
            .arg(self.project.member_certs(&member.role().stem()))
            .arg("--target")
            .arg(format!("127.0.0.1:{}", member.quic_port));
        command
    }

    fn fault_targets(
        &self,
        _sh: &Shell,
        _state: &State,
        command: &str,
    ) -> anyhow::Result<Vec<FaultTarget>> {
        Err(ProcessRuntime::needs_docker(command))
    }

    fn exit_time(&self, _sh: &Shell, _member: &MemberState) -> anyhow::Result<SystemTime> {
        anyhow::bail!(
            "`bench failover` times exits the engine records: start the cluster with `cargo xtask up N --runtime docker` (or `--runtime swarm`)"
        )
    }
}
