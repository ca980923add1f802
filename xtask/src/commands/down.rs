//! `cargo xtask down`: stop and remove the cluster's members (containers found by label,
//! processes by recorded pid, swarm services by label), what was made around them, and the
//! cluster description. The
//! CA and the process runtime's logs stay; the canonical's sample images go with `--volumes`.

use lab::project::{parse_prefix, Project};
use lab::runtime::{DockerRuntime, ProcessRuntime, Runtime, SwarmRuntime};
use lab::state::{RuntimeKind, State};
use lab::{certs, docker, faults};
use xshell::Shell;

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
    /// `down` of the cluster started from here, keeping its images.
    pub fn new() -> Down {
        Down {
            volumes: false,
            prefix: None,
        }
    }

    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let state = State::load(&project.cluster_dir)?;
        let prefix = self
            .prefix
            .clone()
            .or_else(|| state.as_ref().map(|s| s.prefix.clone()))
            .unwrap_or_else(|| project.default_prefix());
        let recorded = state.as_ref().filter(|s| s.prefix == prefix);
        let engine = docker::engine(sh);
        if let (Err(reason), Some(RuntimeKind::Docker | RuntimeKind::Swarm)) =
            (&engine, recorded.map(|s| s.runtime))
        {
            anyhow::bail!(
                "no Docker engine answered ({reason}), so cluster `{prefix}`'s containers cannot be removed; start Docker and run `cargo xtask down` again"
            );
        }
        if let Some(state) = recorded {
            // They would exit by themselves once their members are gone.
            faults::stop_delayers(state);
        }
        // Each runtime removes what this checkout started under that prefix: recorded
        // processes, and containers, network and volume carrying this cluster's id (or, with
        // no state here, this checkout's folder), so another checkout's cluster of the same
        // prefix is never touched. The process runtime's sample folder goes with --volumes
        // whatever runtime the cluster used.
        let mut runtimes: Vec<Box<dyn Runtime>> =
            vec![Box::new(ProcessRuntime::new(project.clone()))];
        if engine.is_ok() {
            runtimes.push(Box::new(DockerRuntime::new(project.clone())));
            // Services, network, secrets and configs on a swarm this engine manages (and the
            // swarm itself when `up --init` made it).
            runtimes.push(Box::new(SwarmRuntime::new(project.clone())));
        }
        let mut removed = Vec::new();
        for runtime in runtimes {
            removed.extend(runtime.remove(sh, &prefix, recorded, self.volumes)?);
        }
        if recorded.is_some() {
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
}
