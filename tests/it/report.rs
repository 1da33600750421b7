//! `drover sim --report`: the HTML pages the binary writes, where it writes them, and the failure
//! each one marks.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{root, scratch};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run drover")
}

/// A scratch folder removed when the test ends, passed or not.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = scratch(name);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn assert_self_contained(page: &str) {
    for outside in ["http://", "https://", "src=", "url(", "<link"] {
        assert!(!page.contains(outside), "the report contains {outside:?}");
    }
}

#[test]
fn one_run_writes_its_report_to_the_file_named() {
    let dir = Scratch::new("report-one");
    let file = dir.0.join("run.html");
    let out = drover(&[
        "sim",
        "scenarios/harness-partition-and-heal.json",
        "--report",
        file.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("report: {}", file.display())),
        "{stdout}"
    );
    let page = read(&file);
    assert!(page.contains("<span class=\"verdict passed\">PASSED</span>"));
    assert!(page.contains("drover sim scenarios/harness-partition-and-heal.json --seed 11"));
    for lane in ["\"probe-1\"", "\"probe-2\"", "\"probe-3\""] {
        assert!(page.contains(lane), "no lane {lane}");
    }
    assert!(page.contains("\"kind\":\"partition\""), "no partition band");
    assert!(
        page.contains("\"status\":\"200\""),
        "no HTTP step answered 200"
    );
    assert_self_contained(&page);
}

#[test]
fn a_failing_run_marks_its_failure_with_the_replay_command() {
    let dir = Scratch::new("report-failing");
    let scenario = "tests/live/broken-coord-leader-crash-forbids-a-new-leader.json";
    // An existing folder: the page is named after the scenario and the seed.
    let out = drover(&["sim", scenario, "--report", dir.0.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let page = read(
        &dir.0
            .join("broken-coord-leader-crash-forbids-a-new-leader-seed-11.html"),
    );
    assert!(page.contains("<span class=\"verdict failed\">FAILED</span>"));
    assert!(
        page.contains("class=\"failure-marker\"") && page.contains("expect.never[0]"),
        "no failure marker"
    );
    let replay = format!("replay: <code>drover sim {scenario} --seed 11</code>");
    assert!(page.contains(&replay), "no replay command");
    assert!(page.contains("\"kind\":\"crash\""), "no crash band");
    assert!(page.contains("\"leaders\":[{"), "no leadership");
    assert_self_contained(&page);
}

#[test]
fn several_runs_write_one_report_each_into_the_folder() {
    let dir = Scratch::new("report-many");
    let folder = dir.0.join("pages");
    let out = drover(&[
        "sim",
        "scenarios/harness-partition-and-heal.json",
        "--seeds",
        "1..2",
        "--report",
        folder.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("2 report(s) in"), "{stdout}");
    for seed in [1, 2] {
        let page = read(&folder.join(format!("harness-partition-and-heal-seed-{seed}.html")));
        assert!(page.contains(&format!(
            "drover sim scenarios/harness-partition-and-heal.json --seed {seed}"
        )));
    }
}

#[test]
fn a_shrunk_random_failure_has_its_report_beside_it() {
    let dir = Scratch::new("report-shrunk");
    // Asks the coord leader before any can have been elected: fails whatever the faults, so
    // shrinking is quick and ends with no fault left.
    let scenario = dir.0.join("early.json");
    let text = r#"{
        "name": "early-ask", "seed": 1, "duration": "10s",
        "cluster": {"coord": 3},
        "timeline": [{"at": "100ms", "do": "http", "node": "leader:coord", "port": 8080,
                      "method": "GET", "path": "/x"}],
        "expect": {"always": ["one_leader:coord"]}
    }"#;
    std::fs::write(&scenario, text).unwrap();
    let shrunk = dir.0.join("shrunk");
    let out = drover(&[
        "sim",
        scenario.to_str().unwrap(),
        "--random",
        "--seed",
        "1",
        "--out",
        shrunk.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let file = shrunk.join("early-ask-random-1.json");
    let report = shrunk.join("early-ask-random-1.html");
    assert!(file.is_file(), "{stdout}");
    assert!(
        stdout.contains(&format!("report: {}", report.display())),
        "{stdout}"
    );
    let page = read(&report);
    assert!(page.contains("class=\"failure-marker\"") && page.contains("timeline[0]"));
    let replay = format!("drover sim {} --seed 1</code>", file.display());
    assert!(
        page.contains(&replay),
        "no replay command of the shrunk file"
    );
}
