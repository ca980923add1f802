//! Delay and loss on one member's egress, made from the host in the member's network
//! namespace (`nsenter --net`), so members need no NET_ADMIN.
//!
//! The first choice is the kernel's own netem qdisc: `tc qdisc replace dev eth0 root netem
//! delay … loss …`. Kernels built without it (`CONFIG_NET_SCH_NETEM` off; `tc` then says
//! "Specified qdisc kind is unknown") get the same effect one level up: an iptables chain
//! `FLOTILLA_NETEM` in the namespace's mangle table queues every packet leaving eth0 to
//! NFQUEUE [`nfqueue::QUEUE`], and the delayer (`flotilla-delayer`, this crate's binary),
//! running on the host in that namespace, gives each packet back after the delay or drops it.
//! The queue rule has `--queue-bypass`, so a delayer that dies lets traffic flow undelayed
//! rather than cutting the member off.
//!
//! The caller records the [`Shaping`] this returns, so that a member restarted in a fresh
//! namespace can be shaped again; [`remove`] takes away the qdisc, the chain and the
//! delayer, whichever exist.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::nfqueue;
use crate::shape::{Shape, Shaping};
use crate::tools;
use crate::FaultTarget;

/// The iptables chain Flotilla owns in a member's mangle table (delayer mechanism only).
const CHAIN: &str = "FLOTILLA_NETEM";
/// The member interface whose egress is shaped.
const DEVICE: &str = "eth0";
/// How long `install` waits for a delayer to bind its queue.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How `tc` says the kernel lacks a qdisc.
const UNKNOWN_QDISC: [&str; 2] = ["qdisc kind is unknown", "Unknown qdisc"];
/// File name of the delayer binary (`src/bin/flotilla-delayer.rs`).
pub const DELAYER_BINARY: &str = "flotilla-delayer";

/// Where the delayer binary is and where its logs go.
#[derive(Clone, Debug)]
pub struct Delayer {
    pub binary: PathBuf,
    pub logs_dir: PathBuf,
}

/// Shapes `target`'s egress, replacing `previous` (what was recorded for it, if anything).
/// Returns how it was made, for the caller to record. `delayer` is asked for only when the
/// kernel has no netem qdisc.
pub fn install(
    sh: &Shell,
    target: &FaultTarget,
    previous: Option<&Shaping>,
    shape: Shape,
    delayer: impl FnOnce() -> anyhow::Result<Delayer>,
) -> anyhow::Result<Shaping> {
    tools::ensure(sh, "nsenter", "util-linux")?;
    tools::ensure(sh, "tc", "iproute2")?;
    remove(sh, target, previous)?;
    let pid = target.pid.to_string();
    let parameters = shape.tc_parameters();
    let output = cmd!(
        sh,
        "nsenter --target {pid} --net tc qdisc replace dev {DEVICE} root netem {parameters...}"
    )
    .quiet()
    .ignore_status()
    .output()
    .context("running `tc` through nsenter")?;
    if output.status.success() {
        return Ok(Shaping {
            shape,
            worker: None,
            socket: false,
        });
    }
    let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !UNKNOWN_QDISC.iter().any(|words| said.contains(words)) {
        anyhow::bail!(
            "`tc qdisc replace … netem` failed in {}: {said}",
            target.name
        );
    }
    // Said once per process: a soak or scenario shapes many times.
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is off); shaping with the NFQUEUE delayer instead"
        );
    });
    tools::ensure(sh, "iptables", "iptables")?;
    let worker = start_worker(&delayer()?, target, shape)?;
    if let Err(error) = divert(sh, target) {
        stop_worker(worker);
        return Err(error);
    }
    Ok(Shaping {
        shape,
        worker: Some(worker),
        socket: false,
    })
}

/// Removes the qdisc, the chain and the worker from `target`; true when one existed.
pub fn remove(
    sh: &Shell,
    target: &FaultTarget,
    recorded: Option<&Shaping>,
) -> anyhow::Result<bool> {
    let pid = target.pid.to_string();
    let mut removed = false;
    let qdiscs = cmd!(
        sh,
        "nsenter --target {pid} --net tc qdisc show dev {DEVICE}"
    )
    .quiet()
    .read()
    .with_context(|| format!("listing the qdiscs of {}", target.name))?;
    if qdiscs.contains("netem") {
        cmd!(
            sh,
            "nsenter --target {pid} --net tc qdisc del dev {DEVICE} root"
        )
        .quiet()
        .run()
        .with_context(|| format!("removing netem from {}", target.name))?;
        removed = true;
    }
    // iptables is only needed, and only installed, where the worker mechanism was used.
    let has_iptables = cmd!(sh, "which iptables")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if has_iptables {
        let rules = cmd!(sh, "nsenter --target {pid} --net iptables -w -t mangle -S")
            .quiet()
            .read()
            .with_context(|| format!("listing the iptables rules of {}", target.name))?;
        if rules.lines().any(|line| line == format!("-N {CHAIN}")) {
            let jump = ["-D", "OUTPUT", "-o", DEVICE, "-j", CHAIN];
            while cmd!(
                sh,
                "nsenter --target {pid} --net iptables -w -t mangle {jump...}"
            )
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
            {}
            cmd!(
                sh,
                "nsenter --target {pid} --net iptables -w -t mangle -F {CHAIN}"
            )
            .quiet()
            .run()?;
            cmd!(
                sh,
                "nsenter --target {pid} --net iptables -w -t mangle -X {CHAIN}"
            )
            .quiet()
            .run()
            .with_context(|| format!("removing the {CHAIN} chain from {}", target.name))?;
            removed = true;
        }
    }
    if let Some(worker) = recorded.and_then(|r| r.worker) {
        removed |= stop_worker(worker);
    }
    Ok(removed)
}

/// Adds the chain that queues everything leaving eth0 to the worker.
fn divert(sh: &Shell, target: &FaultTarget) -> anyhow::Result<()> {
    let pid = target.pid.to_string();
    let queue = nfqueue::QUEUE.to_string();
    let steps: [Vec<&str>; 3] = [
        vec!["-N", CHAIN],
        vec![
            "-A",
            CHAIN,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
            "--queue-bypass",
        ],
        vec!["-A", "OUTPUT", "-o", DEVICE, "-j", CHAIN],
    ];
    for step in steps {
        cmd!(
            sh,
            "nsenter --target {pid} --net iptables -w -t mangle {step...}"
        )
        .quiet()
        .run()
        .with_context(|| format!("adding the {CHAIN} iptables chain in {}", target.name))?;
    }
    Ok(())
}

/// Starts the delayer in `target`'s network namespace, detached, logging to
/// `<logs>/<name>.netem.log`; returns its pid once it has bound its queue.
fn start_worker(delayer: &Delayer, target: &FaultTarget, shape: Shape) -> anyhow::Result<u32> {
    let logs = &delayer.logs_dir;
    std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join(format!("{}.netem.log", target.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    use std::os::unix::process::CommandExt;
    // nsenter enters the namespace and execs the worker: the child's pid is the worker's.
    let mut child = Command::new("nsenter")
        .arg(format!("--target={}", target.pid))
        .arg("--net")
        .arg("--")
        .arg(&delayer.binary)
        .arg(format!("--delay-us={}", shape.delay_us))
        .arg(format!("--jitter-us={}", shape.jitter_us))
        .arg(format!("--loss-ppm={}", shape.loss_ppm))
        .arg(format!("--container-pid={}", target.pid))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own group: Ctrl-C in the terminal that ran `netem` does not reach it.
        .process_group(0)
        .spawn()
        .context("starting the delayer through nsenter")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("the worker has no stdout")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let ready = receiver
        .recv_timeout(WORKER_START_TIMEOUT)
        .is_ok_and(|line| line.trim() == nfqueue::READY);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let reason = log.lines().last().unwrap_or("no output").trim();
        anyhow::bail!(
            "the NFQUEUE delayer for {} did not start: {reason} (log: {})",
            target.name,
            log_path.display()
        );
    }
    // The worker outlives this process; init reaps it when it exits.
    Ok(pid)
}

/// Stops the worker with `pid` if it still runs; true when it did.
pub fn stop_worker(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // nsenter execs the delayer, so its first argument is the delayer's path.
    let is_worker = cmdline
        .split(|byte| *byte == 0)
        .next()
        .is_some_and(|program| program.ends_with(DELAYER_BINARY.as_bytes()));
    if !is_worker {
        return false;
    }
    Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
