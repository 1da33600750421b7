//! The agents' and the master's task invariants: no agent overcommitted, no task twice, every
//! status update delivered exactly once.

use super::*;

/// The agents' task events: `task_launched`/`task_recovered task=T framework=F cpus=C mem=M` when a
/// task starts running on the agent (or is adopted again after a restart), `task_state task=T
/// state=S uuid=U` for each status update it makes.
pub(super) fn agent_task(line: &TraceLine, view: &ClusterView) -> Option<(String, bool)> {
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
pub(super) fn downed(line: &TraceLine) -> Option<&str> {
    (line.node == crate::trace::HARNESS && matches!(line.event.name.as_str(), "crash" | "stop"))
        .then(|| line.event.field("node"))
        .flatten()
}

/// Thousandths of cpus and MB of mem of a task event.
pub(super) fn task_size(event: &Event) -> (u64, u64) {
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
pub(super) struct NoOvercommit {
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
pub(super) struct NoDuplicateTask {
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

/// Every status update a framework receives (`update task=T uuid=U` on a framework node) is one
/// an agent made (`task_state task=T uuid=U`), in the order the agent made them, and once, with
/// the at-least-once exception Mesos makes: an update the agent has not seen acknowledged
/// (`task_acked`) may reach a framework again after the framework restarted. An update the
/// agent saw acknowledged never comes again.
#[derive(Default)]
pub(super) struct UpdatesExactlyOnce {
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
