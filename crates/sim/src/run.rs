//! Runs a scenario: starts the cluster's nodes on the simulated network, applies the timeline,
//! records the trace, checks the invariants as lines arrive, and gives a verdict.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use drover_core::env::{node_rng, EnvParts};
use drover_core::{Env, Event};
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

use crate::cluster::{ClusterMap, NodeContext, NodeResult, NodeSpec, Role, Roles, Shutdown};
use crate::env::{sim_ms, IncarnationDisk, SimClock, SimDisk, TraceEvents};
use crate::invariants::ClusterView;
use crate::judge::Judge;
use crate::net::{Conditions, Network, Owner};
use crate::scenario::{Action, HttpAction, Scenario, ScenarioError};
use crate::trace::{Trace, CLIENT, HARNESS};

pub use crate::judge::{Failure, Outcome};

struct Request {
    index: usize,
    action: HttpAction,
    port: u16,
    /// The operator's credentials in a cluster that authenticates.
    authorization: Option<http::HeaderValue>,
}

/// Runs `scenario` with `seed`. Errors are scenario problems found before the run starts.
pub fn run(scenario: &Scenario, roles: &Roles, seed: u64) -> Result<Outcome, ScenarioError> {
    let judge = Judge::new(scenario, roles)?;
    let error = |path: String, message: String| ScenarioError {
        file: scenario.file.clone(),
        path,
        message,
    };

    // One single-threaded runtime with a paused clock runs every node: each node incarnation is
    // a LocalSet of its own inside it, and time jumps from one timer (a node's, a segment's
    // arrival, the harness's next step) to the next, so idle time costs nothing.
    let _simulating = drover_core::env::simulating();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    #[cfg(tokio_unstable)]
    builder
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()))
        .unhandled_panic(tokio::runtime::UnhandledPanic::ShutdownRuntime);
    let runtime = builder.build().map_err(|e| {
        error(
            "".into(),
            format!("cannot start the simulation's runtime: {e}"),
        )
    })?;
    let local = node_set();
    let plan = Plan {
        scenario,
        roles,
        seed,
        judge,
    };
    let outcome = local.block_on(&runtime, play(plan));
    drop(local);
    drop(runtime);
    outcome
}

/// A LocalSet whose panicking task fails the whole run instead of vanishing.
fn node_set() -> LocalSet {
    #[allow(unused_mut)]
    let mut local = LocalSet::new();
    #[cfg(tokio_unstable)]
    local.unhandled_panic(tokio::runtime::UnhandledPanic::ShutdownRuntime);
    local
}

/// What `run` checked and prepared before the simulation starts.
struct Plan<'a> {
    scenario: &'a Scenario,
    roles: &'a Roles,
    seed: u64,
    judge: Judge<'a>,
}

/// The run, as a pipeline: assemble the cluster, start every node, then until the end (or the
/// first failure) apply the timeline's due steps, reap the nodes that exited, judge the new trace
/// lines and sleep until the next thing to do; then stop every node and give the verdict.
async fn play(plan: Plan<'_>) -> Result<Outcome, ScenarioError> {
    let Plan {
        scenario,
        roles,
        seed,
        mut judge,
    } = plan;
    crate::env::start_clock();
    let start = tokio::time::Instant::now();
    let mut harness = Harness::assemble(scenario, roles, &judge, seed)?;
    harness.start_all();
    let trace = harness.trace.clone();
    let news = trace.news();
    let end_ms = scenario.duration.as_millis() as u64;
    let mut next = 0;
    loop {
        let now_ms = crate::env::sim_ms();
        next = harness.apply_due(scenario, next, &mut judge, now_ms);
        harness.reap_exits(&mut judge);
        for line in trace.take_new() {
            judge.observe(&line);
        }
        judge.overdue(now_ms);
        if now_ms >= end_ms || judge.failed() {
            break;
        }
        // Sleep until the next thing the harness must do: a timeline step, an expectation's
        // deadline, the end, or a new trace line (which may break an invariant).
        let step_ms = scenario.timeline.get(next).map(|s| s.at.as_millis() as u64);
        let wake_ms = [Some(end_ms), step_ms, judge.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end_ms);
        let wake = start + Duration::from_millis(wake_ms.max(now_ms));
        tokio::select! {
            biased;
            _ = news.notified() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    let simulated_ms = crate::env::sim_ms();
    harness.stop_all();
    Ok(judge.finish(seed, simulated_ms, trace.render()))
}

/// Polls of one node at one simulated instant beyond which it is spinning: a task that is always
/// ready (say, a loop on a closed channel) would otherwise hold the whole simulation at that
/// instant forever. A burst of real work at one instant stays far below this.
const LIVELOCK_POLLS: u64 = 2_000_000;

/// Drives a node incarnation: holds it while it is paused, and fails it when it keeps running
/// without letting simulated time pass.
struct Driven<F> {
    node: String,
    inner: Pin<Box<F>>,
    paused_until: Rc<Cell<Option<tokio::time::Instant>>>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    at: Option<tokio::time::Instant>,
    polls: u64,
}

impl<F: Future<Output = NodeResult>> Driven<F> {
    fn new(node: &str, paused_until: Rc<Cell<Option<tokio::time::Instant>>>, inner: F) -> Self {
        Driven {
            node: node.to_string(),
            inner: Box::pin(inner),
            paused_until,
            pause: None,
            at: None,
            polls: 0,
        }
    }
}

impl<F: Future<Output = NodeResult>> Future for Driven<F> {
    type Output = NodeResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<NodeResult> {
        let now = tokio::time::Instant::now();
        if let Some(until) = self.paused_until.get().filter(|until| *until > now) {
            // Nothing of the node runs; its timers and the network's wake-ups wait.
            let pause = self
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            pause.as_mut().reset(until);
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        if self.at == Some(now) {
            self.polls += 1;
            if self.polls > LIVELOCK_POLLS {
                let message = format!(
                    "{} livelocked: polled {} times at {} ms without letting time pass",
                    self.node,
                    self.polls,
                    sim_ms()
                );
                return Poll::Ready(Err(message.into()));
            }
        } else {
            self.at = Some(now);
            self.polls = 0;
        }
        self.inner.as_mut().poll(cx)
    }
}

/// The harness's client host, which sends the timeline's HTTP requests.
fn client(network: &Network, trace: &Trace, seed: u64) -> mpsc::UnboundedSender<Request> {
    let (requests, mut incoming) = mpsc::unbounded_channel::<Request>();
    let owner = Owner::new(CLIENT);
    let client_trace = trace.clone();
    let client_env = Env::new(EnvParts {
        node: CLIENT.to_string(),
        net: Arc::new(network.net(owner.clone())),
        clock: Arc::new(SimClock {
            skew_ms: Arc::new(AtomicI64::new(0)),
        }),
        disk: Arc::new(SimDisk::default()),
        events: Arc::new(TraceEvents(trace.clone(), owner)),
        rng: node_rng(seed, CLIENT, 0),
    });
    tokio::task::spawn_local(async move {
        while let Some(request) = incoming.recv().await {
            let event = send(&client_env, &request).await;
            client_trace.record(sim_ms(), CLIENT, event);
        }
    });
    requests
}

async fn send(env: &Env, request: &Request) -> Event {
    let http = &request.action;
    let mut builder = http::Request::builder()
        .method(http.method.as_str())
        .uri(http.path.as_str());
    if http.body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(authorization) = &request.authorization {
        builder = builder.header(http::header::AUTHORIZATION, authorization);
    }
    let body = Bytes::from(http.body.clone().unwrap_or_default());
    let event = Event::new("http")
        .with("step", request.index)
        .with("node", &http.node)
        .with("method", &http.method)
        .with("path", &http.path);
    let Ok(req) = builder.body(body) else {
        return event.with("status", "none").with("error", "bad-request");
    };
    let timeout = Duration::from_secs(10);
    match drover_core::http::request(env, &http.node, request.port, req, timeout).await {
        Ok(response) => {
            let event = event.with("status", response.status().as_u16());
            match deployment_of(&response) {
                Some(id) => event.with("deployment", id),
                None => event,
            }
        }
        Err(e) => event.with("status", "none").with("error", error_kind(&e)),
    }
}

/// The deployment a successful Marathon answer started: `deploymentId` (PUT, DELETE, groups,
/// restarts) or the first of `deployments` (POST /v2/apps answers with the app).
pub fn deployment_of(response: &http::Response<Bytes>) -> Option<String> {
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(response.body()).ok()?;
    let id = body
        .get("deploymentId")
        .or_else(|| body.get("deployments")?.get(0)?.get("id"))?;
    Some(id.as_str()?.to_string())
}

/// A node of the run: what survives its crashes, and its current incarnation.
struct Node {
    spec: NodeSpec,
    role: Role,
    disk: SimDisk,
    skew_ms: Arc<AtomicI64>,
    shutdown: watch::Sender<bool>,
    /// How many incarnations were started.
    incarnation: u64,
    owner: Owner,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Until when the node is paused.
    paused_until: Rc<Cell<Option<tokio::time::Instant>>>,
}

/// A node incarnation's main future ended with an error.
struct Exit {
    node: String,
    at_ms: u64,
    message: String,
    disk_failed: bool,
}

/// The harness's hold on a running simulation.
struct Harness {
    network: Network,
    seed: u64,
    cluster: Arc<ClusterMap>,
    errors: Rc<RefCell<Vec<Exit>>>,
    nodes: BTreeMap<String, Node>,
    trace: Trace,
    requests: Option<mpsc::UnboundedSender<Request>>,
    http_ports: BTreeMap<usize, u16>,
}

impl Harness {
    /// The simulated network with a host per node (and the harness's client), and every node
    /// of the cluster map, not started.
    fn assemble(
        scenario: &Scenario,
        roles: &Roles,
        judge: &Judge<'_>,
        seed: u64,
    ) -> Result<Harness, ScenarioError> {
        let map = judge.map();
        let conditions = Conditions {
            latency_ms: scenario.cluster.network.latency_ms,
            loss: scenario.cluster.network.loss,
        };
        let network = Network::new(seed, conditions);
        let trace = Trace::default();
        let mut nodes = BTreeMap::new();
        for spec in &map.nodes {
            let role = roles
                .get(&spec.role)
                .cloned()
                .ok_or_else(|| ScenarioError {
                    file: scenario.file.clone(),
                    path: "cluster".into(),
                    message: format!("no role {}", spec.role),
                })?;
            network.add_host(&spec.name);
            nodes.insert(
                spec.name.clone(),
                Node {
                    spec: spec.clone(),
                    role,
                    disk: SimDisk::default(),
                    skew_ms: Arc::new(AtomicI64::new(0)),
                    shutdown: watch::channel(false).0,
                    incarnation: 0,
                    owner: Owner::new(&spec.name),
                    task: None,
                    paused_until: Rc::default(),
                },
            );
        }
        network.add_host(CLIENT);
        let client = client(&network, &trace, seed);
        Ok(Harness {
            network,
            seed,
            cluster: Arc::new(map.clone()),
            errors: Rc::default(),
            nodes,
            trace,
            requests: Some(client),
            http_ports: judge.http_ports.clone(),
        })
    }

    /// Starts every node, in the cluster map's order.
    fn start_all(&mut self) {
        let names: Vec<String> = self.cluster.nodes.iter().map(|s| s.name.clone()).collect();
        for name in names {
            self.start(&name);
        }
    }

    /// Applies the timeline's steps from `next` on that are due at `now_ms`; returns the index
    /// of the first step not yet due.
    fn apply_due(
        &mut self,
        scenario: &Scenario,
        mut next: usize,
        judge: &mut Judge<'_>,
        now_ms: u64,
    ) -> usize {
        while let Some(step) = scenario
            .timeline
            .get(next)
            .filter(|s| s.at.as_millis() as u64 <= now_ms)
        {
            if let Err(message) = self.apply(&mut judge.view, next, &step.action, now_ms) {
                judge.fail(now_ms, format!("timeline[{next}]"), message);
            }
            next += 1;
        }
        next
    }

    /// Nodes that exited: one whose disk failed is down (a crash); any other error fails the run.
    fn reap_exits(&mut self, judge: &mut Judge<'_>) {
        let exits: Vec<Exit> = self.errors.borrow_mut().drain(..).collect();
        for exit in exits {
            if exit.disk_failed {
                self.kill(&exit.node, true);
                judge.view.down.insert(exit.node.clone());
                let event = Event::new("crash")
                    .with("node", &exit.node)
                    .with("cause", "disk_error");
                self.record(exit.at_ms, event);
            } else {
                let message = format!("{} failed: {}", exit.node, exit.message);
                judge.fail(exit.at_ms, "node", message);
            }
        }
    }

    fn record(&self, now_ms: u64, event: Event) {
        self.trace.record(now_ms, HARNESS, event);
    }

    /// Starts a new incarnation of `name` in a LocalSet of its own.
    fn start(&mut self, name: &str) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        let count = node.incarnation;
        node.incarnation += 1;
        node.owner = Owner::new(name);
        self.network.host_up(name);
        let owner = node.owner.clone();
        let env = Env::new(EnvParts {
            node: name.to_string(),
            net: Arc::new(self.network.net(owner.clone())),
            clock: Arc::new(SimClock {
                skew_ms: node.skew_ms.clone(),
            }),
            disk: Arc::new(IncarnationDisk {
                disk: node.disk.clone(),
                owner: owner.clone(),
            }),
            events: Arc::new(TraceEvents(self.trace.clone(), owner.clone())),
            rng: node_rng(self.seed, name, count),
        });
        let context = NodeContext {
            env,
            name: name.to_string(),
            role: node.spec.role.clone(),
            index: node.spec.index,
            cluster: self.cluster.clone(),
            resources: node.spec.resources.clone(),
            attributes: node.spec.attributes.clone(),
            names: node.spec.names.clone(),
            shutdown: Shutdown(node.shutdown.subscribe()),
            live: None,
        };
        let errors = self.errors.clone();
        let news = self.trace.news();
        let node_name = name.to_string();
        let paused = node.paused_until.clone();
        let disk = node.disk.clone();
        let start = node.role.start.clone();
        node.task = Some(tokio::task::spawn_local(async move {
            let local = node_set();
            // The role's future is made inside the set, so whatever it spawns belongs to it.
            let node = local.run_until(async move { start(context).await });
            let result = Driven::new(&node_name, paused, node).await;
            if let Err(e) = result {
                if owner.is_alive() {
                    // A node that stops on a failing disk does what it must (crash rather than
                    // serve what it cannot store); any other error fails the run.
                    let exit = Exit {
                        node: node_name.clone(),
                        at_ms: sim_ms(),
                        message: e.to_string(),
                        disk_failed: disk.is_failing(),
                    };
                    errors.borrow_mut().push(exit);
                    news.notify_one();
                }
            }
        }));
    }

    /// Ends `name`'s incarnation at once: it sends nothing more, its tasks are dropped, and what
    /// its disk had not synced is lost when `power_loss`.
    fn kill(&mut self, name: &str, power_loss: bool) {
        let Some(node) = self.nodes.get_mut(name) else {
            return;
        };
        node.owner.alive.store(false, Ordering::Relaxed);
        if power_loss {
            self.network.host_down(name);
            node.disk.lose_unsynced();
        }
        if let Some(task) = node.task.take() {
            task.abort();
        }
    }

    /// The end of the run: nothing recorded from here on.
    fn stop_all(&mut self) {
        self.requests.take();
        for node in self.nodes.values_mut() {
            node.owner.alive.store(false, Ordering::Relaxed);
            if let Some(task) = node.task.take() {
                task.abort();
            }
        }
    }

    fn apply(
        &mut self,
        view: &mut ClusterView,
        index: usize,
        action: &Action,
        now_ms: u64,
    ) -> Result<(), String> {
        match action {
            Action::Partition { .. } | Action::Hold { .. } | Action::PartitionOneway { .. } => {
                let Some((links, event)) = view.links(action)? else {
                    return Ok(());
                };
                for (from, to) in &links {
                    if matches!(action, Action::Hold { .. }) {
                        self.network.hold(from, to);
                    } else {
                        self.network.cut(from, to);
                        view.cut(from, to, now_ms);
                    }
                }
                self.record(now_ms, event);
            }
            Action::Heal => {
                self.network.heal();
                view.cuts.clear();
                self.record(now_ms, Event::new("heal"));
            }
            Action::Release => {
                self.network.release();
                self.record(now_ms, Event::new("release"));
            }
            Action::Crash { node }
            | Action::Stop { node }
            | Action::Restart { node }
            | Action::Skew { node, .. } => {
                for name in view.resolve(node, &[])? {
                    let running = !view.down.contains(&name);
                    // crash and stop act on running nodes, restart on the others
                    if running == matches!(action, Action::Restart { .. }) {
                        continue;
                    }
                    let event = match action {
                        Action::Crash { .. } => {
                            self.kill(&name, true);
                            view.down.insert(name.clone());
                            Event::new("crash")
                        }
                        Action::Stop { .. } => {
                            self.nodes[&name].shutdown.send_replace(true);
                            view.down.insert(name.clone());
                            Event::new("stop")
                        }
                        Action::Skew { by_ms, .. } => {
                            self.nodes[&name]
                                .skew_ms
                                .fetch_add(*by_ms, Ordering::Relaxed);
                            Event::new("skew").with("by_ms", by_ms)
                        }
                        _ => {
                            // A stopped incarnation may still be winding down: it ends now.
                            self.kill(&name, false);
                            // send_replace: the stopped incarnation's receivers may all be gone
                            self.nodes[&name].shutdown.send_replace(false);
                            self.start(&name);
                            view.down.remove(&name);
                            Event::new("restart")
                        }
                    };
                    let mut event = event;
                    event.fields.insert(0, ("node".to_string(), name.clone()));
                    self.record(now_ms, event);
                }
            }
            Action::Pause { node, for_ms } => {
                for name in view.resolve(node, &[])? {
                    let until = tokio::time::Instant::now() + Duration::from_millis(*for_ms);
                    self.nodes[&name].paused_until.set(Some(until));
                    let event = Event::new("pause")
                        .with("node", &name)
                        .with("for_ms", for_ms);
                    self.record(now_ms, event);
                }
            }
            Action::Disk { node, fault } => {
                for name in view.resolve(node, &[])? {
                    self.nodes[&name].disk.fault(*fault);
                    let fault = serde_json::to_value(fault)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let event = Event::new("disk").with("node", &name).with("fault", fault);
                    self.record(now_ms, event);
                }
            }
            Action::Latency { max_ms } => {
                self.network.set_max_latency(*max_ms);
                self.record(now_ms, Event::new("latency").with("max_ms", max_ms));
            }
            Action::Loss { rate } => {
                self.network.set_loss(*rate);
                self.record(now_ms, Event::new("loss").with("rate", rate));
            }
            Action::Http(http) => {
                for node in view.resolve(&http.node, &[])? {
                    let mut action = http.clone();
                    action.node = node;
                    let event = Event::new("http")
                        .with("step", index)
                        .with("node", &action.node)
                        .with("method", &action.method)
                        .with("path", &action.path);
                    self.record(now_ms, event);
                    if let Some(sender) = &self.requests {
                        let _ = sender.send(Request {
                            index,
                            action,
                            port: self.http_ports[&index],
                            authorization: view
                                .map
                                .auth
                                .as_ref()
                                .map(|auth| auth.operator_authorization()),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

pub fn error_kind(error: &drover_core::http::HttpError) -> &'static str {
    match error {
        drover_core::http::HttpError::Connect { .. } => "connect",
        drover_core::http::HttpError::Request { .. } => "request",
        drover_core::http::HttpError::TimedOut { .. } => "timeout",
    }
}
