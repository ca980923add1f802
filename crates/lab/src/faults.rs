//! Faults on a running cluster, through its runtime: partitions and netem shapes are made in
//! the members' network namespaces by `chaos`, recorded in the state, and restored whenever
//! a member comes back in a fresh namespace (`up`, `restart`, `bench failover`). Where the
//! runtime offers a `SocketRoute` (a swarm with a member on another machine), the same
//! record is sent to the members' own sockets instead (`crate::socket_faults`).

use anyhow::Context;
use chaos::netem::{self, Delayer, DELAYER_BINARY};
use chaos::partition::{self, Cut};
use chaos::shape::{Shape, Shaping};
use chaos::FaultTarget;
use xshell::{cmd, Shell};

use crate::project::Project;
use crate::runtime::Runtime;
use crate::state::{member_name, State};

/// Cuts the network as `cut` says and records it in `state` (the caller saves).
pub fn partition(
    sh: &Shell,
    runtime: &dyn Runtime,
    state: &mut State,
    cut: Cut,
) -> anyhow::Result<()> {
    if let Some(route) = runtime.socket_route(sh, state)? {
        let previous = state.cut();
        state.set_cut(Some(cut));
        let sent = route.apply(sh, state, None);
        if sent.is_err() {
            state.set_cut(previous);
        }
        return sent;
    }
    let targets = nodes(runtime.fault_targets(sh, state, "partition")?);
    partition::apply(sh, &cut, &targets)?;
    state.set_cut(Some(cut));
    Ok(())
}

/// Removes any partition and forgets it in `state` (the caller saves); true when there
/// was one.
pub fn heal(sh: &Shell, runtime: &dyn Runtime, state: &mut State) -> anyhow::Result<bool> {
    if let Some(route) = runtime.socket_route(sh, state)? {
        // Every member is sent its share without a cut, whatever was recorded: a member
        // that missed an earlier change is healed too.
        let was = state.cut().is_some();
        state.set_cut(None);
        route.apply(sh, state, None)?;
        return Ok(was);
    }
    let targets = nodes(runtime.fault_targets(sh, state, "heal")?);
    let healed = partition::heal(sh, &targets)?;
    let was = state.cut().is_some();
    state.set_cut(None);
    Ok(was || healed > 0)
}

/// Shapes member `index`'s egress (replacing any earlier shape) and records it in `state`
/// (the caller saves, also on failure: an earlier shape may be gone).
pub fn shape(
    sh: &Shell,
    project: &Project,
    runtime: &dyn Runtime,
    state: &mut State,
    index: u16,
    shape: Shape,
) -> anyhow::Result<Shaping> {
    if let Some(route) = runtime.socket_route(sh, state)? {
        if !route.targets.iter().any(|t| t.index == index) {
            running_target(sh, runtime, state, index, "netem")?;
        }
        let made = Shaping {
            shape,
            worker: None,
            socket: true,
        };
        let previous = state.netem.insert(index, made);
        let sent = route.apply(sh, state, Some(&[index]));
        if let Err(error) = sent {
            match previous {
                Some(previous) => state.netem.insert(index, previous),
                None => state.netem.remove(&index),
            };
            return Err(error);
        }
        return Ok(made);
    }
    let target = running_target(sh, runtime, state, index, "netem")?;
    let previous = state.netem.remove(&index);
    let made = netem::install(sh, &target, previous.as_ref(), shape, || {
        delayer(sh, project)
    })?;
    state.netem.insert(index, made);
    Ok(made)
}

/// Removes member `index`'s shape, whatever made it, and forgets it in `state` (the caller
/// saves). True when there was something to remove. A stopped member has no namespace
/// left; only its record (and a delayer, if one still runs) goes.
pub fn unshape(
    sh: &Shell,
    runtime: &dyn Runtime,
    state: &mut State,
    index: u16,
) -> anyhow::Result<bool> {
    if let Some(route) = runtime.socket_route(sh, state)? {
        let recorded = state.netem.remove(&index);
        if route.targets.iter().any(|t| t.index == index) {
            route.apply(sh, state, Some(&[index]))?;
        }
        return Ok(recorded.is_some());
    }
    let targets = runtime.fault_targets(sh, state, "netem")?;
    let recorded = state.netem.remove(&index);
    let removed = match targets.iter().find(|t| t.index == index) {
        Some(target) => {
            chaos::tools::ensure(sh, "nsenter", "util-linux")?;
            netem::remove(sh, target, recorded.as_ref())?
        }
        None => {
            if let Some(pid) = recorded.and_then(|r| r.worker) {
                netem::stop_worker(pid);
            }
            false
        }
    };
    Ok(removed || recorded.is_some())
}

/// Stops every recorded delayer (on `down`; they would exit by themselves once their
/// members are gone).
pub fn stop_delayers(state: &State) {
    for pid in state.netem.values().filter_map(|s| s.worker) {
        netem::stop_worker(pid);
    }
}

/// Applies the recorded partition and shapes again after the members in `started` came up
/// in fresh network namespaces. The caller saves `state`.
pub fn restore(
    sh: &Shell,
    project: &Project,
    runtime: &dyn Runtime,
    state: &mut State,
    started: &[u16],
) -> anyhow::Result<()> {
    if started.is_empty() {
        return Ok(());
    }
    if let Some(route) = runtime.socket_route(sh, state)? {
        // A fresh task starts with no socket faults and maybe a new address: every member
        // is sent its share again (the cut names the new address).
        if state.cut().is_some() || started.iter().any(|i| state.netem.contains_key(i)) {
            route.apply(sh, state, None)?;
        }
        return Ok(());
    }
    if let Some(cut) = state.cut() {
        // A new namespace starts without the rules, and its address may have changed: the
        // whole partition is applied again.
        let targets = nodes(runtime.fault_targets(sh, state, "partition")?);
        partition::apply(sh, &cut, &targets)?;
    }
    let shaped: Vec<(u16, Shaping)> = state
        .netem
        .iter()
        .filter(|(index, _)| started.contains(index))
        .map(|(index, shaping)| (*index, *shaping))
        .collect();
    for (index, shaping) in shaped {
        if let Some(pid) = shaping.worker {
            // Its namespace is gone; it exits by itself within a moment, but not later.
            netem::stop_worker(pid);
        }
        state.netem.remove(&index);
        let made = shape(sh, project, runtime, state, index, shaping.shape)?;
        eprintln!(
            "shaped {} again: {} ({})",
            member_name(&state.prefix, index),
            made.shape.describe(),
            made.mechanism()
        );
    }
    Ok(())
}

/// The running member `index`, or one line saying how to start it.
fn running_target(
    sh: &Shell,
    runtime: &dyn Runtime,
    state: &State,
    index: u16,
    command: &str,
) -> anyhow::Result<FaultTarget> {
    runtime
        .fault_targets(sh, state, command)?
        .into_iter()
        .find(|t| t.index == index)
        .ok_or_else(|| {
            let word = match index {
                0 => "canonical".to_string(),
                index => index.to_string(),
            };
            anyhow::anyhow!(
                "{} is not running; start it with `cargo xtask restart {word}`",
                member_name(&state.prefix, index)
            )
        })
}

/// The edge nodes among `targets` (partitions leave the canonical alone).
fn nodes(targets: Vec<FaultTarget>) -> Vec<FaultTarget> {
    targets.into_iter().filter(|t| t.index > 0).collect()
}

/// Builds the delayer binary (a no-op when it is fresh) and says where it and its logs are.
fn delayer(sh: &Shell, project: &Project) -> anyhow::Result<Delayer> {
    cmd!(
        sh,
        "cargo build --quiet -p flotilla-chaos --bin {DELAYER_BINARY}"
    )
    .quiet()
    .run()
    .context("building the NFQUEUE delayer (see cargo's errors above)")?;
    Ok(Delayer {
        binary: project.target_dir.join("debug").join(DELAYER_BINARY),
        logs_dir: project.logs_dir(),
    })
}
