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
use drover_core::frame::{
    decode_message, encode_message, next_within, send_within, FrameCodec, FrameError,
};
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
    decide, stream_path, task_path, AgentIdentity, RecoverMode, Recovery, TaskCheckpoint,
    AGENT_ID_PATH, STATUS_PATH, STREAMS_PREFIX, TASKS_PREFIX,
};
use crate::config::{attributes_json, AgentConfig};
use crate::containerizer::{Containerizer, Exit, Handle, KillSignal, Kind, Launched};
use crate::detector::{Detector, Leader};
use crate::files::Sandbox;
use crate::health::{CheckKind, HealthCheckSpec, HealthTracker};
use crate::journal::{Journal, JOURNAL_PATH};
use crate::state::{frameworks_json, resources_json, TaskView};
use crate::status::StatusUpdateManager;
use crate::task::{parse_task, task_id_of, Container, LaunchSpec, DEFAULT_KILL_GRACE};

mod link;
mod recovery;
mod tasks;
mod updates;

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
        pending: Pending::default(),
        journal: Journal::default(),
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
            // Nothing else is ready: what the inputs so far staged goes to the disk.
            () = std::future::ready(()), if !core.pending.is_empty() => Wake::Flush,
        };
        match wake {
            Wake::Shutdown => {
                core.flush().await?;
                tracing::info!("agent stopping; its tasks keep running");
                return Ok(());
            }
            Wake::Flush => core.flush().await?,
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
        if core.pending.writes.len() >= FLUSH_AT {
            core.flush().await?;
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
    Flush,
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
        /// Connects, and authenticates when the agent has a credential.
        attempt: BoxFuture<'static, io::Result<Box<Conn>>>,
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
    Connected(io::Result<Box<Conn>>),
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

impl TaskEntry {
    /// A task just launched or recovered: no kill asked for, no health check running yet.
    fn new(checkpoint: TaskCheckpoint, spec: Option<LaunchSpec>) -> TaskEntry {
        TaskEntry {
            checkpoint,
            spec,
            kill: None,
            kill_message: None,
            health: None,
            checker: None,
            killed_unhealthy: false,
        }
    }
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
    /// Checkpoints staged and what waits for them.
    pending: Pending,
    /// The checkpoints on the disk.
    journal: Journal,
}

/// What the agent's checkpoints wait for (group commit): the core stages writes as it handles its
/// inputs and appends them to its [`Journal`], synced once, when no input is waiting (or
/// [`FLUSH_AT`] are staged). What must not happen before they are on the disk waits with them: status updates to
/// the master, task launches, and the events that report either.
#[derive(Default)]
struct Pending {
    /// Path -> its new content (None: removed).
    writes: BTreeMap<String, Option<Bytes>>,
    after: Vec<AfterSync>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.after.is_empty()
    }
}

enum AfterSync {
    Emit(Event),
    Update(StatusUpdate),
    Launch {
        task_id: String,
        start: BoxFuture<'static, Result<Launched, String>>,
        kill: KillSignal,
    },
}

/// Staged writes that make the core flush before it takes another input.
const FLUSH_AT: usize = 1024;

fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{state:?}"))
}

impl Core {
    // ---- the Disk ----

    /// Stages `bytes` as the content of `path`: written and synced by the next [`Core::flush`].
    fn persist(&mut self, path: &str, bytes: Vec<u8>) {
        self.pending
            .writes
            .insert(path.to_string(), Some(Bytes::from(bytes)));
    }

    /// Stages the removal of `path`.
    fn forget(&mut self, path: &str) {
        self.pending.writes.insert(path.to_string(), None);
    }

    /// Stages the status update stream of `task_id` (its removal once the stream ended).
    fn persist_stream(&mut self, task_id: &str) {
        match self.manager.stream_snapshot(task_id) {
            Some(bytes) => self.persist(&stream_path(task_id), bytes),
            None => self.forget(&stream_path(task_id)),
        }
    }

    fn persist_task(&mut self, task_id: &str) {
        if let Some(entry) = self.tasks.get(task_id) {
            let bytes = entry.checkpoint.encode();
            self.persist(&task_path(task_id), bytes);
        }
    }

    /// An event, once what was staged before it is on the disk.
    fn emit(&mut self, event: Event) {
        if self.pending.is_empty() {
            self.env.emit(event);
        } else {
            self.pending.after.push(AfterSync::Emit(event));
        }
    }

    /// A status update to the master (while registered), once what was staged is on the disk.
    async fn send_update(&mut self, update: StatusUpdate) -> bool {
        if !self.pending.is_empty() {
            self.pending.after.push(AfterSync::Update(update));
            return true;
        }
        matches!(self.link, Link::Registered { .. })
            && self.send(AgentMessage::Update(update)).await
    }

    /// Starts a task's runner once its checkpoint is on the disk.
    fn launch(
        &mut self,
        task_id: String,
        start: BoxFuture<'static, Result<Launched, String>>,
        kill: KillSignal,
    ) {
        if self.pending.is_empty() {
            self.spawn_runner(task_id, start, kill);
        } else {
            self.pending.after.push(AfterSync::Launch {
                task_id,
                start,
                kill,
            });
        }
    }

    /// Writes and syncs everything staged, all at once (group commit: one append to the journal
    /// and one sync), then does what waited for it, in order.
    async fn flush(&mut self) -> Result<(), AgentError> {
        self.commit(false).await
    }

    /// [`Core::flush`]; with `rewrite` (and whenever the journal has grown enough) the journal
    /// is replaced by one holding only what is live.
    async fn commit(&mut self, rewrite: bool) -> Result<(), AgentError> {
        let writes = std::mem::take(&mut self.pending.writes);
        let appended = self.journal.apply(&writes);
        let disk = self.env.disk();
        let failed = |e: io::Error| AgentError::Checkpoint {
            path: JOURNAL_PATH.to_string(),
            reason: e.to_string(),
        };
        if rewrite || self.journal.wants_compaction() {
            let whole = Bytes::from(self.journal.compacted());
            disk.write(JOURNAL_PATH, whole).await.map_err(failed)?;
            disk.sync(JOURNAL_PATH).await.map_err(failed)?;
        } else if !appended.is_empty() {
            disk.append_and_sync(JOURNAL_PATH, Bytes::from(appended))
                .await
                .map_err(failed)?;
        }
        for after in std::mem::take(&mut self.pending.after) {
            match after {
                AfterSync::Emit(event) => self.env.emit(event),
                AfterSync::Update(update) => {
                    if matches!(self.link, Link::Registered { .. }) {
                        self.send(AgentMessage::Update(update)).await;
                    }
                }
                AfterSync::Launch {
                    task_id,
                    start,
                    kill,
                } => self.spawn_runner(task_id, start, kill),
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
