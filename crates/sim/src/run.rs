//! Runs a scenario: builds the turmoil world from the cluster, applies the timeline, records the
//! trace, checks the invariants, and gives a verdict.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use drover_core::env::{node_rng, EnvParts};
use drover_core::{Env, Event};
use tokio::sync::{mpsc, watch};

use crate::cluster::{ClusterMap, NodeContext, Roles, Shutdown};
use crate::env::{sim_ms, SimClock, SimDisk, SimNet, TraceEvents, EPOCH_UNIX_MS};
use crate::invariants::{self, ClusterView, Invariant, Pending};
use crate::scenario::{Action, HttpAction, Scenario, ScenarioError};
use crate::trace::{Trace, TraceLine, HARNESS};

/// The host the harness sends its HTTP requests from.
pub const CLIENT: &str = "client";

/// Events worth a line in the readable timeline (besides the harness's own and the client's).
const NOTABLE: &[&str] = &["leader", "boot", "exit", "peer_up", "peer_down", "error"];

/// A broken expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub at_ms: u64,
    pub check: String,
    pub message: String,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub failures: Vec<Failure>,
    /// The full trace, `<sim ms> <node> <event>` per line.
    pub trace: String,
    /// The readable timeline: the harness's actions and the notable events.
    pub timeline: Vec<String>,
    pub simulated_ms: u64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

struct NodeHandle {
    disk: SimDisk,
    skew_ms: Arc<AtomicI64>,
    shutdown: watch::Sender<bool>,
}

impl NodeHandle {
    /// Another handle on the same node (all parts are shared).
    fn clone_parts(&self) -> NodeHandle {
        NodeHandle {
            disk: self.disk.clone(),
            skew_ms: self.skew_ms.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

struct Request {
    index: usize,
    action: HttpAction,
    port: u16,
}

/// Runs `scenario` with `seed`. Errors are scenario problems found before the run starts.
pub fn run(scenario: &Scenario, roles: &Roles, seed: u64) -> Result<Outcome, ScenarioError> {
    let map = ClusterMap::plan(scenario, roles)?;
    let view = ClusterView::new(map.clone());
    let error = |path: String, message: String| ScenarioError {
        file: scenario.file.clone(),
        path,
        message,
    };
    let mut always: Vec<Box<dyn Invariant>> = Vec::new();
    for (i, name) in scenario.expect.always.iter().enumerate() {
        always.push(
            invariants::always(name, scenario.tick_ms)
                .map_err(|m| error(format!("expect.always[{i}]"), m))?,
        );
    }
    let mut pending = Vec::new();
    for (index, e) in scenario.expect.eventually.iter().enumerate() {
        if let Some(node) = &e.node {
            view.check_selector(node)
                .map_err(|m| error(format!("expect.eventually[{index}].node"), m))?;
        }
        pending.push(Pending {
            index,
            pattern: Event::parse(&e.event).unwrap_or_else(|| Event::new("unparsable")),
            node: e.node.clone(),
            after_ms: e.after.map_or(0, |d| d.as_millis() as u64),
            by_ms: e.by.as_millis() as u64,
            met_at: None,
        });
    }
    let mut forbidden = Vec::new();
    for (index, never) in scenario.expect.never.iter().enumerate() {
        if let Some(node) = &never.node {
            view.check_selector(node)
                .map_err(|m| error(format!("expect.never[{index}].node"), m))?;
        }
        let pattern = Event::parse(&never.event).unwrap_or_else(|| Event::new("unparsable"));
        let after_ms = never.after.map_or(0, |d| d.as_millis() as u64);
        let by_ms = never.by.map_or(u64::MAX, |d| d.as_millis() as u64);
        forbidden.push((index, pattern, never.node.clone(), after_ms, by_ms));
    }
    let mut http_ports = BTreeMap::new();
    for (i, step) in scenario.timeline.iter().enumerate() {
        let path = format!("timeline[{i}]");
        for selector in selectors(&step.action) {
            view.check_selector(selector)
                .map_err(|m| error(path.clone(), m))?;
        }
        if let Action::Http(http) = &step.action {
            let role = map.role_of(&http.node).and_then(|r| roles.get(r));
            let port = http.port.or(role.and_then(|r| r.http_port));
            let port = port.ok_or_else(|| {
                error(
                    format!("{path}.node"),
                    format!(
                        "expected a node that serves HTTP (or a `port`), found {:?}",
                        http.node
                    ),
                )
            })?;
            http_ports.insert(i, port);
        }
    }

    let network = &scenario.cluster.network;
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_UNIX_MS))
        .tick_duration(Duration::from_millis(scenario.tick_ms))
        .simulation_duration(scenario.duration + Duration::from_secs(3600))
        .min_message_latency(Duration::from_millis(network.latency_ms[0]))
        .max_message_latency(Duration::from_millis(network.latency_ms[1]))
        .fail_rate(network.loss)
        .build();

    let trace = Trace::default();
    let cluster = Arc::new(map.clone());
    let mut handles = BTreeMap::new();
    for spec in &map.nodes {
        let role = roles
            .get(&spec.role)
            .cloned()
            .ok_or_else(|| error("cluster".into(), format!("no role {}", spec.role)))?;
        let handle = NodeHandle {
            disk: SimDisk::default(),
            skew_ms: Arc::new(AtomicI64::new(0)),
            shutdown: watch::channel(false).0,
        };
        let incarnation = Rc::new(Cell::new(0u64));
        let (disk, skew_ms, shutdown) = (
            handle.disk.clone(),
            handle.skew_ms.clone(),
            handle.shutdown.clone(),
        );
        let host_name = spec.name.clone();
        let (spec, cluster, trace) = (spec.clone(), cluster.clone(), trace.clone());
        sim.host(host_name.as_str(), move || {
            let count = incarnation.get();
            incarnation.set(count + 1);
            let env = Env::new(EnvParts {
                node: spec.name.clone(),
                net: Arc::new(SimNet),
                clock: Arc::new(SimClock {
                    skew_ms: skew_ms.clone(),
                }),
                disk: Arc::new(disk.clone()),
                events: Arc::new(TraceEvents(trace.clone())),
                rng: node_rng(seed, &spec.name, count),
            });
            let context = NodeContext {
                env,
                name: spec.name.clone(),
                role: spec.role.clone(),
                index: spec.index,
                cluster: cluster.clone(),
                resources: spec.resources.clone(),
                attributes: spec.attributes.clone(),
                shutdown: Shutdown(shutdown.subscribe()),
            };
            (role.start)(context)
        });
        handles.insert(host_name, handle);
    }

    let (requests, mut incoming) = mpsc::unbounded_channel::<Request>();
    let client_trace = trace.clone();
    let client_env = Env::new(EnvParts {
        node: CLIENT.to_string(),
        net: Arc::new(SimNet),
        clock: Arc::new(SimClock {
            skew_ms: Arc::new(AtomicI64::new(0)),
        }),
        disk: Arc::new(SimDisk::default()),
        events: Arc::new(TraceEvents(trace.clone())),
        rng: node_rng(seed, CLIENT, 0),
    });
    sim.client(CLIENT, async move {
        while let Some(request) = incoming.recv().await {
            let http = &request.action;
            let mut builder = http::Request::builder()
                .method(http.method.as_str())
                .uri(http.path.as_str());
            if http.body.is_some() {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            }
            let body = Bytes::from(http.body.clone().unwrap_or_default());
            let mut event = Event::new("http")
                .with("step", request.index)
                .with("node", &http.node)
                .with("method", &http.method)
                .with("path", &http.path);
            match builder.body(body) {
                Ok(req) => {
                    let timeout = Duration::from_secs(10);
                    match drover_core::http::request(
                        &client_env,
                        &http.node,
                        request.port,
                        req,
                        timeout,
                    )
                    .await
                    {
                        Ok(response) => event = event.with("status", response.status().as_u16()),
                        Err(e) => {
                            event = event.with("status", "none").with("error", error_kind(&e))
                        }
                    }
                }
                Err(_) => event = event.with("status", "none").with("error", "bad-request"),
            }
            client_trace.record(sim_ms(), CLIENT, event);
        }
        Ok(())
    });

    let mut harness = Harness {
        sim,
        view,
        handles,
        held: BTreeSet::new(),
        requests: Some(requests),
        trace: trace.clone(),
        http_ports,
        loss_rate: network.loss,
        lossless: BTreeSet::new(),
    };
    let mut failures = Vec::new();
    let mut timeline = Vec::new();
    let mut next = 0;
    let end_ms = scenario.duration.as_millis() as u64;
    loop {
        let now_ms = harness.sim.elapsed().as_millis() as u64;
        while let Some(step) = scenario
            .timeline
            .get(next)
            .filter(|s| s.at.as_millis() as u64 <= now_ms)
        {
            if let Err(message) = harness.apply(next, &step.action, now_ms) {
                failures.push(Failure {
                    at_ms: now_ms,
                    check: format!("timeline[{next}]"),
                    message,
                });
            }
            next += 1;
        }
        if now_ms >= end_ms || !failures.is_empty() {
            break;
        }
        if let Err(e) = harness.sim.step() {
            failures.push(Failure {
                at_ms: now_ms,
                check: "node".into(),
                message: e.to_string(),
            });
        }
        for line in trace.take_new() {
            harness.view.observe(&line);
            for invariant in &mut always {
                if let Err(message) = invariant.observe(&line, &harness.view) {
                    failures.push(Failure {
                        at_ms: line.at_ms,
                        check: invariant.name().to_string(),
                        message,
                    });
                }
            }
            for p in &mut pending {
                p.observe(&line, &harness.view);
            }
            for (index, pattern, node, after_ms, by_ms) in &forbidden {
                let in_window = (*after_ms..=*by_ms).contains(&line.at_ms);
                let node_ok = node.as_ref().is_none_or(|s| {
                    harness
                        .view
                        .resolve(s, &[])
                        .is_ok_and(|n| n.contains(&line.node))
                });
                if in_window && node_ok && line.event.matches(pattern) {
                    failures.push(Failure {
                        at_ms: line.at_ms,
                        check: format!("expect.never[{index}]"),
                        message: format!("{} recorded `{}`", line.node, line.event),
                    });
                }
            }
            check_http(&line, scenario, &mut failures);
            if line.node == HARNESS
                || line.node == CLIENT
                || NOTABLE.contains(&line.event.name.as_str())
            {
                timeline.push(line.to_string());
            }
        }
        for p in &pending {
            if p.met_at.is_none() && now_ms > p.by_ms {
                failures.push(Failure {
                    at_ms: now_ms,
                    check: format!("expect.eventually[{}]", p.index),
                    message: format!("never saw {}", p.describe()),
                });
            }
        }
        if !failures.is_empty() {
            break;
        }
    }
    let simulated_ms = harness.sim.elapsed().as_millis() as u64;
    if failures.is_empty() {
        for invariant in &mut always {
            if let Err(message) = invariant.finish() {
                failures.push(Failure {
                    at_ms: simulated_ms,
                    check: invariant.name().to_string(),
                    message,
                });
            }
        }
    }
    if failures.is_empty() {
        for p in pending.iter().filter(|p| p.met_at.is_none()) {
            failures.push(Failure {
                at_ms: simulated_ms,
                check: format!("expect.eventually[{}]", p.index),
                message: format!("never saw {}", p.describe()),
            });
        }
    }
    harness.requests.take();
    for failure in &failures {
        timeline.push(format!(
            "{} FAILED {}: {}",
            failure.at_ms, failure.check, failure.message
        ));
    }
    Ok(Outcome {
        scenario: scenario.name.clone(),
        seed,
        failures,
        trace: trace.render(),
        timeline,
        simulated_ms,
    })
}

/// The harness's hold on a running simulation.
struct Harness<'a> {
    sim: turmoil::Sim<'a>,
    view: ClusterView,
    handles: BTreeMap<String, NodeHandle>,
    /// Pairs whose messages are held.
    held: BTreeSet<(String, String)>,
    requests: Option<mpsc::UnboundedSender<Request>>,
    trace: Trace,
    http_ports: BTreeMap<usize, u16>,
    /// The loss rate links have, except those cut one way, which have none (see `apply`).
    loss_rate: f64,
    lossless: BTreeSet<(String, String)>,
}

impl Harness<'_> {
    fn record(&self, now_ms: u64, event: Event) {
        self.trace.record(now_ms, HARNESS, event);
    }

    /// Resolves groups of selectors; `*` in a group stands for every node named in no other group.
    fn resolve_groups(&self, groups: &[Vec<String>]) -> Result<Vec<Vec<String>>, String> {
        let mut named = Vec::new();
        for selector in groups.iter().flatten().filter(|s| *s != "*") {
            named.extend(self.view.resolve(selector, &[])?);
        }
        let mut out = Vec::new();
        for group in groups {
            let mut nodes: Vec<String> = Vec::new();
            for selector in group {
                let except: &[String] = if selector == "*" { &named } else { &[] };
                for node in self.view.resolve(selector, except)? {
                    if !nodes.contains(&node) {
                        nodes.push(node);
                    }
                }
            }
            out.push(nodes);
        }
        Ok(out)
    }

    fn cut(&mut self, from: &str, to: &str, now_ms: u64) {
        self.view
            .cuts
            .entry((from.to_string(), to.to_string()))
            .or_insert(now_ms);
    }

    /// Runs `f` (a crash, or the crash half of a restart) with `node` cut off from every host.
    ///
    /// Dropping a host's runtime drops its tasks in an order tokio derives from process-wide task
    /// ids, so whatever those drops would send (FIN, RST) would come out in an order that depends
    /// on what ran before in the process, and a seed would stop replaying the same. Cut off, the
    /// node's last words are lost, as when a machine loses power. Afterwards the node's links are
    /// as they were (one-way cuts and holds included).
    fn isolated(&mut self, node: &str, f: impl FnOnce(&mut turmoil::Sim<'_>)) {
        let mut others: Vec<String> = self
            .handles
            .keys()
            .filter(|n| *n != node)
            .cloned()
            .collect();
        others.push(CLIENT.to_string());
        for other in &others {
            self.sim.partition(node, other.as_str());
        }
        f(&mut self.sim);
        for other in &others {
            self.sim.repair(node, other.as_str());
            for (from, to) in [(node, other.as_str()), (other.as_str(), node)] {
                if self
                    .view
                    .cuts
                    .contains_key(&(from.to_string(), to.to_string()))
                {
                    self.sim.partition_oneway(from, to);
                }
            }
            let held = self.held.contains(&(node.to_string(), other.clone()))
                || self.held.contains(&(other.clone(), node.to_string()));
            if held {
                self.sim.hold(node, other.as_str());
            }
        }
    }

    fn apply(&mut self, index: usize, action: &Action, now_ms: u64) -> Result<(), String> {
        match action {
            Action::Partition { groups } | Action::Hold { groups } => {
                let groups = self.resolve_groups(groups)?;
                let hold = matches!(action, Action::Hold { .. });
                for (i, a) in groups.iter().enumerate() {
                    for b in groups.iter().skip(i + 1) {
                        for x in a {
                            for y in b.iter().filter(|y| *y != x) {
                                if hold {
                                    self.sim.hold(x.as_str(), y.as_str());
                                    self.held.insert((x.clone(), y.clone()));
                                } else {
                                    self.sim.partition(x.as_str(), y.as_str());
                                    self.cut(x, y, now_ms);
                                    self.cut(y, x, now_ms);
                                }
                            }
                        }
                    }
                }
                let text: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
                let name = if hold { "hold" } else { "partition" };
                self.record(now_ms, Event::new(name).with("groups", text.join("|")));
            }
            Action::PartitionOneway { from, to } => {
                let groups = self.resolve_groups(&[from.clone(), to.clone()])?;
                for x in &groups[0] {
                    for y in groups[1].iter().filter(|y| *y != x) {
                        // turmoil's random loss repairs a link by making both directions healthy,
                        // which would undo a one-way cut: no loss on this link while it is cut,
                        // and no random partition left over from before.
                        self.sim.set_link_fail_rate(x.as_str(), y.as_str(), 0.0);
                        self.lossless.insert((x.clone(), y.clone()));
                        self.sim.repair(x.as_str(), y.as_str());
                        self.sim.partition_oneway(x.as_str(), y.as_str());
                        if self.view.cuts.contains_key(&(y.clone(), x.clone())) {
                            self.sim.partition_oneway(y.as_str(), x.as_str());
                        }
                        self.cut(x, y, now_ms);
                    }
                }
                let event = Event::new("partition")
                    .with("from", groups[0].join(","))
                    .with("to", groups[1].join(","));
                self.record(now_ms, event);
            }
            Action::Heal => {
                let mut everyone: Vec<String> = self.handles.keys().cloned().collect();
                everyone.push(CLIENT.to_string());
                for (i, a) in everyone.iter().enumerate() {
                    for b in everyone.iter().skip(i + 1) {
                        // release() repairs the link and delivers whatever it held
                        self.sim.release(a.as_str(), b.as_str());
                    }
                }
                for (a, b) in std::mem::take(&mut self.lossless) {
                    self.sim
                        .set_link_fail_rate(a.as_str(), b.as_str(), self.loss_rate);
                }
                self.view.cuts.clear();
                self.held.clear();
                self.record(now_ms, Event::new("heal"));
            }
            Action::Release => {
                for (a, b) in std::mem::take(&mut self.held) {
                    self.sim.release(a.as_str(), b.as_str());
                    // release() also repairs: put back the cuts a partition made on purpose
                    for (x, y) in [(&a, &b), (&b, &a)] {
                        if self.view.cuts.contains_key(&(x.clone(), y.clone())) {
                            self.sim.partition_oneway(x.as_str(), y.as_str());
                        }
                    }
                }
                self.record(now_ms, Event::new("release"));
            }
            Action::Crash { node }
            | Action::Stop { node }
            | Action::Restart { node }
            | Action::Skew { node, .. } => {
                for name in self.view.resolve(node, &[])? {
                    let running = !self.view.down.contains(&name);
                    // crash and stop act on running nodes, restart on the others
                    if running == matches!(action, Action::Restart { .. }) {
                        continue;
                    }
                    let handle = self.handles[&name].clone_parts();
                    let event = match action {
                        Action::Crash { .. } => {
                            self.isolated(&name, |sim| sim.crash(name.as_str()));
                            handle.disk.lose_unsynced();
                            self.view.down.insert(name.clone());
                            Event::new("crash")
                        }
                        Action::Stop { .. } => {
                            handle.shutdown.send_replace(true);
                            self.view.down.insert(name.clone());
                            Event::new("stop")
                        }
                        Action::Skew { by_ms, .. } => {
                            handle.skew_ms.fetch_add(*by_ms, Ordering::Relaxed);
                            Event::new("skew").with("by_ms", by_ms)
                        }
                        _ => {
                            // send_replace: the stopped incarnation's receivers may all be gone
                            handle.shutdown.send_replace(false);
                            self.isolated(&name, |sim| sim.bounce(name.as_str()));
                            self.view.down.remove(&name);
                            Event::new("restart")
                        }
                    };
                    let mut event = event;
                    event.fields.insert(0, ("node".to_string(), name.clone()));
                    self.record(now_ms, event);
                }
            }
            Action::Latency { max_ms } => {
                self.sim
                    .set_max_message_latency(Duration::from_millis(*max_ms));
                self.record(now_ms, Event::new("latency").with("max_ms", max_ms));
            }
            Action::Loss { rate } => {
                self.sim.set_fail_rate(*rate);
                self.loss_rate = *rate;
                let names: Vec<String> = self.handles.keys().cloned().collect();
                for (i, a) in names.iter().enumerate() {
                    for b in names.iter().skip(i + 1) {
                        let pair = (a.clone(), b.clone());
                        let reverse = (b.clone(), a.clone());
                        if !self.lossless.contains(&pair) && !self.lossless.contains(&reverse) {
                            self.sim.set_link_fail_rate(a.as_str(), b.as_str(), *rate);
                        }
                    }
                }
                self.record(now_ms, Event::new("loss").with("rate", rate));
            }
            Action::Http(http) => {
                for node in self.view.resolve(&http.node, &[])? {
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
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

fn error_kind(error: &drover_core::http::HttpError) -> &'static str {
    match error {
        drover_core::http::HttpError::Connect { .. } => "connect",
        drover_core::http::HttpError::Request { .. } => "request",
        drover_core::http::HttpError::TimedOut { .. } => "timeout",
    }
}

/// An HTTP answer with another status than the step expected is a failure.
fn check_http(line: &TraceLine, scenario: &Scenario, failures: &mut Vec<Failure>) {
    if line.node != CLIENT || line.event.name != "http" {
        return;
    }
    let Some(index) = line
        .event
        .field("step")
        .and_then(|s| s.parse::<usize>().ok())
    else {
        return;
    };
    let Some(Action::Http(http)) = scenario.timeline.get(index).map(|s| &s.action) else {
        return;
    };
    if let Some(expected) = http.expect_status {
        let status = line.event.field("status").unwrap_or("none");
        if status != expected.to_string() {
            failures.push(Failure {
                at_ms: line.at_ms,
                check: format!("timeline[{index}].expect_status"),
                message: format!(
                    "{} {} on {} answered {status}, expected {expected}",
                    http.method,
                    http.path,
                    line.event.field("node").unwrap_or("?")
                ),
            });
        }
    }
}

fn selectors(action: &Action) -> Vec<&str> {
    match action {
        Action::Partition { groups } | Action::Hold { groups } => {
            groups.iter().flatten().map(String::as_str).collect()
        }
        Action::PartitionOneway { from, to } => from.iter().chain(to).map(String::as_str).collect(),
        Action::Crash { node }
        | Action::Stop { node }
        | Action::Restart { node }
        | Action::Skew { node, .. } => vec![node.as_str()],
        Action::Http(http) => vec![http.node.as_str()],
        Action::Heal | Action::Release | Action::Latency { .. } | Action::Loss { .. } => vec![],
    }
}
