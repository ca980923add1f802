//! `cargo xtask kill I`: SIGKILL a node (or `canonical`), as a crash would. `restart` brings
//! it back.

use lab::state::Target;
use xshell::Shell;

use crate::cluster::{target_word, Cluster};

/// Kill node I (or `canonical`) with SIGKILL.
#[derive(Debug, clap::Args)]
pub struct Kill {
    /// Node index, or `canonical`.
    target: Target,
}

impl Kill {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let cluster = Cluster::open()?;
        let member = cluster.member(self.target)?;
        if !cluster.status(sh, member.index)?.is_alive() {
            anyhow::bail!("{} is not running", member.label());
        }
        cluster.runtime.kill(sh, &member)?;
        println!(
            "killed {}; bring it back with `cargo xtask restart {}`",
            member.label(),
            target_word(self.target)
        );
        Ok(())
    }
}
