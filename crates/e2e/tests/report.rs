//! The scenario report in a real browser (Debian's chromium, installed when missing): the page
//! of a recorded run loads with no console message and its screenshot shows a lane for every
//! node. The run is `crates/scenario/tests/fixtures/browser-fixture/`, a history that `cargo xtask scenario
//! run` recorded on the process runtime (3 nodes: the leader killed and restarted, a node
//! paused); the report is drawn from it here, as `scenario check` draws it. Needs no Docker
//! engine, but installs a browser, so it runs with the end-to-end suite (`FLOTILLA_E2E=1`).

use std::path::Path;

use scenario::runs;

/// Fewest pixels of lane colour in a row for it to count as part of a lane: most of a lane
/// is one flat colour across the picture's 1100 pixels of time.
const LANE_PIXELS: usize = 300;
/// Fewest rows of such a band for it to be a lane (drawn 0.8 of 36 pixels tall).
const LANE_ROWS: usize = 20;

#[test]
fn a_recorded_run_s_report_loads_without_console_errors_and_shows_every_lane() -> anyhow::Result<()>
{
    if !e2e::enabled() {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let run = work.path().join("run");
    std::fs::create_dir(&run)?;
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenario/tests/fixtures/browser-fixture");
    for file in [runs::SCENARIO_FILE, scenario::history::HISTORY_FILE] {
        std::fs::copy(fixture.join(file), run.join(file))?;
    }
    let (scenario, history) = runs::read(&run)?;
    let verdict = scenario::check(&scenario, &history);
    anyhow::ensure!(verdict.passed(), "the recorded run passed: {verdict:?}");
    let page = runs::write_report(&run, &scenario, &history, &verdict)?;

    let browser = work.path().join("browser");
    std::fs::create_dir(&browser)?;
    let loaded = lab::browser::load(&xshell::Shell::new()?, &page, &browser)?;
    anyhow::ensure!(
        loaded.console.is_empty(),
        "the report wrote to the console: {:?}",
        loaded.console
    );
    let colours: Vec<(u8, u8, u8)> = scenario::report::lane_colours().collect();
    let bands = loaded.screenshot.bands(&colours, LANE_PIXELS);
    // A lane is a thick band; grid lines of a similar grey are a row or two.
    let lanes = bands.iter().filter(|&&(_, rows)| rows >= LANE_ROWS).count();
    anyhow::ensure!(
        lanes == usize::from(scenario.nodes),
        "the screenshot ({}x{}) shows {lanes} lanes for {} nodes; bands of lane colour (first row, rows): {bands:?}",
        loaded.screenshot.width,
        loaded.screenshot.height,
        scenario.nodes,
    );
    Ok(())
}

/// The check above can fail: a page that throws is caught, with the error's text.
#[test]
fn a_page_that_throws_is_caught() -> anyhow::Result<()> {
    if !e2e::enabled() {
        return Ok(());
    }
    let work = tempfile::tempdir()?;
    let page = work.path().join("throws.html");
    std::fs::write(
        &page,
        "<!doctype html><html><body><p>lanes</p><script>notDefined();</script></body></html>",
    )?;
    let loaded = lab::browser::load(&xshell::Shell::new()?, &page, work.path())?;
    anyhow::ensure!(
        loaded
            .console
            .iter()
            .any(|line| line.contains("Uncaught ReferenceError: notDefined is not defined")),
        "the error was not seen: {:?}",
        loaded.console
    );
    anyhow::ensure!(
        loaded
            .screenshot
            .bands(
                &scenario::report::lane_colours().collect::<Vec<_>>(),
                LANE_PIXELS
            )
            .is_empty(),
        "a page without lanes shows none"
    );
    Ok(())
}
