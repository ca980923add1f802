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

#[test]
fn a_container_run_is_compared_with_the_simulation_and_disagreement_is_said() {
    let scenario = leader_kill_loop();
    let simulated = sim::run(&scenario, 1);
    let sim_verdict = check(&scenario, &simulated);
    // A "container" run that lost its second failover: one election fewer, and a violation.
    let mut run_verdict = sim_verdict.clone();
    run_verdict.summary.elections -= 1;
    run_verdict.summary.failovers_ms.pop();
    run_verdict.violations.push(scenario::Violation {
        at_ms: 19_000.0,
        message: "no new leader".into(),
    });
    let lines = report::disagreements(&sim_verdict.summary, &sim_verdict, &run_verdict);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains("the run broke an invariant that the simulation kept"));
    assert!(report::disagreements(&sim_verdict.summary, &sim_verdict, &sim_verdict).is_empty());

    let mut history = simulated.clone();
    history.header.source = "docker".into();
    let svg = report::timeline_svg(&history, &run_verdict).unwrap();
    let page = report::html(
        &scenario,
        &history,
        &run_verdict,
        &svg,
        Some(report::SimSide {
            seed: 1,
            verdict: &sim_verdict,
        }),
    );
    assert!(page.contains("<h2>Simulation vs docker</h2>"));
    assert!(page.contains("They disagree:"));
    assert!(page.contains("Checker: FAILED"));
}
