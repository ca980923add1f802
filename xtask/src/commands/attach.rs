//! `cargo xtask attach I`: the node binary's own console on node I's admin interface. A
//! scratch image has no shell, so on Docker this is `docker exec` of `/flotilla-node console`.

use lab::runtime::MemberStatus;
use lab::state::Target;
use xshell::Shell;

use crate::cluster::Cluster;
use crate::Exit;

/// Open node I's console (status, peers, leader, cache, get, ping, help).
#[derive(Debug, clap::Args)]
pub struct Attach {
    /// Node index.
    node: wire::NodeIndex,
}

impl Attach {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let cluster = Cluster::open()?;
        let member = cluster.member(Target::Node(self.node))?;
        if cluster.status(sh, member.index)? != MemberStatus::Running {
            anyhow::bail!(
                "{} is not running; start it with `cargo xtask restart {}`",
                member.label(),
                member.index
            );
        }
        let status = cluster
            .runtime
            .console(&member)
            .status()
            .map_err(|e| anyhow::anyhow!("starting the console: {e}"))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(Exit(code.clamp(1, 255) as u8).into()),
            None => Err(Exit(1).into()),
        }
    }
}
