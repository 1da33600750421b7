//! What must hold while a scenario runs (`always`) and what must happen by a deadline
//! (`eventually`). Checkers read the trace line by line, next to the harness's own view of the
//! cluster (which nodes run, which links are cut, who claims to lead).

use std::collections::{BTreeMap, BTreeSet};

use drover_core::Event;

mod auth;
mod coord;
mod dns;
mod scheduler;
mod tasks;

use auth::NoUnauthenticatedChange;
pub use auth::FORGED_TERM;
use coord::{AckedWritesSurvive, Linearizable};
use scheduler::{AckedChangesSurvive, DependencyOrder, DeploymentsFinish, NoOverscale};
pub use tasks::DEFAULT_AGENT_RESOURCES;
use tasks::{agent_task, downed};
use tasks::{NoDuplicateTask, NoOvercommit, UpdatesExactlyOnce};

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
    /// The agent that last launched each task (`task_launched` events).
    pub task_agents: BTreeMap<String, String>,
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
        if line.event.name == "task_launched" {
            if let Some(task) = line.event.field("task") {
                self.task_agents.insert(task.to_string(), line.node.clone());
            }
        }
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
        if let Some(task) = selector.strip_prefix("agent-of:") {
            return match self.task_agents.get(task) {
                Some(node) => Ok(vec![node.clone()]),
                None => Err(format!(
                    "selector {selector:?}: no agent has launched task `{task}` yet"
                )),
            };
        }
        if self.map.role_of(selector).is_some() {
            return Ok(vec![selector.to_string()]);
        }
        Err(format!(
            "selector {selector:?}: expected a node name, `role:<role>`, `leader:<role>`, `agent-of:<task>` or `*`"
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
        if let Some(task) = selector.strip_prefix("agent-of:") {
            return match self.map.of_role("agent").is_empty() || task.is_empty() {
                false => Ok(()),
                true => Err(format!(
                    "selector {selector:?}: expected a task id and a cluster with agents"
                )),
            };
        }
        match selector.strip_prefix("leader:") {
            Some(role) if !self.map.of_role(role).is_empty() => Ok(()),
            Some(role) => Err(format!("selector {selector:?}: no node has role `{role}`")),
            None => self.resolve(selector, &[]).map(|_| ()),
        }
    }
}

/// A view of a cluster of `(name, role)` nodes, for the invariants' unit tests.
#[cfg(test)]
pub(crate) fn test_view(nodes: &[(&str, &str)]) -> ClusterView {
    let nodes = nodes
        .iter()
        .map(|(name, role)| crate::cluster::NodeSpec {
            name: name.to_string(),
            role: role.to_string(),
            index: 1,
            resources: None,
            attributes: None,
            names: Vec::new(),
        })
        .collect();
    ClusterView::new(ClusterMap { nodes, auth: None })
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
    "no_unauthenticated_change",
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
    if name == "no_unauthenticated_change" {
        return Ok(Box::new(NoUnauthenticatedChange));
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
