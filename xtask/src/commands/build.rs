//! `cargo xtask build`: static release binaries, then the scratch images of the node and the
//! canonical, each rebuilt only when its binary or Dockerfile changed.

use xshell::Shell;

use lab::docker;
use lab::project::Project;
use lab::release;

/// Build static release binaries and the node and canonical images.
#[derive(Debug, clap::Args)]
pub struct Build {}

impl Build {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let binaries = release::build_binaries(sh, &project)?;
        println!("static binaries for {}:", binaries.triple);
        for binary in [&binaries.node, &binaries.canonical, &binaries.client] {
            let size = binary.metadata().map(|m| m.len()).unwrap_or(0);
            println!("  {}  {}", binary.display(), release::megabytes(size));
        }
        if let Err(reason) = docker::engine(sh) {
            println!("no Docker engine answered ({reason}); built the static binaries only");
            return Ok(());
        }
        println!("images:");
        for report in release::build_images(sh, &project, &binaries)? {
            let what = if report.rebuilt {
                "built"
            } else {
                "up to date"
            };
            println!(
                "  {:<24}  {:>8}  {what}",
                report.image,
                release::megabytes(report.size_bytes)
            );
        }
        Ok(())
    }
}
