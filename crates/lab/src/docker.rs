//! Talking to the Docker engine: is it there, which Flotilla containers exist (found by
//! label, never by name pattern), and the names of the cluster's network and volume.

use std::collections::HashSet;

use anyhow::Context;
use serde_json::Value;
use xshell::{cmd, Shell};

/// Image of the edge nodes (a fixed name: every cluster on this engine shares it).
pub const NODE_IMAGE: &str = "flotilla-node:dev";
/// Image of the canonical.
pub const CANONICAL_IMAGE: &str = "flotilla-canonical:dev";
/// Label holding a cluster's prefix, on containers, the network and the volume.
pub const CLUSTER_LABEL: &str = "flotilla.cluster";
/// Label holding the id `up` gave the cluster (in `state.json`), on containers, the network
/// and the volume: what tells two clusters of one prefix apart.
pub const ID_LABEL: &str = "flotilla.cluster-id";
/// Label holding the cluster folder of the checkout that started the cluster, so that a
/// refusal can say where the owner is.
pub const CHECKOUT_LABEL: &str = "flotilla.checkout";
/// Label holding `node` or `canonical`.
pub const ROLE_LABEL: &str = "flotilla.role";
/// Label holding the member index (0 for the canonical).
pub const INDEX_LABEL: &str = "flotilla.index";
/// Image label holding the SHA-256 of the Dockerfile and binary it was built from, so that
/// only what changed is rebuilt.
pub const BUILD_LABEL: &str = "flotilla.build-sha256";

/// The network every member of cluster `prefix` joins.
pub fn network_name(prefix: &str) -> String {
    format!("{prefix}_net")
}

/// The named volume holding the canonical's sample images.
pub fn volume_name(prefix: &str) -> String {
    format!("{prefix}_canonical_data")
}

/// The engine's version when one answers, else the reason in one line.
pub fn engine(sh: &Shell) -> Result<String, String> {
    let format = "{{.Server.Version}}";
    match cmd!(sh, "docker version --format {format}")
        .quiet()
        .ignore_status()
        .output()
    {
        Err(_) => Err("the `docker` command is not installed".to_string()),
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        }
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let reason = stderr
                .lines()
                .find(|line| !line.trim().is_empty())
                .unwrap_or("`docker version` failed");
            Err(reason.trim().to_string())
        }
    }
}

/// One Flotilla container as the engine reports it.
#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    /// 0 for the canonical, else the node index.
    pub index: u16,
    /// `created`, `running`, `paused`, `restarting`, `exited` or `dead`.
    pub status: String,
    /// Host process id of the container's PID 1 (0 when it is not running).
    pub pid: u32,
    pub exit_code: i64,
    /// Address on the cluster network, when running.
    pub ip: Option<String>,
    /// Image id the container was created from.
    pub image: String,
    /// Host ports it publishes (kept while it is stopped).
    pub host_ports: Vec<u16>,
    /// The id of the cluster it belongs to (absent on containers of older versions).
    pub cluster_id: Option<String>,
    /// The cluster folder of the checkout that started it.
    pub checkout: Option<String>,
}

impl Container {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// Containers of cluster `prefix`, or of every Flotilla cluster when `None`, by index.
pub fn containers(sh: &Shell, prefix: Option<&str>) -> anyhow::Result<Vec<Container>> {
    let filter = match prefix {
        Some(prefix) => format!("label={CLUSTER_LABEL}={prefix}"),
        None => format!("label={CLUSTER_LABEL}"),
    };
    let ids = cmd!(sh, "docker ps --all --quiet --no-trunc --filter {filter}")
        .quiet()
        .read()
        .context("listing containers (`docker ps`)")?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A container can vanish between `ps` and `inspect`; inspect still prints the others.
    let output = cmd!(sh, "docker inspect {ids...}")
        .quiet()
        .ignore_status()
        .output()
        .context("inspecting containers (`docker inspect`)")?;
    let values: Vec<Value> =
        serde_json::from_slice(&output.stdout).context("reading `docker inspect` output")?;
    let mut containers: Vec<Container> = values.iter().map(parse_container).collect();
    containers.sort_by_key(|c| c.index);
    Ok(containers)
}

/// The string at `pointer` in a `docker … inspect` value, empty when absent or not a string.
pub(crate) fn text_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn parse_container(value: &Value) -> Container {
    let text = |pointer: &str| text_at(value, pointer);
    let label = |name: &str| {
        value
            .pointer("/Config/Labels")
            .and_then(|labels| labels.get(name))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let index = label(INDEX_LABEL)
        .and_then(|index| index.parse().ok())
        .unwrap_or(u16::MAX);
    let ip = value
        .pointer("/NetworkSettings/Networks")
        .and_then(Value::as_object)
        .and_then(|networks| {
            networks
                .values()
                .filter_map(|network| network.get("IPAddress").and_then(Value::as_str))
                .find(|ip| !ip.is_empty())
        })
        .map(str::to_string);
    let host_ports = value
        .pointer("/HostConfig/PortBindings")
        .and_then(Value::as_object)
        .map(|bindings| {
            bindings
                .values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(|binding| binding.get("HostPort").and_then(Value::as_str))
                .filter_map(|port| port.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Container {
        name: text("/Name").trim_start_matches('/').to_string(),
        index,
        status: text("/State/Status"),
        pid: value
            .pointer("/State/Pid")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
        exit_code: value
            .pointer("/State/ExitCode")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        ip,
        image: text("/Image"),
        host_ports,
        cluster_id: label(ID_LABEL),
        checkout: label(CHECKOUT_LABEL),
    }
}

/// Whether something labelled with `checkout` (a `flotilla.checkout` label, absent on what
/// older versions made) was started from the cluster folder `cluster_dir`.
pub fn started_from(checkout: Option<&str>, cluster_dir: &std::path::Path) -> bool {
    checkout.is_none_or(|checkout| std::path::Path::new(checkout) == cluster_dir)
}

/// The checkout (cluster folder) that started cluster `prefix`'s containers, when it is not
/// the one at `cluster_dir`: a name another checkout uses.
pub fn owner_elsewhere(
    sh: &Shell,
    prefix: &str,
    cluster_dir: &std::path::Path,
) -> anyhow::Result<Option<String>> {
    Ok(containers(sh, Some(prefix))?
        .into_iter()
        .find(|c| !started_from(c.checkout.as_deref(), cluster_dir))
        .and_then(|c| c.checkout))
}

/// Host ports published by any Flotilla container, running or not.
pub fn reserved_ports(sh: &Shell) -> anyhow::Result<HashSet<u16>> {
    Ok(containers(sh, None)?
        .into_iter()
        .flat_map(|c| c.host_ports)
        .collect())
}

/// The id of a local image, if it exists.
pub fn image_id(sh: &Shell, image: &str) -> Option<String> {
    let format = "{{.Id}}";
    cmd!(sh, "docker image inspect --format {format} {image}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
}

/// A label of a local image, if the image exists and has it.
pub fn image_label(sh: &Shell, image: &str, label: &str) -> Option<String> {
    let format = format!("{{{{index .Config.Labels \"{label}\"}}}}");
    cmd!(sh, "docker image inspect --format {format} {image}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .filter(|value| !value.is_empty() && value != "<no value>")
}

/// Runs a docker command quietly; on failure the error is docker's own first line.
pub fn run(sh: &Shell, args: &[String]) -> anyhow::Result<String> {
    let output = cmd!(sh, "docker {args...}")
        .quiet()
        .ignore_status()
        .output()
        .context("running `docker`")?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("no message")
        .trim_start_matches("docker: ")
        .trim_start_matches("Error response from daemon: ")
        .to_string();
    anyhow::bail!(
        "`docker {}` failed: {reason}",
        args.first().map(String::as_str).unwrap_or("")
    )
}

/// A `--mount` value for a bind mount; the source is quoted as a CSV field so that any
/// folder name (commas, colons, quotes) survives Docker's parsing.
pub fn bind_mount(source: &std::path::Path, target: &str, read_only: bool) -> String {
    let source = source.display().to_string().replace('"', "\"\"");
    let mut mount = format!("type=bind,\"source={source}\",target={target}");
    if read_only {
        mount.push_str(",readonly");
    }
    mount
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_is_understood() {
        let value: Value = serde_json::from_str(
            r#"{"Name": "/demo_node_2", "Image": "sha256:abc",
                "State": {"Status": "running", "Pid": 42, "ExitCode": 0},
                "Config": {"Labels": {"flotilla.index": "2", "flotilla.cluster-id": "c0ffee", "flotilla.checkout": "/src/a/.cluster"}},
                "NetworkSettings": {"Networks": {"demo_net": {"IPAddress": "172.18.0.3"}}},
                "HostConfig": {"PortBindings": {"7000/udp": [{"HostIp": "127.0.0.1", "HostPort": "17002"}],
                                                "9100/tcp": [{"HostIp": "127.0.0.1", "HostPort": "19102"}]}}}"#,
        )
        .unwrap();
        let container = parse_container(&value);
        assert_eq!(container.name, "demo_node_2");
        assert_eq!(container.index, 2);
        assert!(container.is_running());
        assert_eq!(container.pid, 42);
        assert_eq!(container.cluster_id.as_deref(), Some("c0ffee"));
        assert_eq!(container.checkout.as_deref(), Some("/src/a/.cluster"));
        assert_eq!(container.ip.as_deref(), Some("172.18.0.3"));
        let mut ports = container.host_ports.clone();
        ports.sort();
        assert_eq!(ports, vec![17002, 19102]);
    }

    #[test]
    fn bind_mounts_quote_their_source() {
        assert_eq!(
            bind_mount(std::path::Path::new("/a,b/c\"d"), "/certs", true),
            "type=bind,\"source=/a,b/c\"\"d\",target=/certs,readonly"
        );
    }
}
