//! The process runtime: the same binaries as local processes on 127.0.0.1, each in its own
//! process group, logging to `.cluster/logs/<name>.log`, tracked by pid in `state.json` so
//! that `down` stops exactly them.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::launch::{member_args, Placement};
use crate::project::Project;
use crate::state::{MemberState, State};

/// How long a member gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a stopping process is checked.
const POLL: Duration = Duration::from_millis(50);

/// The dev-profile binaries the process runtime runs.
pub struct Binaries {
    pub node: PathBuf,
    pub canonical: PathBuf,
    pub client: PathBuf,
}

impl Binaries {
    pub fn locate(project: &Project) -> Binaries {
        let dir = project.target_dir.join("debug");
        Binaries {
            node: dir.join("flotilla-node"),
            canonical: dir.join("flotilla-canonical"),
            client: dir.join("client"),
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

/// Builds the dev binaries; cargo prints its own progress and errors.
pub fn build(sh: &Shell) -> anyhow::Result<()> {
    eprintln!("building binaries (cargo build, dev profile)");
    cmd!(
        sh,
        "cargo build --quiet --bins -p flotilla-node -p flotilla-canonical -p flotilla-client"
    )
    .quiet()
    .run()
    .map_err(|_| {
        anyhow::anyhow!(
            "the workspace does not build (see cargo's errors above); fix them and run `up` again"
        )
    })
}

/// What a tracked process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessStatus {
    Running,
    Paused,
    Gone,
}

/// Status of `member`'s recorded pid; a pid now used by another program counts as gone.
pub fn status(binaries: &Binaries, member: &MemberState) -> ProcessStatus {
    let Some(pid) = member.pid else {
        return ProcessStatus::Gone;
    };
    let expected = binaries.of(member);
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    if program != expected.as_os_str().as_encoded_bytes() {
        return ProcessStatus::Gone;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state letter follows the parenthesised command name.
    match stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim().chars().next())
    {
        Some('Z') | Some('X') | None => ProcessStatus::Gone,
        Some('T') | Some('t') => ProcessStatus::Paused,
        Some(_) => ProcessStatus::Running,
    }
}

/// Where `member` listens and finds its files, for the process runtime.
fn placement(project: &Project, state: &State, member: &MemberState) -> Placement {
    let local = |port: u16| format!("127.0.0.1:{port}");
    let (data, samples) = match &state.options.images {
        Some(images) => (images.clone(), false),
        None => (project.canonical_data_dir(), true),
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
        canonical: local(state.canonical().quic_port),
        peers: state.nodes().map(|node| local(node.quic_port)).collect(),
    }
}

/// The log file of `member`.
pub fn log_path(project: &Project, member: &MemberState) -> PathBuf {
    project.logs_dir().join(format!("{}.log", member.name))
}

/// Starts `member` detached in its own process group and returns its pid. The log file is
/// appended to, so a restart keeps what came before.
pub fn spawn(
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
    let child = Command::new(binary)
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
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(child.id())
}

/// Sends `signal` (a `kill -s` name) to `member`'s process group.
pub fn signal(sh: &Shell, member: &MemberState, signal: &str) -> anyhow::Result<()> {
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
pub fn stop(sh: &Shell, binaries: &Binaries, member: &MemberState) -> anyhow::Result<()> {
    if status(binaries, member) == ProcessStatus::Gone {
        return Ok(());
    }
    signal(sh, member, "TERM")?;
    let _ = signal(sh, member, "CONT");
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if status(binaries, member) == ProcessStatus::Gone {
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
pub fn log_tail(project: &Project, member: &MemberState, count: usize) -> String {
    let text = fs::read_to_string(log_path(project, member)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
