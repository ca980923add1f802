//! Reading a member's Prometheus metrics from the host: one `GET` over a std `TcpStream` (the
//! members' endpoint answers HTTP/1.1 with a Content-Length and closes), and the samples of the
//! text format, so xtask needs no HTTP client or Prometheus crate.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;

/// Largest metrics page read (a node's page is a few KB).
const MAX_PAGE_BYTES: u64 = 4 << 20;

/// One sample line: `name{label="value",…} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scraped metrics page.
#[derive(Clone, Debug)]
pub struct Metrics {
    /// The page as served (what `promtool check metrics` reads).
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: String) -> Metrics {
        let samples = text.lines().filter_map(parse_sample).collect();
        Metrics { text, samples }
    }

    /// The value of the first sample named `name` that has all of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && has_labels(s, labels))
            .map(|s| s.value)
    }

    /// The sum of every sample named `name` that has all of `labels` (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name && has_labels(s, labels))
            .map(|s| s.value)
            // An empty float sum is -0.0; +0.0 reads better.
            .sum::<f64>()
            + 0.0
    }
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(key, value)| sample.labels.get(*key).is_some_and(|v| v == value))
}

/// GETs `url` (`http://host:port/path`) within `timeout`.
pub fn fetch(url: &str, timeout: Duration) -> anyhow::Result<Metrics> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .with_context(|| format!("{authority} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: the members' endpoint parses the request from its first read.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("asking {url}"))?;
    let mut response = Vec::new();
    stream
        .take(MAX_PAGE_BYTES)
        .read_to_end(&mut response)
        .with_context(|| format!("reading {url}"))?;
    let response = String::from_utf8(response).with_context(|| format!("{url} is not text"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("{url} sent no HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.split_whitespace().nth(1) == Some("200"),
        "{url} answered `{status}`"
    );
    Ok(Metrics::parse(body.to_string()))
}

/// One sample line, or `None` for comments, blank and malformed lines.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → {a: x, b: y"z}.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let mut chars = after.strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (position, c) = chars.next()?;
            match c {
                '"' => break position,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.insert(key.trim().to_string(), value);
        rest = after[1 + end + 1..].trim_start_matches(',').trim();
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_and_labels_parse() {
        let page = Metrics::parse(
            "# HELP flotilla_term Current election term\n\
             # TYPE flotilla_term gauge\n\
             flotilla_term 45\n\
             flotilla_peer_rtt_seconds{peer=\"node_2\"} 0.15369556\n\
             flotilla_requests_total{kind=\"image\",outcome=\"ok\"} 3\n\
             flotilla_requests_total{kind=\"ping\",outcome=\"ok\"} 4\n\
             odd{label=\"a \\\"quoted\\\", comma\"} +Inf\n\
             broken{x=} 1\n"
                .to_string(),
        );
        assert_eq!(page.value("flotilla_term", &[]), Some(45.0));
        assert_eq!(
            page.value("flotilla_peer_rtt_seconds", &[("peer", "node_2")]),
            Some(0.15369556)
        );
        assert_eq!(
            page.value("flotilla_peer_rtt_seconds", &[("peer", "node_3")]),
            None
        );
        assert_eq!(page.sum("flotilla_requests_total", &[]), 7.0);
        assert_eq!(
            page.sum("flotilla_requests_total", &[("kind", "image")]),
            3.0
        );
        assert_eq!(
            page.value("odd", &[("label", "a \"quoted\", comma")]),
            Some(f64::INFINITY)
        );
        assert_eq!(page.value("broken", &[]), None);
    }
}
