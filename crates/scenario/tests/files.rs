//! The shipped scenarios parse, and every kind of mistake in a scenario file is one line naming
//! the file, the line and what to write instead.

use std::path::PathBuf;

use scenario::file::{Action, Load, PartitionSpec, Target};

/// The scenarios the issue asks for, shipped in `scenarios/`.
const SHIPPED: [&str; 9] = [
    "leader-kill-loop",
    "minority-partition",
    "majorities-ring",
    "bridge",
    "one-way-leader-isolation",
    "flaky-network",
    "pause-leader",
    "canonical-down",
    "rolling-restart",
];

fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scenarios")
        .join(format!("{name}.toml"))
}

#[test]
fn every_shipped_scenario_parses_and_has_steps_and_expectations() {
    for name in SHIPPED {
        let scenario = scenario::load(&shipped(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scenario.name, name);
        assert_eq!(scenario.nodes, 5, "{name}");
        assert!(!scenario.steps.is_empty(), "{name}");
        assert!(scenario.expect.max_failover.is_some(), "{name}");
        assert!(scenario.steps.iter().all(|s| s.at <= scenario.duration));
    }
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let on_disk = std::fs::read_dir(folder).unwrap().count();
    assert_eq!(
        on_disk,
        SHIPPED.len(),
        "every file in scenarios/ is tested here"
    );
}

#[test]
fn a_scenario_reads_as_written() {
    let scenario = scenario::load(&shipped("leader-kill-loop")).unwrap();
    assert_eq!(scenario.workload.load, Load::Concurrency(4));
    assert_eq!(scenario.workload.ids, (1, 200));
    assert_eq!(scenario.steps[0].action, Action::Kill(Target::Leader));
    assert_eq!(scenario.steps[1].action, Action::Restart(Target::All));
    assert_eq!(scenario.steps[0].line, 15, "the line of its `[[step]]`");
    let ring = scenario::load(&shipped("majorities-ring")).unwrap();
    assert!(matches!(
        ring.steps[0].action,
        Action::Partition(PartitionSpec::Preset(_))
    ));
}

const GOOD: &str = r#"nodes = 5
duration = "30s"

[workload]
concurrency = 2
ids = "1..10"

[[step]]
at = "5s"
kill = "leader"
"#;

/// The error for `GOOD` with `from` replaced by `to`.
fn error_for(from: &str, to: &str) -> String {
    let text = GOOD.replace(from, to);
    assert_ne!(text, GOOD, "the test must change the file");
    scenario::parse("bad.toml", "bad", &text)
        .expect_err("a bad file is refused")
        .to_string()
}

#[test]
fn the_good_file_parses() {
    assert!(scenario::parse("good.toml", "good", GOOD).is_ok());
}

#[test]
fn an_unknown_key_names_its_line_and_the_keys_there_are() {
    let message = error_for("kill = \"leader\"", "kil = \"leader\"");
    assert!(
        message.starts_with("bad.toml:10: unknown field `kil`"),
        "{message}"
    );
    assert!(message.contains("`kill`"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn a_step_after_the_end_says_to_move_it() {
    let message = error_for("at = \"5s\"", "at = \"31s\"");
    assert!(message.starts_with("bad.toml:9: "), "{message}");
    assert!(message.contains("after the end"), "{message}");
    assert!(message.contains("raise duration"), "{message}");
}

#[test]
fn a_node_beyond_the_cluster_names_the_nodes_there_are() {
    let message = error_for("kill = \"leader\"", "kill = 7");
    assert!(
        message.starts_with("bad.toml:10: there is no node 7"),
        "{message}"
    );
    assert!(message.contains("from 1 to 5"), "{message}");
    let message = error_for("kill = \"leader\"", "partition = [[1, 2], [3, 9]]");
    assert!(
        message.starts_with("bad.toml:10: there is no node 9"),
        "{message}"
    );
}

#[test]
fn an_unknown_preset_lists_the_presets() {
    let message = error_for("kill = \"leader\"", "partition = \"ring\"");
    assert!(message.starts_with("bad.toml:10: "), "{message}");
    assert!(message.contains("no partition preset `ring`"), "{message}");
    assert!(
        message.contains("majorities-ring, bridge, isolate-leader"),
        "{message}"
    );
}

#[test]
fn other_mistakes_say_what_to_write() {
    let cases = [
        (
            "duration = \"30s\"",
            "duration = \"30 parsecs\"",
            "bad.toml:2: ",
            "\"5s\"",
        ),
        (
            "kill = \"leader\"",
            "kill = \"leader\"\npause = 2",
            "bad.toml:8: ",
            "kill and pause",
        ),
        (
            "kill = \"leader\"",
            "resume = \"leader\"",
            "bad.toml:10: ",
            "\"all\"",
        ),
        (
            "concurrency = 2",
            "concurrency = 2\nrate = 5",
            "bad.toml:4: ",
            "exactly one of",
        ),
        (
            "ids = \"1..10\"",
            "ids = \"10..1\"",
            "bad.toml:6: ",
            "\"1..200\"",
        ),
        ("nodes = 5", "nodes = 0", "bad.toml:1: ", "from 1 to 64"),
    ];
    for (from, to, line, hint) in cases {
        let message = error_for(from, to);
        assert!(message.starts_with(line), "{to}: {message}");
        assert!(message.contains(hint), "{to}: {message}");
    }
}
