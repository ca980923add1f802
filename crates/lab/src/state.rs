//! What xtask remembers about the cluster it started: `.cluster/state.json` (runtime, options,
//! ports, process ids, an active partition) and the public `.cluster/cluster.toml` derived
//! from it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wire::cluster::{ClusterFile, Member, CLUSTER_FILE};
use wire::{NodeIndex, Role};

use crate::UsageError;
use chaos::partition::Cut;
use chaos::shape::Shaping;

/// Name of xtask's own record inside the cluster folder.
const STATE_FILE: &str = "state.json";

/// Where the cluster's processes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Scratch containers on a Docker engine.
    Docker,
    /// Local processes on 127.0.0.1.
    Process,
    /// One Docker Swarm service per member on an overlay network, on a swarm's machines.
    Swarm,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
            RuntimeKind::Swarm => "swarm",
        })
    }
}

/// The `up` options that shape every member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Folder of canonical images (`--images`); sample images when absent.
    pub images: Option<PathBuf>,
    /// Cache size per edge in MiB (`--cache-mb`); the node's default when absent.
    pub cache_mb: Option<u32>,
    /// Replication factor (`--replicas`); the node's default when absent.
    pub replicas: Option<u16>,
    /// The CPUs every member runs on (`--cpus`), as a list such as `0` or `0,2-3`; every CPU
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<CpuList>,
}

/// A set of CPU numbers, written as Linux and Docker write them (`0,2-3`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CpuList(Vec<usize>);

/// The highest CPU number `--cpus` accepts (the kernel's default `CONFIG_NR_CPUS` range).
const MAX_CPU: usize = 1023;

impl CpuList {
    /// The CPU numbers, ascending, without repeats.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }
}

impl std::str::FromStr for CpuList {
    type Err = String;

    fn from_str(text: &str) -> Result<CpuList, String> {
        let bad = || format!("`{text}` is not a CPU list such as 0 or 0,2-3");
        let number = |part: &str| part.trim().parse::<usize>().map_err(|_| bad());
        let mut cpus = std::collections::BTreeSet::new();
        for part in text.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => (number(part)?, number(part)?),
            };
            if first > last || last > MAX_CPU {
                return Err(bad());
            }
            cpus.extend(first..=last);
        }
        Ok(CpuList(cpus.into_iter().collect()))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for &cpu in &self.0 {
            match ranges.last_mut() {
                Some((_, last)) if *last + 1 == cpu => *last = cpu,
                _ => ranges.push((cpu, cpu)),
            }
        }
        let parts: Vec<String> = ranges
            .into_iter()
            .map(|(first, last)| match first == last {
                true => first.to_string(),
                false => format!("{first}-{last}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl TryFrom<String> for CpuList {
    type Error = String;
    fn try_from(text: String) -> Result<CpuList, String> {
        text.parse()
    }
}

impl From<CpuList> for String {
    fn from(list: CpuList) -> String {
        list.to_string()
    }
}

/// One member: the canonical (index 0) or an edge (index 1..=N).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub index: u16,
    pub name: String,
    /// Host UDP port of the member's QUIC endpoint.
    pub quic_port: u16,
    /// Host TCP port of the member's metrics endpoint.
    pub metrics_port: u16,
    /// Process id on the process runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// QUIC address on the container network (Docker runtime), as last seen running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Address of the machine whose published ports reach the member, when it is not this
    /// one (a swarm task on another machine); 127.0.0.1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl MemberState {
    /// The role named by this member's certificate.
    pub fn role(&self) -> Role {
        role_of_index(self.index)
    }

    /// `node 3` or `the canonical`, for messages.
    pub fn label(&self) -> String {
        match self.index {
            0 => format!("the canonical ({})", self.name),
            index => format!("node {index} ({})", self.name),
        }
    }

    pub fn is_canonical(&self) -> bool {
        self.index == 0
    }

    /// The member's metrics URL, on the machine that runs it.
    pub fn metrics_url(&self) -> String {
        let host = self.host.as_deref().unwrap_or("127.0.0.1");
        format!("http://{host}:{}/metrics", self.metrics_port)
    }
}

/// xtask's record of the running cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub prefix: String,
    /// Made at `up`, unique to this cluster: the runtime marks what it creates with it and
    /// acts only on what carries it. Absent in states of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    pub runtime: RuntimeKind,
    pub options: Options,
    /// The canonical first, then nodes 1..=N in order.
    pub members: Vec<MemberState>,
    /// Groups of node indices cut off from each other by `partition`, until `heal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Vec<Vec<u16>>>,
    /// The partition cuts only the first group's packets to the second (`--one-way`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partition_one_way: bool,
    /// Pairs of nodes cut from each other both ways (partition presets such as
    /// `majorities-ring`), until `heal`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_pairs: Vec<[u16; 2]>,
    /// Delay and loss on members' egress, by member index, until `netem I --clear`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netem: BTreeMap<u16, Shaping>,
    /// What `up` did and chose on a swarm (swarm runtime only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmChoices>,
}

/// The swarm runtime's `up` choices, kept for `restart` and `down`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmChoices {
    /// `up --init` made this engine a single-node swarm: `down` makes it leave again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initialised: bool,
    /// That swarm made the engine's `docker_gwbridge` network: `down` removes it too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gateway_bridge: bool,
    /// The registry (`HOST:PORT`) the images were pushed to and every machine pulls from;
    /// the local images when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Swarm starts a member again when it fails (`--restart on-failure`); never by default,
    /// so that a kill stays a kill.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart_on_failure: bool,
}

impl State {
    /// Reads the state in `dir`; `None` when no cluster was started from here.
    pub fn load(dir: &Path) -> anyhow::Result<Option<State>> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged; remove it", path.display()))?;
        Ok(Some(state))
    }

    /// Reads the state or fails with the usual hint.
    pub fn require(dir: &Path) -> anyhow::Result<State> {
        State::load(dir)?.ok_or_else(|| {
            anyhow::anyhow!(
                "no cluster started from here (no {}); start one with `cargo xtask up 3`",
                dir.join(STATE_FILE).display()
            )
        })
    }

    /// Writes `state.json` and the public `cluster.toml`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).context("encoding the cluster state")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        self.cluster_file()
            .save(dir)
            .with_context(|| format!("writing {}", dir.join(CLUSTER_FILE).display()))
    }

    /// Removes `state.json` and `cluster.toml`.
    pub fn remove(dir: &Path) -> anyhow::Result<()> {
        for name in [STATE_FILE, CLUSTER_FILE] {
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The partition in force, if any.
    pub fn cut(&self) -> Option<Cut> {
        if self.partition.is_none() && self.partition_pairs.is_empty() {
            return None;
        }
        Some(Cut {
            groups: self.partition.clone().unwrap_or_default(),
            one_way: self.partition_one_way,
            pairs: self.partition_pairs.clone(),
        })
    }

    /// Records the partition in force (`None` after `heal`).
    pub fn set_cut(&mut self, cut: Option<Cut>) {
        self.partition_one_way = cut.as_ref().is_some_and(|cut| cut.one_way);
        self.partition_pairs = cut
            .as_ref()
            .map(|cut| cut.pairs.clone())
            .unwrap_or_default();
        self.partition = cut
            .map(|cut| cut.groups)
            .filter(|groups| !groups.is_empty());
    }

    /// Number of edge nodes.
    pub fn node_count(&self) -> u16 {
        self.members.iter().filter(|m| !m.is_canonical()).count() as u16
    }

    pub fn nodes(&self) -> impl Iterator<Item = &MemberState> {
        self.members.iter().filter(|m| !m.is_canonical())
    }

    pub fn canonical(&self) -> &MemberState {
        // `up` always records the canonical first.
        &self.members[0]
    }

    /// The member `target` names, or a usage error naming the valid choices.
    pub fn member(&self, target: Target) -> anyhow::Result<&MemberState> {
        let index = target.index();
        self.members
            .iter()
            .find(|m| m.index == index)
            .ok_or_else(|| {
                UsageError(format!(
                    "there is no node {index}: cluster `{}` has nodes 1 to {}",
                    self.prefix,
                    self.node_count()
                ))
                .into()
            })
    }

    /// Member `index` (0 = the canonical); an error when the cluster has none.
    pub fn member_by_index(&self, index: u16) -> anyhow::Result<&MemberState> {
        self.members
            .iter()
            .find(|m| m.index == index)
            .ok_or_else(|| anyhow::anyhow!("cluster `{}` has no member {index}", self.prefix))
    }

    pub fn member_mut(&mut self, index: u16) -> Option<&mut MemberState> {
        self.members.iter_mut().find(|m| m.index == index)
    }

    /// The public description the client reads.
    /// Records each member's bridge address as `addresses` gives it (by member index); a
    /// member missing from it has none.
    pub fn set_bridges(&mut self, addresses: &BTreeMap<u16, String>) {
        for member in &mut self.members {
            member.bridge = addresses.get(&member.index).cloned();
        }
    }

    /// Records the machine address of each member as `addresses` gives it (by member
    /// index); a member missing from it is reached on this machine.
    pub fn set_hosts(&mut self, addresses: &BTreeMap<u16, String>) {
        for member in &mut self.members {
            member.host = addresses.get(&member.index).cloned();
        }
    }

    pub fn cluster_file(&self) -> ClusterFile {
        let member = |m: &MemberState| {
            let host = m.host.as_deref().unwrap_or("127.0.0.1");
            Member {
                name: m.name.clone(),
                index: m.index,
                quic: format!("{host}:{}", m.quic_port),
                bridge: m.bridge.clone(),
                metrics: m.metrics_url(),
            }
        };
        ClusterFile {
            prefix: self.prefix.clone(),
            runtime: self.runtime.to_string(),
            canonical: member(self.canonical()),
            nodes: self.nodes().map(member).collect(),
        }
    }
}

/// A fresh cluster id: 64 bits from the kernel's random source, in hex.
pub fn new_cluster_id() -> String {
    let mut bytes = [0u8; 8];
    // /dev/urandom never blocks once the system has booted; the clock is a fallback that
    // still tells two clusters apart in practice.
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut bytes));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id())).to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The metrics URL of a member on the host.
pub fn metrics_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/metrics")
}

/// `{prefix}_canonical` for index 0, else `{prefix}_node_{index}`.
pub fn member_name(prefix: &str, index: u16) -> String {
    match index {
        0 => format!("{prefix}_canonical"),
        index => format!("{prefix}_node_{index}"),
    }
}

/// The certificate role of member `index`.
pub fn role_of_index(index: u16) -> Role {
    match index {
        0 => Role::Canonical,
        index => Role::Node(NodeIndex(index)),
    }
}

/// A member named on the command line: a node index or `canonical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Canonical,
    Node(NodeIndex),
}

impl Target {
    pub fn index(self) -> u16 {
        match self {
            Target::Canonical => 0,
            Target::Node(NodeIndex(index)) => index,
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "canonical" {
            return Ok(Target::Canonical);
        }
        text.parse::<NodeIndex>()
            .map(Target::Node)
            .map_err(|_| format!("`{text}` is neither a node index (1, 2, ...) nor `canonical`"))
    }
}

/// What `logs` reads: one member or all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTarget {
    All,
    One(Target),
}

impl FromStr for LogTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "all" => Ok(LogTarget::All),
            _ => text.parse().map(LogTarget::One).map_err(|_| {
                format!("`{text}` is not a node index (1, 2, ...), `canonical` or `all`")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_print_as_docker_writes_them() {
        let list: CpuList = "3, 0-1,1".parse().unwrap();
        assert_eq!(list.cpus(), &[0, 1, 3]);
        assert_eq!(list.to_string(), "0-1,3");
        for bad in ["", "a", "2-1", "1-", "-1", "0,,1", "5000"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad:?} was accepted");
        }
        let options = Options {
            cpus: Some("0".parse().unwrap()),
            ..Options::default()
        };
        let text = serde_json::to_string(&options).unwrap();
        assert!(text.contains(r#""cpus":"0""#), "{text}");
        assert_eq!(serde_json::from_str::<Options>(&text).unwrap(), options);
        assert!(serde_json::from_str::<Options>(
            r#"{"images":null,"cache_mb":null,"replicas":null,"cpus":"x"}"#
        )
        .is_err());
    }

    #[test]
    fn targets_parse() {
        assert_eq!("canonical".parse(), Ok(Target::Canonical));
        assert_eq!("3".parse(), Ok(Target::Node(NodeIndex(3))));
        assert!("0".parse::<Target>().is_err());
        assert!("x".parse::<Target>().is_err());
        assert_eq!("all".parse(), Ok(LogTarget::All));
        assert_eq!("2".parse(), Ok(LogTarget::One(Target::Node(NodeIndex(2)))));
    }

    #[test]
    fn a_state_from_before_one_way_cuts_and_netem_still_loads() {
        let old = r#"{"prefix": "demo", "runtime": "docker", "options": {"images": null, "cache_mb": null, "replicas": null},
                      "members": [{"index": 0, "name": "demo_canonical", "quic_port": 17000, "metrics_port": 19100}],
                      "partition": [[1, 2], [3]]}"#;
        let state: State = serde_json::from_str(old).unwrap();
        assert!(!state.partition_one_way);
        assert!(state.netem.is_empty());
        assert_eq!(state.cluster_id, None);
        let written = serde_json::to_string(&state).unwrap();
        assert!(
            !written.contains("netem") && !written.contains("one_way"),
            "{written}"
        );
    }

    #[test]
    fn state_round_trips_and_describes_the_cluster() {
        let dir = std::env::temp_dir().join(format!("xtask-state-{}", std::process::id()));
        let state = State {
            prefix: "demo".to_string(),
            cluster_id: Some(new_cluster_id()),
            runtime: RuntimeKind::Docker,
            options: Options::default(),
            members: (0..=2)
                .map(|index| MemberState {
                    index,
                    name: member_name("demo", index),
                    quic_port: 17000 + index,
                    metrics_port: 19100 + index,
                    pid: None,
                    bridge: None,
                    host: None,
                })
                .collect(),
            partition: Some(vec![vec![1], vec![2]]),
            partition_one_way: true,
            partition_pairs: Vec::new(),
            netem: [(
                2,
                Shaping {
                    shape: chaos::shape::Shape {
                        delay_us: 150_000,
                        jitter_us: 0,
                        loss_ppm: 0,
                    },
                    worker: Some(42),
                    socket: false,
                },
            )]
            .into(),
            swarm: None,
        };
        state.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), Some(state.clone()));
        let file = ClusterFile::load(&dir).unwrap();
        assert_eq!(file.canonical.name, "demo_canonical");
        assert_eq!(file.nodes[1].quic, "127.0.0.1:17002");
        assert_eq!(file.nodes[1].metrics, "http://127.0.0.1:19102/metrics");
        State::remove(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
