//! The leading master's state and what it does with each input: agents, frameworks, offers,
//! tasks and status updates. No I/O here but sending on channels: the daemon (`daemon.rs`) feeds
//! inputs in, owns the sockets and writes the registry.
//!
//! Status updates: an agent sends each update until acknowledged; the master forwards every copy
//! to the framework's current stream (at least once, as Mesos: the framework's acknowledgement of
//! an earlier copy may have been lost; one the framework already acknowledged is acknowledged to
//! the agent at once instead), and forwards the framework's acknowledgement to the agent.
//! Resources of a task go back to the allocator when its terminal update arrives.
//!
//! This file holds the state; what is done with it is split by what it is about:
//! `agents`, `frameworks`, `offers`, `reports` and `operator` (the event stream).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use drover_core::agent_proto::{MasterMessage, Registration, StatusUpdate, TaskReport};
use drover_core::resources::Resources;
use drover_core::task::TaskState;
use drover_core::v1::{self, Call, CallType, Event, FrameworkInfo, Id, MasterInfo, TaskStatus};
use drover_core::{Env, Event as NodeEvent};
use rand::RngCore;
use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use crate::allocator::Allocator;

mod operator;

/// The master's tunables, with Mesos' defaults.
#[derive(Clone, Debug)]
pub struct Tuning {
    pub allocation_interval_ms: u64,
    /// How often agents are pinged; `max_agent_ping_timeouts` misses make one unreachable.
    pub agent_ping_timeout_ms: u64,
    pub max_agent_ping_timeouts: u32,
    /// After a failover, offers wait until this long has passed or 80% of the registry's agents
    /// are back.
    pub agent_reregister_timeout_ms: u64,
    /// Offers not answered within this are rescinded (none by default, as in Mesos).
    pub offer_timeout_ms: Option<u64>,
    pub heartbeat_interval_ms: u64,
    /// The default of a `Filters.refuse_seconds` the framework did not set.
    pub default_refuse_ms: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            allocation_interval_ms: 1000,
            agent_ping_timeout_ms: 15_000,
            max_agent_ping_timeouts: 5,
            agent_reregister_timeout_ms: 600_000,
            offer_timeout_ms: None,
            heartbeat_interval_ms: 15_000,
            default_refuse_ms: 5000,
        }
    }
}

/// What a scheduler API call can fail with: an HTTP status and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// A framework's event stream: RecordIO records for its HTTP response body.
pub type StreamSender = mpsc::Sender<Bytes>;

/// What the registry (in coord) should record about an agent.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryEntry {
    pub hostname: String,
    /// `admitted` or `unreachable`.
    pub state: String,
}

/// A change the daemon must make durable in the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryWrite {
    pub agent_id: String,
    pub entry: RegistryEntry,
}

struct Agent {
    hostname: String,
    /// Where it is reached (its `--ip`); its host name when it gave none.
    address: String,
    port: u16,
    resources: Resources,
    attributes: String,
    /// The connection the agent is on, and where to send it messages.
    conn: Option<(u64, mpsc::UnboundedSender<MasterMessage>)>,
    reachable: bool,
    awaiting_pong: bool,
    missed_pings: u32,
    ping_seq: u64,
    registered_at_ms: u64,
}

struct Framework {
    info: FrameworkInfo,
    role: String,
    stream: Option<(String, StreamSender)>,
    /// When it lost its stream (monotonic ms); torn down after its failover timeout.
    disconnected_at_ms: Option<u64>,
    suppressed: bool,
    /// Ended (torn down): kept for `/master/state`'s completed frameworks.
    completed: bool,
}

impl Framework {
    fn partition_aware(&self) -> bool {
        self.info.has_capability("PARTITION_AWARE")
    }

    fn failover_timeout_ms(&self) -> u64 {
        let seconds = self.info.failover_timeout.unwrap_or(0.0);
        if seconds.is_finite() && seconds > 0.0 {
            (seconds * 1000.0).min(1e15) as u64
        } else {
            0
        }
    }
}

struct Task {
    framework_id: String,
    agent_id: String,
    name: String,
    state: TaskState,
    resources: Resources,
    /// The TaskInfo as the framework sent it (shared with the RunTask message).
    info: Arc<Json>,
    /// The update the agent has in flight for this task, its uuid as the agent wrote it, and
    /// the stream it was forwarded on.
    in_flight: Option<(StatusUpdate, Option<String>)>,
    /// Uuids the framework acknowledged (so an agent's retry is acknowledged at once).
    acked: BTreeSet<String>,
    /// The latest status, as reconciliation answers it.
    last_status: Option<TaskStatus>,
    /// The first TASK_RUNNING status (when it started, as Mesos' UI shows it).
    first_running: Option<TaskStatus>,
    /// Whether its resources count as allocated in the allocator (not while its agent is away).
    counted: bool,
}

struct OfferRecord {
    framework_id: String,
    agent_id: String,
    resources: Resources,
    created_ms: u64,
}

/// What happened to the master's leadership.
pub struct Counters {
    pub allocation_runs: u64,
    pub allocation_run_ms_last: f64,
    pub allocation_run_ms_total: f64,
    pub offers_sent: u64,
    pub offers_declined: u64,
    pub offers_rescinded: u64,
    pub tasks_launched: u64,
    pub updates_forwarded: u64,
    pub invalid_calls: u64,
    pub terminal: BTreeMap<TaskState, u64>,
}

/// The leading master.
pub struct Master {
    env: Env,
    pub tuning: Tuning,
    pub info: MasterInfo,
    agents: BTreeMap<String, Agent>,
    frameworks: BTreeMap<String, Framework>,
    tasks: BTreeMap<(String, String), Task>,
    /// The keys of `tasks` by agent (a task's agent never changes once it is recorded), so
    /// what concerns one agent does not walk every task of the cluster.
    agent_tasks: BTreeMap<String, BTreeSet<(String, String)>>,
    offers: BTreeMap<String, OfferRecord>,
    allocator: Allocator,
    /// Agents the registry knows from before this term, and which of them came back.
    registry: BTreeMap<String, RegistryEntry>,
    /// Offers wait until the registry's agents are mostly back (or the timeout passes).
    recovering_until_ms: Option<u64>,
    elected_ms: u64,
    /// Whether this leader has sent any offer yet (its first is an event: offers flow again).
    offered: bool,
    next_id: u64,
    /// The master's id and a value drawn at this election: ids never repeat when the same
    /// process leads again.
    id_prefix: String,
    pub counters: Counters,
    /// Registry writes the daemon must make.
    pub registry_writes: Vec<RegistryWrite>,
    allocate_soon: bool,
    /// Operator API event streams (see `operator.rs`).
    operators: Vec<StreamSender>,
}

/// An agent's status update as the framework gets it (`SOURCE_EXECUTOR`, with its uuid).
fn executor_status(update: &StatusUpdate, agent_id: &str) -> TaskStatus {
    TaskStatus {
        task_id: Id::new(&update.task_id),
        state: update.state,
        message: update.message.clone(),
        source: Some("SOURCE_EXECUTOR".into()),
        reason: update.reason.clone(),
        agent_id: Some(Id::new(agent_id)),
        timestamp: Some(update.timestamp_ms as f64 / 1000.0),
        uuid: Some(b64(&update.uuid)),
        healthy: update.healthy,
        container_status: v1::ContainerStatus::with_addresses(&update.ip_addresses),
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

fn unb64(text: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl Master {
    /// Records a task (new: its key is not in `tasks`) and indexes it by agent.
    fn insert_task(&mut self, key: (String, String), task: Task) {
        self.agent_tasks
            .entry(task.agent_id.clone())
            .or_default()
            .insert(key.clone());
        self.tasks.insert(key, task);
    }

    /// The tasks recorded on `agent_id`.
    fn tasks_on<'a>(&'a self, agent_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.agent_tasks
            .get(agent_id)
            .into_iter()
            .flatten()
            .filter_map(|key| self.tasks.get(key))
            .filter(move |t| t.agent_id == agent_id)
    }

    /// A master that just won the election. `registry` holds the agents admitted by earlier
    /// leaders; `now_ms` is monotonic time.
    pub fn new(
        env: Env,
        tuning: Tuning,
        info: MasterInfo,
        registry: BTreeMap<String, RegistryEntry>,
        now_ms: u64,
    ) -> Master {
        let id_prefix = format!("{}-{:08x}", info.id, env.rng().next_u32());
        let recovering_until_ms = if registry.values().any(|e| e.state == "admitted") {
            Some(now_ms + tuning.agent_reregister_timeout_ms)
        } else {
            None
        };
        Master {
            env,
            tuning,
            info,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            tasks: BTreeMap::new(),
            agent_tasks: BTreeMap::new(),
            offers: BTreeMap::new(),
            allocator: Allocator::default(),
            registry,
            recovering_until_ms,
            elected_ms: now_ms,
            offered: false,
            next_id: 0,
            id_prefix,
            counters: Counters {
                allocation_runs: 0,
                allocation_run_ms_last: 0.0,
                allocation_run_ms_total: 0.0,
                offers_sent: 0,
                offers_declined: 0,
                offers_rescinded: 0,
                tasks_launched: 0,
                updates_forwarded: 0,
                invalid_calls: 0,
                terminal: BTreeMap::new(),
            },
            registry_writes: Vec::new(),
            allocate_soon: false,
            operators: Vec::new(),
        }
    }

    fn fresh_id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{}-{kind}{}", self.id_prefix, self.next_id)
    }

    fn random_hex(&self) -> String {
        let mut rng = self.env.rng();
        format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
    }

    /// The whole registry as this master knows it.
    pub fn registry_snapshot(&self) -> BTreeMap<String, RegistryEntry> {
        self.registry.clone()
    }

    /// Whether an allocation was asked for by an event since the last one.
    pub fn take_allocate_soon(&mut self) -> bool {
        std::mem::take(&mut self.allocate_soon)
    }
}

/// A v1 event as one RecordIO record.
pub fn record(event: &Event) -> Bytes {
    let body = serde_json::to_vec(event).unwrap_or_default();
    drover_core::recordio::encode(&body)
}

pub fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

mod agents;
mod frameworks;
mod offers;
mod reports;

use reports::attributes_json;
pub use reports::resources_json;
#[cfg(test)]
use reports::task_json;

#[cfg(test)]
mod tests;
