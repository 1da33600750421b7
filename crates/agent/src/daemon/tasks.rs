//! Tasks: launching, the containerizers' events, health checks, kills and acknowledgements.

use super::*;

impl Core {
    pub(super) async fn on_task_event(&mut self, event: TaskEvent) -> Result<(), AgentError> {
        match event {
            TaskEvent::Started { task_id, handle } => {
                let Some(entry) = self.tasks.get_mut(&task_id) else {
                    return Ok(());
                };
                if entry.checkpoint.state.is_terminal() {
                    return Ok(());
                }
                if entry.checkpoint.handle.as_ref() != Some(&handle) {
                    entry.checkpoint.handle = Some(handle);
                    self.persist_task(&task_id);
                }
                let state = self.tasks.get(&task_id).map(|e| e.checkpoint.state);
                if state != Some(TaskState::TaskRunning) {
                    self.status(&task_id, TaskState::TaskRunning, None, None)
                        .await?;
                }
                self.start_health_checks(&task_id);
            }
            TaskEvent::Health { task_id, result } => self.on_health(&task_id, result).await?,
            TaskEvent::Ended {
                task_id,
                exit,
                reason,
            } => {
                let Some(entry) = self.tasks.get_mut(&task_id) else {
                    return Ok(());
                };
                if entry.checkpoint.state.is_terminal() {
                    return Ok(());
                }
                entry.kill = None;
                entry.health = None;
                if let Some(checker) = entry.checker.take() {
                    checker.abort();
                }
                let healthy = entry.killed_unhealthy.then_some(false);
                let framework_id = entry.checkpoint.framework_id.clone();
                let message = entry.kill_message.take().unwrap_or(exit.message);
                self.status_with_health(
                    &task_id,
                    &framework_id,
                    exit.state,
                    Some(message),
                    reason,
                    healthy,
                )
                .await?;
            }
        }
        Ok(())
    }

    // ---- health checks ----

    /// Milliseconds since the agent started, on tokio's (simulated or real) monotonic clock.
    pub(super) fn monotonic_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts checking a task that has a health check, once it runs (again, after a recovery:
    /// a restarted agent starts its checks afresh, grace period included).
    pub(super) fn start_health_checks(&mut self, task_id: &str) {
        let Some(entry) = self.tasks.get(task_id) else {
            return;
        };
        let (Some(spec), Some(handle)) = (&entry.spec, &entry.checkpoint.handle) else {
            return;
        };
        let Some(check) = spec.health_check.clone() else {
            return;
        };
        if entry.checker.is_some() || entry.kill.is_none() || entry.checkpoint.state.is_terminal() {
            return;
        }
        let Some(containerizer) = self.containerizer_of(entry.checkpoint.containerizer) else {
            return;
        };
        let spec = spec.clone();
        let handle = handle.clone();
        let tracker = HealthTracker::new(&check, self.monotonic_ms());
        let env = self.env.clone();
        let host = self
            .config
            .address()
            .unwrap_or_else(|| self.config.hostname.clone());
        let events = self.events.clone();
        let id = task_id.to_string();
        let checker = drover_core::env::spawn_into(&mut self.runners, async move {
            tokio::time::sleep(check.delay).await;
            loop {
                let result = run_check(&env, &host, &check, &*containerizer, &spec, &handle).await;
                let event = TaskEvent::Health {
                    task_id: id.clone(),
                    result,
                };
                if events.send(event).is_err() {
                    return;
                }
                tokio::time::sleep(check.interval).await;
            }
        });
        if let Some(entry) = self.tasks.get_mut(task_id) {
            entry.health = Some(tracker);
            entry.checker = Some(checker);
        }
        self.emit(Event::new("health_checking").with("task", task_id));
    }

    /// A check's outcome: a change of health goes out as a TASK_RUNNING update with `healthy`;
    /// too many failures in a row kill the task.
    pub(super) async fn on_health(
        &mut self,
        task_id: &str,
        result: Result<(), String>,
    ) -> Result<(), AgentError> {
        let now = self.monotonic_ms();
        let Some(entry) = self.tasks.get_mut(task_id) else {
            return Ok(());
        };
        if entry.kill.is_none() || entry.checkpoint.state != TaskState::TaskRunning {
            return Ok(());
        }
        let Some(tracker) = entry.health.as_mut() else {
            return Ok(());
        };
        let Some(report) = tracker.record(now, result.is_ok()) else {
            return Ok(());
        };
        let failures = tracker.consecutive_failures();
        let framework_id = entry.checkpoint.framework_id.clone();
        let message = result
            .err()
            .map(|cause| format!("Health check failed: {cause}"));
        self.status_with_health(
            task_id,
            &framework_id,
            TaskState::TaskRunning,
            message.clone(),
            Some(HEALTH_REASON),
            Some(report.healthy),
        )
        .await?;
        if report.kill {
            if let Some(entry) = self.tasks.get_mut(task_id) {
                entry.killed_unhealthy = true;
                entry.kill_message = Some(format!(
                    "Task killed after {failures} consecutive failed health checks ({})",
                    message.as_deref().unwrap_or("failed")
                ));
            }
            self.emit(
                Event::new("task_unhealthy_kill")
                    .with("task", task_id)
                    .with("failures", failures),
            );
            self.kill_task(&framework_id, task_id).await?;
        }
        Ok(())
    }

    pub(super) async fn run_task(
        &mut self,
        framework_id: String,
        framework: Json,
        task: Json,
    ) -> Result<(), AgentError> {
        let Some(task_id) = task_id_of(&task).map(str::to_string) else {
            tracing::warn!(%framework_id, "RunTask without task_id.value: dropped");
            return Ok(());
        };
        // A task that ended and was acknowledged may be launched again under its id (another
        // framework may use the same id); one that is still here may not.
        if self.tasks.contains_key(&task_id) {
            tracing::warn!(task = %task_id, "RunTask for a task this agent already has: ignored");
            return Ok(());
        }
        let mut spec = parse_task(&task, &framework_id, &self.config.hostname);
        let containerizer = spec
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|spec| self.containerizer_for(spec));
        let kind = match &containerizer {
            Ok(c) => c.kind(),
            Err(_) => self.containerizers[0].kind(),
        };
        if let (Ok(spec), Ok(_)) = (&mut spec, &containerizer) {
            spec.sandbox = self.sandbox_of(kind, &task_id);
        }
        let checkpoint = TaskCheckpoint {
            task_id: task_id.clone(),
            framework_id: framework_id.clone(),
            framework,
            task,
            containerizer: kind,
            handle: None,
            state: TaskState::TaskStaging,
            launched_ms: self.env.unix_ms(),
        };
        self.tasks.insert(
            task_id.clone(),
            TaskEntry::new(checkpoint, spec.as_ref().ok().cloned()),
        );
        self.persist_task(&task_id);
        let (cpus, mem) = spec
            .as_ref()
            .map(|s| (s.cpus, s.mem_mb))
            .unwrap_or_default();
        self.emit(
            Event::new("task_launched")
                .with("task", &task_id)
                .with("framework", &framework_id)
                .with("cpus", cpus)
                .with("mem", mem),
        );
        match (spec, containerizer) {
            (Err(message), _) => {
                self.status(
                    &task_id,
                    TaskState::TaskError,
                    Some(message),
                    Some("REASON_TASK_INVALID"),
                )
                .await
            }
            (Ok(_), Err(message)) => {
                self.status(
                    &task_id,
                    TaskState::TaskFailed,
                    Some(message),
                    Some("REASON_CONTAINER_LAUNCH_FAILED"),
                )
                .await
            }
            (Ok(spec), Ok(containerizer)) => {
                let (kill, kill_rx) = oneshot::channel();
                if let Some(entry) = self.tasks.get_mut(&task_id) {
                    entry.kill = Some(kill);
                }
                let launch = containerizer.launch(&spec);
                self.launch(task_id, launch, kill_rx);
                Ok(())
            }
        }
    }

    pub(super) async fn kill_task(
        &mut self,
        framework_id: &str,
        task_id: &str,
    ) -> Result<(), AgentError> {
        match self.tasks.get_mut(task_id) {
            Some(entry) => {
                if let Some(checker) = entry.checker.take() {
                    checker.abort();
                }
                if let Some(kill) = entry.kill.take() {
                    let grace = entry
                        .spec
                        .as_ref()
                        .map_or(DEFAULT_KILL_GRACE, |s| s.kill_grace);
                    let _ = kill.send(grace);
                    self.emit(Event::new("task_killing").with("task", task_id));
                }
                // Else it is being killed already, or it ended: its update is on its way.
                Ok(())
            }
            None if self.completed.iter().any(|c| c.task_id == task_id) => Ok(()),
            None if self.manager.has_stream(task_id) => Ok(()),
            None => {
                // Mesos: killing a task the agent does not know reports it lost.
                self.status_for(
                    task_id,
                    framework_id,
                    TaskState::TaskLost,
                    Some("Task unknown to the agent".into()),
                    Some("REASON_TASK_UNKNOWN"),
                )
                .await
            }
        }
    }

    pub(super) async fn shutdown_framework(
        &mut self,
        framework_id: &str,
    ) -> Result<(), AgentError> {
        let tasks: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, e)| e.checkpoint.framework_id == framework_id)
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in tasks {
            self.kill_task(framework_id, &task_id).await?;
        }
        Ok(())
    }

    pub(super) async fn acknowledge(
        &mut self,
        task_id: &str,
        uuid: &str,
    ) -> Result<(), AgentError> {
        let next = match self.manager.acknowledge(task_id, uuid, self.env.unix_ms()) {
            Ok(next) => {
                tracing::debug!(task = task_id, uuid, "acknowledged");
                next
            }
            Err(e) => {
                tracing::debug!(error = %e, "acknowledgement ignored");
                return Ok(());
            }
        };
        self.persist_stream(task_id);
        // From here the update is never sent again (invariants read this).
        self.emit(
            Event::new("task_acked")
                .with("task", task_id)
                .with("uuid", uuid),
        );
        if !self.manager.has_stream(task_id) {
            if let Some(entry) = self.tasks.remove(task_id) {
                self.forget(&task_path(task_id));
                if let Some(handle) = &entry.checkpoint.handle {
                    if let Some(containerizer) =
                        self.containerizer_of(entry.checkpoint.containerizer)
                    {
                        drover_core::env::spawn_into(
                            &mut self.runners,
                            containerizer.cleanup(handle),
                        );
                    }
                }
                self.completed.push_back(Completed {
                    task_id: entry.checkpoint.task_id,
                    framework_id: entry.checkpoint.framework_id,
                    framework: entry.checkpoint.framework,
                    task: entry.checkpoint.task,
                    state: entry.checkpoint.state,
                    sandbox: entry.spec.and_then(|spec| spec.sandbox),
                });
                if self.completed.len() > MAX_COMPLETED {
                    self.completed.pop_front();
                }
            }
        }
        if let Some(next) = next {
            self.send_update(next).await;
        }
        Ok(())
    }
}
