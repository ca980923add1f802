//! The Docker runtime: how each member becomes a hardened scratch container on the cluster
//! network, and the network and volume around them.

use xshell::Shell;

use crate::docker::{
    self, bind_mount, CANONICAL_IMAGE, CLUSTER_LABEL, INDEX_LABEL, NODE_IMAGE, ROLE_LABEL,
};
use crate::launch::{member_args, Placement};
use crate::project::Project;
use crate::state::{member_name, MemberState, State};

/// QUIC port inside every container.
pub const QUIC_PORT: u16 = 7000;
/// Metrics port inside every container.
pub const METRICS_PORT: u16 = 9100;
/// Where a member's own credentials folder is mounted, read-only.
const CERTS_MOUNT: &str = "/certs";
/// Where the canonical's named volume of sample images is mounted.
const DATA_MOUNT: &str = "/data";
/// Where a user's `--images` folder is mounted, read-only.
const IMAGES_MOUNT: &str = "/images";
/// Memory limit of a node without `--cache-mb`.
const NODE_MEMORY_MB: u32 = 256;
/// Memory limit of the canonical, which encodes sample PNGs of a few MB.
const CANONICAL_MEMORY_MB: u32 = 512;
/// Memory beyond the cache a node may need (runtime, QUIC buffers, images in flight).
const NODE_OVERHEAD_MB: u32 = 192;
/// Per-container log size before the engine rotates it, and files kept.
const LOG_MAX_SIZE: &str = "max-size=50m";
const LOG_MAX_FILES: &str = "max-file=2";

/// Where `member` listens and finds its files, inside its container.
fn placement(state: &State) -> Placement {
    let on_network = |index: u16| format!("{}:{QUIC_PORT}", member_name(&state.prefix, index));
    let (data, samples) = match state.options.images {
        Some(_) => (IMAGES_MOUNT, false),
        None => (DATA_MOUNT, true),
    };
    Placement {
        listen: format!("0.0.0.0:{QUIC_PORT}"),
        metrics: format!("0.0.0.0:{METRICS_PORT}"),
        certs: CERTS_MOUNT.to_string(),
        data: data.to_string(),
        samples,
        canonical: on_network(0),
        peers: state.nodes().map(|node| on_network(node.index)).collect(),
    }
}

/// The memory limit of `member`: a cache of `--cache-mb` fits with room to spare.
fn memory_mb(state: &State, member: &MemberState) -> u32 {
    if member.is_canonical() {
        return CANONICAL_MEMORY_MB;
    }
    match state.options.cache_mb {
        Some(cache_mb) => NODE_MEMORY_MB.max(cache_mb.saturating_add(NODE_OVERHEAD_MB)),
        None => NODE_MEMORY_MB,
    }
}

/// Creates and starts `member`'s container.
pub fn run(
    sh: &Shell,
    project: &Project,
    state: &State,
    member: &MemberState,
) -> anyhow::Result<()> {
    let (role, image) = if member.is_canonical() {
        ("canonical", CANONICAL_IMAGE)
    } else {
        ("node", NODE_IMAGE)
    };
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        format!("--name={}", member.name),
        format!("--hostname={}", member.name),
        format!("--network={}", docker::network_name(&state.prefix)),
        format!("--label={CLUSTER_LABEL}={}", state.prefix),
        format!("--label={ROLE_LABEL}={role}"),
        format!("--label={INDEX_LABEL}={}", member.index),
        // Hardening: nothing writable but the data volume, no capabilities, no setuid.
        "--read-only".into(),
        "--cap-drop=ALL".into(),
        "--security-opt=no-new-privileges".into(),
        format!("--memory={}m", memory_mb(state, member)),
        "--restart=no".into(),
        "--log-driver=json-file".into(),
        format!("--log-opt={LOG_MAX_SIZE}"),
        format!("--log-opt={LOG_MAX_FILES}"),
        // Fixed host ports, chosen at `up`, so `restart` brings a member back where it was.
        format!("--publish=127.0.0.1:{}:{QUIC_PORT}/udp", member.quic_port),
        format!(
            "--publish=127.0.0.1:{}:{METRICS_PORT}/tcp",
            member.metrics_port
        ),
        format!(
            "--mount={}",
            bind_mount(
                &project.member_certs(&member.role().stem()),
                CERTS_MOUNT,
                true
            )
        ),
    ];
    if member.is_canonical() {
        match &state.options.images {
            Some(images) => args.push(format!(
                "--mount={}",
                bind_mount(images, IMAGES_MOUNT, true)
            )),
            None => args.push(format!(
                "--mount=type=volume,source={},target={DATA_MOUNT}",
                docker::volume_name(&state.prefix)
            )),
        }
    }
    if let Ok(filter) = std::env::var("RUST_LOG") {
        args.push(format!("--env=RUST_LOG={filter}"));
    }
    args.push(image.into());
    args.extend(member_args(member, &placement(state), &state.options));
    docker::run(sh, &args).map_err(|error| explain_start_failure(member, error))?;
    Ok(())
}

/// Turns the engine's complaint about a taken port into the one line a user needs.
pub fn explain_start_failure(member: &MemberState, error: anyhow::Error) -> anyhow::Error {
    let text = error.to_string();
    if text.contains("port is already allocated") || text.contains("address already in use") {
        return anyhow::anyhow!(
            "a host port of {} (UDP {} or TCP {}) is taken by another program; stop that program, or run `cargo xtask down` and `up` again to pick free ports",
            member.label(),
            member.quic_port,
            member.metrics_port
        );
    }
    error.context(format!("starting {}", member.label()))
}

/// Creates the cluster network unless it exists; true when it was created.
pub fn ensure_network(sh: &Shell, prefix: &str) -> anyhow::Result<bool> {
    let name = docker::network_name(prefix);
    if docker::run(sh, &["network".into(), "inspect".into(), name.clone()]).is_ok() {
        return Ok(false);
    }
    docker::run(
        sh,
        &[
            "network".into(),
            "create".into(),
            format!("--label={CLUSTER_LABEL}={prefix}"),
            name,
        ],
    )?;
    Ok(true)
}

/// Creates the canonical's data volume unless it exists (creating is idempotent).
pub fn ensure_volume(sh: &Shell, prefix: &str) -> anyhow::Result<()> {
    docker::run(
        sh,
        &[
            "volume".into(),
            "create".into(),
            format!("--label={CLUSTER_LABEL}={prefix}"),
            docker::volume_name(prefix),
        ],
    )?;
    Ok(())
}

/// The last `count` lines a container wrote, to show why it stopped.
pub fn log_tail(sh: &Shell, name: &str, count: usize) -> String {
    let count = count.to_string();
    xshell::cmd!(sh, "docker logs --tail {count} {name}")
        .quiet()
        .ignore_status()
        .output()
        .map(|output| {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            text.trim_end().to_string()
        })
        .unwrap_or_default()
}
