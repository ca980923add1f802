//! Metrics over HTTP: the RTT gauge for every peer, counters that move with traffic, and text
//! that `promtool check metrics` accepts (when promtool is installed; the Docker suite installs it).

use std::io::{Read, Write};
use std::time::Duration;

use testkit::{counter, wait_until, TestCluster};
use wire::ImageId;

fn scrape(address: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(address).expect("metrics port answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_peer_rtt_and_move_with_traffic() {
    let cluster = TestCluster::builder().nodes(3).metrics().start().await;
    let address = cluster.nodes[&wire::NodeIndex(1)]
        .running
        .metrics
        .expect("metrics bound");
    let has_all_peers = |text: &str| {
        ["node_2", "node_3", "canonical"]
            .iter()
            .all(|peer| text.contains(&format!("flotilla_peer_rtt_seconds{{peer=\"{peer}\"}}")))
    };
    let mut text = String::new();
    let seen = wait_until(Duration::from_secs(20), || {
        text = scrape(address);
        has_all_peers(&text)
    })
    .await;
    assert!(seen, "RTT gauges missing:\n{text}");
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok(),
            "unparseable sample line: {line}"
        );
    }
    assert!(text.contains("# TYPE flotilla_cache_hits_total counter"));
    assert!(text.contains("# HELP flotilla_peer_rtt_seconds"));

    let client = cluster.client();
    client.connect_all().await.unwrap();
    // Ids routed to node 1 so its counters are the ones that move.
    let ids: Vec<ImageId> = (1..200)
        .map(ImageId)
        .filter(|id| client.route(*id)[0].0 == 1)
        .take(3)
        .collect();
    let before = counter(&scrape(address), "flotilla_requests_total");
    for id in &ids {
        client.get_image(*id).await.unwrap();
        client.get_image(*id).await.unwrap();
    }
    // A request is counted once its reply is sent, which may be a moment after the client
    // has read it, so the scrape waits for the count rather than racing it.
    let mut after = String::new();
    let moved = wait_until(Duration::from_secs(5), || {
        after = scrape(address);
        counter(&after, "flotilla_requests_total") >= before + 6.0
    })
    .await;
    assert!(moved, "request counter did not move:\n{after}");
    assert!(
        counter(&after, "flotilla_cache_hits_total") >= 3.0,
        "hits did not move:\n{after}"
    );
    assert!(counter(&after, "flotilla_cache_bytes") > 0.0);

    if let Ok(output) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(after.as_bytes())?;
            child.wait_with_output()
        })
    {
        assert!(
            output.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
