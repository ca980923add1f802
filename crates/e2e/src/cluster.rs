//! The [`Cluster`] fixture: one test's own `up 5` of scratch containers, brought up through
//! the real xtask binary under the prefix `flotilla_e2e_<name>` with `FLOTILLA_CLUSTER`
//! pointing at a folder of the test's own, and torn down with `down --volumes` when the
//! fixture is dropped, so also when the test fails or panics. Leftovers of an interrupted
//! earlier run of the same prefix are removed before `up`.
//!
//! Tests of one binary share a Docker engine, fixed host ports and the `flotilla-node:dev`
//! image, so a fixture holds a process-wide lock from before its `up` until after its `down`:
//! they run one after another even when libtest runs them on several threads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use lab::docker::{self, Container};
use lab::project::Project;
use wire::cluster::CLUSTER_ENV;
use wire::status::StatusRow;
use xshell::{cmd, Shell};

use crate::cargo::{build_binary, forget_this_crate};
use crate::leadership::{led_by, one_leader};
use crate::process::{last_line, run_with_timeout, text};

/// Edges in every test's cluster.
pub const NODES: u16 = 5;
/// Start of every test cluster's prefix, which tells its containers, network and volume
/// apart from a user's.
pub const PREFIX_START: &str = "flotilla_e2e_";
/// Budget of `up`, which may compile the whole workspace in release mode on a slow machine.
pub const UP_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Budget of building xtask or the UDP probe in the debug profile (a cold build on 2 cores).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Budget of every other command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two checks of a condition a test waits for.
pub const POLL: Duration = Duration::from_millis(250);
/// How long the cluster may take to settle on a leader after `up`, a fault or its repair:
/// far above the second or so it should take (a restarted node can need a QUIC idle timeout).
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(45);

/// Held by the one fixture of this process that owns the Docker engine.
static DOCKER: Mutex<()> = Mutex::new(());
/// The xtask binary, built once per test process (or why it did not build).
static XTASK: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// One test's running cluster; dropping it tears the cluster down.
pub struct Cluster {
    /// Container, network and volume name prefix: `flotilla_e2e_<name>`.
    prefix: String,
    project: Project,
    /// The test's own cluster folder (`FLOTILLA_CLUSTER` of every command it runs).
    cluster_dir: PathBuf,
    /// Scratch folder for fetched files and collected logs.
    work: PathBuf,
    xtask: PathBuf,
    sh: Shell,
    /// What `up` printed (its node table).
    up_said: String,
    /// `up`'s `--runtime` and any further options.
    up_args: Vec<String>,
    /// Released after `drop` has run, so the next test's `up` starts after this `down`.
    _docker: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Brings up a cluster of [`NODES`] edges and a canonical in Docker named
    /// `flotilla_e2e_<name>`, after removing what an interrupted run of it left behind.
    pub fn start(name: &str) -> anyhow::Result<Cluster> {
        Cluster::start_on(name, "docker", &[])
    }

    /// [`Cluster::start`] on `runtime` (`docker` or `swarm`), with further `up` options.
    pub fn start_on(name: &str, runtime: &str, options: &[&str]) -> anyhow::Result<Cluster> {
        // A test that panicked while holding the lock has already torn its cluster down (the
        // fixture's drop runs during unwinding), so the engine is free for the next one.
        let docker_lock = DOCKER.lock().unwrap_or_else(PoisonError::into_inner);
        let prefix = format!("{PREFIX_START}{name}");
        lab::project::parse_prefix(&prefix).map_err(anyhow::Error::msg)?;
        let project = test_project()?;
        let sh = Shell::new().context("creating a shell")?;
        if let Err(reason) = docker::engine(&sh) {
            anyhow::bail!(
                "{} is set but no Docker engine answers: {reason}",
                crate::GATE_ENV
            );
        }
        let xtask = xtask_binary(&project)?;
        let base = project.target_dir.join("flotilla-e2e").join(name);
        let cluster = Cluster {
            prefix,
            cluster_dir: base.join(".cluster"),
            work: base.join("work"),
            project,
            xtask,
            sh,
            up_said: String::new(),
            up_args: ["--runtime", runtime]
                .into_iter()
                .chain(options.iter().copied())
                .map(str::to_string)
                .collect(),
            _docker: docker_lock,
        };
        cluster.prepare()?;
        cluster.up()
    }

    /// Removes an interrupted earlier run's containers, network, volume and folders.
    fn prepare(&self) -> anyhow::Result<()> {
        self.xtask_ok(
            &["down", "--volumes", "--name", &self.prefix],
            COMMAND_TIMEOUT,
        )?;
        for dir in [&self.cluster_dir, &self.work] {
            match std::fs::remove_dir_all(dir) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    return Err(error).with_context(|| format!("removing {}", dir.display()))
                }
                _ => {}
            }
        }
        std::fs::create_dir_all(&self.work)
            .with_context(|| format!("creating {}", self.work.display()))
    }

    fn up(mut self) -> anyhow::Result<Cluster> {
        let started = Instant::now();
        let nodes = NODES.to_string();
        let mut args = vec!["up", &nodes, "--name", &self.prefix];
        args.extend(self.up_args.iter().map(String::as_str));
        self.up_said = self.xtask_ok(&args, UP_TIMEOUT)?;
        eprintln!("up {NODES} took {:.1} s", started.elapsed().as_secs_f64());
        Ok(self)
    }

    /// The cluster's name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Container name of node `index` (`flotilla_e2e_<name>_node_<index>`).
    pub fn node_name(&self, index: u16) -> String {
        format!("{}_node_{index}", self.prefix)
    }

    /// Container name of the canonical.
    pub fn canonical_name(&self) -> String {
        format!("{}_canonical", self.prefix)
    }

    /// What `up` printed on stdout.
    pub fn up_said(&self) -> &str {
        &self.up_said
    }

    /// The test's cluster folder.
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// The test's scratch folder (empty when the test starts).
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Where the workspace and its target folder are.
    pub fn project(&self) -> &Project {
        &self.project
    }

    /// A shell for docker and nsenter commands.
    pub fn shell(&self) -> &Shell {
        &self.sh
    }

    /// The cluster's containers, by index (the canonical first).
    pub fn containers(&self) -> anyhow::Result<Vec<Container>> {
        docker::containers(&self.sh, Some(&self.prefix))
    }

    /// How many of the cluster's containers run.
    pub fn running_count(&self) -> anyhow::Result<usize> {
        Ok(self.containers()?.iter().filter(|c| c.is_running()).count())
    }

    /// The running container of node `index` (with its pid and address).
    pub fn running(&self, index: u16) -> anyhow::Result<Container> {
        self.containers()?
            .into_iter()
            .find(|c| c.index == index && c.pid > 0)
            .with_context(|| format!("node {index} is not running"))
    }

    /// Whether node `index`'s network namespace holds the partition rules' nftables table.
    pub fn has_partition_table(&self, index: u16) -> anyhow::Result<bool> {
        let pid = self.running(index)?.pid.to_string();
        let tables = cmd!(self.sh, "nsenter --target {pid} --net nft list tables")
            .quiet()
            .read()?;
        Ok(tables.contains("flotilla_partition"))
    }

    /// A command run in the workspace root against the test's cluster folder, with the
    /// environment `cargo xtask` gives its commands.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        forget_this_crate(&mut command);
        command
            .current_dir(&self.project.root)
            .env(CLUSTER_ENV, &self.cluster_dir);
        command
    }

    /// The xtask binary the test runs (built once per suite).
    pub fn xtask_path(&self) -> PathBuf {
        self.xtask.clone()
    }

    /// Runs xtask with `args` and `stdin` (or none); returns what it did, success or not.
    pub fn xtask_with_input(
        &self,
        args: &[&str],
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let mut command = self.command(&self.xtask);
        command.args(args);
        eprintln!("$ cargo xtask {}", args.join(" "));
        run_with_timeout(command, stdin, timeout)
    }

    /// Runs xtask with `args`; returns what it did, success or not.
    pub fn xtask(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        self.xtask_with_input(args, None, timeout)
    }

    /// Runs xtask, echoes its output, and fails unless it succeeded; returns its stdout.
    pub fn xtask_ok(&self, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let output = self.xtask(args, timeout)?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        eprint!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        anyhow::ensure!(
            output.status.success(),
            "`cargo xtask {}` failed ({}): {}",
            args.join(" "),
            output.status,
            last_line(&output)
        );
        Ok(stdout)
    }

    /// The client binary `up` built.
    pub fn client(&self) -> anyhow::Result<PathBuf> {
        lab::client::binary(&self.project)
    }

    /// Runs the client in `dir`; fails unless it succeeded; returns stdout and stderr.
    pub fn client_ok(&self, args: &[&str], dir: &Path) -> anyhow::Result<String> {
        let mut command = self.command(&self.client()?);
        command.args(args).current_dir(dir);
        let output = run_with_timeout(command, None, COMMAND_TIMEOUT)?;
        anyhow::ensure!(
            output.status.success(),
            "`client {}` failed ({}): {}",
            args.join(" "),
            output.status,
            last_line(&output)
        );
        Ok(text(&output))
    }

    /// Fetches image `id` into `out` with `client get-image`; returns what the client said.
    pub fn get_image(&self, id: u64, out: &Path) -> anyhow::Result<String> {
        self.client_ok(
            &[
                "get-image",
                &id.to_string(),
                "-o",
                &out.display().to_string(),
            ],
            &self.work,
        )
    }

    /// Every node's line of `client status --json`.
    pub fn status(&self) -> anyhow::Result<Vec<StatusRow>> {
        self.client_json("status")
    }

    /// Every member's line of `client ping --json` (the canonical is index 0).
    pub fn ping(&self) -> anyhow::Result<Vec<StatusRow>> {
        self.client_json("ping")
    }

    fn client_json(&self, command: &str) -> anyhow::Result<Vec<StatusRow>> {
        let mut client = self.command(&self.client()?);
        client.args([command, "--json"]);
        // Exit code 1 only says that someone is unreachable; the JSON says who.
        let output = run_with_timeout(client, None, COMMAND_TIMEOUT)?;
        wire::status::rows_from_json(&output.stdout).with_context(|| {
            format!(
                "`client {command} --json` printed no JSON: {}",
                last_line(&output)
            )
        })
    }

    /// Fails unless `client ping` lists every member and reaches each of them.
    pub fn ping_all(&self) -> anyhow::Result<()> {
        let members = lab::client::ping(&self.sh, &self.client()?, &self.cluster_dir)?;
        anyhow::ensure!(
            members.len() == usize::from(NODES) + 1,
            "ping lists {} members",
            members.len()
        );
        let silent: Vec<&str> = members
            .iter()
            .filter(|m| !m.reachable)
            .map(|m| m.name.as_str())
            .collect();
        anyhow::ensure!(silent.is_empty(), "not reachable: {}", silent.join(", "));
        Ok(())
    }

    /// Runs `check` until it finds what it looks for (`Ok(Ok(value))`) or `deadline` passes;
    /// `Ok(Err(why))` and errors are remembered for the failure message.
    pub fn wait_until<T>(
        &self,
        what: &str,
        deadline: Duration,
        mut check: impl FnMut() -> anyhow::Result<Result<T, String>>,
    ) -> anyhow::Result<T> {
        let started = Instant::now();
        loop {
            let last = match check() {
                Ok(Ok(value)) => {
                    eprintln!(
                        "seen after {:.1} s: {what}",
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(value);
                }
                Ok(Err(why)) => why,
                Err(error) => format!("{error:#}"),
            };
            if started.elapsed() > deadline {
                anyhow::bail!(
                    "not seen within {} s: {what}; last seen: {last}",
                    deadline.as_secs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every node of `members` answers and names `leader`, all in one term
    /// (above `above` if given), and `leader` says it leads; returns that term.
    pub fn wait_led_by(
        &self,
        what: &str,
        members: &[u16],
        leader: u16,
        above: Option<u64>,
    ) -> anyhow::Result<u64> {
        self.wait_until(what, ELECTION_DEADLINE, || {
            Ok(led_by(&self.status()?, members, leader, above))
        })
    }

    /// Waits until node [`NODES`] leads and every node names it (the Bully election's
    /// steady state); returns its term.
    pub fn wait_highest_leads(&self) -> anyhow::Result<u64> {
        let everyone: Vec<u16> = (1..=NODES).collect();
        self.wait_led_by(
            &format!("node {NODES} leading, named by every node"),
            &everyone,
            NODES,
            None,
        )
    }

    /// Waits until exactly one node leads and every node names it; returns (leader, term).
    pub fn one_agreed_leader(&self) -> anyhow::Result<(u16, u64)> {
        let (leader, term) = self.wait_until(
            "exactly one leader, named by every node",
            ELECTION_DEADLINE,
            || Ok(one_leader(&self.status()?)),
        )?;
        eprintln!("one leader: node {leader}, term {term}");
        Ok((leader, term))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let down = ["down", "--volumes", "--name", self.prefix.as_str()];
        let failure = match self.xtask(&down, COMMAND_TIMEOUT) {
            Ok(output) if output.status.success() => return,
            Ok(output) => last_line(&output),
            Err(error) => format!("{error:#}"),
        };
        // Nothing can be returned from a drop; say it loudly so leftovers are looked for.
        eprintln!(
            "TEARDOWN FAILED: `cargo xtask {}`: {failure}; look for containers with `docker ps -a --filter label={}={}`",
            down.join(" "),
            docker::CLUSTER_LABEL,
            self.prefix
        );
    }
}

/// The project as the tests see it: the target folder is the one this test binary was built
/// in, when that can be told.
pub fn test_project() -> anyhow::Result<Project> {
    let mut project = Project::locate()?;
    if let Some(target_dir) = own_target_dir() {
        project.target_dir = target_dir;
    }
    Ok(project)
}

/// An xtask command (built as the fixture builds it) run in the workspace root against the
/// cluster folder `cluster_dir`: what a second checkout would run, for tests that need one
/// beside a fixture's cluster.
pub fn xtask_for(cluster_dir: &Path) -> anyhow::Result<Command> {
    let project = test_project()?;
    let mut command = Command::new(xtask_binary(&project)?);
    forget_this_crate(&mut command);
    command
        .current_dir(&project.root)
        .env(CLUSTER_ENV, cluster_dir);
    Ok(command)
}

/// The target folder this test binary was built in (`<target>/debug/deps/<test>`), so that
/// xtask and the probe are built beside it even with `--target-dir`; `None` when the binary
/// lives elsewhere, and lab's own guess is used.
fn own_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent().filter(|dir| dir.ends_with("deps"))?;
    let target = deps.parent()?.parent()?;
    target
        .join("CACHEDIR.TAG")
        .is_file()
        .then(|| target.to_path_buf())
}

/// Builds xtask once per process, the way `cargo xtask` does, and returns its binary.
fn xtask_binary(project: &Project) -> anyhow::Result<PathBuf> {
    XTASK
        .get_or_init(|| {
            build_binary(
                &project.root,
                &project.target_dir,
                "xtask",
                "xtask",
                BUILD_TIMEOUT,
            )
            .map_err(|error| format!("{error:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
