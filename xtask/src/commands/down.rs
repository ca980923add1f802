//! `cargo xtask down`: stop and remove the cluster's containers and network (found by label)
//! or its processes (by recorded pid), and the cluster description. The CA, the process
//! runtime's logs and the canonical's data stay unless `--volumes` is given for the data.

use std::fs;

use anyhow::Context;
use xshell::Shell;

use crate::certs;
use crate::docker::{self, CLUSTER_LABEL};
use crate::netem;
use crate::process::{self, Binaries, ProcessStatus};
use crate::project::{parse_prefix, Project};
use crate::release;
use crate::state::{Runtime, State};

/// Stop the cluster and remove what `up` made.
#[derive(Debug, clap::Args)]
pub struct Down {
    /// Also remove the canonical's sample images (the Docker volume or `.cluster/data`).
    #[arg(long)]
    volumes: bool,
    /// Cluster to remove [default: the one started from here, else the repository folder's name].
    #[arg(long = "name", value_name = "PREFIX", value_parser = parse_prefix)]
    prefix: Option<String>,
}

impl Down {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let state = State::load(&project.cluster_dir)?;
        let prefix = self
            .prefix
            .clone()
            .or_else(|| state.as_ref().map(|s| s.prefix.clone()))
            .unwrap_or_else(|| project.default_prefix());
        let mut removed = Vec::new();
        if let Some(state) = state.as_ref().filter(|s| s.prefix == prefix) {
            if state.runtime == Runtime::Process {
                let binaries = Binaries::locate(&project);
                let mut stopped = 0;
                for member in &state.members {
                    if process::status(&binaries, member) != ProcessStatus::Gone {
                        process::stop(sh, &binaries, member)?;
                        stopped += 1;
                    }
                }
                if stopped > 0 {
                    removed.push(format!("stopped {stopped} processes"));
                }
            }
        }
        // Containers are found by label whatever the state says, so nothing is left behind.
        let engine = docker::engine(sh);
        if let (Err(reason), Some(Runtime::Docker)) = (&engine, state.as_ref().map(|s| s.runtime)) {
            anyhow::bail!(
                "no Docker engine answered ({reason}), so cluster `{prefix}`'s containers cannot be removed; start Docker and run `cargo xtask down` again"
            );
        }
        if let Some(state) = state.as_ref().filter(|s| s.prefix == prefix) {
            // They would exit by themselves once their containers are gone.
            netem::stop_workers(state);
        }
        if engine.is_ok() {
            removed.extend(self.remove_docker_objects(sh, &prefix)?);
            // Images replaced while these containers ran are unused now.
            release::prune_images(sh);
        }
        if self.volumes {
            let data = project.canonical_data_dir();
            if data.is_dir() {
                fs::remove_dir_all(&data)
                    .with_context(|| format!("removing {}", data.display()))?;
                removed.push(format!("removed {}", data.display()));
            }
        }
        if state.as_ref().is_some_and(|s| s.prefix == prefix) {
            State::remove(&project.cluster_dir)?;
            certs::remove_credentials(&project)?;
        }
        if removed.is_empty() {
            println!("nothing of cluster `{prefix}` was running");
        } else {
            println!("cluster `{prefix}` is down: {}", removed.join(", "));
        }
        Ok(())
    }

    fn remove_docker_objects(&self, sh: &Shell, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        let names: Vec<String> = docker::containers(sh, Some(prefix))?
            .into_iter()
            .map(|c| c.name)
            .collect();
        if !names.is_empty() {
            let mut args = vec!["rm".into(), "--force".into(), "--volumes".into()];
            args.extend(names.iter().cloned());
            docker::run(sh, &args)?;
            removed.push(format!("removed {} containers", names.len()));
        }
        let filter = format!("--filter=label={CLUSTER_LABEL}={prefix}");
        let mut kinds = vec!["network"];
        if self.volumes {
            kinds.push("volume");
        }
        for kind in kinds {
            let listed = docker::run(
                sh,
                &[kind.into(), "ls".into(), "--quiet".into(), filter.clone()],
            )?;
            let ids: Vec<String> = listed.split_whitespace().map(str::to_string).collect();
            if ids.is_empty() {
                continue;
            }
            let mut args = vec![kind.to_string(), "rm".to_string()];
            args.extend(ids);
            docker::run(sh, &args)?;
            removed.push(match kind {
                "network" => format!("removed network {}", docker::network_name(prefix)),
                _ => format!("removed volume {}", docker::volume_name(prefix)),
            });
        }
        Ok(removed)
    }
}
