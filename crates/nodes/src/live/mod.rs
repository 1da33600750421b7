//! `drover sim --live`: a scenario played against real daemons. Every node is a `drover node`
//! process, in a Docker container of its own, named and aliased as in the scenario, on a network
//! the run creates ([`docker`]), or, without Docker, a process of this host at a loopback address
//! of its own ([`process`]). The timeline's faults are done for real (see the table in the
//! README); the nodes' events come back as JSON lines and are judged by the simulator's own
//! [`Judge`]. The run removes every container, network, process and file it made when it ends,
//! fails or is interrupted.

mod docker;
mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use drover_core::Event;
use drover_sim::judge::Judge;
use drover_sim::scenario::{Action, HttpAction, Scenario};
use drover_sim::trace::CLIENT;
use drover_sim::trace::{TraceLine, HARNESS};
use drover_sim::Outcome;

/// What a live run gives besides the verdict.
pub struct LiveRun {
    pub outcome: Outcome,
    /// Timeline steps that cannot be done live, and why.
    pub skipped: Vec<String>,
    /// Where the nodes ran: `Docker containers` or `processes`.
    pub how: &'static str,
}

/// How the error of an interrupted run (Ctrl-C, SIGTERM) begins.
pub const INTERRUPTED: &str = "interrupted";

/// Where a live run's nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// In Docker containers when an engine answers, else as processes.
    Best,
    /// As processes of this host, even where Docker is.
    Processes,
}

/// A node's files on this host: its data folder (events, clock offset, work dir, log) and the
/// scenario file its `drover node` reads.
#[derive(Clone, Debug)]
pub struct NodeDirs {
    pub name: String,
    pub role: String,
    pub data: PathBuf,
    pub scenario: PathBuf,
}

/// The `drover node` command line of a node (after the program), its paths as the node sees them.
/// `docker`: the label and network of an agent's DOCKER tasks.
fn node_command(node: &NodeDirs, docker: Option<(&str, &str)>, book: Option<&Path>) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    let mut args = vec![
        "node".to_string(),
        path(node.scenario.clone()),
        "--name".into(),
        node.name.clone(),
        "--events".into(),
        path(node.data.join("events.jsonl")),
        "--work-dir".into(),
        path(node.data.join("work")),
        "--clock-offset-file".into(),
        path(node.data.join("clock-offset")),
    ];
    if let Some((label, network)) = docker {
        args.extend(["--docker-label".into(), label.to_string()]);
        args.extend(["--docker-network".into(), network.to_string()]);
    }
    if let Some(book) = book {
        args.extend(["--address-book".into(), path(book.to_path_buf())]);
    }
    args
}

/// How a run's nodes are started, faulted and found: Docker containers or local processes.
#[allow(async_fn_in_trait)]
pub trait Backend {
    /// Starts every node.
    async fn start(&mut self) -> Result<(), String>;
    /// Kills the node at once (SIGKILL); its files stay.
    async fn crash(&mut self, node: &str) -> Result<(), String>;
    /// Stops the node gracefully (SIGTERM).
    async fn stop(&mut self, node: &str) -> Result<(), String>;
    /// Starts a crashed or stopped node again, with its files.
    async fn restart(&mut self, node: &str) -> Result<(), String>;
    async fn pause(&mut self, node: &str) -> Result<(), String>;
    async fn unpause(&mut self, node: &str) -> Result<(), String>;
    /// `to` drops what `from` sends.
    async fn cut(&mut self, from: &str, to: &str) -> Result<(), String>;
    /// Every cut is undone (message loss stays).
    async fn heal(&mut self) -> Result<(), String>;
    /// Every node drops this share of what it receives.
    async fn set_loss(&mut self, rate: f64) -> Result<(), String>;
    /// The address the node's HTTP API answers at.
    fn address(&self, node: &str) -> String;
    /// Removes everything the backend made.
    async fn clean(&mut self);
}

/// Runs `scenario` live; `Err` when the run could not be made (no image, a refused step).
pub async fn run(scenario: &Scenario, place: Where) -> Result<LiveRun, String> {
    let roles = crate::roles();
    let judge = Judge::new(scenario, &roles).map_err(|e| e.to_string())?;
    let run_id = format!("drover-live-{}", std::process::id());
    let dir = std::env::temp_dir().join(&run_id);
    let _dir = RemoveOnDrop(dir.clone());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The nodes need the cluster only (the timeline's body files stay on this side).
    let mut cluster_only = serde_json::json!({
        "name": scenario.name, "duration": "1s",
        "cluster": scenario.cluster,
    });
    if let Some(object) = cluster_only.as_object_mut() {
        object.insert("timeline".into(), serde_json::json!([]));
    }
    let scenario_file = dir.join("scenario.json");
    std::fs::write(&scenario_file, cluster_only.to_string())
        .map_err(|e| format!("write the node scenario: {e}"))?;
    let mut nodes = Vec::new();
    for spec in &judge.map().nodes {
        let data = dir.join(&spec.name);
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        nodes.push(NodeDirs {
            name: spec.name.clone(),
            role: spec.role.clone(),
            data,
            scenario: scenario_file.clone(),
        });
    }
    let docker = place == Where::Best && docker::engine_answers().await;
    if docker {
        let mut backend = docker::Containers::create(&run_id, &nodes).await?;
        play_then_clean(scenario, judge, &nodes, &mut backend, "Docker containers").await
    } else {
        let refused: Vec<String> = scenario
            .timeline
            .iter()
            .enumerate()
            .filter(|(_, step)| {
                matches!(
                    step.action,
                    Action::Partition { .. } | Action::PartitionOneway { .. } | Action::Loss { .. }
                )
            })
            .map(|(i, step)| format!("timeline[{i}] at {} ms", step.at.as_millis()))
            .collect();
        if !refused.is_empty() {
            let why = if place == Where::Processes {
                "--no-docker"
            } else {
                "no Docker engine answers"
            };
            return Err(format!(
                "refused ({why}): {} cut links or lose messages; {}",
                refused.join(", "),
                process::REFUSED
            ));
        }
        let mut backend = process::Processes::create(&run_id, &dir, &nodes)?;
        play_then_clean(scenario, judge, &nodes, &mut backend, "processes").await
    }
}

/// [`play`], then the backend removes what it made, however the play ended.
async fn play_then_clean(
    scenario: &Scenario,
    judge: Judge<'_>,
    nodes: &[NodeDirs],
    backend: &mut impl Backend,
    how: &'static str,
) -> Result<LiveRun, String> {
    let result = play(scenario, judge, nodes, backend).await;
    backend.clean().await;
    result.map(|(outcome, skipped)| LiveRun {
        outcome,
        skipped,
        how,
    })
}

/// Removes the run's folder, however the run ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The events file a node writes, and how much of it was read.
struct EventsFile {
    path: PathBuf,
    read: usize,
}

/// How old (µs) a node's event must be before it is judged (see `held`).
const HOLD_US: u64 = 250_000;

/// Plays the timeline against `backend`'s nodes at wall-clock times and judges their events.
async fn play(
    scenario: &Scenario,
    mut judge: Judge<'_>,
    dirs: &[NodeDirs],
    backend: &mut impl Backend,
) -> Result<(Outcome, Vec<String>), String> {
    // Ctrl-C or SIGTERM from here on ends the run cleanly (the caller removes what was made).
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut events: Vec<EventsFile> = dirs
        .iter()
        .map(|d| EventsFile {
            path: d.data.join("events.jsonl"),
            read: 0,
        })
        .collect();
    let mut skew: BTreeMap<String, i64> = BTreeMap::new();
    let skew_file = |name: &str| {
        dirs.iter()
            .find(|d| d.name == name)
            .map(|d| d.data.join("clock-offset"))
    };
    let clock = drover_core::env::live::env(HARNESS, std::env::temp_dir(), None);
    let started = Instant::now();
    let t0_unix = clock.unix_ms();
    let record = |lines: &mut Vec<TraceLine>, node: &str, event: Event| {
        lines.push(TraceLine {
            at_ms: started.elapsed().as_millis() as u64,
            node: node.to_string(),
            event,
        });
    };
    backend.start().await?;
    let mut skipped = Vec::new();
    let mut unpause: Vec<(u64, String)> = Vec::new();
    let (answers_tx, mut answers) = tokio::sync::mpsc::unbounded_channel::<(u64, Event)>();
    let end_ms = scenario.duration.as_millis() as u64;
    let mut next = 0;
    let mut trace: Vec<TraceLine> = Vec::new();
    // Nodes' events read but not judged yet, with their microseconds.
    let mut held: Vec<(u64, TraceLine)> = Vec::new();
    let interrupted = loop {
        let now_ms = started.elapsed().as_millis() as u64;
        let mut fresh = Vec::new();
        // Pauses that end now.
        let (due, later): (Vec<_>, Vec<_>) = unpause.into_iter().partition(|(at, _)| *at <= now_ms);
        unpause = later;
        for (_, name) in due {
            let _ = backend.unpause(&name).await;
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
                                backend.cut(from, to).await?;
                                judge.view.cut(from, to, now_ms);
                            }
                            record(&mut fresh, HARNESS, event);
                        }
                    }
                    Action::Heal => {
                        backend.heal().await?;
                        judge.view.cuts.clear();
                        record(&mut fresh, HARNESS, Event::new("heal"));
                    }
                    Action::Loss { rate } => {
                        backend.set_loss(*rate).await?;
                        record(&mut fresh, HARNESS, Event::new("loss").with("rate", rate));
                    }
                    Action::Crash { node } | Action::Stop { node } | Action::Restart { node } => {
                        for name in judge.view.resolve(node, &[])? {
                            let running = !judge.view.down.contains(&name);
                            let restart = matches!(action, Action::Restart { .. });
                            if running == restart {
                                continue;
                            }
                            let event = match action {
                                Action::Crash { .. } => {
                                    backend.crash(&name).await?;
                                    judge.view.down.insert(name.clone());
                                    Event::new("crash")
                                }
                                Action::Stop { .. } => {
                                    backend.stop(&name).await?;
                                    judge.view.down.insert(name.clone());
                                    Event::new("stop")
                                }
                                _ => {
                                    backend.restart(&name).await?;
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
                            let offset = skew.entry(name.clone()).or_insert(0);
                            *offset += by_ms;
                            let file = skew_file(&name).ok_or("no such node")?;
                            std::fs::write(&file, offset.to_string())
                                .map_err(|e| format!("{}: {e}", file.display()))?;
                            let event = Event::new("skew").with("node", &name).with("by_ms", by_ms);
                            record(&mut fresh, HARNESS, event);
                        }
                    }
                    Action::Pause { node, for_ms } => {
                        for name in judge.view.resolve(node, &[])? {
                            backend.pause(&name).await?;
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
                            let ip = backend.address(&name);
                            let answers = answers_tx.clone();
                            let authorization = judge
                                .map()
                                .auth
                                .as_ref()
                                .map(|auth| auth.operator_authorization());
                            drover_core::env::spawn(async move {
                                let event = request(&ip, port, index, &action, authorization).await;
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
        for file in events.iter_mut() {
            held.extend(file.take(t0_unix));
        }
        // The nodes' events are judged in the order they happened (their microseconds), once
        // they are old enough that no other process can still be writing an earlier one: files
        // are read one after another, so a line written just after its file was read would come
        // a round after a later line of a file read after it.
        let harness_us = (now_ms + t0_unix) * 1000;
        held.sort_by_key(|(us, _)| *us);
        let ripe = held.partition_point(|(us, _)| *us + HOLD_US <= harness_us);
        fresh.extend(held.drain(..ripe).map(|(_, line)| line));
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
    held.sort_by_key(|(us, _)| *us);
    for (_, line) in held {
        judge.observe(&line);
        trace.push(line);
    }
    let end = started.elapsed().as_millis() as u64;
    if interrupted {
        return Err(format!("{INTERRUPTED}: everything the run made is removed"));
    }
    let text: String = trace.iter().map(|l| format!("{l}\n")).collect();
    Ok((judge.finish(scenario.seed, end, text), skipped))
}

impl EventsFile {
    /// The events written since the last call, as trace lines (ms since the run started), with
    /// the microseconds (since the epoch) at which they were written.
    fn take(&mut self, t0_unix: u64) -> Vec<(u64, TraceLine)> {
        let Ok(bytes) = std::fs::read(&self.path) else {
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
            let unix_us = value["unix_us"].as_u64().unwrap_or(unix_ms * 1000);
            out.push((
                unix_us,
                TraceLine {
                    at_ms: unix_ms.saturating_sub(t0_unix),
                    node: node.to_string(),
                    event,
                },
            ));
        }
        out
    }
}

/// One real HTTP request of a timeline step, as the `client http` trace event.
async fn request(
    ip: &str,
    port: u16,
    index: usize,
    http: &HttpAction,
    authorization: Option<http::HeaderValue>,
) -> Event {
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
    if let Some(authorization) = authorization {
        builder = builder.header(http::header::AUTHORIZATION, authorization);
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
