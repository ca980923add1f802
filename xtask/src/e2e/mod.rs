//! The Docker end-to-end suite of `cargo xtask test`: a real `up 5` of scratch containers
//! under its own prefix and cluster folder (so a user's cluster is never touched), images
//! fetched with the real client and compared byte for byte with the canonical's files,
//! the console through `attach`, metrics and `top`, a killed node, a restart, the election
//! through leader kills and partitions, a one-way cut, netem, log collection, and a `down`
//! that must leave nothing behind. The steps run in this order on one cluster, and each
//! leaves it whole (every node running, one agreed leader) for the next. The cluster is torn
//! down on every exit, failures included; leftovers of an interrupted run are removed at the
//! start of the next one. Steps wait on conditions with generous deadlines, never on sleeps.

mod election;
mod faults;
mod observe;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use xshell::{cmd, Shell};

use wire::routing::{rank, Routing};
use wire::{ImageId, NodeIndex};

use crate::client;
use crate::docker::{self, CLUSTER_LABEL};
use crate::project::Project;
use crate::tally::Tally;

/// Prefix of the suite's containers, network and volume.
const PREFIX: &str = "flotilla_e2e";
/// Edges in the suite's cluster.
const NODES: u16 = 5;
/// Sample ids compared byte for byte with the canonical's files (both ends of the range).
const COMPARED_IDS: [u64; 4] = [123, 1, 500, 1000];
/// The node the suite kills.
const KILLED: u16 = 3;
/// How many ids whose primary edge is the killed node are fetched after the kill (each must
/// fail over), and how many others.
const FAILOVER_IDS: usize = 4;
/// Budget of `up`, which may compile the whole workspace in release mode on a slow machine.
const UP_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Budget of every other command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Budget of the console session, which must end when its stdin does.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition the suite waits for.
const POLL: Duration = Duration::from_millis(250);
/// How long the cluster may take to settle on a leader after a fault or its repair: far
/// above the second or so it should take (a restarted node can need a QUIC idle timeout).
const ELECTION_DEADLINE: Duration = Duration::from_secs(45);

/// One member's line of `client status --json` or `client ping --json`, as far as the suite
/// reads it.
#[derive(Clone, Debug, Deserialize)]
struct NodeStatus {
    index: u16,
    reachable: bool,
    role: Option<String>,
    term: Option<u64>,
    leader: Option<u16>,
    rtt_ms: Option<f64>,
}

/// Runs the suite, adding one step per check to `tally`.
pub fn run<'a>(sh: &'a Shell, project: &'a Project, tally: &mut Tally) {
    let base = project.target_dir.join("flotilla-e2e");
    let suite = Suite {
        sh,
        project,
        cluster_dir: base.join(".cluster"),
        work: base.join("work"),
    };
    let _teardown = Teardown(&suite);
    if let Err(error) = suite.prepare() {
        tally.step("e2e: prepare", || Err(error));
        return;
    }
    let up = tally.step(
        &format!("e2e: up {NODES} starts {} containers", NODES + 1),
        || suite.up(),
    );
    let steps: [(&str, Step<'a>); 17] = [
        ("e2e: up again is safe", Suite::up_again),
        ("e2e: containers are hardened", Suite::hardened),
        ("e2e: ping reaches every member", Suite::ping_all),
        (
            "e2e: node 5 leads and every node names it",
            Suite::highest_leads,
        ),
        (
            "e2e: metrics pass promtool, show every peer's RTT and count a fetch",
            Suite::metrics,
        ),
        (
            "e2e: images are byte-identical to the canonical's",
            Suite::identical,
        ),
        ("e2e: attach 2 shows node 2's console", Suite::attach),
        ("e2e: top --once shows every node", Suite::top),
        ("e2e: kill 3 leaves every image servable", Suite::kill),
        (
            "e2e: restart 3 answers again and follows node 5",
            Suite::restart,
        ),
        (
            "e2e: kill 5: node 4 leads a higher term, cached images stay servable",
            Suite::kill_leader,
        ),
        ("e2e: restart 5: node 5 leads again", Suite::restart_leader),
        (
            "e2e: partition 1,2 3,4,5: no leader in the minority, 5 leads the majority; heal",
            Suite::partition,
        ),
        (
            "e2e: partition --one-way 1 2 drops 1->2 datagrams, not 2->1",
            Suite::one_way,
        ),
        (
            "e2e: netem 2 --delay 150ms slows node 2 for the client and its peers; --clear",
            Suite::netem,
        ),
        (
            "e2e: logs all --out writes one non-empty file per container",
            Suite::logs,
        ),
        (
            "e2e: down leaves nothing behind but the collected logs",
            Suite::down,
        ),
    ];
    for (name, step) in steps {
        if up {
            tally.step(name, || step(&suite));
        } else {
            tally.not_run(name, "the cluster did not come up");
        }
    }
}

/// One check of the suite after `up`.
type Step<'a> = fn(&Suite<'a>) -> anyhow::Result<()>;

struct Suite<'a> {
    sh: &'a Shell,
    project: &'a Project,
    /// The suite's own cluster folder (`FLOTILLA_CLUSTER` of every command it runs).
    cluster_dir: PathBuf,
    /// Scratch folder for fetched files.
    work: PathBuf,
}

/// Tears the suite's cluster down when the suite ends, however it ends.
struct Teardown<'a>(&'a Suite<'a>);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .xtask(&["down", "--volumes", "--name", PREFIX], COMMAND_TIMEOUT);
    }
}

impl Suite<'_> {
    fn prepare(&self) -> anyhow::Result<()> {
        // An interrupted earlier run may have left containers behind.
        self.xtask_ok(&["down", "--volumes", "--name", PREFIX], COMMAND_TIMEOUT)?;
        let _ = std::fs::remove_dir_all(&self.work);
        std::fs::create_dir_all(&self.work)
            .with_context(|| format!("creating {}", self.work.display()))
    }

    fn up(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let name = NODES.to_string();
        let output = self.xtask_ok(
            &["up", &name, "--runtime", "docker", "--name", PREFIX],
            UP_TIMEOUT,
        )?;
        eprintln!("up {NODES} took {:.1} s", started.elapsed().as_secs_f64());
        let running = self.containers()?.iter().filter(|c| c.is_running()).count();
        anyhow::ensure!(
            running == usize::from(NODES) + 1,
            "{running} containers run, expected {}",
            NODES + 1
        );
        anyhow::ensure!(
            output.contains(&format!("{PREFIX}_node_{NODES}")),
            "the node table does not list {PREFIX}_node_{NODES}"
        );
        Ok(())
    }

    fn up_again(&self) -> anyhow::Result<()> {
        let name = NODES.to_string();
        let again = self.xtask_ok(&["up", &name, "--name", PREFIX], UP_TIMEOUT)?;
        anyhow::ensure!(
            again.contains("nothing to do"),
            "a second `up {NODES}` did not say it had nothing to do"
        );
        let other = self.xtask(&["up", "2", "--name", PREFIX], UP_TIMEOUT)?;
        anyhow::ensure!(
            other.status.code() == Some(1) && text(&other).contains("down"),
            "`up 2` on a {NODES}-node cluster was not refused with a hint to run down first"
        );
        Ok(())
    }

    fn hardened(&self) -> anyhow::Result<()> {
        for name in [format!("{PREFIX}_node_1"), format!("{PREFIX}_canonical")] {
            let inspected = docker::run(self.sh, &["inspect".into(), name.clone()])?;
            let value: Value = serde_json::from_str(&inspected).context("reading inspect")?;
            let container = &value[0];
            let user = container["Config"]["User"].as_str().unwrap_or_default();
            anyhow::ensure!(
                !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
                "{name} runs as user `{user}`"
            );
            let host = &container["HostConfig"];
            anyhow::ensure!(host["ReadonlyRootfs"] == true, "{name} has a writable root");
            let has = |list: &Value, wanted: &str| {
                list.as_array()
                    .is_some_and(|items| items.iter().any(|item| item == wanted))
            };
            anyhow::ensure!(has(&host["CapDrop"], "ALL"), "{name} keeps capabilities");
            anyhow::ensure!(
                has(&host["SecurityOpt"], "no-new-privileges"),
                "{name} lacks no-new-privileges"
            );
            anyhow::ensure!(
                host["Memory"].as_u64().unwrap_or(0) > 0,
                "{name} has no memory limit"
            );
            let bindings = host["PortBindings"]
                .as_object()
                .context("no port bindings")?;
            for binding in bindings.values().filter_map(Value::as_array).flatten() {
                anyhow::ensure!(
                    binding["HostIp"] == "127.0.0.1",
                    "{name} publishes a port on {}",
                    binding["HostIp"]
                );
            }
        }
        Ok(())
    }

    fn ping_all(&self) -> anyhow::Result<()> {
        let members = client::ping(self.sh, &self.client()?, &self.cluster_dir)?;
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

    fn identical(&self) -> anyhow::Result<()> {
        for id in COMPARED_IDS {
            // Without -o the client names the file `<id>.<ext>` itself, which tells us the
            // name of the canonical's file.
            let dir = self.work.join(format!("fetch-{id}"));
            std::fs::create_dir_all(&dir)?;
            self.client_ok(&["get-image", &id.to_string()], &dir)?;
            let fetched = single_file(&dir)?;
            let file_name = fetched
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let original = self.work.join(format!("canonical-{file_name}"));
            docker::run(
                self.sh,
                &[
                    "cp".into(),
                    format!("{PREFIX}_canonical:/data/{file_name}"),
                    original.display().to_string(),
                ],
            )?;
            let fetched_bytes = std::fs::read(&fetched)?;
            let original_bytes = std::fs::read(&original)?;
            anyhow::ensure!(
                fetched_bytes == original_bytes,
                "image {id}: the edges returned {} bytes (sha256 {}), the canonical holds {} bytes (sha256 {})",
                fetched_bytes.len(),
                wire::Digest::of(&fetched_bytes),
                original_bytes.len(),
                wire::Digest::of(&original_bytes)
            );
            let size = self.client_ok(&["get-image-size", &id.to_string()], &self.work)?;
            anyhow::ensure!(
                size.trim() == original_bytes.len().to_string(),
                "get-image-size {id} printed `{}`, the file has {} bytes",
                size.trim(),
                original_bytes.len()
            );
        }
        let again = self.client_ok(
            &[
                "get-image",
                "123",
                "-o",
                &self.work.join("again").display().to_string(),
            ],
            &self.work,
        )?;
        anyhow::ensure!(
            again.to_lowercase().contains("hit"),
            "a second fetch of 123 was not reported as a cache hit: {again}"
        );
        Ok(())
    }

    fn attach(&self) -> anyhow::Result<()> {
        let mut command = self.command(&self.xtask_binary());
        command.args(["attach", "2"]);
        let output = run_with_timeout(command, Some(b"status\n".to_vec()), ATTACH_TIMEOUT)?;
        let shown = text(&output);
        anyhow::ensure!(output.status.success(), "attach 2 failed: {shown}");
        let mentions = ["node_2", "node-2", "node 2", "index: 2", "index 2"];
        anyhow::ensure!(
            mentions.iter().any(|m| shown.to_lowercase().contains(m)),
            "the console's `status` does not mention node 2: {shown}"
        );
        Ok(())
    }

    fn kill(&self) -> anyhow::Result<()> {
        self.xtask_ok(&["kill", &KILLED.to_string()], COMMAND_TIMEOUT)?;
        let killed = format!("{PREFIX}_node_{KILLED}");
        let edges: Vec<NodeIndex> = (1..=NODES).map(NodeIndex).collect();
        let primary = |id: u64| rank(ImageId(id), &edges, Routing::Rendezvous)[0];
        // Ids the client sends to the killed node first, and as many that it does not.
        let (orphans, others): (Vec<u64>, Vec<u64>) =
            (1..=1000).partition(|id| primary(*id) == NodeIndex(KILLED));
        let ids = orphans
            .iter()
            .take(FAILOVER_IDS)
            .chain(others.iter().take(FAILOVER_IDS));
        for id in ids {
            let out = self.work.join(format!("after-kill-{id}"));
            let said = self
                .client_ok(
                    &[
                        "get-image",
                        &id.to_string(),
                        "-o",
                        &out.display().to_string(),
                    ],
                    &self.work,
                )
                .with_context(|| format!("fetching image {id} with node {KILLED} killed"))?;
            anyhow::ensure!(
                std::fs::metadata(&out).is_ok_and(|m| m.len() > 0),
                "image {id} came back empty"
            );
            anyhow::ensure!(
                !said.contains(&killed),
                "image {id} claims to come from the killed {killed}: {said}"
            );
        }
        let members = client::ping(self.sh, &self.client()?, &self.cluster_dir)?;
        let node = members
            .iter()
            .find(|m| m.index == KILLED)
            .context("ping lost the killed node")?;
        anyhow::ensure!(
            !node.reachable,
            "ping still reaches the killed node {KILLED}"
        );
        Ok(())
    }

    fn restart(&self) -> anyhow::Result<()> {
        self.xtask_ok(&["restart", &KILLED.to_string()], COMMAND_TIMEOUT)?;
        self.ping_all()?;
        // Answering is not rejoining: the restarted node must follow the leader again before
        // the election steps start.
        let (leader, _) = self.one_agreed_leader()?;
        anyhow::ensure!(
            leader == NODES,
            "node {leader} leads after node {KILLED} restarted, not node {NODES}"
        );
        Ok(())
    }

    fn down(&self) -> anyhow::Result<()> {
        self.xtask_ok(&["down", "--volumes"], COMMAND_TIMEOUT)?;
        anyhow::ensure!(self.containers()?.is_empty(), "containers are left");
        let filter = format!("--filter=label={CLUSTER_LABEL}={PREFIX}");
        for kind in ["network", "volume"] {
            let left = docker::run(
                self.sh,
                &[kind.into(), "ls".into(), "--quiet".into(), filter.clone()],
            )?;
            anyhow::ensure!(left.is_empty(), "a {kind} is left: {left}");
        }
        anyhow::ensure!(
            !self.cluster_dir.join(wire::cluster::CLUSTER_FILE).exists(),
            "cluster.toml is left"
        );
        // `logs --out` wrote into a folder of the user's: `down` must not touch it.
        self.collected_logs_are_there()
    }

    fn has_partition_table(&self, index: u16) -> anyhow::Result<bool> {
        let container = self
            .containers()?
            .into_iter()
            .find(|c| c.index == index)
            .filter(|c| c.pid > 0)
            .with_context(|| format!("node {index} is not running"))?;
        let pid = container.pid.to_string();
        let tables = cmd!(self.sh, "nsenter --target {pid} --net nft list tables")
            .quiet()
            .read()?;
        Ok(tables.contains("flotilla_partition"))
    }

    fn containers(&self) -> anyhow::Result<Vec<docker::Container>> {
        docker::containers(self.sh, Some(PREFIX))
    }

    /// The running container of node `index` (with its pid and address).
    fn running(&self, index: u16) -> anyhow::Result<docker::Container> {
        self.containers()?
            .into_iter()
            .find(|c| c.index == index && c.pid > 0)
            .with_context(|| format!("node {index} is not running"))
    }

    /// Every node's line of `client status --json`.
    fn status(&self) -> anyhow::Result<Vec<NodeStatus>> {
        self.client_json("status")
    }

    /// Every member's line of `client ping --json` (the canonical is index 0).
    fn ping(&self) -> anyhow::Result<Vec<NodeStatus>> {
        self.client_json("ping")
    }

    fn client_json(&self, command: &str) -> anyhow::Result<Vec<NodeStatus>> {
        let mut client = self.command(&self.client()?);
        client.args([command, "--json"]);
        // Exit code 1 only says that someone is unreachable; the JSON says who.
        let output = run_with_timeout(client, None, COMMAND_TIMEOUT)?;
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "`client {command} --json` printed no JSON: {}",
                last_line(&output)
            )
        })
    }

    /// Runs `check` until it finds what it looks for (`Ok(Ok(value))`) or `deadline` passes;
    /// `Ok(Err(why))` and errors are remembered for the failure message.
    fn wait_until<T>(
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

    fn client(&self) -> anyhow::Result<PathBuf> {
        client::binary(self.project)
    }

    fn xtask_binary(&self) -> PathBuf {
        std::env::current_exe().unwrap_or_else(|_| self.project.target_dir.join("debug/xtask"))
    }

    /// A command run against the suite's cluster folder.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.project.root)
            .env(wire::cluster::CLUSTER_ENV, &self.cluster_dir);
        command
    }

    fn xtask(&self, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        let mut command = self.command(&self.xtask_binary());
        command.args(args);
        eprintln!("$ cargo xtask {}", args.join(" "));
        run_with_timeout(command, None, timeout)
    }

    /// Runs xtask, echoes its output, and fails unless it succeeded; returns its stdout.
    fn xtask_ok(&self, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
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

    /// Runs the client in `dir`; fails unless it succeeded; returns stdout and stderr.
    fn client_ok(&self, args: &[&str], dir: &Path) -> anyhow::Result<String> {
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
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
            .map(|stdout| stdout + &String::from_utf8_lossy(&output.stderr))
    }
}

/// The one file in `dir`.
fn single_file(dir: &Path) -> anyhow::Result<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .collect();
    match files.as_slice() {
        [file] => Ok(file.clone()),
        _ => anyhow::bail!(
            "expected one file in {}, found {}",
            dir.display(),
            files.len()
        ),
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn last_line(output: &Output) -> String {
    text(output)
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// Runs `command` with `stdin` (or none), collecting its output; kills it after `timeout`.
fn run_with_timeout(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Dropping the pipe afterwards closes it: the child sees end of input.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let drain = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "{:?} did not finish within {} s",
                command.get_program(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}
