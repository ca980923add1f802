//! The report of a run: a self-contained page with the timeline inline, one lane per node,
//! the verdict, and the simulation beside a container run.

use std::path::PathBuf;

use scenario::{check, report, sim};

fn leader_kill_loop() -> scenario::Scenario {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/leader-kill-loop.toml");
    scenario::load(&path).unwrap()
}

#[test]
fn the_timeline_has_a_lane_per_node_with_terms_and_the_page_needs_nothing_else() {
    let scenario = leader_kill_loop();
    let history = sim::run(&scenario, 1);
    let verdict = check(&scenario, &history);
    let svg = report::timeline_svg(&history, &verdict).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
    for node in 1..=scenario.nodes {
        assert!(
            svg.contains(&format!("node {node}\n")),
            "no lane label for node {node}"
        );
    }
    assert!(
        svg.contains("t5"),
        "the first leader's term is written on its lane"
    );

    // The same drawing as a PNG: a real image of the SVG's size, with text in it (the font is
    // compiled in; a missing font is an error, not a picture without labels).
    let png = report::timeline_png(&history, &verdict).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(&png));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    assert!(
        svg.contains(&format!("height=\"{}\"", frame.height)),
        "the PNG has the SVG's size"
    );
    assert_eq!(
        lane_bands(&pixels[..frame.buffer_size()], frame.width as usize),
        usize::from(scenario.nodes),
        "one band of lane colours per node"
    );

    let page = report::html(&scenario, &history, &verdict, &svg, None);
    assert!(page.contains("Checker: passed."));
    assert!(page.contains(&svg));
    // Self-contained: no scripts, stylesheets or images fetched from anywhere.
    for external in ["<script", "<link", "<img", "src=", "url("] {
        assert!(
            !page.contains(external),
            "the page loads something: {external}"
        );
    }
}

/// Bands of consecutive pixel rows in which at least 100 pixels have a lane's colour.
fn lane_bands(rgb: &[u8], width: usize) -> usize {
    let colours: Vec<(u8, u8, u8)> = report::lane_colours().collect();
    let mut bands = 0;
    let mut inside = false;
    for row in rgb.chunks(width * 3) {
        let coloured = row
            .chunks(3)
            .filter(|p| colours.contains(&(p[0], p[1], p[2])))
            .count();
        let lane = coloured >= 100;
        bands += usize::from(lane && !inside);
        inside = lane;
    }
    bands
}

#[test]
fn a_container_run_is_compared_with_many_seeds_and_disagreement_is_said() {
    let scenario = leader_kill_loop();
    let sweep = scenario::Sweep::run(&scenario, 1, 20, |_, _, _| {});
    assert_eq!(
        (sweep.seeds, sweep.passed()),
        (20, 20),
        "{:?}",
        sweep.failing
    );
    // Three kills of the leader: three failovers in every seed.
    assert_eq!(sweep.failover_counts, (3, 3));

    // A seed's own history, taken for a container run, agrees with the sweep it is part of.
    let simulated = sim::run(&scenario, 1);
    let agreeing = check(&scenario, &simulated);
    assert!(
        sweep.disagreements(&agreeing).is_empty(),
        "{:?}",
        sweep.disagreements(&agreeing)
    );

    // A "container" run that lost its second failover: one election and failover fewer, a
    // violation, and a leaderless stretch far longer than any seed's.
    let mut run_verdict = agreeing.clone();
    run_verdict.summary.elections = sweep.elections.0 - 1;
    run_verdict.summary.failovers_ms.pop();
    run_verdict.summary.leaderless_ms = sweep.leaderless_ms.2 + 5000.0;
    run_verdict.violations.push(scenario::Violation {
        at_ms: 19_000.0,
        message: "no new leader".into(),
    });
    let lines = sweep.disagreements(&run_verdict);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[0],
        "the run broke an invariant that all 20 simulated seeds kept"
    );
    assert!(
        lines[3].starts_with("the run was without a leader for"),
        "{lines:?}"
    );

    let mut history = simulated.clone();
    history.header.source = "docker".into();
    let svg = report::timeline_svg(&history, &run_verdict).unwrap();
    let page = report::html(&scenario, &history, &run_verdict, &svg, Some(&sweep));
    assert!(page.contains("<h2>Simulation vs docker</h2>"));
    assert!(page.contains("20 of 20 seeds passed"));
    assert!(page.contains("They disagree:"));
    assert!(page.contains("all 20 simulated seeds kept"));
    assert!(page.contains("Checker: FAILED"));
}
