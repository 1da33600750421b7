//! The scheduler's instances: kills, status updates, health results, launch expiry and
//! reconciliation.

use super::*;

impl Scheduler {
    pub fn instances_of(&self, app: &PathId) -> Vec<&Instance> {
        let name = app.to_string();
        self.instances.values().filter(|i| i.app == name).collect()
    }

    pub(super) fn active(&self, app: &PathId) -> Vec<&Instance> {
        self.instances_of(app)
            .into_iter()
            .filter(|i| i.is_active())
            .collect()
    }

    pub(super) fn has_health_checks(&self, app: &PathId) -> bool {
        self.root
            .app(app)
            .is_some_and(|a| !a.health_checks.is_empty())
    }

    /// Running, of the current configuration, and healthy when the app has health checks.
    pub(super) fn is_ready(&self, i: &Instance, config: &str, checks: bool) -> bool {
        i.is_running()
            && !i.kill_requested
            && i.config == config
            && (!checks || i.healthy == Some(true))
    }

    /// Asks the master to kill an instance (once; the launch timeout and reconciliation
    /// repeat it when needed).
    pub fn kill(&mut self, task_id: &str, fx: &mut Effects) {
        let Some(i) = self.instances.get_mut(task_id) else {
            return;
        };
        if i.state.is_terminal() {
            return;
        }
        i.kill_requested = true;
        self.kills_sent.remove(task_id);
        let agent = i.agent_id.clone();
        fx.store.push(instance_put(i));
        self.counters.killed += 1;
        self.env
            .emit(Event::new("kill").with("app", &i.app).with("task", task_id));
        fx.calls.push(kill_call(task_id, &agent));
    }

    /// A status update (or reconciliation answer) for a task.
    pub fn update(&mut self, status: &v1::TaskStatus, now_ms: u64, fx: &mut Effects) {
        self.counters.updates += 1;
        let task = status.task_id.value.clone();
        self.unreconciled.remove(&task);
        let unix = self.env.unix_ms();
        let Some(i) = self.instances.get_mut(&task) else {
            // Not ours (or long forgotten): a live one is killed, Marathon's "unknown task".
            if !status.state.is_terminal() {
                let agent = status
                    .agent_id
                    .as_ref()
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
                self.env
                    .emit(Event::new("kill_unknown").with("task", &task));
                fx.calls.push(kill_call(&task, &agent));
            }
            return;
        };
        let changed =
            i.state != status.state || (status.healthy.is_some() && i.healthy != status.healthy);
        if status.state == TaskState::TaskRunning && i.started_at.is_none() {
            i.started_at = Some(unix);
            self.start_health_checks(&task, now_ms);
        }
        let Some(i) = self.instances.get_mut(&task) else {
            return;
        };
        if let Some(h) = status.healthy {
            i.healthy = Some(h);
        }
        let addresses = status
            .container_status
            .as_ref()
            .map(|c| c.addresses())
            .unwrap_or_default();
        if !addresses.is_empty() {
            i.ip_addresses = addresses;
        }
        let app = PathId::parse(&i.app);
        i.state = status.state;
        if i.kill_requested && !status.state.is_terminal() && status.state != TaskState::TaskUnknown
        {
            // Still alive although its kill was asked for: that kill was lost (say, with a master
            // that went down), so ask again, as Marathon's kill service retries.
            fx.calls.push(kill_call(&task, &i.agent_id));
        }
        if changed {
            self.env.emit(
                Event::new("task")
                    .with("app", &i.app)
                    .with("task", &task)
                    .with("state", drover_master::core::state_name(status.state)),
            );
            fx.event(
                "status_update_event",
                json!({
                    "slaveId": i.agent_id, "taskId": task, "taskStatus": drover_master::core::state_name(status.state),
                    "message": status.message.clone().unwrap_or_default(), "appId": i.app, "host": i.host,
                    "ports": i.ports, "ipAddresses": i.to_marathon_json()["ipAddresses"], "version": i.version,
                }),
                unix,
            );
        }
        // UNKNOWN: the master has never heard of the task (a launch lost with its framework or
        // its master); it is not coming back, and it is expunged like an ended one.
        if status.state.is_terminal() || status.state == TaskState::TaskUnknown {
            let failed = matches!(status.state, TaskState::TaskFailed | TaskState::TaskError)
                && !i.kill_requested;
            self.instances.remove(&task);
            self.health.remove(&task);
            fx.store.push(StoreOp::Delete {
                key: format!("{}/{task}", keys::INSTANCES),
            });
            if failed {
                if let Some(app_def) = self.root.app(&app) {
                    let b = self.backoff.entry(app.clone()).or_default();
                    b.failures += 1;
                    b.until_ms = now_ms + plan::launch_delay_ms(app_def, b.failures);
                }
            }
        } else if changed {
            fx.store.push(instance_put(i));
        }
    }

    /// Health probes due now (each marked as in flight).
    pub fn due_probes(&mut self, now_ms: u64) -> Vec<Probe> {
        let mut out = Vec::new();
        for (task, states) in self.health.iter_mut() {
            let Some(i) = self.instances.get(task) else {
                continue;
            };
            let Some(app) = self.root.app(&PathId::parse(&i.app)) else {
                continue;
            };
            for state in states.iter_mut() {
                if !state.due(now_ms) {
                    continue;
                }
                let Some(check) = app.health_checks.get(state.check_index) else {
                    continue;
                };
                state.begin(now_ms);
                out.push(Probe {
                    task_id: task.clone(),
                    index: state.check_index,
                    check: check.clone(),
                    host: if i.address.is_empty() {
                        i.host.clone()
                    } else {
                        i.address.clone()
                    },
                    ports: i.ports.clone(),
                });
            }
        }
        out
    }

    /// The answer of a health probe: the instance's health, and a kill when it failed too
    /// often (Marathon's `maxConsecutiveFailures`).
    pub fn health_result(
        &mut self,
        task: &str,
        index: usize,
        result: Result<(), String>,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let Some(states) = self.health.get_mut(task) else {
            return;
        };
        let Some(state) = states.iter_mut().find(|s| s.check_index == index) else {
            return;
        };
        let verdict = state.record(now_ms, result);
        let healthy = crate::health::task_health(states);
        let Some(i) = self.instances.get_mut(task) else {
            return;
        };
        if i.healthy != healthy {
            i.healthy = healthy;
            self.env.emit(
                Event::new("health")
                    .with("task", task)
                    .with("alive", healthy.unwrap_or(false)),
            );
            fx.event(
                "health_status_changed_event",
                json!({"appId": i.app, "instanceId": task, "version": i.version, "alive": healthy.unwrap_or(false)}),
                self.env.unix_ms(),
            );
        }
        if verdict == Verdict::Kill && !i.kill_requested {
            self.env.emit(Event::new("health_kill").with("task", task));
            fx.event(
                "unhealthy_instance_kill_event",
                json!({"appId": i.app, "taskId": task, "instanceId": task, "version": i.version, "reason": "health checks failed", "host": i.host, "slaveId": i.agent_id}),
                self.env.unix_ms(),
            );
            self.kill(task, fx);
        }
    }

    /// Sends again the kills that no terminal state answered within `kill_retry_ms` (a kill is
    /// first seen here at the tick after it was sent; a leader's loaded kills are also sent again
    /// when reconciliation reports their tasks alive).
    pub fn retry_kills(&mut self, now_ms: u64, fx: &mut Effects) {
        let instances = &self.instances;
        self.kills_sent.retain(|task, _| {
            instances
                .get(task)
                .is_some_and(|i| i.kill_requested && !i.state.is_terminal())
        });
        for i in instances.values() {
            if !i.kill_requested || i.state.is_terminal() {
                continue;
            }
            let sent = self.kills_sent.entry(i.task_id.clone()).or_insert(now_ms);
            if now_ms >= *sent + self.tuning.kill_retry_ms {
                *sent = now_ms;
                self.env.emit(
                    Event::new("kill_retry")
                        .with("app", &i.app)
                        .with("task", &i.task_id),
                );
                fx.calls.push(kill_call(&i.task_id, &i.agent_id));
            }
        }
    }

    /// Kills tasks stuck before RUNNING beyond the launch timeout.
    pub fn expire_launches(&mut self, now_ms: u64, fx: &mut Effects) {
        let stuck: Vec<String> = self
            .instances
            .values()
            .filter(|i| {
                matches!(i.state, TaskState::TaskStaging | TaskState::TaskStarting)
                    && now_ms >= i.launched_ms + self.tuning.launch_timeout_ms
            })
            .map(|i| i.task_id.clone())
            .collect();
        for task in stuck {
            if let Some(i) = self.instances.get_mut(&task) {
                i.launched_ms = now_ms;
            }
            self.env
                .emit(Event::new("launch_timeout").with("task", &task));
            self.kill(&task, fx);
        }
    }

    /// Explicit reconciliation of every known task, then the master's implicit answer.
    /// Starts a reconciliation: every known task is asked for by id, and the ones the master
    /// does not answer (it says nothing of an agent still recovering) are asked for again with a
    /// back-off (5 s doubling to 60 s) until each has an answer, Mesos' reconciliation algorithm.
    pub fn reconcile_calls(&mut self, now_ms: u64) -> Vec<Call> {
        self.unreconciled = self.instances.keys().cloned().collect();
        self.reconcile_retry = (now_ms + RECONCILE_RETRY_MS, RECONCILE_RETRY_MS);
        vec![self.explicit_reconcile(), bare(CallType::Reconcile)]
    }

    pub(super) fn explicit_reconcile(&self) -> Call {
        let mut explicit = bare(CallType::Reconcile);
        explicit.reconcile = Some(v1::Reconcile {
            tasks: self
                .unreconciled
                .iter()
                .filter_map(|task| self.instances.get(task))
                .map(|i| v1::ReconcileTask {
                    task_id: Id::new(i.task_id.clone()),
                    agent_id: (!i.agent_id.is_empty()).then(|| Id::new(i.agent_id.clone())),
                })
                .collect(),
        });
        explicit
    }

    /// Asks again for the tasks no reconciliation answer has come for yet.
    pub fn retry_reconciliation(&mut self, now_ms: u64, fx: &mut Effects) {
        let instances = &self.instances;
        self.unreconciled
            .retain(|task| instances.contains_key(task));
        let (at, backoff) = self.reconcile_retry;
        if self.unreconciled.is_empty() || now_ms < at {
            return;
        }
        let backoff = (backoff * 2).min(RECONCILE_RETRY_MAX_MS);
        self.reconcile_retry = (now_ms + backoff, backoff);
        fx.calls.push(self.explicit_reconcile());
    }
}
