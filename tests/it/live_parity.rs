//! Parity: the same scenario files judged in the simulator and against real daemons in Docker
//! containers (`drover sim --live`), or as local processes without Docker (`--no-docker`), give
//! the same verdict, down to the check that fails. Deliberately broken scenarios must fail in
//! both, so the live checker is shown to catch violations, not only to pass.
//!
//! Needs Docker, Debian's `busybox-static` (the node image's shell), `iptables` and `nsenter`
//! (partitions inside the nodes' network namespaces): without them the test is skipped, unless
//! `DROVER_REQUIRE_WIRE_TESTS` is set (CI), where it fails. The live runner removes every
//! container and network it made; the test checks that none is left. It is `#[ignore]`d in a plain
//! `cargo test` (the scenarios' timings are real, and the other live tests' load would shift them):
//! `.ci/run` runs it on its own, `cargo test --test it live_parity -- --ignored --test-threads=1`.

use std::process::Command;

use crate::root;
use crate::wire_zk::skip_or_fail;

/// The scenarios run in both worlds, and the check that must fail (`None`: it passes). What
/// differs live is each file's `live` note.
const PARITY: &[(&str, Option<&str>)] = &[
    (
        "scenarios/coord-leader-crash-elects-a-new-leader.json",
        None,
    ),
    (
        "scenarios/coord-cut-off-server-drops-its-clients.json",
        None,
    ),
    (
        "scenarios/coord-minority-cannot-write-majority-can.json",
        None,
    ),
    ("scenarios/harness-partition-and-heal.json", None),
    ("scenarios/master-leader-crash-while-tasks-run.json", None),
    (
        "scenarios/master-agent-partitioned-is-unreachable-then-back.json",
        None,
    ),
    ("scenarios/scheduler-leader-crash-mid-deploy.json", None),
    (
        "scenarios/dns-names-follow-tasks-through-master-failover-and-its-own-restart.json",
        None,
    ),
    (
        "tests/live/broken-coord-leader-crash-forbids-a-new-leader.json",
        Some("expect.never[0]"),
    ),
    (
        "tests/live/broken-scheduler-deploys-with-every-agent-gone.json",
        Some("deployments_finish"),
    ),
];

/// A scenario file's `live` note: what differs when it runs against real daemons.
fn differs(file: &str) -> String {
    let text = std::fs::read_to_string(root().join(file)).unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    value["live"]
        .as_str()
        .unwrap_or("nothing noted")
        .to_string()
}

/// Each `PASSED`/`FAILED` line's scenario and, for a failure, the check that failed.
fn verdict(output: &std::process::Output) -> Vec<(String, Option<String>)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("PASSED ")
                .or_else(|| line.strip_prefix("FAILED "))?;
            let name = rest.split_whitespace().next().unwrap_or("");
            let name = name.trim_end_matches(':').to_string();
            if line.starts_with("PASSED ") {
                return Some((name, None));
            }
            // `FAILED <name> (seed N|live): <check> at <ms> ms: <why>`
            let check = rest
                .split_once(": ")
                .and_then(|(_, why)| why.split_whitespace().next())
                .unwrap_or("?");
            Some((name, Some(check.to_string())))
        })
        .collect()
}

/// `drover sim FILES` and `drover sim LIVE... FILES`, each as it ended.
fn run_both(
    files: &[&str],
    live: &[&str],
) -> Result<(std::process::Output, std::process::Output), String> {
    let files: Vec<String> = files
        .iter()
        .map(|file| root().join(file).display().to_string())
        .collect();
    let drover = env!("CARGO_BIN_EXE_drover");
    let run = |args: &[&str]| {
        Command::new(drover)
            .arg("sim")
            .args(args)
            .args(&files)
            .output()
            .map_err(|e| e.to_string())
    };
    Ok((run(&[])?, run(live)?))
}

fn shown(check: &Option<String>) -> String {
    match check {
        None => "PASSED".into(),
        Some(check) => format!("FAILED on {check}"),
    }
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
#[ignore = "fourteen minutes of containers whose timings other tests' load would disturb: .ci/run runs it alone (cargo test --test it live_parity -- --ignored --test-threads=1)"]
fn scenarios_get_the_same_verdict_live_as_in_the_simulator() -> Result<(), String> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return skip_or_fail("live parity", &missing);
    }
    let image = match crate::scheduler_live::SeedImage::ensure() {
        Ok(image) => image,
        Err(e) => return skip_or_fail("live parity", &[e]),
    };
    let files: Vec<&str> = PARITY.iter().map(|(file, _)| *file).collect();
    let (simulated, live) = run_both(&files, &["--live"])?;
    drop(image);
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
    for (i, (file, expected)) in PARITY.iter().enumerate() {
        let expected = expected.map(String::from);
        assert_eq!(simulated[i].1, expected, "{file} in the simulator");
        assert_eq!(
            live_verdict[i].1,
            expected,
            "{file} live ({}): {}; the simulator said {}",
            differs(file),
            shown(&live_verdict[i].1),
            shown(&simulated[i].1)
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

/// Without Docker: the same verdicts with every node a local process at a loopback address of its
/// own (`--no-docker`); a scenario that partitions is refused, not run with its faults left out.
const PROCESSES: &[(&str, Option<&str>)] = &[
    (
        "scenarios/coord-five-servers-lose-two-leaders-and-keep-writing.json",
        None,
    ),
    // The agent's SIGKILL leaves its tasks running; the restarted agent adopts them.
    (
        "scenarios/master-agent-restart-recovers-its-tasks.json",
        None,
    ),
    (
        "tests/live/broken-scheduler-deploys-with-every-agent-gone.json",
        Some("deployments_finish"),
    ),
];

/// The processes some live run left: those carrying the runs' mark in their environment.
fn marked_processes() -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"DROVER_LIVE_RUN="))
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            left.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
        }
    }
    left
}

#[test]
#[ignore = "four minutes of real timings: .ci/run runs it alone (cargo test --test it live_parity -- --ignored --test-threads=1)"]
fn scenarios_get_the_same_verdict_as_local_processes_without_docker() -> Result<(), String> {
    let files: Vec<&str> = PROCESSES.iter().map(|(file, _)| *file).collect();
    let (simulated, live) = run_both(&files, &["--live", "--no-docker"])?;
    let drover = env!("CARGO_BIN_EXE_drover");
    let stdout = String::from_utf8_lossy(&live.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&live.stderr));
    let simulated = verdict(&simulated);
    let live_verdict = verdict(&live);
    assert_eq!(
        live_verdict.len(),
        PROCESSES.len(),
        "live: {live_verdict:?}\n{stdout}"
    );
    assert_eq!(
        stdout.matches("(the nodes ran as processes)").count(),
        PROCESSES.len(),
        "{stdout}"
    );
    for (i, (file, expected)) in PROCESSES.iter().enumerate() {
        let expected = expected.map(String::from);
        assert_eq!(simulated[i].1, expected, "{file} in the simulator");
        assert_eq!(
            live_verdict[i].1,
            expected,
            "{file} as processes: {}; the simulator said {}",
            shown(&live_verdict[i].1),
            shown(&simulated[i].1)
        );
    }
    // A partition cannot be done between processes: the scenario is refused, saying where.
    let partitioned = root().join("scenarios/coord-minority-cannot-write-majority-can.json");
    let refused = Command::new(drover)
        .args(["sim", "--live", "--no-docker"])
        .arg(&partitioned)
        .output()
        .map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("NOT RUN coord-minority-cannot-write-majority-can live: refused (--no-docker): timeline[0] at 6000 ms")
            && said.contains("partitions and message loss need Docker"),
        "{said}"
    );
    let left = marked_processes();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    Ok(())
}
