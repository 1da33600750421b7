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
    /// Runs this many seeds at once (each run stays single-threaded and deterministic: its trace
    /// is the same whatever the number of jobs). Default: the machine's cores.
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Stops starting runs after this much wall time (`90s`, `10m`), and reports how many ran.
    #[arg(long, value_parser = parse_budget)]
    budget: Option<std::time::Duration>,
}

fn parse_budget(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like `90s` or `10m`, found {text:?}"))?;
    let seconds = match unit {
        "s" | "" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("expected a unit s, m or h in {text:?}")),
    };
    Ok(std::time::Duration::from_secs(seconds))
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

/// One run to make: a scenario (made random from the seed with `--random`) and a seed.
struct Job<'a> {
    base: &'a Scenario,
    seed: u64,
    scenario: Scenario,
    faults: Vec<drover_sim::explore::Fault>,
}

/// What a job gave.
struct Done {
    result: Result<Outcome, String>,
    wall_s: f64,
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
    let mut jobs = Vec::new();
    for base in &scenarios {
        let seeds: Vec<u64> = match (&args.seeds, args.seed) {
            (Some(range), _) => range.clone().collect(),
            (None, Some(seed)) => vec![seed],
            (None, None) => vec![base.seed],
        };
        let map = if args.random {
            match drover_sim::cluster::ClusterMap::plan(base, &crate::roles()) {
                Ok(map) => Some(map),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        } else {
            None
        };
        for seed in seeds {
            let (scenario, faults) = match &map {
                Some(map) => {
                    let faults = drover_sim::explore::random_faults(base, map, seed);
                    (drover_sim::explore::with_faults(base, &faults), faults)
                }
                None => (base.clone(), Vec::new()),
            };
            jobs.push(Job {
                base,
                seed,
                scenario,
                faults,
            });
        }
    }
    let many = jobs.len() > 1;
    let quiet = many && args.seeds.is_some();
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, jobs.len().max(1));
    let progress = if quiet {
        let bar = ProgressBar::new(jobs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "the budget and the speed report are wall time of the command; never in a trace"
    )]
    let started = std::time::Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Done>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    #[allow(
        clippy::disallowed_methods,
        reason = "independent runs on their own threads; each run is single-threaded inside"
    )]
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if args.budget.is_some_and(|b| started.elapsed() >= b) {
                    return;
                }
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(index) else {
                    return;
                };
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the run's speed, never in a trace"
                )]
                let run_started = std::time::Instant::now();
                let result = run_one(&job.scenario, job.seed);
                let wall_s = run_started.elapsed().as_secs_f64().max(1e-9);
                if !result.as_ref().is_ok_and(Outcome::passed) {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(bar) = &progress {
                    bar.inc(1);
                    bar.set_message(format!(
                        "{} failed",
                        failures.load(std::sync::atomic::Ordering::Relaxed)
                    ));
                }
                if let Ok(mut slot) = results[index].lock() {
                    *slot = Some(Done { result, wall_s });
                }
            });
        }
    });
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let mut traces = String::new();
    let mut failed = Vec::new();
    let mut simulated_ms = 0u64;
    let mut ran = 0usize;
    let mut faults_by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    let mut checks = 0u64;
    let mut to_shrink: std::collections::BTreeMap<PathBuf, (usize, String)> = Default::default();
    for (index, (job, slot)) in jobs.iter().zip(&results).enumerate() {
        let Some(done) = slot.lock().ok().and_then(|mut s| s.take()) else {
            continue;
        };
        ran += 1;
        let (scenario, seed) = (&job.scenario, job.seed);
        match done.result {
            Ok(outcome) => {
                simulated_ms += outcome.simulated_ms;
                checks += outcome.checks;
                for (kind, count) in outcome.harness_actions() {
                    *faults_by_kind.entry(kind).or_default() += count;
                }
                if !quiet {
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
                    if !quiet {
                        println!(
                            "PASSED {} seed {seed} ({:.0}x real time)",
                            outcome.scenario,
                            outcome.simulated_ms as f64 / 1000.0 / done.wall_s
                        );
                    }
                } else {
                    let first = &outcome.failures[0];
                    let reason =
                        format!("{} at {} ms: {}", first.check, first.at_ms, first.message);
                    failed.push((scenario.file.clone(), seed, reason));
                    if args.random {
                        to_shrink
                            .entry(job.base.file.clone())
                            .or_insert((index, first.check.clone()));
                    }
                }
            }
            Err(reason) => failed.push((scenario.file.clone(), seed, reason)),
        }
    }
    if let Some(path) = &args.trace {
        if let Err(e) = std::fs::File::create(path).and_then(|mut f| f.write_all(traces.as_bytes()))
        {
            eprintln!("error: cannot write the trace to {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    // The first failure of each scenario, shrunk to a minimal scenario file.
    let mut shrunk = Vec::new();
    for (index, check) in to_shrink.values() {
        let job = &jobs[*index];
        match minimize(job.base, job.faults.clone(), job.seed, check, &args.out) {
            Ok(file) => shrunk.push((check.clone(), file, job.seed)),
            Err(e) => eprintln!("error: shrinking failed: {e}"),
        }
    }
    println!(
        "{} run(s): {} passed, {} failed; simulated {:.1} s in {:.2} s of wall time ({:.0}x, {} job(s))",
        ran,
        ran - failed.len(),
        failed.len(),
        simulated_ms as f64 / 1000.0,
        wall,
        simulated_ms as f64 / 1000.0 / wall,
        workers,
    );
    if ran < jobs.len() {
        println!(
            "the budget ran out: {} of {} runs were made",
            ran,
            jobs.len()
        );
    }
    if args.random || quiet {
        let kinds: Vec<String> = faults_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        println!("harness actions: {}", kinds.join(", "));
        println!("invariant checks: {checks}");
    }
    for (file, seed, reason) in &failed {
        println!("FAILED {} seed {seed}: {reason}", file.display());
        println!("  replay: {}", replay_command(file, *seed));
    }
    for (check, file, seed) in &shrunk {
        println!(
            "shrunk the failure of {check} to {}\n  replay: {}",
            file.display(),
            replay_command(file, *seed)
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
