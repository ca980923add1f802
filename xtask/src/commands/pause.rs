//! `cargo xtask pause I` and `resume I`: freeze a member (cgroup freezer on Docker, SIGSTOP
//! for a process) so that it stops answering without losing state, then thaw it.

use lab::runtime::MemberStatus;
use lab::state::Target;
use xshell::Shell;

use crate::cluster::Cluster;

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
        let cluster = Cluster::open()?;
        let member = cluster.member(self.target)?;
        if cluster.status(sh, member.index)? != MemberStatus::Running {
            anyhow::bail!("{} is not running", member.label());
        }
        cluster.runtime.pause(sh, &member)?;
        println!("paused {}", member.label());
        Ok(())
    }
}

impl Resume {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let cluster = Cluster::open()?;
        let member = cluster.member(self.target)?;
        if cluster.status(sh, member.index)? != MemberStatus::Paused {
            anyhow::bail!("{} is not paused", member.label());
        }
        cluster.runtime.resume(sh, &member)?;
        println!("resumed {}", member.label());
        Ok(())
    }
}
