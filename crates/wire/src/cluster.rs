//! `.cluster/cluster.toml`: what `cargo xtask up` started and where to reach it from the host.
//! xtask writes it; the client and tests read it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the cluster description folder at the repository root.
pub const CLUSTER_DIR: &str = ".cluster";
/// Name of the description file inside [`CLUSTER_DIR`].
pub const CLUSTER_FILE: &str = "cluster.toml";
/// Environment variable that overrides where the cluster folder is.
pub const CLUSTER_ENV: &str = "FLOTILLA_CLUSTER";

/// A failure to find or read the cluster description.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no running cluster found (no {CLUSTER_DIR}/{CLUSTER_FILE} here or above); start one with `cargo xtask up 3`")]
    NotFound,
    #[error("no running cluster in {dir} (no {CLUSTER_FILE} there; the folder came from --cluster or ${CLUSTER_ENV}); start one with `cargo xtask up 3` given the same folder")]
    NotIn { dir: String },
    #[error("reading {path}: {detail}")]
    Read { path: String, detail: String },
}

/// One process of the cluster as seen from the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Container or process name, e.g. `flotilla_node_2`.
    pub name: String,
    /// Edge index (1..=N); 0 for the canonical.
    pub index: u16,
    /// QUIC address reachable from the host (`127.0.0.1:port`).
    pub quic: String,
    /// QUIC address on the Docker bridge network (`172.18.0.3:7000`): on Linux the host
    /// reaches it directly, without docker-proxy on the published port. The client prefers it
    /// when it answers a short probe and falls back to `quic` (e.g. on Docker Desktop).
    /// Certificates are checked by name, so this address may change freely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Prometheus metrics URL reachable from the host.
    pub metrics: String,
}

/// The whole cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Name prefix of every container, network and volume.
    pub prefix: String,
    /// `docker` or `process`.
    pub runtime: String,
    pub canonical: Member,
    pub nodes: Vec<Member>,
}

impl ClusterFile {
    /// Reads `dir/cluster.toml`.
    pub fn load(dir: &Path) -> Result<ClusterFile, ClusterError> {
        let path = dir.join(CLUSTER_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ClusterError::NotIn {
                dir: dir.display().to_string(),
            },
            _ => ClusterError::Read {
                path: path.display().to_string(),
                detail: e.to_string(),
            },
        })?;
        ClusterFile::parse(&text).map_err(|detail| ClusterError::Read {
            path: path.display().to_string(),
            detail,
        })
    }

    /// Parses the text of a `cluster.toml`; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<ClusterFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The text of this description, as [`ClusterFile::save`] writes it.
    pub fn to_text(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }

    /// Writes `dir/cluster.toml`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text = self.to_text().map_err(std::io::Error::other)?;
        std::fs::write(dir.join(CLUSTER_FILE), text)
    }
}

/// Finds the cluster folder: `explicit`, else `$FLOTILLA_CLUSTER`, else the nearest
/// `.cluster/` holding a `cluster.toml` in the current folder or one of its parents.
pub fn find_dir(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(dir) = explicit {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = std::env::var_os(CLUSTER_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let mut here = std::env::current_dir().map_err(|_| ClusterError::NotFound)?;
    loop {
        let candidate = here.join(CLUSTER_DIR);
        if candidate.join(CLUSTER_FILE).is_file() {
            return Ok(candidate);
        }
        if !here.pop() {
            return Err(ClusterError::NotFound);
        }
    }
}
