//! An edge that stops answering mid-run (killed, paused, cut off) sends nothing at all, not
//! even an acknowledgement; the client gives it up as soon as that is clear instead of waiting
//! out the whole attempt, and says why. The edge is reached through a UDP relay the test can
//! turn into a black hole.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Client, ClientError};
use testkit::{credentials, wait_until, TestCluster};
use tokio::net::UdpSocket;
use wire::routing::Routing;
use wire::{ImageId, Role};

/// A relay between the client and one edge that forwards datagrams both ways until it is
/// told to drop them.
struct Relay {
    address: SocketAddr,
    open: Arc<AtomicBool>,
}

impl Relay {
    async fn start(edge: SocketAddr) -> Relay {
        let outside = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("a relay socket"),
        );
        let inside = Arc::new(
            UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("a relay socket"),
        );
        inside.connect(edge).await.expect("the edge's address");
        let address = outside.local_addr().expect("the relay's address");
        let open = Arc::new(AtomicBool::new(true));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        {
            let (outside, inside, open, client) = (
                outside.clone(),
                inside.clone(),
                open.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_536];
                while let Ok((len, from)) = outside.recv_from(&mut buffer).await {
                    *client.lock().unwrap() = Some(from);
                    if open.load(Ordering::SeqCst) {
                        let _ = inside.send(&buffer[..len]).await;
                    }
                }
            });
        }
        {
            let open = open.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 65_536];
                while let Ok(len) = inside.recv(&mut buffer).await {
                    let to = *client.lock().unwrap();
                    if let (Some(to), true) = (to, open.load(Ordering::SeqCst)) {
                        let _ = outside.send_to(&buffer[..len], to).await;
                    }
                }
            });
        }
        Relay { address, open }
    }

    fn black_hole(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_goes_silent_is_given_up_without_waiting_out_the_attempt() {
    let cluster = TestCluster::builder().nodes(1).start().await;
    assert!(
        wait_until(Duration::from_secs(20), || cluster.agreed_on(1)).await,
        "node 1 never led"
    );
    let mut file = cluster.file.clone();
    let edge: SocketAddr = file.nodes[0].quic.parse().expect("the edge's address");
    let relay = Relay::start(edge).await;
    file.nodes[0].quic = relay.address.to_string();
    let client = Client::with_credentials(file, &credentials(Role::Client), Routing::Rendezvous)
        .expect("a client");
    client
        .get_image(ImageId(5))
        .await
        .expect("the edge serves through the relay");

    relay.black_hole();
    let Err(error) = client.get_image(ImageId(6)).await else {
        panic!("a silent edge served an image");
    };
    let ClientError::Exhausted { last, .. } = &error else {
        panic!("expected every edge to have failed, got: {error}");
    };
    assert!(
        last.contains("sent nothing for"),
        "the client must give up a silent edge as silent, not wait out its attempt: {last}"
    );
}
