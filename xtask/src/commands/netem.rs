//! `cargo xtask netem I --delay 100ms [--jitter 10ms] [--loss 1%]` and `netem I --clear`:
//! delay and loss on everything member I sends (Docker runtime), and the hidden
//! `netem-worker` that does it on kernels without the netem qdisc. How: `netem.rs`.

use std::time::Duration;

use clap::ArgGroup;
use xshell::Shell;

use super::kill::target_word;
use crate::netem::{self, Shape};
use crate::netem_worker;
use crate::project::Project;
use crate::state::{State, Target};

/// Delay or drop what node I (or `canonical`) sends, with tc netem in its network namespace
/// (Docker runtime); `--clear` undoes it.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["delay", "loss", "clear"])))]
pub struct Netem {
    /// Node index, or `canonical`.
    target: Target,
    /// Delay every packet it sends by this much, e.g. 100ms or 1s.
    #[arg(long, value_name = "DURATION", value_parser = netem::parse_duration)]
    delay: Option<Duration>,
    /// Vary the delay by up to this much either way, e.g. 10ms.
    #[arg(long, value_name = "DURATION", requires = "delay", value_parser = netem::parse_duration)]
    jitter: Option<Duration>,
    /// Drop this share of the packets it sends, e.g. 1% or 0.5%.
    #[arg(long, value_name = "PERCENT", value_parser = netem::parse_loss)]
    loss: Option<u32>,
    /// Remove the delay and loss.
    #[arg(long, conflicts_with_all = ["delay", "jitter", "loss"])]
    clear: bool,
}

impl Netem {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let project = Project::locate()?;
        let mut state = State::require(&project.cluster_dir)?;
        state.require_docker("netem")?;
        let member = state.member(self.target)?.clone();
        let word = target_word(self.target);
        if self.clear {
            let removed = netem::clear(sh, &mut state, member.index)?;
            state.save(&project.cluster_dir)?;
            match removed {
                true => println!("cleared netem on {}", member.label()),
                false => println!("{} had no netem; nothing to clear", member.label()),
            }
            return Ok(());
        }
        let micros = |duration: Option<Duration>| {
            duration.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        };
        let shape = Shape {
            delay_us: micros(self.delay),
            jitter_us: micros(self.jitter),
            loss_ppm: self.loss.unwrap_or(0),
        };
        let made = netem::install(sh, &project, &mut state, member.index, shape);
        // Saved either way: a failure may have removed an earlier shape.
        state.save(&project.cluster_dir)?;
        let made = made?;
        println!(
            "{}: {} on everything it sends ({}); undo with `cargo xtask netem {word} --clear`",
            member.label(),
            shape.describe(),
            made.mechanism()
        );
        Ok(())
    }
}

/// Internal: the NFQUEUE delayer `netem` starts inside a container's network namespace.
#[derive(Debug, clap::Args)]
pub struct NetemWorker {
    #[arg(long)]
    delay_us: u64,
    #[arg(long, default_value_t = 0)]
    jitter_us: u64,
    #[arg(long, default_value_t = 0)]
    loss_ppm: u32,
    /// Host pid of the container's PID 1; the worker exits when it is gone.
    #[arg(long)]
    container_pid: u32,
}

impl NetemWorker {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        let shape = Shape {
            delay_us: self.delay_us,
            jitter_us: self.jitter_us,
            loss_ppm: self.loss_ppm,
        };
        netem_worker::run(shape, self.container_pid)
    }
}

#[cfg(test)]
mod tests {
    use crate::commands::Cli;
    use clap::Parser;

    #[test]
    fn bad_netem_arguments_are_usage_errors() {
        for bad in [
            vec!["netem", "2"],
            vec!["netem", "2", "--delay", "150"],
            vec!["netem", "2", "--delay", "150ms", "--clear"],
            vec!["netem", "2", "--jitter", "10ms"],
            vec!["netem", "2", "--loss", "1"],
            vec!["netem", "2", "--loss", "120%"],
            vec!["netem", "0", "--delay", "1ms"],
        ] {
            let error = Cli::try_parse_from(std::iter::once("xtask").chain(bad.clone()))
                .expect_err(&bad.join(" "));
            assert_eq!(error.exit_code(), 2, "{}", bad.join(" "));
        }
        for good in [
            vec!["netem", "2", "--delay", "150ms"],
            vec![
                "netem", "2", "--delay", "1s", "--jitter", "10ms", "--loss", "1%",
            ],
            vec!["netem", "canonical", "--loss", "0.5%"],
            vec!["netem", "2", "--clear"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("xtask").chain(good.clone())).is_ok(),
                "{}",
                good.join(" ")
            );
        }
    }
}
