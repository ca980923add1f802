//! Host tools that some fault-injection commands run (`nsenter`, `nft`): found on PATH, or
//! installed from Debian's packages when xtask runs as root on a Debian-like host.

use anyhow::Context;
use xshell::{cmd, Shell};

/// Makes sure `program` is on PATH, installing `package` with apt-get when it is missing and
/// that is possible; says so in one line when it installs.
pub fn ensure(sh: &Shell, program: &str, package: &str) -> anyhow::Result<()> {
    if cmd!(sh, "which {program}")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
    {
        return Ok(());
    }
    let root = cmd!(sh, "id -u").quiet().read().is_ok_and(|uid| uid == "0");
    let apt = cmd!(sh, "which apt-get")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if !(root && apt) {
        anyhow::bail!("`{program}` is not installed; install the `{package}` package (e.g. `sudo apt-get install {package}`)");
    }
    eprintln!(
        "`{program}` is not installed; installing the Debian package `{package}` with apt-get"
    );
    cmd!(sh, "apt-get update -qq")
        .quiet()
        .ignore_stdout()
        .run()
        .context("running `apt-get update`")?;
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends {package}"
    )
    .quiet()
    .ignore_stdout()
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .with_context(|| format!("installing `{package}` with apt-get"))
}
