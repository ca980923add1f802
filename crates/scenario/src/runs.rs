//! Run folders: `.cluster/runs/<name>-<time>/` holds what one run of a scenario left behind —
//! a copy of the scenario file (`scenario.toml`), the history (`history.jsonl`) and, once
//! checked, the verdict (`verdict.json`) and the report (`report.html`, `timeline.png`,
//! `timeline.svg`) — so `scenario check RUN_DIR` needs nothing else.

use std::path::{Path, PathBuf};

use crate::check::Verdict;
use crate::file::{self, FileError, Scenario};
use crate::history::{History, HistoryError, HISTORY_FILE};
use crate::report::{self, REPORT_FILE, TIMELINE_FILE, TIMELINE_PNG_FILE};
use crate::sweep::{Sweep, REPORT_SEEDS};

/// The scenario file as it was when the run started.
pub const SCENARIO_FILE: &str = "scenario.toml";
/// What the checker said, as JSON.
pub const VERDICT_FILE: &str = "verdict.json";

/// Why a run folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0} has no {SCENARIO_FILE}: give a folder that `cargo xtask scenario run` or `scenario sim` wrote under .cluster/runs/")]
    NotARun(String),
    #[error(transparent)]
    Scenario(#[from] FileError),
    #[error(transparent)]
    History(#[from] HistoryError),
}

/// The folder name of a run of `name` that started at `unix_ms`, e.g.
/// `leader-kill-loop-20261204T170512Z`; `tag` (e.g. `sim`) goes between the two.
pub fn folder_name(name: &str, tag: Option<&str>, unix_ms: u64) -> String {
    let tag = tag.map(|tag| format!("{tag}-")).unwrap_or_default();
    format!("{name}-{tag}{}", utc_stamp(unix_ms))
}

/// `unix_ms` as `YYYYMMDDTHHMMSSZ`.
pub fn utc_stamp(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Year, month and day of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Creates `runs/<folder>` and copies the scenario file's text into it.
pub fn create(runs: &Path, folder: &str, scenario_text: &str) -> std::io::Result<PathBuf> {
    let dir = runs.join(folder);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(SCENARIO_FILE), scenario_text)?;
    Ok(dir)
}

/// Writes a whole history (a simulation's) into `dir`.
pub fn write_history(dir: &Path, history: &History) -> std::io::Result<()> {
    std::fs::write(dir.join(HISTORY_FILE), history.to_jsonl())
}

/// Writes the verdict into `dir`.
pub fn write_verdict(dir: &Path, verdict: &Verdict) -> std::io::Result<()> {
    // Plain data with string keys: encoding cannot fail.
    let json = serde_json::to_string_pretty(verdict).expect("a verdict encodes");
    std::fs::write(dir.join(VERDICT_FILE), json + "\n")
}

/// Draws `timeline.png` and `timeline.svg` and writes `report.html` into `dir`; for a run on
/// a cluster, the simulation of the same scenario over [`REPORT_SEEDS`] seeds goes beside it.
/// Returns the page's path.
pub fn write_report(
    dir: &Path,
    scenario: &Scenario,
    history: &History,
    verdict: &Verdict,
) -> std::io::Result<PathBuf> {
    let svg = report::timeline_svg(history, verdict).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(TIMELINE_FILE), &svg)?;
    let png = report::timeline_png(history, verdict).map_err(std::io::Error::other)?;
    std::fs::write(dir.join(TIMELINE_PNG_FILE), png)?;
    // A run on a cluster gets the simulation of many seeds beside it, from its own seed on.
    let simulated = (history.header.source != "sim")
        .then(|| Sweep::run(scenario, history.header.seed, REPORT_SEEDS, |_, _, _| {}));
    let page = report::html(scenario, history, verdict, &svg, simulated.as_ref());
    let path = dir.join(REPORT_FILE);
    std::fs::write(&path, page)?;
    Ok(path)
}

/// Reads the scenario and the history a run left in `dir`.
pub fn read(dir: &Path) -> Result<(Scenario, History), RunError> {
    let scenario_path = dir.join(SCENARIO_FILE);
    if !scenario_path.is_file() {
        return Err(RunError::NotARun(dir.display().to_string()));
    }
    let text = std::fs::read_to_string(&scenario_path).map_err(|e| FileError {
        file: scenario_path.display().to_string(),
        line: 0,
        message: format!("cannot read it ({e})"),
    })?;
    let history = History::read(&dir.join(HISTORY_FILE))?;
    // The copy's name is the folder's, so the scenario keeps the name it ran under.
    let scenario = file::parse(
        &scenario_path.display().to_string(),
        &history.header.scenario,
        &text,
    )?;
    Ok((scenario, history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-12-04 17:05:12 UTC.
        assert_eq!(utc_stamp(1_796_403_912_000), "20261204T170512Z");
        // A leap day.
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000Z");
        assert_eq!(
            folder_name("bridge", Some("sim"), 0),
            "bridge-sim-19700101T000000Z"
        );
    }
}
