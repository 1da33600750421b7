//! The simulator's promise: the same scenario and seed give the same trace, byte for byte, in this
//! process and in another one; another seed gives another run. Each scenario's trace at its own
//! seed is an insta snapshot under `tests/it/snapshots/`.

use std::process::Command;

use crate::{scenario_files, scratch};

/// How long the run with another seed lasts.
const SHORT: std::time::Duration = std::time::Duration::from_secs(20);

#[test]
fn every_scenario_replays_byte_for_byte() {
    let roles = drover_nodes::roles();
    let dir = scratch("determinism");
    let mut simulated_ms = 0;
    #[allow(
        clippy::disallowed_methods,
        reason = "reports the simulator's speed; never compared"
    )]
    let started = std::time::Instant::now();
    for file in scenario_files() {
        let scenario = drover_sim::load(&file).unwrap_or_else(|e| panic!("{e}"));
        // The child process replays on the other core while this one runs the scenario twice.
        let trace_file = dir.join("child.trace");
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(["sim", "--seed", &scenario.seed.to_string(), "--trace"])
            .arg(&trace_file)
            .arg(&file)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run drover sim");
        let first = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
        let second = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
        simulated_ms += first.simulated_ms + second.simulated_ms;
        assert!(first.passed(), "{}: {:?}", file.display(), first.failures);
        // The trace at the scenario's own seed is pinned: a change in behaviour shows as a diff
        // to review (`cargo insta review`), and one that breaks replay fails here.
        insta::assert_snapshot!(scenario.name.clone(), first.trace);
        assert!(
            first.trace.lines().count() > 10,
            "{}: trace too short",
            file.display()
        );
        assert!(
            first.trace == second.trace,
            "{}: two in-process runs differ",
            file.display()
        );

        let status = child.wait_with_output().expect("run drover sim");
        assert!(
            status.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&status.stdout)
        );
        let child = std::fs::read_to_string(&trace_file).unwrap();
        assert!(
            child == first.trace,
            "{}: the child process's trace differs",
            file.display()
        );

        // Another seed: its first seconds already differ (a short run keeps the test fast).
        let mut short = scenario.clone();
        short.duration = short.duration.min(SHORT);
        let other = drover_sim::run(&short, &roles, scenario.seed + 1).unwrap();
        let prefix = |trace: &str| -> String {
            trace
                .lines()
                .filter(|l| {
                    l.split(' ')
                        .next()
                        .and_then(|ms| ms.parse::<u128>().ok())
                        .is_some_and(|ms| ms < SHORT.as_millis())
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            prefix(&other.trace) != prefix(&first.trace),
            "{}: seeds {} and {} gave the same trace",
            file.display(),
            scenario.seed,
            scenario.seed + 1
        );
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "simulation speed: {:.1} simulated s in {wall:.2} wall s = {:.0} simulated s per wall s",
        simulated_ms as f64 / 1000.0,
        simulated_ms as f64 / 1000.0 / wall.max(1e-9)
    );
    let _ = std::fs::remove_dir_all(dir);
}
