//! Talking to a Docker Swarm manager: is this engine one (or can it become one), which
//! services, tasks and machines there are, and the names of what a cluster makes on a swarm.
//! The swarm runtime ([`crate::runtime::SwarmRuntime`]) builds on these.

use std::collections::BTreeMap;

use anyhow::Context;
use serde_json::Value;
use xshell::{cmd, Shell};

use crate::docker;

/// What this engine is in its swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub local_state: String,
    /// This engine manages the swarm (it can create services).
    pub manager: bool,
    /// This engine's node id in the swarm (empty when inactive).
    pub node_id: String,
}

impl Membership {
    pub fn is_active(&self) -> bool {
        self.local_state == "active"
    }
}

/// This engine's swarm membership.
pub fn membership(sh: &Shell) -> anyhow::Result<Membership> {
    let format = "{{.Swarm.LocalNodeState}}|{{.Swarm.ControlAvailable}}|{{.Swarm.NodeID}}";
    let line = cmd!(sh, "docker info --format {format}")
        .quiet()
        .read()
        .context("asking the Docker engine about its swarm (`docker info`)")?;
    let mut fields = line.trim().split('|');
    Ok(Membership {
        local_state: fields.next().unwrap_or_default().to_string(),
        manager: fields.next() == Some("true"),
        node_id: fields.next().unwrap_or_default().to_string(),
    })
}

/// The bridge network a swarm engine gives its tasks for their host-mode ports; `swarm
/// init` makes it and `swarm leave` keeps it.
pub const GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// What `ensure_manager` did to the engine, for `down` to undo.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Initialised {
    /// It made a single-node swarm.
    pub swarm: bool,
    /// The swarm made the engine's [`GATEWAY_BRIDGE`] network (none was there before).
    pub gateway_bridge: bool,
}

/// Makes sure this engine is a swarm manager; with `init`, makes an inactive engine a
/// single-node swarm. Says what it made (so `down` can undo it).
pub fn ensure_manager(sh: &Shell, init: bool) -> anyhow::Result<Initialised> {
    let membership = membership(sh)?;
    if membership.manager {
        return Ok(Initialised::default());
    }
    if membership.is_active() {
        anyhow::bail!(
            "this Docker engine is a swarm worker, not a manager; run `cargo xtask up` on a manager (`docker node ls` there lists the machines)"
        );
    }
    if !init {
        anyhow::bail!(
            "this Docker engine is not a swarm manager; make it one with `docker swarm init` (or pass `--init` for a single-node swarm that `down` leaves again)"
        );
    }
    let bridge_before = network_exists(sh, GATEWAY_BRIDGE);
    docker::run(sh, &["swarm".into(), "init".into()]).map_err(|error| {
        anyhow::anyhow!(
            "{error}; run `docker swarm init --advertise-addr ADDRESS` yourself, then `up` without `--init`"
        )
    })?;
    Ok(Initialised {
        swarm: true,
        gateway_bridge: !bridge_before,
    })
}

/// Whether this engine has a network called `name`.
pub fn network_exists(sh: &Shell, name: &str) -> bool {
    docker::run(sh, &["network".into(), "inspect".into(), name.into()]).is_ok()
}

/// Leaves the swarm this engine belongs to (the single-node swarm `up --init` made), and
/// removes the swarm's gateway bridge when `gateway_bridge` says the swarm made it.
pub fn leave(sh: &Shell, gateway_bridge: bool) -> anyhow::Result<()> {
    docker::run(sh, &["swarm".into(), "leave".into(), "--force".into()])?;
    if gateway_bridge && network_exists(sh, GATEWAY_BRIDGE) {
        docker::run(sh, &["network".into(), "rm".into(), GATEWAY_BRIDGE.into()])?;
    }
    Ok(())
}

/// Tags the local images for `registry` (`HOST:PORT`) and pushes them there, so that every
/// machine of the swarm can pull them.
pub fn push_images(sh: &Shell, registry: &str) -> anyhow::Result<()> {
    for image in [docker::NODE_IMAGE, docker::CANONICAL_IMAGE] {
        let remote = format!("{registry}/{image}");
        docker::run(sh, &["tag".into(), image.into(), remote.clone()])?;
        docker::run(sh, &["push".into(), remote.clone()]).map_err(|error| {
            // The tag made for the push is of no use now.
            let _ = docker::run(sh, &["image".into(), "rm".into(), remote.clone()]);
            anyhow::anyhow!(
                "the registry {registry} did not take {image} ({error}); check that it runs and that this engine may push to it (`insecure-registries` in daemon.json for plain HTTP)"
            )
        })?;
        eprintln!("pushed {remote}");
    }
    Ok(())
}

/// The secret holding `member`'s private key.
pub fn key_secret_name(member: &str) -> String {
    format!("{member}_key")
}

/// The config holding `member`'s certificate.
pub fn cert_config_name(member: &str) -> String {
    format!("{member}_cert")
}

/// The config holding the cluster CA's certificate (every member's trust anchor).
pub fn ca_config_name(prefix: &str) -> String {
    format!("{prefix}_ca")
}

/// One service as the manager reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub id: String,
    pub name: String,
    /// The service's labels (Flotilla's, or a stack's `com.docker.stack.namespace`).
    pub labels: BTreeMap<String, String>,
    /// Host ports the service publishes.
    pub published: Vec<u16>,
}

/// Every service of this swarm (one `docker service ls` and one `inspect`).
pub fn services(sh: &Shell) -> anyhow::Result<Vec<Service>> {
    let ids = cmd!(sh, "docker service ls --quiet")
        .quiet()
        .read()
        .context("listing services (`docker service ls`)")?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A service can go between `ls` and `inspect`; inspect still prints the others.
    let output = cmd!(sh, "docker service inspect {ids...}")
        .quiet()
        .ignore_status()
        .output()
        .context("inspecting services (`docker service inspect`)")?;
    let values: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
    Ok(values.iter().map(parse_service).collect())
}

fn parse_service(value: &Value) -> Service {
    let text = |pointer: &str| docker::text_at(value, pointer);
    let labels = value
        .pointer("/Spec/Labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let published = value
        .pointer("/Spec/EndpointSpec/Ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|port| port.get("PublishedPort").and_then(Value::as_u64))
                .filter_map(|port| u16::try_from(port).ok())
                .collect()
        })
        .unwrap_or_default();
    Service {
        id: text("/ID"),
        name: text("/Spec/Name"),
        labels,
        published,
    }
}

/// One task (a service's container, past or present) as the manager reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub service_id: String,
    /// `new`, `pending`, `assigned`, `accepted`, `preparing`, `starting`, `running`,
    /// `complete`, `failed`, `shutdown`, `rejected`, `orphaned` or `remove`.
    pub state: String,
    /// Why it failed or waits, in the engine's words.
    pub message: String,
    /// The swarm node (machine) it was given to; empty while pending.
    pub node_id: String,
    /// Its container id once the machine made one.
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    /// When the task last changed state (RFC 3339).
    pub changed_at: String,
    /// Raft index of its latest change: the newest task of a service has the highest.
    pub version: u64,
    /// Its addresses by network name, without the prefix length.
    pub addresses: BTreeMap<String, String>,
}

impl Task {
    /// Still on its way to running.
    pub fn is_starting(&self) -> bool {
        matches!(
            self.state.as_str(),
            "new" | "pending" | "assigned" | "accepted" | "preparing" | "ready" | "starting"
        )
    }
}

/// Every task of the services `names` (history included).
pub fn tasks(sh: &Shell, names: &[String]) -> anyhow::Result<Vec<Task>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let listed = cmd!(sh, "docker service ps --quiet --no-trunc {names...}")
        .quiet()
        .ignore_stderr()
        .ignore_status()
        .read()
        .unwrap_or_default();
    let ids: Vec<&str> = listed.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let output = cmd!(sh, "docker inspect --type task {ids...}")
        .quiet()
        .ignore_status()
        .output()
        .context("inspecting tasks (`docker inspect --type task`)")?;
    let values: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
    Ok(values.iter().map(parse_task).collect())
}

fn parse_task(value: &Value) -> Task {
    let text = |pointer: &str| docker::text_at(value, pointer);
    let addresses = value
        .pointer("/NetworksAttachments")
        .and_then(Value::as_array)
        .map(|attachments| {
            attachments
                .iter()
                .filter_map(|attachment| {
                    let name = attachment.pointer("/Network/Spec/Name")?.as_str()?;
                    let address = attachment.pointer("/Addresses/0")?.as_str()?;
                    let address = address.split('/').next().unwrap_or(address);
                    Some((name.to_string(), address.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    let message = match text("/Status/Err") {
        error if !error.is_empty() => error,
        _ => text("/Status/Message"),
    };
    Task {
        id: text("/ID"),
        service_id: text("/ServiceID"),
        state: text("/Status/State"),
        message,
        node_id: text("/NodeID"),
        container_id: Some(text("/Status/ContainerStatus/ContainerID")).filter(|id| !id.is_empty()),
        exit_code: value
            .pointer("/Status/ContainerStatus/ExitCode")
            .and_then(Value::as_i64),
        changed_at: text("/Status/Timestamp"),
        version: value
            .pointer("/Version/Index")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        addresses,
    }
}

/// One machine of the swarm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub id: String,
    pub hostname: String,
    /// The address the swarm reaches it at (where its host-mode ports are published).
    pub address: String,
}

/// The swarm's machines by node id.
pub fn machines(sh: &Shell) -> anyhow::Result<BTreeMap<String, Machine>> {
    let ids = cmd!(sh, "docker node ls --quiet")
        .quiet()
        .read()
        .context("listing the swarm's machines (`docker node ls`)")?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let output = cmd!(sh, "docker node inspect {ids...}")
        .quiet()
        .ignore_status()
        .output()
        .context("inspecting the swarm's machines (`docker node inspect`)")?;
    let values: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_default();
    Ok(values
        .iter()
        .map(|value| {
            let text = |pointer: &str| docker::text_at(value, pointer);
            let machine = Machine {
                id: text("/ID"),
                hostname: text("/Description/Hostname"),
                address: text("/Status/Addr"),
            };
            (machine.id.clone(), machine)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_inspect_output_is_understood() {
        let value: Value = serde_json::from_str(
            r#"{"ID": "t1", "ServiceID": "s1", "NodeID": "n1", "Version": {"Index": 42},
                "Status": {"Timestamp": "2026-12-04T20:00:00.1Z", "State": "failed",
                           "Message": "started", "Err": "task: non-zero exit (137)",
                           "ContainerStatus": {"ContainerID": "c1", "PID": 0, "ExitCode": 137}},
                "NetworksAttachments": [
                    {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.5/24"]},
                    {"Network": {"Spec": {"Name": "demo_net"}}, "Addresses": ["10.0.1.3/24"]}]}"#,
        )
        .unwrap();
        let task = parse_task(&value);
        assert_eq!(task.state, "failed");
        assert_eq!(task.message, "task: non-zero exit (137)");
        assert_eq!(task.container_id.as_deref(), Some("c1"));
        assert_eq!(task.exit_code, Some(137));
        assert_eq!(task.version, 42);
        assert_eq!(
            task.addresses.get("demo_net").map(String::as_str),
            Some("10.0.1.3")
        );
        assert!(!task.is_starting());
    }

    #[test]
    fn service_inspect_output_is_understood() {
        let value: Value = serde_json::from_str(
            r#"{"ID": "s1", "Spec": {"Name": "demo_node_1",
                 "Labels": {"com.docker.stack.namespace": "demo"},
                 "EndpointSpec": {"Mode": "dnsrr", "Ports": [
                    {"Protocol": "udp", "TargetPort": 7000, "PublishedPort": 17001, "PublishMode": "host"},
                    {"Protocol": "tcp", "TargetPort": 9100, "PublishedPort": 19101, "PublishMode": "host"}]}}}"#,
        )
        .unwrap();
        let service = parse_service(&value);
        assert_eq!(service.name, "demo_node_1");
        assert_eq!(service.published, vec![17001, 19101]);
        assert_eq!(
            service
                .labels
                .get("com.docker.stack.namespace")
                .map(String::as_str),
            Some("demo")
        );
    }
}
