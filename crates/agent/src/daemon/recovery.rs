//! Recovery after a restart: the checkpointed tasks re-adopted, relaunched or reported gone.

use super::*;

impl Core {
    pub(super) async fn recover(&mut self) -> Result<(), AgentError> {
        let bad = |path: &str, reason: String| AgentError::Checkpoint {
            path: path.to_string(),
            reason,
        };
        let (journal, legacy) = crate::journal::load(&self.env)
            .await
            .map_err(|(path, e)| bad(&path, e.to_string()))?;
        self.journal = journal;
        let under = |journal: &Journal, prefix| -> Vec<(String, Bytes)> {
            journal
                .under(prefix)
                .map(|(path, bytes)| (path.to_string(), bytes.clone()))
                .collect()
        };
        if let Some(bytes) = self.journal.get(AGENT_ID_PATH) {
            let identity: AgentIdentity =
                serde_json::from_slice(bytes).map_err(|e| bad(AGENT_ID_PATH, e.to_string()))?;
            self.agent_id = Some(identity.agent_id);
        }
        // The streams: one entry each; an older agent's single file first, moved to them.
        let old_streams = self.journal.get(STATUS_PATH).cloned();
        if let Some(bytes) = &old_streams {
            self.manager = StatusUpdateManager::restore(bytes).map_err(|e| bad(STATUS_PATH, e))?;
        }
        for (path, bytes) in under(&self.journal, STREAMS_PREFIX) {
            self.manager
                .restore_stream(&bytes)
                .map_err(|e| bad(&path, e))?;
        }
        if old_streams.is_some() {
            let tasks: Vec<String> = self.manager.tasks().map(str::to_string).collect();
            for task in tasks {
                self.persist_stream(&task);
            }
            self.forget(STATUS_PATH);
        }
        let mut recovered = 0;
        for (path, bytes) in under(&self.journal, TASKS_PREFIX) {
            let mut checkpoint = TaskCheckpoint::decode(&bytes).map_err(|e| bad(&path, e))?;
            let latest = self.manager.latest(&checkpoint.task_id);
            let containerizer = self.containerizer_of(checkpoint.containerizer);
            let decision = decide(
                &checkpoint,
                latest,
                self.config.recover,
                containerizer.is_some(),
            );
            if decision == Recovery::Forget {
                self.forget(&path);
                continue;
            }
            recovered += 1;
            if let Some(latest) = latest {
                checkpoint.state = latest;
            }
            let task_id = checkpoint.task_id.clone();
            let mut spec = parse_task(
                &checkpoint.task,
                &checkpoint.framework_id,
                &self.config.hostname,
            );
            if let Ok(spec) = &mut spec {
                spec.sandbox = self.sandbox_of(checkpoint.containerizer, &task_id);
            }
            let handle = checkpoint.handle.clone();
            let launched_ms = checkpoint.launched_ms;
            self.tasks.insert(
                task_id.clone(),
                TaskEntry::new(checkpoint, spec.as_ref().ok().cloned()),
            );
            match (decision, spec, containerizer) {
                (Recovery::Forget | Recovery::AwaitAck, _, _) => {}
                (Recovery::Fail(message), _, _) | (_, Err(message), _) => {
                    self.status(
                        &task_id,
                        TaskState::TaskFailed,
                        Some(message),
                        Some("REASON_AGENT_RESTARTED"),
                    )
                    .await?;
                }
                (_, Ok(_), None) => {
                    // `decide` fails tasks whose containerizer is gone; kept for completeness.
                    self.status(
                        &task_id,
                        TaskState::TaskFailed,
                        Some("its containerizer is not enabled".into()),
                        Some("REASON_AGENT_RESTARTED"),
                    )
                    .await?;
                }
                (decision, Ok(spec), Some(containerizer)) => {
                    self.emit(
                        Event::new("task_recovered")
                            .with("task", &task_id)
                            .with("cpus", spec.cpus)
                            .with("mem", spec.mem_mb),
                    );
                    let (kill, kill_rx) = oneshot::channel();
                    if let Some(entry) = self.tasks.get_mut(&task_id) {
                        if decision == Recovery::AdoptAndKill {
                            let _ = kill.send(spec.kill_grace);
                            entry.kill_message =
                                Some("Killed by the agent's recovery (--recover=cleanup)".into());
                        } else {
                            entry.kill = Some(kill);
                        }
                    }
                    let recovery = containerizer.recover(&spec, handle, launched_ms);
                    self.spawn_runner(task_id, recovery, kill_rx);
                }
            }
        }
        // The journal starts afresh (nothing is appended after a torn tail); then the files of
        // an older agent go.
        self.commit(true).await?;
        let disk = self.env.disk();
        for path in legacy {
            let gone = match disk.remove(&path).await {
                Ok(()) => disk.sync(&path).await,
                failed => failed,
            };
            gone.map_err(|e| bad(&path, e.to_string()))?;
        }
        let known: Vec<String> = self.tasks.keys().cloned().collect();
        for containerizer in &self.containerizers {
            containerizer.cleanup_orphans(&known).await;
        }
        self.emit(Event::new("agent_recovered").with("tasks", recovered));
        Ok(())
    }

    /// Where a task's files go: its containerizer's sandbox or, when that one gives it none
    /// (docker), the sandbox the agent's other containerizers would (as in Mesos, every sandbox
    /// is under the agent's work dir). None in simulation.
    pub(super) fn sandbox_of(&self, kind: Kind, task_id: &str) -> Option<PathBuf> {
        self.containerizer_of(kind)
            .and_then(|c| c.sandbox(task_id))
            .or_else(|| self.containerizers.iter().find_map(|c| c.sandbox(task_id)))
    }

    pub(super) fn containerizer_of(&self, kind: Kind) -> Option<Arc<dyn Containerizer>> {
        self.containerizers
            .iter()
            .find(|c| c.kind() == kind)
            .cloned()
    }

    /// The containerizer for a task: the simulated one takes everything; else DOCKER containers
    /// go to `docker` and commands to `mesos`.
    pub(super) fn containerizer_for(
        &self,
        spec: &LaunchSpec,
    ) -> Result<Arc<dyn Containerizer>, String> {
        if let Some(sim) = self.containerizer_of(Kind::Sim) {
            return Ok(sim);
        }
        match spec.container {
            Container::Docker(_) => self.containerizer_of(Kind::Docker).ok_or_else(|| {
                "a DOCKER container needs the docker containerizer, which this agent does not run"
                    .to_string()
            }),
            Container::Command => self.containerizer_of(Kind::Mesos).ok_or_else(|| {
                "a command task needs the mesos containerizer, which this agent does not run"
                    .to_string()
            }),
        }
    }

    pub(super) fn spawn_runner(
        &mut self,
        task_id: String,
        start: BoxFuture<'static, Result<Launched, String>>,
        kill: KillSignal,
    ) {
        let events = self.events.clone();
        drover_core::env::spawn_into(&mut self.runners, async move {
            match start.await {
                Err(message) => {
                    let _ = events.send(TaskEvent::Ended {
                        task_id,
                        exit: Exit {
                            state: TaskState::TaskFailed,
                            message,
                        },
                        reason: Some("REASON_CONTAINER_LAUNCH_FAILED"),
                    });
                }
                Ok(launched) => {
                    let _ = events.send(TaskEvent::Started {
                        task_id: task_id.clone(),
                        handle: launched.handle,
                    });
                    let exit = launched.running.wait(kill).await;
                    let _ = events.send(TaskEvent::Ended {
                        task_id,
                        exit,
                        reason: None,
                    });
                }
            }
        });
    }
}
