//! What `netem` asks for: delay, jitter and loss on a member's egress, how they are written
//! on the command line (`150ms`, `1%`) and how a shape was made (the kernel's netem qdisc or
//! the NFQUEUE delayer), as recorded in the cluster state.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest delay or jitter accepted: anything longer is a typo, not a network.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Parts per million in one percent.
const PPM_PER_PERCENT: f64 = 10_000.0;

/// Delay, jitter and loss on a member's egress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub delay_us: u64,
    pub jitter_us: u64,
    /// Share of packets dropped, in parts per million.
    pub loss_ppm: u32,
}

impl Shape {
    /// `delay 150 ms ± 10 ms, loss 1%`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.delay_us > 0 || self.loss_ppm == 0 {
            let mut delay = format!("delay {}", milliseconds(self.delay_us));
            if self.jitter_us > 0 {
                delay.push_str(&format!(" ± {}", milliseconds(self.jitter_us)));
            }
            parts.push(delay);
        }
        if self.loss_ppm > 0 {
            parts.push(format!("loss {}", percent(self.loss_ppm)));
        }
        parts.join(", ")
    }

    /// The netem qdisc's parameters: `delay 150000us 10000us loss 1%`.
    pub(crate) fn tc_parameters(&self) -> Vec<String> {
        let mut parameters = vec!["delay".to_string(), format!("{}us", self.delay_us)];
        if self.jitter_us > 0 {
            parameters.push(format!("{}us", self.jitter_us));
        }
        if self.loss_ppm > 0 {
            parameters.push("loss".to_string());
            parameters.push(percent(self.loss_ppm));
        }
        parameters
    }

    /// One packet's delay: the delay plus a uniform draw in ±jitter, never below zero (as
    /// netem's default distribution).
    pub fn packet_delay(&self, draw: impl FnOnce(u64) -> u64) -> Duration {
        if self.jitter_us == 0 {
            return Duration::from_micros(self.delay_us);
        }
        let offset = draw(2 * self.jitter_us + 1) as i128 - i128::from(self.jitter_us);
        let micros = (i128::from(self.delay_us) + offset).max(0);
        Duration::from_micros(micros as u64)
    }
}

/// How a member's shape was made, as recorded in `state.json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shaping {
    pub shape: Shape,
    /// Host pid of the NFQUEUE worker, when the kernel has no netem qdisc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
    /// Made by the fault layer in the member's own socket (a swarm member on another
    /// machine), not in its network namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub socket: bool,
}

impl Shaping {
    /// `tc netem` or `xtask's NFQUEUE worker (pid 123)`.
    pub fn mechanism(&self) -> String {
        if self.socket {
            return "the member's own socket, set with the operator certificate".to_string();
        }
        match self.worker {
            None => "tc netem".to_string(),
            Some(pid) => format!("the NFQUEUE delayer, pid {pid}"),
        }
    }
}

/// `150ms`, `1s`, `1.5s`, `500us` → a duration of at most [`MAX_DELAY`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration such as 150ms, 1.5s or 500us");
    let (number, micros_per_unit) = if let Some(number) = text.strip_suffix("ms") {
        (number, 1e3)
    } else if let Some(number) = text.strip_suffix("us") {
        (number, 1.0)
    } else if let Some(number) = text.strip_suffix('s') {
        (number, 1e6)
    } else {
        return Err(bad());
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|value: &f64| value.is_finite() && *value >= 0.0)
        .ok_or_else(bad)?;
    let micros = (value * micros_per_unit).round();
    if micros > MAX_DELAY.as_micros() as f64 {
        return Err(format!(
            "`{text}` is longer than the {} s that netem accepts",
            MAX_DELAY.as_secs()
        ));
    }
    Ok(Duration::from_micros(micros as u64))
}

/// `1%`, `0.5%`, `100%` → parts per million (more than 0, at most 100%).
pub fn parse_loss(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}` is not a percentage such as 1% or 0.5% (above 0, at most 100%)");
    let number = text.strip_suffix('%').ok_or_else(bad)?;
    let value: f64 = number
        .parse()
        .ok()
        .filter(|value: &f64| value.is_finite() && *value > 0.0 && *value <= 100.0)
        .ok_or_else(bad)?;
    let ppm = (value * PPM_PER_PERCENT).round() as u32;
    if ppm == 0 {
        return Err(format!("`{text}` is below the smallest loss, 0.0001%"));
    }
    Ok(ppm)
}

fn milliseconds(micros: u64) -> String {
    format!("{} ms", micros as f64 / 1e3)
}

fn percent(ppm: u32) -> String {
    format!("{}%", f64::from(ppm) / PPM_PER_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
        for bad in [
            "150", "ms", "-5ms", "1m", "x s", "nanms", "inf s", "61s", "",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn losses_parse_as_percentages() {
        assert_eq!(parse_loss("1%"), Ok(10_000));
        assert_eq!(parse_loss("0.5%"), Ok(5_000));
        assert_eq!(parse_loss("100%"), Ok(1_000_000));
        for bad in ["1", "0%", "101%", "-1%", "%", "x%", "0.00001%"] {
            assert!(parse_loss(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shapes_read_well_and_become_tc_parameters() {
        let shape = Shape {
            delay_us: 150_000,
            jitter_us: 10_000,
            loss_ppm: 10_000,
        };
        assert_eq!(shape.describe(), "delay 150 ms ± 10 ms, loss 1%");
        assert_eq!(
            shape.tc_parameters().join(" "),
            "delay 150000us 10000us loss 1%"
        );
        let loss_only = Shape {
            loss_ppm: 5_000,
            ..Shape::default()
        };
        assert_eq!(loss_only.describe(), "loss 0.5%");
        assert_eq!(loss_only.tc_parameters().join(" "), "delay 0us loss 0.5%");
    }

    #[test]
    fn packet_delays_stay_within_the_jitter() {
        let shape = Shape {
            delay_us: 1_000,
            jitter_us: 2_000,
            loss_ppm: 0,
        };
        assert_eq!(shape.packet_delay(|_| 0), Duration::ZERO);
        assert_eq!(
            shape.packet_delay(|bound| bound - 1),
            Duration::from_micros(3_000)
        );
        assert_eq!(shape.packet_delay(|_| 2_000), Duration::from_micros(1_000));
        let steady = Shape {
            jitter_us: 0,
            ..shape
        };
        assert_eq!(steady.packet_delay(|_| 7), Duration::from_micros(1_000));
    }
}
