//! Status updates: each made, checkpointed and sent through the status update manager.

use super::*;

impl Core {
    pub(super) fn uuid(&self) -> String {
        let mut bytes = [0u8; 16];
        self.env.rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Records a state change: into the task's stream (checkpointed and synced), into the task's
    /// checkpoint, then to the master if the stream had nothing in flight.
    pub(super) async fn status(
        &mut self,
        task_id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<&str>,
    ) -> Result<(), AgentError> {
        let framework_id = match self.tasks.get(task_id) {
            Some(entry) => entry.checkpoint.framework_id.clone(),
            None => String::new(),
        };
        self.status_for(task_id, &framework_id, state, message, reason)
            .await
    }

    pub(super) async fn status_for(
        &mut self,
        task_id: &str,
        framework_id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<&str>,
    ) -> Result<(), AgentError> {
        self.status_with_health(task_id, framework_id, state, message, reason, None)
            .await
    }

    /// [`Core::status_for`], with the task's health (Mesos' `TaskStatus.healthy`).
    pub(super) async fn status_with_health(
        &mut self,
        task_id: &str,
        framework_id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<&str>,
        healthy: Option<bool>,
    ) -> Result<(), AgentError> {
        let now = self.env.unix_ms();
        let uuid = self.uuid();
        if matches!(state, TaskState::TaskFailed | TaskState::TaskError) {
            // Why a task failed, where an operator reads the agent's log.
            tracing::info!(
                task = task_id,
                why = message.as_deref().unwrap_or(""),
                "task {}",
                state_name(state)
            );
        }
        let ip_addresses = self
            .tasks
            .get(task_id)
            .and_then(|e| e.checkpoint.handle.as_ref())
            .map(|h| h.ip_addresses().to_vec())
            .unwrap_or_default();
        // A container with an address of its own: the trace says where and by what name it is
        // reached (what the DNS invariants check answers against).
        let mut reached = Vec::new();
        if state == TaskState::TaskRunning && !ip_addresses.is_empty() {
            reached.push(("ip", ip_addresses.join(",")));
            if let Some(name) = self
                .tasks
                .get(task_id)
                .and_then(|e| crate::task::container_hostname(&e.checkpoint.task))
            {
                reached.push(("hostname", name));
            }
        }
        let update = StatusUpdate {
            task_id: task_id.to_string(),
            framework_id: framework_id.to_string(),
            uuid: uuid.clone(),
            state,
            message,
            reason: reason.map(str::to_string),
            timestamp_ms: now,
            healthy,
            ip_addresses,
        };
        let send = self.manager.update(update, now);
        tracing::debug!(
            task = task_id,
            ?state,
            goes_out = send.is_some(),
            "status update"
        );
        self.persist_stream(task_id);
        if let Some(entry) = self.tasks.get_mut(task_id) {
            entry.checkpoint.state = state;
            self.persist_task(task_id);
        }
        let mut event = Event::new("task_state")
            .with("task", task_id)
            .with("state", state_name(state))
            .with("uuid", uuid);
        if let Some(healthy) = healthy {
            event = event.with("healthy", healthy);
        }
        for (key, value) in reached {
            event = event.with(key, value);
        }
        self.emit(event);
        if let Some(update) = send {
            self.send_update(update).await;
        }
        Ok(())
    }
}
