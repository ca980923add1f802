//! What a swarm cluster is made of besides its services: the overlay network, the members'
//! secrets and configs, the canonical's volume; who owns a name; and taking it all down.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use xshell::{cmd, Shell};

use super::{SwarmRuntime, POLL_INTERVAL, STACK_LABEL, TEARDOWN_TIMEOUT};
use crate::docker::{self, CHECKOUT_LABEL, CLUSTER_LABEL, ID_LABEL};
use crate::runtime::docker::labels;
use crate::state::{RuntimeKind, State};
use crate::swarm::{self, Service};

impl SwarmRuntime {
    /// Creates the network, the secrets and the configs the members use unless they
    /// exist; returns what it made.
    pub(super) fn ensure_objects(&self, sh: &Shell, state: &State) -> anyhow::Result<Vec<String>> {
        let mut made = Vec::new();
        let network = docker::network_name(&state.prefix);
        if docker::run(sh, &["network".into(), "inspect".into(), network.clone()]).is_err() {
            let mut args = vec![
                "network".to_string(),
                "create".to_string(),
                "--driver=overlay".to_string(),
                // `attachable` lets a plain container join it too (a debugging shell, a
                // benchmark client on the overlay).
                "--attachable".to_string(),
            ];
            args.extend(labels(&self.project, state));
            args.push(network.clone());
            docker::run(sh, &args)?;
            made.push(format!("network {network}"));
        }
        let mut objects = vec![(
            "config",
            swarm::ca_config_name(&state.prefix),
            self.project
                .member_certs(&state.canonical().role().stem())
                .join(wire::pki::CA_FILE),
        )];
        for member in &state.members {
            let folder = self.project.member_certs(&member.role().stem());
            objects.push((
                "config",
                swarm::cert_config_name(&member.name),
                folder.join(wire::pki::CERT_FILE),
            ));
            objects.push((
                "secret",
                swarm::key_secret_name(&member.name),
                folder.join(wire::pki::KEY_FILE),
            ));
        }
        let mut created = 0;
        for (kind, name, file) in &objects {
            if docker::run(sh, &[(*kind).into(), "inspect".into(), name.clone()]).is_ok() {
                continue;
            }
            let mut args = vec![kind.to_string(), "create".to_string()];
            args.extend(labels(&self.project, state));
            args.push(name.clone());
            args.push(file.display().to_string());
            docker::run(sh, &args).with_context(|| format!("storing {name} in the swarm"))?;
            created += 1;
        }
        if created > 0 {
            made.push(format!("{created} secrets and configs"));
        }
        Ok(made)
    }

    /// Fails when a name this cluster needs is taken by something it did not make: a
    /// stack's service or network, or anyone else's.
    pub(super) fn check_names_free(&self, sh: &Shell, state: &State) -> anyhow::Result<()> {
        let services = swarm::services(sh)?;
        for member in &state.members {
            let Some(service) = services.iter().find(|s| s.name == member.name) else {
                continue;
            };
            if is_own(service, state) {
                continue;
            }
            anyhow::bail!(
                "the name `{}` is taken by {}; pick another prefix with `--name`",
                member.name,
                owner_words(&service.labels, "service")
            );
        }
        let network = docker::network_name(&state.prefix);
        if let Ok(found) = docker::run(
            sh,
            &[
                "network".into(),
                "inspect".into(),
                "--format={{json .Labels}}".into(),
                network.clone(),
            ],
        ) {
            let labels: BTreeMap<String, String> = serde_json::from_str(&found).unwrap_or_default();
            let ours = labels.get(CLUSTER_LABEL) == Some(&state.prefix)
                && state
                    .cluster_id
                    .as_ref()
                    .is_none_or(|id| labels.get(ID_LABEL) == Some(id));
            if !ours {
                anyhow::bail!(
                    "the name `{network}` is taken by {}; pick another prefix with `--name`",
                    owner_words(&labels, "network")
                );
            }
        }
        Ok(())
    }

    /// Removes the services, network, secrets and configs of cluster `prefix` this
    /// checkout made (and its volume with `volumes`), and leaves the swarm `up --init` made;
    /// see [`crate::runtime::Runtime::remove`].
    pub(super) fn teardown(
        &self,
        sh: &Shell,
        prefix: &str,
        recorded: Option<&State>,
        volumes: bool,
    ) -> anyhow::Result<Vec<String>> {
        let ours_recorded = recorded.is_some_and(|s| s.runtime == RuntimeKind::Swarm);
        let manager = swarm::membership(sh).is_ok_and(|m| m.manager);
        if !manager {
            // The swarm is gone (its services with it); only the local volume may be left.
            let mut removed = Vec::new();
            if ours_recorded {
                if volumes {
                    removed.extend(remove_volume(sh, prefix)?);
                }
                eprintln!(
                    "this engine is not a swarm manager: no service of cluster `{prefix}` can be left here"
                );
            }
            return Ok(removed);
        }
        let here = &self.project.cluster_dir;
        let owned = |id: Option<&str>, checkout: Option<&str>| match recorded {
            Some(state) if state.runtime != RuntimeKind::Swarm => false,
            Some(State {
                cluster_id: Some(own),
                ..
            }) => id == Some(own.as_str()),
            _ => checkout.is_some_and(|c| std::path::Path::new(c) == here),
        };
        let mut removed = Vec::new();
        let ours: Vec<Service> = swarm::services(sh)?
            .into_iter()
            .filter(|s| s.labels.get(CLUSTER_LABEL).map(String::as_str) == Some(prefix))
            .filter(|s| {
                owned(
                    s.labels.get(ID_LABEL).map(String::as_str),
                    s.labels.get(CHECKOUT_LABEL).map(String::as_str),
                )
            })
            .collect();
        if !ours.is_empty() {
            let ids: Vec<String> = ours.iter().map(|s| s.id.clone()).collect();
            let mut args = vec!["service".to_string(), "rm".to_string()];
            args.extend(ids.iter().cloned());
            docker::run(sh, &args)?;
            removed.push(format!("removed {} services", ours.len()));
            // Their containers go a moment later; the network and volume are in use until then.
            let deadline = Instant::now() + TEARDOWN_TIMEOUT;
            let format = "{{.Label \"com.docker.swarm.service.id\"}}";
            loop {
                let left = cmd!(
                    sh,
                    "docker ps --all --filter label=com.docker.swarm.service.id --format {format}"
                )
                .quiet()
                .read()
                .unwrap_or_default();
                let waiting = left
                    .lines()
                    .any(|id| ids.iter().any(|own| own == id.trim()));
                if !waiting || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        for kind in ["secret", "config", "network"] {
            let names = labelled(sh, kind, prefix, &owned)?;
            if names.is_empty() {
                continue;
            }
            let mut args = vec![kind.to_string(), "rm".to_string()];
            args.extend(names.iter().cloned());
            // The overlay network may be detached from the last task a moment late.
            let deadline = Instant::now() + TEARDOWN_TIMEOUT;
            loop {
                match docker::run(sh, &args) {
                    Ok(_) => break,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(POLL_INTERVAL),
                    Err(error) => return Err(error),
                }
            }
            if kind == "network" {
                // The engine removes a swarm network a moment after it says so.
                let deadline = Instant::now() + TEARDOWN_TIMEOUT;
                while names.iter().any(|name| swarm::network_exists(sh, name))
                    && Instant::now() < deadline
                {
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
            removed.push(match kind {
                "network" => format!("removed network {}", names.join(", ")),
                kind => format!("removed {} {kind}s", names.len()),
            });
        }
        if volumes && ours_recorded {
            removed.extend(remove_volume(sh, prefix)?);
        }
        let made = recorded
            .filter(|s| s.runtime == RuntimeKind::Swarm)
            .and_then(|s| s.swarm.clone())
            .unwrap_or_default();
        if made.initialised {
            let others = swarm::services(sh)?.len();
            if others == 0 {
                swarm::leave(sh, made.gateway_bridge)?;
                removed.push("left the single-node swarm `up --init` made".to_string());
            } else {
                eprintln!(
                    "kept the swarm `up --init` made: it runs {others} services of others now; `docker swarm leave --force` ends it"
                );
            }
        }
        Ok(removed)
    }
}

/// Whether `service` is a member of `state`'s cluster.
pub(super) fn is_own(service: &Service, state: &State) -> bool {
    service.labels.get(CLUSTER_LABEL) == Some(&state.prefix)
        && state
            .cluster_id
            .as_ref()
            .is_none_or(|id| service.labels.get(ID_LABEL) == Some(id))
}

/// Who made a service or network with `labels`, for a refusal.
fn owner_words(labels: &BTreeMap<String, String>, kind: &str) -> String {
    if let Some(stack) = labels.get(STACK_LABEL) {
        return format!("a {kind} of the stack `{stack}` (`docker stack rm {stack}` removes it)");
    }
    if let Some(checkout) = labels.get(CHECKOUT_LABEL) {
        return format!("a {kind} of the cluster started from {checkout}");
    }
    format!("a {kind} Flotilla did not make")
}

/// Removes the canonical's data volume on this machine, if there is one; says so.
fn remove_volume(sh: &Shell, prefix: &str) -> anyhow::Result<Option<String>> {
    let volume = docker::volume_name(prefix);
    if docker::run(sh, &["volume".into(), "inspect".into(), volume.clone()]).is_err() {
        return Ok(None);
    }
    docker::run(sh, &["volume".into(), "rm".into(), volume.clone()])?;
    Ok(Some(format!("removed volume {volume}")))
}

/// Names of `kind` (`network`, `secret`, `config`) carrying `prefix`'s cluster label that
/// `owned` accepts (given their cluster id and checkout labels).
fn labelled(
    sh: &Shell,
    kind: &str,
    prefix: &str,
    owned: &dyn Fn(Option<&str>, Option<&str>) -> bool,
) -> anyhow::Result<Vec<String>> {
    let listed = docker::run(
        sh,
        &[
            kind.into(),
            "ls".into(),
            format!("--filter=label={CLUSTER_LABEL}={prefix}"),
            "--format={{.Name}}".into(),
        ],
    )?;
    let mut names = Vec::new();
    for name in listed.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let labels = docker::run(
            sh,
            &[
                kind.into(),
                "inspect".into(),
                "--format={{json .Spec.Labels}}".into(),
                name.to_string(),
            ],
        )
        .or_else(|_| {
            docker::run(
                sh,
                &[
                    kind.into(),
                    "inspect".into(),
                    "--format={{json .Labels}}".into(),
                    name.to_string(),
                ],
            )
        })
        .unwrap_or_default();
        let labels: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap_or_default();
        if owned(
            labels.get(ID_LABEL).map(String::as_str),
            labels.get(CHECKOUT_LABEL).map(String::as_str),
        ) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}
