//! A swarm cluster that really spans two Docker engines on this one machine: a second
//! `dockerd` in a network namespace of the test's own (reached over a veth pair, with a
//! hostname of its own), joined as a worker of this engine's swarm. Members land on both
//! engines, talk over the overlay across them, a `partition` between the engines (made in the
//! members' own sockets with the operator's certificate) leaves the smaller side without a
//! leader until `heal`, `netem` on a member there shows in its peers' round-trip times,
//! `pause`, `resume` and `kill` reach a task on the second engine through a Docker context
//! named after it, and with every task on the second engine killed the cluster keeps serving
//! images. The second engine, its namespace, its files and its
//! context go when the test ends, also when it fails, and this engine's swarm is left as it
//! was found (inactive; the test skips loudly when a swarm is already there, since it must
//! re-initialise it on the veth address). Runs only when `FLOTILLA_E2E=1` is set.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use e2e::cluster::{COMMAND_TIMEOUT, ELECTION_DEADLINE, POLL};
use e2e::leadership::leaderless;
use e2e::{Cluster, NODES};
use lab::{docker, swarm};
use xshell::{cmd, Shell};

/// The test's network namespace, and the two ends of its veth pair (at most 15 characters).
const NETNS: &str = "flotilla_e2e_w2";
const HOST_LINK: &str = "fle2e-w2-host";
const WORKER_LINK: &str = "fle2e-w2-ns";
/// This engine's and the second engine's addresses on the veth pair.
const MANAGER_ADDRESS: &str = "10.213.77.1";
const WORKER_ADDRESS: &str = "10.213.77.2";
/// The second engine's hostname: the swarm's name of that machine, and its Docker context.
const WORKER_HOSTNAME: &str = "flotilla-e2e-w2";
/// How long the second engine may take to answer after it starts.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// Ids fetched after every task on the second engine is gone: not cached before, so each
/// goes through a surviving edge to the canonical.
const AFTER_IDS: [u64; 3] = [7, 480, 999];
/// How long a peer's smoothed round-trip time may take to follow a delay set or cleared.
const RTT_DEADLINE: Duration = Duration::from_secs(60);

/// The second engine and what it stands on; dropping it removes all of it and makes this
/// engine leave the swarm the test made.
struct SecondEngine {
    sh: Shell,
    /// The engine's own folder: data root, exec root, socket, pid file, config, log.
    dir: PathBuf,
    dockerd: Option<Child>,
    /// This engine had the swarm's gateway bridge before the test.
    had_bridge: bool,
}

impl SecondEngine {
    fn socket(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// `docker` on the second engine.
    fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-H".to_string(), self.socket()];
        all.extend(args.iter().map(|a| a.to_string()));
        docker::run(&self.sh, &all)
    }

    /// Starts the second engine in a fresh namespace and makes a two-machine swarm.
    fn start(sh: Shell, dir: PathBuf) -> anyhow::Result<SecondEngine> {
        let had_bridge = swarm::network_exists(&sh, swarm::GATEWAY_BRIDGE);
        let mut engine = SecondEngine {
            sh,
            dir,
            dockerd: None,
            had_bridge,
        };
        engine.setup()?;
        Ok(engine)
    }

    fn setup(&mut self) -> anyhow::Result<()> {
        let sh = &self.sh;
        let dir = &self.dir;
        for sub in ["data", "exec"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("daemon.json"), "{}")?;
        cmd!(sh, "ip netns add {NETNS}").quiet().run()?;
        cmd!(
            sh,
            "ip link add {HOST_LINK} type veth peer name {WORKER_LINK}"
        )
        .quiet()
        .run()?;
        cmd!(sh, "ip link set {WORKER_LINK} netns {NETNS}")
            .quiet()
            .run()?;
        let host_cidr = format!("{MANAGER_ADDRESS}/24");
        let worker_cidr = format!("{WORKER_ADDRESS}/24");
        cmd!(sh, "ip addr add {host_cidr} dev {HOST_LINK}")
            .quiet()
            .run()?;
        cmd!(sh, "ip link set {HOST_LINK} up").quiet().run()?;
        cmd!(
            sh,
            "ip netns exec {NETNS} ip addr add {worker_cidr} dev {WORKER_LINK}"
        )
        .quiet()
        .run()?;
        cmd!(sh, "ip netns exec {NETNS} ip link set {WORKER_LINK} up")
            .quiet()
            .run()?;
        cmd!(sh, "ip netns exec {NETNS} ip link set lo up")
            .quiet()
            .run()?;
        // `nsenter --net`, not `ip netns exec` (which remounts /sys and loses the cgroup
        // mounts dockerd needs); a UTS namespace of its own gives the machine its own name.
        let storage = docker::run(sh, &["info".into(), "--format={{.Driver}}".into()])?;
        let dockerd = format!(
            "hostname {WORKER_HOSTNAME} && exec nsenter --net=/var/run/netns/{NETNS} dockerd \
             --data-root {data} --exec-root {exec} --host {socket} --pidfile {pid} \
             --config-file {config} --bridge none --iptables=false --ip-masq=false \
             --storage-driver {storage}",
            data = dir.join("data").display(),
            exec = dir.join("exec").display(),
            socket = self.socket(),
            pid = dir.join("docker.pid").display(),
            config = dir.join("daemon.json").display(),
        );
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        self.dockerd = Some(
            Command::new("unshare")
                .args(["--uts", "sh", "-c", &dockerd])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting the second dockerd")?,
        );
        let started = Instant::now();
        while self.docker(&["version"]).is_err() {
            anyhow::ensure!(
                started.elapsed() < ENGINE_START_TIMEOUT,
                "the second dockerd did not answer within {} s; see {}",
                ENGINE_START_TIMEOUT.as_secs(),
                dir.join("dockerd.log").display()
            );
            std::thread::sleep(POLL);
        }
        docker::run(
            sh,
            &[
                "swarm".into(),
                "init".into(),
                format!("--advertise-addr={MANAGER_ADDRESS}"),
            ],
        )?;
        let token = docker::run(
            sh,
            &[
                "swarm".into(),
                "join-token".into(),
                "--quiet".into(),
                "worker".into(),
            ],
        )?;
        self.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            WORKER_ADDRESS,
            &format!("{MANAGER_ADDRESS}:2377"),
        ])?;
        // The images as the second machine needs them, without a registry.
        let socket = self.socket();
        let (node, canonical) = (docker::NODE_IMAGE, docker::CANONICAL_IMAGE);
        let script = r#"docker save "$1" "$2" | docker -H "$3" load"#;
        cmd!(sh, "sh -c {script} sh {node} {canonical} {socket}")
            .quiet()
            .ignore_stdout()
            .run()
            .context("copying the images to the second engine")?;
        docker::run(
            sh,
            &[
                "context".into(),
                "create".into(),
                WORKER_HOSTNAME.into(),
                format!("--docker=host={socket}"),
            ],
        )?;
        Ok(())
    }

    /// Cluster members whose tasks run on the second engine, by service name.
    fn members_here(&self) -> anyhow::Result<Vec<String>> {
        let names = self.docker(&[
            "ps",
            "--format",
            "{{.Label \"com.docker.swarm.service.name\"}}",
        ])?;
        Ok(names.lines().map(str::to_string).collect())
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        let sh = &self.sh;
        let _ = self.docker(&["swarm", "leave", "--force"]);
        if let Some(mut dockerd) = self.dockerd.take() {
            // SIGTERM to dockerd (the `sh` exec'd into it), then wait for it to unmount.
            let pid = dockerd.id().to_string();
            let _ = cmd!(sh, "kill {pid}").quiet().ignore_status().run();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(dockerd.try_wait(), Ok(None)) {
                std::thread::sleep(POLL);
            }
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        let _ = swarm::leave(sh, !self.had_bridge);
        let _ = docker::run(
            sh,
            &[
                "context".into(),
                "rm".into(),
                "--force".into(),
                WORKER_HOSTNAME.into(),
            ],
        );
        let _ = cmd!(sh, "ip netns del {NETNS}")
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .run();
        let _ = cmd!(sh, "ip link del {HOST_LINK}")
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .run();
        // Anything the second engine left mounted under its folder, deepest first.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(1))
            .filter(|point| point.starts_with(&prefix))
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in points {
            let _ = cmd!(sh, "umount -l {point}").quiet().ignore_status().run();
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                eprintln!("REMOVING {} FAILED: {error}", self.dir.display());
            }
        }
    }
}

#[test]
fn a_cluster_across_two_engines_keeps_serving_when_one_loses_every_task() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let sh = Shell::new()?;
    if swarm::membership(&sh)?.is_active() {
        eprintln!(
            "SKIPPED a_cluster_across_two_engines_keeps_serving_when_one_loses_every_task: this engine is already in a swarm, which the test would have to re-initialise"
        );
        return Ok(());
    }
    for tool in ["ip", "unshare", "nsenter", "dockerd"] {
        chaos::tools::ensure(&sh, tool, "iproute2, util-linux or docker.io")?;
    }
    let dir = e2e::cluster::test_project()?
        .target_dir
        .join("flotilla-e2e")
        .join("second-engine");
    let _ = std::fs::remove_dir_all(&dir);
    // The second engine is given this checkout's images, so they are built before they are
    // copied (`up` builds them only later); an older image there would run older nodes.
    let built = e2e::cluster::xtask_for(&dir)?
        .arg("build")
        .output()
        .context("running `cargo xtask build`")?;
    anyhow::ensure!(
        built.status.success(),
        "`cargo xtask build` failed: {}",
        String::from_utf8_lossy(&built.stderr).trim()
    );
    // Declared before the cluster, so dropped after its `down`.
    let engine = SecondEngine::start(sh, dir)?;
    let cluster = Cluster::start_on("two_engines", "swarm", &[])?;

    let status = cluster.xtask_ok(&["status"], COMMAND_TIMEOUT)?;
    anyhow::ensure!(
        status.contains(WORKER_HOSTNAME),
        "`status` shows no member on {WORKER_HOSTNAME}:\n{status}"
    );
    let remote = engine.members_here()?;
    let nodes_there: Vec<u16> = (1..=NODES)
        .filter(|index| remote.contains(&cluster.node_name(*index)))
        .collect();
    anyhow::ensure!(
        !nodes_there.is_empty() && nodes_there.len() < usize::from(NODES),
        "nodes on the second engine: {nodes_there:?}; the swarm should spread them over both"
    );
    eprintln!("nodes on {WORKER_HOSTNAME}: {nodes_there:?}");
    // Every edge answers and one leader is named by all: the overlay spans both engines.
    cluster.one_agreed_leader()?;
    cluster.get_image(123, &cluster.work().join("before"))?;

    // Partitions reach the other machine through the members' own sockets, set with the
    // operator's certificate: a cut between the engines leaves the smaller side without a
    // leader, the larger side led by its highest node, and `heal` brings one leader back.
    let nodes_here: Vec<u16> = (1..=NODES).filter(|i| !nodes_there.contains(i)).collect();
    let (minority, majority) = match nodes_there.len() < nodes_here.len() {
        true => (&nodes_there, &nodes_here),
        false => (&nodes_here, &nodes_there),
    };
    let list = |nodes: &[u16]| {
        nodes
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let said = cluster.xtask_ok(
        &["partition", &list(&nodes_there), &list(&nodes_here)],
        COMMAND_TIMEOUT,
    )?;
    eprintln!("{}", said.trim());
    cluster.wait_until(
        &format!("nodes {minority:?} without a leader"),
        ELECTION_DEADLINE,
        || Ok(leaderless(&cluster.status()?, minority)),
    )?;
    let highest = majority.iter().copied().max().unwrap_or(NODES);
    cluster.wait_led_by(
        &format!("nodes {majority:?} led by node {highest}"),
        majority,
        highest,
        None,
    )?;
    cluster.xtask_ok(&["heal"], COMMAND_TIMEOUT)?;
    cluster.one_agreed_leader()?;

    // A delay on a member on the other machine shows in its peers' round-trip times, and
    // goes when cleared.
    let delayed = nodes_there[0];
    let peer = nodes_here[0];
    let rtt = |rows: &[wire::status::StatusRow]| {
        rows.iter()
            .find(|r| r.index == peer)
            .and_then(|r| r.peer_rtt_ms.as_ref())
            .and_then(|rtts| rtts.get(&delayed.to_string()).copied())
    };
    let said = cluster.xtask_ok(
        &["netem", &delayed.to_string(), "--delay", "200ms"],
        COMMAND_TIMEOUT,
    )?;
    eprintln!("{}", said.trim());
    let slow = cluster.wait_until(
        &format!("node {peer}'s RTT to node {delayed} above 150 ms"),
        RTT_DEADLINE,
        || {
            let rows = cluster.status()?;
            Ok(match rtt(&rows) {
                Some(ms) if ms > 150.0 => Ok(ms),
                other => Err(format!("{other:?} ms")),
            })
        },
    )?;
    eprintln!("node {peer}'s RTT to node {delayed} with 200 ms delay: {slow:.1} ms");
    cluster.xtask_ok(&["netem", &delayed.to_string(), "--clear"], COMMAND_TIMEOUT)?;
    let fast = cluster.wait_until(
        &format!("node {peer}'s RTT to node {delayed} below 100 ms"),
        RTT_DEADLINE,
        || {
            let rows = cluster.status()?;
            Ok(match rtt(&rows) {
                Some(ms) if ms < 100.0 => Ok(ms),
                other => Err(format!("{other:?} ms")),
            })
        },
    )?;
    eprintln!("node {peer}'s RTT to node {delayed} after --clear: {fast:.1} ms");
    cluster.one_agreed_leader()?;

    // `pause` and `resume` reach a task on the other machine through its Docker context,
    // and `status` sees it frozen there.
    let first = nodes_there[0];
    cluster.xtask_ok(&["pause", &first.to_string()], COMMAND_TIMEOUT)?;
    let paused = cluster.xtask_ok(&["status"], COMMAND_TIMEOUT)?;
    let row = paused
        .lines()
        .find(|line| line.contains(&format!("{} ", cluster.node_name(first))))
        .unwrap_or_default();
    anyhow::ensure!(
        row.contains("paused") && row.contains(WORKER_HOSTNAME),
        "node {first} is not shown paused on {WORKER_HOSTNAME}: `{row}`"
    );
    cluster.xtask_ok(&["resume", &first.to_string()], COMMAND_TIMEOUT)?;
    cluster.one_agreed_leader()?;

    // `kill` reaches a task on the other machine through its Docker context.
    cluster.xtask_ok(&["kill", &first.to_string()], COMMAND_TIMEOUT)?;
    let still_there = engine.members_here()?;
    anyhow::ensure!(
        !still_there.contains(&cluster.node_name(first)),
        "node {first} still runs on {WORKER_HOSTNAME} after `kill`"
    );
    // Then every other task there.
    let ids = engine.docker(&["ps", "--quiet"])?;
    if !ids.is_empty() {
        let mut args = vec!["kill"];
        args.extend(ids.lines());
        engine.docker(&args)?;
    }
    anyhow::ensure!(
        engine.members_here()?.is_empty(),
        "tasks still run on {WORKER_HOSTNAME}"
    );
    for id in AFTER_IDS {
        let said = cluster
            .get_image(id, &cluster.work().join(format!("after-{id}")))
            .with_context(|| {
                format!("fetching image {id} with every task on {WORKER_HOSTNAME} killed")
            })?;
        anyhow::ensure!(
            !nodes_there
                .iter()
                .any(|index| said.contains(&cluster.node_name(*index))),
            "image {id} came from a killed node: {said}"
        );
    }
    drop(cluster);
    drop(engine);
    let sh = Shell::new()?;
    anyhow::ensure!(
        !swarm::membership(&sh)?.is_active(),
        "this engine is still in a swarm"
    );
    let namespaces = cmd!(sh, "ip netns list").quiet().read()?;
    anyhow::ensure!(!namespaces.contains(NETNS), "the namespace {NETNS} is left");
    Ok(())
}
