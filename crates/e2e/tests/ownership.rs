//! Two checkouts, one cluster name: each acts only on the cluster it started. A process
//! cluster started from one cluster folder and a Docker cluster of the same name from another
//! both run; `down` in the first stops its processes and leaves the other's containers
//! answering; a third folder's `up` of that name is refused naming the owner; the fixture's
//! own `down` then removes its containers and nothing else.

use std::path::Path;
use std::process::Output;

use e2e::cluster::{xtask_for, COMMAND_TIMEOUT, UP_TIMEOUT};
use e2e::process::{run_with_timeout, text};
use e2e::Cluster;

/// The fixture's cluster name is `flotilla_e2e_` and this.
const NAME: &str = "owner";

/// Runs xtask against `cluster_dir` (another checkout's cluster folder), echoing its output.
fn xtask_from(
    cluster_dir: &Path,
    args: &[&str],
    timeout: std::time::Duration,
) -> anyhow::Result<Output> {
    let mut command = xtask_for(cluster_dir)?;
    command.args(args);
    eprintln!(
        "$ FLOTILLA_CLUSTER={} cargo xtask {}",
        cluster_dir.display(),
        args.join(" ")
    );
    let output = run_with_timeout(command, None, timeout)?;
    eprint!("{}", text(&output));
    Ok(output)
}

#[test]
fn two_checkouts_with_one_name_each_act_only_on_their_own_cluster() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let prefix = format!("{}{NAME}", e2e::cluster::PREFIX_START);
    let scratch = tempfile::tempdir()?;
    let other = scratch.path().join("other-checkout");
    let third = scratch.path().join("third-checkout");
    // The other checkout's process cluster comes first: no container has the name yet.
    let started = xtask_from(
        &other,
        &["up", "1", "--runtime", "process", "--name", &prefix],
        UP_TIMEOUT,
    )?;
    anyhow::ensure!(
        started.status.success(),
        "the process cluster did not start"
    );
    let _stop_other = StopOnDrop(&other);
    let cluster = Cluster::start(NAME)?;
    cluster.ping_all()?;

    // `down` in the other checkout stops its processes and nothing of the Docker cluster.
    let down = xtask_from(&other, &["down", "--volumes"], COMMAND_TIMEOUT)?;
    anyhow::ensure!(down.status.success(), "down in the other checkout failed");
    let said = text(&down);
    anyhow::ensure!(
        said.contains("stopped 2 processes")
            && said.contains("left 6 containers")
            && !said.contains("removed 6 containers")
            && !said.contains("removed network"),
        "down in the other checkout did more than stop its processes: {said}"
    );
    let running = cluster.running_count()?;
    anyhow::ensure!(
        running == usize::from(e2e::NODES) + 1,
        "{running} of the Docker cluster's containers run after the other checkout's down"
    );
    cluster.ping_all()?;

    // A `down --name` from a folder that recorded nothing leaves them alone and says whose
    // they are.
    let stray = xtask_from(
        &third,
        &["down", "--volumes", "--name", &prefix],
        COMMAND_TIMEOUT,
    )?;
    anyhow::ensure!(
        text(&stray).contains("left 6 containers")
            && text(&stray).contains(&cluster.cluster_dir().display().to_string()),
        "a down from a third folder did not name the owner: {}",
        text(&stray)
    );
    cluster.ping_all()?;

    // A third checkout may not start a cluster of that name at all, on either runtime.
    for runtime in ["process", "docker"] {
        let refused = xtask_from(
            &third,
            &["up", "1", "--runtime", runtime, "--name", &prefix],
            COMMAND_TIMEOUT,
        )?;
        anyhow::ensure!(
            refused.status.code() == Some(1),
            "up --runtime {runtime} of a name another checkout uses did not fail"
        );
        let said = text(&refused);
        anyhow::ensure!(
            said.contains("is taken by a cluster started from")
                && said.contains(&cluster.cluster_dir().display().to_string()),
            "the refusal does not name the owner: {said}"
        );
    }
    cluster.ping_all()?;
    Ok(())
}

/// Stops the other checkout's cluster when the test ends, however it ends.
struct StopOnDrop<'a>(&'a Path);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(error) = xtask_from(self.0, &["down", "--volumes"], COMMAND_TIMEOUT) {
            eprintln!("TEARDOWN FAILED: down in {}: {error:#}", self.0.display());
        }
    }
}
