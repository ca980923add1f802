//! What a user does with a fresh cluster: `up` (and `up` again), hardened containers, `ping`,
//! images fetched with the real client and compared byte for byte with the canonical's files,
//! the console through `attach`, `top`, a killed node and its restart, `logs`, and a `down`
//! that leaves nothing behind. Each test brings up its own cluster (see `e2e::Cluster`) and
//! runs only when `FLOTILLA_E2E=1` is set.

use std::path::{Path, PathBuf};

use anyhow::Context;
use e2e::cluster::{COMMAND_TIMEOUT, UP_TIMEOUT};
use e2e::process::text;
use e2e::{Cluster, NODES};
use lab::docker::{self, CLUSTER_LABEL};
use serde_json::Value;
use wire::routing::{rank, Routing};
use wire::{ImageId, NodeIndex};

/// Sample ids compared byte for byte with the canonical's files (both ends of the range).
const COMPARED_IDS: [u64; 4] = [123, 1, 500, 1000];
/// The node the kill and restart tests kill.
const KILLED: u16 = 3;
/// How many ids whose primary edge is the killed node are fetched after the kill (each must
/// fail over), and how many others.
const FAILOVER_IDS: usize = 4;
/// Budget of the console session, which must end when its stdin does.
const ATTACH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Folder (under the test's work folder) that `logs all --out` writes to.
const LOGS_DIR: &str = "collected-logs";

#[test]
fn up_starts_a_container_per_member() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("up")?;
    let running = cluster.running_count()?;
    anyhow::ensure!(
        running == usize::from(NODES) + 1,
        "{running} containers run, expected {}",
        NODES + 1
    );
    let last = cluster.node_name(NODES);
    anyhow::ensure!(
        cluster.up_said().contains(&last),
        "the node table does not list {last}"
    );
    Ok(())
}

#[test]
fn up_again_is_safe() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("up_again")?;
    let nodes = NODES.to_string();
    let again = cluster.xtask_ok(&["up", &nodes, "--name", cluster.prefix()], UP_TIMEOUT)?;
    anyhow::ensure!(
        again.contains("nothing to do"),
        "a second `up {NODES}` did not say it had nothing to do"
    );
    let other = cluster.xtask(&["up", "2", "--name", cluster.prefix()], UP_TIMEOUT)?;
    anyhow::ensure!(
        other.status.code() == Some(1) && text(&other).contains("down"),
        "`up 2` on a {NODES}-node cluster was not refused with a hint to run down first"
    );
    Ok(())
}

#[test]
fn containers_are_hardened() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("hardened")?;
    for name in [cluster.node_name(1), cluster.canonical_name()] {
        let inspected = docker::run(cluster.shell(), &["inspect".into(), name.clone()])?;
        let value: Value = serde_json::from_str(&inspected).context("reading inspect")?;
        let container = &value[0];
        let user = container["Config"]["User"].as_str().unwrap_or_default();
        anyhow::ensure!(
            !user.is_empty() && !user.starts_with('0') && !user.starts_with("root"),
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

#[test]
fn ping_reaches_every_member() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("ping")?;
    cluster.ping_all()
}

#[test]
fn images_are_byte_identical_to_the_canonicals() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("identical")?;
    // A cold fetch goes through the leader to the canonical: let the election settle first.
    cluster.wait_highest_leads()?;
    let work = cluster.work();
    for id in COMPARED_IDS {
        // Without -o the client names the file `<id>.<ext>` itself, which tells us the name
        // of the canonical's file.
        let dir = work.join(format!("fetch-{id}"));
        std::fs::create_dir_all(&dir)?;
        cluster.client_ok(&["get-image", &id.to_string()], &dir)?;
        let fetched = single_file(&dir)?;
        let file_name = fetched
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let original = work.join(format!("canonical-{file_name}"));
        docker::run(
            cluster.shell(),
            &[
                "cp".into(),
                format!("{}:/data/{file_name}", cluster.canonical_name()),
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
        let size = cluster.client_ok(&["get-image-size", &id.to_string()], work)?;
        anyhow::ensure!(
            size.trim() == original_bytes.len().to_string(),
            "get-image-size {id} printed `{}`, the file has {} bytes",
            size.trim(),
            original_bytes.len()
        );
    }
    let again = cluster.get_image(123, &work.join("again"))?;
    anyhow::ensure!(
        again.to_lowercase().contains("hit"),
        "a second fetch of 123 was not reported as a cache hit: {again}"
    );
    Ok(())
}

#[test]
fn attach_shows_the_nodes_console() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("attach")?;
    let output =
        cluster.xtask_with_input(&["attach", "2"], Some(b"status\n".to_vec()), ATTACH_TIMEOUT)?;
    let shown = text(&output);
    anyhow::ensure!(output.status.success(), "attach 2 failed: {shown}");
    let mentions = ["node_2", "node-2", "node 2", "index: 2", "index 2"];
    anyhow::ensure!(
        mentions.iter().any(|m| shown.to_lowercase().contains(m)),
        "the console's `status` does not mention node 2: {shown}"
    );
    Ok(())
}

#[test]
fn top_once_shows_every_node() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("top")?;
    // `top` names the leader the nodes agree on, so the election must have settled first.
    cluster.wait_highest_leads()?;
    let frame = cluster.xtask_ok(&["top", "--once", "--interval", "0.5"], COMMAND_TIMEOUT)?;
    for index in 1..=NODES {
        let name = cluster.node_name(index);
        anyhow::ensure!(
            frame
                .lines()
                .any(|line| line.contains(&name) && line.contains(" up ")),
            "top does not show {name} as up:\n{frame}"
        );
    }
    anyhow::ensure!(
        frame.contains(&format!("leader: node {NODES}")),
        "top does not name node {NODES} as the leader:\n{frame}"
    );
    anyhow::ensure!(
        frame.contains("peer RTT"),
        "top shows no RTT matrix:\n{frame}"
    );
    Ok(())
}

#[test]
fn kill_leaves_every_image_servable() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("kill")?;
    // A cold fetch goes through the leader to the canonical: let the election settle first.
    cluster.wait_highest_leads()?;
    cluster.xtask_ok(&["kill", &KILLED.to_string()], COMMAND_TIMEOUT)?;
    let killed = cluster.node_name(KILLED);
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
        let out = cluster.work().join(format!("after-kill-{id}"));
        let said = cluster
            .get_image(*id, &out)
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
    assert_unreachable(&cluster, KILLED)
}

#[test]
fn restart_answers_again_and_follows_the_leader() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("restart")?;
    // Node 5 leads before the kill, so naming node 5 after the restart means rejoining.
    cluster.wait_highest_leads()?;
    // What is restarted must have been down: the kill test's first half.
    cluster.xtask_ok(&["kill", &KILLED.to_string()], COMMAND_TIMEOUT)?;
    assert_unreachable(&cluster, KILLED)?;
    cluster.xtask_ok(&["restart", &KILLED.to_string()], COMMAND_TIMEOUT)?;
    cluster.ping_all()?;
    // Answering is not rejoining: the restarted node must follow the leader again.
    let (leader, _) = cluster.one_agreed_leader()?;
    anyhow::ensure!(
        leader == NODES,
        "node {leader} leads after node {KILLED} restarted, not node {NODES}"
    );
    Ok(())
}

#[test]
fn logs_all_writes_a_file_per_container() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("logs")?;
    collect_logs(&cluster)?;
    collected_logs_are_there(&cluster)
}

#[test]
fn down_leaves_nothing_behind_but_the_collected_logs() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("down")?;
    // `logs --out` writes into a folder of the user's, which `down` must not touch.
    collect_logs(&cluster)?;
    // No `--name`: `down` finds the cluster through its folder, as a user's `down` does.
    cluster.xtask_ok(&["down", "--volumes"], COMMAND_TIMEOUT)?;
    anyhow::ensure!(cluster.containers()?.is_empty(), "containers are left");
    let filter = format!("--filter=label={CLUSTER_LABEL}={}", cluster.prefix());
    for kind in ["network", "volume"] {
        let left = docker::run(
            cluster.shell(),
            &[kind.into(), "ls".into(), "--quiet".into(), filter.clone()],
        )?;
        anyhow::ensure!(left.is_empty(), "a {kind} is left: {left}");
    }
    anyhow::ensure!(
        !cluster
            .cluster_dir()
            .join(wire::cluster::CLUSTER_FILE)
            .exists(),
        "cluster.toml is left"
    );
    collected_logs_are_there(&cluster)
}

/// Fails unless `client ping` still lists node `index` and cannot reach it.
fn assert_unreachable(cluster: &Cluster, index: u16) -> anyhow::Result<()> {
    let members = lab::client::ping(cluster.shell(), &cluster.client()?, cluster.cluster_dir())?;
    let node = members
        .iter()
        .find(|m| m.index == index)
        .context("ping lost the killed node")?;
    anyhow::ensure!(
        !node.reachable,
        "ping still reaches the killed node {index}"
    );
    Ok(())
}

/// Runs `logs all --out` into the work folder's [`LOGS_DIR`].
fn collect_logs(cluster: &Cluster) -> anyhow::Result<()> {
    let dir = cluster.work().join(LOGS_DIR);
    cluster.xtask_ok(
        &["logs", "all", "--out", &dir.display().to_string()],
        COMMAND_TIMEOUT,
    )?;
    Ok(())
}

/// One non-empty `<container>.log` per container in the folder `logs` wrote, and nothing else.
fn collected_logs_are_there(cluster: &Cluster) -> anyhow::Result<()> {
    let dir = cluster.work().join(LOGS_DIR);
    let names =
        std::iter::once(cluster.canonical_name()).chain((1..=NODES).map(|i| cluster.node_name(i)));
    for name in names {
        let path = dir.join(format!("{name}.log"));
        let size = std::fs::metadata(&path)
            .with_context(|| format!("no log file {}", path.display()))?
            .len();
        anyhow::ensure!(size > 0, "{} is empty", path.display());
    }
    let files = std::fs::read_dir(&dir)?.count();
    anyhow::ensure!(
        files == usize::from(NODES) + 1,
        "{} holds {files} files, expected {}",
        dir.display(),
        NODES + 1
    );
    Ok(())
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
