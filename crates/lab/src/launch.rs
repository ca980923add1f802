//! The command line of each member, the same for both runtimes; only the addresses, the
//! certificate folder and the data folder differ between a container and a local process.

use crate::state::{MemberState, Options};

/// How many sample images the canonical makes when no `--images` folder is given.
pub const SAMPLE_COUNT: u32 = 1000;

/// Where one member listens and finds its files and peers, as seen from inside it.
pub struct Placement {
    /// QUIC listen address.
    pub listen: String,
    /// Metrics listen address.
    pub metrics: String,
    /// Credentials folder.
    pub certs: String,
    /// Canonical image folder (canonical only).
    pub data: String,
    /// Whether the canonical generates sample images into `data`.
    pub samples: bool,
    /// QUIC address of the canonical (nodes only).
    pub canonical: String,
    /// QUIC address of every node, node 1 first, this one included.
    pub peers: Vec<String>,
}

/// Arguments after the binary name for `member`.
pub fn member_args(member: &MemberState, placement: &Placement, options: &Options) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |flag: &str, value: String| {
        args.push(flag.to_string());
        args.push(value);
    };
    if member.is_canonical() {
        push("--name", member.name.clone());
        push("--listen", placement.listen.clone());
        push("--metrics", placement.metrics.clone());
        push("--data", placement.data.clone());
        push("--certs", placement.certs.clone());
        if placement.samples {
            push("--samples", SAMPLE_COUNT.to_string());
        }
        return args;
    }
    push("--index", member.index.to_string());
    push("--name", member.name.clone());
    push("--listen", placement.listen.clone());
    push("--metrics", placement.metrics.clone());
    push("--certs", placement.certs.clone());
    push("--canonical", placement.canonical.clone());
    for (position, address) in placement.peers.iter().enumerate() {
        push("--peer", format!("{}={address}", position + 1));
    }
    if let Some(cache_mb) = options.cache_mb {
        push("--cache-mb", cache_mb.to_string());
    }
    if let Some(replicas) = options.replicas {
        push("--replicas", replicas.to_string());
    }
    args.insert(0, "serve".to_string());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(index: u16) -> MemberState {
        MemberState {
            index,
            name: crate::state::member_name("demo", index),
            quic_port: 0,
            metrics_port: 0,
            pid: None,
        }
    }

    fn placement() -> Placement {
        Placement {
            listen: "0.0.0.0:7000".into(),
            metrics: "0.0.0.0:9100".into(),
            certs: "/certs".into(),
            data: "/data".into(),
            samples: true,
            canonical: "demo_canonical:7000".into(),
            peers: vec!["demo_node_1:7000".into(), "demo_node_2:7000".into()],
        }
    }

    #[test]
    fn nodes_get_every_peer_including_themselves() {
        let options = Options {
            cache_mb: Some(64),
            ..Options::default()
        };
        let args = member_args(&member(2), &placement(), &options).join(" ");
        assert_eq!(
            args,
            "serve --index 2 --name demo_node_2 --listen 0.0.0.0:7000 --metrics 0.0.0.0:9100 \
             --certs /certs --canonical demo_canonical:7000 --peer 1=demo_node_1:7000 \
             --peer 2=demo_node_2:7000 --cache-mb 64"
        );
    }

    #[test]
    fn the_canonical_makes_samples_only_without_images() {
        let args = member_args(&member(0), &placement(), &Options::default()).join(" ");
        assert!(
            args.ends_with("--data /data --certs /certs --samples 1000"),
            "{args}"
        );
        let mut own_images = placement();
        own_images.samples = false;
        let args = member_args(&member(0), &own_images, &Options::default());
        assert!(!args.contains(&"--samples".to_string()));
    }
}
