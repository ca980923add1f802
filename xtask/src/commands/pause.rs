//! `cargo xtask pause I` and `resume I`: freeze a member (cgroup freezer on Docker, SIGSTOP
//! for a process) so that it stops answering without losing state, then thaw it.

use xshell::Shell;

use crate::docker;
use crate::process::{self, Binaries, ProcessStatus};
use crate::project::Project;
use crate::state::{Runtime, State, Target};

/// Freeze node I (or `canonical`): it stops answering but keeps its state.
#[derive(Debug, clap::Args)]
pub struct Pause {
    /// Node index, or `canonical`.
    target: Target,
}

/// Thaw a paused node (or `canonical`).
#[derive(Debug, clap::Args)]
pub struct Resume {
    /// Node index, or `canonical`.
    target: Target,
}

impl Pause {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        freeze(sh, self.target, true)
    }
}

impl Resume {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        freeze(sh, self.target, false)
    }
}

fn freeze(sh: &Shell, target: Target, pause: bool) -> anyhow::Result<()> {
    let project = Project::locate()?;
    let state = State::require(&project.cluster_dir)?;
    let member = state.member(target)?;
    let (from, verb) = if pause {
        ("running", "paused")
    } else {
        ("paused", "resumed")
    };
    let wrong_state = || anyhow::anyhow!("{} is not {from}", member.label());
    match state.runtime {
        Runtime::Docker => {
            let matches = docker::containers(sh, Some(&state.prefix))?
                .iter()
                .any(|c| c.index == member.index && c.status == from);
            if !matches {
                return Err(wrong_state());
            }
            let command = if pause { "pause" } else { "unpause" };
            docker::run(sh, &[command.into(), member.name.clone()])?;
        }
        Runtime::Process => {
            let binaries = Binaries::locate(&project);
            let expected = if pause {
                ProcessStatus::Running
            } else {
                ProcessStatus::Paused
            };
            if process::status(&binaries, member) != expected {
                return Err(wrong_state());
            }
            process::signal(sh, member, if pause { "STOP" } else { "CONT" })?;
        }
    }
    println!("{verb} {}", member.label());
    Ok(())
}
