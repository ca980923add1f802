//! Host tools that some fault-injection commands run (`nsenter`, `nft`): found on PATH, or
//! installed from Debian's packages when xtask runs as root on a Debian-like host.

use anyhow::Context;
use xshell::{cmd, Shell};

/// Longest apt-get waits for another apt-get's lock.
const APT_LOCK_WAIT_SECONDS: u32 = 300;

/// Makes sure `program` is on PATH, installing `package` with apt-get when it is missing and
/// that is possible; says so in one line when it installs.
pub fn ensure(sh: &Shell, program: &str, package: &str) -> anyhow::Result<()> {
    // apt-get takes a lock and fails at once when another apt-get holds it: callers in one
    // process (tests running side by side) install one at a time, and the second finds the
    // program there.
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    // Another process's apt-get (an unattended upgrade, another tool) is waited for.
    let wait_for_lock = format!("DPkg::Lock::Timeout={APT_LOCK_WAIT_SECONDS}");
    cmd!(sh, "apt-get update -qq -o {wait_for_lock}")
        .quiet()
        .ignore_stdout()
        .run()
        .context("running `apt-get update`")?;
    cmd!(
        sh,
        "apt-get install -y -qq --no-install-recommends -o {wait_for_lock} {package}"
    )
    .quiet()
    .ignore_stdout()
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .with_context(|| format!("installing `{package}` with apt-get"))
}
