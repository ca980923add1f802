//! `cargo xtask netem I --delay 100ms [--jitter 10ms] [--loss 1%]` and `netem I --clear`:
//! delay and loss on everything member I sends (Docker runtime). How: `chaos::netem`.

use std::time::Duration;

use clap::ArgGroup;
use xshell::Shell;

use chaos::shape::{self, Shape};
use lab::faults;
use lab::state::Target;

use crate::cluster::{target_word, Cluster};

/// Delay or drop what node I (or `canonical`) sends, with tc netem in its network namespace
/// (Docker runtime); `--clear` undoes it.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["delay", "loss", "clear"])))]
pub struct Netem {
    /// Node index, or `canonical`.
    target: Target,
    /// Delay every packet it sends by this much, e.g. 100ms or 1s.
    #[arg(long, value_name = "DURATION", value_parser = shape::parse_duration)]
    delay: Option<Duration>,
    /// Vary the delay by up to this much either way, e.g. 10ms.
    #[arg(long, value_name = "DURATION", requires = "delay", value_parser = shape::parse_duration)]
    jitter: Option<Duration>,
    /// Drop this share of the packets it sends, e.g. 1% or 0.5%.
    #[arg(long, value_name = "PERCENT", value_parser = shape::parse_loss)]
    loss: Option<u32>,
    /// Remove the delay and loss.
    #[arg(long, conflicts_with_all = ["delay", "jitter", "loss"])]
    clear: bool,
}

impl Netem {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let mut cluster = Cluster::open()?;
        let member = cluster.member(self.target)?;
        let word = target_word(self.target);
        if self.clear {
            let runtime = cluster.runtime.as_ref();
            let removed = faults::unshape(sh, runtime, &mut cluster.state, member.index);
            // Saved either way: the record is gone even when the member could not be told
            // (then `restart` starts it without the shape).
            cluster.save()?;
            let removed = removed?;
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
        let Cluster {
            project,
            state,
            runtime,
        } = &mut cluster;
        let made = faults::shape(sh, project, runtime.as_ref(), state, member.index, shape);
        // Saved either way: a failure may have removed an earlier shape.
        cluster.save()?;
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
