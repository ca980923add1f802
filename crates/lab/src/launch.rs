//! The command line of each member, the same for both runtimes; only the addresses, the
//! certificate folder and the data folder differ between a container and a local process.

use std::path::Path;

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
    /// The canonical's catalog file when it cannot live in `data` (a read-only `--images`
    /// folder); `None` keeps it beside the images.
    pub catalog: Option<String>,
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
        if let Some(catalog) = &placement.catalog {
            push("--catalog", catalog.clone());
        }
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

/// The canonical's arguments for the one-shot `--reindex` run: the same folder and catalog
/// as when it serves.
pub fn reindex_args(canonical: &MemberState, placement: &Placement) -> Vec<String> {
    let mut args = member_args(canonical, placement, &Options::default());
    args.push("--reindex".to_string());
    args
}

/// The file name of the catalog of an `--images` folder, kept in the cluster's writable
/// state: one per folder (named by a hash of its host path), so that serving another folder
/// never compares it with the catalog of the last one.
pub fn images_catalog_name(images: &Path) -> String {
    let digest = wire::Digest::of(images.as_os_str().as_encoded_bytes());
    format!("images-{}.catalog", &digest.to_hex()[..16])
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
            bridge: None,
            host: None,
        }
    }

    fn placement() -> Placement {
        Placement {
            listen: "0.0.0.0:7000".into(),
            metrics: "0.0.0.0:9100".into(),
            certs: "/certs".into(),
            data: "/data".into(),
            samples: true,
            catalog: None,
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
        own_images.catalog = Some("/data/catalogs/images-0123.catalog".into());
        let args = member_args(&member(0), &own_images, &Options::default());
        assert!(!args.contains(&"--samples".to_string()));
        assert!(
            args.join(" ")
                .ends_with("--certs /certs --catalog /data/catalogs/images-0123.catalog"),
            "{args:?}"
        );
        let reindex = reindex_args(&member(0), &own_images);
        assert_eq!(reindex.last().map(String::as_str), Some("--reindex"));
    }

    #[test]
    fn each_images_folder_has_its_own_catalog() {
        let first = images_catalog_name(Path::new("/home/me/photos"));
        assert!(first.starts_with("images-") && first.ends_with(".catalog"));
        assert_eq!(first, images_catalog_name(Path::new("/home/me/photos")));
        assert_ne!(first, images_catalog_name(Path::new("/home/me/other")));
    }
}
