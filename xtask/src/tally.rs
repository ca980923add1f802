//! Counting the steps of `cargo xtask test`: each step prints one line as it ends, and the
//! run ends with `N passed, N failed`.

use std::time::Instant;

/// Passed and failed steps so far.
#[derive(Debug, Default)]
pub struct Tally {
    passed: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Runs one named step and records its outcome; its error is printed, not returned.
    pub fn step(&mut self, name: &str, step: impl FnOnce() -> anyhow::Result<()>) -> bool {
        eprintln!("\n==> {name}");
        let started = Instant::now();
        let result = step();
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                eprintln!("ok: {name} ({seconds:.1} s)");
                self.passed += 1;
                true
            }
            Err(error) => {
                eprintln!("FAILED: {name} ({seconds:.1} s): {error:#}");
                self.failures.push(format!("{name}: {error:#}"));
                false
            }
        }
    }

    pub fn failed(&self) -> usize {
        self.failures.len()
    }

    /// The closing lines: every failure again, then the counts.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for failure in &self.failures {
            text.push_str(&format!("failed: {failure}\n"));
        }
        text.push_str(&format!("{} passed, {} failed", self.passed, self.failed()));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_counted() {
        let mut tally = Tally::default();
        assert!(tally.step("good", || Ok(())));
        assert!(!tally.step("bad", || anyhow::bail!("broken")));
        assert_eq!(tally.failed(), 1);
        assert!(tally.summary().ends_with("1 passed, 1 failed"));
        assert!(tally.summary().contains("failed: bad: broken"));
    }
}
