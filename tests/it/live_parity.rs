//! Parity: the same scenario files judged in the simulator and against real daemons in Docker
//! containers (`drover sim --live`) give the same verdict. A deliberately broken scenario must
//! fail in both, so the live checker is shown to catch violations, not only to pass.
//!
//! Needs Docker, Debian's `busybox-static` (the node image's shell), `iptables` and `nsenter`
//! (partitions inside the nodes' network namespaces): without them the test is skipped, unless
//! `DROVER_REQUIRE_WIRE_TESTS` is set (CI), where it fails. The live runner removes every
//! container and network it made; the test checks that none is left. It is `#[ignore]`d in a plain
//! `cargo test` (the scenarios' timings are real, and the other live tests' load would shift them):
//! `.ci/run` runs it on its own, `cargo test --test it live_parity -- --ignored`.

use std::process::Command;

use crate::root;
use crate::wire_zk::skip_or_fail;

/// The scenarios run in both worlds, with the verdict each must have, and what differs live.
const PARITY: &[(&str, bool, &str)] = &[
    (
        "scenarios/coord-leader-crash-elects-a-new-leader.json",
        true,
        "steps land ~0.1 s late (docker commands)",
    ),
    (
        "scenarios/coord-cut-off-server-drops-its-clients.json",
        true,
        "the same",
    ),
    (
        "scenarios/coord-minority-cannot-write-majority-can.json",
        true,
        "the same",
    ),
    (
        "scenarios/harness-partition-and-heal.json",
        true,
        "real HTTP to the probes",
    ),
    (
        "scenarios/master-leader-crash-while-tasks-run.json",
        true,
        "tasks are real processes in the agents' containers",
    ),
    (
        "scenarios/master-agent-partitioned-is-unreachable-then-back.json",
        true,
        "the same",
    ),
    (
        "tests/live/broken-coord-leader-crash-forbids-a-new-leader.json",
        false,
        "deliberately broken: must fail in both",
    ),
];

fn verdict(output: &std::process::Output) -> Vec<(String, bool)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let passed = line.starts_with("PASSED ");
            let failed = line.starts_with("FAILED ");
            (passed || failed).then(|| {
                let name = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches(':');
                (name.to_string(), passed)
            })
        })
        .collect()
}

fn missing_tools() -> Vec<String> {
    let mut missing = Vec::new();
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works("docker", &["info"]) {
        missing.push("a running Docker engine".to_string());
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        missing.push("/bin/busybox (Debian package busybox-static)".to_string());
    }
    if !works("iptables", &["--version"]) || !works("nsenter", &["--version"]) {
        missing.push("iptables and nsenter (Debian packages iptables, util-linux)".to_string());
    }
    missing
}

#[test]
#[ignore = "eight minutes of containers whose timings other tests' load would disturb: .ci/run runs it alone (cargo test --test it live_parity -- --ignored)"]
fn scenarios_get_the_same_verdict_live_as_in_the_simulator() -> Result<(), String> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return skip_or_fail("live parity", &missing);
    }
    let files: Vec<String> = PARITY
        .iter()
        .map(|(file, _, _)| root().join(file).display().to_string())
        .collect();
    let drover = env!("CARGO_BIN_EXE_drover");
    let simulated = Command::new(drover)
        .arg("sim")
        .args(&files)
        .output()
        .map_err(|e| e.to_string())?;
    let live = Command::new(drover)
        .args(["sim", "--live"])
        .args(&files)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&live.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&live.stderr));
    let simulated = verdict(&simulated);
    let live_verdict = verdict(&live);
    assert_eq!(simulated.len(), PARITY.len(), "simulator: {simulated:?}");
    assert_eq!(
        live_verdict.len(),
        PARITY.len(),
        "live: {live_verdict:?}\n{stdout}"
    );
    for (i, (file, expected, differs)) in PARITY.iter().enumerate() {
        assert_eq!(simulated[i].1, *expected, "{file} in the simulator");
        assert_eq!(
            live_verdict[i].1,
            *expected,
            "{file} live ({differs}); the simulator said {}",
            if simulated[i].1 { "PASSED" } else { "FAILED" }
        );
    }
    // Nothing of the runs is left behind.
    let left = Command::new("docker")
        .args([
            "ps",
            "--all",
            "--filter",
            "name=drover-live-",
            "--format",
            "{{.Names}}",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(left.trim().is_empty(), "containers left behind: {left}");
    let networks = Command::new("docker")
        .args([
            "network",
            "ls",
            "--filter",
            "name=drover-live-",
            "--format",
            "{{.Name}}",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let networks = String::from_utf8_lossy(&networks.stdout);
    assert!(
        networks.trim().is_empty(),
        "networks left behind: {networks}"
    );
    Ok(())
}
