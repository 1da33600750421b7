//! Agents: registration and re-registration (merging what they run with what the master
//! knows), status updates and their forwarding, pings and unreachability, the registry.

use super::*;

impl Master {
    /// An agent (re-)registers on connection `conn`. Returns what to answer (the daemon has
    /// made the registry write durable before this is called for a new agent: see
    /// [`Master::admit_id`]).
    pub fn agent_registered(
        &mut self,
        conn: u64,
        agent_id: &str,
        registration: &Registration,
        tx: mpsc::UnboundedSender<MasterMessage>,
        now_ms: u64,
    ) -> Result<(), String> {
        let resources: Resources = registration
            .resources
            .parse()
            .map_err(|e| format!("resources {:?}: {e}", registration.resources))?;
        let was_unreachable = self
            .agents
            .get(agent_id)
            .map(|a| !a.reachable)
            .unwrap_or_else(|| {
                self.registry
                    .get(agent_id)
                    .is_some_and(|e| e.state == "unreachable")
            });
        // A new connection replaces an old one; offers made on the old standing go.
        self.agent_lost_connection(agent_id);
        let _ = tx.send(MasterMessage::Registered {
            agent_id: agent_id.to_string(),
            master: self.info.id.clone(),
        });
        self.agents.insert(
            agent_id.to_string(),
            Agent {
                hostname: registration.hostname.clone(),
                address: registration
                    .address
                    .clone()
                    .unwrap_or_else(|| registration.hostname.clone()),
                port: registration.port,
                resources: resources.clone(),
                attributes: registration.attributes.clone(),
                conn: Some((conn, tx)),
                reachable: true,
                awaiting_pong: false,
                missed_pings: 0,
                ping_seq: 0,
                registered_at_ms: now_ms,
            },
        );
        if self.registry.get(agent_id).map(|e| e.state.as_str()) != Some("admitted") {
            let entry = RegistryEntry {
                hostname: registration.hostname.clone(),
                state: "admitted".into(),
            };
            self.registry.insert(agent_id.to_string(), entry.clone());
            self.registry_writes.push(RegistryWrite {
                agent_id: agent_id.to_string(),
                entry,
            });
        }
        self.allocator.add_agent(agent_id, resources);
        self.reconcile_agent_tasks(agent_id, &registration.tasks, was_unreachable);
        // After its tasks, so that a follower never sees the agent back without them.
        self.operator_agent_added(agent_id);
        self.env.emit(
            NodeEvent::new("agent_registered")
                .with("agent", &registration.hostname)
                .with("tasks", registration.tasks.len()),
        );
        self.check_recovered(now_ms);
        self.allocate_soon = true;
        Ok(())
    }

    /// The id for a registering agent: its own when it has one, else a new one.
    pub fn admit_id(&mut self, registration: &Registration) -> String {
        match &registration.agent_id {
            Some(id) => id.clone(),
            None => self.fresh_id("S"),
        }
    }

    /// Merges what a (re-)registering agent runs with what the master knows.
    pub(super) fn reconcile_agent_tasks(
        &mut self,
        agent_id: &str,
        reports: &[TaskReport],
        was_unreachable: bool,
    ) {
        let reported: BTreeSet<(String, String)> = reports
            .iter()
            .filter_map(|r| {
                let task_id = r.task.get("task_id")?.get("value")?.as_str()?;
                Some((r.framework_id.clone(), task_id.to_string()))
            })
            .collect();
        // Tasks the master placed on this agent that the agent no longer has were lost.
        let missing: Vec<(String, String)> = self
            .agent_tasks
            .get(agent_id)
            .into_iter()
            .flatten()
            .filter(|key| {
                self.tasks.get(*key).is_some_and(|t| {
                    t.agent_id == agent_id && !t.state.is_terminal() && !reported.contains(*key)
                })
            })
            .cloned()
            .collect();
        for key in missing {
            let state = self.lost_state(&key.0, TaskState::TaskGone);
            self.master_update(
                &key,
                state,
                "REASON_AGENT_RESTARTED",
                "Task was not found on the re-registered agent",
            );
        }
        for report in reports {
            let Ok(task) = serde_json::from_value::<v1::TaskInfo>(report.task.clone()) else {
                continue;
            };
            let key = (report.framework_id.clone(), task.task_id.value.clone());
            if !self.frameworks.contains_key(&report.framework_id) {
                let info: FrameworkInfo =
                    serde_json::from_value(report.framework.clone()).unwrap_or_default();
                // Its failover clock starts once agents have had their time to come back (a
                // framework with the protobuf default timeout of 0 would be gone at once).
                let since = self.elected_ms + self.tuning.agent_reregister_timeout_ms;
                self.add_framework(&report.framework_id, info, None, Some(since));
            }
            let resources = v1::from_mesos(&task.resources).unwrap_or_default();
            let known_state = self.tasks.get(&key).map(|t| t.state);
            if known_state.is_none() {
                self.insert_task(
                    key.clone(),
                    Task {
                        framework_id: report.framework_id.clone(),
                        agent_id: agent_id.to_string(),
                        name: task.name.clone(),
                        state: report.state,
                        resources: resources.clone(),
                        info: Arc::new(report.task.clone()),
                        in_flight: None,
                        acked: BTreeSet::new(),
                        // What the agent last said beyond the state: its container's addresses.
                        last_status: (!report.ip_addresses.is_empty()).then(|| TaskStatus {
                            task_id: Id::new(&key.1),
                            state: report.state,
                            message: None,
                            source: Some("SOURCE_AGENT".into()),
                            reason: None,
                            agent_id: Some(Id::new(agent_id)),
                            timestamp: None,
                            uuid: None,
                            healthy: None,
                            container_status: v1::ContainerStatus::with_addresses(
                                &report.ip_addresses,
                            ),
                        }),
                        first_running: None,
                        counted: false,
                    },
                );
                self.operator_task_added(&key);
            } else if known_state != Some(report.state) {
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.state = report.state;
                }
                self.emit_task_update(&key.1, report.state);
                if let Some(status) = self.master_status(&key, "REASON_AGENT_REREGISTERED") {
                    self.operator_task_updated(&key, &status);
                }
            }
            if !report.state.is_terminal() {
                self.allocator
                    .add_used(&report.framework_id, agent_id, &resources);
                if let Some(t) = self.tasks.get_mut(&key) {
                    t.counted = true;
                }
            }
            let framework_gone = self
                .frameworks
                .get(&report.framework_id)
                .is_none_or(|f| f.completed);
            if framework_gone && !report.state.is_terminal() {
                self.send_to_agent(
                    agent_id,
                    MasterMessage::KillTask {
                        framework_id: report.framework_id.clone(),
                        task_id: key.1.clone(),
                    },
                );
                continue;
            }
            if was_unreachable && !report.state.is_terminal() {
                if self.partition_aware(&report.framework_id) {
                    // Tell the framework its task is back (it was told UNREACHABLE).
                    self.tell_state(&key, "REASON_AGENT_REREGISTERED");
                } else {
                    // Mesos kills tasks of non-partition-aware frameworks that were reported
                    // LOST: the framework has replaced them already.
                    self.send_to_agent(
                        agent_id,
                        MasterMessage::KillTask {
                            framework_id: report.framework_id.clone(),
                            task_id: key.1.clone(),
                        },
                    );
                }
            }
        }
    }

    pub(super) fn check_recovered(&mut self, now_ms: u64) {
        let Some(until) = self.recovering_until_ms else {
            return;
        };
        let known = self
            .registry
            .iter()
            .filter(|(_, e)| e.state == "admitted")
            .count();
        let back = self
            .registry
            .iter()
            .filter(|(id, e)| {
                e.state == "admitted" && self.agents.get(*id).is_some_and(|a| a.conn.is_some())
            })
            .count();
        if now_ms >= until || back * 10 >= known * 8 {
            self.recovering_until_ms = None;
            self.env.emit(
                NodeEvent::new("master_recovered")
                    .with("agents", back)
                    .with("known", known),
            );
            // Agents that did not come back within the timeout are unreachable.
            if now_ms >= until {
                let absent: Vec<String> = self
                    .registry
                    .iter()
                    .filter(|(id, e)| e.state == "admitted" && !self.agents.contains_key(*id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in absent {
                    self.mark_registry(&id, "unreachable");
                    self.operator_agent_removed(&id);
                }
            }
        }
    }

    pub(super) fn mark_registry(&mut self, agent_id: &str, state: &str) {
        let Some(entry) = self.registry.get_mut(agent_id) else {
            return;
        };
        if entry.state != state {
            entry.state = state.to_string();
            self.registry_writes.push(RegistryWrite {
                agent_id: agent_id.to_string(),
                entry: entry.clone(),
            });
        }
    }

    /// The agent's connection `conn` closed.
    pub fn agent_closed(&mut self, conn: u64) {
        let id = self
            .agents
            .iter()
            .find(|(_, a)| a.conn.as_ref().is_some_and(|(c, _)| *c == conn))
            .map(|(id, _)| id.clone());
        if let Some(id) = id {
            self.agent_lost_connection(&id);
            if let Some(agent) = self.agents.get_mut(&id) {
                agent.conn = None;
            }
            self.env
                .emit(NodeEvent::new("agent_disconnected").with("agent", self.hostname_of(&id)));
        }
    }

    pub(super) fn hostname_of(&self, agent_id: &str) -> String {
        self.agents
            .get(agent_id)
            .map(|a| a.hostname.clone())
            .unwrap_or_else(|| agent_id.to_string())
    }

    /// Offers on the agent are rescinded and it is offered no more until it is back.
    pub(super) fn agent_lost_connection(&mut self, agent_id: &str) {
        self.rescind_where(|o| o.agent_id == agent_id);
        self.allocator.remove_agent(agent_id);
        for key in self.agent_tasks.get(agent_id).into_iter().flatten() {
            if let Some(task) = self.tasks.get_mut(key).filter(|t| t.agent_id == agent_id) {
                task.counted = false;
            }
        }
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.conn = None;
        }
    }

    /// An agent's message, from connection `conn`.
    pub fn agent_update(&mut self, conn: u64, update: StatusUpdate) {
        let Some(agent_id) = self.agent_of_conn(conn) else {
            return;
        };
        let key = (update.framework_id.clone(), update.task_id.clone());
        let Some(task) = self.tasks.get_mut(&key) else {
            // An update for a task the master does not know (it was never launched by this
            // master, and the agent's registration did not list it): acknowledge, so the
            // agent's stream moves on.
            self.send_to_agent(
                &agent_id,
                MasterMessage::Acknowledge {
                    task_id: update.task_id,
                    uuid: update.uuid,
                },
            );
            return;
        };
        if task.acked.contains(&update.uuid) {
            let ack = MasterMessage::Acknowledge {
                task_id: update.task_id,
                uuid: update.uuid,
            };
            self.send_to_agent(&agent_id, ack);
            return;
        }
        let was_terminal = task.state.is_terminal();
        task.state = update.state;
        let status = executor_status(&update, &agent_id);
        task.last_status = Some(TaskStatus {
            uuid: None,
            ..status.clone()
        });
        if update.state == TaskState::TaskRunning && task.first_running.is_none() {
            task.first_running = task.last_status.clone();
        }
        let same = task
            .in_flight
            .as_ref()
            .is_some_and(|(u, _)| u.uuid == update.uuid);
        let stream = self
            .frameworks
            .get(&key.0)
            .and_then(|f| f.stream.as_ref())
            .map(|(id, tx)| (id.clone(), tx.clone()));
        if !same {
            task.in_flight = Some((update.clone(), None));
        }
        if update.state.is_terminal() && !was_terminal {
            let resources = task.resources.clone();
            if std::mem::take(&mut task.counted) {
                self.allocator.recover(&key.0, &agent_id, &resources, None);
            }
            *self.counters.terminal.entry(update.state).or_default() += 1;
            self.allocate_soon = true;
        }
        self.operator_task_updated(&key, &status);
        // A framework that is gone acknowledges nothing: the master does, so the agent's stream
        // for the task ends.
        if self.frameworks.get(&key.0).is_none_or(|f| f.completed) {
            if let Some(task) = self.tasks.get_mut(&key) {
                task.in_flight = None;
                task.acked.insert(update.uuid.clone());
            }
            self.send_to_agent(
                &agent_id,
                MasterMessage::Acknowledge {
                    task_id: update.task_id.clone(),
                    uuid: update.uuid.clone(),
                },
            );
            self.emit_task_update(&update.task_id, update.state);
            return;
        }
        // Every retry is forwarded (at least once, as in Mesos): the framework's acknowledgement
        // of the first may have been lost. Frameworks tell repeats by the uuid (drover's client
        // delivers each update once).
        if let Some((stream_id, tx)) = stream {
            let _ = tx.try_send(record(&Event::update(status)));
            self.counters.updates_forwarded += 1;
            if let Some(task) = self.tasks.get_mut(&key) {
                if let Some((_, on)) = task.in_flight.as_mut() {
                    *on = Some(stream_id);
                }
            }
        }
        self.emit_task_update(&update.task_id, update.state);
    }

    /// A status the master makes itself, stamped now: of `task_id` on `agent_id`, in `state`
    /// for `reason`, with `message` when there is one to say.
    pub(super) fn master_made_status(
        &self,
        task_id: Id,
        agent_id: Option<Id>,
        state: TaskState,
        reason: &str,
        message: Option<&str>,
    ) -> TaskStatus {
        let now = self.env.unix_ms();
        TaskStatus::from_master_at(task_id, agent_id, state, reason, message, now)
    }

    pub(super) fn emit_task_update(&self, task_id: &str, state: TaskState) {
        self.env.emit(
            NodeEvent::new("task_update")
                .with("task", task_id)
                .with("state", state_name(state)),
        );
    }

    pub(super) fn agent_of_conn(&self, conn: u64) -> Option<String> {
        self.agents
            .iter()
            .find(|(_, a)| a.conn.as_ref().is_some_and(|(c, _)| *c == conn))
            .map(|(id, _)| id.clone())
    }

    pub fn agent_pong(&mut self, conn: u64, seq: u64) {
        if let Some(id) = self.agent_of_conn(conn) {
            if let Some(agent) = self.agents.get_mut(&id) {
                if agent.ping_seq == seq {
                    agent.awaiting_pong = false;
                    agent.missed_pings = 0;
                }
            }
        }
    }

    pub(super) fn send_to_agent(&self, agent_id: &str, message: MasterMessage) -> bool {
        match self.agents.get(agent_id).and_then(|a| a.conn.as_ref()) {
            Some((_, tx)) => tx.send(message).is_ok(),
            None => false,
        }
    }

    /// Pings every agent; an agent that missed `max_agent_ping_timeouts` pings in a row is
    /// unreachable: its tasks are reported UNREACHABLE (partition-aware frameworks) or LOST.
    pub fn ping_agents(&mut self) {
        let ids: Vec<String> = self.agents.keys().cloned().collect();
        for id in ids {
            let Some(agent) = self.agents.get_mut(&id) else {
                continue;
            };
            if !agent.reachable {
                continue;
            }
            if agent.awaiting_pong || agent.conn.is_none() {
                agent.missed_pings += 1;
            }
            if agent.missed_pings >= self.tuning.max_agent_ping_timeouts {
                self.mark_unreachable(&id);
                continue;
            }
            agent.ping_seq += 1;
            agent.awaiting_pong = true;
            let seq = agent.ping_seq;
            if let Some((_, tx)) = agent.conn.as_ref() {
                let _ = tx.send(MasterMessage::Ping { seq });
            }
        }
    }

    pub(super) fn mark_unreachable(&mut self, agent_id: &str) {
        self.agent_lost_connection(agent_id);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.reachable = false;
        }
        self.mark_registry(agent_id, "unreachable");
        self.operator_agent_removed(agent_id);
        self.env
            .emit(NodeEvent::new("agent_unreachable").with("agent", self.hostname_of(agent_id)));
        let keys: Vec<(String, String)> = self
            .agent_tasks
            .get(agent_id)
            .into_iter()
            .flatten()
            .filter(|key| {
                self.tasks
                    .get(*key)
                    .is_some_and(|t| t.agent_id == agent_id && !t.state.is_terminal())
            })
            .cloned()
            .collect();
        for key in keys {
            let state = self.lost_state(&key.0, TaskState::TaskUnreachable);
            self.master_update(
                &key,
                state,
                "REASON_AGENT_UNREACHABLE",
                "Agent is unreachable",
            );
        }
    }

    /// What a partition-aware framework is told (`aware`), or TASK_LOST for the others.
    pub(super) fn lost_state(&self, framework_id: &str, aware: TaskState) -> TaskState {
        if self.partition_aware(framework_id) {
            aware
        } else {
            TaskState::TaskLost
        }
    }

    pub(super) fn partition_aware(&self, framework_id: &str) -> bool {
        self.frameworks
            .get(framework_id)
            .is_some_and(Framework::partition_aware)
    }

    /// A status the master itself decides (no agent involved, nothing to acknowledge).
    pub(super) fn master_update(
        &mut self,
        key: &(String, String),
        state: TaskState,
        reason: &str,
        message: &str,
    ) {
        let now = self.env.unix_ms();
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let was_terminal = task.state.is_terminal();
        task.state = state;
        let agent_id = Some(Id::new(&task.agent_id));
        let status = TaskStatus::from_master_at(
            Id::new(&key.1),
            agent_id,
            state,
            reason,
            Some(message),
            now,
        );
        task.last_status = Some(status.clone());
        if state.is_terminal() && !was_terminal {
            let (agent, resources) = (task.agent_id.clone(), task.resources.clone());
            if std::mem::take(&mut task.counted) {
                self.allocator.recover(&key.0, &agent, &resources, None);
            }
            *self.counters.terminal.entry(state).or_default() += 1;
        }
        self.emit_task_update(&key.1, state);
        self.operator_task_updated(key, &status);
        self.send_event(&key.0, &Event::update(status));
    }

    /// Sends the task's latest state to its framework again (no uuid: nothing to acknowledge).
    pub(super) fn tell_state(&mut self, key: &(String, String), reason: &str) {
        if let Some(status) = self.master_status(key, reason) {
            self.send_event(&key.0, &Event::update(status));
        }
    }

    /// A status of the task's current state, from the master.
    pub(super) fn master_status(&self, key: &(String, String), reason: &str) -> Option<TaskStatus> {
        let task = self.tasks.get(key)?;
        let agent_id = Some(Id::new(&task.agent_id));
        Some(self.master_made_status(Id::new(&key.1), agent_id, task.state, reason, None))
    }

    pub(super) fn send_event(&self, framework_id: &str, event: &Event) -> bool {
        match self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.stream.as_ref())
        {
            Some((_, tx)) => tx.try_send(record(event)).is_ok(),
            None => false,
        }
    }
}
