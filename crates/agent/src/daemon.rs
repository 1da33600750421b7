//! The agent daemon, over the Env only (it runs live and simulated).
//!
//! One core task owns all state and reacts to: frames from the master, task events from the
//! per-task runners, `/state` requests, the file endpoints' requests for the tasks' sandboxes
//! (their files are read outside the core, see [`crate::files`]), leader changes, and one timer
//! (registration retry, registration timeout, ping timeout, status update retries). Nothing it
//! decides depends on anything but its inputs, the Env's clock and the node's RNG.
//!
//! The life of a task: `RunTask` → checkpoint (synced) → `task_launched` → the containerizer
//! starts it in a runner → handle checkpointed → TASK_RUNNING → it ends or is killed → terminal
//! update. Every update goes through the [`StatusUpdateManager`], whose streams are checkpointed
//! and synced before the update is sent; when the terminal update is acknowledged the task's
//! checkpoint goes and the task joins the completed list.
//!
//! The link to the master: find the leader ([`Detector`]), wait a random time below the backoff
//! bound (doubling per failure up to a minute, reset on success), connect, send `Register` (with
//! the agent id and every task not ended-and-acknowledged once the agent has an id), wait for
//! `Registered`, resend every status stream's head. No `Ping` for `ping_timeout`, a broken
//! connection, or a new leader: start over.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_core::agent_proto::{
    AgentMessage, MasterMessage, Registration, StatusUpdate, TaskReport,
};
use drover_core::env::{BoxFuture, Stream};
use drover_core::frame::{decode_message, encode_message, FrameCodec, FrameError};
use drover_core::task::TaskState;
use drover_core::{Env, Event};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, RngCore};
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use crate::checkpoint::{
    decide, task_path, AgentIdentity, RecoverMode, Recovery, TaskCheckpoint, AGENT_ID_PATH,
    STATUS_PATH, TASKS_PREFIX,
};
use crate::config::{attributes_json, AgentConfig};
use crate::containerizer::{Containerizer, Exit, Handle, KillSignal, Kind, Launched};
use crate::detector::{Detector, Leader};
use crate::files::Sandbox;
use crate::health::{CheckKind, HealthCheckSpec, HealthTracker};
use crate::state::{frameworks_json, resources_json, TaskView};
use crate::status::StatusUpdateManager;
use crate::task::{parse_task, task_id_of, Container, LaunchSpec, DEFAULT_KILL_GRACE};

/// A frame that cannot be written within this long means the master is gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ended tasks `/state` remembers.
const MAX_COMPLETED: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("the master refused this agent: {0}")]
    Refused(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("{0}")]
    Config(String),
}

/// Starts the agent and runs it until `shutdown` resolves (or the master refuses it). Tasks keep
/// running when the agent stops; the next agent on the same Disk re-adopts them.
pub async fn run(
    env: Env,
    config: AgentConfig,
    containerizers: Vec<Arc<dyn Containerizer>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    if containerizers.is_empty() {
        return Err(AgentError::Config("the agent needs a containerizer".into()));
    }
    attributes_json(&config.attributes).map_err(AgentError::Config)?;
    let (events, mut task_events) = mpsc::unbounded_channel();
    let mut core = Core {
        env: env.clone(),
        port: config.port,
        backoff: config.registration_backoff,
        config,
        containerizers,
        agent_id: None,
        manager: StatusUpdateManager::default(),
        tasks: BTreeMap::new(),
        completed: VecDeque::new(),
        runners: JoinSet::new(),
        events,
        link: Link::Idle {
            retry_at: Instant::now(),
        },
        leader: None,
        master_hostname: None,
        epoch: Instant::now(),
    };
    core.recover().await?;

    let addr = SocketAddr::new(core.config.ip, core.config.port);
    let listener = env
        .bind(addr)
        .await
        .map_err(|source| AgentError::Listen { addr, source })?;
    if let Ok(local) = listener.local_addr() {
        core.port = local.port();
    }
    let (state_requests, mut state_rx) = mpsc::channel::<oneshot::Sender<Json>>(16);
    let (sandbox_requests, mut sandbox_rx) = mpsc::channel::<oneshot::Sender<Vec<Sandbox>>>(16);
    let server = drover_core::env::spawn(drover_core::http::serve(
        listener,
        router(state_requests).merge(crate::files::router(sandbox_requests)),
        std::future::pending(),
    ));
    let _server = AbortOnDrop(server);

    let detector = Detector::start(&env, &core.config.master, core.config.zk_session_timeout);
    let mut leader_rx = detector.leader();
    let mut leader_open = true;
    core.leader = leader_rx.borrow_and_update().clone();
    core.schedule_retry();

    tokio::pin!(shutdown);
    loop {
        let deadline = core.deadline();
        let wake = tokio::select! {
            biased;
            () = &mut shutdown => Wake::Shutdown,
            Some(event) = task_events.recv() => Wake::Task(event),
            input = link_input(&mut core.link) => Wake::Link(input),
            changed = leader_rx.changed(), if leader_open => match changed {
                Ok(()) => Wake::Leader(leader_rx.borrow_and_update().clone()),
                Err(_) => Wake::LeaderGone,
            },
            Some(reply) = state_rx.recv() => Wake::State(reply),
            Some(reply) = sandbox_rx.recv() => Wake::Sandboxes(reply),
            () = sleep_until(deadline), if deadline.is_some() => Wake::Timer,
            Some(_) = core.runners.join_next(), if !core.runners.is_empty() => Wake::Nothing,
        };
        match wake {
            Wake::Shutdown => {
                tracing::info!("agent stopping; its tasks keep running");
                return Ok(());
            }
            Wake::Task(event) => core.on_task_event(event).await?,
            Wake::Link(input) => core.on_link(input).await?,
            Wake::Leader(leader) => core.on_leader(leader),
            Wake::LeaderGone => leader_open = false,
            Wake::State(reply) => {
                let _ = reply.send(core.state_json());
            }
            Wake::Sandboxes(reply) => {
                let _ = reply.send(core.sandboxes());
            }
            Wake::Timer => core.on_timer().await?,
            Wake::Nothing => {}
        }
    }
}

/// Runs a task's health check once: a command through the task's containerizer, HTTP and TCP
/// against the agent's host (where the task's ports are), all bounded by the check's timeout.
async fn run_check(
    env: &Env,
    host: &str,
    check: &HealthCheckSpec,
    containerizer: &dyn Containerizer,
    spec: &LaunchSpec,
    handle: &Handle,
) -> Result<(), String> {
    let timeout = check.timeout;
    match &check.kind {
        CheckKind::Command {
            command,
            environment,
        } => {
            let run = containerizer.check_command(spec, handle, command, environment, timeout);
            // The containerizer bounds its own command; this bound is a backstop.
            match tokio::time::timeout(timeout + Duration::from_secs(1), run).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "Command timed out after {} ms",
                    timeout.as_millis()
                )),
            }
        }
        CheckKind::Http { port, path } => {
            let request = http::Request::get(path.as_str())
                .body(Bytes::new())
                .map_err(|e| format!("bad health check path {path:?}: {e}"))?;
            let response = drover_core::http::request(env, host, *port, request, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if (200..=399).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP {status} from {host}:{port}{path}"))
            }
        }
        CheckKind::Tcp { port } => env
            .connect(host, *port, timeout)
            .await
            .map(drop)
            .map_err(|e| format!("TCP connection to {host}:{port} failed: {e}")),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn router(requests: mpsc::Sender<oneshot::Sender<Json>>) -> axum::Router {
    use axum::routing::get;
    let state = move || {
        let requests = requests.clone();
        async move {
            let (reply, answer) = oneshot::channel();
            let state = match requests.send(reply).await {
                Ok(()) => answer.await.ok(),
                Err(_) => None,
            };
            match state {
                Some(state) => (http::StatusCode::OK, axum::Json(state)),
                None => (http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({}))),
            }
        }
    };
    axum::Router::new()
        .route("/state", get(state.clone()))
        .route("/state.json", get(state.clone()))
        .route("/slave(1)/state", get(state))
        .route("/health", get(|| async { "" }))
}

enum Wake {
    Shutdown,
    Task(TaskEvent),
    Link(LinkInput),
    Leader(Leader),
    LeaderGone,
    State(oneshot::Sender<Json>),
    Sandboxes(oneshot::Sender<Vec<Sandbox>>),
    Timer,
    Nothing,
}

/// What a task's runner reports.
enum TaskEvent {
    Started {
        task_id: String,
        handle: Handle,
    },
    Ended {
        task_id: String,
        exit: Exit,
        reason: Option<&'static str>,
    },
    /// A health check of the task passed (`Ok`) or failed.
    Health {
        task_id: String,
        result: Result<(), String>,
    },
}

type Conn = Framed<Stream, FrameCodec>;

enum Link {
    /// Not connected; the next attempt at `retry_at` (once a leader is known).
    Idle { retry_at: Instant },
    Connecting {
        target: (String, u16),
        attempt: BoxFuture<'static, io::Result<Stream>>,
    },
    Registering {
        target: (String, u16),
        conn: Box<Conn>,
        deadline: Instant,
    },
    Registered {
        target: (String, u16),
        conn: Box<Conn>,
        /// The last ping (or registration).
        heard: Instant,
    },
}

impl Link {
    fn connected(&self) -> bool {
        matches!(self, Link::Registering { .. } | Link::Registered { .. })
    }

    fn target(&self) -> Option<&(String, u16)> {
        match self {
            Link::Idle { .. } => None,
            Link::Connecting { target, .. }
            | Link::Registering { target, .. }
            | Link::Registered { target, .. } => Some(target),
        }
    }
}

enum LinkInput {
    Connected(io::Result<Stream>),
    Frame(Option<Result<Bytes, FrameError>>),
}

async fn link_input(link: &mut Link) -> LinkInput {
    match link {
        Link::Idle { .. } => std::future::pending().await,
        Link::Connecting { attempt, .. } => LinkInput::Connected(attempt.await),
        Link::Registering { conn, .. } | Link::Registered { conn, .. } => {
            LinkInput::Frame(conn.next().await)
        }
    }
}

struct TaskEntry {
    checkpoint: TaskCheckpoint,
    spec: Option<LaunchSpec>,
    /// Present while the task runs and no kill was asked for.
    kill: Option<oneshot::Sender<Duration>>,
    /// Replaces the exit message (a kill by `--recover=cleanup`).
    kill_message: Option<String>,
    /// The task's health, while its health check runs.
    health: Option<HealthTracker>,
    /// Stops the task's health checks.
    checker: Option<tokio::task::AbortHandle>,
    /// It was killed for failing its health check: its terminal update says `healthy: false`.
    killed_unhealthy: bool,
}

/// Why a task's updates carry health.
const HEALTH_REASON: &str = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED";

/// An ended, acknowledged task, for `/state`.
struct Completed {
    task_id: String,
    framework_id: String,
    framework: Json,
    task: Json,
    state: TaskState,
    sandbox: Option<PathBuf>,
}

struct Core {
    env: Env,
    config: AgentConfig,
    /// The HTTP port actually bound.
    port: u16,
    containerizers: Vec<Arc<dyn Containerizer>>,
    agent_id: Option<String>,
    manager: StatusUpdateManager,
    tasks: BTreeMap<String, TaskEntry>,
    completed: VecDeque<Completed>,
    runners: JoinSet<()>,
    events: mpsc::UnboundedSender<TaskEvent>,
    link: Link,
    /// The current bound of the random registration delay.
    backoff: Duration,
    leader: Leader,
    master_hostname: Option<String>,
    /// Health checks measure their grace period on the monotonic clock, from here.
    epoch: Instant,
}

/// Writes and syncs a checkpoint file.
async fn persist(env: &Env, path: &str, bytes: Vec<u8>) -> Result<(), AgentError> {
    let failed = |e: io::Error| AgentError::Checkpoint {
        path: path.to_string(),
        reason: e.to_string(),
    };
    let disk = env.disk();
    disk.write(path, Bytes::from(bytes)).await.map_err(failed)?;
    disk.sync(path).await.map_err(failed)
}

fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}"))
}

impl Core {
    // ---- the Disk ----

    async fn persist(&mut self, path: &str, bytes: Vec<u8>) -> Result<(), AgentError> {
        persist(&self.env, path, bytes).await
    }

    async fn forget(&mut self, path: &str) -> Result<(), AgentError> {
        let failed = |e: io::Error| AgentError::Checkpoint {
            path: path.to_string(),
            reason: e.to_string(),
        };
        let disk = self.env.disk();
        disk.remove(path).await.map_err(failed)?;
        disk.sync(path).await.map_err(failed)
    }

    async fn persist_task(&mut self, task_id: &str) -> Result<(), AgentError> {
        match self.tasks.get(task_id) {
            Some(entry) => {
                let bytes = entry.checkpoint.encode();
                persist(&self.env, &task_path(task_id), bytes).await
            }
            None => Ok(()),
        }
    }

    // ---- recovery ----

    async fn recover(&mut self) -> Result<(), AgentError> {
        let bad = |path: &str, reason: String| AgentError::Checkpoint {
            path: path.to_string(),
            reason,
        };
        let env = self.env.clone();
        let read = |path: &'static str| {
            let env = env.clone();
            async move {
                env.disk()
                    .read(path)
                    .await
                    .map_err(|e| bad(path, e.to_string()))
            }
        };
        if let Some(bytes) = read(AGENT_ID_PATH).await? {
            let identity: AgentIdentity =
                serde_json::from_slice(&bytes).map_err(|e| bad(AGENT_ID_PATH, e.to_string()))?;
            self.agent_id = Some(identity.agent_id);
        }
        if let Some(bytes) = read(STATUS_PATH).await? {
            self.manager = StatusUpdateManager::restore(&bytes).map_err(|e| bad(STATUS_PATH, e))?;
        }
        let paths = self
            .env
            .disk()
            .list(TASKS_PREFIX)
            .await
            .map_err(|e| bad(TASKS_PREFIX, e.to_string()))?;
        let mut recovered = 0;
        for path in paths {
            let Some(bytes) = self
                .env
                .disk()
                .read(&path)
                .await
                .map_err(|e| bad(&path, e.to_string()))?
            else {
                continue;
            };
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
                self.forget(&path).await?;
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
                TaskEntry {
                    checkpoint,
                    spec: spec.as_ref().ok().cloned(),
                    kill: None,
                    kill_message: None,
                    health: None,
                    checker: None,
                    killed_unhealthy: false,
                },
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
                    self.env.emit(
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
        let known: Vec<String> = self.tasks.keys().cloned().collect();
        for containerizer in &self.containerizers {
            containerizer.cleanup_orphans(&known).await;
        }
        self.env
            .emit(Event::new("agent_recovered").with("tasks", recovered));
        Ok(())
    }

    /// Where a task's files go: its containerizer's sandbox or, when that one gives it none
    /// (docker), the sandbox the agent's other containerizers would (as in Mesos, every sandbox
    /// is under the agent's work dir). None in simulation.
    fn sandbox_of(&self, kind: Kind, task_id: &str) -> Option<PathBuf> {
        self.containerizer_of(kind)
            .and_then(|c| c.sandbox(task_id))
            .or_else(|| self.containerizers.iter().find_map(|c| c.sandbox(task_id)))
    }

    fn containerizer_of(&self, kind: Kind) -> Option<Arc<dyn Containerizer>> {
        self.containerizers
            .iter()
            .find(|c| c.kind() == kind)
            .cloned()
    }

    /// The containerizer for a task: the simulated one takes everything; else DOCKER containers
    /// go to `docker` and commands to `mesos`.
    fn containerizer_for(&self, spec: &LaunchSpec) -> Result<Arc<dyn Containerizer>, String> {
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

    fn spawn_runner(
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

    // ---- status updates ----

    fn uuid(&self) -> String {
        let mut bytes = [0u8; 16];
        self.env.rng().fill_bytes(&mut bytes);
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Records a state change: into the task's stream (checkpointed and synced), into the task's
    /// checkpoint, then to the master if the stream had nothing in flight.
    async fn status(
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

    async fn status_for(
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
    async fn status_with_health(
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
        let snapshot = self.manager.snapshot();
        self.persist(STATUS_PATH, snapshot).await?;
        if let Some(entry) = self.tasks.get_mut(task_id) {
            entry.checkpoint.state = state;
            self.persist_task(task_id).await?;
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
        self.env.emit(event);
        if let Some(update) = send {
            if matches!(self.link, Link::Registered { .. }) {
                self.send(AgentMessage::Update(update)).await;
            }
        }
        Ok(())
    }

    // ---- tasks ----

    async fn on_task_event(&mut self, event: TaskEvent) -> Result<(), AgentError> {
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
                    self.persist_task(&task_id).await?;
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
    fn monotonic_ms(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts checking a task that has a health check, once it runs (again, after a recovery:
    /// a restarted agent starts its checks afresh, grace period included).
    fn start_health_checks(&mut self, task_id: &str) {
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
        self.env
            .emit(Event::new("health_checking").with("task", task_id));
    }

    /// A check's outcome: a change of health goes out as a TASK_RUNNING update with `healthy`;
    /// too many failures in a row kill the task.
    async fn on_health(
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
            self.env.emit(
                Event::new("task_unhealthy_kill")
                    .with("task", task_id)
                    .with("failures", failures),
            );
            self.kill_task(&framework_id, task_id).await?;
        }
        Ok(())
    }

    async fn run_task(
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
            TaskEntry {
                checkpoint,
                spec: spec.as_ref().ok().cloned(),
                kill: None,
                kill_message: None,
                health: None,
                checker: None,
                killed_unhealthy: false,
            },
        );
        self.persist_task(&task_id).await?;
        let (cpus, mem) = spec
            .as_ref()
            .map(|s| (s.cpus, s.mem_mb))
            .unwrap_or_default();
        self.env.emit(
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
                self.spawn_runner(task_id, launch, kill_rx);
                Ok(())
            }
        }
    }

    async fn kill_task(&mut self, framework_id: &str, task_id: &str) -> Result<(), AgentError> {
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
                    self.env
                        .emit(Event::new("task_killing").with("task", task_id));
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

    async fn shutdown_framework(&mut self, framework_id: &str) -> Result<(), AgentError> {
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

    async fn acknowledge(&mut self, task_id: &str, uuid: &str) -> Result<(), AgentError> {
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
        let snapshot = self.manager.snapshot();
        self.persist(STATUS_PATH, snapshot).await?;
        // From here the update is never sent again (invariants read this).
        self.env.emit(
            Event::new("task_acked")
                .with("task", task_id)
                .with("uuid", uuid),
        );
        if !self.manager.has_stream(task_id) {
            if let Some(entry) = self.tasks.remove(task_id) {
                self.forget(&task_path(task_id)).await?;
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
            self.send(AgentMessage::Update(next)).await;
        }
        Ok(())
    }

    // ---- the master link ----

    /// Draws the next attempt's delay below the current bound, then doubles the bound.
    fn schedule_retry(&mut self) {
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
    fn lose(&mut self, reason: &str) {
        if self.link.connected() {
            self.env
                .emit(Event::new("master_lost").with("reason", reason));
        }
        self.schedule_retry();
    }

    fn on_leader(&mut self, leader: Leader) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        // Any link was made to an earlier leader (maybe a dead master at the same address).
        if self.link.target().is_some() || self.leader.is_some() {
            if self.link.connected() {
                self.env
                    .emit(Event::new("master_lost").with("reason", "new_leader"));
            }
            self.backoff = self.config.registration_backoff;
            self.schedule_retry();
        }
    }

    fn deadline(&self) -> Option<Instant> {
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

    async fn on_timer(&mut self) -> Result<(), AgentError> {
        let now = Instant::now();
        match &self.link {
            Link::Idle { retry_at } if *retry_at <= now => {
                if let Some((host, port)) = self.leader.clone().map(|found| found.endpoint) {
                    let env = self.env.clone();
                    let timeout = self.config.connect_timeout;
                    let target = (host.clone(), port);
                    self.link = Link::Connecting {
                        target,
                        attempt: Box::pin(async move { env.connect(&host, port, timeout).await }),
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
                self.send(AgentMessage::Update(update)).await;
            }
        }
        Ok(())
    }

    fn registration(&self) -> Registration {
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
    async fn send(&mut self, message: AgentMessage) -> bool {
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

    async fn on_link(&mut self, input: LinkInput) -> Result<(), AgentError> {
        match input {
            LinkInput::Connected(Ok(stream)) => {
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
                    conn: Box::new(Framed::new(stream, FrameCodec::default())),
                    deadline: Instant::now() + self.config.registration_timeout,
                };
                let registration = self.registration();
                self.send(AgentMessage::Register(registration)).await;
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

    async fn on_message(&mut self, message: MasterMessage) -> Result<(), AgentError> {
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
                    )
                    .await?;
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
                self.env
                    .emit(Event::new("agent_registered").with("agent_id", &agent_id));
                for update in self.manager.resend_all(self.env.unix_ms()) {
                    if !self.send(AgentMessage::Update(update)).await {
                        break;
                    }
                }
            }
            MasterMessage::Refused { reason } => {
                self.env.emit(Event::new("agent_refused"));
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
            } => self.run_task(framework_id, framework, task).await?,
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

    // ---- /state ----

    fn state_json(&self) -> Json {
        let agent_id = self.agent_id.clone().unwrap_or_default();
        let running = self.tasks.values().map(|e| TaskView {
            task_id: &e.checkpoint.task_id,
            framework_id: &e.checkpoint.framework_id,
            framework: &e.checkpoint.framework,
            task: &e.checkpoint.task,
            state: e.checkpoint.state,
            directory: e.spec.as_ref().and_then(|s| s.sandbox.as_deref()),
        });
        let completed = self.completed.iter().map(|c| TaskView {
            task_id: &c.task_id,
            framework_id: &c.framework_id,
            framework: &c.framework,
            task: &c.task,
            state: c.state,
            directory: c.sandbox.as_deref(),
        });
        let attributes = attributes_json(&self.config.attributes).unwrap_or_default();
        let frameworks: BTreeSet<&str> = self
            .tasks
            .values()
            .map(|e| e.checkpoint.framework_id.as_str())
            .collect();
        json!({
            "version": drover_core::v1::MESOS_VERSION,
            "id": agent_id,
            "pid": format!(
                "slave(1)@{}:{}",
                self.config.address().unwrap_or_else(|| self.config.hostname.clone()),
                self.port
            ),
            "hostname": self.config.hostname,
            "port": self.port,
            "resources": resources_json(&self.config.resources),
            "attributes": attributes,
            "master_hostname": self.master_hostname,
            "registered": matches!(self.link, Link::Registered { .. }),
            "recover": match self.config.recover {
                RecoverMode::Reconnect => "reconnect",
                RecoverMode::Cleanup => "cleanup",
            },
            "active_frameworks": frameworks.len(),
            "frameworks": frameworks_json(running.chain(completed), &agent_id),
            "completed_frameworks": [],
        })
    }

    /// The sandboxes of the tasks `/state` lists, for the file endpoints.
    fn sandboxes(&self) -> Vec<Sandbox> {
        let running = self.tasks.values().filter_map(|e| {
            let directory = e.spec.as_ref()?.sandbox.clone()?;
            Some(Sandbox::new(
                directory,
                &e.checkpoint.framework_id,
                &e.checkpoint.task_id,
            ))
        });
        let completed = self.completed.iter().filter_map(|c| {
            let directory = c.sandbox.clone()?;
            Some(Sandbox::new(directory, &c.framework_id, &c.task_id))
        });
        running.chain(completed).collect()
    }
}
