//! `cargo client ARGS`: the client of the static release build `up` makes, run in xtask's
//! place with ARGS, so that the first image after a fresh clone costs no build of its own
//! (a separate dev build of the client took two minutes on a 2-core machine).

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;

use anyhow::Context;
use xshell::Shell;

use lab::project::Project;
use lab::release;

/// Run the client (`cargo client --help` for its commands), built with `up`'s release binaries.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true, disable_version_flag = true)]
pub struct Client {
    /// The client's arguments, passed as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

impl Client {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let client = release::client_binary(sh, &project)?;
        // The user's working directory, not xtask's (get-image writes files there).
        let error = std::process::Command::new(&client).args(&self.args).exec();
        Err(error).with_context(|| format!("running {}", client.display()))
    }
}
