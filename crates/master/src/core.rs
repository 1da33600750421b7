//! The leading master's state and what it does with each input: agents, frameworks, offers,
//! tasks and status updates. No I/O here but sending on channels: the daemon (`daemon.rs`) feeds
//! inputs in, owns the sockets and writes the registry.
//!
//! Status updates: an agent sends each update until acknowledged; the master forwards every copy
//! to the framework's current stream (at least once, as Mesos: the framework's acknowledgement of
//! an earlier copy may have been lost; one the framework already acknowledged is acknowledged to
//! the agent at once instead), and forwards the framework's acknowledgement to the agent. Resources of a task go back to the
//! allocator when its terminal update arrives.

use std::collections::{BTreeMap, BTreeSet};

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
    conn: Option<(u64, mpsc::Sender<MasterMessage>)>,
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
    info: Json,
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
    offers: BTreeMap<String, OfferRecord>,
    allocator: Allocator,
    /// Agents the registry knows from before this term, and which of them came back.
    registry: BTreeMap<String, RegistryEntry>,
    /// Offers wait until the registry's agents are mostly back (or the timeout passes).
    recovering_until_ms: Option<u64>,
    elected_ms: u64,
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
            offers: BTreeMap::new(),
            allocator: Allocator::default(),
            registry,
            recovering_until_ms,
            elected_ms: now_ms,
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

    // ---------------------------------------------------------------- agents

    /// An agent (re-)registers on connection `conn`. Returns what to answer (the daemon has
    /// made the registry write durable before this is called for a new agent: see
    /// [`Master::admit_id`]).
    pub fn agent_registered(
        &mut self,
        conn: u64,
        agent_id: &str,
        registration: &Registration,
        tx: mpsc::Sender<MasterMessage>,
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
        let _ = tx.try_send(MasterMessage::Registered {
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
    fn reconcile_agent_tasks(
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
            .tasks
            .iter()
            .filter(|(key, t)| {
                t.agent_id == agent_id && !t.state.is_terminal() && !reported.contains(*key)
            })
            .map(|(key, _)| key.clone())
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
                self.tasks.insert(
                    key.clone(),
                    Task {
                        framework_id: report.framework_id.clone(),
                        agent_id: agent_id.to_string(),
                        name: task.name.clone(),
                        state: report.state,
                        resources: resources.clone(),
                        info: report.task.clone(),
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

    fn check_recovered(&mut self, now_ms: u64) {
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

    fn mark_registry(&mut self, agent_id: &str, state: &str) {
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

    fn hostname_of(&self, agent_id: &str) -> String {
        self.agents
            .get(agent_id)
            .map(|a| a.hostname.clone())
            .unwrap_or_else(|| agent_id.to_string())
    }

    /// Offers on the agent are rescinded and it is offered no more until it is back.
    fn agent_lost_connection(&mut self, agent_id: &str) {
        self.rescind_where(|o| o.agent_id == agent_id);
        self.allocator.remove_agent(agent_id);
        for task in self.tasks.values_mut() {
            if task.agent_id == agent_id {
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
        let status = TaskStatus {
            task_id: Id::new(&update.task_id),
            state: update.state,
            message: update.message.clone(),
            source: Some("SOURCE_EXECUTOR".into()),
            reason: update.reason.clone(),
            agent_id: Some(Id::new(&agent_id)),
            timestamp: Some(update.timestamp_ms as f64 / 1000.0),
            uuid: Some(b64(&update.uuid)),
            healthy: update.healthy,
            container_status: v1::ContainerStatus::with_addresses(&update.ip_addresses),
        };
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

    fn emit_task_update(&self, task_id: &str, state: TaskState) {
        self.env.emit(
            NodeEvent::new("task_update")
                .with("task", task_id)
                .with("state", state_name(state)),
        );
    }

    fn agent_of_conn(&self, conn: u64) -> Option<String> {
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

    fn send_to_agent(&self, agent_id: &str, message: MasterMessage) -> bool {
        match self.agents.get(agent_id).and_then(|a| a.conn.as_ref()) {
            Some((_, tx)) => tx.try_send(message).is_ok(),
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
                let _ = tx.try_send(MasterMessage::Ping { seq });
            }
        }
    }

    fn mark_unreachable(&mut self, agent_id: &str) {
        self.agent_lost_connection(agent_id);
        if let Some(agent) = self.agents.get_mut(agent_id) {
            agent.reachable = false;
        }
        self.mark_registry(agent_id, "unreachable");
        self.operator_agent_removed(agent_id);
        self.env
            .emit(NodeEvent::new("agent_unreachable").with("agent", self.hostname_of(agent_id)));
        let keys: Vec<(String, String)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.agent_id == agent_id && !t.state.is_terminal())
            .map(|(k, _)| k.clone())
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
    fn lost_state(&self, framework_id: &str, aware: TaskState) -> TaskState {
        if self.partition_aware(framework_id) {
            aware
        } else {
            TaskState::TaskLost
        }
    }

    fn partition_aware(&self, framework_id: &str) -> bool {
        self.frameworks
            .get(framework_id)
            .is_some_and(Framework::partition_aware)
    }

    /// A status the master itself decides (no agent involved, nothing to acknowledge).
    fn master_update(
        &mut self,
        key: &(String, String),
        state: TaskState,
        reason: &str,
        message: &str,
    ) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let was_terminal = task.state.is_terminal();
        task.state = state;
        let status = TaskStatus {
            task_id: Id::new(&key.1),
            state,
            message: Some(message.into()),
            source: Some("SOURCE_MASTER".into()),
            reason: Some(reason.into()),
            agent_id: Some(Id::new(&task.agent_id)),
            timestamp: Some(self.env.unix_ms() as f64 / 1000.0),
            uuid: None,
            healthy: None,
            container_status: None,
        };
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
    fn tell_state(&mut self, key: &(String, String), reason: &str) {
        if let Some(status) = self.master_status(key, reason) {
            self.send_event(&key.0, &Event::update(status));
        }
    }

    /// A status of the task's current state, from the master.
    fn master_status(&self, key: &(String, String), reason: &str) -> Option<TaskStatus> {
        let task = self.tasks.get(key)?;
        Some(TaskStatus {
            task_id: Id::new(&key.1),
            state: task.state,
            message: None,
            source: Some("SOURCE_MASTER".into()),
            reason: Some(reason.into()),
            agent_id: Some(Id::new(&task.agent_id)),
            timestamp: Some(self.env.unix_ms() as f64 / 1000.0),
            uuid: None,
            healthy: None,
            container_status: None,
        })
    }

    fn send_event(&self, framework_id: &str, event: &Event) -> bool {
        match self
            .frameworks
            .get(framework_id)
            .and_then(|f| f.stream.as_ref())
        {
            Some((_, tx)) => tx.try_send(record(event)).is_ok(),
            None => false,
        }
    }

    // ---------------------------------------------------------------- frameworks

    fn add_framework(
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
    fn resend_pending(&mut self, framework_id: &str) {
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
            let status = TaskStatus {
                task_id: Id::new(&update.task_id),
                state: update.state,
                message: update.message.clone(),
                source: Some("SOURCE_EXECUTOR".into()),
                reason: update.reason.clone(),
                agent_id: Some(Id::new(&task.agent_id)),
                timestamp: Some(update.timestamp_ms as f64 / 1000.0),
                uuid: Some(b64(&update.uuid)),
                healthy: None,
                container_status: None,
            };
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

    fn refuse_ms(&self, filters: Option<&v1::Filters>) -> u64 {
        match filters.and_then(|f| f.refuse_seconds) {
            Some(s) if s.is_finite() && s >= 0.0 => (s * 1000.0).min(1e12) as u64,
            _ => self.tuning.default_refuse_ms,
        }
    }

    fn decline_offer(&mut self, framework_id: &str, offer_id: &str, refuse_ms: u64, now_ms: u64) {
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

    fn accept(
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
            .iter()
            .filter(|op| op.kind == "LAUNCH")
            .filter_map(|op| op.launch.as_ref())
            .flat_map(|l| l.task_infos.iter().cloned())
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
        let framework_json = self
            .frameworks
            .get(framework_id)
            .and_then(|f| serde_json::to_value(&f.info).ok())
            .unwrap_or(Json::Null);
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
            let task_json = serde_json::to_value(&task).unwrap_or(Json::Null);
            self.tasks.insert(
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
    fn unlaunched(
        &mut self,
        framework_id: &str,
        task: &v1::TaskInfo,
        state: TaskState,
        reason: &str,
        message: &str,
    ) {
        let status = TaskStatus {
            task_id: task.task_id.clone(),
            state,
            message: Some(message.into()),
            source: Some("SOURCE_MASTER".into()),
            reason: Some(reason.into()),
            agent_id: Some(task.agent_id.clone()),
            timestamp: Some(self.env.unix_ms() as f64 / 1000.0),
            uuid: None,
            healthy: None,
            container_status: None,
        };
        self.emit_task_update(&task.task_id.value, state);
        self.send_event(framework_id, &Event::update(status));
    }

    fn kill(&mut self, framework_id: &str, kill: &v1::Kill) {
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

    fn acknowledge(&mut self, framework_id: &str, ack: &v1::Acknowledge) -> Result<(), ApiError> {
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

    fn reconcile(&mut self, framework_id: &str, reconcile: &v1::Reconcile) {
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
                    task_id: Id::new(task_id),
                    state: task.state,
                    message: None,
                    source: Some("SOURCE_MASTER".into()),
                    reason: Some("REASON_RECONCILIATION".into()),
                    agent_id: Some(Id::new(&task.agent_id)),
                    timestamp: None,
                    uuid: None,
                    healthy: None,
                    container_status: None,
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
                    statuses.push(TaskStatus {
                        task_id: asked.task_id.clone(),
                        state,
                        message: Some("Reconciliation: task is unknown".into()),
                        source: Some("SOURCE_MASTER".into()),
                        reason: Some("REASON_RECONCILIATION".into()),
                        agent_id: asked.agent_id.clone(),
                        timestamp: Some(self.env.unix_ms() as f64 / 1000.0),
                        uuid: None,
                        healthy: None,
                        container_status: None,
                    });
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

    // ---------------------------------------------------------------- offers

    /// Rescinds every outstanding offer that matches.
    fn rescind_where(&mut self, matches: impl Fn(&OfferRecord) -> bool) {
        let offers: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| matches(o))
            .map(|(id, _)| id.clone())
            .collect();
        for offer in offers {
            self.rescind(&offer);
        }
    }

    fn rescind(&mut self, offer_id: &str) {
        let Some(offer) = self.offers.remove(offer_id) else {
            return;
        };
        self.counters.offers_rescinded += 1;
        self.allocator
            .recover(&offer.framework_id, &offer.agent_id, &offer.resources, None);
        self.send_event(&offer.framework_id, &Event::rescind(Id::new(offer_id)));
    }

    /// The periodic work: heartbeats, dropped streams, failover timeouts, offer timeouts.
    pub fn tick(&mut self, now_ms: u64) {
        // Streams whose HTTP client went away.
        let dropped: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.stream.as_ref().is_some_and(|(_, tx)| tx.is_closed()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dropped {
            self.framework_disconnected(&id, now_ms);
        }
        let expired: Vec<String> = self
            .frameworks
            .iter()
            .filter(|(_, f)| {
                !f.completed
                    && f.disconnected_at_ms
                        .is_some_and(|at| now_ms >= at + f.failover_timeout_ms())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.teardown(&id, "failover timeout");
        }
        if let Some(timeout) = self.tuning.offer_timeout_ms {
            let old: Vec<String> = self
                .offers
                .iter()
                .filter(|(_, o)| now_ms >= o.created_ms + timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for offer in old {
                self.rescind(&offer);
            }
        }
        self.check_recovered(now_ms);
    }

    pub fn heartbeat(&mut self) {
        self.operator_heartbeat();
        let heartbeat = record(&Event::heartbeat());
        for f in self.frameworks.values() {
            if let Some((_, tx)) = f.stream.as_ref() {
                let _ = tx.try_send(heartbeat.clone());
            }
        }
    }

    fn framework_disconnected(&mut self, framework_id: &str, now_ms: u64) {
        self.rescind_where(|o| o.framework_id == framework_id);
        self.allocator.deactivate(framework_id);
        if let Some(f) = self.frameworks.get_mut(framework_id) {
            f.stream = None;
            f.disconnected_at_ms = Some(now_ms);
        }
        self.env.emit(NodeEvent::new("framework_disconnected"));
    }

    /// One allocation cycle: offers go out to frameworks.
    pub fn allocate(&mut self, now_ms: u64) {
        if self.recovering_until_ms.is_some() {
            return;
        }
        let allocations = {
            let mut rng = self.env.rng();
            self.allocator.allocate(now_ms, &mut *rng)
        };
        self.counters.allocation_runs += 1;
        let mut batches: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for allocation in allocations {
            let Some(agent) = self.agents.get(&allocation.agent) else {
                continue;
            };
            let role = self
                .frameworks
                .get(&allocation.framework)
                .map(|f| f.role.clone())
                .unwrap_or_else(|| "*".into());
            let attributes = attributes_json(&agent.attributes);
            let hostname = agent.hostname.clone();
            let url = v1::Url {
                scheme: "http".into(),
                address: v1::Address {
                    hostname: agent.hostname.clone(),
                    // An address, or nothing when the agent is reached by its name.
                    ip: agent
                        .address
                        .parse::<std::net::IpAddr>()
                        .map(|_| agent.address.clone())
                        .unwrap_or_default(),
                    port: agent.port,
                },
                path: "/slave(1)".into(),
            };
            let id = self.fresh_id("O");
            batches
                .entry(allocation.framework.clone())
                .or_default()
                .push(v1::Offer {
                    id: Id::new(&id),
                    framework_id: Id::new(&allocation.framework),
                    agent_id: Id::new(&allocation.agent),
                    hostname,
                    resources: v1::to_mesos(&allocation.resources, Some(&role)),
                    attributes,
                    allocation_info: Some(v1::AllocationInfo { role }),
                    url: Some(url),
                });
            self.offers.insert(
                id,
                OfferRecord {
                    framework_id: allocation.framework,
                    agent_id: allocation.agent,
                    resources: allocation.resources,
                    created_ms: now_ms,
                },
            );
        }
        for (framework, offers) in batches {
            self.counters.offers_sent += offers.len() as u64;
            if !self.send_event(&framework, &Event::offers(offers.clone())) {
                for offer in offers {
                    self.rescind(&offer.id.value);
                }
            }
        }
    }

    // ---------------------------------------------------------------- reports

    /// `/master/state` in Mesos' shape.
    pub fn state_json(&self, now_unix_ms: u64) -> Json {
        let slaves: Vec<Json> = self
            .agents
            .iter()
            .map(|(id, a)| {
                let used = self.used_on(id);
                json!({
                    "id": id,
                    "hostname": a.hostname,
                    "port": a.port,
                    "pid": format!("slave(1)@{}:{}", a.address, a.port),
                    "resources": resources_json(&a.resources),
                    "used_resources": resources_json(&used),
                    "attributes": attributes_map(&a.attributes),
                    "active": a.conn.is_some(),
                    "registered_time": a.registered_at_ms as f64 / 1000.0,
                })
            })
            .collect();
        let framework_json = |id: &str, f: &Framework| {
            let tasks: Vec<Json> = self
                .tasks
                .iter()
                .filter(|((fid, _), t)| fid == id && !t.state.is_terminal())
                .map(|((_, tid), t)| task_json(tid, t))
                .collect();
            let completed: Vec<Json> = self
                .tasks
                .iter()
                .filter(|((fid, _), t)| fid == id && t.state.is_terminal())
                .map(|((_, tid), t)| task_json(tid, t))
                .collect();
            let offers: Vec<Json> = self
                .offers
                .iter()
                .filter(|(_, o)| o.framework_id == id)
                .map(|(oid, o)| json!({"id": oid, "slave_id": o.agent_id, "resources": resources_json(&o.resources)}))
                .collect();
            json!({
                "id": id,
                "name": f.info.name,
                "user": f.info.user,
                "role": f.role,
                "hostname": f.info.hostname,
                "failover_timeout": f.info.failover_timeout.unwrap_or(0.0),
                "checkpoint": f.info.checkpoint.unwrap_or(false),
                "active": f.stream.is_some() && !f.suppressed,
                "connected": f.stream.is_some(),
                "capabilities": f.info.capabilities.iter().map(|c| c.kind.clone()).collect::<Vec<_>>(),
                "used_resources": resources_json(&self.allocator.allocated_to(id)),
                "tasks": tasks,
                "completed_tasks": completed,
                "offers": offers,
            })
        };
        let frameworks: Vec<Json> = self
            .frameworks
            .iter()
            .filter(|(_, f)| !f.completed)
            .map(|(id, f)| framework_json(id, f))
            .collect();
        let completed: Vec<Json> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.completed)
            .map(|(id, f)| framework_json(id, f))
            .collect();
        json!({
            "version": v1::MESOS_VERSION,
            "id": self.info.id,
            "pid": self.info.pid,
            "hostname": self.info.hostname,
            "leader": self.info.pid,
            "leader_info": self.info,
            "elected_time": now_unix_ms as f64 / 1000.0,
            "activated_slaves": self.agents.values().filter(|a| a.conn.is_some()).count(),
            "deactivated_slaves": self.agents.values().filter(|a| a.conn.is_none()).count(),
            "unreachable_slaves": self.agents.values().filter(|a| !a.reachable).count(),
            "slaves": slaves,
            "frameworks": frameworks,
            "completed_frameworks": completed,
            "unregistered_frameworks": [],
        })
    }

    fn used_on(&self, agent_id: &str) -> Resources {
        let mut used = Resources::new();
        for t in self.tasks.values() {
            if t.agent_id == agent_id && !t.state.is_terminal() {
                used.add(&t.resources);
            }
        }
        used
    }

    /// `/metrics/snapshot` keys of Mesos' master and allocator.
    pub fn metrics(&self, uptime_secs: f64) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: f64| {
            m.insert(k.to_string(), v);
        };
        put("master/elected", 1.0);
        put("master/uptime_secs", uptime_secs);
        put(
            "master/slaves_active",
            self.agents.values().filter(|a| a.conn.is_some()).count() as f64,
        );
        put(
            "master/slaves_connected",
            self.agents.values().filter(|a| a.conn.is_some()).count() as f64,
        );
        put(
            "master/slaves_disconnected",
            self.agents.values().filter(|a| a.conn.is_none()).count() as f64,
        );
        put(
            "master/slaves_unreachable",
            self.agents.values().filter(|a| !a.reachable).count() as f64,
        );
        let active = self.frameworks.values().filter(|f| !f.completed);
        put(
            "master/frameworks_active",
            active.clone().filter(|f| f.stream.is_some()).count() as f64,
        );
        put(
            "master/frameworks_connected",
            active.clone().filter(|f| f.stream.is_some()).count() as f64,
        );
        put(
            "master/frameworks_disconnected",
            active.filter(|f| f.stream.is_none()).count() as f64,
        );
        put(
            "master/frameworks_inactive",
            self.frameworks.values().filter(|f| f.completed).count() as f64,
        );
        put("master/outstanding_offers", self.offers.len() as f64);
        for (state, key) in [
            (TaskState::TaskStaging, "master/tasks_staging"),
            (TaskState::TaskStarting, "master/tasks_starting"),
            (TaskState::TaskRunning, "master/tasks_running"),
            (TaskState::TaskKilling, "master/tasks_killing"),
            (TaskState::TaskUnreachable, "master/tasks_unreachable"),
        ] {
            put(
                key,
                self.tasks.values().filter(|t| t.state == state).count() as f64,
            );
        }
        for (state, key) in [
            (TaskState::TaskFinished, "master/tasks_finished"),
            (TaskState::TaskFailed, "master/tasks_failed"),
            (TaskState::TaskKilled, "master/tasks_killed"),
            (TaskState::TaskLost, "master/tasks_lost"),
            (TaskState::TaskError, "master/tasks_error"),
            (TaskState::TaskDropped, "master/tasks_dropped"),
            (TaskState::TaskGone, "master/tasks_gone"),
        ] {
            put(
                key,
                self.counters.terminal.get(&state).copied().unwrap_or(0) as f64,
            );
        }
        let mut total = Resources::new();
        let mut used = Resources::new();
        for (id, a) in &self.agents {
            if a.conn.is_some() {
                total.add(&a.resources);
                used.add(&self.used_on(id));
            }
        }
        for name in ["cpus", "mem", "disk", "gpus"] {
            let t = total.scalar(name).as_f64();
            let u = used.scalar(name).as_f64();
            put(&format!("master/{name}_total"), t);
            put(&format!("master/{name}_used"), u);
            put(
                &format!("master/{name}_percent"),
                if t > 0.0 { u / t } else { 0.0 },
            );
        }
        put(
            "master/messages_status_update",
            self.counters.updates_forwarded as f64,
        );
        put("master/offers_sent", self.counters.offers_sent as f64);
        put(
            "master/offers_declined",
            self.counters.offers_declined as f64,
        );
        put(
            "master/offers_rescinded",
            self.counters.offers_rescinded as f64,
        );
        put("master/tasks_launched", self.counters.tasks_launched as f64);
        put("master/invalid_calls", self.counters.invalid_calls as f64);
        put(
            "allocator/mesos/allocation_runs",
            self.counters.allocation_runs as f64,
        );
        put(
            "allocator/mesos/allocation_run_ms",
            self.counters.allocation_run_ms_last,
        );
        put(
            "allocator/mesos/allocation_run_ms/count",
            self.counters.allocation_runs as f64,
        );
        put(
            "allocator/mesos/allocation_run_ms/mean",
            if self.counters.allocation_runs > 0 {
                self.counters.allocation_run_ms_total / self.counters.allocation_runs as f64
            } else {
                0.0
            },
        );
        m
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

/// One entry of a task's `statuses` in `/master/state` (`healthy` only when the task is checked).
fn status_json(s: &TaskStatus) -> Json {
    let mut out = json!({"state": state_name(s.state), "timestamp": s.timestamp});
    if let Some(healthy) = s.healthy {
        out["healthy"] = json!(healthy);
    }
    if let Some(container) = &s.container_status {
        out["container_status"] = json!(container);
    }
    out
}

fn task_json(task_id: &str, t: &Task) -> Json {
    json!({
        "id": task_id,
        "name": t.name,
        "framework_id": t.framework_id,
        "slave_id": t.agent_id,
        "state": state_name(t.state),
        "resources": resources_json(&t.resources),
        // The first TASK_RUNNING (when it started) and the latest, of Mesos' whole history.
        "statuses": t
            .first_running
            .iter()
            .filter(|first| t.last_status.as_ref() != Some(*first))
            .chain(t.last_status.iter())
            .map(status_json)
            .collect::<Vec<_>>(),
        "container": t.info.get("container").cloned().unwrap_or(Json::Null),
    })
}

/// `{"cpus": 4.0, "mem": 8192.0, "ports": "[31000-32000]"}`, as Mesos' state endpoints show.
pub fn resources_json(resources: &Resources) -> Json {
    let mut out = serde_json::Map::new();
    for name in ["cpus", "mem", "disk", "gpus"] {
        out.insert(name.into(), json!(resources.scalar(name).as_f64()));
    }
    let ports = resources.ranges("ports");
    if !ports.is_empty() {
        let text: Vec<String> = ports.iter().map(|(a, b)| format!("{a}-{b}")).collect();
        out.insert("ports".into(), json!(format!("[{}]", text.join(", "))));
    }
    Json::Object(out)
}

/// `rack:r1;zone:a` → `{"rack": "r1", "zone": "a"}`.
fn attributes_map(text: &str) -> Json {
    let mut out = serde_json::Map::new();
    for item in text.split(';').filter(|s| !s.trim().is_empty()) {
        if let Some((k, v)) = item.split_once(':') {
            out.insert(k.trim().to_string(), json!(v.trim()));
        }
    }
    Json::Object(out)
}

/// Attributes as Mesos' `Attribute` messages (TEXT, or SCALAR when numeric).
fn attributes_json(text: &str) -> Vec<Json> {
    text.split(';')
        .filter_map(|item| item.split_once(':'))
        .map(|(k, v)| {
            let (k, v) = (k.trim(), v.trim());
            match v.parse::<f64>() {
                Ok(n) => json!({"name": k, "type": "SCALAR", "scalar": {"value": n}}),
                Err(_) => json!({"name": k, "type": "TEXT", "text": {"value": v}}),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
