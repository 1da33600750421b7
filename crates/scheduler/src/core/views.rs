//! The scheduler's state in Marathon's JSON: apps, tasks, the queue, deployments.

use super::*;

impl Scheduler {
    /// An app in Marathon's shape: its definition with its `versionInfo`, and the parts
    /// `embed` asks for (`counts`, `deployments`, `tasks`, each after any of Marathon's
    /// prefixes `app.`, `apps.`, `group.apps.`). Marathon's list embeds counts and deployments
    /// always, one app also its tasks, a queue item and a group's apps nothing unless asked.
    /// `lastTaskFailure` is never embedded: drover keeps no failures, and Marathon leaves the
    /// key out when there is none.
    pub fn app_json(&self, app: &AppDefinition, embed: &BTreeSet<String>) -> Value {
        let id = &app.id;
        let wants = |part: &str| {
            embed.iter().any(|e| {
                ["app.", "apps.", "group.apps."]
                    .iter()
                    .any(|prefix| e.strip_prefix(prefix) == Some(part))
            })
        };
        let mut v = app.to_marathon_json(app.version.as_deref().unwrap_or(""));
        let (config, scaling) = self
            .app_meta
            .get(id)
            .cloned()
            .unwrap_or_else(|| (String::new(), String::new()));
        v["versionInfo"] = json!({"lastConfigChangeAt": config, "lastScalingAt": scaling});
        let instances = self.instances_of(id);
        if wants("counts") {
            let count = |f: fn(&Instance) -> bool| instances.iter().filter(|i| f(i)).count();
            v["tasksRunning"] = json!(count(Instance::is_running));
            v["tasksStaged"] = json!(count(|i| matches!(
                i.state,
                TaskState::TaskStaging | TaskState::TaskStarting
            )));
            v["tasksHealthy"] = json!(count(|i| i.healthy == Some(true)));
            v["tasksUnhealthy"] = json!(count(|i| i.healthy == Some(false)));
        }
        // Marathon's `tasks` embed brings the deployments too.
        if wants("deployments") || wants("tasks") {
            v["deployments"] = json!(self
                .deployments
                .values()
                .filter(|d| d.plan.affected_apps.contains(id))
                .map(|d| json!({"id": d.plan.id}))
                .collect::<Vec<_>>());
        }
        if wants("tasks") {
            v["tasks"] = json!(instances
                .iter()
                .map(|i| self.task_json(i))
                .collect::<Vec<_>>());
        }
        v
    }

    /// A deployment as Marathon's events carry it: its steps and the root group before
    /// (`original`) and after (`target`) it. drover keeps only the affected apps as they were,
    /// so `original` is the present root with those apps put back; `target` is the present root.
    pub(super) fn plan_event_json(&self, d: &Deployment) -> Value {
        let mut original = self.root.clone();
        for id in &d.plan.affected_apps {
            original = match d.original.get(id) {
                Some(app) => {
                    let version = app.version.as_deref().unwrap_or(&d.plan.version);
                    original.put_app(app.clone(), version).unwrap_or(original)
                }
                None => original.remove_app(id, &d.plan.version),
            };
        }
        json!({
            "id": d.plan.id,
            "version": d.plan.version,
            "original": original.to_marathon_json(),
            "target": self.root.to_marathon_json(),
            "steps": d.plan.steps_json(),
        })
    }

    /// A task in Marathon's shape, with its health check results.
    pub fn task_json(&self, i: &Instance) -> Value {
        let mut v = i.to_marathon_json();
        if let Some(states) = self.health.get(&i.task_id) {
            v["healthCheckResults"] = json!(states
                .iter()
                .map(|s| s.to_json(format_version))
                .collect::<Vec<_>>());
        }
        v
    }

    /// `GET /v2/queue`.
    pub fn queue_json(&self, now_ms: u64) -> Value {
        let mut out = Vec::new();
        for (id, count) in &self.queue {
            let Some(app) = self.root.app(id) else {
                continue;
            };
            let backoff = self.backoff.get(id).cloned().unwrap_or_default();
            let left = backoff.until_ms.saturating_sub(now_ms);
            let stats = self.offer_stats.get(id).cloned().unwrap_or_default();
            let reasons: Vec<Value> = REASONS
                .iter()
                .map(|r| json!({"reason": r, "declined": stats.reasons.get(r).copied().unwrap_or(0), "processed": stats.processed}))
                .collect();
            out.push(json!({
                "count": count,
                "delay": {"timeLeftSeconds": left / 1000, "overdue": left == 0},
                "since": app.version,
                "app": self.app_json(app, &BTreeSet::new()),
                "processedOffersSummary": {
                    "processedOffersCount": stats.processed,
                    "unusedOffersCount": stats.unused,
                    "lastUnusedOfferAt": stats.last_unused_at.map(format_version),
                    "lastUsedOfferAt": stats.last_used_at.map(format_version),
                    "rejectSummaryLastOffers": reasons,
                    "rejectSummaryLaunchAttempt": reasons,
                },
            }));
        }
        json!({"queue": out})
    }

    /// `DELETE /v2/queue/{app}/delay`.
    pub fn reset_delay(&mut self, id: &PathId) -> bool {
        self.backoff.remove(id).is_some() || self.queue.contains_key(id)
    }

    /// `GET /v2/deployments`.
    pub fn deployments_json(&self) -> Value {
        json!(self
            .deployments
            .values()
            .map(|d| d.plan.to_marathon_json(d.step + 1))
            .collect::<Vec<_>>())
    }
}

/// A group as stored: its own fields (its apps and subgroups are stored apart).
pub(super) fn group_json(g: &Group) -> Value {
    json!({
        "id": g.id.to_string(),
        "dependencies": g.dependencies.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "version": g.version,
    })
}

pub fn stored_app_json(app: &AppDefinition, config: &str, scaling: &str) -> Value {
    json!({"app": app.to_storage_json(), "lastConfigChangeAt": config, "lastScalingAt": scaling})
}
