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
    /// Write an HTML report of each run (a lane per node on the simulated time axis, the faults,
    /// who led, the HTTP steps, the failures with their replay command): to this file when one
    /// run is made, else to `<this folder>/<scenario-name>-seed-<N>.html` per run.
    #[arg(long, conflicts_with = "live")]
    report: Option<PathBuf>,
    /// Print every trace line, not only the notable ones.
    #[arg(long, short)]
    verbose: bool,
    /// Replace each scenario's timeline with a random fault schedule drawn from the seed, judged by
    /// its `always` invariants; a failure is shrunk to a minimal scenario file.
    #[arg(long)]
    random: bool,
    /// Where `--random` writes minimal failing scenarios.
    #[arg(long, default_value = "target/shrunk")]
    out: PathBuf,
    /// Runs this many seeds at once (each run stays single-threaded and deterministic: its trace
    /// is the same whatever the number of jobs). Default: the machine's cores.
    #[arg(long, short)]
    jobs: Option<usize>,
    /// Stops starting runs after this much wall time (`90s`, `10m`), and reports how many ran.
    #[arg(long, value_parser = parse_budget)]
    budget: Option<std::time::Duration>,
    /// Play each scenario against real daemons instead: every node a `drover node` in a Docker
    /// container of its own, the faults done for real, the same invariants judging.
    /// (Without a Docker engine the nodes are local processes instead; see `--no-docker`.)
    #[arg(long, conflicts_with_all = ["random", "seeds", "seed", "jobs", "budget"])]
    live: bool,
    /// With `--live`: run the nodes as processes of this host, each at a loopback address of its
    /// own, even where Docker is (crash, stop, restart, pause and skew are done; partitions and
    /// message loss are refused).
    #[arg(long, requires = "live")]
    no_docker: bool,
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

/// Where `--report` writes a run's page: `report` itself when it names a file and one run is
/// made; `<report>/<scenario-name>-seed-<N>.html` when several runs are made or `report` is a
/// folder (one that exists, or a path ending in `/`).
fn report_path(report: &Path, many: bool, scenario: &str, seed: u64) -> PathBuf {
    if many || is_folder(report) {
        report.join(drover_sim::report::file_name(scenario, seed))
    } else {
        report.to_path_buf()
    }
}

fn is_folder(path: &Path) -> bool {
    path.is_dir()
        || path
            .as_os_str()
            .to_string_lossy()
            .ends_with(std::path::MAIN_SEPARATOR)
}

/// Writes the HTML report of one run of `scenario` (a run that could not be made is a report
/// with that one failure and no trace).
fn write_report(
    path: &Path,
    scenario: &Scenario,
    seed: u64,
    result: &Result<Outcome, String>,
    replay: &str,
) -> Result<(), String> {
    let nodes: Vec<(String, String)> =
        drover_sim::cluster::ClusterMap::plan(scenario, &crate::roles())
            .map(|map| {
                map.nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.role.clone()))
                    .collect()
            })
            .unwrap_or_default();
    let not_run;
    let (trace, failures, end_ms) = match result {
        Ok(outcome) => (
            outcome.trace.as_str(),
            outcome.failures.as_slice(),
            outcome.simulated_ms,
        ),
        Err(reason) => {
            not_run = [drover_sim::run::Failure {
                at_ms: 0,
                check: "run".into(),
                message: reason.clone(),
            }];
            ("", &not_run[..], 0)
        }
    };
    let html = drover_sim::report::render(&drover_sim::report::Run {
        scenario: &scenario.name,
        seed,
        trace,
        failures,
        replay,
        nodes: &nodes,
        end_ms,
    });
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    }
    std::fs::write(path, html)
        .map_err(|e| format!("cannot write the report {}: {e}", path.display()))
}

/// A shrunk scenario file, and the report of its run beside it (`None` if it could not be
/// written, which is said on stderr).
struct Shrunk {
    file: PathBuf,
    report: Option<PathBuf>,
}

/// Shrinks a failing random schedule and writes it as a scenario file, with the report of its
/// run beside it (the same path, `.html`).
fn minimize(
    base: &Scenario,
    faults: Vec<drover_sim::explore::Fault>,
    seed: u64,
    check: &str,
    out: &Path,
) -> Result<Shrunk, String> {
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
    // The run of the file as written, exactly what its replay command makes.
    let report = file.with_extension("html");
    let written = drover_sim::load(&file)
        .map_err(|e| e.to_string())
        .and_then(|scenario| {
            let result = run_one(&scenario, seed);
            let replay = replay_command(&file, seed, false);
            write_report(&report, &scenario, seed, &result, &replay)
        });
    let report = match written {
        Ok(()) => Some(report),
        Err(e) => {
            eprintln!("error: the shrunk run's report: {e}");
            None
        }
    };
    Ok(Shrunk { file, report })
}

fn replay_command(file: &Path, seed: u64, random: bool) -> String {
    let random = if random { " --random" } else { "" };
    format!("drover sim {} --seed {seed}{random}", file.display())
}

/// The runs to make: every seed of every scenario, seed-major (so a budget that runs out has
/// covered every scenario alike), each made only when a worker takes it.
struct Plan<'a> {
    scenarios: &'a [Scenario],
    maps: Vec<Option<drover_sim::cluster::ClusterMap>>,
    seeds: Vec<Option<u64>>,
}

/// One run: a scenario (made random from the seed with `--random`) and a seed.
struct Job<'a> {
    base: &'a Scenario,
    seed: u64,
    scenario: Scenario,
    faults: Vec<drover_sim::explore::Fault>,
}

impl<'a> Plan<'a> {
    fn len(&self) -> usize {
        self.scenarios.len() * self.seeds.len()
    }

    fn job(&self, index: usize) -> Job<'a> {
        let n = self.scenarios.len();
        let base = &self.scenarios[index % n];
        let seed = self.seeds[index / n].unwrap_or(base.seed);
        let (scenario, faults) = match &self.maps[index % n] {
            Some(map) => {
                let faults = drover_sim::explore::random_faults(base, map, seed);
                (drover_sim::explore::with_faults(base, &faults), faults)
            }
            None => (base.clone(), Vec::new()),
        };
        Job {
            base,
            seed,
            scenario,
            faults,
        }
    }
}

/// What a run gave, kept small: a sweep holds one per run.
struct Done {
    index: usize,
    file: PathBuf,
    seed: u64,
    name: String,
    failure: Option<(String, String)>,
    simulated_ms: u64,
    checks: u64,
    actions: std::collections::BTreeMap<String, u64>,
    /// Kept only when asked for (`--trace`) or printed (a few runs).
    trace: Option<String>,
    /// The report written (`--report`), or why it could not be.
    report: Option<Result<PathBuf, String>>,
    timeline: Option<Vec<String>>,
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
    if args.live {
        return live_main(&args, &files, &scenarios);
    }
    let mut maps = Vec::new();
    for base in &scenarios {
        if args.random {
            match drover_sim::cluster::ClusterMap::plan(base, &crate::roles()) {
                Ok(map) => maps.push(Some(map)),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        } else {
            maps.push(None);
        }
    }
    let seeds: Vec<Option<u64>> = match (&args.seeds, args.seed) {
        (Some(range), _) => range.clone().map(Some).collect(),
        (None, Some(seed)) => vec![Some(seed)],
        (None, None) => vec![None],
    };
    let plan = Plan {
        scenarios: &scenarios,
        maps,
        seeds,
    };
    let total = plan.len();
    let many = total > 1;
    let quiet = many && args.seeds.is_some();
    let keep_traces = args.trace.is_some();
    let workers = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    let progress = if quiet {
        let bar = ProgressBar::new(total as u64);
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
    let results: std::sync::Mutex<Vec<Done>> = std::sync::Mutex::new(Vec::new());
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
                if index >= total {
                    return;
                }
                let job = plan.job(index);
                #[allow(
                    clippy::disallowed_methods,
                    reason = "the run's speed, never in a trace"
                )]
                let run_started = std::time::Instant::now();
                let result = run_one(&job.scenario, job.seed);
                let wall_s = run_started.elapsed().as_secs_f64().max(1e-9);
                let mut done = Done {
                    index,
                    file: job.scenario.file.clone(),
                    seed: job.seed,
                    name: job.scenario.name.clone(),
                    failure: None,
                    simulated_ms: 0,
                    checks: 0,
                    actions: Default::default(),
                    trace: None,
                    timeline: None,
                    report: None,
                    wall_s,
                };
                if let Some(report) = &args.report {
                    let path = report_path(report, many, &job.scenario.name, job.seed);
                    let replay = replay_command(&job.scenario.file, job.seed, args.random);
                    let written = write_report(&path, &job.scenario, job.seed, &result, &replay);
                    done.report = Some(written.map(|()| path));
                }
                match result {
                    Ok(outcome) => {
                        done.simulated_ms = outcome.simulated_ms;
                        done.checks = outcome.checks;
                        done.actions = outcome.harness_actions();
                        done.failure = outcome.failures.first().map(|f| {
                            (
                                f.check.clone(),
                                format!("{} at {} ms: {}", f.check, f.at_ms, f.message),
                            )
                        });
                        if !quiet {
                            done.timeline = Some(if args.verbose {
                                outcome.trace.lines().map(str::to_string).collect()
                            } else {
                                outcome.timeline
                            });
                        }
                        if keep_traces {
                            done.trace = Some(outcome.trace);
                        }
                    }
                    Err(reason) => done.failure = Some(("run".into(), reason)),
                }
                if done.failure.is_some() {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(bar) = &progress {
                    bar.inc(1);
                    bar.set_message(format!(
                        "{} failed",
                        failures.load(std::sync::atomic::Ordering::Relaxed)
                    ));
                }
                if let Ok(mut all) = results.lock() {
                    all.push(done);
                }
            });
        }
    });
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let mut done = results.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|d| d.index);
    let mut traces = String::new();
    let mut failed = Vec::new();
    let mut simulated_ms = 0u64;
    let ran = done.len();
    let mut faults_by_kind: std::collections::BTreeMap<String, u64> = Default::default();
    let mut checks = 0u64;
    let mut to_shrink: std::collections::BTreeMap<usize, (usize, String)> = Default::default();
    let mut reports = 0;
    let mut report_errors = Vec::new();
    for run in &done {
        simulated_ms += run.simulated_ms;
        checks += run.checks;
        for (kind, count) in &run.actions {
            *faults_by_kind.entry(kind.clone()).or_default() += count;
        }
        if let Some(timeline) = &run.timeline {
            println!("== {} ({}) seed {}", run.name, run.file.display(), run.seed);
            for line in timeline {
                println!("  {line}");
            }
        }
        match &run.report {
            Some(Ok(_)) => reports += 1,
            Some(Err(e)) => report_errors.push(e.clone()),
            None => {}
        }
        if let Some(trace) = &run.trace {
            if many {
                traces.push_str(&format!("# {} seed {}\n", run.file.display(), run.seed));
            }
            traces.push_str(trace);
        }
        match &run.failure {
            None => {
                if !quiet {
                    println!(
                        "PASSED {} seed {} ({:.0}x real time)",
                        run.name,
                        run.seed,
                        run.simulated_ms as f64 / 1000.0 / run.wall_s
                    );
                }
            }
            Some((check, reason)) => {
                failed.push((run.file.clone(), run.seed, reason.clone()));
                if args.random && check != "run" {
                    to_shrink
                        .entry(run.index % scenarios.len())
                        .or_insert((run.index, check.clone()));
                }
            }
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
        let job = plan.job(*index);
        match minimize(job.base, job.faults.clone(), job.seed, check, &args.out) {
            Ok(found) => shrunk.push((check.clone(), found, job.seed)),
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
    if ran < total {
        println!("the budget ran out: {ran} of {total} runs were made");
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
        println!("  replay: {}", replay_command(file, *seed, args.random));
    }
    for (check, found, seed) in &shrunk {
        println!(
            "shrunk the failure of {check} to {}\n  replay: {}",
            found.file.display(),
            replay_command(&found.file, *seed, false)
        );
        if let Some(report) = &found.report {
            println!("  report: {}", report.display());
        }
    }
    if let Some(report) = &args.report {
        match (reports, many || is_folder(report)) {
            (0, _) => {}
            (1, false) => println!("report: {}", report.display()),
            (n, _) => println!("{n} report(s) in {}", report.display()),
        }
    }
    for e in &report_errors {
        eprintln!("error: {e}");
    }
    if !report_errors.is_empty() {
        ExitCode::from(2)
    } else if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `drover sim --live`: each scenario against real daemons in containers, one after the other.
fn live_main(args: &SimArgs, files: &[PathBuf], scenarios: &[Scenario]) -> ExitCode {
    let Some(runtime) = crate::live_runtime() else {
        return ExitCode::FAILURE;
    };
    let mut failed = 0;
    for (file, scenario) in files.iter().zip(scenarios) {
        println!("== {} ({}) live", scenario.name, file.display());
        let started = tokio::time::Instant::now();
        let place = if args.no_docker {
            crate::live::Where::Processes
        } else {
            crate::live::Where::Best
        };
        let run = match runtime.block_on(crate::live::run(scenario, place)) {
            Ok(run) => run,
            Err(e) => {
                println!("NOT RUN {} live: {e}", scenario.name);
                if e.starts_with(crate::live::INTERRUPTED) {
                    return ExitCode::from(130);
                }
                failed += 1;
                continue;
            }
        };
        println!("  (the nodes ran as {})", run.how);
        if let Some(differs) = &scenario.live {
            println!("  live differs: {differs}");
        }
        let outcome = &run.outcome;
        let lines = if args.verbose {
            outcome.trace.lines().map(str::to_string).collect()
        } else {
            outcome.timeline.clone()
        };
        for line in lines {
            println!("  {line}");
        }
        if let Some(path) = &args.trace {
            if let Err(e) = std::fs::write(path, &outcome.trace) {
                eprintln!("error: cannot write {}: {e}", path.display());
            }
        }
        for step in &run.skipped {
            println!("  SKIPPED live: {step}");
        }
        let wall = started.elapsed().as_secs_f64();
        match outcome.failures.first() {
            None => println!("PASSED {} live ({wall:.1} s of wall time)", scenario.name),
            Some(f) => {
                failed += 1;
                println!(
                    "FAILED {} live: {} at {} ms: {} ({wall:.1} s of wall time)",
                    scenario.name, f.check, f.at_ms, f.message
                );
            }
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
