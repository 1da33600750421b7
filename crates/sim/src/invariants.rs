//! What must hold while a scenario runs (`always`) and what must happen by a deadline
//! (`eventually`). Checkers read the trace line by line, next to the harness's own view of the
//! cluster (which nodes run, which links are cut, who claims to lead).

use std::collections::{BTreeMap, BTreeSet};

use drover_core::Event;

mod dns;

use crate::cluster::ClusterMap;
use crate::scenario::Action;
use crate::trace::TraceLine;

/// What the harness knows of the cluster at a point of the run.
#[derive(Debug, Default)]
pub struct ClusterView {
    pub map: ClusterMap,
    /// Directed links cut by a partition, with the time the cut began.
    pub cuts: BTreeMap<(String, String), u64>,
    /// The latest leader claimed by each role: (term, node).
    pub leaders: BTreeMap<String, (u64, String)>,
    /// Nodes that are not running (crashed or stopped).
    pub down: std::collections::BTreeSet<String>,
}

impl ClusterView {
    pub fn new(map: ClusterMap) -> Self {
        ClusterView {
            map,
            ..ClusterView::default()
        }
    }

    /// Follows the events that change the view.
    pub fn observe(&mut self, line: &TraceLine) {
        if line.event.name == "leader" {
            if let (Some(role), Some(term)) = (
                self.map.role_of(&line.node),
                line.event.field("term").and_then(|t| t.parse().ok()),
            ) {
                let newer = self
                    .leaders
                    .get(role)
                    .is_none_or(|(known, _)| term >= *known);
                if newer {
                    self.leaders
                        .insert(role.to_string(), (term, line.node.clone()));
                }
            }
        }
    }

    /// Resolves a selector to node names. `*` is every node; `except` is left out of it.
    pub fn resolve(&self, selector: &str, except: &[String]) -> Result<Vec<String>, String> {
        if selector == "*" {
            let all = self
                .map
                .names()
                .into_iter()
                .filter(|n| !except.iter().any(|e| e == n));
            return Ok(all.map(str::to_string).collect());
        }
        if let Some(role) = selector.strip_prefix("role:") {
            let nodes = self.map.of_role(role);
            if nodes.is_empty() {
                return Err(format!("selector {selector:?}: no node has role `{role}`"));
            }
            return Ok(nodes.into_iter().map(str::to_string).collect());
        }
        if let Some(role) = selector.strip_prefix("leader:") {
            return match self.leaders.get(role) {
                Some((_, node)) if !self.down.contains(node) => Ok(vec![node.clone()]),
                _ => Err(format!(
                    "selector {selector:?}: no running node of role `{role}` claims to lead"
                )),
            };
        }
        if self.map.role_of(selector).is_some() {
            return Ok(vec![selector.to_string()]);
        }
        Err(format!(
            "selector {selector:?}: expected a node name, `role:<role>`, `leader:<role>` or `*`"
        ))
    }

    /// Resolves groups of selectors; `*` in a group stands for every node named in no other group.
    pub fn resolve_groups(&self, groups: &[Vec<String>]) -> Result<Vec<Vec<String>>, String> {
        let mut named = Vec::new();
        for selector in groups.iter().flatten().filter(|s| *s != "*") {
            named.extend(self.resolve(selector, &[])?);
        }
        let mut out = Vec::new();
        for group in groups {
            let mut nodes: Vec<String> = Vec::new();
            for selector in group {
                let except: &[String] = if selector == "*" { &named } else { &[] };
                for node in self.resolve(selector, except)? {
                    if !nodes.contains(&node) {
                        nodes.push(node);
                    }
                }
            }
            out.push(nodes);
        }
        Ok(out)
    }

    /// The directed links a `partition`, `hold` or one-way `partition` cuts (both ways between
    /// every two groups; from `from` to `to`), and the harness event that reports it. `None` for
    /// any other action. The simulator and the live runner cut exactly these.
    pub fn links(&self, action: &Action) -> Result<Option<(Links, Event)>, String> {
        let mut links = Vec::new();
        let event = match action {
            Action::Partition { groups } | Action::Hold { groups } => {
                let groups = self.resolve_groups(groups)?;
                for (i, a) in groups.iter().enumerate() {
                    for b in groups.iter().skip(i + 1) {
                        for x in a {
                            for y in b.iter().filter(|y| *y != x) {
                                links.push((x.clone(), y.clone()));
                                links.push((y.clone(), x.clone()));
                            }
                        }
                    }
                }
                let text: Vec<String> = groups.iter().map(|g| g.join(",")).collect();
                let name = if matches!(action, Action::Hold { .. }) {
                    "hold"
                } else {
                    "partition"
                };
                Event::new(name).with("groups", text.join("|"))
            }
            Action::PartitionOneway { from, to } => {
                let groups = self.resolve_groups(&[from.clone(), to.clone()])?;
                for x in &groups[0] {
                    for y in groups[1].iter().filter(|y| *y != x) {
                        links.push((x.clone(), y.clone()));
                    }
                }
                Event::new("partition")
                    .with("from", groups[0].join(","))
                    .with("to", groups[1].join(","))
            }
            _ => return Ok(None),
        };
        Ok(Some((links, event)))
    }

    /// Notes that the link `from` → `to` is cut from `now_ms` (kept if it already was).
    pub fn cut(&mut self, from: &str, to: &str, now_ms: u64) {
        self.cuts
            .entry((from.to_string(), to.to_string()))
            .or_insert(now_ms);
    }

    /// Checks a selector's form without needing the run (leaders are only known while it runs).
    pub fn check_selector(&self, selector: &str) -> Result<(), String> {
        match selector.strip_prefix("leader:") {
            Some(role) if !self.map.of_role(role).is_empty() => Ok(()),
            Some(role) => Err(format!("selector {selector:?}: no node has role `{role}`")),
            None => self.resolve(selector, &[]).map(|_| ()),
        }
    }
}

/// Directed links `(from, to)`.
pub type Links = Vec<(String, String)>;

/// A property checked on every line of the trace.
pub trait Invariant {
    fn name(&self) -> &str;
    /// An error describes the violation.
    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String>;

    /// Checks what can only be judged once the run is over.
    fn finish(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The names `expect.always` accepts.
pub const ALWAYS: &[&str] = &[
    "one_leader:<role>",
    "no_delivery_across_partition",
    "linearizable",
    "acked_writes_survive",
    "no_overcommit",
    "no_duplicate_task",
    "updates_exactly_once",
    "dependency_order",
    "no_overscale",
    "deployments_finish",
    "acked_changes_survive",
    "dns_fresh",
    "dns_complete",
];

/// Builds the invariant `name` (one of [`ALWAYS`]).
pub fn always(name: &str) -> Result<Box<dyn Invariant>, String> {
    if let Some(role) = name.strip_prefix("one_leader:") {
        return Ok(Box::new(OneLeader {
            name: name.to_string(),
            role: role.to_string(),
            terms: BTreeMap::new(),
            leading: BTreeMap::new(),
            steps_down: false,
        }));
    }
    if name == "no_overcommit" {
        return Ok(Box::new(NoOvercommit::default()));
    }
    if name == "no_duplicate_task" {
        return Ok(Box::new(NoDuplicateTask::default()));
    }
    if name == "updates_exactly_once" {
        return Ok(Box::new(UpdatesExactlyOnce::default()));
    }
    if name == "dependency_order" {
        return Ok(Box::new(DependencyOrder::default()));
    }
    if name == "no_overscale" {
        return Ok(Box::new(NoOverscale::default()));
    }
    if name == "deployments_finish" {
        return Ok(Box::new(DeploymentsFinish::default()));
    }
    if name == "dns_fresh" {
        return Ok(Box::new(dns::Fresh::default()));
    }
    if name == "dns_complete" {
        return Ok(Box::new(dns::Complete::default()));
    }
    if name == "acked_changes_survive" {
        return Ok(Box::new(AckedChangesSurvive::default()));
    }
    if name == "acked_writes_survive" {
        return Ok(Box::new(AckedWritesSurvive::default()));
    }
    if name == "linearizable" {
        return Ok(Box::new(Linearizable::default()));
    }
    if name == "no_delivery_across_partition" {
        return Ok(Box::new(NoDeliveryAcrossPartition {
            margin_ms: 10,
            paused_until: BTreeMap::new(),
        }));
    }
    Err(format!(
        "unknown invariant {name:?}; expected one of: {}",
        ALWAYS.join(", ")
    ))
}

/// At most one node of a role claims leadership in any one term (`leader term=N` events). A role
/// whose nodes say when they stop leading (`deposed` events: the master) must also never have
/// two running nodes leading at once.
struct OneLeader {
    name: String,
    role: String,
    terms: BTreeMap<u64, String>,
    /// Nodes leading now (since their `leader` event, until `deposed`, a crash or a stop).
    leading: BTreeMap<String, u64>,
    steps_down: bool,
}

impl Invariant for OneLeader {
    fn name(&self) -> &str {
        &self.name
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if line.node == crate::trace::HARNESS
            && matches!(line.event.name.as_str(), "crash" | "stop" | "restart")
        {
            if let Some(node) = line.event.field("node") {
                self.leading.remove(node);
            }
            return Ok(());
        }
        if view.map.role_of(&line.node) != Some(self.role.as_str()) {
            return Ok(());
        }
        if line.event.name == "deposed" {
            self.steps_down = true;
            self.leading.remove(&line.node);
            return Ok(());
        }
        if line.event.name != "leader" {
            return Ok(());
        }
        if self.steps_down {
            if let Some((other, term)) = self.leading.iter().find(|(n, _)| **n != line.node) {
                return Err(format!(
                    "{} leads (term {}) while {other} still leads (term {term})",
                    line.node,
                    line.event.field("term").unwrap_or("?")
                ));
            }
        }
        let Some(term) = line.event.field("term").and_then(|t| t.parse::<u64>().ok()) else {
            return Err(format!(
                "{} claims leadership without a numeric term: {}",
                line.node, line.event
            ));
        };
        self.leading.insert(line.node.clone(), term);
        match self.terms.get(&term) {
            Some(first) if *first != line.node => Err(format!(
                "two leaders of role {} in term {term}: {first} and {}",
                self.role, line.node
            )),
            _ => {
                self.terms.insert(term, line.node.clone());
                Ok(())
            }
        }
    }
}

/// A message (`hb from=<node>` event at the receiver) never crosses a link that has been cut for
/// longer than the margin: a check of the harness's own fault injection. A node paused when the
/// cut came may read, when it resumes, what reached its socket before the cut: not a crossing.
struct NoDeliveryAcrossPartition {
    margin_ms: u64,
    /// Per node, when its latest pause started and when it ends.
    paused_until: BTreeMap<String, (u64, u64)>,
}

impl Invariant for NoDeliveryAcrossPartition {
    fn name(&self) -> &str {
        "no_delivery_across_partition"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if line.node == crate::trace::HARNESS && line.event.name == "pause" {
            if let (Some(node), Some(for_ms)) = (
                line.event.field("node"),
                line.event
                    .field("for_ms")
                    .and_then(|f| f.parse::<u64>().ok()),
            ) {
                // A pause of a paused node replaces its end, not its start.
                let start = match self.paused_until.get(node) {
                    Some((start, end)) if line.at_ms <= *end => *start,
                    _ => line.at_ms,
                };
                self.paused_until
                    .insert(node.to_string(), (start, line.at_ms + for_ms));
            }
            return Ok(());
        }
        let Some(from) = line.event.field("from").filter(|_| line.event.name == "hb") else {
            return Ok(());
        };
        let paused_at = |since: u64| {
            self.paused_until
                .get(&line.node)
                .is_some_and(|(start, end)| *start <= since + self.margin_ms && since <= *end)
        };
        match view.cuts.get(&(from.to_string(), line.node.clone())) {
            Some(since) if line.at_ms > since + self.margin_ms && !paused_at(*since) => {
                Err(format!(
                    "{} received from {from} at {} ms although that link was cut at {since} ms",
                    line.node, line.at_ms
                ))
            }
            _ => Ok(()),
        }
    }
}

/// An `eventually` expectation being watched.
#[derive(Debug)]
pub struct Pending {
    pub index: usize,
    pub pattern: Event,
    pub node: Option<String>,
    pub after_ms: u64,
    pub by_ms: u64,
    pub met_at: Option<u64>,
}

impl Pending {
    pub fn observe(&mut self, line: &TraceLine, view: &ClusterView) {
        if self.met_at.is_some() || line.at_ms < self.after_ms || line.at_ms > self.by_ms {
            return;
        }
        let node_ok = match &self.node {
            None => true,
            Some(selector) => view
                .resolve(selector, &[])
                .is_ok_and(|nodes| nodes.contains(&line.node)),
        };
        if node_ok && line.event.matches(&self.pattern) {
            self.met_at = Some(line.at_ms);
        }
    }

    pub fn describe(&self) -> String {
        let node = self.node.as_deref().unwrap_or("any node");
        format!(
            "`{}` on {node} between {} ms and {} ms",
            self.pattern, self.after_ms, self.by_ms
        )
    }
}

/// The clients' register operations (`call`/`ret` events, see the `coord-writer` workload) form a
/// linearizable history. Checked once the run is over; every operation still open then has an
/// unknown outcome.
#[derive(Default)]
struct Linearizable {
    history: crate::linearizability::History,
    open: BTreeMap<(String, String), usize>,
    processes: BTreeMap<String, u64>,
}

/// How many search steps the check may take before it gives up (a give-up fails the run).
const LINEARIZABILITY_STEPS: u64 = 20_000_000;

impl Invariant for Linearizable {
    fn name(&self) -> &str {
        "linearizable"
    }

    fn observe(&mut self, line: &TraceLine, _view: &ClusterView) -> Result<(), String> {
        use crate::linearizability::{Op, OpResult};
        let event = &line.event;
        let (Some(n), true) = (
            event.field("n"),
            event.name == "call" || event.name == "ret",
        ) else {
            return Ok(());
        };
        let field = |key: &str| {
            event
                .field(key)
                .ok_or_else(|| format!("{} `{event}` has no `{key}`", line.node))
        };
        let number = |key: &str| {
            field(key)?
                .parse::<u64>()
                .map_err(|_| format!("{} `{event}`: `{key}` is not a number", line.node))
        };
        let slot = (line.node.clone(), n.to_string());
        if event.name == "call" {
            let key = field("key")?.to_string();
            let op = match field("op")? {
                "read" => Op::Read { key },
                "write" => Op::Write {
                    key,
                    value: field("value")?.to_string(),
                },
                "cas" => Op::Cas {
                    key,
                    expected_version: number("expect")?,
                    value: field("value")?.to_string(),
                },
                other => {
                    return Err(format!(
                        "{} called an unknown operation {other:?}",
                        line.node
                    ))
                }
            };
            let next = self.processes.len() as u64;
            let process = *self.processes.entry(line.node.clone()).or_insert(next);
            let id = self.history.invoke(process, line.at_ms, op);
            self.open.insert(slot, id);
            return Ok(());
        }
        let Some(id) = self.open.remove(&slot) else {
            return Err(format!(
                "{} returned `{event}` for a call it never made",
                line.node
            ));
        };
        let result = match field("result")? {
            "read" => {
                let value = field("value")?;
                OpResult::Read {
                    value: (value != "-").then(|| value.to_string()),
                    version: number("version")?,
                }
            }
            "written" => OpResult::Written {
                version: number("version")?,
            },
            "cas-failed" => OpResult::CasFailed,
            // A failed read changed nothing, and a write without an answer may or may not have
            // happened: both can be placed anywhere after their call, or nowhere.
            "unknown" | "error" => OpResult::Unknown,
            other => {
                return Err(format!(
                    "{} returned an unknown result {other:?}",
                    line.node
                ))
            }
        };
        self.history.complete(id, line.at_ms, result);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        use crate::linearizability::{check, Verdict};
        match check(&self.history, LINEARIZABILITY_STEPS) {
            Verdict::Linearizable => Ok(()),
            Verdict::NotLinearizable { key, explanation } => {
                Err(format!("key {key}: {explanation}"))
            }
            Verdict::GaveUp { key } => Err(format!(
                "key {key}: the check gave up after {LINEARIZABILITY_STEPS} steps"
            )),
        }
    }
}

/// A read that begins after a write of the same key was acknowledged sees that write or a later
/// one (`call`/`ret` events of the simulated clients). Weaker than `linearizable`, but checked as
/// the run goes, and it names the lost write.
#[derive(Default)]
struct AckedWritesSurvive {
    /// Open calls: (node, n) → (key, call time, is a read).
    open: BTreeMap<(String, String), (String, u64, bool)>,
    /// Per key: the highest acknowledged version, when, and to whom.
    acked: BTreeMap<String, (u64, u64, String)>,
}

impl Invariant for AckedWritesSurvive {
    fn name(&self) -> &str {
        "acked_writes_survive"
    }

    fn observe(&mut self, line: &TraceLine, _view: &ClusterView) -> Result<(), String> {
        let event = &line.event;
        let Some(n) = event.field("n") else {
            return Ok(());
        };
        let slot = (line.node.clone(), n.to_string());
        if event.name == "call" {
            let key = event.field("key").unwrap_or_default().to_string();
            self.open
                .insert(slot, (key, line.at_ms, event.field("op") == Some("read")));
            return Ok(());
        }
        if event.name != "ret" {
            return Ok(());
        }
        let Some((key, called_ms, is_read)) = self.open.remove(&slot) else {
            return Ok(());
        };
        let Some(version) = event.field("version").and_then(|v| v.parse::<u64>().ok()) else {
            return Ok(());
        };
        match (is_read, self.acked.get(&key)) {
            (true, Some((acked, acked_ms, to))) if called_ms > *acked_ms && version < *acked => Err(format!(
                "{} read {key} at version {version} (called at {called_ms} ms), but version {acked} was acknowledged to {to} at {acked_ms} ms",
                line.node
            )),
            (false, known) if known.is_none_or(|(acked, _, _)| version > *acked) => {
                self.acked.insert(key, (version, line.at_ms, line.node.clone()));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The agents' task events: `task_launched`/`task_recovered task=T framework=F cpus=C mem=M` when a
/// task starts running on the agent (or is adopted again after a restart), `task_state task=T
/// state=S uuid=U` for each status update it makes.
fn agent_task(line: &TraceLine, view: &ClusterView) -> Option<(String, bool)> {
    if view.map.role_of(&line.node) != Some("agent") {
        return None;
    }
    let task = line.event.field("task")?.to_string();
    match line.event.name.as_str() {
        "task_launched" | "task_recovered" => Some((task, true)),
        "task_state" => {
            let state = line.event.field("state")?;
            let terminal = serde_json::from_value::<drover_core::task::TaskState>(
                serde_json::Value::String(state.to_string()),
            )
            .is_ok_and(|s| s.is_terminal());
            terminal.then_some((task, false))
        }
        _ => None,
    }
}

/// The node a harness crash or stop line is about.
fn downed(line: &TraceLine) -> Option<&str> {
    (line.node == crate::trace::HARNESS && matches!(line.event.name.as_str(), "crash" | "stop"))
        .then(|| line.event.field("node"))
        .flatten()
}

/// Thousandths of cpus and MB of mem of a task event.
fn task_size(event: &Event) -> (u64, u64) {
    let milli = |key: &str| {
        event
            .field(key)
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| (v * 1000.0).round() as u64)
    };
    (milli("cpus"), milli("mem"))
}

/// No agent runs tasks whose cpus or mem add up to more than it has.
#[derive(Default)]
struct NoOvercommit {
    running: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
}

/// What a simulated agent has when its scenario does not say.
pub const DEFAULT_AGENT_RESOURCES: &str = "cpus:4;mem:8192;disk:100000;ports:[31000-32000]";

impl Invariant for NoOvercommit {
    fn name(&self) -> &str {
        "no_overcommit"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if let Some(node) = downed(line) {
            self.running.remove(node);
            return Ok(());
        }
        let Some((task, running)) = agent_task(line, view) else {
            return Ok(());
        };
        let tasks = self.running.entry(line.node.clone()).or_default();
        if !running {
            tasks.remove(&task);
            return Ok(());
        }
        tasks.insert(task, task_size(&line.event));
        let (cpus, mem) = tasks
            .values()
            .fold((0, 0), |(c, m), (tc, tm)| (c + tc, m + tm));
        let total = view
            .map
            .nodes
            .iter()
            .find(|n| n.name == line.node)
            .and_then(|n| n.resources.clone())
            .or_else(|| DEFAULT_AGENT_RESOURCES.parse().ok())
            .unwrap_or_default();
        let (have_cpus, have_mem) = (
            total.scalar("cpus").thousandths(),
            total.scalar("mem").thousandths(),
        );
        if cpus > have_cpus || mem > have_mem {
            return Err(format!(
                "{} runs tasks using cpus {} and mem {} but has cpus {} and mem {}",
                line.node,
                cpus as f64 / 1000.0,
                mem as f64 / 1000.0,
                have_cpus as f64 / 1000.0,
                have_mem as f64 / 1000.0
            ));
        }
        Ok(())
    }
}

/// A task id never runs twice at once (on two agents, or twice on one).
#[derive(Default)]
struct NoDuplicateTask {
    running: BTreeMap<String, String>,
}

impl Invariant for NoDuplicateTask {
    fn name(&self) -> &str {
        "no_duplicate_task"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if let Some(node) = downed(line) {
            self.running.retain(|_, n| n != node);
            return Ok(());
        }
        let Some((task, running)) = agent_task(line, view) else {
            return Ok(());
        };
        if !running {
            if self.running.get(&task) == Some(&line.node) {
                self.running.remove(&task);
            }
            return Ok(());
        }
        let recovered = line.event.name == "task_recovered";
        match self.running.get(&task) {
            Some(other) if other != &line.node || !recovered => Err(format!(
                "task {task} starts on {} while it runs on {other}",
                line.node
            )),
            _ => {
                self.running.insert(task, line.node.clone());
                Ok(())
            }
        }
    }
}

/// The app of a Marathon task id: `arm-demo_group1_ubuntu1.<uuid>` → `arm-demo_group1_ubuntu1`.
fn task_app(task: &str) -> Option<&str> {
    task.rsplit_once('.').map(|(app, _)| app)
}

/// An app id in a task id's form: `/arm-demo/group1/ubuntu1` → `arm-demo_group1_ubuntu1`.
fn safe_app(id: &str) -> String {
    id.trim_start_matches('/').replace('/', "_")
}

/// Tasks running on agents per app (from the agents' own events).
#[derive(Default)]
struct RunningByApp {
    tasks: BTreeMap<String, (String, String)>,
}

impl RunningByApp {
    /// Follows a line; returns the app of a task that just started on an agent.
    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Option<String> {
        if let Some(node) = downed(line) {
            self.tasks.retain(|_, (n, _)| n != node);
            return None;
        }
        let (task, running) = agent_task(line, view)?;
        let app = task_app(&task)?.to_string();
        if !running {
            self.tasks.remove(&task);
            return None;
        }
        let fresh = line.event.name == "task_launched";
        self.tasks.insert(task, (line.node.clone(), app.clone()));
        fresh.then_some(app)
    }

    fn count(&self, app: &str) -> usize {
        self.tasks.values().filter(|(_, a)| a == app).count()
    }
}

/// No task of an app starts on an agent before every app it depends on first ran its count
/// (`depends app=X on=Y count=N` from the scheduler when a deployment is planned; the agents'
/// own events tell what runs).
#[derive(Default)]
struct DependencyOrder {
    running: RunningByApp,
    /// (app, dependency) → (count needed, reached once).
    waits: BTreeMap<(String, String), (usize, bool)>,
}

impl Invariant for DependencyOrder {
    fn name(&self) -> &str {
        "dependency_order"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if view.map.role_of(&line.node) == Some("scheduler") && line.event.name == "depends" {
            let (Some(app), Some(on), Some(count)) = (
                line.event.field("app"),
                line.event.field("on"),
                line.event.field("count").and_then(|c| c.parse().ok()),
            ) else {
                return Err(format!("{}: malformed `{}`", line.node, line.event));
            };
            let key = (safe_app(app), safe_app(on));
            let reached = self.running.count(&key.1) >= count;
            let entry = self.waits.entry(key).or_insert((count, reached));
            entry.0 = count;
            entry.1 |= reached;
            return Ok(());
        }
        let Some(started) = self.running.observe(line, view) else {
            return Ok(());
        };
        for ((app, on), (count, reached)) in self.waits.iter_mut() {
            if !*reached && self.running.count(on) >= *count {
                *reached = true;
            }
            if *app == started && !*reached {
                return Err(format!(
                    "a task of {app} started on {} while {on} ran {} of its {count} tasks",
                    line.node,
                    self.running.count(on)
                ));
            }
        }
        Ok(())
    }
}

/// No app ever runs more tasks on the agents than the scheduler allows it (`app_target app=X
/// max=M`: the larger of the last two targets, so a scale-down in progress is not a fault).
#[derive(Default)]
struct NoOverscale {
    running: RunningByApp,
    /// app → (previous max, latest max).
    max: BTreeMap<String, (usize, usize)>,
}

impl Invariant for NoOverscale {
    fn name(&self) -> &str {
        "no_overscale"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if view.map.role_of(&line.node) == Some("scheduler") && line.event.name == "app_target" {
            let (Some(app), Some(max)) = (
                line.event.field("app"),
                line.event.field("max").and_then(|c| c.parse().ok()),
            ) else {
                return Err(format!("{}: malformed `{}`", line.node, line.event));
            };
            let entry = self.max.entry(safe_app(app)).or_insert((max, max));
            *entry = (entry.1, max);
            return Ok(());
        }
        let Some(app) = self.running.observe(line, view) else {
            return Ok(());
        };
        let allowed = self.max.get(&app).map_or(0, |(a, b)| *a.max(b));
        let count = self.running.count(&app);
        if count > allowed {
            return Err(format!(
                "{app} runs {count} tasks (the latest on {}), at most {allowed} allowed",
                line.node
            ));
        }
        Ok(())
    }
}

/// Every status update a framework receives (`update task=T uuid=U` on a framework node) is one
/// an agent made (`task_state task=T uuid=U`), in the order the agent made them, and once, with
/// the at-least-once exception Mesos makes: an update the agent has not seen acknowledged
/// (`task_acked`) may reach a framework again after the framework restarted. An update the
/// agent saw acknowledged never comes again.
#[derive(Default)]
struct UpdatesExactlyOnce {
    made: BTreeMap<String, Vec<String>>,
    /// Per task: how many of `made` the agent saw acknowledged (it acknowledges in order).
    acked: BTreeMap<String, usize>,
    /// Per (framework node, task): how far into `made` the framework has received.
    received: BTreeMap<(String, String), usize>,
}

impl Invariant for UpdatesExactlyOnce {
    fn name(&self) -> &str {
        "updates_exactly_once"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if line.node == crate::trace::HARNESS && line.event.name == "restart" {
            // A restarted framework knows nothing of what it received: everything not yet
            // acknowledged at the agent may come again.
            if let Some(node) = line.event.field("node") {
                for ((framework, task), received) in self.received.iter_mut() {
                    if framework == node {
                        *received = (*received).min(self.acked.get(task).copied().unwrap_or(0));
                    }
                }
            }
            return Ok(());
        }
        let (Some(task), Some(uuid)) = (line.event.field("task"), line.event.field("uuid")) else {
            return Ok(());
        };
        // `uuid=-`: a status the master made (reconciliation, unreachable): nothing to track.
        if uuid == "-" {
            return Ok(());
        }
        let role = view.map.role_of(&line.node);
        if role == Some("agent") && line.event.name == "task_acked" {
            let made = self.made.get(task).map(Vec::as_slice).unwrap_or_default();
            if let Some(position) = made.iter().position(|u| u == uuid) {
                let acked = self.acked.entry(task.to_string()).or_default();
                *acked = (*acked).max(position + 1);
            }
            return Ok(());
        }
        if role == Some("agent") && line.event.name == "task_state" {
            self.made
                .entry(task.to_string())
                .or_default()
                .push(uuid.to_string());
            return Ok(());
        }
        if line.event.name != "update" || role == Some("agent") {
            return Ok(());
        }
        let made = self.made.get(task).map(Vec::as_slice).unwrap_or_default();
        let Some(position) = made.iter().position(|u| u == uuid) else {
            return Err(format!(
                "{} received update {uuid} of task {task}, which no agent made",
                line.node
            ));
        };
        let key = (line.node.clone(), task.to_string());
        let next = self.received.get(&key).copied().unwrap_or(0);
        let acked = self.acked.get(task).copied().unwrap_or(0);
        if position < acked {
            return Err(format!(
                "{} received update {uuid} of task {task} (update {} of the task) after the agent saw it acknowledged",
                line.node, position + 1
            ));
        }
        if position < next {
            return Err(format!(
                "{} received update {uuid} of task {task} again (or out of order: it is update {} of the task, after {next})",
                line.node, position + 1
            ));
        }
        if position > next {
            return Err(format!(
                "{} received update {uuid} of task {task} (update {} of the task) but never update {}",
                line.node, position + 1, next + 1
            ));
        }
        self.received.insert(key, position + 1);
        Ok(())
    }
}

/// Liveness: every deployment a scheduler started (`deployment id=D`) has ended by the end of the
/// run (`deployment_done id=D` or `deployment_canceled id=D`, from whichever scheduler leads by
/// then). A run must leave time after its last fault for the cluster to settle (random schedules
/// heal everything at 70% of the run).
///
/// A deployment whose leader then failed a store write, or crashed, may never have been stored
/// (its request got no 201): it counts again only once a scheduler reports progress on it.
/// `acked_changes_survive` holds the acknowledged ones to the stricter rule.
#[derive(Default)]
struct DeploymentsFinish {
    /// id → (when it started, the scheduler that started it).
    open: BTreeMap<String, (u64, String)>,
    uncertain: BTreeMap<String, (u64, String)>,
}

impl Invariant for DeploymentsFinish {
    fn name(&self) -> &str {
        "deployments_finish"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        // A scheduler that crashed may have died with the deployment's store write in flight.
        let crashed = (line.node == crate::trace::HARNESS && line.event.name == "crash")
            .then(|| line.event.field("node"))
            .flatten();
        if crashed.is_none() && view.map.role_of(&line.node) != Some("scheduler") {
            return Ok(());
        }
        if line.event.name == "store_failed" || crashed.is_some() {
            let node = crashed.unwrap_or(&line.node);
            let lost: Vec<String> = self
                .open
                .iter()
                .filter(|(_, (_, by))| by == node)
                .map(|(id, _)| id.clone())
                .collect();
            for id in lost {
                if let Some(entry) = self.open.remove(&id) {
                    self.uncertain.insert(id, entry);
                }
            }
            return Ok(());
        }
        let Some(id) = line.event.field("id") else {
            return Ok(());
        };
        match line.event.name.as_str() {
            "deployment" => {
                self.open
                    .entry(id.to_string())
                    .or_insert((line.at_ms, line.node.clone()));
            }
            "deployment_step" => {
                if let Some(entry) = self.uncertain.remove(id) {
                    self.open
                        .insert(id.to_string(), (entry.0, line.node.clone()));
                }
            }
            "deployment_done" | "deployment_canceled" => {
                self.open.remove(id);
                self.uncertain.remove(id);
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        match self.open.iter().next() {
            Some((id, (since, _))) => Err(format!(
                "deployment {id} (started at {since} ms) never finished ({} open at the end)",
                self.open.len()
            )),
            None => Ok(()),
        }
    }
}

/// A Marathon change the client was told succeeded (a 200/201 answer naming a deployment) is never
/// lost across scheduler and coord failovers: some scheduler carries its deployment out, or a
/// later change cancels it (`deployment_done` / `deployment_canceled`), by the end of the run.
/// Unlike `deployments_finish`, a failed store write is no excuse: the answer came after the
/// write, so the change was stored.
#[derive(Default)]
struct AckedChangesSurvive {
    /// Deployment id → when the client got the answer, and the request.
    acked: BTreeMap<String, (u64, String)>,
    /// Deployments already done or canceled (an answer can arrive after its deployment ended).
    ended: BTreeSet<String>,
}

impl Invariant for AckedChangesSurvive {
    fn name(&self) -> &str {
        "acked_changes_survive"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        if line.node == crate::trace::CLIENT && line.event.name == "http" {
            if let Some(id) = line.event.field("deployment") {
                if !self.ended.contains(id) {
                    let request = format!(
                        "{} {} on {} ({})",
                        line.event.field("method").unwrap_or("?"),
                        line.event.field("path").unwrap_or("?"),
                        line.event.field("node").unwrap_or("?"),
                        line.event.field("status").unwrap_or("?"),
                    );
                    self.acked.insert(id.to_string(), (line.at_ms, request));
                }
            }
            return Ok(());
        }
        if view.map.role_of(&line.node) != Some("scheduler") {
            return Ok(());
        }
        if matches!(
            line.event.name.as_str(),
            "deployment_done" | "deployment_canceled"
        ) {
            if let Some(id) = line.event.field("id") {
                self.acked.remove(id);
                self.ended.insert(id.to_string());
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        match self.acked.iter().next() {
            Some((id, (at, request))) => Err(format!(
                "{request} was acknowledged at {at} ms with deployment {id}, which no scheduler \
                 ever finished or canceled ({} such at the end)",
                self.acked.len()
            )),
            None => Ok(()),
        }
    }
}
