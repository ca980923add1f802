//! Where things are: the repository root, the target folder, the cluster folder, and the
//! cluster name prefix derived from the repository folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use wire::cluster::{CLUSTER_DIR, CLUSTER_ENV};

use crate::UsageError;

/// Longest prefix we derive or accept: `{prefix}_canonical` must stay a valid host name
/// (at most 63 characters).
const MAX_PREFIX_LEN: usize = 40;

/// Prefix used when the repository folder's name has no usable character at all.
const FALLBACK_PREFIX: &str = "flotilla";

/// What cargo sets for the crate it runs (besides `CARGO_PKG_*`). A cargo started with them
/// inherited sees a `CARGO_MANIFEST_DIR` that differs from a shell's, and build scripts that
/// watch it (ring's) rerun, rebuilding everything above them: programs that start cargo
/// remove them first ([`forget_cargo_run_variables`]).
pub const CARGO_CRATE_VARIABLES: [&str; 5] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
];

/// Removes from this process's environment what `cargo run` set for the crate it ran, so
/// that the cargo commands it starts agree with a shell's on what is fresh. Call it first
/// in `main`, before any thread starts.
pub fn forget_cargo_run_variables() {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || CARGO_CRATE_VARIABLES.contains(&&*name) {
            std::env::remove_var(&key);
        }
    }
}

/// Lets xtask end quietly when the reader of its output goes away (`cargo xtask status |
/// head`): Rust ignores SIGPIPE, so `println!` to a closed pipe would panic; with the
/// default action it ends as `cat` would. Call it first in `main`, before any thread starts.
pub fn end_quietly_on_closed_stdout() {
    // SAFETY: called before any thread starts; it only sets the signal's disposition back to
    // the system default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The paths every subcommand works with.
#[derive(Clone, Debug)]
pub struct Project {
    /// Repository root (the workspace folder).
    pub root: PathBuf,
    /// Cargo's target folder.
    pub target_dir: PathBuf,
    /// The cluster description folder: `$FLOTILLA_CLUSTER` or `.cluster/` at the root.
    pub cluster_dir: PathBuf,
}

impl Project {
    /// Locates the project from where xtask was compiled and where it runs.
    pub fn locate() -> anyhow::Result<Project> {
        // This crate lives two levels below the workspace root (`crates/lab`).
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .context("crates/lab has no workspace folder above it")?
            .to_path_buf();
        let target_dir = target_dir(&root);
        let cluster_dir = match std::env::var_os(CLUSTER_ENV) {
            Some(dir) if !dir.is_empty() => absolute(&root, Path::new(&dir)),
            _ => root.join(CLUSTER_DIR),
        };
        Ok(Project {
            root,
            target_dir,
            cluster_dir,
        })
    }

    /// The prefix a cluster gets when `--name` is not given: the repository folder's name.
    pub fn default_prefix(&self) -> String {
        let folder = self
            .root
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        sanitize_prefix(&folder)
    }

    /// Host folder holding one member's credentials (`certs/node-3`, `certs/canonical`).
    pub fn member_certs(&self, stem: &str) -> PathBuf {
        self.cluster_dir.join("certs").join(stem)
    }

    /// Host folder holding the operator's credentials (never mounted into a member).
    pub fn operator_certs(&self) -> PathBuf {
        self.cluster_dir.join("operator")
    }

    /// Host folder holding the client's credentials.
    pub fn client_certs(&self) -> PathBuf {
        self.cluster_dir.join("client")
    }

    /// Host folder of the process runtime's logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.cluster_dir.join("logs")
    }

    /// Host folder of the process runtime's canonical sample images.
    pub fn canonical_data_dir(&self) -> PathBuf {
        self.cluster_dir.join("data").join("canonical")
    }

    /// Catalogs of `--images` folders (process runtime): the canonical's writable state
    /// when its images folder is the user's.
    pub fn catalogs_dir(&self) -> PathBuf {
        self.cluster_dir.join("data").join("catalogs")
    }
}

/// Cargo's target folder: the one holding this very binary when run by `cargo xtask`
/// (`<target>/debug/xtask`), else `$CARGO_TARGET_DIR`, else `<root>/target`.
fn target_dir(root: &Path) -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        let profile_dir = exe.parent();
        let is_profile = profile_dir
            .and_then(Path::file_name)
            .is_some_and(|name| name == "debug" || name == "release");
        if let (true, Some(target)) = (is_profile, profile_dir.and_then(Path::parent)) {
            if target.join("CACHEDIR.TAG").is_file() {
                return target.to_path_buf();
            }
        }
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => absolute(root, Path::new(&dir)),
        _ => root.join("target"),
    }
}

fn absolute(root: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| root.to_path_buf())
            .join(path)
    }
}

/// Turns any folder name into a prefix Docker accepts for container, network and volume
/// names and that works as a host name: lower-case `[a-z0-9_.-]`, starting with `[a-z0-9]`
/// (Docker rejects names starting with anything else, so leading `_`, `.` and `-` are
/// dropped), at most [`MAX_PREFIX_LEN`] characters, `flotilla` when nothing is left.
pub fn sanitize_prefix(folder: &str) -> String {
    let mapped: String = folder
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    let trimmed = mapped.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    let mut prefix: String = trimmed.chars().take(MAX_PREFIX_LEN).collect();
    // A trailing separator would read oddly in `x-_node_1`.
    while prefix.ends_with(['_', '.', '-']) {
        prefix.pop();
    }
    if prefix.is_empty() {
        FALLBACK_PREFIX.to_string()
    } else {
        prefix
    }
}

/// Parses a `--name` given by the user: it must already be a valid prefix.
pub fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= MAX_PREFIX_LEN
        && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "`{text}` is not a cluster name: use 1 to {MAX_PREFIX_LEN} characters of a-z, 0-9, `_`, `.`, `-`, starting with a letter or digit"
        ))
    }
}

/// Fails with a usage error unless `path` is an existing folder, and makes it absolute.
pub fn existing_dir(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| UsageError(format!("{what} {}: {e}", path.display())))?;
    if !absolute.is_dir() {
        return Err(UsageError(format!("{what} {} is not a folder", path.display())).into());
    }
    Ok(absolute)
}

/// Files of an images folder that are not served, shown by name: enough to see the pattern.
const SKIPPED_SHOWN: usize = 5;

/// An images folder checked before `up` starts anything.
#[derive(Debug)]
pub struct ImagesDir {
    /// The folder, absolute.
    pub path: PathBuf,
    /// Each file the canonical will not serve, and why: `` `cat.png` (not named <id>.<ext>) ``.
    pub skipped: Vec<String>,
}

/// `path` as an absolute folder that holds at least one image named `<id>.<ext>`, with the
/// files the canonical will skip and why; a usage error naming the folder otherwise
/// (missing, unreadable, empty, or no servable image, with what is there), so `up` refuses
/// before it builds or starts anything.
pub fn images_dir(path: &Path) -> anyhow::Result<ImagesDir> {
    let what = "the --images folder";
    let absolute = existing_dir(path, what)?;
    let unreadable = |e: std::io::Error| UsageError(format!("{what} {}: {e}", path.display()));
    let mut images = 0;
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(&absolute).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Follows symlinks, as the canonical does.
        let why = match std::fs::metadata(entry.path()) {
            _ if wire::ImageId::from_file_name(&name).is_none() => {
                "not named <id>.<ext>".to_string()
            }
            Err(error) => format!("unreadable: {error}"),
            Ok(metadata) if !metadata.is_file() => "not a file".to_string(),
            Ok(metadata) if metadata.len() > wire::limits::MAX_IMAGE_BYTES => format!(
                "{} bytes, over the {} byte image limit",
                metadata.len(),
                wire::limits::MAX_IMAGE_BYTES
            ),
            Ok(_) => {
                images += 1;
                continue;
            }
        };
        skipped.push(format!("`{name}` ({why})"));
    }
    skipped.sort();
    if images > 0 {
        return Ok(ImagesDir {
            path: absolute,
            skipped,
        });
    }
    let shown = skipped
        .iter()
        .take(SKIPPED_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let more = skipped.len().saturating_sub(SKIPPED_SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Err(UsageError(if skipped.is_empty() {
        format!(
            "{what} {} is empty; put images named `<id>.<ext>` there (e.g. 5.png) or start without --images for generated samples",
            path.display()
        )
    } else {
        format!(
            "{what} {} holds no image the canonical can serve: {shown}{more}; name images `<id>.<ext>` (e.g. 5.png) or start without --images",
            path.display()
        )
    })
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_folder_needs_one_image_named_id_dot_ext() {
        let dir = std::env::temp_dir().join(format!("flotilla-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let error = |dir: &Path| {
            let error = images_dir(dir).unwrap_err();
            assert!(error.downcast_ref::<UsageError>().is_some(), "{error}");
            error.to_string()
        };
        assert!(error(&dir).contains("is empty"));
        std::fs::write(dir.join("cat.png"), b"x").unwrap();
        std::fs::write(dir.join("5.png.tmp"), b"x").unwrap();
        let said = error(&dir);
        assert!(
            said.contains("`5.png.tmp` (not named <id>.<ext>), `cat.png` (not named <id>.<ext>)"),
            "{said}"
        );
        std::fs::write(dir.join("5.png"), b"x").unwrap();
        let images = images_dir(&dir).unwrap();
        assert_eq!(images.skipped.len(), 2, "{:?}", images.skipped);
        assert!(error(&dir.join("missing")).contains("No such file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn any_folder_name_gives_a_docker_name() {
        assert_eq!(sanitize_prefix("main"), "main");
        assert_eq!(sanitize_prefix("_x"), "x");
        assert_eq!(sanitize_prefix("__My Repo!"), "my_repo");
        assert_eq!(sanitize_prefix("flotilla.v2-dev"), "flotilla.v2-dev");
        assert_eq!(sanitize_prefix("___"), "flotilla");
        assert_eq!(sanitize_prefix(""), "flotilla");
        assert_eq!(sanitize_prefix("éa"), "a");
        assert_eq!(sanitize_prefix(&"a".repeat(100)).len(), MAX_PREFIX_LEN);
        for name in ["_x", "-", "Ünïcødé", "a b c", "9lives", ".hidden"] {
            let prefix = sanitize_prefix(name);
            assert!(parse_prefix(&prefix).is_ok(), "{name} gave {prefix}");
        }
    }

    #[test]
    fn user_prefixes_are_checked() {
        assert!(parse_prefix("flotilla_e2e").is_ok());
        assert!(parse_prefix("_x").is_err());
        assert!(parse_prefix("Upper").is_err());
        assert!(parse_prefix("a/b").is_err());
        assert!(parse_prefix("").is_err());
    }
}
