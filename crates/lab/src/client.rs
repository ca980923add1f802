//! Running the Flotilla client from xtask: `client ping --json` tells which members answer,
//! which is how `up` knows the cluster is ready.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use wire::status::StatusRow;
use xshell::{cmd, Shell};

use crate::project::Project;

/// How long `up` waits for every member to answer before giving up. Generous: a cold
/// machine under load (CI) can be slow, and nothing waits this long when things work.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Pause between two pings while waiting.
const READY_POLL: Duration = Duration::from_millis(250);

/// The most recently built client binary (dev or static release build).
pub fn binary(project: &Project) -> anyhow::Result<PathBuf> {
    let candidates = [
        project.target_dir.join("debug/client"),
        project.target_dir.join("release/client"),
        project
            .target_dir
            .join("x86_64-unknown-linux-musl/release/client"),
        project
            .target_dir
            .join("x86_64-unknown-linux-gnu/release/client"),
    ];
    candidates
        .into_iter()
        .filter_map(|path| {
            let modified = path.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, path))
        })
        .max()
        .map(|(_, path)| path)
        .context("the client is not built yet; run `cargo build -p flotilla-client`")
}

/// Runs `client ping --json` once. A failed run (cluster not up yet) is an error.
pub fn ping(sh: &Shell, client: &Path, cluster_dir: &Path) -> anyhow::Result<Vec<StatusRow>> {
    let output = cmd!(sh, "{client} ping --json --cluster {cluster_dir}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {}", client.display()))?;
    // Exit 1 only says that someone is unreachable; the JSON says who.
    wire::status::rows_from_json(&output.stdout).map_err(|_| {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .last()
            .unwrap_or("no output")
            .trim()
            .to_string();
        anyhow::anyhow!("`client ping --json` failed: {reason}")
    })
}

/// Pings until the members with `indices` answer, with a progress bar on the terminal.
/// `still_running` is asked on every round, so a member that died fails the wait at once.
pub fn wait_until_answering(
    sh: &Shell,
    client: &Path,
    cluster_dir: &Path,
    indices: &[u16],
    mut still_running: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let bar = ProgressBar::new(indices.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} waiting for members to answer {bar:24} {pos}/{len} {msg}",
        )
        // The template is a constant and was checked when it was written.
        .expect("progress template is valid")
        .progress_chars("█▉ "),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut last_problem;
    loop {
        if let Err(error) = still_running() {
            bar.finish_and_clear();
            return Err(error);
        }
        match ping(sh, client, cluster_dir) {
            Ok(members) => {
                let answers =
                    |index: &u16| members.iter().any(|m| m.index == *index && m.reachable);
                let answering = indices.iter().filter(|i| answers(i)).count();
                bar.set_position(answering as u64);
                if answering == indices.len() {
                    bar.finish_and_clear();
                    return Ok(started.elapsed());
                }
                let silent: Vec<String> = indices
                    .iter()
                    .filter(|i| !answers(i))
                    .map(|i| {
                        members
                            .iter()
                            .find(|m| m.index == *i)
                            .map_or_else(|| format!("member {i}"), |m| m.name.clone())
                    })
                    .collect();
                last_problem = format!("not answering: {}", silent.join(", "));
            }
            Err(error) => last_problem = error.to_string(),
        }
        bar.set_message(last_problem.clone());
        if started.elapsed() > READY_TIMEOUT {
            bar.finish_and_clear();
            anyhow::bail!(
                "the cluster did not come up within {} s ({last_problem}); see `cargo xtask logs all`",
                READY_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(READY_POLL);
    }
}
