//! `bench sim-launch` and `bench sim-failover`: generated scenarios run in the simulator, read
//! back from their traces.

use super::*;

/// Runs a generated scenario in the simulator (the daemons' log lines dropped: in simulation
/// their trace is what counts), writes its trace where asked; the outcome and the wall seconds.
fn simulate(
    what: &str,
    document: serde_json::Value,
    seed: u64,
    trace: Option<&std::path::Path>,
) -> anyhow::Result<(drover_sim::Outcome, f64)> {
    let scenario = drover_sim::scenario::parse(std::path::Path::new(what), document)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let roles = crate::roles();
    let started = Instant::now();
    let outcome =
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || {
            drover_sim::run(&scenario, &roles, seed)
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    if let Some(path) = trace {
        std::fs::write(path, &outcome.trace)
            .with_context(|| format!("write the trace to {}", path.display()))?;
    }
    Ok((outcome, wall))
}

/// A trace's lines as (ms, node, event); lines that are not events are skipped.
fn trace_events(trace: &str) -> impl Iterator<Item = (u64, &str, drover_core::Event)> {
    trace.lines().filter_map(|line| {
        let mut parts = line.splitn(3, ' ');
        let (at, node, rest) = (parts.next()?, parts.next()?, parts.next()?);
        Some((at.parse().ok()?, node, drover_core::Event::parse(rest)?))
    })
}

fn print_failures(outcome: &drover_sim::Outcome) {
    for failure in &outcome.failures {
        println!(
            "FAILED {} at {} ms: {}",
            failure.check, failure.at_ms, failure.message
        );
    }
}

pub(super) async fn sim_launch(args: SimLaunchBench) -> anyhow::Result<()> {
    // The simulator builds its own runtimes, which cannot be started from within this command's:
    // it runs on a thread of its own.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(sim_launch_blocking(&args));
    });
    result.await.context("the simulation thread panicked")?
}

/// What the trace says about the app's launch.
#[derive(Default)]
struct LaunchTrace {
    post_ms: Option<u64>,
    post_status: Option<String>,
    launches: usize,
    last_launch_ms: u64,
    running: std::collections::BTreeSet<String>,
    all_running_ms: Option<u64>,
    per_agent: std::collections::BTreeMap<String, usize>,
    /// The app's tasks that ended, per state (a launch lost on the way ends TASK_GONE or so).
    ended: std::collections::BTreeMap<String, usize>,
    /// Agents that lost their master (`master_lost`), a sign of a stalled link.
    masters_lost: usize,
}

fn read_trace(trace: &str, app: &str, n: usize) -> LaunchTrace {
    let mut found = LaunchTrace::default();
    for (at_ms, node, event) in trace_events(trace) {
        match event.name.as_str() {
            "http" if event.field("step") == Some("0") => {
                if node == drover_sim::trace::CLIENT {
                    found.post_status = event.field("status").map(str::to_string);
                } else if found.post_ms.is_none() {
                    found.post_ms = Some(at_ms);
                }
            }
            "launch" if event.field("app") == Some(app) => {
                found.launches += 1;
                found.last_launch_ms = at_ms;
            }
            "task_launched" => *found.per_agent.entry(node.to_string()).or_default() += 1,
            "master_lost" => found.masters_lost += 1,
            "task"
                if event.field("app") == Some(app)
                    && event.field("state") == Some("TASK_RUNNING") =>
            {
                if let Some(task) = event.field("task") {
                    found.running.insert(task.to_string());
                }
                if found.all_running_ms.is_none() && found.running.len() >= n {
                    found.all_running_ms = Some(at_ms);
                }
            }
            "task" if event.field("app") == Some(app) => {
                let state = event.field("state").unwrap_or("?");
                if !matches!(state, "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING") {
                    *found.ended.entry(state.to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    found
}

fn sim_launch_blocking(args: &SimLaunchBench) -> anyhow::Result<()> {
    if args.coord != 1 && args.coord != 3 {
        bail!("--coord: expected 1 or 3, found {}", args.coord);
    }
    let app_id = "/bench";
    let n = args.instances as usize;
    let agents: Vec<serde_json::Value> = (0..args.agents)
        .map(|i| {
            serde_json::json!({
                "name": format!("bench-agent-{i}"),
                "resources": "cpus:8;mem:4096;disk:10000;ports:[31000-32999]",
            })
        })
        .collect();
    let document = serde_json::json!({
        "name": "bench-sim-launch",
        "seed": args.seed,
        "duration": format!("{}s", args.duration),
        "cluster": {
            "coord": args.coord, "masters": 1, "schedulers": 1, "agents": agents,
            "network": {"latency_ms": [1, 5]},
        },
        "timeline": [{
            "at": "15s", "do": "http", "node": "scheduler-1", "method": "POST", "path": "/v2/apps",
            "body": {"id": app_id, "instances": args.instances, "cpus": 0.01, "mem": 1, "cmd": "sleep 1000"},
            "expect_status": 201,
        }],
        "expect": {"always": ["one_leader:master", "no_overcommit", "no_duplicate_task"]},
    });
    println!(
        "sim-launch: {n} instances (cpus 0.01, mem 1, `sleep 1000`) on {} simulated agents, {} coord, seed {}, {} s simulated",
        args.agents, args.coord, args.seed, args.duration
    );
    let (outcome, wall) = simulate("<sim-launch>", document, args.seed, args.trace.as_deref())?;
    let found = read_trace(&outcome.trace, app_id, n);
    let post_ms = found.post_ms.context("the trace has no POST")?;
    let simulated = outcome.simulated_ms as f64 / 1000.0;
    let per_agent: Vec<String> = found
        .per_agent
        .iter()
        .map(|(agent, count)| format!("{agent} {count}"))
        .collect();
    println!(
        "POST at {:.3} s answered {}; {} launches, the last {:.3} s after the POST; tasks per agent: {}",
        post_ms as f64 / 1000.0,
        found.post_status.as_deref().unwrap_or("nothing"),
        found.launches,
        found.last_launch_ms.saturating_sub(post_ms) as f64 / 1000.0,
        if per_agent.is_empty() { "none".into() } else { per_agent.join(", ") },
    );
    if found.launches > n || !found.ended.is_empty() || found.masters_lost > 0 {
        let ended: Vec<String> = found
            .ended
            .iter()
            .map(|(state, count)| format!("{state} {count}"))
            .collect();
        println!(
            "not a clean launch: {} launches for {n} instances; tasks ended: {}; agents lost their master {} time(s)",
            found.launches,
            if ended.is_empty() { "none".into() } else { ended.join(", ") },
            found.masters_lost
        );
    }
    println!(
        "wall: simulated {simulated:.1} s in {wall:.2} s of wall time ({:.1} simulated s per wall s)",
        simulated / wall
    );
    print_failures(&outcome);
    match found.all_running_ms {
        Some(at_ms) => {
            let took = at_ms.saturating_sub(post_ms) as f64 / 1000.0;
            println!(
                "all {n} RUNNING {took:.3} simulated s after the POST = {:.1} placed tasks per simulated second",
                n as f64 / took.max(1e-3)
            );
        }
        None => bail!(
            "only {} of {n} instances RUNNING after {simulated:.0} simulated s",
            found.running.len()
        ),
    }
    if !outcome.passed() {
        bail!("the run broke an invariant (above)");
    }
    Ok(())
}

// ------------------------------------------------------------------ sim-failover

pub(super) async fn sim_failover(args: SimFailoverBench) -> anyhow::Result<()> {
    // As sim-launch: the simulator's runtimes start on a thread of their own.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = done.send(sim_failover_blocking(&args));
    });
    result.await.context("the simulation thread panicked")?
}

/// What the trace says about the failover.
#[derive(Default, Debug)]
struct FailoverTrace {
    crash_ms: Option<u64>,
    crashed: String,
    running: std::collections::BTreeSet<String>,
    /// The first master to lead after the crash, and when.
    leader: Option<(String, u64)>,
    /// Agents registered with the new leader, and when the last of them came.
    back: std::collections::BTreeSet<String>,
    all_back_ms: Option<u64>,
    recovered_ms: Option<u64>,
    subscribed_ms: Option<u64>,
    first_offers_ms: Option<u64>,
}

fn read_failover_trace(trace: &str, app: &str, agents: usize) -> FailoverTrace {
    let mut found = FailoverTrace::default();
    for (at_ms, node, event) in trace_events(trace) {
        let name = event.name.as_str();
        if found.crash_ms.is_none() {
            match name {
                "crash" if node == drover_sim::trace::HARNESS => {
                    found.crash_ms = Some(at_ms);
                    found.crashed = event.field("node").unwrap_or("?").to_string();
                }
                "task"
                    if event.field("app") == Some(app)
                        && event.field("state") == Some("TASK_RUNNING") =>
                {
                    if let Some(task) = event.field("task") {
                        found.running.insert(task.to_string());
                    }
                }
                _ => {}
            }
            continue;
        }
        if found.leader.is_none() {
            if name == "leader" && node.starts_with("master-") {
                found.leader = Some((node.to_string(), at_ms));
            }
            continue;
        }
        let Some((leader, _)) = &found.leader else {
            continue;
        };
        if node != leader {
            continue;
        }
        match name {
            "agent_registered" => {
                if let Some(agent) = event.field("agent") {
                    found.back.insert(agent.to_string());
                }
                if found.all_back_ms.is_none() && found.back.len() >= agents {
                    found.all_back_ms = Some(at_ms);
                }
            }
            "master_recovered" if found.recovered_ms.is_none() => found.recovered_ms = Some(at_ms),
            "framework_subscribed" if found.subscribed_ms.is_none() => {
                found.subscribed_ms = Some(at_ms)
            }
            "first_offers" if found.first_offers_ms.is_none() => {
                found.first_offers_ms = Some(at_ms)
            }
            _ => {}
        }
    }
    found
}

fn sim_failover_blocking(args: &SimFailoverBench) -> anyhow::Result<()> {
    let app_id = "/bench";
    let n = args.agents as usize;
    let agents: Vec<serde_json::Value> = (0..args.agents)
        .map(|i| {
            serde_json::json!({
                "name": format!("agent-{i}"),
                "resources": "cpus:8;mem:4096;disk:10000;ports:[31000-32999]",
            })
        })
        .collect();
    // The app is POSTed at 15 s; launch tokens (1,000 a second) pace it; the leader crashes
    // once every instance had time to run.
    let post_s = 15;
    let crash_s = post_s + u64::from(args.tasks).div_ceil(1000) + 30;
    let document = serde_json::json!({
        "name": "bench-sim-failover",
        "seed": args.seed,
        "duration": format!("{}s", crash_s + 60),
        "cluster": {
            "coord": 3, "masters": 3, "schedulers": 1, "agents": agents,
            "network": {"latency_ms": [1, 5]},
        },
        "timeline": [
            {"at": format!("{post_s}s"), "do": "http", "node": "scheduler-1", "method": "POST",
             "path": "/v2/apps",
             "body": {"id": app_id, "instances": args.tasks, "cpus": 0.01, "mem": 1, "cmd": "sleep 100000"},
             "expect_status": 201},
            {"at": format!("{crash_s}s"), "do": "crash", "node": "leader:master"},
        ],
        "expect": {"always": ["one_leader:master", "no_overcommit", "no_duplicate_task"]},
    });
    println!(
        "sim-failover: {} simulated agents, {} instances (cpus 0.01, mem 1), 3 coord, 3 masters, 1 scheduler, seed {}; the leading master crashes at {crash_s} s",
        args.agents, args.tasks, args.seed
    );
    let (outcome, wall) = simulate("<sim-failover>", document, args.seed, args.trace.as_deref())?;
    let found = read_failover_trace(&outcome.trace, app_id, n);
    let simulated = outcome.simulated_ms as f64 / 1000.0;
    println!(
        "wall: simulated {simulated:.1} s in {wall:.1} s of wall time ({:.1} simulated s per wall s)",
        simulated / wall
    );
    print_failures(&outcome);
    let crash_ms = found.crash_ms.context("the trace has no crash")?;
    println!(
        "{} of {} instances RUNNING when {} crashed at {:.3} s",
        found.running.len(),
        args.tasks,
        found.crashed,
        crash_ms as f64 / 1000.0
    );
    let (leader, elected_ms) = found
        .leader
        .clone()
        .context("no master led after the crash")?;
    let since = |at: Option<u64>| match at {
        Some(at) => format!(
            "{:.3} s after the crash, {:.3} s after the election",
            at.saturating_sub(crash_ms) as f64 / 1000.0,
            at.saturating_sub(elected_ms) as f64 / 1000.0
        ),
        None => "never".to_string(),
    };
    println!(
        "{leader} leads {:.3} s after the crash (the crashed leader's coord session expires first)",
        elected_ms.saturating_sub(crash_ms) as f64 / 1000.0
    );
    println!(
        "master_recovered (80% of agents back): {}",
        since(found.recovered_ms)
    );
    println!(
        "all {n} agents re-registered: {} ({} came back)",
        since(found.all_back_ms),
        found.back.len()
    );
    println!("framework re-subscribed: {}", since(found.subscribed_ms));
    println!("first offers sent: {}", since(found.first_offers_ms));
    match (found.all_back_ms, found.first_offers_ms) {
        (Some(back), Some(offers)) => {
            let took = back.max(offers).saturating_sub(elected_ms) as f64 / 1000.0;
            println!(
                "failover at {n} agents: {took:.3} simulated s from the election until every agent is back and offers flow = {:.2}x Mesos' published {MESOS_FAILOVER_10K_AGENTS_S} s (lower is better)",
                took / MESOS_FAILOVER_10K_AGENTS_S
            );
        }
        _ => bail!("the cluster did not recover within the run"),
    }
    if !outcome.passed() {
        bail!("the run broke an invariant (above)");
    }
    Ok(())
}
