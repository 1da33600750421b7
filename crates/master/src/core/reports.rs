//! The master's reports: `/master/state` and `/metrics/snapshot` in Mesos' shapes.

use super::*;

impl Master {
    /// `/master/state` in Mesos' shape.
    pub fn state_json(&self, now_unix_ms: u64) -> Json {
        let slaves: Vec<Json> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let used = self.used_on(id);
                json!({
                    "id": id,
                    "hostname": a.hostname,
                    "port": a.port,
                    "pid": format!("slave(1)@{}:{}", a.address, a.port),
                    "resources": resources_json(&a.resources),
                    "used_resources": resources_json(&used),
                    "attributes": attributes_map(&a.attributes),
                    "active": a.conn.is_some(),
                    "registered_time": a.registered_at_ms as f64 / 1000.0,
                })
            })
            .collect();
        let framework_json = |id: &str, f: &Framework| {
            let tasks: Vec<Json> = self
                .tasks
                .iter()
                .filter(|((fid, _), t)| fid == id && !t.state.is_terminal())
                .map(|((_, tid), t)| task_json(tid, t))
                .collect();
            let completed: Vec<Json> = self
                .tasks
                .iter()
                .filter(|((fid, _), t)| fid == id && t.state.is_terminal())
                .map(|((_, tid), t)| task_json(tid, t))
                .collect();
            let offers: Vec<Json> = self
                .offers
                .iter()
                .filter(|(_, o)| o.framework_id == id)
                .map(|(oid, o)| json!({"id": oid, "slave_id": o.agent_id, "resources": resources_json(&o.resources)}))
                .collect();
            json!({
                "id": id,
                "name": f.info.name,
                "user": f.info.user,
                "role": f.role,
                "hostname": f.info.hostname,
                "failover_timeout": f.info.failover_timeout.unwrap_or(0.0),
                "checkpoint": f.info.checkpoint.unwrap_or(false),
                "active": f.stream.is_some() && !f.suppressed,
                "connected": f.stream.is_some(),
                "capabilities": f.info.capabilities.iter().map(|c| c.kind.clone()).collect::<Vec<_>>(),
                "used_resources": resources_json(&self.allocator.allocated_to(id)),
                "tasks": tasks,
                "completed_tasks": completed,
                "offers": offers,
            })
        };
        let frameworks: Vec<Json> = self
            .frameworks
            .iter()
            .filter(|(_, f)| !f.completed)
            .map(|(id, f)| framework_json(id, f))
            .collect();
        let completed: Vec<Json> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.completed)
            .map(|(id, f)| framework_json(id, f))
            .collect();
        json!({
            "version": v1::MESOS_VERSION,
            "id": self.info.id,
            "pid": self.info.pid,
            "hostname": self.info.hostname,
            "leader": self.info.pid,
            "leader_info": self.info,
            "elected_time": now_unix_ms as f64 / 1000.0,
            "activated_slaves": self.agents.values().filter(|a| a.conn.is_some()).count(),
            "deactivated_slaves": self.agents.values().filter(|a| a.conn.is_none()).count(),
            "unreachable_slaves": self.agents.values().filter(|a| !a.reachable).count(),
            "slaves": slaves,
            "frameworks": frameworks,
            "completed_frameworks": completed,
            "unregistered_frameworks": [],
        })
    }

    pub(super) fn used_on(&self, agent_id: &str) -> Resources {
        let mut used = Resources::new();
        for t in self.tasks_on(agent_id) {
            if !t.state.is_terminal() {
                used.add(&t.resources);
            }
        }
        used
    }

    /// `/metrics/snapshot` keys of Mesos' master and allocator.
    pub fn metrics(&self, uptime_secs: f64) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_string(), v);
        };
        put("master/elected", 1.0);
        put("master/uptime_secs", uptime_secs);
        put(
            "master/slaves_active",
            self.agents.values().filter(|a| a.conn.is_some()).count() as f64,
        );
        put(
            "master/slaves_connected",
            self.agents.values().filter(|a| a.conn.is_some()).count() as f64,
        );
        put(
            "master/slaves_disconnected",
            self.agents.values().filter(|a| a.conn.is_none()).count() as f64,
        );
        put(
            "master/slaves_unreachable",
            self.agents.values().filter(|a| !a.reachable).count() as f64,
        );
        let active = self.frameworks.values().filter(|f| !f.completed);
        put(
            "master/frameworks_active",
            active.clone().filter(|f| f.stream.is_some()).count() as f64,
        );
        put(
            "master/frameworks_connected",
            active.clone().filter(|f| f.stream.is_some()).count() as f64,
        );
        put(
            "master/frameworks_disconnected",
            active.filter(|f| f.stream.is_none()).count() as f64,
        );
        put(
            "master/frameworks_inactive",
            self.frameworks.values().filter(|f| f.completed).count() as f64,
        );
        put("master/outstanding_offers", self.offers.len() as f64);
        for (state, key) in [
            (TaskState::TaskStaging, "master/tasks_staging"),
            (TaskState::TaskStarting, "master/tasks_starting"),
            (TaskState::TaskRunning, "master/tasks_running"),
            (TaskState::TaskKilling, "master/tasks_killing"),
            (TaskState::TaskUnreachable, "master/tasks_unreachable"),
        ] {
            put(
                key,
                self.tasks.values().filter(|t| t.state == state).count() as f64,
            );
        }
        for (state, key) in [
            (TaskState::TaskFinished, "master/tasks_finished"),
            (TaskState::TaskFailed, "master/tasks_failed"),
            (TaskState::TaskKilled, "master/tasks_killed"),
            (TaskState::TaskLost, "master/tasks_lost"),
            (TaskState::TaskError, "master/tasks_error"),
            (TaskState::TaskDropped, "master/tasks_dropped"),
            (TaskState::TaskGone, "master/tasks_gone"),
        ] {
            put(
                key,
                self.counters.terminal.get(&state).copied().unwrap_or(0) as f64,
            );
        }
        let mut total = Resources::new();
        let mut used = Resources::new();
        for (id, a) in &self.agents {
            if a.conn.is_some() {
                total.add(&a.resources);
                used.add(&self.used_on(id));
            }
        }
        for name in ["cpus", "mem", "disk", "gpus"] {
            let t = total.scalar(name).as_f64();
            let u = used.scalar(name).as_f64();
            put(&format!("master/{name}_total"), t);
            put(&format!("master/{name}_used"), u);
            put(
                &format!("master/{name}_percent"),
                if t > 0.0 { u / t } else { 0.0 },
            );
        }
        put(
            "master/messages_status_update",
            self.counters.updates_forwarded as f64,
        );
        put("master/offers_sent", self.counters.offers_sent as f64);
        put(
            "master/offers_declined",
            self.counters.offers_declined as f64,
        );
        put(
            "master/offers_rescinded",
            self.counters.offers_rescinded as f64,
        );
        put("master/tasks_launched", self.counters.tasks_launched as f64);
        put("master/invalid_calls", self.counters.invalid_calls as f64);
        put(
            "allocator/mesos/allocation_runs",
            self.counters.allocation_runs as f64,
        );
        put(
            "allocator/mesos/allocation_run_ms",
            self.counters.allocation_run_ms_last,
        );
        put(
            "allocator/mesos/allocation_run_ms/count",
            self.counters.allocation_runs as f64,
        );
        put(
            "allocator/mesos/allocation_run_ms/mean",
            if self.counters.allocation_runs > 0 {
                self.counters.allocation_run_ms_total / self.counters.allocation_runs as f64
            } else {
                0.0
            },
        );
        m
    }
}

/// One entry of a task's `statuses` in `/master/state` (`healthy` only when the task is checked).
pub(super) fn status_json(s: &TaskStatus) -> Json {
    let mut out = json!({"state": state_name(s.state), "timestamp": s.timestamp});
    if let Some(healthy) = s.healthy {
        out["healthy"] = json!(healthy);
    }
    if let Some(container) = &s.container_status {
        out["container_status"] = json!(container);
    }
    out
}

pub(super) fn task_json(task_id: &str, t: &Task) -> Json {
    json!({
        "id": task_id,
        "name": t.name,
        "framework_id": t.framework_id,
        "slave_id": t.agent_id,
        "state": state_name(t.state),
        "resources": resources_json(&t.resources),
        // The first TASK_RUNNING (when it started) and the latest, of Mesos' whole history.
        "statuses": t
            .first_running
            .iter()
            .filter(|first| t.last_status.as_ref() != Some(*first))
            .chain(t.last_status.iter())
            .map(status_json)
            .collect::<Vec<_>>(),
        "container": t.info.get("container").cloned().unwrap_or(Json::Null),
    })
}

/// `{"cpus": 4.0, "mem": 8192.0, "ports": "[31000-32000]"}`, as Mesos' state endpoints show.
pub fn resources_json(resources: &Resources) -> Json {
    let mut out = serde_json::Map::new();
    for name in ["cpus", "mem", "disk", "gpus"] {
        out.insert(name.into(), json!(resources.scalar(name).as_f64()));
    }
    let ports = resources.ranges("ports");
    if !ports.is_empty() {
        let text: Vec<String> = ports.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        out.insert("ports".into(), json!(format!("[{}]", text.join(", "))));
    }
    Json::Object(out)
}

/// `rack:r1;zone:a` → `{"rack": "r1", "zone": "a"}`.
pub(super) fn attributes_map(text: &str) -> Json {
    let mut out = serde_json::Map::new();
    for item in text.split(';').filter(|s| !s.trim().is_empty()) {
        if let Some((k, v)) = item.split_once(':') {
            out.insert(k.trim().to_string(), json!(v.trim()));
        }
    }
    Json::Object(out)
}

/// Attributes as Mesos' `Attribute` messages (TEXT, or SCALAR when numeric).
pub(super) fn attributes_json(text: &str) -> Vec<Json> {
    text.split(';')
        .filter_map(|item| item.split_once(':'))
        .map(|(k, v)| {
            let (k, v) = (k.trim(), v.trim());
            match v.parse::<f64>() {
                Ok(n) => json!({"name": k, "type": "SCALAR", "scalar": {"value": n}}),
                Err(_) => json!({"name": k, "type": "TEXT", "text": {"value": v}}),
            }
        })
        .collect()
}
