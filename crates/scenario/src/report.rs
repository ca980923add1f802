//! What a person looks at after a run: the timeline (one lane per node coloured by role with
//! its term written on it, fault windows shaded across the lanes, the client's latencies
//! under them on a log scale), as `timeline.png` and `timeline.svg`, and `report.html`, a
//! self-contained page with the timeline inline, the checker's verdict, a summary table, the
//! faults, and the same scenario in the simulation side by side with the run. One drawing
//! function, two plotters backends; the text is written in a font compiled into the program
//! (`epaint_default_fonts`), so the PNG looks the same on a machine with no fonts installed.

use std::fmt::Write as _;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use wire::history::{Effect, Event, NodeState, Op, OpOutcome, Sample};
use wire::ElectionRole;

use crate::check::{Summary, Verdict};
use crate::file::Scenario;
use crate::history::History;
use crate::sweep::{Sweep, TOLERANCE_MS};

/// File names inside a run folder.
pub const TIMELINE_FILE: &str = "timeline.svg";
pub const TIMELINE_PNG_FILE: &str = "timeline.png";
pub const REPORT_FILE: &str = "report.html";

/// Width of the picture, in pixels.
const WIDTH: u32 = 1200;
/// Height of one node's lane.
const LANE_HEIGHT: u32 = 36;
/// Height of the latency chart under the lanes.
const LATENCY_HEIGHT: u32 = 340;
/// Height of the row of lane colours above the lanes.
const LEGEND_HEIGHT: u32 = 30;
/// Colours of the reads by outcome, and of the line at each fault.
const HIT: RGBColor = RGBColor(39, 174, 96);
const MISS: RGBColor = RGBColor(41, 128, 185);
const ERROR: RGBColor = RGBColor(192, 57, 43);
const FAULT_LINE: RGBAColor = RGBAColor(231, 76, 60, 0.8);
/// Opacity of the black that shades fault windows across the lanes.
const FAULT_SHADE: f64 = 0.12;
/// Most reads drawn as points; more are thinned evenly (every n-th), errors always kept.
const MAX_POINTS: usize = 6000;
/// A lane segment at least this long (seconds) gets its term written on it.
const TERM_LABEL_MIN_SECONDS: f64 = 0.6;

/// How a node looked in one lane segment.
#[derive(Clone, Copy, PartialEq)]
enum Look {
    Role(ElectionRole, u64),
    Down,
    Paused,
    Unreachable,
}

impl Look {
    fn of(state: NodeState) -> Look {
        match state {
            NodeState::Up { role, term, .. } => Look::Role(role, term),
            NodeState::Down => Look::Down,
            NodeState::Paused => Look::Paused,
            NodeState::Unreachable => Look::Unreachable,
        }
    }

    fn colour(self) -> RGBColor {
        match self {
            Look::Role(ElectionRole::Leader, _) => RGBColor(230, 126, 34),
            Look::Role(ElectionRole::Follower, _) => RGBColor(93, 173, 226),
            Look::Role(ElectionRole::Candidate, _) => RGBColor(244, 208, 63),
            Look::Down => RGBColor(70, 70, 70),
            Look::Paused => RGBColor(155, 89, 182),
            Look::Unreachable => RGBColor(200, 200, 200),
        }
    }
}

/// The legend of the lane colours, for the page.
const LEGEND: [(&str, (u8, u8, u8)); 6] = [
    ("leader", (230, 126, 34)),
    ("follower", (93, 173, 226)),
    ("candidate (electing)", (244, 208, 63)),
    ("down", (70, 70, 70)),
    ("paused", (155, 89, 182)),
    ("unreachable", (200, 200, 200)),
];

/// The colours a lane can have (leader, follower, candidate, down, paused, unreachable), and
/// the same under a fault window's shade (to within a unit of rounding), for tests that look
/// for the lanes in a picture.
pub fn lane_colours() -> impl Iterator<Item = (u8, u8, u8)> {
    let shade = |c: u8| (f64::from(c) * (1.0 - FAULT_SHADE)).round() as u8;
    let plain = LEGEND.iter().map(|&(_, colour)| colour);
    plain
        .clone()
        .chain(plain.map(move |(r, g, b)| (shade(r), shade(g), shade(b))))
}

/// The timeline picture as SVG text.
pub fn timeline_svg(history: &History, verdict: &Verdict) -> Result<String, String> {
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size(history)).into_drawing_area();
        draw(&root, history, verdict)?;
        root.present().map_err(text)?;
    }
    Ok(svg)
}

/// The timeline picture as PNG bytes: the same drawing as [`timeline_svg`], on a bitmap.
pub fn timeline_png(history: &History, verdict: &Verdict) -> Result<Vec<u8>, String> {
    register_font();
    let (width, height) = size(history);
    let mut pixels = vec![0_u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(&root, history, verdict)?;
        root.present().map_err(text)?;
    }
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(text)?;
    writer.write_image_data(&pixels).map_err(text)?;
    writer.finish().map_err(text)?;
    Ok(png)
}

/// Makes the compiled-in font the one plotters writes every text in (the bitmap backend has
/// no fonts of its own, and none are looked up on the machine).
fn register_font() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // A font the crate ships in its own bytes: parsing it cannot fail on one machine and
        // work on another, and a test draws a picture with text on every run.
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::HACK_REGULAR)
            .map_err(|_| ())
            .expect("the bundled font parses");
    });
}

/// The family every text is written in; [`register_font`] gives it its glyphs.
const FONT: &str = "sans-serif";

/// Width and height of the picture for `history`.
fn size(history: &History) -> (u32, u32) {
    (
        WIDTH,
        LEGEND_HEIGHT + lanes_height(history) + LATENCY_HEIGHT,
    )
}

fn lanes_height(history: &History) -> u32 {
    50 + LANE_HEIGHT * u32::from(history.header.nodes.max(1))
}

/// Draws the timeline on `root`: the legend, a lane per node, and the latencies under them.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    history: &History,
    verdict: &Verdict,
) -> Result<(), String> {
    let nodes = history.header.nodes.max(1);
    let end_s = (history.header.duration_ms as f64 / 1000.0).max(0.1);
    root.fill(&WHITE).map_err(text)?;
    let (legend, rest) = root.split_vertically(LEGEND_HEIGHT);
    draw_legend(&legend)?;
    let (top, bottom) = rest.split_vertically(lanes_height(history));
    let mut lanes = ChartBuilder::on(&top)
        .margin(10)
        .margin_right(30)
        .caption(
            format!(
                "{} ({}, seed {})",
                history.header.scenario, history.header.source, history.header.seed
            ),
            (FONT, 20),
        )
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end_s, 0.0..f64::from(nodes))
        .map_err(text)?;
    lanes
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(usize::from(nodes) * 2 + 1)
        .y_label_style((FONT, 14))
        .y_label_formatter(&|y| {
            // A label in the middle of each lane names its node.
            let lane = y.floor();
            match (y - lane - 0.5).abs() < 0.01 && lane >= 0.0 {
                true => format!("node {}", u32::from(nodes) - lane as u32),
                false => String::new(),
            }
        })
        .draw()
        .map_err(text)?;
    let samples = samples_by_node(history, nodes);
    for (index, samples) in samples.iter().enumerate() {
        let node = index as u16 + 1;
        let bottom_y = f64::from(nodes - node) + 0.1;
        let top_y = bottom_y + 0.8;
        for (start, end, look) in segments(samples, end_s) {
            lanes
                .draw_series(std::iter::once(Rectangle::new(
                    [(start, bottom_y), (end, top_y)],
                    look.colour().filled(),
                )))
                .map_err(text)?;
            if let Look::Role(_, term) = look {
                if end - start >= TERM_LABEL_MIN_SECONDS {
                    lanes
                        .draw_series(std::iter::once(Text::new(
                            format!("t{term}"),
                            (start + 0.05, top_y - 0.12),
                            (FONT, 14).into_font().color(&BLACK),
                        )))
                        .map_err(text)?;
                }
            }
        }
    }
    for &(start, end) in &verdict.summary.fault_windows {
        lanes
            .draw_series(std::iter::once(Rectangle::new(
                [(start / 1000.0, 0.0), (end / 1000.0, f64::from(nodes))],
                BLACK.mix(FAULT_SHADE).filled(),
            )))
            .map_err(text)?;
    }
    for fault in faults(history) {
        let at = fault.0 as f64 / 1000.0;
        lanes
            .draw_series(std::iter::once(PathElement::new(
                vec![(at, 0.0), (at, f64::from(nodes))],
                FAULT_LINE.stroke_width(2),
            )))
            .map_err(text)?;
    }

    let ops = thinned_ops(history);
    let max_ms = ops.iter().map(|op| latency_ms(op)).fold(10.0_f64, f64::max) * 1.5;
    let mut latency = ChartBuilder::on(&bottom)
        .margin(10)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..end_s, (0.1_f64..max_ms).log_scale())
        .map_err(text)?;
    latency
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("read latency (ms, log scale)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(BLACK.mix(0.05))
        .draw()
        .map_err(text)?;
    for &(start, end) in &verdict.summary.fault_windows {
        latency
            .draw_series(std::iter::once(Rectangle::new(
                [(start / 1000.0, 0.1), (end / 1000.0, max_ms)],
                BLACK.mix(0.08).filled(),
            )))
            .map_err(text)?;
    }
    if ops.is_empty() {
        let note = match history.header.source.as_str() {
            "sim" => "the simulation has no client: no reads to show",
            _ => "no reads were recorded",
        };
        bottom
            .draw(&Text::new(
                note,
                (WIDTH as i32 / 2, LATENCY_HEIGHT as i32 / 2),
                (FONT, 15)
                    .into_font()
                    .color(&BLACK.mix(0.6))
                    .pos(Pos::new(HPos::Center, VPos::Center)),
            ))
            .map_err(text)?;
    }
    let point = |op: &Op| (op.invoke_ms / 1000.0, latency_ms(op).max(0.1));
    let reads = |outcome| ops.iter().filter(move |op| op.outcome == outcome);
    // Each outcome has a shape of its own as well as a colour, so they stay apart in grey.
    latency
        .draw_series(reads(OpOutcome::Hit).map(|op| Circle::new(point(op), 2, HIT.filled())))
        .map_err(text)?
        .label("hit")
        .legend(|(x, y)| Circle::new((x + 5, y), 4, HIT.filled()));
    latency
        .draw_series(
            reads(OpOutcome::Miss).map(|op| TriangleMarker::new(point(op), 4, MISS.filled())),
        )
        .map_err(text)?
        .label("miss")
        .legend(|(x, y)| TriangleMarker::new((x + 5, y), 5, MISS.filled()));
    latency
        .draw_series(
            reads(OpOutcome::Error).map(|op| Cross::new(point(op), 4, ERROR.stroke_width(2))),
        )
        .map_err(text)?
        .label("error")
        .legend(|(x, y)| Cross::new((x + 5, y), 4, ERROR.stroke_width(2)));
    latency
        .configure_series_labels()
        .label_font((FONT, 14))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(text)?;
    Ok(())
}

/// The lane colours in a row across the top, so the picture explains itself without the page.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>) -> Result<(), String> {
    let font = (FONT, 13)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let mut x = 80;
    let y = (LEGEND_HEIGHT / 2) as i32;
    let entries = LEGEND
        .iter()
        .map(|&(name, (r, g, b))| (name, RGBColor(r, g, b).mix(1.0)))
        .chain([
            ("fault window", BLACK.mix(FAULT_SHADE)),
            ("fault", FAULT_LINE),
        ]);
    for (name, colour) in entries {
        area.draw(&Rectangle::new(
            [(x, y - 7), (x + 14, y + 7)],
            colour.filled(),
        ))
        .map_err(text)?;
        area.draw(&Text::new(name, (x + 20, y), font.clone()))
            .map_err(text)?;
        let (width, _) = area.estimate_text_size(name, &font).map_err(text)?;
        x += 20 + width as i32 + 24;
    }
    Ok(())
}

fn text(error: impl std::fmt::Display) -> String {
    format!("drawing the timeline: {error}")
}

fn latency_ms(op: &Op) -> f64 {
    op.complete_ms - op.invoke_ms
}

/// Each node's samples in time order.
fn samples_by_node(history: &History, nodes: u16) -> Vec<Vec<&Sample>> {
    let mut by_node: Vec<Vec<&Sample>> = vec![Vec::new(); usize::from(nodes)];
    for event in &history.events {
        if let Event::Sample(sample) = event {
            if let Some(lane) = by_node.get_mut(usize::from(sample.node).wrapping_sub(1)) {
                lane.push(sample);
            }
        }
    }
    for lane in &mut by_node {
        lane.sort_by_key(|sample| sample.at_ms);
    }
    by_node
}

/// Runs of equal looks as (start, end, look) in seconds; the last lasts one sample interval.
fn segments(samples: &[&Sample], end_s: f64) -> Vec<(f64, f64, Look)> {
    let mut runs: Vec<(f64, f64, Look)> = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let start = sample.at_ms as f64 / 1000.0;
        let end = samples
            .get(i + 1)
            .map_or((start + 0.1).min(end_s), |next| next.at_ms as f64 / 1000.0);
        let look = Look::of(sample.state);
        match runs.last_mut() {
            Some(last) if last.2 == look => last.1 = end,
            _ => runs.push((start, end, look)),
        }
    }
    runs
}

/// The faults that did something: (time, step, effect).
fn faults(history: &History) -> Vec<(u64, &str, &Effect)> {
    history
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Fault(fault) => Some((fault.at_ms, fault.step.as_str(), &fault.effect)),
            _ => None,
        })
        .filter(|(_, _, effect)| !matches!(effect, Effect::Skipped { .. }))
        .collect()
}

/// At most [`MAX_POINTS`] reads, every error kept.
fn thinned_ops(history: &History) -> Vec<&Op> {
    let ops: Vec<&Op> = history.ops().collect();
    let stride = ops.len().div_ceil(MAX_POINTS).max(1);
    ops.iter()
        .enumerate()
        .filter(|(i, op)| i % stride == 0 || op.outcome == OpOutcome::Error)
        .map(|(_, op)| *op)
        .collect()
}

/// `text` safe inside HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page: verdict, timeline, summary, the simulation beside the run, faults, violations.
pub fn html(
    scenario: &Scenario,
    history: &History,
    verdict: &Verdict,
    timeline_svg: &str,
    sim: Option<&Sweep>,
) -> String {
    let mut page = String::new();
    let title = escape(&format!("{} — Flotilla scenario run", scenario.name));
    // Writing to a String cannot fail.
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
body{{font-family:sans-serif;margin:2em;max-width:1240px;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}\
.passed{{color:#1e8449;font-weight:bold}}.failed{{color:#c0392b;font-weight:bold}}\
</style></head><body>\n<h1>{}</h1>\n<p>{}</p>\n",
        escape(&scenario.name),
        escape(&scenario.description)
    );
    let _ = writeln!(
        page,
        "<p>{} nodes, {:.0} s, on <b>{}</b>, seed {}.</p>",
        history.header.nodes,
        history.header.duration_ms as f64 / 1000.0,
        escape(&history.header.source),
        history.header.seed
    );
    match verdict.first() {
        None => page.push_str("<p class=\"passed\">Checker: passed.</p>\n"),
        Some(first) => {
            let _ = writeln!(
                page,
                "<p class=\"failed\">Checker: FAILED — {} ({} violations in all).</p>",
                escape(&first.to_string()),
                verdict.violations.len()
            );
        }
    }
    page.push_str("<div id=\"timeline\">\n");
    page.push_str(timeline_svg);
    // The colours are explained in the picture itself (its top row).
    page.push_str(
        "\n</div>\n<p>Each lane says the term (t5) its node was in; a red line is a fault, the \
         grey its window (until the cluster has been whole again for a while); under the lanes \
         each read at its start time (timeline.png beside this page is the same picture).</p>\n",
    );

    page.push_str("<h2>Summary</h2>\n<table>\n");
    for (name, value) in summary_rows(&verdict.summary) {
        let _ = writeln!(page, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    page.push_str("</table>\n");

    if let Some(sim) = sim {
        side_by_side(&mut page, history, verdict, sim);
    }

    page.push_str(
        "<h2>Faults</h2>\n<table><tr><th>time</th><th>step</th><th>what it did</th></tr>\n",
    );
    for event in &history.events {
        if let Event::Fault(fault) = event {
            let effect = match &fault.effect {
                Effect::Skipped { reason } => format!("skipped: {reason}"),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            let _ = writeln!(
                page,
                "<tr><td>{:.1} s</td><td>{}</td><td>{}</td></tr>",
                fault.at_ms as f64 / 1000.0,
                escape(&fault.step),
                escape(&effect)
            );
        }
    }
    page.push_str("</table>\n");
    if !verdict.violations.is_empty() {
        page.push_str("<h2>Violations</h2>\n<ol>\n");
        for violation in &verdict.violations {
            let _ = writeln!(page, "<li>{}</li>", escape(&violation.to_string()));
        }
        page.push_str("</ol>\n");
    }
    page.push_str("</body></html>\n");
    page
}

fn failover_text(summary: &Summary) -> (String, String) {
    match summary.failover_p50_max() {
        Some((p50, max)) => (format!("{p50:.0} ms"), format!("{max:.0} ms")),
        None => ("-".to_string(), "-".to_string()),
    }
}

fn summary_rows(summary: &Summary) -> Vec<(&'static str, String)> {
    let percent = |share: Option<f64>| {
        share.map_or_else(|| "-".to_string(), |a| format!("{:.2}%", a * 100.0))
    };
    let (p50, max) = failover_text(summary);
    vec![
        (
            "elections (terms with a leader)",
            summary.elections.to_string(),
        ),
        ("failovers", summary.failovers_ms.len().to_string()),
        ("failover p50", p50),
        ("failover max", max),
        (
            "leaderless time",
            format!("{:.1} s", summary.leaderless_ms / 1000.0),
        ),
        (
            "reads (hits / misses / errors)",
            format!(
                "{} ({} / {} / {})",
                summary.reads, summary.hits, summary.misses, summary.errors
            ),
        ),
        ("availability", percent(summary.availability)),
        (
            "availability outside fault windows",
            percent(summary.availability_outside_faults),
        ),
    ]
}

/// The simulation over many seeds vs this run, and in plain words where they disagree.
fn side_by_side(page: &mut String, history: &History, run: &Verdict, sim: &Sweep) {
    let source = escape(&history.header.source);
    let (run_p50, run_max) = failover_text(&run.summary);
    let (sim_p50, sim_max) = match sim.failover_p50_max() {
        Some((p50, max)) => (format!("{p50:.0} ms"), format!("{max:.0} ms")),
        None => ("-".to_string(), "-".to_string()),
    };
    let range = |(min, max): (usize, usize)| match min == max {
        true => format!("{min} in every seed"),
        false => format!("{min} to {max}"),
    };
    let (least, mean, most) = sim.leaderless_ms;
    let rows = [
        (
            "verdict",
            format!("{} of {} seeds passed", sim.passed(), sim.seeds),
            match run.passed() {
                true => "passed".to_string(),
                false => "FAILED".to_string(),
            },
        ),
        (
            "elections",
            range(sim.elections),
            run.summary.elections.to_string(),
        ),
        (
            "failovers",
            range(sim.failover_counts),
            run.summary.failovers_ms.len().to_string(),
        ),
        ("failover p50", sim_p50, run_p50),
        ("failover max", sim_max, run_max),
        (
            "leaderless time",
            format!(
                "{:.1} to {:.1} s (mean {:.1} s)",
                least / 1000.0,
                most / 1000.0,
                mean / 1000.0
            ),
            format!("{:.1} s", run.summary.leaderless_ms / 1000.0),
        ),
        (
            "violations",
            match sim.failing.first() {
                None => "none".to_string(),
                Some((seed, first)) => {
                    format!("in {} seeds; seed {seed}: {first}", sim.failing.len())
                }
            },
            match run.first() {
                None => "none".to_string(),
                Some(first) => format!("{}; first {first}", run.violations.len()),
            },
        ),
    ];
    let last_seed = sim.first_seed + sim.seeds.saturating_sub(1);
    let _ = writeln!(
        page,
        "<h2>Simulation vs {source}</h2>\n<p>The same steps in the election simulation, seeds {}..={last_seed} \
         (<code>cargo xtask scenario sim FILE --first-seed {} --seeds {}</code>), checked by the same checker.</p>\n\
         <table><tr><th></th><th>simulation, {} seeds</th><th>{source}</th></tr>",
        sim.first_seed, sim.first_seed, sim.seeds, sim.seeds
    );
    for (name, sim_value, run_value) in &rows {
        let _ = writeln!(
            page,
            "<tr><th>{name}</th><td>{}</td><td>{}</td></tr>",
            escape(sim_value),
            escape(run_value)
        );
    }
    page.push_str("</table>\n");
    let disagreements = sim.disagreements(run);
    if disagreements.is_empty() {
        let _ = writeln!(
            page,
            "<p>The simulation and the run agree: the same verdict, elections and failovers \
             within the simulation's range, failover times and leaderless time within {:.0} s of it.</p>",
            TOLERANCE_MS / 1000.0
        );
    } else {
        page.push_str("<p><b>They disagree:</b></p>\n<ul>\n");
        for line in disagreements {
            let _ = writeln!(page, "<li>{}</li>", escape(&line));
        }
        page.push_str("</ul>\n");
    }
}
