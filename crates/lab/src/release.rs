//! Static release binaries and the scratch images made from them.
//!
//! The binaries are built for the musl target when it is installed (as in `nix develop`),
//! else for the host's glibc target with `+crt-static`. The target is always named with
//! `--target`, so the flag reaches only the binaries, never build scripts or proc macros.
//! glibc 2.34 and later carry the DNS and files name services inside libc, so a static
//! glibc binary resolves other containers' names in a scratch image (checked on Docker 20.10).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::{cmd, Shell};

use crate::docker::{self, BUILD_LABEL, CANONICAL_IMAGE, NODE_IMAGE};
use crate::elf::{self, Linkage};
use crate::project::Project;

/// Mixed into each image's build digest: bump it when the way a build context is made
/// changes, so that images made the old way are rebuilt.
const CONTEXT_VERSION: &str = "flotilla-context-2";

/// The static binaries of one build.
pub struct StaticBinaries {
    pub triple: String,
    pub node: PathBuf,
    pub canonical: PathBuf,
    pub client: PathBuf,
}

/// Picks the target triple for static binaries: `<arch>-unknown-linux-musl` when its standard
/// library is installed, else the host's `-linux-gnu` triple.
fn static_triple(sh: &Shell) -> anyhow::Result<(String, bool)> {
    let version = cmd!(sh, "rustc -vV")
        .quiet()
        .read()
        .context("running `rustc -vV`")?;
    let host = version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .context("`rustc -vV` names no host")?
        .to_string();
    let Some(arch) = host.strip_suffix("-unknown-linux-gnu") else {
        anyhow::bail!(
            "static Linux binaries need a Linux glibc host (this one is {host}); use the process runtime"
        );
    };
    let musl = format!("{arch}-unknown-linux-musl");
    // rustup and nix both keep each target's standard library under the sysroot.
    let sysroot = cmd!(sh, "rustc --print sysroot")
        .quiet()
        .read()
        .context("running `rustc --print sysroot`")?;
    let has_musl = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(&musl)
        .join("lib")
        .is_dir();
    Ok(if has_musl {
        (musl, true)
    } else {
        (host, false)
    })
}

/// Where [`build_binaries`] puts the binaries: `target/<triple>/release`.
pub fn binaries_dir(sh: &Shell, project: &Project) -> anyhow::Result<PathBuf> {
    let (triple, _) = static_triple(sh)?;
    Ok(project.target_dir.join(triple).join("release"))
}

/// Builds the node, canonical and client statically in release mode and checks the result.
pub fn build_binaries(sh: &Shell, project: &Project) -> anyhow::Result<StaticBinaries> {
    build(sh, project, |_| true)
}

/// The release client of [`build_binaries`], built (all three binaries, so that what `up`
/// built stays fresh) first if it is stale; says so only when it was never built.
pub fn client_binary(sh: &Shell, project: &Project) -> anyhow::Result<PathBuf> {
    Ok(build(sh, project, |dir| !dir.join("client").exists())?.client)
}

/// The build behind both; `say(dir)` tells whether to announce it, given the binaries' folder.
fn build(
    sh: &Shell,
    project: &Project,
    say: impl FnOnce(&Path) -> bool,
) -> anyhow::Result<StaticBinaries> {
    let (triple, musl) = static_triple(sh)?;
    let dir = project.target_dir.join(&triple).join("release");
    let how = if musl { "musl" } else { "glibc, +crt-static" };
    if say(&dir) {
        eprintln!("building static release binaries for {triple} ({how})");
    }
    let mut build = cmd!(
        sh,
        "cargo build --quiet --release --target {triple} -p flotilla-node -p flotilla-canonical -p flotilla-client"
    )
    .quiet();
    if !musl {
        let variable = format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            triple.to_uppercase().replace('-', "_")
        );
        build = build.env(variable, "-C target-feature=+crt-static");
    }
    build.run().map_err(|_| {
        anyhow::anyhow!("the workspace does not build in release mode (see cargo's errors above); fix them and try again")
    })?;
    let binaries = StaticBinaries {
        node: dir.join("flotilla-node"),
        canonical: dir.join("flotilla-canonical"),
        client: dir.join("client"),
        triple,
    };
    for binary in [&binaries.node, &binaries.canonical] {
        if let Linkage::Dynamic(why) = elf::linkage(binary)? {
            anyhow::bail!(
                "{} is not statically linked ({why}); a scratch image cannot run it (is RUSTFLAGS set? it overrides the static flag)",
                binary.display()
            );
        }
    }
    Ok(binaries)
}

/// One image after [`build_images`].
pub struct ImageReport {
    pub image: &'static str,
    pub rebuilt: bool,
    pub size_bytes: u64,
}

/// Builds the node and canonical images from `docker/`, each only when its binary or
/// Dockerfile changed since the image was made (the image carries their digest as a label).
pub fn build_images(
    sh: &Shell,
    project: &Project,
    binaries: &StaticBinaries,
) -> anyhow::Result<Vec<ImageReport>> {
    let plans = [
        (
            NODE_IMAGE,
            "node.Dockerfile",
            &binaries.node,
            "flotilla-node",
        ),
        (
            CANONICAL_IMAGE,
            "canonical.Dockerfile",
            &binaries.canonical,
            "flotilla-canonical",
        ),
    ];
    let mut reports = Vec::new();
    for (image, dockerfile, binary, binary_name) in plans {
        let dockerfile = project.root.join("docker").join(dockerfile);
        let recipe = std::fs::read(&dockerfile)
            .with_context(|| format!("reading {}", dockerfile.display()))?;
        let body =
            std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
        let digest = wire::Digest::of(
            &[
                CONTEXT_VERSION.as_bytes(),
                recipe.as_slice(),
                body.as_slice(),
            ]
            .concat(),
        )
        .to_hex();
        let rebuilt = docker::image_label(sh, image, BUILD_LABEL).as_deref() != Some(&digest);
        if rebuilt {
            // A context of just the binary and the Dockerfile: nothing else is sent.
            let context = sh.create_temp_dir().context("making a build context")?;
            let copy = context.path().join(binary_name);
            std::fs::write(&copy, &body).context("copying the binary into the build context")?;
            // COPY keeps the mode from the context: the binary must be executable there.
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
                .context("making the binary executable in the build context")?;
            std::fs::write(context.path().join("Dockerfile"), &recipe)
                .context("copying the Dockerfile into the build context")?;
            // The canonical image carries an empty /data owned by its user, so that a fresh
            // named volume mounted there is writable by that user.
            std::fs::create_dir(context.path().join("data")).context("making the build context")?;
            docker::run(
                sh,
                &[
                    "build".into(),
                    "--quiet".into(),
                    format!("--label={BUILD_LABEL}={digest}"),
                    format!("--tag={image}"),
                    context.path().display().to_string(),
                ],
            )
            .with_context(|| format!("building image {image}"))?;
        }
        let size = docker::run(
            sh,
            &[
                "image".into(),
                "inspect".into(),
                "--format={{.Size}}".into(),
                image.into(),
            ],
        )?;
        reports.push(ImageReport {
            image,
            rebuilt,
            size_bytes: size.parse().unwrap_or(0),
        });
    }
    prune_images(sh);
    Ok(reports)
}

/// Removes Flotilla images that a rebuild left untagged and no container uses any more.
pub fn prune_images(sh: &Shell) {
    let _ = docker::run(
        sh,
        &[
            "image".into(),
            "prune".into(),
            "--force".into(),
            format!("--filter=label={BUILD_LABEL}"),
        ],
    );
}

/// Sizes in MB with one decimal, as people read image sizes.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}
