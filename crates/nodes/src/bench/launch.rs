//! `bench launch`: one app of N instances POSTed to a live scheduler, timed until all run.

use super::*;

fn host_port(flag: &str, text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = text
        .rsplit_once(':')
        .with_context(|| format!("--{flag} {text:?}: expected HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("--{flag} {text:?}: {port:?} is not a port"))?;
    Ok((host.to_string(), port))
}

/// The master's count of its tasks not yet ended, and of those RUNNING.
fn master_tasks(state: &serde_json::Value) -> (usize, usize) {
    let tasks = state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tasks"].as_array().into_iter().flatten());
    let (mut live, mut running) = (0, 0);
    for task in tasks {
        live += 1;
        if task["state"] == "TASK_RUNNING" {
            running += 1;
        }
    }
    (live, running)
}

pub(super) async fn launch(args: LaunchBench) -> anyhow::Result<()> {
    let scheduler = host_port("scheduler", &args.scheduler)?;
    let master = host_port("master", &args.master)?;
    let dir = std::env::temp_dir().join("drover-bench");
    let env = drover_core::env::live::env("bench-launch", dir, None);
    let timeout = Duration::from_secs(args.timeout);
    let n = args.instances as usize;

    let waiting = Instant::now();
    let phase = Phase::new("the scheduler elected and subscribed", timeout);
    loop {
        if let Ok((200, info)) = call(&env, &scheduler, "GET", "/v2/info", None).await {
            if info["elected"] == true && info["frameworkId"].is_string() {
                break;
            }
        }
        phase.next().await?;
    }
    let subscribed = Instant::now();
    let phase = Phase::new(
        format!("{} active agents at the master", args.agents),
        timeout,
    );
    loop {
        if let Ok((200, state)) = call(&env, &master, "GET", "/master/state", None).await {
            let slaves = state["slaves"].as_array().cloned().unwrap_or_default();
            if slaves.iter().filter(|s| s["active"] == true).count() >= args.agents {
                break;
            }
        }
        phase.next().await?;
    }
    eprintln!(
        "cluster ready after {:.1} s: scheduler elected and subscribed, {} agents active",
        waiting.elapsed().as_secs_f64(),
        args.agents
    );
    let settle = Duration::from_millis(args.settle_ms);
    tokio::time::sleep(settle.saturating_sub(subscribed.elapsed())).await;

    let app = serde_json::json!({
        "id": args.app_id, "instances": args.instances, "cpus": 0.01, "mem": 1, "cmd": args.cmd,
    });
    // The list with counts only: `/v2/apps/ID` would embed all N tasks in every poll.
    let counts_path = format!("/v2/apps?id={}", args.app_id);
    let started = Instant::now();
    let (status, body) = call(&env, &scheduler, "POST", "/v2/apps", Some(&app)).await?;
    if !(200..300).contains(&status) {
        bail!("POST /v2/apps answered {status}: {body}");
    }
    let posted = started.elapsed();
    let mut all_placed: Option<Duration> = None;
    let mut last_report = Instant::now();
    let phase = Phase::new(format!("{n} instances of {} RUNNING", args.app_id), timeout);
    loop {
        if let Ok((200, body)) = call(&env, &scheduler, "GET", &counts_path, None).await {
            let apps = body["apps"].as_array().cloned().unwrap_or_default();
            if let Some(app) = apps.iter().find(|a| a["id"] == args.app_id.as_str()) {
                let running = app["tasksRunning"].as_u64().unwrap_or(0) as usize;
                let staged = app["tasksStaged"].as_u64().unwrap_or(0) as usize;
                if all_placed.is_none() && running + staged >= n {
                    all_placed = Some(started.elapsed());
                }
                if running >= n {
                    break;
                }
                if last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    eprintln!(
                        "  {:5.1} s: {running} running, {staged} staged",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        phase.next().await?;
    }
    let took = started.elapsed().as_secs_f64();
    let rate = n as f64 / took;
    let (_, state) = call(&env, &master, "GET", "/master/state", None).await?;
    let (_, master_running) = master_tasks(&state);
    println!(
        "launch: {n} instances (cpus 0.01, mem 1, {:?}) on {} agents all RUNNING {took:.2} s after the POST = {rate:.1} tasks/s \
         (POST answered in {:.0} ms, all placed at {:.2} s; the master counts {master_running} RUNNING)",
        args.cmd,
        args.agents,
        posted.as_secs_f64() * 1000.0,
        all_placed.unwrap_or_default().as_secs_f64(),
    );
    println!(
        "ratio to Marathon 0.15 (500 instances on 189 agents in 14.18 s = {MARATHON_015_TASKS_PER_S:.1} tasks/s): {:.2}x",
        rate / MARATHON_015_TASKS_PER_S
    );

    let deleting = Instant::now();
    let path = format!("/v2/apps{}", args.app_id);
    let (status, body) = call(&env, &scheduler, "DELETE", &path, None).await?;
    if !(200..300).contains(&status) {
        bail!("DELETE {path} answered {status}: {body}");
    }
    let mut last_report = Instant::now();
    let phase = Phase::new("every task ended at the master", timeout);
    loop {
        if let Ok((200, state)) = call(&env, &master, "GET", "/master/state", None).await {
            let (live, running) = master_tasks(&state);
            if live == 0 {
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                eprintln!(
                    "  {:5.1} s: {running} running, {live} not ended",
                    deleting.elapsed().as_secs_f64()
                );
            }
        }
        phase.next().await?;
    }
    let took = deleting.elapsed().as_secs_f64();
    println!(
        "delete: all {n} tasks ended (none left at the master) {took:.2} s after the DELETE = {:.1} tasks/s",
        n as f64 / took
    );
    Ok(())
}
