//! `drover sim --live`: a scenario played against real daemons. Every node is a `drover node`
//! process in a Docker container of its own, named and aliased as in the scenario, on a network
//! the run creates; the timeline's faults are done for real (see the table in the README); the
//! nodes' events come back as JSON lines and are judged by the simulator's own [`Judge`]. The
//! run removes every container, network and file it made when it ends, fails or is interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use drover_core::Event;
use drover_sim::judge::Judge;
use drover_sim::run::CLIENT;
use drover_sim::scenario::{Action, HttpAction, Scenario};
use drover_sim::trace::{TraceLine, HARNESS};
use drover_sim::Outcome;
use tokio::process::Command;

/// What a live run gives besides the verdict.
pub struct LiveRun {
    pub outcome: Outcome,
    /// Timeline steps that cannot be done live, and why.
    pub skipped: Vec<String>,
}

/// Runs `scenario` live; `Err` when the run could not be made (no Docker, no image).
pub async fn run(scenario: &Scenario) -> Result<LiveRun, String> {
    let roles = crate::roles();
    let mut judge = Judge::new(scenario, &roles).map_err(|e| e.to_string())?;
    // Ctrl-C or SIGTERM from here on ends the run cleanly (containers and network removed), even
    // while it is still being set up.
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let image = node_image().await?;
    let run_id = format!("drover-live-{}", std::process::id());
    let dir = std::env::temp_dir().join(&run_id);
    let mut made = Made {
        containers: Vec::new(),
        network: None,
        dir: Some(dir.clone()),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The nodes need the cluster only (the timeline's body files stay on this side).
    let mut cluster_only = serde_json::json!({
        "name": scenario.name, "duration": "1s",
        "cluster": scenario.cluster,
    });
    if let Some(object) = cluster_only.as_object_mut() {
        object.insert("timeline".into(), serde_json::json!([]));
    }
    std::fs::write(dir.join("scenario.json"), cluster_only.to_string())
        .map_err(|e| format!("write the node scenario: {e}"))?;
    docker(&["network", "create", &run_id]).await?;
    made.network = Some(run_id.clone());

    let names: Vec<String> = judge.map().names().iter().map(|n| n.to_string()).collect();
    let mut nodes: BTreeMap<String, LiveNode> = BTreeMap::new();
    for name in &names {
        let container = format!("{run_id}-{name}");
        let data = dir.join(name);
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        let mount = format!("{}:/data", data.display());
        let scenario_mount = format!("{}:/scenario.json:ro", dir.join("scenario.json").display());
        docker(&[
            "create",
            "--name",
            &container,
            "--hostname",
            name,
            "--network",
            &run_id,
            "--network-alias",
            name,
            "-e",
            "RUST_LOG=info",
            "-v",
            &mount,
            "-v",
            &scenario_mount,
            &image,
            "/drover",
            "node",
            "/scenario.json",
            "--name",
            name,
            "--events",
            "/data/events.jsonl",
            "--work-dir",
            "/data/work",
            "--clock-offset-file",
            "/data/clock-offset",
        ])
        .await?;
        made.containers.push(container.clone());
        nodes.insert(
            name.clone(),
            LiveNode {
                container,
                events: data.join("events.jsonl"),
                skew_file: data.join("clock-offset"),
                skew_ms: 0,
                read: 0,
                ip: String::new(),
                pid: 0,
            },
        );
    }
    let clock = drover_core::env::live::env(HARNESS, &dir, None);
    let started = Instant::now();
    let t0_unix = clock.unix_ms();
    let record = |lines: &mut Vec<TraceLine>, node: &str, event: Event| {
        lines.push(TraceLine {
            at_ms: started.elapsed().as_millis() as u64,
            node: node.to_string(),
            event,
        });
    };
    for node in nodes.values_mut() {
        docker(&["start", &node.container]).await?;
        node.locate(&run_id).await?;
    }
    let mut firewall = Firewall::default();
    let mut skipped = Vec::new();
    let mut unpause: Vec<(u64, String)> = Vec::new();
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<(u64, Event)>();
    let end_ms = scenario.duration.as_millis() as u64;
    let mut next = 0;
    let mut trace: Vec<TraceLine> = Vec::new();
    let interrupted = loop {
        let now_ms = started.elapsed().as_millis() as u64;
        let mut fresh = Vec::new();
        // Pauses that end now.
        let (due, later): (Vec<_>, Vec<_>) = unpause.into_iter().partition(|(at, _)| *at <= now_ms);
        unpause = later;
        for (_, name) in due {
            let _ = docker(&["unpause", &nodes[&name].container]).await;
        }
        while let Some(step) = scenario
            .timeline
            .get(next)
            .filter(|s| s.at.as_millis() as u64 <= now_ms)
        {
            let index = next;
            next += 1;
            let action = &step.action;
            let apply = async {
                match action {
                    Action::Partition { .. } | Action::PartitionOneway { .. } => {
                        if let Some((links, event)) = judge.view.links(action)? {
                            for (from, to) in &links {
                                firewall.cut(&nodes, from, to).await?;
                                judge.view.cut(from, to, now_ms);
                            }
                            record(&mut fresh, HARNESS, event);
                        }
                    }
                    Action::Heal => {
                        firewall.heal(&nodes).await?;
                        judge.view.cuts.clear();
                        record(&mut fresh, HARNESS, Event::new("heal"));
                    }
                    Action::Loss { rate } => {
                        firewall.set_loss(&nodes, *rate).await?;
                        record(&mut fresh, HARNESS, Event::new("loss").with("rate", rate));
                    }
                    Action::Crash { node } | Action::Stop { node } | Action::Restart { node } => {
                        for name in judge.view.resolve(node, &[])? {
                            let running = !judge.view.down.contains(&name);
                            let restart = matches!(action, Action::Restart { .. });
                            if running == restart {
                                continue;
                            }
                            let live = nodes.get_mut(&name).ok_or("no such node")?;
                            let event = match action {
                                Action::Crash { .. } => {
                                    docker(&["kill", "--signal", "KILL", &live.container]).await?;
                                    judge.view.down.insert(name.clone());
                                    Event::new("crash")
                                }
                                Action::Stop { .. } => {
                                    docker(&["stop", "--time", "10", &live.container]).await?;
                                    judge.view.down.insert(name.clone());
                                    Event::new("stop")
                                }
                                _ => {
                                    docker(&["start", &live.container]).await?;
                                    live.locate(&run_id).await?;
                                    // A new network namespace: its rules are made again.
                                    firewall.restore(&nodes, &name).await?;
                                    judge.view.down.remove(&name);
                                    Event::new("restart")
                                }
                            };
                            let mut event = event;
                            event.fields.insert(0, ("node".to_string(), name.clone()));
                            record(&mut fresh, HARNESS, event);
                        }
                    }
                    Action::Skew { node, by_ms } => {
                        for name in judge.view.resolve(node, &[])? {
                            let live = nodes.get_mut(&name).ok_or("no such node")?;
                            live.skew_ms += by_ms;
                            std::fs::write(&live.skew_file, live.skew_ms.to_string())
                                .map_err(|e| format!("{}: {e}", live.skew_file.display()))?;
                            let event = Event::new("skew").with("node", &name).with("by_ms", by_ms);
                            record(&mut fresh, HARNESS, event);
                        }
                    }
                    Action::Pause { node, for_ms } => {
                        for name in judge.view.resolve(node, &[])? {
                            docker(&["pause", &nodes[&name].container]).await?;
                            unpause.push((now_ms + for_ms, name.clone()));
                            let event = Event::new("pause")
                                .with("node", &name)
                                .with("for_ms", for_ms);
                            record(&mut fresh, HARNESS, event);
                        }
                    }
                    Action::Http(http) => {
                        for name in judge.view.resolve(&http.node, &[])? {
                            let mut action = http.clone();
                            action.node = name.clone();
                            let event = Event::new("http")
                                .with("step", index)
                                .with("node", &name)
                                .with("method", &action.method)
                                .with("path", &action.path);
                            record(&mut fresh, HARNESS, event);
                            let port = judge.http_ports[&index];
                            let ip = nodes[&name].ip.clone();
                            let answers = answers_tx.clone();
                            drover_core::env::spawn(async move {
                                let event = request(&ip, port, index, &action).await;
                                let _ = answers.send((started.elapsed().as_millis() as u64, event));
                            });
                        }
                    }
                    other => {
                        let why = match other {
                            Action::Latency { .. } => {
                                "added latency needs netem, which this kernel lacks"
                            }
                            Action::Hold { .. } | Action::Release => {
                                "a hold (delay without loss) has no live counterpart here"
                            }
                            _ => "disk faults of a live node are not done yet",
                        };
                        skipped.push(format!(
                            "timeline[{index}] at {} ms: {why}",
                            step.at.as_millis()
                        ));
                        record(
                            &mut fresh,
                            HARNESS,
                            Event::new("skipped").with("step", index),
                        );
                    }
                }
                Ok::<(), String>(())
            };
            let applied = apply.await;
            if let Err(message) = applied {
                judge.fail(now_ms, format!("timeline[{index}]"), message);
            }
        }
        while let Ok((at_ms, event)) = answers.try_recv() {
            fresh.push(TraceLine {
                at_ms,
                node: CLIENT.to_string(),
                event,
            });
        }
        for node in nodes.values_mut() {
            fresh.extend(node.take_events(t0_unix));
        }
        fresh.sort_by_key(|l| l.at_ms);
        for line in fresh {
            judge.observe(&line);
            trace.push(line);
        }
        judge.overdue(now_ms);
        if now_ms >= end_ms || judge.failed() {
            break false;
        }
        tokio::select! {
            biased;
            _ = interrupt.recv() => break true,
            _ = terminate.recv() => break true,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    let end = started.elapsed().as_millis() as u64;
    made.clean().await;
    if interrupted {
        return Err("interrupted: every container and network of the run was removed".into());
    }
    let text: String = trace.iter().map(|l| format!("{l}\n")).collect();
    Ok(LiveRun {
        outcome: judge.finish(scenario.seed, end, text),
        skipped,
    })
}

/// A node's container: where it is, and how much of its events file was read.
struct LiveNode {
    container: String,
    events: PathBuf,
    /// The node's clock offset, and the file it follows it in.
    skew_file: PathBuf,
    skew_ms: i64,
    read: usize,
    ip: String,
    pid: u32,
}

impl LiveNode {
    /// Its address on the run's network and its process (both change when it starts again).
    async fn locate(&mut self, network: &str) -> Result<(), String> {
        let format = format!(
            "{{{{.State.Pid}}}} {{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"
        );
        let out = docker(&["inspect", "--format", &format, &self.container]).await?;
        let mut words = out.split_whitespace();
        self.pid = words.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        self.ip = words.next().unwrap_or_default().to_string();
        if self.pid == 0 || self.ip.is_empty() {
            return Err(format!(
                "{}: no process or address ({out:?})",
                self.container
            ));
        }
        Ok(())
    }

    /// The events written since the last call, as trace lines (ms since the run started).
    fn take_events(&mut self, t0_unix: u64) -> Vec<TraceLine> {
        let Ok(bytes) = std::fs::read(&self.events) else {
            return Vec::new();
        };
        let Some(new) = bytes.get(self.read..) else {
            return Vec::new();
        };
        // Only whole lines: a line being written is read next time.
        let Some(end) = new.iter().rposition(|b| *b == b'\n') else {
            return Vec::new();
        };
        self.read += end + 1;
        let mut out = Vec::new();
        for line in new[..end].split(|b| *b == b'\n') {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            let (Some(unix_ms), Some(node), Some(event)) = (
                value["unix_ms"].as_u64(),
                value["node"].as_str(),
                value["event"].as_str().and_then(Event::parse),
            ) else {
                continue;
            };
            out.push(TraceLine {
                at_ms: unix_ms.saturating_sub(t0_unix),
                node: node.to_string(),
                event,
            });
        }
        out
    }
}

/// The cuts and the loss rate in force, as iptables rules inside the nodes' network namespaces.
#[derive(Default)]
struct Firewall {
    /// Directed links cut (from, to): the receiver drops what the sender sends.
    cuts: Vec<(String, String)>,
    loss: f64,
}

impl Firewall {
    async fn cut(
        &mut self,
        nodes: &BTreeMap<String, LiveNode>,
        from: &str,
        to: &str,
    ) -> Result<(), String> {
        if self.cuts.iter().any(|(f, t)| f == from && t == to) {
            return Ok(());
        }
        self.cuts.push((from.to_string(), to.to_string()));
        let source = nodes.get(from).ok_or("no such node")?.ip.clone();
        iptables(&nodes[to], &["-A", "INPUT", "-s", &source, "-j", "DROP"]).await
    }

    async fn heal(&mut self, nodes: &BTreeMap<String, LiveNode>) -> Result<(), String> {
        self.cuts.clear();
        for node in nodes.values() {
            iptables(node, &["-F", "INPUT"]).await?;
        }
        let loss = self.loss;
        self.loss = 0.0;
        self.set_loss(nodes, loss).await
    }

    async fn set_loss(
        &mut self,
        nodes: &BTreeMap<String, LiveNode>,
        rate: f64,
    ) -> Result<(), String> {
        for node in nodes.values() {
            if self.loss > 0.0 {
                let _ = iptables(node, &loss_rule("-D", self.loss)).await;
            }
            if rate > 0.0 {
                iptables(node, &loss_rule("-A", rate)).await?;
            }
        }
        self.loss = rate;
        Ok(())
    }

    /// Makes `name`'s rules again after it started anew.
    async fn restore(&self, nodes: &BTreeMap<String, LiveNode>, name: &str) -> Result<(), String> {
        for (from, to) in self.cuts.iter().filter(|(_, t)| t == name) {
            let source = nodes.get(from).ok_or("no such node")?.ip.clone();
            iptables(&nodes[to], &["-A", "INPUT", "-s", &source, "-j", "DROP"]).await?;
        }
        // A node cut off from `name` drops its packets by its old address: by the new one too.
        for (from, to) in self.cuts.iter().filter(|(f, _)| f == name) {
            let source = nodes[from].ip.clone();
            iptables(&nodes[to], &["-A", "INPUT", "-s", &source, "-j", "DROP"]).await?;
        }
        if self.loss > 0.0 {
            iptables(&nodes[name], &loss_rule("-A", self.loss)).await?;
        }
        Ok(())
    }
}

fn loss_rule(verb: &str, rate: f64) -> Vec<String> {
    [
        "",
        "INPUT",
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
    ]
    .iter()
    .map(|s| {
        if s.is_empty() {
            verb.to_string()
        } else {
            s.to_string()
        }
    })
    .chain([format!("{rate}"), "-j".into(), "DROP".into()])
    .collect()
}

/// Runs iptables inside `node`'s network namespace (the host's iptables, through nsenter).
async fn iptables(node: &LiveNode, args: &[impl AsRef<str>]) -> Result<(), String> {
    let pid = node.pid.to_string();
    let mut command = Command::new("nsenter");
    command.args(["-t", &pid, "-n", "iptables", "-w"]);
    command.args(args.iter().map(AsRef::as_ref));
    let out = command
        .output()
        .await
        .map_err(|e| format!("nsenter iptables (Debian packages util-linux, iptables): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables in {}: {}",
            node.container,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// One real HTTP request of a timeline step, as the `client http` trace event.
async fn request(ip: &str, port: u16, index: usize, http: &HttpAction) -> Event {
    let env = drover_core::env::live::env(CLIENT, std::env::temp_dir(), None);
    let event = Event::new("http")
        .with("step", index)
        .with("node", &http.node)
        .with("method", &http.method)
        .with("path", &http.path);
    let mut builder = http::Request::builder()
        .method(http.method.as_str())
        .uri(http.path.as_str())
        .header(http::header::HOST, format!("{}:{port}", http.node));
    if http.body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let body = Bytes::from(http.body.clone().unwrap_or_default());
    let Ok(req) = builder.body(body) else {
        return event.with("status", "none").with("error", "bad-request");
    };
    match drover_core::http::request(&env, ip, port, req, Duration::from_secs(10)).await {
        Ok(response) => {
            let event = event.with("status", response.status().as_u16());
            match drover_sim::run::deployment_of(&response) {
                Some(id) => event.with("deployment", id),
                None => event,
            }
        }
        Err(e) => event
            .with("status", "none")
            .with("error", drover_sim::run::error_kind(&e)),
    }
}

/// What a run made, removed when it ends, however it ends.
struct Made {
    containers: Vec<String>,
    network: Option<String>,
    dir: Option<PathBuf>,
}

impl Made {
    async fn clean(&mut self) {
        for container in self.containers.drain(..) {
            let _ = docker(&["rm", "--force", "--volumes", &container]).await;
        }
        if let Some(network) = self.network.take() {
            let _ = docker(&["network", "rm", &network]).await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Made {
    /// On an early return or a panic: the same removal, blocking.
    fn drop(&mut self) {
        for container in self.containers.drain(..) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "--force", "--volumes", &container])
                .output();
        }
        if let Some(network) = self.network.take() {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", &network])
                .output();
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The node image, `drover-node:<hash of this binary>`: this binary, the shared libraries it
/// needs, and Debian's static busybox for the tasks' shell, imported with `docker import` (no
/// registry is reachable). Built once per binary and kept.
async fn node_image() -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
    let bytes = std::fs::read(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    // FNV-1a: a stable content hash without another dependency.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    let tag = format!("drover-node:{hash:016x}");
    if docker(&["image", "inspect", &tag]).await.is_ok() {
        return Ok(tag);
    }
    let root = std::env::temp_dir().join(format!("drover-node-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let result = build_rootfs(&root, &exe);
    let result = match result {
        Ok(()) => {
            let script = format!("tar -C {} -c . | docker import - {tag}", root.display());
            let out = Command::new("sh").args(["-c", &script]).output().await;
            match out {
                Ok(out) if out.status.success() => {
                    remove_older_images(&tag).await;
                    Ok(tag)
                }
                Ok(out) => Err(format!(
                    "docker import: {}",
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(e) => Err(format!("docker import: {e}")),
            }
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// Node images of earlier binaries are removed when a new one is made: one is kept, not one
/// per build.
async fn remove_older_images(keep: &str) {
    let Ok(tags) = docker(&[
        "images",
        "drover-node",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])
    .await
    else {
        return;
    };
    for tag in tags.lines().filter(|t| *t != keep) {
        let _ = docker(&["rmi", tag]).await;
    }
}

fn build_rootfs(root: &Path, exe: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    std::fs::create_dir_all(root.join("bin")).map_err(io)?;
    std::fs::create_dir_all(root.join("tmp")).map_err(io)?;
    std::fs::copy(exe, root.join("drover")).map_err(io)?;
    // The shared libraries `ldd` names, at their own paths.
    let ldd = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .map_err(|e| format!("ldd: {e}"))?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(path) = path {
            let target = root.join(path.strip_prefix("/").map_err(|e| e.to_string())?);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::copy(&path, &target).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("no /bin/busybox (Debian package busybox-static) for the node image".into());
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(io)?;
    for tool in [
        "sh", "sleep", "echo", "cat", "env", "hostname", "true", "false", "kill", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).map_err(io)?;
    }
    Ok(())
}
