//! `cargo xtask attach I`: the node binary's own console on node I's admin interface. A
//! scratch image has no shell, so on Docker this is `docker exec` of `/flotilla-node console`.

use std::io::IsTerminal;
use std::process::Command;

use xshell::Shell;

use crate::docker;
use crate::process::{self, Binaries, ProcessStatus};
use crate::project::Project;
use crate::state::{Runtime, State, Target};
use crate::Exit;

/// Open node I's console (status, peers, leader, cache, get, ping, help).
#[derive(Debug, clap::Args)]
pub struct Attach {
    /// Node index.
    node: wire::NodeIndex,
}

impl Attach {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let state = State::require(&project.cluster_dir)?;
        let member = state.member(Target::Node(self.node))?;
        let mut console = match state.runtime {
            Runtime::Docker => {
                let running = docker::containers(sh, Some(&state.prefix))?
                    .iter()
                    .any(|c| c.index == member.index && c.is_running());
                if !running {
                    anyhow::bail!(
                        "{} is not running; start it with `cargo xtask restart {}`",
                        member.label(),
                        member.index
                    );
                }
                let mut command = Command::new("docker");
                command.arg("exec").arg("--interactive");
                // A terminal only when we have one: piped stdin (tests, scripts) works too.
                if std::io::stdin().is_terminal() {
                    command.arg("--tty");
                }
                command
                    .arg(&member.name)
                    .args(["/flotilla-node", "console"]);
                command
            }
            Runtime::Process => {
                let binaries = Binaries::locate(&project);
                if process::status(&binaries, member) == ProcessStatus::Gone {
                    anyhow::bail!(
                        "{} is not running; start it with `cargo xtask restart {}`",
                        member.label(),
                        member.index
                    );
                }
                let mut command = Command::new(&binaries.node);
                command
                    .arg("console")
                    .arg("--certs")
                    .arg(project.member_certs(&member.role().stem()))
                    .arg("--target")
                    .arg(format!("127.0.0.1:{}", member.quic_port));
                command
            }
        };
        let status = console
            .status()
            .map_err(|e| anyhow::anyhow!("starting the console: {e}"))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => Err(Exit(code.clamp(1, 255) as u8).into()),
            None => Err(Exit(1).into()),
        }
    }
}
