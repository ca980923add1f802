//! The independent QUIC peer step of `cargo xtask test`: `tests/quic-peer/peer.py`, written
//! with aioquic, attacks node 1 and the canonical of a cluster of its own and holds the edge
//! under load while sampling its memory; then the members' logs are searched for panics.
//!
//! The cluster runs on the process runtime (`up 2 --runtime process`) under its own prefix and
//! cluster folder (`target/quic-peer/cluster`), so it never touches a user's cluster and needs
//! no Docker engine; the real binaries with their real command lines are what is attacked,
//! their pids give the memory, their log files the panics. A guard runs `down --volumes` on
//! every way out, failures included. The Python environment is the project's own:
//! `target/quic-peer/venv`, made from `tests/quic-peer/requirements.txt` (exact versions,
//! from PyPI) when it is missing or the file changed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use lab::project::Project;
use lab::runtime::memory_limit_mb;
use lab::state::State;
use wire::cluster::CLUSTER_ENV;
use wire::limits;
use xshell::{cmd, Shell};

/// Name prefix of the peer's cluster, apart from any user's.
const PREFIX: &str = "flotilla_quicpeer";
/// Edges in the peer's cluster: node 1 is attacked; a second makes it a real cluster with an
/// election and a leader.
const NODES: &str = "2";
/// Where the script and its requirements live, from the repository root.
const PEER_DIR: &str = "tests/quic-peer";
/// The file in the virtual environment recording which requirements it was made from.
const STAMP_FILE: &str = "flotilla-requirements.sha256";
/// A panic in any member's log fails the step, whatever the script said.
const PANIC_MARKER: &str = "panicked";

/// Runs the peer against a fresh process cluster and checks the members' logs.
pub fn run(sh: &Shell) -> anyhow::Result<()> {
    let project = Project::locate()?;
    let work = project.target_dir.join("quic-peer");
    let python = ensure_venv(sh, &project.root.join(PEER_DIR), &work.join("venv"))?;
    let limits_file = work.join("limits.json");
    write_limits(&limits_file)?;
    let mut cluster = PeerCluster::start(sh, &work.join("cluster"))?;
    let state = State::load(cluster.dir())?
        .context("`up` left no state.json in the quic peer's cluster folder")?;
    let node = state
        .nodes()
        .next()
        .context("the quic peer's cluster has no node")?;
    let node_pid = node
        .pid
        .context("the process runtime recorded no pid for node 1")?
        .to_string();
    let memory_mb = memory_limit_mb(&state, node).to_string();
    let script = project.root.join(PEER_DIR).join("peer.py");
    let cluster_dir = cluster.dir().to_path_buf();
    let scratch = work.join("work");
    let attacked = cmd!(
        sh,
        "{python} {script} --cluster {cluster_dir} --limits {limits_file} --work {scratch}
            --load --node-pid {node_pid} --memory-limit-mb {memory_mb}"
    )
    .run()
    .map_err(|error| {
        anyhow::anyhow!(
            "the quic peer failed ({error}): an outcome differed (the table above) or its input was bad (its error line above)"
        )
    });
    // Stopped first, so a panic on the way down is in the logs too.
    let stopped = cluster.stop();
    let panics = panics_in(&cluster_dir.join("logs"));
    attacked?;
    stopped?;
    panics
}

/// Makes `venv` from `requirements.txt` in `peer_dir` unless it was made from this very file;
/// returns its python.
fn ensure_venv(sh: &Shell, peer_dir: &Path, venv: &Path) -> anyhow::Result<PathBuf> {
    let requirements = peer_dir.join("requirements.txt");
    let wanted = std::fs::read(&requirements)
        .map(|bytes| wire::Digest::of(&bytes).to_hex())
        .with_context(|| format!("reading {}", requirements.display()))?;
    let python = venv.join("bin").join("python");
    let stamp = venv.join(STAMP_FILE);
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    eprintln!(
        "making the quic peer's Python environment in {} (pip, from PyPI)",
        venv.display()
    );
    match std::fs::remove_dir_all(venv) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("removing {}", venv.display()))
        }
        _ => {}
    }
    cmd!(sh, "python3 -m venv {venv}").run().map_err(|_| {
        anyhow::anyhow!(
            "`python3 -m venv` failed: the quic peer needs Python 3.11 or newer with venv (Debian: apt-get install python3-venv)"
        )
    })?;
    cmd!(
        sh,
        "{python} -m pip install --quiet --disable-pip-version-check --no-input -r {requirements}"
    )
    .run()
    .map_err(|_| {
        anyhow::anyhow!(
            "installing {} failed (see pip's error above); is PyPI reachable?",
            requirements.display()
        )
    })?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// The bounds the peer tests, from `wire::limits`, so the script never has its own copy.
fn write_limits(path: &Path) -> anyhow::Result<()> {
    let values = serde_json::json!({
        "max_header_bytes": limits::MAX_HEADER_BYTES,
        "edge_streams": limits::MAX_CONCURRENT_STREAMS,
        "origin_streams": limits::ORIGIN_STREAMS_PER_CONNECTION,
        "edge_connections_per_peer": limits::EDGE_CONNECTIONS_PER_PEER,
        "origin_connections_per_peer": limits::ORIGIN_CONNECTIONS_PER_PEER,
        "header_timeout_s": limits::HEADER_TIMEOUT.as_secs_f64(),
        "reply_send_deadline_s": limits::REPLY_SEND_DEADLINE.as_secs_f64(),
        "reset_stalled": wire::frame::RESET_STALLED,
    });
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, values.to_string()).with_context(|| format!("writing {}", path.display()))
}

/// Lines of the members' logs that say a thread panicked, as one error.
fn panics_in(logs: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(logs)
        .with_context(|| format!("reading the logs in {}", logs.display()))?;
    let mut found = Vec::new();
    let mut read = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        read += 1;
        let name = entry.file_name().to_string_lossy().into_owned();
        found.extend(
            text.lines()
                .filter(|line| line.contains(PANIC_MARKER))
                .map(|line| format!("{name}: {line}")),
        );
    }
    if read == 0 {
        anyhow::bail!("{} holds no member logs to check", logs.display());
    }
    match found.first() {
        None => {
            eprintln!("no panic in the {read} member logs of {}", logs.display());
            Ok(())
        }
        Some(first) => anyhow::bail!(
            "a member panicked ({} log lines say so); the first: {first}",
            found.len()
        ),
    }
}

/// The peer's own cluster, taken down when dropped (so also when a step fails or panics).
struct PeerCluster<'a> {
    sh: &'a Shell,
    xtask: PathBuf,
    dir: PathBuf,
    up: bool,
}

impl<'a> PeerCluster<'a> {
    /// Removes what an interrupted run left in `dir`, then starts the cluster there.
    fn start(sh: &'a Shell, dir: &Path) -> anyhow::Result<PeerCluster<'a>> {
        let xtask = std::env::current_exe().context("locating the xtask binary")?;
        // Armed from the start: a member that started before `up` failed is stopped too.
        let cluster = PeerCluster {
            sh,
            xtask,
            dir: dir.to_path_buf(),
            up: true,
        };
        cluster.xtask(&["down", "--volumes", "--name", PREFIX])?;
        match std::fs::remove_dir_all(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("removing {}", dir.display()))
            }
            _ => {}
        }
        cluster.xtask(&["up", NODES, "--runtime", "process", "--name", PREFIX])?;
        Ok(cluster)
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs this xtask binary with the cluster's folder.
    fn xtask(&self, args: &[&str]) -> anyhow::Result<()> {
        let xtask = &self.xtask;
        cmd!(self.sh, "{xtask} {args...}")
            .env(CLUSTER_ENV, &self.dir)
            .run()
            .with_context(|| format!("`cargo xtask {}` for the quic peer", args.join(" ")))
    }

    /// Takes the cluster down now; the logs stay.
    fn stop(&mut self) -> anyhow::Result<()> {
        self.up = false;
        self.xtask(&["down", "--volumes"])
    }
}

impl Drop for PeerCluster<'_> {
    fn drop(&mut self) {
        if self.up {
            if let Err(error) = self.stop() {
                eprintln!("error: {error:#}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_any_log_fails_the_step() {
        let logs = std::env::temp_dir().join(format!("xtask-quic-peer-{}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("a_node_1.log"), "INFO edge serving\n").unwrap();
        panics_in(&logs).unwrap();
        std::fs::write(
            logs.join("a_canonical.log"),
            "INFO canonical serving\nthread 'tokio-runtime-worker' panicked at src/lib.rs:1:1:\n",
        )
        .unwrap();
        let error = panics_in(&logs).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "a member panicked (1 log lines say so); the first: a_canonical.log: thread"
            ),
            "{error}"
        );
        std::fs::remove_dir_all(&logs).unwrap();
        assert!(panics_in(&logs).is_err(), "a missing log folder is no pass");
    }
}
