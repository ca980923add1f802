//! The cluster CA and one credentials folder per member, written under the cluster folder.
//!
//! Layout: `ca/{ca.pem,ca.key}` (host only, never mounted), `certs/<stem>/{ca.pem,cert.pem,
//! key.pem}` per member (`canonical`, `node-3`), `client/{...}` for the client, `operator/{...}`
//! for the operator (the only certificate members take socket faults from).
//!
//! Permissions: `ca/`, `certs/`, `client/` and `operator/` are 0700, so on the host only the user who ran
//! `up` (and root) can reach any key. Inside `certs/`, each member folder is 0755 with a 0644
//! key: a container mounts only its own folder, read-only, and runs as uid 65532, which reads
//! the key as "other". This works whoever owns the files (root, a docker-group user, rootless
//! Docker's remapped ids) without chown and without running containers as the host user.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use wire::pki::{ClusterCa, Role, CA_FILE, CERT_FILE, KEY_FILE};

use crate::project::Project;

/// File name of the CA's private key inside `ca/`.
const CA_KEY_FILE: &str = "ca.key";

/// Loads the cluster CA from `ca/`, or makes one when there is none yet. Reusing it keeps the
/// certificates of running members valid when `up` runs again.
pub fn ensure_ca(project: &Project) -> anyhow::Result<ClusterCa> {
    let dir = project.cluster_dir.join("ca");
    let cert_path = dir.join(CA_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        let cert = fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        let key = fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        return ClusterCa::from_pem(&cert, &key).with_context(|| {
            format!(
                "loading the cluster CA from {} (remove that folder to make a new one)",
                dir.display()
            )
        });
    }
    let ca = ClusterCa::generate().context("generating the cluster CA")?;
    private_dir(&dir)?;
    write(&cert_path, ca.cert_pem(), 0o644)?;
    write(&key_path, ca.key_pem(), 0o600)?;
    Ok(ca)
}

/// Makes sure each role has a credentials folder signed by `ca`; folders that already hold a
/// certificate from this CA are left alone.
pub fn ensure_credentials(project: &Project, ca: &ClusterCa, roles: &[Role]) -> anyhow::Result<()> {
    private_dir(&project.cluster_dir.join("certs"))?;
    for role in roles {
        let dir = project.member_certs(&role.stem());
        ensure_folder(ca, *role, &dir, 0o755, 0o644)?;
    }
    let client = project.client_certs();
    private_dir(&client)?;
    ensure_folder(ca, Role::Client, &client, 0o700, 0o600)?;
    // The operator's certificate sets faults in members' sockets; it stays on this machine.
    let operator = project.operator_certs();
    private_dir(&operator)?;
    ensure_folder(ca, Role::Operator, &operator, 0o700, 0o600)
}

/// Removes every member's and the client's credentials (the CA stays).
pub fn remove_credentials(project: &Project) -> anyhow::Result<()> {
    for dir in [
        project.cluster_dir.join("certs"),
        project.client_certs(),
        project.operator_certs(),
    ] {
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn ensure_folder(
    ca: &ClusterCa,
    role: Role,
    dir: &Path,
    dir_mode: u32,
    key_mode: u32,
) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(dir_mode))
        .with_context(|| format!("setting permissions of {}", dir.display()))?;
    let current_ca = fs::read_to_string(dir.join(CA_FILE)).unwrap_or_default();
    let complete = dir.join(CERT_FILE).is_file() && dir.join(KEY_FILE).is_file();
    if complete && current_ca == ca.cert_pem() {
        return Ok(());
    }
    let issued = ca
        .issue(role)
        .with_context(|| format!("issuing the certificate of {role}"))?;
    write(&dir.join(CA_FILE), ca.cert_pem(), 0o644)?;
    write(&dir.join(CERT_FILE), &issued.cert_pem, 0o644)?;
    write(&dir.join(KEY_FILE), &issued.key_pem, key_mode)
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting permissions of {}", dir.display()))
}

/// Writes `text` to `path` with `mode`, never leaving a wider mode in between: the file is
/// written to a temporary name created with that mode, then renamed.
fn write(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", temporary.display()))?;
    // The mode given to open() is filtered by the umask; set it exactly.
    fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", temporary.display()))?;
    fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::tls::Credentials;
    use wire::NodeIndex;

    #[test]
    fn credentials_load_and_survive_a_second_up() {
        let base = std::env::temp_dir().join(format!("xtask-certs-{}", std::process::id()));
        let project = Project {
            root: base.clone(),
            target_dir: base.join("target"),
            cluster_dir: base.join(".cluster"),
        };
        let roles = [Role::Canonical, Role::Node(NodeIndex(1))];
        let ca = ensure_ca(&project).unwrap();
        ensure_credentials(&project, &ca, &roles).unwrap();
        let node_dir = project.member_certs("node-1");
        let first_cert = fs::read_to_string(node_dir.join(CERT_FILE)).unwrap();
        assert_eq!(
            Credentials::load(&node_dir).unwrap().role,
            Role::Node(NodeIndex(1))
        );
        assert_eq!(
            Credentials::load(&project.client_certs()).unwrap().role,
            Role::Client
        );
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&project.cluster_dir.join("ca").join(CA_KEY_FILE)),
            0o600
        );
        assert_eq!(mode(&project.cluster_dir.join("certs")), 0o700);
        assert_eq!(mode(&project.client_certs().join(KEY_FILE)), 0o600);
        assert_eq!(
            Credentials::load(&project.operator_certs()).unwrap().role,
            Role::Operator
        );
        assert_eq!(mode(&project.operator_certs().join(KEY_FILE)), 0o600);

        // A second `up` reuses the CA and keeps existing certificates.
        let again = ensure_ca(&project).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        ensure_credentials(&project, &again, &roles).unwrap();
        assert_eq!(
            fs::read_to_string(node_dir.join(CERT_FILE)).unwrap(),
            first_cert
        );
        fs::remove_dir_all(&base).unwrap();
    }
}
