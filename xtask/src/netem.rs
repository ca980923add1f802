//! Delay and loss on one member's egress, made from the host in the container's network
//! namespace (`nsenter --net`), so members need no NET_ADMIN.
//!
//! The first choice is the kernel's own netem qdisc: `tc qdisc replace dev eth0 root netem
//! delay … loss …`. Kernels built without it (`CONFIG_NET_SCH_NETEM` off; `tc` then says
//! "Specified qdisc kind is unknown") get the same effect one level up: an iptables chain
//! `FLOTILLA_NETEM` in the namespace's mangle table queues every packet leaving eth0 to
//! NFQUEUE [`netem_worker::QUEUE`], and a host process, `xtask netem-worker`, running in that
//! namespace, gives each packet back after the delay or drops it (see `netem_worker.rs`). The
//! queue rule has `--queue-bypass`, so a worker that dies lets traffic flow undelayed rather
//! than cutting the member off.
//!
//! What was asked is recorded in `state.json`, so `restart` and `up` shape a member again when
//! its container comes back in a fresh namespace; `--clear` removes the qdisc, the chain and
//! the worker, whichever exist.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::docker::{self, Container};
use crate::netem_worker;
use crate::project::Project;
use crate::state::State;
use crate::tools;

/// The iptables chain xtask owns in a member's mangle table (worker mechanism only).
const CHAIN: &str = "FLOTILLA_NETEM";
/// The container interface whose egress is shaped.
const DEVICE: &str = "eth0";
/// Longest delay or jitter accepted: anything longer is a typo, not a network.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Parts per million in one percent.
const PPM_PER_PERCENT: f64 = 10_000.0;
/// How long `netem` waits for a worker to bind its queue.
const WORKER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How `tc` says the kernel lacks a qdisc.
const UNKNOWN_QDISC: [&str; 2] = ["qdisc kind is unknown", "Unknown qdisc"];

/// Delay, jitter and loss on a member's egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub delay_us: u64,
    pub jitter_us: u64,
    /// Share of packets dropped, in parts per million.
    pub loss_ppm: u32,
}

impl Shape {
    /// `delay 150 ms ± 10 ms, loss 1%`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.delay_us > 0 || self.loss_ppm == 0 {
            let mut delay = format!("delay {}", milliseconds(self.delay_us));
            if self.jitter_us > 0 {
                delay.push_str(&format!(" ± {}", milliseconds(self.jitter_us)));
            }
            parts.push(delay);
        }
        if self.loss_ppm > 0 {
            parts.push(format!("loss {}", percent(self.loss_ppm)));
        }
        parts.join(", ")
    }

    /// The netem qdisc's parameters: `delay 150000us 10000us loss 1%`.
    fn tc_parameters(&self) -> Vec<String> {
        let mut parameters = vec!["delay".to_string(), format!("{}us", self.delay_us)];
        if self.jitter_us > 0 {
            parameters.push(format!("{}us", self.jitter_us));
        }
        if self.loss_ppm > 0 {
            parameters.push("loss".to_string());
            parameters.push(percent(self.loss_ppm));
        }
        parameters
    }

    /// One packet's delay: the delay plus a uniform draw in ±jitter, never below zero (as
    /// netem's default distribution).
    pub fn packet_delay(&self, draw: impl FnOnce(u64) -> u64) -> Duration {
        if self.jitter_us == 0 {
            return Duration::from_micros(self.delay_us);
        }
        let offset = draw(2 * self.jitter_us + 1) as i128 - i128::from(self.jitter_us);
        let micros = (i128::from(self.delay_us) + offset).max(0);
        Duration::from_micros(micros as u64)
    }
}

/// How a member's shape was made, as recorded in `state.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shaping {
    pub shape: Shape,
    /// Host pid of the NFQUEUE worker, when the kernel has no netem qdisc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
}

impl Shaping {
    /// `tc netem` or `xtask's NFQUEUE worker (pid 123)`.
    pub fn mechanism(&self) -> String {
        match self.worker {
            None => "tc netem".to_string(),
            Some(pid) => format!("xtask's NFQUEUE worker, pid {pid}"),
        }
    }
}

/// `150ms`, `1s`, `1.5s`, `500us` → a duration of at most [`MAX_DELAY`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration such as 150ms, 1.5s or 500us");
    let (number, micros_per_unit) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e3)
    } else if let Some(number) = text.strip_suffix("us") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1e6)
    } else {
        return Err(bad());
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|value: &f64| value.is_finite() && *value >= 0.0)
        .ok_or_else(bad)?;
    let micros = (value * micros_per_unit).round();
    if micros > MAX_DELAY.as_micros() as f64 {
        return Err(format!(
            "`{text}` is longer than the {} s that netem accepts",
            MAX_DELAY.as_secs()
        ));
    }
    Ok(Duration::from_micros(micros as u64))
}

/// `1%`, `0.5%`, `100%` → parts per million (more than 0, at most 100%).
pub fn parse_loss(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a percentage such as 1% or 0.5% (above 0, at most 100%)");
    let number = text.strip_suffix('%').ok_or_else(bad)?;
    let value: f64 = number
        .parse()
        .ok()
        .filter(|value: &f64| value.is_finite() && *value > 0.0 && *value <= 100.0)
        .ok_or_else(bad)?;
    let ppm = (value * PPM_PER_PERCENT).round() as u32;
    if ppm == 0 {
        return Err(format!("`{text}` is below the smallest loss, 0.0001%"));
    }
    Ok(ppm)
}

fn milliseconds(micros: u64) -> String {
    format!("{} ms", micros as f64 / 1e3)
}

fn percent(ppm: u32) -> String {
    format!("{}%", f64::from(ppm) / PPM_PER_PERCENT)
}

/// The running container of member `index`, or an error saying how to start it.
pub fn running_container(sh: &Shell, state: &State, index: u16) -> anyhow::Result<Container> {
    docker::containers(sh, Some(&state.prefix))?
        .into_iter()
        .find(|c| c.index == index && c.pid > 0)
        .ok_or_else(|| {
            let word = if index == 0 {
                "canonical".to_string()
            } else {
                index.to_string()
            };
            anyhow::anyhow!(
                "{} is not running; start it with `cargo xtask restart {word}`",
                crate::state::member_name(&state.prefix, index)
            )
        })
}

/// Shapes member `index`'s egress (replacing any earlier shape) and records it in `state`
/// (the caller saves). Returns how it was made.
pub fn install(
    sh: &Shell,
    project: &Project,
    state: &mut State,
    index: u16,
    shape: Shape,
) -> anyhow::Result<Shaping> {
    tools::ensure(sh, "nsenter", "util-linux")?;
    tools::ensure(sh, "tc", "iproute2")?;
    let container = running_container(sh, state, index)?;
    remove(sh, &container, state.netem.get(&index))?;
    state.netem.remove(&index);
    let pid = container.pid.to_string();
    let parameters = shape.tc_parameters();
    let output = cmd!(
        sh,
        "nsenter --target {pid} --net tc qdisc replace dev {DEVICE} root netem {parameters...}"
    )
    .quiet()
    .ignore_status()
    .output()
    .context("running `tc` through nsenter")?;
    let shaping = if output.status.success() {
        Shaping {
            shape,
            worker: None,
        }
    } else {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if !UNKNOWN_QDISC.iter().any(|words| said.contains(words)) {
            anyhow::bail!(
                "`tc qdisc replace … netem` failed in {}: {said}",
                container.name
            );
        }
        eprintln!(
            "this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM is off); shaping with xtask's NFQUEUE worker instead"
        );
        tools::ensure(sh, "iptables", "iptables")?;
        let worker = start_worker(project, &container, shape)?;
        if let Err(error) = divert(sh, &container) {
            stop_worker(worker);
            return Err(error);
        }
        Shaping {
            shape,
            worker: Some(worker),
        }
    };
    state.netem.insert(index, shaping);
    Ok(shaping)
}

/// Removes member `index`'s shape, whatever made it, and forgets it in `state` (the caller
/// saves). True when there was something to remove. A stopped member has no namespace left;
/// only its record (and a worker, if one still runs) goes.
pub fn clear(sh: &Shell, state: &mut State, index: u16) -> anyhow::Result<bool> {
    let recorded = state.netem.remove(&index);
    let container = docker::containers(sh, Some(&state.prefix))?
        .into_iter()
        .find(|c| c.index == index && c.pid > 0);
    let removed = match container {
        Some(container) => {
            tools::ensure(sh, "nsenter", "util-linux")?;
            remove(sh, &container, recorded.as_ref())?
        }
        None => {
            if let Some(pid) = recorded.and_then(|r| r.worker) {
                stop_worker(pid);
            }
            false
        }
    };
    Ok(removed || recorded.is_some())
}

/// Shapes again the members among `indices` that have a recorded shape: their containers
/// were (re)started in fresh namespaces. The caller saves `state`.
pub fn reapply(
    sh: &Shell,
    project: &Project,
    state: &mut State,
    indices: &[u16],
) -> anyhow::Result<()> {
    let shaped: BTreeMap<u16, Shaping> = state
        .netem
        .iter()
        .filter(|(index, _)| indices.contains(index))
        .map(|(index, shaping)| (*index, *shaping))
        .collect();
    for (index, shaping) in shaped {
        if let Some(pid) = shaping.worker {
            // Its namespace is gone; it exits by itself within a moment, but not later.
            stop_worker(pid);
        }
        let made = install(sh, project, state, index, shaping.shape)?;
        eprintln!(
            "shaped {} again: {} ({})",
            crate::state::member_name(&state.prefix, index),
            made.shape.describe(),
            made.mechanism()
        );
    }
    Ok(())
}

/// Stops every recorded worker (on `down`).
pub fn stop_workers(state: &State) {
    for pid in state.netem.values().filter_map(|s| s.worker) {
        stop_worker(pid);
    }
}

/// Removes the qdisc, the chain and the worker from `container`; true when one existed.
fn remove(sh: &Shell, container: &Container, recorded: Option<&Shaping>) -> anyhow::Result<bool> {
    let pid = container.pid.to_string();
    let mut removed = false;
    let qdiscs = cmd!(
        sh,
        "nsenter --target {pid} --net tc qdisc show dev {DEVICE}"
    )
    .quiet()
    .read()
    .with_context(|| format!("listing the qdiscs of {}", container.name))?;
    if qdiscs.contains("netem") {
        cmd!(
            sh,
            "nsenter --target {pid} --net tc qdisc del dev {DEVICE} root"
        )
        .quiet()
        .run()
        .with_context(|| format!("removing netem from {}", container.name))?;
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
            .with_context(|| format!("listing the iptables rules of {}", container.name))?;
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
            .with_context(|| format!("removing the {CHAIN} chain from {}", container.name))?;
            removed = true;
        }
    }
    if let Some(worker) = recorded.and_then(|r| r.worker) {
        removed |= stop_worker(worker);
    }
    Ok(removed)
}

/// Adds the chain that queues everything leaving eth0 to the worker.
fn divert(sh: &Shell, container: &Container) -> anyhow::Result<()> {
    let pid = container.pid.to_string();
    let queue = netem_worker::QUEUE.to_string();
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
        .with_context(|| format!("adding the {CHAIN} iptables chain in {}", container.name))?;
    }
    Ok(())
}

/// Starts `xtask netem-worker` in `container`'s network namespace, detached, logging to
/// `.cluster/logs/<name>.netem.log`; returns its pid once it has bound its queue.
fn start_worker(project: &Project, container: &Container, shape: Shape) -> anyhow::Result<u32> {
    let logs = project.logs_dir();
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_path = logs.join(format!("{}.netem.log", container.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    use std::os::unix::process::CommandExt;
    // nsenter enters the namespace and execs the worker: the child's pid is the worker's.
    let mut child = Command::new("nsenter")
        .arg(format!("--target={}", container.pid))
        .arg("--net")
        .arg("--")
        .arg(exe)
        .arg("netem-worker")
        .arg(format!("--delay-us={}", shape.delay_us))
        .arg(format!("--jitter-us={}", shape.jitter_us))
        .arg(format!("--loss-ppm={}", shape.loss_ppm))
        .arg(format!("--container-pid={}", container.pid))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        // Its own group: Ctrl-C in the terminal that ran `netem` does not reach it.
        .process_group(0)
        .spawn()
        .context("starting the netem worker through nsenter")?;
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
        .is_ok_and(|line| line.trim() == netem_worker::READY);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let reason = log.lines().last().unwrap_or("no output").trim();
        anyhow::bail!(
            "the netem worker for {} did not start: {reason} (log: {})",
            container.name,
            log_path.display()
        );
    }
    // The worker outlives this process; init reaps it when it exits.
    Ok(pid)
}

/// Stops the worker with `pid` if it still runs; true when it did.
fn stop_worker(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_worker = cmdline
        .split(|byte| *byte == 0)
        .any(|argument| argument == b"netem-worker");
    if !is_worker {
        return false;
    }
    Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        for bad in [
            "150", "ms", "-5ms", "1m", "x s", "nanms", "inf s", "61s", "",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn losses_parse_as_percentages() {
        assert_eq!(parse_loss("1%"), Ok(10_000));
        assert_eq!(parse_loss("0.5%"), Ok(5_000));
        assert_eq!(parse_loss("100%"), Ok(1_000_000));
        for bad in ["1", "0%", "101%", "-1%", "%", "x%", "0.00001%"] {
            assert!(parse_loss(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_read_well_and_become_tc_parameters() {
        let shape = Shape {
            delay_us: 150_000,
            jitter_us: 10_000,
            loss_ppm: 10_000,
        };
        assert_eq!(shape.describe(), "delay 150 ms ± 10 ms, loss 1%");
        assert_eq!(
            shape.tc_parameters().join(" "),
            "delay 150000us 10000us loss 1%"
        );
        let loss_only = Shape {
            loss_ppm: 5_000,
            ..Shape::default()
        };
        assert_eq!(loss_only.describe(), "loss 0.5%");
        assert_eq!(loss_only.tc_parameters().join(" "), "delay 0us loss 0.5%");
    }

    #[test]
    fn packet_delays_stay_within_the_jitter() {
        let shape = Shape {
            delay_us: 1_000,
            jitter_us: 2_000,
            loss_ppm: 0,
        };
        assert_eq!(shape.packet_delay(|_| 0), Duration::ZERO);
        assert_eq!(
            shape.packet_delay(|bound| bound - 1),
            Duration::from_micros(3_000)
        );
        assert_eq!(shape.packet_delay(|_| 2_000), Duration::from_micros(1_000));
        let steady = Shape {
            jitter_us: 0,
            ..shape
        };
        assert_eq!(steady.packet_delay(|_| 7), Duration::from_micros(1_000));
    }
}
