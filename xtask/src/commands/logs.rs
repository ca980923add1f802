//! `cargo xtask logs I|canonical|all [-f] [--out DIR]`: a member's log (`docker logs` or the
//! process runtime's log file); several logs are shown with the member's name on every line,
//! or written one file per member with `--out`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::Context;
use xshell::Shell;

use lab::state::{LogTarget, MemberState};

use crate::cluster::Cluster;

/// Show the log of node I, of the canonical, or of all members.
#[derive(Debug, clap::Args)]
pub struct Logs {
    /// Node index, `canonical` or `all`.
    target: LogTarget,
    /// Keep following new lines.
    #[arg(short, long)]
    follow: bool,
    /// Write one `<name>.log` per member into DIR instead (kept after `down`).
    #[arg(long, value_name = "DIR", conflicts_with = "follow")]
    out: Option<PathBuf>,
}

impl Logs {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let cluster = Cluster::open()?;
        let members: Vec<&MemberState> = match self.target {
            LogTarget::All => cluster.state.members.iter().collect(),
            LogTarget::One(target) => vec![cluster.state.member(target)?],
        };
        let source = |member: &MemberState| cluster.runtime.logs(member, self.follow);
        if let Some(dir) = &self.out {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for member in &members {
                let path = dir.join(format!("{}.log", member.name));
                let file = fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let file_too = file.try_clone().context("opening the log file twice")?;
                let status = source(member)
                    .stdout(file)
                    .stderr(file_too)
                    .status()
                    .context("reading a log")?;
                if !status.success() {
                    anyhow::bail!("reading the log of {} failed", member.label());
                }
            }
            println!("wrote {} log files to {}", members.len(), dir.display());
            return Ok(());
        }
        // Everything goes to stdout (members log to stderr), so `logs 2 | grep x` works.
        if let [member] = members.as_slice() {
            return prefixed(vec![(String::new(), source(member))]);
        }
        let width = members.iter().map(|m| m.name.len()).max().unwrap_or(0);
        let label = |member: &MemberState| format!("{:<width$} | ", member.name);
        if self.follow {
            // Everyone at once: lines interleave as they come.
            let sources = members.iter().map(|m| (label(m), source(m))).collect();
            prefixed(sources)
        } else {
            // One member after another, so each log reads in order.
            for member in &members {
                prefixed(vec![(label(member), source(member))])?;
            }
            Ok(())
        }
    }
}

/// Runs every command, printing each line of its stdout and stderr after its label, until
/// all of them end.
fn prefixed(sources: Vec<(String, Command)>) -> anyhow::Result<()> {
    let mut children = Vec::new();
    let mut readers = Vec::new();
    for (label, mut command) in sources {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("reading a log")?;
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let label = label.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    // The stdout lock keeps each line whole among the readers.
                    if writeln!(std::io::stdout().lock(), "{label}{line}").is_err() {
                        break;
                    }
                }
            }));
        }
        children.push(child);
    }
    for reader in readers {
        let _ = reader.join();
    }
    for mut child in children {
        let _ = child.wait();
    }
    Ok(())
}
