//! Integration tests of the root package: one binary, one module per boundary.

mod arm_readme;
mod cli;
mod coord_live;
mod coord_sim;
mod determinism;
mod harness;
mod live_parity;
mod mesos_live;
mod report;
mod scheduler_live;
mod ui_browser;
mod wire_zk;

use std::path::{Path, PathBuf};

/// The repository root (where `scenarios/` lives).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every scenario file under `scenarios/`, sorted.
pub fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .expect("read scenarios/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scenarios under scenarios/");
    files
}

/// A scratch folder of this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}
