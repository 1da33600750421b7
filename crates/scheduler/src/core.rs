//! The leading scheduler's state machine: the root group, deployments, instances, the launch
//! queue and offer matching. No I/O: the daemon feeds it API commands, offers, status updates
//! and ticks, persists the [`StoreOp`]s it produces **before** acting on its calls (an instance
//! is written before the ACCEPT that launches it, so a failover never launches it twice), and
//! sends the v1 calls it asks for.
//!
//! How apps converge: every pass ([`Scheduler::converge`]) compares each app's active instances
//! with what it should have now. An app touched by a deployment whose step has not been reached
//! yet keeps what it had before the deployment (a new app: nothing), which is what makes
//! `dependencies` hold: the apps of a later step launch only once every app of the earlier
//! steps runs its target count. Missing instances go to the launch queue (offers fill it);
//! extra ones are killed (`killSelection`); a changed definition is rolled out within the
//! `upgradeStrategy` bounds. A step is done when its apps run exactly their target, all of the
//! current definition and, with health checks, healthy.

use std::collections::{BTreeMap, BTreeSet};

use drover_core::task::TaskState;
use drover_core::v1::{self, Call, CallType, Id};
use drover_core::{Env, Event};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::app::{
    format_version, AppDefinition, ContainerType, DockerNetwork, HealthCheck, HealthProtocol,
    KillSelection,
};
use crate::constraints::{self, Placement};
use crate::group::Group;
use crate::health::{HealthState, Verdict};
use crate::path::PathId;
use crate::plan::{self, Action, DeploymentPlan};
use crate::validation::ApiError;

/// Where everything lives in coord, below the scheduler's `--zk` path.
pub mod keys {
    use crate::path::PathId;

    /// A PathId as one znode name: `/a/b` → `_a_b`, the root → `_` (ids never contain `_`).
    pub fn encode(id: &PathId) -> String {
        format!("_{}", id.safe_path())
    }

    pub fn decode(name: &str) -> Option<PathId> {
        let rest = name.strip_prefix('_')?;
        if rest.is_empty() {
            return Some(PathId::root());
        }
        Some(PathId::from_segments(rest.split('_')))
    }

    pub const APPS: &str = "apps";
    pub const GROUPS: &str = "groups";
    pub const DEPLOYMENTS: &str = "deployments";
    pub const INSTANCES: &str = "instances";
    pub const APP_VERSIONS: &str = "app-versions";
    pub const ALL: [&str; 5] = [APPS, GROUPS, DEPLOYMENTS, INSTANCES, APP_VERSIONS];
}

/// Versions of an app kept for `GET /v2/apps/{id}/versions` (Marathon's `--max_versions` is 50).
pub const MAX_VERSIONS: usize = 50;

/// One write to the store, relative to the scheduler's root path (`apps/_a_b`).
#[derive(Clone, Debug, PartialEq)]
pub enum StoreOp {
    Put { key: String, data: Vec<u8> },
    Delete { key: String },
}

/// The first and the longest wait before tasks a reconciliation left unanswered are asked for again.
const RECONCILE_RETRY_MS: u64 = 5_000;
const RECONCILE_RETRY_MAX_MS: u64 = 60_000;

/// How long instances wait without an offer before REVIVE is sent again.
const REVIVE_REPEAT_MS: u64 = 5_000;

#[derive(Clone, Debug)]
pub struct Tuning {
    /// A task not RUNNING this long after its launch is killed (Marathon's `task_launch_timeout`).
    pub launch_timeout_ms: u64,
    /// Implicit reconciliation every this often (Marathon's `reconciliation_interval`).
    pub reconcile_interval_ms: u64,
    /// How long offers are refused when nothing waits to launch.
    pub decline_idle_ms: u64,
    /// How long an offer that fits nothing is refused.
    pub decline_unfit_ms: u64,
    /// At most this many launches per `launch_token_interval_ms` (Marathon's launch tokens).
    pub launch_tokens: u32,
    pub launch_token_interval_ms: u64,
    /// A kill not answered by a terminal state within this long is sent again (Marathon's
    /// `kill_retry_timeout`): a kill, or its answer, can be lost with a connection or a master.
    pub kill_retry_ms: u64,
    /// An agent whose last offer came within this long counts among those an app's instances
    /// spread over (agents that stop offering, being full or gone, drop out after it).
    pub spread_window_ms: u64,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            launch_timeout_ms: 300_000,
            reconcile_interval_ms: 600_000,
            decline_idle_ms: 120_000,
            decline_unfit_ms: 5_000,
            launch_tokens: 1_000,
            launch_token_interval_ms: 1_000,
            kill_retry_ms: 10_000,
            spread_window_ms: 10_000,
        }
    }
}

/// An app as stored: the definition and when its configuration last changed (instances of an
/// older configuration are replaced; a change of `instances` alone is not a new configuration).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredApp {
    pub app: AppDefinition,
    pub last_config_change: String,
    pub last_scaling: String,
}

/// One task of an app, as the scheduler tracks (and stores) it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub task_id: String,
    pub app: String,
    /// The app's version when launched; `config` the configuration it runs.
    pub version: String,
    pub config: String,
    pub agent_id: String,
    /// The agent's host name (what `/v2/tasks` shows and constraints match).
    pub host: String,
    /// Where the agent is reached (the offer's address), for health probes; empty: `host`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<u32>,
    /// The task's own addresses (its container's), from its status updates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    pub state: TaskState,
    /// Unix ms.
    pub staged_at: u64,
    #[serde(default)]
    pub started_at: Option<u64>,
    #[serde(default)]
    pub healthy: Option<bool>,
    #[serde(default)]
    pub kill_requested: bool,
    /// Monotonic ms of the launch (or of the scheduler's start, for a loaded instance).
    #[serde(skip)]
    pub launched_ms: u64,
}

impl Instance {
    /// Counts toward the app's instances (terminal and unreachable ones do not: Marathon's
    /// default `unreachableStrategy` replaces an unreachable instance at once).
    pub fn is_active(&self) -> bool {
        !self.state.is_terminal()
            && !matches!(
                self.state,
                TaskState::TaskUnreachable | TaskState::TaskUnknown
            )
    }

    pub fn is_running(&self) -> bool {
        self.state == TaskState::TaskRunning
    }

    pub fn to_marathon_json(&self) -> Value {
        json!({
            "id": self.task_id,
            "appId": self.app,
            "host": self.host,
            "slaveId": self.agent_id,
            "ports": self.ports,
            "servicePorts": [],
            "ipAddresses": self.ip_addresses.iter().map(|ip| json!({
                "ipAddress": ip,
                "protocol": if ip.contains(':') { "IPv6" } else { "IPv4" },
            })).collect::<Vec<_>>(),
            "stagedAt": format_version(self.staged_at),
            "startedAt": self.started_at.map(format_version),
            "version": self.version,
            "state": drover_master::core::state_name(self.state),
            "healthCheckResults": match self.healthy {
                None => json!([]),
                Some(alive) => json!([{"alive": alive, "taskId": self.task_id, "instanceId": self.task_id}]),
            },
        })
    }
}

/// Why offers were not used for an app: counts per Marathon reason
/// (`InsufficientCpus`, `UnfulfilledConstraint`, ...), for `GET /v2/queue`.
#[derive(Clone, Debug, Default)]
pub struct OfferStats {
    pub processed: u64,
    pub unused: u64,
    pub last_unused_at: Option<u64>,
    pub last_used_at: Option<u64>,
    pub reasons: BTreeMap<&'static str, u64>,
}

/// The launch backoff of an app.
#[derive(Clone, Debug, Default)]
pub struct Backoff {
    pub failures: u32,
    /// Monotonic ms before which nothing of the app launches.
    pub until_ms: u64,
}

/// What the daemon must do after an input: store first, then send.
#[derive(Debug, Default)]
pub struct Effects {
    pub store: Vec<StoreOp>,
    pub calls: Vec<Call>,
    /// Marathon events for `/v2/events`: (eventType, payload).
    pub events: Vec<(String, Value)>,
}

impl Effects {
    fn event(&mut self, kind: &str, mut payload: Value, unix_ms: u64) {
        payload["eventType"] = json!(kind);
        payload["timestamp"] = json!(format_version(unix_ms));
        self.events.push((kind.to_string(), payload));
    }
}

/// The scheduler's state.
pub struct Scheduler {
    env: Env,
    pub tuning: Tuning,
    pub root: Group,
    /// Per app: when its configuration and its scale last changed.
    pub app_meta: BTreeMap<PathId, (String, String)>,
    /// Stored versions per app (newest last).
    pub versions: BTreeMap<PathId, Vec<String>>,
    pub deployments: BTreeMap<String, Deployment>,
    pub instances: BTreeMap<String, Instance>,
    pub backoff: BTreeMap<PathId, Backoff>,
    pub offer_stats: BTreeMap<PathId, OfferStats>,
    /// Apps that wanted launches at the last pass, and how many.
    pub queue: BTreeMap<PathId, u32>,
    /// True once reconciliation after (re)subscription had time to answer: no launch before.
    pub launch_ready: bool,
    suppressed: bool,
    pub framework_id: Option<String>,
    /// The master the framework's stream is on (`host:port`), as the UI links to it.
    pub master: Option<String>,
    pub counters: Counters,
    /// Earlier versions of each group (this leader's lifetime; newest last), for rollback.
    pub group_versions: BTreeMap<PathId, Vec<(String, Group)>>,
    /// Marathon-side health checks (HTTP, HTTPS, TCP) of running instances, by task.
    pub health: BTreeMap<String, Vec<HealthState>>,
    /// Launches left in the current token interval, and when it began (monotonic ms).
    tokens: (u32, u64),
    /// When each kill not yet answered was last sent (monotonic ms; a new leader sends the kills
    /// it loads at its first tick).
    kills_sent: BTreeMap<String, u64>,
    /// When offers were last asked for (REVIVE) and last received (monotonic ms).
    last_revive_ms: u64,
    last_offer_ms: u64,
    /// Agents that offered within the spread window: when last, and what they had left.
    offered: BTreeMap<String, offers::Offered>,
    /// Tasks asked for by the current reconciliation that no update answered yet, and when to
    /// ask again (monotonic ms) with the current back-off.
    unreconciled: BTreeSet<String>,
    reconcile_retry: (u64, u64),
}

/// A health probe the daemon should run now.
#[derive(Clone, Debug)]
pub struct Probe {
    pub task_id: String,
    pub index: usize,
    pub check: HealthCheck,
    pub host: String,
    pub ports: Vec<u32>,
}

/// Checks the scheduler runs itself; the others (COMMAND, MESOS_*) run on the agent.
fn scheduler_side(check: &HealthCheck) -> bool {
    matches!(
        check.protocol,
        HealthProtocol::Http | HealthProtocol::Https | HealthProtocol::Tcp
    )
}

#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub launched: u64,
    pub killed: u64,
    pub offers_processed: u64,
    pub offers_declined: u64,
    pub updates: u64,
    pub deployments_started: u64,
    pub deployments_done: u64,
}

/// What was loaded from the store.
#[derive(Debug)]
pub struct Loaded {
    pub root: Group,
    pub app_meta: BTreeMap<PathId, (String, String)>,
    pub versions: BTreeMap<PathId, Vec<String>>,
    pub deployments: Vec<Deployment>,
    pub instances: Vec<Instance>,
}

impl Default for Loaded {
    fn default() -> Loaded {
        Loaded {
            root: Group::root(),
            app_meta: BTreeMap::new(),
            versions: BTreeMap::new(),
            deployments: Vec::new(),
            instances: Vec::new(),
        }
    }
}

impl Scheduler {
    pub fn new(env: Env, tuning: Tuning, loaded: Loaded, now_ms: u64) -> Scheduler {
        let mut s = Scheduler {
            env,
            tuning,
            root: loaded.root,
            app_meta: loaded.app_meta,
            versions: loaded.versions,
            deployments: BTreeMap::new(),
            instances: BTreeMap::new(),
            backoff: BTreeMap::new(),
            offer_stats: BTreeMap::new(),
            queue: BTreeMap::new(),
            launch_ready: false,
            suppressed: false,
            framework_id: None,
            master: None,
            counters: Counters::default(),
            group_versions: BTreeMap::new(),
            health: BTreeMap::new(),
            tokens: (0, 0),
            kills_sent: BTreeMap::new(),
            last_revive_ms: 0,
            last_offer_ms: 0,
            offered: BTreeMap::new(),
            unreconciled: BTreeSet::new(),
            reconcile_retry: (0, RECONCILE_RETRY_MS),
        };
        s.tokens = (s.tuning.launch_tokens, now_ms);
        for d in loaded.deployments {
            s.deployments.insert(d.plan.id.clone(), d);
        }
        for mut i in loaded.instances {
            i.launched_ms = now_ms;
            let task = i.task_id.clone();
            let started = i.started_at.is_some();
            s.instances.insert(task.clone(), i);
            // A new leader checks the health of instances that already run, as Marathon does
            // after a failover: without it, a step waiting for them to be healthy never ends.
            if started {
                s.start_health_checks(&task, now_ms);
            }
        }
        s
    }

    /// Starts the scheduler-side health checks of a running instance (grace period from now).
    fn start_health_checks(&mut self, task: &str, now_ms: u64) {
        let Some(i) = self.instances.get(task) else {
            return;
        };
        let Some(app_def) = self.root.app(&PathId::parse(&i.app)) else {
            return;
        };
        let states: Vec<HealthState> = app_def
            .health_checks
            .iter()
            .enumerate()
            .filter(|(_, c)| scheduler_side(c))
            .map(|(n, c)| HealthState::new(task, n, c, now_ms))
            .collect();
        if !states.is_empty() {
            self.health.insert(task.to_string(), states);
        }
    }

    /// The wall clock of the Env, Unix ms.
    pub fn unix_ms(&self) -> u64 {
        self.env.unix_ms()
    }

    /// A group as it was in `version` (kept by this leader), or None.
    pub fn group_at_version(&self, id: &PathId, version: &str) -> Option<Group> {
        if let Some(g) = self
            .root
            .group(id)
            .filter(|g| g.version.as_deref() == Some(version))
        {
            return Some(g.clone());
        }
        self.group_versions
            .get(id)?
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, g)| g.clone())
    }

    fn now_version(&self) -> String {
        format_version(self.env.unix_ms())
    }

    fn new_id(&self) -> String {
        let mut rng = self.env.rng();
        let (a, b, c, d) = (
            rng.next_u32(),
            rng.next_u32() & 0xffff,
            rng.next_u32() & 0xffff,
            rng.next_u64() & 0xffff_ffff_ffff,
        );
        format!(
            "{a:08x}-{b:04x}-4{:03x}-{:04x}-{d:012x}",
            c & 0xfff,
            0x8000 | (c & 0x3fff)
        )
    }

    // ------------------------------------------------------------ root changes
}

/// Marathon's reasons in the queue's offer summary.
const REASONS: [&str; 8] = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
];

pub fn bare(kind: CallType) -> Call {
    drover_master::client::Driver::bare(kind)
}

fn kill_call(task: &str, agent: &str) -> Call {
    let mut call = bare(CallType::Kill);
    call.kill = Some(v1::Kill {
        task_id: Id::new(task),
        agent_id: (!agent.is_empty()).then(|| Id::new(agent)),
    });
    call
}

fn instance_put(i: &Instance) -> StoreOp {
    StoreOp::Put {
        key: format!("{}/{}", keys::INSTANCES, i.task_id),
        data: serde_json::to_vec(i).unwrap_or_default(),
    }
}

/// Per app: when its configuration and its scale last changed.
pub type AppMeta = BTreeMap<PathId, (String, String)>;

/// Rebuilds the root from stored groups and apps.
pub fn rebuild_root(
    groups: &[(PathId, Value)],
    apps: &[(PathId, Value)],
) -> Result<(Group, AppMeta), String> {
    let mut root = Group::root();
    let mut sorted: Vec<&(PathId, Value)> = groups.iter().collect();
    sorted.sort_by_key(|(id, _)| id.segments().len());
    for (id, g) in sorted {
        let version = g.get("version").and_then(Value::as_str).map(str::to_string);
        let dependencies = g
            .get("dependencies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(PathId::parse)
            .collect();
        let mut group = root
            .group(id)
            .cloned()
            .unwrap_or_else(|| Group::empty(id.clone()));
        group.dependencies = dependencies;
        group.version = version.clone();
        root = root.put_group(group, version.as_deref().unwrap_or(""));
    }
    let mut meta = BTreeMap::new();
    for (id, stored) in apps {
        let app = AppDefinition::from_storage_json(stored.get("app").unwrap_or(&Value::Null))
            .map_err(|e| format!("stored app {id}: {}", e.message()))?;
        let text = |k: &str| {
            stored
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        meta.insert(
            id.clone(),
            (text("lastConfigChangeAt"), text("lastScalingAt")),
        );
        let parent_id = app.id.parent();
        let mut parent = root
            .group(&parent_id)
            .cloned()
            .unwrap_or_else(|| Group::empty(parent_id.clone()));
        let keep = parent.version.clone();
        parent.apps.insert(app.id.clone(), app);
        root = root.put_group(parent, keep.as_deref().unwrap_or(""));
    }
    Ok((root, meta))
}

mod convergence;
mod deployments;
pub use deployments::Deployment;
mod instances;
mod offers;
mod views;

use views::group_json;
pub use views::stored_app_json;

#[cfg(test)]
pub(crate) mod tests;
