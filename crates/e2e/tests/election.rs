//! The election as users see it through `client status --json`: the highest node leads, a
//! killed leader is replaced in a higher term while cached images stay servable, a returning
//! higher node takes over again (Bully), a minority partition has no leader while the
//! majority keeps one, after `heal` exactly one leader is named by every node, and a one-way
//! cut drops datagrams in one direction only. Each test brings up its own cluster (see
//! `e2e::Cluster`) and runs only when `FLOTILLA_E2E=1` is set.

use anyhow::Context;
use e2e::cluster::COMMAND_TIMEOUT;
use e2e::leadership::{leaderless, led_by};
use e2e::probe::{datagrams, PROBE_DATAGRAMS};
use e2e::{cluster::ELECTION_DEADLINE, Cluster, NODES};

/// Sample ids cached before the leader is killed, which must stay servable while it is down.
const CACHED_IDS: [u64; 4] = [123, 1, 500, 1000];

#[test]
fn highest_node_leads_and_every_node_names_it() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("highest_leads")?;
    let term = cluster.wait_highest_leads()?;
    eprintln!("node {NODES} leads term {term}");
    Ok(())
}

#[test]
fn kill_leader_elects_the_next_node_in_a_higher_term() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("kill_leader")?;
    let everyone: Vec<u16> = (1..=NODES).collect();
    let old_term = cluster.wait_led_by(
        &format!("node {NODES} leading every node before the kill"),
        &everyone,
        NODES,
        None,
    )?;
    // Images fetched before the kill are in the edges' caches.
    for id in CACHED_IDS {
        cluster
            .get_image(id, &cluster.work().join(format!("before-failover-{id}")))
            .with_context(|| format!("fetching image {id} before the leader is killed"))?;
    }
    cluster.xtask_ok(&["kill", &NODES.to_string()], COMMAND_TIMEOUT)?;
    // While the survivors elect a new leader, images cached earlier must still be served
    // (the client may retry on another edge, but no request may fail).
    for id in CACHED_IDS {
        cluster
            .get_image(id, &cluster.work().join(format!("during-failover-{id}")))
            .with_context(|| format!("fetching cached image {id} while the leader is down"))?;
    }
    let survivors: Vec<u16> = (1..NODES).collect();
    let next = NODES - 1;
    let new_term = cluster.wait_led_by(
        &format!("node {next} leading nodes 1 to {next} in a term above {old_term}"),
        &survivors,
        next,
        Some(old_term),
    )?;
    eprintln!("node {next} leads term {new_term} (node {NODES} led term {old_term})");
    Ok(())
}

#[test]
fn restart_leader_takes_over_again_in_a_higher_term() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("restart_leader")?;
    // The leader to restart must be down and replaced first: the kill test's first half.
    cluster.wait_highest_leads()?;
    cluster.xtask_ok(&["kill", &NODES.to_string()], COMMAND_TIMEOUT)?;
    let survivors: Vec<u16> = (1..NODES).collect();
    let next = NODES - 1;
    let old_term = cluster.wait_led_by(
        &format!("node {next} leading nodes 1 to {next} before the restart"),
        &survivors,
        next,
        None,
    )?;
    cluster.xtask_ok(&["restart", &NODES.to_string()], COMMAND_TIMEOUT)?;
    let everyone: Vec<u16> = (1..=NODES).collect();
    let term = cluster.wait_led_by(
        &format!("node {NODES} leading every node again in a term above {old_term}"),
        &everyone,
        NODES,
        Some(old_term),
    )?;
    eprintln!("node {NODES} leads again, term {term}");
    Ok(())
}

#[test]
fn partition_leaves_the_minority_leaderless_and_heal_reunites() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("partition")?;
    // Cut a settled cluster, as users would.
    cluster.wait_highest_leads()?;
    cluster.xtask_ok(&["partition", "1,2", "3,4,5"], COMMAND_TIMEOUT)?;
    anyhow::ensure!(
        cluster.has_partition_table(1)?,
        "node 1 has no partition rules"
    );
    anyhow::ensure!(
        cluster.has_partition_table(5)?,
        "node 5 has no partition rules"
    );
    let term = cluster.wait_until(
        "nodes 1 and 2 without a leader, node 5 leading 3, 4 and 5",
        ELECTION_DEADLINE,
        || {
            let rows = cluster.status()?;
            Ok(leaderless(&rows, &[1, 2]).and_then(|()| led_by(&rows, &[3, 4, 5], 5, None)))
        },
    )?;
    eprintln!("minority 1,2 has no leader; node 5 leads 3,4,5 in term {term}");
    cluster.xtask_ok(&["heal"], COMMAND_TIMEOUT)?;
    for index in 1..=NODES {
        anyhow::ensure!(
            !cluster.has_partition_table(index)?,
            "node {index} keeps partition rules after heal"
        );
    }
    cluster.one_agreed_leader()?;
    cluster.ping_all()
}

#[test]
fn one_way_partition_drops_datagrams_from_1_to_2_only() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let cluster = Cluster::start("one_way")?;
    // The test ends by checking that the election stayed settled, so it starts settled.
    cluster.wait_highest_leads()?;
    let before = (datagrams(&cluster, 1, 2)?, datagrams(&cluster, 2, 1)?);
    eprintln!(
        "before the cut: 1->2 {} of {PROBE_DATAGRAMS} datagrams arrive, 2->1 {}",
        before.0, before.1
    );
    anyhow::ensure!(
        before.0 > 0 && before.1 > 0,
        "datagrams do not cross between nodes 1 and 2 even before the cut, so the probe shows nothing"
    );
    cluster.xtask_ok(&["partition", "--one-way", "1", "2"], COMMAND_TIMEOUT)?;
    anyhow::ensure!(
        cluster.has_partition_table(2)? && !cluster.has_partition_table(1)?,
        "a one-way cut 1->2 must put rules on node 2 only"
    );
    let cut = (datagrams(&cluster, 1, 2)?, datagrams(&cluster, 2, 1)?);
    eprintln!(
        "cut one way: 1->2 {} of {PROBE_DATAGRAMS} datagrams arrive, 2->1 {}",
        cut.0, cut.1
    );
    anyhow::ensure!(cut.0 == 0, "{} datagrams crossed the cut 1->2", cut.0);
    anyhow::ensure!(
        cut.1 > 0,
        "no datagram went 2->1, which the one-way cut must leave open"
    );
    cluster.xtask_ok(&["heal"], COMMAND_TIMEOUT)?;
    let healed = datagrams(&cluster, 1, 2)?;
    eprintln!("healed: 1->2 {healed} of {PROBE_DATAGRAMS} datagrams arrive");
    anyhow::ensure!(healed > 0, "1->2 stays cut after heal");
    cluster.one_agreed_leader()?;
    Ok(())
}
