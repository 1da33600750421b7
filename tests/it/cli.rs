//! `drover sim` as a user meets it: exit codes, messages, the replay command.

use std::process::{Command, Output};

use crate::{root, scratch};

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run drover")
}

#[test]
fn a_bad_scenario_exits_2_naming_the_field_and_what_was_expected() {
    let file = scratch("cli-bad").join("bad.json");
    std::fs::write(&file, r#"{"name": 3, "cluster": {}}"#).unwrap();
    let out = drover(&["sim", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at `name`") && stderr.contains("expected a string"),
        "{stderr}"
    );
}

#[test]
fn a_failed_invariant_exits_1_and_prints_the_replay_command() {
    let file = scratch("cli-fail").join("never.json");
    let scenario = r#"{
        "name": "never", "seed": 5, "duration": "3s",
        "cluster": {"nodes": [{"role": "probe", "count": 2}]},
        "expect": {"eventually": [{"by": "2s", "event": "peer_up peer=nobody"}]}
    }"#;
    std::fs::write(&file, scenario).unwrap();
    let out = drover(&["sim", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let replay = format!("replay: drover sim {} --seed 5", file.display());
    assert!(stdout.contains(&replay), "{stdout}");
    assert!(
        stdout.contains("never saw `peer_up peer=nobody`"),
        "{stdout}"
    );
}

#[test]
fn many_seeds_run_and_pass() {
    let out = drover(&[
        "sim",
        "scenarios/harness-partition-and-heal.json",
        "--seeds",
        "1..4",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("4 run(s): 4 passed, 0 failed"), "{stdout}");
}

/// The seconds before ` s after the election` on the line that starts with `label`.
fn after_election(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{stdout}"));
    let (before, _) = line
        .split_once(" s after the election")
        .unwrap_or_else(|| panic!("{line}"));
    let number = before.rsplit(", ").next().unwrap_or(before);
    number
        .parse()
        .unwrap_or_else(|e| panic!("{number:?} in {line}: {e}"))
}

#[test]
fn after_a_master_failover_every_agent_is_back_and_offers_flow_within_one_registration_backoff() {
    // Simulated time, the same on every run: 200 agents running 1,000 tasks, the leading master
    // crashes. Agents see the winner in coord before it has read the registry; it holds their
    // registrations until it leads, so each agent's first attempt (drawn below the 1 s
    // registration back-off, as Mesos' agents draw theirs) is enough.
    let out = drover(&[
        "bench",
        "sim-failover",
        "--agents",
        "200",
        "--tasks",
        "1000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1000 of 1000 instances RUNNING"),
        "{stdout}"
    );
    assert!(stdout.contains("(200 came back)"), "{stdout}");
    let back = after_election(&stdout, "all 200 agents re-registered:");
    let offers = after_election(&stdout, "first offers sent:");
    assert!(
        back < 1.1,
        "agents back {back} s after the election:\n{stdout}"
    );
    assert!(
        offers <= back,
        "offers {offers} s after the election:\n{stdout}"
    );
}
