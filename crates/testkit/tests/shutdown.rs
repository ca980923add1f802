//! Shutdown of a server: the accept loop returns only after the requests under way have
//! ended, so a node that exits on SIGTERM leaves no reply task behind it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use net::pool::Target;
use testkit::{credentials, pool_with, wait_until};
use tokio_util::sync::CancellationToken;
use wire::{ImageId, NodeIndex, Request, Role};

/// A handler that takes a moment over every request, and counts requests that began and
/// ended (an end is counted when the task finishes, however it finishes).
#[derive(Default)]
struct SlowHandler {
    started: AtomicUsize,
    ended: Arc<AtomicUsize>,
}

struct Ended(Arc<AtomicUsize>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl net::server::Handler for SlowHandler {
    async fn handle(
        self: Arc<Self>,
        _peer: Role,
        _request: Request,
        mut send: quinn::SendStream,
        _recv: quinn::RecvStream,
    ) {
        let _ended = Ended(self.ended.clone());
        self.started.fetch_add(1, Ordering::SeqCst);
        // The work of a reply that is still under way when shutdown begins; well inside the
        // server's shutdown grace.
        tokio::time::sleep(Duration::from_millis(100)).await;
        net::server::reply_error(&mut send, wire::ErrorKind::NotFound, "nothing here").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_replies_under_way() {
    let server = credentials(Role::Node(NodeIndex(1)));
    let socket = net::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = net::endpoint(socket, &server, true).unwrap();
    let address = endpoint.local_addr().unwrap();
    let handler = Arc::new(SlowHandler::default());
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(net::server::serve(
        endpoint,
        handler.clone(),
        shutdown.clone(),
    ));

    let client = Arc::new(pool_with(&credentials(Role::Client)));
    let target = Target::new(address.to_string(), Role::Node(NodeIndex(1)));
    let requests: Vec<_> = (0..8)
        .map(|id| {
            let client = client.clone();
            let target = target.clone();
            tokio::spawn(async move { client.get_image(&target, ImageId(id)).await })
        })
        .collect();
    let all_began = wait_until(Duration::from_secs(10), || {
        handler.started.load(Ordering::SeqCst) == requests.len()
    })
    .await;
    assert!(all_began, "the server never saw every request");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("the server stops within seconds")
        .expect("the accept loop does not panic");
    assert_eq!(
        handler.ended.load(Ordering::SeqCst),
        requests.len(),
        "the server returned while replies were still being written"
    );
    for request in requests {
        let _ = request.await;
    }
}
