//! `cargo xtask kill I`: SIGKILL a node (or `canonical`), as a crash would. `restart` brings
//! it back.

use xshell::Shell;

use crate::docker;
use crate::process::{self, Binaries, ProcessStatus};
use crate::project::Project;
use crate::state::{Runtime, State, Target};

/// Kill node I (or `canonical`) with SIGKILL.
#[derive(Debug, clap::Args)]
pub struct Kill {
    /// Node index, or `canonical`.
    target: Target,
}

impl Kill {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let state = State::require(&project.cluster_dir)?;
        let member = state.member(self.target)?;
        let not_running = || anyhow::anyhow!("{} is not running", member.label());
        match state.runtime {
            Runtime::Docker => {
                let running = docker::containers(sh, Some(&state.prefix))?
                    .iter()
                    .any(|c| c.index == member.index && (c.is_running() || c.status == "paused"));
                if !running {
                    return Err(not_running());
                }
                docker::run(sh, &["kill".into(), member.name.clone()])?;
            }
            Runtime::Process => {
                let binaries = Binaries::locate(&project);
                if process::status(&binaries, member) == ProcessStatus::Gone {
                    return Err(not_running());
                }
                process::signal(sh, member, "KILL")?;
            }
        }
        println!(
            "killed {}; bring it back with `cargo xtask restart {}`",
            member.label(),
            target_word(self.target)
        );
        Ok(())
    }
}

/// How a target is typed on the command line.
pub fn target_word(target: Target) -> String {
    match target {
        Target::Canonical => "canonical".to_string(),
        Target::Node(index) => index.to_string(),
    }
}
