//! The scheduler's invariants: dependency order, no overscale, deployments finish, and no
//! acknowledged change lost.

use super::*;

/// The app of a Marathon task id: `arm-demo_group1_ubuntu1.<uuid>` → `arm-demo_group1_ubuntu1`.
pub(super) fn task_app(task: &str) -> Option<&str> {
    task.rsplit_once('.').map(|(app, _)| app)
}

/// An app id in a task id's form: `/arm-demo/group1/ubuntu1` → `arm-demo_group1_ubuntu1`.
pub(super) fn safe_app(id: &str) -> String {
    id.trim_start_matches('/').replace('/', "_")
}

/// Tasks running on agents per app (from the agents' own events).
#[derive(Default)]
pub(super) struct RunningByApp {
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
pub(super) struct DependencyOrder {
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
pub(super) struct NoOverscale {
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

/// Liveness: every deployment a scheduler started (`deployment id=D`) has ended by the end of the
/// run (`deployment_done id=D` or `deployment_canceled id=D`, from whichever scheduler leads by
/// then). A run must leave time after its last fault for the cluster to settle (random schedules
/// heal everything at 70% of the run).
///
/// A deployment whose leader then failed a store write, or crashed, may never have been stored
/// (its request got no 201): it counts again only once a scheduler reports progress on it.
/// `acked_changes_survive` holds the acknowledged ones to the stricter rule.
#[derive(Default)]
pub(super) struct DeploymentsFinish {
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
pub(super) struct AckedChangesSurvive {
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
