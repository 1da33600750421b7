//! Frameworks: subscription and failover, the v1 calls (accept, decline, kill, acknowledge,
//! reconcile, revive, suppress), and what the master says of tasks by itself.

use super::*;

impl Master {
    pub(super) fn add_framework(
        &mut self,
        id: &str,
        mut info: FrameworkInfo,
        stream: Option<(String, StreamSender)>,
        disconnected_at_ms: Option<u64>,
    ) {
        info.id = Some(Id::new(id));
        let role = info.effective_role();
        self.allocator.add_framework(id, &role);
        if stream.is_none() {
            self.allocator.deactivate(id);
        }
        self.frameworks.insert(
            id.to_string(),
            Framework {
                info,
                role,
                stream,
                disconnected_at_ms,
                suppressed: false,
                completed: false,
            },
        );
        self.operator_framework_added(id);
    }

    /// SUBSCRIBE: a new framework, or one coming back (after its own failover or the master's).
    /// Returns the framework id and the stream id; the stream starts with SUBSCRIBED.
    pub fn subscribe(
        &mut self,
        call: &Call,
        tx: StreamSender,
        now_ms: u64,
    ) -> Result<(String, String), ApiError> {
        let Some(subscribe) = call.subscribe.as_ref() else {
            return Err(ApiError::new(400, "Expecting 'subscribe' to be present"));
        };
        let mut info = subscribe.framework_info.clone();
        let requested = info.id.as_ref().map(|i| i.value.clone());
        if let (Some(a), Some(b)) = (&requested, &call.framework_id) {
            if a != &b.value {
                return Err(ApiError::new(
                    400,
                    "'framework_id' differs from 'subscribe.framework_info.id'",
                ));
            }
        }
        let stream_id = self.random_hex();
        let framework_id = match requested {
            Some(id) => {
                if self.frameworks.get(&id).is_some_and(|f| f.completed) {
                    return Err(ApiError::new(
                        403,
                        format!("Framework {id} has been removed"),
                    ));
                }
                // As Mesos: a framework's principal does not change over a failover, not even
                // from none to one (whoever authenticates could otherwise take over a framework
                // that subscribed without a principal).
                let known = self.frameworks.get(&id).map(|f| &f.info.principal);
                if known.is_some_and(|known| *known != info.principal) {
                    return Err(ApiError::new(
                        403,
                        format!("Changing framework's principal is not allowed (framework {id})"),
                    ));
                }
                id
            }
            None => self.fresh_id("F"),
        };
        info.id = Some(Id::new(&framework_id));
        let subscribed = Event::subscribed(v1::Subscribed {
            framework_id: Id::new(&framework_id),
            heartbeat_interval_seconds: Some(self.tuning.heartbeat_interval_ms as f64 / 1000.0),
            master_info: serde_json::to_value(&self.info).ok(),
        });
        if tx.try_send(record(&subscribed)).is_err() {
            return Err(ApiError::new(503, "the subscription stream closed"));
        }
        if let Some(existing) = self.frameworks.get_mut(&framework_id) {
            // Failover: the old stream ends, its offers go.
            let old = existing.stream.take();
            existing.info = info;
            existing.disconnected_at_ms = None;
            // A new subscription is not suppressed (Mesos: unless it says so).
            existing.suppressed = false;
            existing.stream = Some((stream_id.clone(), tx));
            drop(old);
            self.rescind_where(|o| o.framework_id == framework_id);
            self.allocator.activate(&framework_id);
            self.allocator.revive(&framework_id);
            self.resend_pending(&framework_id);
        } else {
            self.add_framework(&framework_id, info, Some((stream_id.clone(), tx)), None);
        }
        let _ = now_ms;
        self.env.emit(
            NodeEvent::new("framework_subscribed").with(
                "name",
                self.frameworks
                    .get(&framework_id)
                    .map(|f| f.info.name.clone())
                    .unwrap_or_default(),
            ),
        );
        self.allocate_soon = true;
        Ok((framework_id, stream_id))
    }

    /// Updates the framework has not acknowledged go out again on its new stream.
    pub(super) fn resend_pending(&mut self, framework_id: &str) {
        let Some(stream_id) = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.stream.as_ref())
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|((f, _), t)| f == framework_id && t.in_flight.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(task) = self.tasks.get_mut(&key) else {
                continue;
            };
            let Some((update, on)) = task.in_flight.as_mut() else {
                continue;
            };
            *on = Some(stream_id.clone());
            let status = executor_status(update, &task.agent_id);
            self.send_event(framework_id, &Event::update(status));
            self.counters.updates_forwarded += 1;
        }
    }

    /// Checks that a call comes on the framework's current stream.
    pub fn check_stream(&self, call: &Call, stream_id: Option<&str>) -> Result<String, ApiError> {
        let Some(framework_id) = call.framework_id.as_ref().map(|i| i.value.clone()) else {
            return Err(ApiError::new(400, "Expecting 'framework_id' to be present"));
        };
        let Some(framework) = self.frameworks.get(&framework_id) else {
            return Err(ApiError::new(
                403,
                format!("Framework '{framework_id}' is not subscribed"),
            ));
        };
        let Some((current, _)) = framework.stream.as_ref() else {
            return Err(ApiError::new(
                403,
                format!("Framework '{framework_id}' is not subscribed"),
            ));
        };
        match stream_id {
            None => Err(ApiError::new(400, "All non-subscribe calls should include the 'Mesos-Stream-Id' header")),
            Some(s) if s != current => Err(ApiError::new(
                400,
                format!("The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {framework_id}"),
            )),
            Some(_) => Ok(framework_id),
        }
    }

    /// With frameworks authenticated, a call acts for its framework only when it comes from the
    /// principal the framework subscribed as; passes the framework on.
    pub fn check_principal(
        &self,
        framework_id: &str,
        principal: Option<&str>,
    ) -> Result<String, ApiError> {
        let Some(principal) = principal else {
            return Ok(framework_id.to_string());
        };
        let owner = self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.info.principal.as_deref());
        if owner != Some(principal) {
            return Err(ApiError::new(
                403,
                format!(
                    "Principal '{principal}' may not act for framework {framework_id} (subscribed as {})",
                    owner.map_or("no principal".to_string(), |o| format!("'{o}'"))
                ),
            ));
        }
        Ok(framework_id.to_string())
    }

    /// Any call but SUBSCRIBE, after [`Master::check_stream`].
    pub fn call(&mut self, framework_id: &str, call: Call, now_ms: u64) -> Result<(), ApiError> {
        match call.kind {
            CallType::Accept => self.accept(framework_id, call.accept.unwrap_or_default(), now_ms),
            CallType::Decline => {
                let decline = call.decline.unwrap_or_default();
                let refuse = self.refuse_ms(decline.filters.as_ref());
                for offer in &decline.offer_ids {
                    self.decline_offer(framework_id, &offer.value, refuse, now_ms);
                }
                Ok(())
            }
            CallType::Revive => {
                if let Some(f) = self.frameworks.get_mut(framework_id) {
                    f.suppressed = false;
                }
                self.allocator.revive(framework_id);
                self.allocate_soon = true;
                Ok(())
            }
            CallType::Suppress => {
                if let Some(f) = self.frameworks.get_mut(framework_id) {
                    f.suppressed = true;
                }
                self.allocator.suppress(framework_id);
                Ok(())
            }
            CallType::Kill => {
                let Some(kill) = call.kill else {
                    return Err(ApiError::new(400, "Expecting 'kill' to be present"));
                };
                self.kill(framework_id, &kill);
                Ok(())
            }
            CallType::Acknowledge => {
                let Some(ack) = call.acknowledge else {
                    return Err(ApiError::new(400, "Expecting 'acknowledge' to be present"));
                };
                self.acknowledge(framework_id, &ack)
            }
            CallType::Reconcile => {
                self.reconcile(framework_id, &call.reconcile.unwrap_or_default());
                Ok(())
            }
            CallType::Teardown => {
                self.teardown(framework_id, "Framework requested teardown");
                Ok(())
            }
            CallType::Subscribe => Err(ApiError::new(400, "SUBSCRIBE opens a new stream")),
            other => Err(ApiError::new(
                501,
                format!("Call type {other:?} is not supported by drover"),
            )),
        }
    }

    pub(super) fn refuse_ms(&self, filters: Option<&v1::Filters>) -> u64 {
        match filters.and_then(|f| f.refuse_seconds) {
            Some(s) if s.is_finite() && s >= 0.0 => (s * 1000.0).min(1e12) as u64,
            _ => self.tuning.default_refuse_ms,
        }
    }

    pub(super) fn decline_offer(
        &mut self,
        framework_id: &str,
        offer_id: &str,
        refuse_ms: u64,
        now_ms: u64,
    ) {
        let Some(offer) = self.offers.get(offer_id) else {
            return;
        };
        if offer.framework_id != framework_id {
            return;
        }
        let Some(offer) = self.offers.remove(offer_id) else {
            return;
        };
        self.counters.offers_declined += 1;
        let until = (refuse_ms > 0).then_some(now_ms + refuse_ms);
        self.allocator
            .recover(framework_id, &offer.agent_id, &offer.resources, until);
    }

    pub(super) fn accept(
        &mut self,
        framework_id: &str,
        accept: v1::Accept,
        now_ms: u64,
    ) -> Result<(), ApiError> {
        // Gather the offers; all must be this framework's, outstanding, on one agent.
        let mut agent_id: Option<String> = None;
        let mut offered = Resources::new();
        let mut valid = !accept.offer_ids.is_empty();
        let mut reason = String::from("no offers");
        for offer_id in &accept.offer_ids {
            match self.offers.get(&offer_id.value) {
                Some(o) if o.framework_id == framework_id => {
                    if agent_id.as_ref().is_some_and(|a| a != &o.agent_id) {
                        valid = false;
                        reason = "offers span several agents".into();
                    }
                    agent_id = Some(o.agent_id.clone());
                    offered.add(&o.resources);
                }
                _ => {
                    valid = false;
                    reason = format!("offer {} is no longer valid", offer_id.value);
                }
            }
        }
        let tasks: Vec<v1::TaskInfo> = accept
            .operations
            .into_iter()
            .filter(|op| op.kind == "LAUNCH")
            .filter_map(|op| op.launch)
            .flat_map(|l| l.task_infos)
            .collect();
        if !valid {
            // Mesos: tasks in an invalid accept are dropped (LOST for old frameworks).
            let state = self.lost_state(framework_id, TaskState::TaskDropped);
            for task in &tasks {
                self.unlaunched(framework_id, task, state, "REASON_INVALID_OFFERS", &reason);
            }
            for offer_id in &accept.offer_ids {
                self.decline_offer(framework_id, &offer_id.value, 0, now_ms);
            }
            return Ok(());
        }
        let Some(agent_id) = agent_id else {
            return Ok(());
        };
        for offer_id in &accept.offer_ids {
            self.offers.remove(&offer_id.value);
        }
        let mut remaining = offered;
        let framework_json = Arc::new(
            self.frameworks
                .get(framework_id)
                .and_then(|f| serde_json::to_value(&f.info).ok())
                .unwrap_or(Json::Null),
        );
        for task in tasks {
            let key = (framework_id.to_string(), task.task_id.value.clone());
            let problem = if task.task_id.value.is_empty() {
                Some("Task ID must not be empty".to_string())
            } else if self
                .tasks
                .get(&key)
                .is_some_and(|t| !t.state.is_terminal() || t.in_flight.is_some())
            {
                // Mesos keeps a task until its terminal update is acknowledged: an id may be
                // used again only after that, or the old task's retried update would reach the
                // framework as if it were the new one's.
                Some(format!("Task has duplicate ID: {}", key.1))
            } else if task.agent_id.value != agent_id {
                Some(format!(
                    "Task uses agent {} but the offers are for agent {agent_id}",
                    task.agent_id.value
                ))
            } else if task.command.is_none() && task.container.is_none() {
                Some("Task has no command and no container".to_string())
            } else {
                None
            };
            let resources = match v1::from_mesos(&task.resources) {
                Ok(r) => r,
                Err(e) => {
                    self.unlaunched(
                        framework_id,
                        &task,
                        TaskState::TaskError,
                        "REASON_TASK_INVALID",
                        &format!("Task uses invalid resources: {e}"),
                    );
                    continue;
                }
            };
            if let Some(problem) = problem {
                self.unlaunched(
                    framework_id,
                    &task,
                    TaskState::TaskError,
                    "REASON_TASK_INVALID",
                    &problem,
                );
                continue;
            }
            let Some(left) = remaining.checked_sub(&resources) else {
                self.unlaunched(
                    framework_id,
                    &task,
                    TaskState::TaskError,
                    "REASON_TASK_INVALID",
                    &format!("Task uses more resources ({resources}) than available ({remaining})"),
                );
                continue;
            };
            remaining = left;
            let task_json = Arc::new(serde_json::to_value(&task).unwrap_or(Json::Null));
            self.insert_task(
                key.clone(),
                Task {
                    framework_id: framework_id.to_string(),
                    agent_id: agent_id.clone(),
                    name: task.name.clone(),
                    state: TaskState::TaskStaging,
                    resources: resources.clone(),
                    info: task_json.clone(),
                    in_flight: None,
                    acked: BTreeSet::new(),
                    last_status: None,
                    first_running: None,
                    counted: true,
                },
            );
            self.operator_task_added(&key);
            self.counters.tasks_launched += 1;
            self.env.emit(
                NodeEvent::new("task_launch")
                    .with("task", &key.1)
                    .with("agent", self.hostname_of(&agent_id)),
            );
            let sent = self.send_to_agent(
                &agent_id,
                MasterMessage::RunTask {
                    framework_id: framework_id.to_string(),
                    framework: framework_json.clone(),
                    task: task_json,
                },
            );
            if !sent {
                let state = self.lost_state(framework_id, TaskState::TaskDropped);
                self.master_update(
                    &key,
                    state,
                    "REASON_AGENT_DISCONNECTED",
                    "Agent is not connected",
                );
            }
        }
        // What the tasks did not use goes back, filtered for `refuse_seconds`.
        if !remaining.is_empty() {
            let refuse = self.refuse_ms(accept.filters.as_ref());
            let until = (refuse > 0).then_some(now_ms + refuse);
            self.allocator
                .recover(framework_id, &agent_id, &remaining, until);
        }
        Ok(())
    }

    /// A task that was never launched: its terminal status goes straight to the framework.
    pub(super) fn unlaunched(
        &mut self,
        framework_id: &str,
        task: &v1::TaskInfo,
        state: TaskState,
        reason: &str,
        message: &str,
    ) {
        let agent_id = Some(task.agent_id.clone());
        let status =
            self.master_made_status(task.task_id.clone(), agent_id, state, reason, Some(message));
        self.emit_task_update(&task.task_id.value, state);
        self.send_event(framework_id, &Event::update(status));
    }

    pub(super) fn kill(&mut self, framework_id: &str, kill: &v1::Kill) {
        let task_id = kill.task_id.value.as_str();
        let key = (framework_id.to_string(), task_id.to_string());
        match self.tasks.get(&key) {
            Some(task) if !task.state.is_terminal() => {
                let agent = task.agent_id.clone();
                // Not connected yet still considered reachable: the kill is retried by the
                // framework (Mesos does the same); nothing to report now.
                self.send_to_agent(
                    &agent,
                    MasterMessage::KillTask {
                        framework_id: framework_id.to_string(),
                        task_id: task_id.to_string(),
                    },
                );
            }
            // Already ended: say so again (the framework may have missed it).
            Some(_) => self.tell_state(&key, "REASON_RECONCILIATION"),
            // Unknown: reconciled, as Mesos does. While an agent that may still have it has
            // not re-registered since a failover, that says nothing (the framework asks again);
            // a TASK_UNKNOWN then would let it forget a task that comes back running.
            None => self.reconcile(
                framework_id,
                &v1::Reconcile {
                    tasks: vec![v1::ReconcileTask {
                        task_id: kill.task_id.clone(),
                        agent_id: kill.agent_id.clone(),
                    }],
                },
            ),
        }
    }

    pub(super) fn acknowledge(
        &mut self,
        framework_id: &str,
        ack: &v1::Acknowledge,
    ) -> Result<(), ApiError> {
        let Some(uuid) = unb64(&ack.uuid) else {
            return Err(ApiError::new(
                400,
                format!("'uuid' {:?} is not a valid status update uuid", ack.uuid),
            ));
        };
        let key = (framework_id.to_string(), ack.task_id.value.clone());
        let Some(task) = self.tasks.get_mut(&key) else {
            return Ok(());
        };
        let matches = task.in_flight.as_ref().is_some_and(|(u, _)| u.uuid == uuid);
        if !matches {
            return Ok(());
        }
        task.in_flight = None;
        task.acked.insert(uuid.clone());
        let agent = task.agent_id.clone();
        self.send_to_agent(
            &agent,
            MasterMessage::Acknowledge {
                task_id: key.1.clone(),
                uuid,
            },
        );
        Ok(())
    }

    pub(super) fn reconcile(&mut self, framework_id: &str, reconcile: &v1::Reconcile) {
        let mut statuses = Vec::new();
        let status_of = |task: &Task, task_id: &str| {
            task.last_status
                .clone()
                .map(|s| TaskStatus {
                    reason: Some("REASON_RECONCILIATION".into()),
                    uuid: None,
                    ..s
                })
                .unwrap_or(TaskStatus {
                    agent_id: Some(Id::new(&task.agent_id)),
                    ..TaskStatus::from_master(Id::new(task_id), task.state, "REASON_RECONCILIATION")
                })
        };
        if reconcile.tasks.is_empty() {
            for ((f, id), task) in &self.tasks {
                if f == framework_id && (!task.state.is_terminal() || task.in_flight.is_some()) {
                    statuses.push(status_of(task, id));
                }
            }
        } else {
            let aware = self.partition_aware(framework_id);
            for asked in &reconcile.tasks {
                let key = (framework_id.to_string(), asked.task_id.value.clone());
                if let Some(task) = self.tasks.get(&key) {
                    statuses.push(status_of(task, &key.1));
                    continue;
                }
                let agent = asked.agent_id.as_ref().map(|a| a.value.clone());
                let agent_state = agent.as_ref().map(|a| {
                    (
                        self.agents.get(a).map(|x| x.reachable && x.conn.is_some()),
                        self.registry.get(a).map(|e| e.state.clone()),
                    )
                });
                let state = match agent_state {
                    Some((Some(true), _)) => Some(if aware {
                        TaskState::TaskGone
                    } else {
                        TaskState::TaskLost
                    }),
                    Some((_, Some(s))) if s == "unreachable" => Some(if aware {
                        TaskState::TaskUnreachable
                    } else {
                        TaskState::TaskLost
                    }),
                    // The agent may still come back: no answer while recovering.
                    _ if self.recovering_until_ms.is_some() => None,
                    _ => Some(if aware {
                        TaskState::TaskUnknown
                    } else {
                        TaskState::TaskLost
                    }),
                };
                if let Some(state) = state {
                    statuses.push(self.master_made_status(
                        asked.task_id.clone(),
                        asked.agent_id.clone(),
                        state,
                        "REASON_RECONCILIATION",
                        Some("Reconciliation: task is unknown"),
                    ));
                }
            }
        }
        for status in statuses {
            self.send_event(framework_id, &Event::update(status));
        }
    }

    /// Ends a framework: its tasks are killed and its offers rescinded.
    pub fn teardown(&mut self, framework_id: &str, why: &str) {
        self.rescind_where(|o| o.framework_id == framework_id);
        let agents: BTreeSet<String> = self
            .tasks
            .iter()
            .filter(|((f, _), t)| f == framework_id && !t.state.is_terminal())
            .map(|(_, t)| t.agent_id.clone())
            .collect();
        for agent in agents {
            self.send_to_agent(
                &agent,
                MasterMessage::ShutdownFramework {
                    framework_id: framework_id.to_string(),
                },
            );
        }
        self.allocator.remove_framework(framework_id);
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.completed = true;
            f.stream = None;
        }
        self.env
            .emit(NodeEvent::new("framework_removed").with("why", why.replace(' ', "_")));
    }
}
