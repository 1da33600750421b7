//! The master link: finding the leader, (re-)registering with backoff, frames in and out.

use super::*;

impl Core {
    /// Draws the next attempt's delay below the current bound, then doubles the bound.
    pub(super) fn schedule_retry(&mut self) {
        let bound = self.backoff.as_millis() as u64;
        let delay = if bound == 0 {
            0
        } else {
            self.env.rng().random_range(0..bound)
        };
        self.backoff = (self.backoff * 2).min(self.config.registration_backoff_max);
        self.link = Link::Idle {
            retry_at: Instant::now() + Duration::from_millis(delay),
        };
    }

    /// Drops the connection (an event if there was one: a failed connect attempt is not news)
    /// and schedules the next attempt.
    pub(super) fn lose(&mut self, reason: &str) {
        if self.link.connected() {
            self.emit(Event::new("master_lost").with("reason", reason));
        }
        self.schedule_retry();
    }

    pub(super) fn on_leader(&mut self, leader: Leader) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        // Any link was made to an earlier leader (maybe a dead master at the same address).
        if self.link.target().is_some() || self.leader.is_some() {
            if self.link.connected() {
                self.emit(Event::new("master_lost").with("reason", "new_leader"));
            }
            self.backoff = self.config.registration_backoff;
            self.schedule_retry();
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Idle { retry_at } => self.leader.as_ref().map(|_| *retry_at),
            Link::Connecting { .. } => None,
            Link::Registering { deadline, .. } => Some(*deadline),
            Link::Registered { heard, .. } => Some(*heard + self.config.ping_timeout),
        };
        let retry = match &self.link {
            Link::Registered { .. } => self.manager.next_retry_ms().map(|at| {
                Instant::now() + Duration::from_millis(at.saturating_sub(self.env.unix_ms()))
            }),
            _ => None,
        };
        match (link, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) async fn on_timer(&mut self) -> Result<(), AgentError> {
        let now = Instant::now();
        match &self.link {
            Link::Idle { retry_at } if *retry_at <= now => {
                if let Some((host, port)) = self.leader.clone().map(|found| found.endpoint) {
                    let env = self.env.clone();
                    let timeout = self.config.connect_timeout;
                    let credential = self.config.credential.clone();
                    let target = (host.clone(), port);
                    self.link = Link::Connecting {
                        target,
                        attempt: Box::pin(async move {
                            let stream = env.connect(&host, port, timeout).await?;
                            let mut conn = Box::new(Framed::new(stream, FrameCodec::default()));
                            if let Some(credential) = credential {
                                authenticate(&mut conn, &credential).await?;
                            }
                            Ok(conn)
                        }),
                    };
                }
            }
            Link::Registering { deadline, .. } if *deadline <= now => {
                self.lose("registration_timeout")
            }
            Link::Registered { heard, .. } if *heard + self.config.ping_timeout <= now => {
                self.lose("ping_timeout")
            }
            _ => {}
        }
        if matches!(self.link, Link::Registered { .. }) {
            for update in self.manager.due(self.env.unix_ms()) {
                self.send_update(update).await;
            }
        }
        Ok(())
    }

    pub(super) fn registration(&self) -> Registration {
        let tasks = match self.agent_id {
            Some(_) => self
                .tasks
                .values()
                .map(|entry| TaskReport {
                    framework_id: entry.checkpoint.framework_id.clone(),
                    framework: entry.checkpoint.framework.clone(),
                    task: entry.checkpoint.task.clone(),
                    state: entry.checkpoint.state,
                    ip_addresses: entry
                        .checkpoint
                        .handle
                        .as_ref()
                        .map(|h| h.ip_addresses().to_vec())
                        .unwrap_or_default(),
                })
                .collect(),
            None => Vec::new(),
        };
        Registration {
            agent_id: self.agent_id.clone(),
            hostname: self.config.hostname.clone(),
            port: self.port,
            address: self.config.address(),
            resources: self.config.resources.to_string(),
            attributes: self.config.attributes.clone(),
            tasks,
        }
    }

    /// Sends on the connection; a failure drops it (and returns false).
    pub(super) async fn send(&mut self, message: AgentMessage) -> bool {
        let conn = match &mut self.link {
            Link::Registering { conn, .. } | Link::Registered { conn, .. } => conn,
            _ => return false,
        };
        let frame = match encode_message(&message) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a message to the master");
                return false;
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, conn.send(frame)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "the connection to the master broke");
                self.lose("send_failed");
                false
            }
            Err(_) => {
                self.lose("send_timeout");
                false
            }
        }
    }

    pub(super) async fn on_link(&mut self, input: LinkInput) -> Result<(), AgentError> {
        match input {
            LinkInput::Connected(Ok(conn)) => {
                let Link::Connecting { target, .. } = std::mem::replace(
                    &mut self.link,
                    Link::Idle {
                        retry_at: Instant::now(),
                    },
                ) else {
                    return Ok(());
                };
                self.link = Link::Registering {
                    target,
                    conn,
                    deadline: Instant::now() + self.config.registration_timeout,
                };
                let registration = self.registration();
                self.send(AgentMessage::Register(registration)).await;
            }
            LinkInput::Connected(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                tracing::warn!(reason = %e, "the master did not accept this agent's credential");
                self.emit(Event::new("agent_authentication_failed"));
                self.lose("authentication_failed");
            }
            LinkInput::Connected(Err(e)) => {
                tracing::debug!(error = %e, "cannot reach the master");
                self.lose("connect_failed");
            }
            LinkInput::Frame(None) => self.lose("closed"),
            LinkInput::Frame(Some(Err(e))) => {
                tracing::info!(error = %e, "bad frame from the master");
                self.lose("bad_frame");
            }
            LinkInput::Frame(Some(Ok(frame))) => match decode_message::<MasterMessage>(&frame) {
                Ok(message) => self.on_message(message).await?,
                Err(e) => {
                    tracing::warn!(error = %e, "a message from the master was not understood")
                }
            },
        }
        Ok(())
    }

    pub(super) async fn on_message(&mut self, message: MasterMessage) -> Result<(), AgentError> {
        match message {
            MasterMessage::Registered { agent_id, master } => {
                let Link::Registering { .. } = self.link else {
                    return Ok(());
                };
                if self.agent_id.as_deref() != Some(agent_id.as_str()) {
                    let identity = AgentIdentity {
                        agent_id: agent_id.clone(),
                    };
                    self.persist(
                        AGENT_ID_PATH,
                        serde_json::to_vec(&identity).unwrap_or_default(),
                    );
                    self.agent_id = Some(agent_id.clone());
                }
                let Link::Registering { target, conn, .. } = std::mem::replace(
                    &mut self.link,
                    Link::Idle {
                        retry_at: Instant::now(),
                    },
                ) else {
                    return Ok(());
                };
                tracing::info!(%agent_id, %master, "registered with the master");
                self.master_hostname = Some(target.0.clone());
                self.link = Link::Registered {
                    target,
                    conn,
                    heard: Instant::now(),
                };
                self.backoff = self.config.registration_backoff;
                self.emit(Event::new("agent_registered").with("agent_id", &agent_id));
                for update in self.manager.resend_all(self.env.unix_ms()) {
                    if !self.send_update(update).await {
                        break;
                    }
                }
            }
            // A master that requires authentication answers an agent without a credential so.
            MasterMessage::AuthenticationFailed { reason } => {
                tracing::warn!(%reason, "the master requires this agent to authenticate (--credential)");
                self.emit(Event::new("agent_authentication_failed"));
                self.lose("authentication_failed");
            }
            // Only meaningful while authenticating, before registration.
            MasterMessage::Challenge { .. } | MasterMessage::Authenticated { .. } => {}
            MasterMessage::Refused { reason } => {
                self.emit(Event::new("agent_refused"));
                return Err(AgentError::Refused(reason));
            }
            MasterMessage::Ping { seq } => {
                if let Link::Registered { heard, .. } = &mut self.link {
                    *heard = Instant::now();
                }
                self.send(AgentMessage::Pong { seq }).await;
            }
            MasterMessage::RunTask {
                framework_id,
                framework,
                task,
            } => {
                let (framework, task) =
                    (Arc::unwrap_or_clone(framework), Arc::unwrap_or_clone(task));
                self.run_task(framework_id, framework, task).await?
            }
            MasterMessage::KillTask {
                framework_id,
                task_id,
            } => self.kill_task(&framework_id, &task_id).await?,
            MasterMessage::ShutdownFramework { framework_id } => {
                self.shutdown_framework(&framework_id).await?
            }
            MasterMessage::Acknowledge { task_id, uuid } => {
                self.acknowledge(&task_id, &uuid).await?
            }
        }
        Ok(())
    }
}

/// Proves the agent's credential on a new connection: `Authenticate`, the master's challenge, the
/// proof, and its verdict. A refusal is `PermissionDenied` (the agent tries again later, as a
/// Mesos agent does); anything else unexpected is an I/O error.
async fn authenticate(
    conn: &mut Conn,
    credential: &drover_core::auth::Credential,
) -> io::Result<()> {
    use base64::Engine as _;
    use drover_core::auth::challenge;
    let b64 = base64::engine::general_purpose::STANDARD;
    let refused = |reason: String| io::Error::new(io::ErrorKind::PermissionDenied, reason);
    let unexpected = |what: &str| io::Error::other(format!("expected {what} from the master"));
    let principal = credential.principal.clone();
    exchange(conn, AgentMessage::Authenticate { principal }).await?;
    let nonce = match receive(conn).await? {
        MasterMessage::Challenge { nonce } => b64
            .decode(nonce)
            .map_err(|_| unexpected("a base64 nonce"))?,
        MasterMessage::AuthenticationFailed { reason } => return Err(refused(reason)),
        _ => return Err(unexpected("a challenge")),
    };
    let context = drover_core::agent_proto::AGENT_CONTEXT;
    let answer = challenge::answer(credential.secret.as_bytes(), context, &nonce);
    let answer = b64.encode(answer);
    exchange(conn, AgentMessage::Proof { answer }).await?;
    match receive(conn).await? {
        MasterMessage::Authenticated { .. } => Ok(()),
        MasterMessage::AuthenticationFailed { reason } => Err(refused(reason)),
        _ => Err(unexpected("a verdict on the proof")),
    }
}

/// Sends one message during authentication (within the send timeout).
async fn exchange(conn: &mut Conn, message: AgentMessage) -> io::Result<()> {
    Ok(send_within(conn, &message, SEND_TIMEOUT).await?)
}

/// The master's next message during authentication (within the send timeout).
async fn receive(conn: &mut Conn) -> io::Result<MasterMessage> {
    Ok(next_within(conn, SEND_TIMEOUT).await?)
}
