//! The async driver of the election state machine: feeds it received messages and the clock,
//! hands what it sends to a [`Transport`], and publishes its [`View`] on a watch channel that
//! the rest of the node reads. All protocol decisions live in the `election` crate; this file
//! only does IO, and the IO it does is behind a trait so tests drive it over channels.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use election::{Config, Election, Output, View};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use wire::election::ElectionMessage;
use wire::NodeIndex;

use crate::metrics::NodeMetrics;
use crate::peers::Peers;

/// Election messages in flight to one peer at once; beyond this, new ones are dropped (the
/// protocol tolerates loss, and a peer this far behind is slow or gone).
const MAX_IN_FLIGHT_PER_PEER: usize = 32;

/// How long one election message may take to be acknowledged before it is abandoned.
const SEND_TIMEOUT: Duration = Duration::from_millis(1000);

/// Where the elector's messages go: QUIC streams in a node, channels in tests.
pub trait Transport: Send + Sync + 'static {
    /// Sends one message to edge `to`, fire and forget. The protocol tolerates loss, so an
    /// implementation drops a message rather than queueing it without bound.
    fn send(&self, to: NodeIndex, message: ElectionMessage);
}

/// The clock the driver gives the machine: tokio's, so tests can pause and advance it.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Drives one node's [`Election`] and owns the published view of it.
pub struct Elector {
    machine: Mutex<Election>,
    transport: Arc<dyn Transport>,
    wake: Notify,
    view: watch::Sender<View>,
}

impl Elector {
    /// Starts an election for node `me` among `members` (itself included), ticking until
    /// `shutdown` fires.
    pub fn start(
        me: NodeIndex,
        members: &[NodeIndex],
        config: Config,
        transport: Arc<dyn Transport>,
        shutdown: CancellationToken,
    ) -> Arc<Elector> {
        let machine = Election::new(config, me, members.iter().copied(), now());
        let (view, _) = watch::channel(machine.view());
        let elector = Arc::new(Elector {
            machine: Mutex::new(machine),
            transport,
            wake: Notify::new(),
            view,
        });
        tokio::spawn(elector.clone().ticker(shutdown));
        elector
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Election> {
        // The machine is only mutated inside `handle`/`tick`, which do not panic on any input;
        // a poisoned lock would still hold a consistent machine.
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Feeds a message received from edge `from` (identity from its certificate).
    pub fn receive(&self, from: NodeIndex, message: ElectionMessage) {
        let outputs = self.step(|machine| machine.handle(now(), from, message));
        self.send_all(outputs);
        // The machine may now want an earlier tick (a new candidacy, a new lease).
        self.wake.notify_one();
    }

    /// The view published last: role, term and leader.
    pub fn view(&self) -> View {
        *self.view.borrow()
    }

    /// Follows view changes.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    /// Sleeps exactly until the machine's next wake-up (or a received message moves it), so
    /// timing comes from the machine alone.
    async fn ticker(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let wake_at = self.lock().next_wakeup();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep_until(wake_at.into()) => {}
                () = self.wake.notified() => {}
            }
            let outputs = self.step(|machine| machine.tick(now()));
            self.send_all(outputs);
        }
    }

    /// Runs one step of the machine and publishes the views it announces while still holding
    /// the machine: a step on another thread (a tick racing a received message) can then never
    /// publish an older view over a newer one.
    fn step(&self, step: impl FnOnce(&mut Election) -> Vec<Output>) -> Vec<Output> {
        let mut machine = self.lock();
        let outputs = step(&mut machine);
        for output in &outputs {
            if let Output::ViewChanged(view) = output {
                tracing::info!(role = %view.role, term = %view.term, leader = ?view.leader.map(|l| l.0), "election view changed");
                self.view.send_replace(*view);
            }
        }
        outputs
    }

    /// Hands the messages among `outputs` to the transport, outside the machine's lock.
    fn send_all(&self, outputs: Vec<Output>) {
        for output in outputs {
            if let Output::Send { to, msg } = output {
                self.transport.send(to, msg);
            }
        }
    }
}

/// Election messages over QUIC: a `Request::Election` on a new stream to the peer, with a
/// bounded number in flight per peer.
pub struct QuicTransport {
    peers: Arc<Peers>,
    in_flight: BTreeMap<NodeIndex, Arc<Semaphore>>,
    metrics: Arc<NodeMetrics>,
}

impl QuicTransport {
    pub fn new(peers: Arc<Peers>, metrics: Arc<NodeMetrics>) -> QuicTransport {
        let in_flight = peers
            .members()
            .into_iter()
            .map(|member| (member, Arc::new(Semaphore::new(MAX_IN_FLIGHT_PER_PEER))))
            .collect();
        QuicTransport {
            peers,
            in_flight,
            metrics,
        }
    }
}

impl Transport for QuicTransport {
    fn send(&self, to: NodeIndex, message: ElectionMessage) {
        let (Some(target), Some(slots)) = (self.peers.edge(to).cloned(), self.in_flight.get(&to))
        else {
            return;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%to, "election outbox full; dropping a message");
            return;
        };
        self.metrics.election_messages.sent(message.kind);
        let peers = self.peers.clone();
        tokio::spawn(async move {
            let sent =
                tokio::time::timeout(SEND_TIMEOUT, peers.pool.send_election(&target, message))
                    .await;
            if let Ok(Err(error)) = sent {
                tracing::trace!(%to, %error, "election message not delivered");
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    //! The driver against a fake transport: electors wired together by channels, on tokio's
    //! paused clock, so election timing is logical and the tests are fast and deterministic.

    use std::collections::BTreeSet;
    use std::sync::Weak;

    use wire::{ElectionRole, Term};

    use super::*;

    /// Delivers every message to the addressed elector at once, unless the link is cut.
    #[derive(Default)]
    struct Switchboard {
        electors: Mutex<BTreeMap<NodeIndex, Weak<Elector>>>,
        cut: Mutex<BTreeSet<NodeIndex>>,
        sent: Mutex<usize>,
    }

    struct Port {
        me: NodeIndex,
        board: Arc<Switchboard>,
    }

    impl Transport for Port {
        fn send(&self, to: NodeIndex, message: ElectionMessage) {
            *self.board.sent.lock().unwrap() += 1;
            let cut = self.board.cut.lock().unwrap();
            if cut.contains(&self.me) || cut.contains(&to) {
                return;
            }
            drop(cut);
            let target = self.board.electors.lock().unwrap().get(&to).cloned();
            if let Some(elector) = target.and_then(|weak| weak.upgrade()) {
                let from = self.me;
                // Deliver on a task, as a network would: never re-enter the sender's lock.
                tokio::spawn(async move { elector.receive(from, message) });
            }
        }
    }

    struct Cluster {
        board: Arc<Switchboard>,
        electors: BTreeMap<NodeIndex, (Arc<Elector>, CancellationToken)>,
    }

    impl Cluster {
        fn start(size: u16) -> Cluster {
            let members: Vec<NodeIndex> = (1..=size).map(NodeIndex).collect();
            let board = Arc::new(Switchboard::default());
            let mut electors = BTreeMap::new();
            for &me in &members {
                let shutdown = CancellationToken::new();
                let port = Arc::new(Port {
                    me,
                    board: board.clone(),
                });
                let elector =
                    Elector::start(me, &members, Config::default(), port, shutdown.clone());
                board
                    .electors
                    .lock()
                    .unwrap()
                    .insert(me, Arc::downgrade(&elector));
                electors.insert(me, (elector, shutdown));
            }
            Cluster { board, electors }
        }

        fn views(&self) -> BTreeMap<NodeIndex, View> {
            self.electors
                .iter()
                .map(|(index, (elector, _))| (*index, elector.view()))
                .collect()
        }

        /// Advances logical time in small steps until every live elector follows `leader`.
        async fn settle_on(&self, leader: NodeIndex, live: &[NodeIndex]) -> Term {
            for _ in 0..400 {
                tokio::time::sleep(Duration::from_millis(25)).await;
                let views = self.views();
                let agreed = live.iter().all(|index| views[index].leader == Some(leader));
                if agreed {
                    return views[&leader].term;
                }
            }
            panic!(
                "no agreement on leader {leader} after 10 s: {:?}",
                self.views()
            );
        }

        fn crash(&mut self, index: NodeIndex) {
            let (_, shutdown) = self.electors.remove(&index).expect("a running elector");
            shutdown.cancel();
            self.board.cut.lock().unwrap().insert(index);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_highest_node_leads_and_every_view_is_published() {
        let cluster = Cluster::start(5);
        let mut follower_view = cluster.electors[&NodeIndex(1)].0.subscribe();
        let term = cluster
            .settle_on(NodeIndex(5), &(1..=5).map(NodeIndex).collect::<Vec<_>>())
            .await;
        assert!(term > Term(0));
        let views = cluster.views();
        assert_eq!(views[&NodeIndex(5)].role, ElectionRole::Leader);
        for index in 1..=4 {
            assert_eq!(views[&NodeIndex(index)].role, ElectionRole::Follower);
            assert_eq!(views[&NodeIndex(index)].term, term);
        }
        // The watch channel saw the change, not just the getter.
        assert!(follower_view.has_changed().unwrap());
        assert_eq!(follower_view.borrow_and_update().leader, Some(NodeIndex(5)));
        assert!(*cluster.board.sent.lock().unwrap() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_leader_is_replaced_in_a_higher_term() {
        let mut cluster = Cluster::start(3);
        let all: Vec<NodeIndex> = (1..=3).map(NodeIndex).collect();
        let first = cluster.settle_on(NodeIndex(3), &all).await;
        let crashed_at = tokio::time::Instant::now();
        cluster.crash(NodeIndex(3));
        let second = cluster
            .settle_on(NodeIndex(2), &[NodeIndex(1), NodeIndex(2)])
            .await;
        assert!(second > first, "term {second} after {first}");
        // The design promises a new leader within about a second (logical time here).
        let took = crashed_at.elapsed();
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_off_node_has_no_leader_and_the_rest_keep_theirs() {
        let cluster = Cluster::start(3);
        let all: Vec<NodeIndex> = (1..=3).map(NodeIndex).collect();
        cluster.settle_on(NodeIndex(3), &all).await;
        cluster.board.cut.lock().unwrap().insert(NodeIndex(3));
        let term = cluster
            .settle_on(NodeIndex(2), &[NodeIndex(1), NodeIndex(2)])
            .await;
        // The isolated former leader lost its majority and stepped down.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let isolated = cluster.views()[&NodeIndex(3)];
        assert_ne!(isolated.role, ElectionRole::Leader, "{isolated:?}");
        assert_eq!(isolated.leader, None, "{isolated:?}");
        assert_eq!(cluster.views()[&NodeIndex(2)].term, term);
    }
}
