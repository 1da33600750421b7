//! `bench master-memory`: a live master and synthetic agents over the agent protocol; the
//! master's resident memory per agent and per task.

use super::*;

/// A process's resident set (`VmRSS` of /proc/PID/status), in KiB.
fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")
}

/// One synthetic agent: registers with its tasks, then answers the master's pings for as long
/// as the bench runs.
async fn synthetic_agent(
    address: std::net::SocketAddr,
    index: u32,
    tasks: u32,
) -> anyhow::Result<()> {
    use drover_core::agent_proto::{AgentMessage, MasterMessage, Registration, TaskReport};
    use drover_core::frame::{decode_message, encode_message, FrameCodec};
    use futures_util::{SinkExt, StreamExt};
    let stream = tokio::net::TcpStream::connect(address).await?;
    let mut framed = tokio_util::codec::Framed::new(stream, FrameCodec::default());
    let framework = serde_json::json!({"name": "bench", "id": {"value": "bench-framework"}});
    let reports = (0..tasks)
        .map(|t| TaskReport {
            framework_id: "bench-framework".into(),
            framework: framework.clone(),
            task: serde_json::json!({
                "name": format!("task-{index}-{t}"),
                "task_id": {"value": format!("task-{index}-{t}")},
                "agent_id": {"value": format!("bench-agent-{index}")},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.01}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 1.0}}
                ],
                "command": {"value": "sleep 100000"}
            }),
            state: drover_core::task::TaskState::TaskRunning,
            ip_addresses: Vec::new(),
        })
        .collect();
    let registration = Registration {
        agent_id: Some(format!("bench-agent-{index}")),
        hostname: format!("bench-agent-{index}"),
        port: 5051,
        address: Some("127.0.0.1".into()),
        resources: "cpus:16;mem:65536;disk:100000;ports:[31000-32000]".into(),
        attributes: String::new(),
        tasks: reports,
    };
    framed
        .send(encode_message(&AgentMessage::Register(registration))?)
        .await?;
    while let Some(frame) = framed.next().await {
        let frame = frame?;
        if let Ok(MasterMessage::Ping { seq }) = decode_message::<MasterMessage>(&frame) {
            framed
                .send(encode_message(&AgentMessage::Pong { seq })?)
                .await?;
        }
    }
    Ok(())
}

/// Raises this process's limit of open files to its hard limit (the master started from here
/// inherits it): each synthetic agent is a connection on both sides. Errs when even the hard
/// limit is below `needed`.
fn raise_open_files(needed: libc::rlim_t) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    if limit.rlim_cur < needed {
        bail!(
            "--agents needs about {needed} open files, and this process may have {} (ulimit -Hn)",
            limit.rlim_cur
        );
    }
    Ok(())
}

pub(super) async fn master_memory(args: MasterMemoryBench) -> anyhow::Result<()> {
    raise_open_files(libc::rlim_t::from(args.agents) + 256)?;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let work = std::env::temp_dir().join(format!("drover-bench-master-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["master", "--ip", "127.0.0.1", "--port", &port.to_string()])
        .arg("--work-dir")
        .arg(&work)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("start a master")?;
    let pid = child.id().context("the master's pid")?;
    let result = measure_master(&args, port, pid).await;
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&work);
    result
}

async fn measure_master(args: &MasterMemoryBench, port: u16, pid: u32) -> anyhow::Result<()> {
    let env = drover_core::env::live::env("bench", std::env::temp_dir(), None);
    let master = ("127.0.0.1".to_string(), port);
    let phase = Phase::new("the master leads", Duration::from_secs(30));
    loop {
        if let Ok((200, m)) = call(&env, &master, "GET", "/metrics/snapshot", None).await {
            if m["master/elected"].as_f64() == Some(1.0) {
                break;
            }
        }
        phase.next().await?;
    }
    let before = resident_kib(pid)?;
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let per_agent = args.tasks / args.agents.max(1);
    let extra = args.tasks % args.agents.max(1);
    println!(
        "master-memory: a live master (pid {pid}) and {} synthetic agents registering {} RUNNING tasks ({per_agent}-{} each)",
        args.agents,
        args.tasks,
        per_agent + u32::from(extra > 0)
    );
    let mut agents = tokio::task::JoinSet::new();
    for i in 0..args.agents {
        let tasks = per_agent + u32::from(i < extra);
        agents.spawn(synthetic_agent(address, i, tasks));
        // Not all at once: the kernel's accept backlog is finite.
        if i % 256 == 255 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let phase = Phase::new(
        "every agent and task registered",
        Duration::from_secs(args.timeout),
    );
    let started = Instant::now();
    loop {
        if let Ok((200, m)) = call(&env, &master, "GET", "/metrics/snapshot", None).await {
            let active = m["master/slaves_active"].as_f64().unwrap_or(0.0) as u32;
            let running = m["master/tasks_running"].as_f64().unwrap_or(0.0) as u32;
            if active >= args.agents && running >= args.tasks {
                break;
            }
        }
        if let Some(Ok(Err(e))) = agents.try_join_next() {
            bail!("a synthetic agent failed: {e}");
        }
        phase.next().await?;
    }
    let took = started.elapsed().as_secs_f64();
    // Settled: the registry written, the first allocations made.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = resident_kib(pid)?;
    let grown = after.saturating_sub(before);
    println!(
        "all {} agents and {} tasks registered in {took:.1} s",
        args.agents, args.tasks
    );
    println!(
        "master resident memory: {:.1} MiB idle, {:.1} MiB with them: {:.1} MiB more = {:.1} KiB per agent with its tasks",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        grown as f64 / 1024.0,
        grown as f64 / f64::from(args.agents.max(1)),
    );
    println!("(no reference is run: Mesos publishes no master memory figure at this scale that we know of)");
    agents.abort_all();
    Ok(())
}
