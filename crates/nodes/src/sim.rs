//! `drover sim`: runs scenario files, prints a readable timeline and a verdict, and says how to
//! replay a failure.

use std::io::Write;
use std::ops::RangeInclusive;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use drover_sim::{Outcome, Scenario};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub struct SimArgs {
    /// Scenario files, or folders whose `*.json` files are scenarios.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Run with this seed instead of the scenario's own.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run every seed of a range, like `1..100` (inclusive).
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<RangeInclusive<u64>>,
    /// Write the trace (`<sim ms> <node> <event>` lines) to this file.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Print every trace line, not only the notable ones.
    #[arg(long, short)]
    verbose: bool,
    /// Replace each scenario's timeline with a random fault schedule drawn from the seed, judged by
    /// its `always` invariants; a failure is shrunk to a minimal scenario file.
    #[arg(long)]
    random: bool,
    /// Where `--random` writes minimal failing scenarios.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

fn parse_seeds(text: &str) -> Result<RangeInclusive<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or("expected a range like `1..100`")?;
    let a: u64 = a
        .parse()
        .map_err(|_| format!("expected a number before `..`, found {a:?}"))?;
    let b: u64 = b
        .trim_start_matches('=')
        .parse()
        .map_err(|_| format!("expected a number after `..`, found {b:?}"))?;
    if a > b {
        return Err(format!("empty range {a}..{b}"));
    }
    Ok(a..=b)
}

/// The scenario files named by `paths`: files as given, folders' `*.json` files sorted.
pub fn scenario_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Runs one scenario with one seed; a panic inside the simulation is a failed run, not a crash of
/// the command.
pub fn run_one(scenario: &Scenario, seed: u64) -> Result<Outcome, String> {
    let roles = crate::roles();
    match std::panic::catch_unwind(AssertUnwindSafe(|| drover_sim::run(scenario, &roles, seed))) {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(format!("the simulation panicked: {message}"))
        }
    }
}

/// Shrinks a failing random schedule and writes it as a scenario file; returns its path.
fn minimize(
    base: &Scenario,
    faults: Vec<drover_sim::explore::Fault>,
    seed: u64,
    check: &str,
    out: &Path,
) -> Result<PathBuf, String> {
    let roles = crate::roles();
    let (mut minimal, runs) = drover_sim::explore::shrink(base, faults, &roles, seed, check)
        .map_err(|e| e.to_string())?;
    minimal.seed = seed;
    minimal.name = format!("{}-random-{seed}", base.name);
    std::fs::create_dir_all(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let file = out.join(format!("{}.json", minimal.name));
    let text = serde_json::to_string_pretty(&drover_sim::explore::to_json(&minimal))
        .map_err(|e| e.to_string())?;
    std::fs::write(&file, text + "\n").map_err(|e| format!("write {}: {e}", file.display()))?;
    println!(
        "shrinking took {runs} runs; {} steps left",
        minimal.timeline.len()
    );
    Ok(file)
}

fn replay_command(file: &Path, seed: u64) -> String {
    format!("drover sim {} --seed {seed}", file.display())
}

pub fn main(args: SimArgs) -> ExitCode {
    let files = match scenario_files(&args.paths) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            eprintln!("error: no scenario files in {:?}", args.paths);
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: cannot list scenarios: {e}");
            return ExitCode::from(2);
        }
    };
    let mut scenarios = Vec::new();
    let mut bad = false;
    for file in &files {
        match drover_sim::load(file) {
            Ok(scenario) => scenarios.push(scenario),
            Err(e) => {
                eprintln!("error: {e}");
                bad = true;
            }
        }
    }
    if bad {
        return ExitCode::from(2);
    }
    let runs: Vec<(&Scenario, u64)> = scenarios
        .iter()
        .flat_map(|s| {
            let seeds: Vec<u64> = match (&args.seeds, args.seed) {
                (Some(range), _) => range.clone().collect(),
                (None, Some(seed)) => vec![seed],
                (None, None) => vec![s.seed],
            };
            seeds.into_iter().map(move |seed| (s, seed))
        })
        .collect();
    let many = runs.len() > 1;
    let progress = if many && args.seeds.is_some() {
        let bar = ProgressBar::new(runs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let mut traces = String::new();
    let mut failed = Vec::new();
    let mut simulated_ms = 0u64;
    #[allow(
        clippy::disallowed_methods,
        reason = "measures the simulator's speed; never enters a trace"
    )]
    let started = std::time::Instant::now();
    let mut shrunk = std::collections::BTreeSet::new();
    for (base, seed) in runs.iter().copied() {
        let randomized;
        let mut faults = Vec::new();
        let scenario = if args.random {
            let map = match drover_sim::cluster::ClusterMap::plan(base, &crate::roles()) {
                Ok(map) => map,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            faults = drover_sim::explore::random_faults(base, &map, seed);
            randomized = drover_sim::explore::with_faults(base, &faults);
            &randomized
        } else {
            base
        };
        let result = run_one(scenario, seed);
        if args.random && shrunk.insert(base.file.clone()) {
            if let Ok(outcome) = &result {
                if let Some(check) = drover_sim::explore::failed_check(outcome) {
                    match minimize(base, faults, seed, &check, &args.out) {
                        Ok(file) => println!(
                            "shrunk the failure of {check} to {}\n  replay: {}",
                            file.display(),
                            replay_command(&file, seed)
                        ),
                        Err(e) => eprintln!("error: shrinking failed: {e}"),
                    }
                } else {
                    shrunk.remove(&base.file);
                }
            }
        }
        if let Some(bar) = &progress {
            bar.inc(1);
            bar.set_message(format!("{} failed", failed.len()));
        }
        match result {
            Ok(outcome) => {
                simulated_ms += outcome.simulated_ms;
                if progress.is_none() {
                    println!(
                        "== {} ({}) seed {seed}",
                        outcome.scenario,
                        scenario.file.display()
                    );
                    let lines: Vec<&str> = if args.verbose {
                        outcome.trace.lines().collect()
                    } else {
                        outcome.timeline.iter().map(String::as_str).collect()
                    };
                    for line in lines {
                        println!("  {line}");
                    }
                }
                if many {
                    traces.push_str(&format!("# {} seed {seed}\n", scenario.file.display()));
                }
                traces.push_str(&outcome.trace);
                if outcome.passed() {
                    if progress.is_none() {
                        println!("PASSED {} seed {seed}", outcome.scenario);
                    }
                } else {
                    let first = &outcome.failures[0];
                    let reason =
                        format!("{} at {} ms: {}", first.check, first.at_ms, first.message);
                    failed.push((scenario.file.clone(), seed, reason));
                }
            }
            Err(reason) => failed.push((scenario.file.clone(), seed, reason)),
        }
    }
    if let Some(bar) = progress {
        bar.finish();
    }
    if let Some(path) = &args.trace {
        if let Err(e) = std::fs::File::create(path).and_then(|mut f| f.write_all(traces.as_bytes()))
        {
            eprintln!("error: cannot write the trace to {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    println!(
        "{} run(s): {} passed, {} failed; simulated {:.1} s in {:.2} s of wall time ({:.0}x)",
        runs.len(),
        runs.len() - failed.len(),
        failed.len(),
        simulated_ms as f64 / 1000.0,
        wall,
        simulated_ms as f64 / 1000.0 / wall
    );
    for (file, seed, reason) in &failed {
        println!("FAILED {} seed {seed}: {reason}", file.display());
        println!("  replay: {}", replay_command(file, *seed));
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
