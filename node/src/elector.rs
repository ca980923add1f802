//! The async driver of the election state machine: feeds it received messages and the clock,
//! sends what it asks for over QUIC, and publishes its view (role, term, leader) to the node.
//! All protocol decisions live in [`crate::election`]; this file only does IO.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use wire::election::ElectionMessage;
use wire::{NodeIndex, Request};

use crate::election::{Config, Election, Output};
use crate::peers::Peers;
use crate::{Leadership, Node};

/// Election messages in flight to one peer at once; beyond this, new ones are dropped (the
/// protocol tolerates loss, and a peer this far behind is slow or gone).
const MAX_IN_FLIGHT_PER_PEER: usize = 32;

/// How long one election message may take to be acknowledged before it is abandoned.
const SEND_TIMEOUT: Duration = Duration::from_millis(1000);

/// The longest the driver sleeps between ticks, whatever the machine's next wake-up says.
const MAX_TICK_SLEEP: Duration = Duration::from_millis(50);

/// Drives one node's [`Election`].
pub struct Elector {
    machine: Mutex<Election>,
    peers: Arc<Peers>,
    in_flight: BTreeMap<NodeIndex, Arc<Semaphore>>,
    wake: Notify,
    node: Weak<Node>,
}

impl Elector {
    /// Starts the election for `node`, ticking until `shutdown` fires.
    pub fn start(node: &Arc<Node>, config: Config, shutdown: CancellationToken) -> Arc<Elector> {
        let members = node.peers.members();
        let machine = Election::new(
            config,
            node.config.index,
            members.iter().copied(),
            Instant::now(),
        );
        let elector = Arc::new(Elector {
            machine: Mutex::new(machine),
            peers: node.peers.clone(),
            in_flight: members
                .iter()
                .map(|member| (*member, Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_PEER))))
                .collect(),
            wake: Notify::new(),
            node: Arc::downgrade(node),
        });
        elector.publish();
        tokio::spawn(elector.clone().ticker(shutdown));
        elector
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Election> {
        // The machine is only mutated inside `handle`/`tick`, which do not panic on any input;
        // a poisoned lock would still hold a consistent machine.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds a message received from edge `from` (identity from its certificate).
    pub fn receive(self: &Arc<Self>, from: NodeIndex, message: ElectionMessage) {
        let outputs = self.lock().handle(Instant::now(), from, message);
        self.carry_out(outputs);
        // The machine may now want an earlier tick (a new candidacy, a new lease).
        self.wake.notify_one();
    }

    async fn ticker(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wake_at = {
                let next = self.lock().next_wakeup();
                let latest = Instant::now() + MAX_TICK_SLEEP;
                next.min(latest)
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake_at.into()) => {}
                () = self.wake.notified() => {}
            }
            let outputs = self.lock().tick(Instant::now());
            self.carry_out(outputs);
        }
    }

    fn carry_out(self: &Arc<Self>, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, msg } => self.send(to, msg),
                Output::LeaderChanged { term, leader } => {
                    tracing::info!(%term, leader = ?leader.map(|l| l.0), "leadership changed");
                }
            }
        }
        self.publish();
    }

    fn send(self: &Arc<Self>, to: NodeIndex, message: ElectionMessage) {
        let (Some(target), Some(slots)) = (self.peers.edge(to).cloned(), self.in_flight.get(&to))
        else {
            return;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%to, "election outbox full; dropping a message");
            return;
        };
        let peers = self.peers.clone();
        tokio::spawn(async move {
            let request = Request::Election(message);
            let sent =
                tokio::time::timeout(SEND_TIMEOUT, peers.pool.call(&target, &request, None)).await;
            if let Ok(Err(error)) = sent {
                tracing::trace!(%to, %error, "election message not delivered");
            }
            drop(permit);
        });
    }

    /// Pushes the machine's view to the node when it changed.
    fn publish(&self) {
        let view = {
            let machine = self.lock();
            Leadership {
                role: machine.role(),
                term: machine.term(),
                leader: machine.leader(),
            }
        };
        // The node's own view is the record of what was published last.
        if let Some(node) = self.node.upgrade() {
            if node.leadership() != view {
                node.set_leadership(view);
            }
        }
    }
}
