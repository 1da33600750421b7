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

/// A running deployment: its plan and where it is.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub plan: DeploymentPlan,
    /// The apps before the deployment (for apps the plan touches).
    pub original: BTreeMap<PathId, AppDefinition>,
    /// Index of the step being carried out.
    pub step: usize,
}

impl Deployment {
    /// The step that brings `app` to its target (its last).
    fn step_of(&self, app: &PathId) -> Option<usize> {
        self.plan
            .steps
            .iter()
            .rposition(|s| s.actions.iter().any(|a| a.app() == app))
    }

    pub fn to_storage_json(&self) -> Value {
        json!({
            "id": self.plan.id,
            "version": self.plan.version,
            "step": self.step,
            "affectedApps": self.plan.affected_apps.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "steps": self.plan.steps.iter().map(|s| s.actions.iter().map(|a| {
                let mut v = a.to_json();
                if let Action::Scale { to, .. } = a { v["to"] = json!(to); }
                v
            }).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "original": self.original.values().map(AppDefinition::to_storage_json).collect::<Vec<_>>(),
        })
    }

    pub fn from_storage_json(value: &Value) -> Result<Deployment, String> {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("deployment: expected a string at `{key}`"))
        };
        let mut steps = Vec::new();
        for (i, step) in value
            .get("steps")
            .and_then(Value::as_array)
            .ok_or("deployment: expected an array at `steps`")?
            .iter()
            .enumerate()
        {
            let mut actions = Vec::new();
            for (j, a) in step.as_array().into_iter().flatten().enumerate() {
                let at = format!("deployment: steps[{i}][{j}]");
                let app = PathId::parse(
                    a.get("app")
                        .and_then(Value::as_str)
                        .ok_or(format!("{at}.app: expected a string"))?,
                );
                actions.push(match a.get("action").and_then(Value::as_str) {
                    Some("StartApplication") => Action::Start { app },
                    Some("ScaleApplication") => Action::Scale {
                        app,
                        to: a.get("to").and_then(Value::as_u64).unwrap_or(0) as u32,
                    },
                    Some("RestartApplication") => Action::Restart { app },
                    Some("StopApplication") => Action::Stop { app },
                    other => return Err(format!("{at}.action: unknown action {other:?}")),
                });
            }
            steps.push(plan::Step { actions });
        }
        let mut original = BTreeMap::new();
        for a in value
            .get("original")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let app = AppDefinition::from_storage_json(a)
                .map_err(|e| format!("deployment original app: {}", e.message()))?;
            original.insert(app.id.clone(), app);
        }
        Ok(Deployment {
            plan: DeploymentPlan {
                id: text("id")?,
                version: text("version")?,
                affected_apps: value
                    .get("affectedApps")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(PathId::parse)
                    .collect(),
                steps,
            },
            original,
            step: value.get("step").and_then(Value::as_u64).unwrap_or(0) as usize,
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

/// Resources of one offer still free while it is being matched.
struct Free {
    cpus: f64,
    mem: f64,
    disk: f64,
    gpus: f64,
    ports: Vec<(u64, u64)>,
    role: String,
}

impl Free {
    fn of(offer: &v1::Offer) -> Free {
        let role = offer
            .allocation_info
            .as_ref()
            .map(|a| a.role.clone())
            .unwrap_or_else(|| "*".into());
        let mut free = Free {
            cpus: 0.0,
            mem: 0.0,
            disk: 0.0,
            gpus: 0.0,
            ports: Vec::new(),
            role,
        };
        for r in &offer.resources {
            let scalar = r.scalar.as_ref().map_or(0.0, |s| s.value);
            match r.name.as_str() {
                "cpus" => free.cpus += scalar,
                "mem" => free.mem += scalar,
                "disk" => free.disk += scalar,
                "gpus" => free.gpus += scalar,
                "ports" => {
                    for range in r.ranges.iter().flat_map(|r| r.range.iter()) {
                        free.ports.push((range.begin, range.end));
                    }
                }
                _ => {}
            }
        }
        free
    }

    fn port_count(&self) -> u64 {
        self.ports.iter().map(|(b, e)| e - b + 1).sum()
    }

    /// Takes `n` ports (the lowest free), or the fixed `wanted` ones when they are free.
    fn take_ports(&mut self, wanted: &[u32]) -> Option<Vec<u32>> {
        let mut out = Vec::new();
        let mut left = self.ports.clone();
        for &want in wanted {
            let port = if want == 0 {
                let (b, _) = left.first().copied()?;
                b
            } else {
                let w = u64::from(want);
                left.iter().find(|(b, e)| *b <= w && w <= *e)?;
                w
            };
            let mut next = Vec::new();
            for (b, e) in left {
                if b <= port && port <= e {
                    if b < port {
                        next.push((b, port - 1));
                    }
                    if port < e {
                        next.push((port + 1, e));
                    }
                } else {
                    next.push((b, e));
                }
            }
            left = next;
            out.push(u32::try_from(port).ok()?);
        }
        self.ports = left;
        Some(out)
    }
}

/// Marathon's reason when an offer lacks what one instance needs.
fn shortfall(app: &AppDefinition, free: &Free) -> Option<&'static str> {
    if free.cpus + 1e-9 < app.cpus {
        Some("InsufficientCpus")
    } else if free.mem + 1e-9 < app.mem {
        Some("InsufficientMemory")
    } else if free.disk + 1e-9 < app.disk {
        Some("InsufficientDisk")
    } else if free.gpus + 1e-9 < f64::from(app.gpus) {
        Some("InsufficientGpus")
    } else if free.port_count() < host_ports(app).len() as u64 {
        Some("InsufficientPorts")
    } else {
        None
    }
}

/// The host ports an instance needs: 0 for "any", or a fixed port (`requirePorts`, or a port
/// mapping with a fixed `hostPort`).
fn host_ports(app: &AppDefinition) -> Vec<u32> {
    if app.uses_port_mappings() {
        app.port_mappings()
            .iter()
            .filter_map(|m| m.host_port)
            .collect()
    } else if app.docker_network() == Some(DockerNetwork::Bridge) {
        Vec::new()
    } else {
        app.port_definitions
            .iter()
            .map(|p| if app.require_ports { p.port } else { 0 })
            .collect()
    }
}

fn offer_attributes(offer: &v1::Offer) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in &offer.attributes {
        let Some(name) = a.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = a
            .pointer("/text/value")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                a.pointer("/scalar/value")
                    .and_then(Value::as_f64)
                    .map(|v| v.to_string())
            });
        if let Some(value) = value {
            out.insert(name.to_string(), value);
        }
    }
    out
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

    /// `POST /v2/apps/{id}/restart`: the same definition under a new configuration version,
    /// rolled out within its `upgradeStrategy`.
    pub fn restart_app(
        &mut self,
        id: &PathId,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), ApiError> {
        let Some(app) = self.root.app(id).cloned() else {
            return Err(ApiError::not_found(format!("App '{id}' does not exist")));
        };
        if let Some(d) = self
            .deployments
            .values()
            .find(|d| d.plan.affected_apps.contains(id))
        {
            if !force {
                return Err(locked(std::slice::from_ref(&d.plan.id)));
            }
            let old = d.plan.id.clone();
            self.cancel_deployment(&old, fx);
        }
        let version = self.now_version();
        let mut target = self.root.put_app(app.clone(), &version)?;
        target.version = Some(version.clone());
        self.set_root(target, fx);
        // A new configuration even though the definition is the same.
        self.app_meta
            .insert(id.clone(), (version.clone(), version.clone()));
        if let Some(app) = self.root.app(id) {
            fx.store.push(StoreOp::Put {
                key: format!("{}/{}", keys::APPS, keys::encode(id)),
                data: stored_app_json(app, &version, &version)
                    .to_string()
                    .into_bytes(),
            });
        }
        self.announce_target(id, app.instances);
        let deployment_id = self.new_id();
        let mut affected = BTreeSet::new();
        affected.insert(id.clone());
        let mut original = BTreeMap::new();
        original.insert(id.clone(), app);
        let deployment = Deployment {
            plan: DeploymentPlan {
                id: deployment_id.clone(),
                version: version.clone(),
                affected_apps: affected,
                steps: vec![plan::Step {
                    actions: vec![Action::Restart { app: id.clone() }],
                }],
            },
            original,
            step: 0,
        };
        self.counters.deployments_started += 1;
        self.env.emit(
            Event::new("deployment")
                .with("id", &deployment_id)
                .with("steps", 1),
        );
        fx.store.push(StoreOp::Put {
            key: format!("{}/{deployment_id}", keys::DEPLOYMENTS),
            data: deployment.to_storage_json().to_string().into_bytes(),
        });
        self.deployments.insert(deployment_id.clone(), deployment);
        Ok((deployment_id, version))
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

    /// Replaces the root by `target`, starting a deployment for the difference. 409 when the
    /// plan touches an app of a running deployment, unless `force` (which cancels those).
    pub fn deploy(
        &mut self,
        target: Group,
        force: bool,
        fx: &mut Effects,
    ) -> Result<(String, String), ApiError> {
        let version = target.version.clone().unwrap_or_else(|| self.now_version());
        let id = self.new_id();
        let plan = DeploymentPlan::new(id.clone(), version.clone(), &self.root, &target);
        let conflicts: Vec<String> = self
            .deployments
            .values()
            .filter(|d| d.plan.conflicts_with(&plan))
            .map(|d| d.plan.id.clone())
            .collect();
        if !conflicts.is_empty() && !force {
            return Err(locked(&conflicts));
        }
        for old in conflicts {
            self.cancel_deployment(&old, fx);
        }
        let original: BTreeMap<PathId, AppDefinition> = self
            .root
            .transitive_apps()
            .into_iter()
            .filter(|(id, _)| plan.affected_apps.contains(id))
            .map(|(id, app)| (id, app.clone()))
            .collect();
        self.set_root(target, fx);
        for app in &plan.affected_apps {
            let before = original.get(app).map_or(0, |a| a.instances);
            self.announce_target(app, before);
        }
        // The dependencies each dependent app waits for, for the trace's dependency_order check.
        let graph = self.root.dependency_graph();
        let apps = self.root.transitive_apps();
        for app in &plan.affected_apps {
            for dep in graph.get(app).into_iter().flatten() {
                if let Some(dep_app) = apps.get(dep) {
                    self.env.emit(
                        Event::new("depends")
                            .with("app", app)
                            .with("on", dep)
                            .with("count", dep_app.instances),
                    );
                }
            }
        }
        if plan.is_empty() {
            return Ok((id, version));
        }
        self.counters.deployments_started += 1;
        let deployment = Deployment {
            plan,
            original,
            step: 0,
        };
        self.env.emit(
            Event::new("deployment")
                .with("id", &id)
                .with("steps", deployment.plan.steps.len()),
        );
        fx.event(
            "deployment_info",
            json!({"plan": self.plan_event_json(&deployment), "currentStep": deployment.plan.steps.first().map(plan::Step::to_json)}),
            self.env.unix_ms(),
        );
        fx.store.push(StoreOp::Put {
            key: format!("{}/{id}", keys::DEPLOYMENTS),
            data: deployment.to_storage_json().to_string().into_bytes(),
        });
        self.deployments.insert(id.clone(), deployment);
        Ok((id, version))
    }

    /// Tells the trace how many tasks `app` may run at most from now on (the `no_overscale`
    /// invariant): its target, or during a rolling restart the upgrade strategy's capacity.
    fn announce_target(&self, app: &PathId, before: u32) {
        let target = self.root.app(app).map_or(0, |a| {
            a.instances
                .max(plan::restart_bounds(a.instances, &a.upgrade_strategy).max_capacity)
        });
        self.env.emit(
            Event::new("app_target")
                .with("app", app)
                .with("max", target.max(before)),
        );
    }

    /// Stores the root's groups and apps that changed, and new app versions.
    fn set_root(&mut self, target: Group, fx: &mut Effects) {
        let version = target.version.clone().unwrap_or_else(|| self.now_version());
        let old_apps: BTreeMap<PathId, AppDefinition> = self
            .root
            .transitive_apps()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let new_apps = target.transitive_apps();
        for (id, app) in &new_apps {
            let old = old_apps.get(id);
            if old == Some(*app) {
                continue;
            }
            let app_version = app.version.clone().unwrap_or_else(|| version.clone());
            let meta = match (old, self.app_meta.get(id)) {
                (Some(old), Some((config, _))) if !old.is_upgrade(app) => {
                    (config.clone(), app_version.clone())
                }
                _ => (app_version.clone(), app_version.clone()),
            };
            if meta.0 == app_version {
                // A new configuration: the launch delay starts over.
                self.backoff.remove(id);
            }
            self.app_meta.insert(id.clone(), meta.clone());
            fx.store.push(StoreOp::Put {
                key: format!("{}/{}", keys::APPS, keys::encode(id)),
                data: stored_app_json(app, &meta.0, &meta.1)
                    .to_string()
                    .into_bytes(),
            });
            let versions = self.versions.entry(id.clone()).or_default();
            if versions.last() != Some(&app_version) {
                versions.push(app_version.clone());
                fx.store.push(StoreOp::Put {
                    key: format!(
                        "{}/{}/{}",
                        keys::APP_VERSIONS,
                        keys::encode(id),
                        app_version
                    ),
                    data: app.to_storage_json().to_string().into_bytes(),
                });
                while versions.len() > MAX_VERSIONS {
                    let gone = versions.remove(0);
                    fx.store.push(StoreOp::Delete {
                        key: format!("{}/{}/{gone}", keys::APP_VERSIONS, keys::encode(id)),
                    });
                }
            }
        }
        for id in old_apps.keys() {
            if !new_apps.contains_key(id) {
                self.app_meta.remove(id);
                fx.store.push(StoreOp::Delete {
                    key: format!("{}/{}", keys::APPS, keys::encode(id)),
                });
            }
        }
        let old_groups: BTreeMap<PathId, Value> = self
            .root
            .transitive_groups()
            .into_iter()
            .map(|(k, g)| (k, group_json(g)))
            .collect();
        let new_groups: BTreeMap<PathId, Value> = target
            .transitive_groups()
            .into_iter()
            .map(|(k, g)| (k, group_json(g)))
            .collect();
        for (id, g) in &new_groups {
            if old_groups.get(id) != Some(g) {
                fx.store.push(StoreOp::Put {
                    key: format!("{}/{}", keys::GROUPS, keys::encode(id)),
                    data: g.to_string().into_bytes(),
                });
            }
        }
        for id in old_groups.keys() {
            if !new_groups.contains_key(id) {
                fx.store.push(StoreOp::Delete {
                    key: format!("{}/{}", keys::GROUPS, keys::encode(id)),
                });
            }
        }
        for (id, g) in self.root.transitive_groups() {
            if target.group(&id) != Some(g) {
                let list = self.group_versions.entry(id).or_default();
                list.push((g.version.clone().unwrap_or_default(), g.clone()));
                if list.len() > MAX_VERSIONS {
                    list.remove(0);
                }
            }
        }
        fx.event(
            "group_change_success",
            json!({"groupId": "/", "version": version}),
            self.env.unix_ms(),
        );
        self.root = target;
    }

    /// Drops a deployment where it stands (the root keeps its target).
    fn cancel_deployment(&mut self, id: &str, fx: &mut Effects) {
        if let Some(d) = self.deployments.remove(id) {
            self.env
                .emit(Event::new("deployment_canceled").with("id", id));
            fx.store.push(StoreOp::Delete {
                key: format!("{}/{id}", keys::DEPLOYMENTS),
            });
            fx.event(
                "deployment_failed",
                json!({"id": id, "plan": self.plan_event_json(&d)}),
                self.env.unix_ms(),
            );
        }
    }

    /// `DELETE /v2/deployments/{id}`: with `force`, stop where it stands (the affected apps keep
    /// the instances they have now); otherwise roll back to the apps before it.
    pub fn delete_deployment(
        &mut self,
        id: &str,
        force: bool,
        fx: &mut Effects,
    ) -> Result<Option<(String, String)>, ApiError> {
        let Some(d) = self.deployments.get(id).cloned() else {
            return Err(ApiError::not_found(format!(
                "DeploymentPlan {id} does not exist"
            )));
        };
        let version = self.now_version();
        if force {
            let mut target = self.root.clone();
            for app_id in &d.plan.affected_apps {
                if let Some(app) = target.app(app_id) {
                    let mut app = app.clone();
                    app.instances = self.active(app_id).len() as u32;
                    target = target.put_app(app, &version)?;
                }
            }
            self.cancel_deployment(id, fx);
            self.set_root(target, fx);
            return Ok(None);
        }
        let mut target = self.root.clone();
        for app_id in &d.plan.affected_apps {
            target = match d.original.get(app_id) {
                Some(app) => target.put_app(app.clone(), &version)?,
                None => target.remove_app(app_id, &version),
            };
        }
        target.version = Some(version);
        self.deploy(target, true, fx).map(Some)
    }

    // ------------------------------------------------------------ instances

    pub fn instances_of(&self, app: &PathId) -> Vec<&Instance> {
        let name = app.to_string();
        self.instances.values().filter(|i| i.app == name).collect()
    }

    fn active(&self, app: &PathId) -> Vec<&Instance> {
        self.instances_of(app)
            .into_iter()
            .filter(|i| i.is_active())
            .collect()
    }

    fn has_health_checks(&self, app: &PathId) -> bool {
        self.root
            .app(app)
            .is_some_and(|a| !a.health_checks.is_empty())
    }

    /// Running, of the current configuration, and healthy when the app has health checks.
    fn is_ready(&self, i: &Instance, config: &str, checks: bool) -> bool {
        i.is_running()
            && !i.kill_requested
            && i.config == config
            && (!checks || i.healthy == Some(true))
    }

    /// Asks the master to kill an instance (once; the launch timeout and reconciliation
    /// repeat it when needed).
    pub fn kill(&mut self, task_id: &str, fx: &mut Effects) {
        let Some(i) = self.instances.get_mut(task_id) else {
            return;
        };
        if i.state.is_terminal() {
            return;
        }
        i.kill_requested = true;
        self.kills_sent.remove(task_id);
        let agent = i.agent_id.clone();
        fx.store.push(instance_put(i));
        self.counters.killed += 1;
        self.env
            .emit(Event::new("kill").with("app", &i.app).with("task", task_id));
        fx.calls.push(kill_call(task_id, &agent));
    }

    /// A status update (or reconciliation answer) for a task.
    pub fn update(&mut self, status: &v1::TaskStatus, now_ms: u64, fx: &mut Effects) {
        self.counters.updates += 1;
        let task = status.task_id.value.clone();
        self.unreconciled.remove(&task);
        let unix = self.env.unix_ms();
        let Some(i) = self.instances.get_mut(&task) else {
            // Not ours (or long forgotten): a live one is killed, Marathon's "unknown task".
            if !status.state.is_terminal() {
                let agent = status
                    .agent_id
                    .as_ref()
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
                self.env
                    .emit(Event::new("kill_unknown").with("task", &task));
                fx.calls.push(kill_call(&task, &agent));
            }
            return;
        };
        let changed =
            i.state != status.state || (status.healthy.is_some() && i.healthy != status.healthy);
        if status.state == TaskState::TaskRunning && i.started_at.is_none() {
            i.started_at = Some(unix);
            self.start_health_checks(&task, now_ms);
        }
        let Some(i) = self.instances.get_mut(&task) else {
            return;
        };
        if let Some(h) = status.healthy {
            i.healthy = Some(h);
        }
        let addresses = status
            .container_status
            .as_ref()
            .map(|c| c.addresses())
            .unwrap_or_default();
        if !addresses.is_empty() {
            i.ip_addresses = addresses;
        }
        let app = PathId::parse(&i.app);
        i.state = status.state;
        if i.kill_requested && !status.state.is_terminal() && status.state != TaskState::TaskUnknown
        {
            // Still alive although its kill was asked for: that kill was lost (say, with a master
            // that went down), so ask again, as Marathon's kill service retries.
            fx.calls.push(kill_call(&task, &i.agent_id));
        }
        if changed {
            self.env.emit(
                Event::new("task")
                    .with("app", &i.app)
                    .with("task", &task)
                    .with("state", drover_master::core::state_name(status.state)),
            );
            fx.event(
                "status_update_event",
                json!({
                    "slaveId": i.agent_id, "taskId": task, "taskStatus": drover_master::core::state_name(status.state),
                    "message": status.message.clone().unwrap_or_default(), "appId": i.app, "host": i.host,
                    "ports": i.ports, "ipAddresses": i.to_marathon_json()["ipAddresses"], "version": i.version,
                }),
                unix,
            );
        }
        // UNKNOWN: the master has never heard of the task (a launch lost with its framework or
        // its master); it is not coming back, and it is expunged like an ended one.
        if status.state.is_terminal() || status.state == TaskState::TaskUnknown {
            let failed = matches!(status.state, TaskState::TaskFailed | TaskState::TaskError)
                && !i.kill_requested;
            self.instances.remove(&task);
            self.health.remove(&task);
            fx.store.push(StoreOp::Delete {
                key: format!("{}/{task}", keys::INSTANCES),
            });
            if failed {
                if let Some(app_def) = self.root.app(&app) {
                    let b = self.backoff.entry(app.clone()).or_default();
                    b.failures += 1;
                    b.until_ms = now_ms + plan::launch_delay_ms(app_def, b.failures);
                }
            }
        } else if changed {
            fx.store.push(instance_put(i));
        }
    }

    /// Health probes due now (each marked as in flight).
    pub fn due_probes(&mut self, now_ms: u64) -> Vec<Probe> {
        let mut out = Vec::new();
        for (task, states) in self.health.iter_mut() {
            let Some(i) = self.instances.get(task) else {
                continue;
            };
            let Some(app) = self.root.app(&PathId::parse(&i.app)) else {
                continue;
            };
            for state in states.iter_mut() {
                if !state.due(now_ms) {
                    continue;
                }
                let Some(check) = app.health_checks.get(state.check_index) else {
                    continue;
                };
                state.begin(now_ms);
                out.push(Probe {
                    task_id: task.clone(),
                    index: state.check_index,
                    check: check.clone(),
                    host: if i.address.is_empty() {
                        i.host.clone()
                    } else {
                        i.address.clone()
                    },
                    ports: i.ports.clone(),
                });
            }
        }
        out
    }

    /// The answer of a health probe: the instance's health, and a kill when it failed too
    /// often (Marathon's `maxConsecutiveFailures`).
    pub fn health_result(
        &mut self,
        task: &str,
        index: usize,
        result: Result<(), String>,
        now_ms: u64,
        fx: &mut Effects,
    ) {
        let Some(states) = self.health.get_mut(task) else {
            return;
        };
        let Some(state) = states.iter_mut().find(|s| s.check_index == index) else {
            return;
        };
        let verdict = state.record(now_ms, result);
        let healthy = crate::health::task_health(states);
        let Some(i) = self.instances.get_mut(task) else {
            return;
        };
        if i.healthy != healthy {
            i.healthy = healthy;
            self.env.emit(
                Event::new("health")
                    .with("task", task)
                    .with("alive", healthy.unwrap_or(false)),
            );
            fx.event(
                "health_status_changed_event",
                json!({"appId": i.app, "instanceId": task, "version": i.version, "alive": healthy.unwrap_or(false)}),
                self.env.unix_ms(),
            );
        }
        if verdict == Verdict::Kill && !i.kill_requested {
            self.env.emit(Event::new("health_kill").with("task", task));
            fx.event(
                "unhealthy_instance_kill_event",
                json!({"appId": i.app, "taskId": task, "instanceId": task, "version": i.version, "reason": "health checks failed", "host": i.host, "slaveId": i.agent_id}),
                self.env.unix_ms(),
            );
            self.kill(task, fx);
        }
    }

    /// Sends again the kills that no terminal state answered within `kill_retry_ms` (a kill is
    /// first seen here at the tick after it was sent; a leader's loaded kills are also sent again
    /// when reconciliation reports their tasks alive).
    pub fn retry_kills(&mut self, now_ms: u64, fx: &mut Effects) {
        let instances = &self.instances;
        self.kills_sent.retain(|task, _| {
            instances
                .get(task)
                .is_some_and(|i| i.kill_requested && !i.state.is_terminal())
        });
        for i in instances.values() {
            if !i.kill_requested || i.state.is_terminal() {
                continue;
            }
            let sent = self.kills_sent.entry(i.task_id.clone()).or_insert(now_ms);
            if now_ms >= *sent + self.tuning.kill_retry_ms {
                *sent = now_ms;
                self.env.emit(
                    Event::new("kill_retry")
                        .with("app", &i.app)
                        .with("task", &i.task_id),
                );
                fx.calls.push(kill_call(&i.task_id, &i.agent_id));
            }
        }
    }

    /// Kills tasks stuck before RUNNING beyond the launch timeout.
    pub fn expire_launches(&mut self, now_ms: u64, fx: &mut Effects) {
        let stuck: Vec<String> = self
            .instances
            .values()
            .filter(|i| {
                matches!(i.state, TaskState::TaskStaging | TaskState::TaskStarting)
                    && now_ms >= i.launched_ms + self.tuning.launch_timeout_ms
            })
            .map(|i| i.task_id.clone())
            .collect();
        for task in stuck {
            if let Some(i) = self.instances.get_mut(&task) {
                i.launched_ms = now_ms;
            }
            self.env
                .emit(Event::new("launch_timeout").with("task", &task));
            self.kill(&task, fx);
        }
    }

    /// Explicit reconciliation of every known task, then the master's implicit answer.
    /// Starts a reconciliation: every known task is asked for by id, and the ones the master
    /// does not answer (it says nothing of an agent still recovering) are asked for again with a
    /// back-off (5 s doubling to 60 s) until each has an answer, Mesos' reconciliation algorithm.
    pub fn reconcile_calls(&mut self, now_ms: u64) -> Vec<Call> {
        self.unreconciled = self.instances.keys().cloned().collect();
        self.reconcile_retry = (now_ms + RECONCILE_RETRY_MS, RECONCILE_RETRY_MS);
        vec![self.explicit_reconcile(), bare(CallType::Reconcile)]
    }

    fn explicit_reconcile(&self) -> Call {
        let mut explicit = bare(CallType::Reconcile);
        explicit.reconcile = Some(v1::Reconcile {
            tasks: self
                .unreconciled
                .iter()
                .filter_map(|task| self.instances.get(task))
                .map(|i| v1::ReconcileTask {
                    task_id: Id::new(i.task_id.clone()),
                    agent_id: (!i.agent_id.is_empty()).then(|| Id::new(i.agent_id.clone())),
                })
                .collect(),
        });
        explicit
    }

    /// Asks again for the tasks no reconciliation answer has come for yet.
    pub fn retry_reconciliation(&mut self, now_ms: u64, fx: &mut Effects) {
        let instances = &self.instances;
        self.unreconciled
            .retain(|task| instances.contains_key(task));
        let (at, backoff) = self.reconcile_retry;
        if self.unreconciled.is_empty() || now_ms < at {
            return;
        }
        let backoff = (backoff * 2).min(RECONCILE_RETRY_MAX_MS);
        self.reconcile_retry = (now_ms + backoff, backoff);
        fx.calls.push(self.explicit_reconcile());
    }

    // ------------------------------------------------------------ convergence

    /// What an app should run now: (count, configuration), or None while a deployment holds
    /// it at its previous state (count of the original, or 0 for a new app).
    fn want(&self, id: &PathId) -> (u32, bool) {
        for d in self.deployments.values() {
            if let Some(step) = d.step_of(id) {
                if d.step < step {
                    return (d.original.get(id).map_or(0, |a| a.instances), true);
                }
            }
        }
        (self.root.app(id).map_or(0, |a| a.instances), false)
    }

    /// One pass over every app: queue launches, kill extras and old configurations, advance
    /// deployments.
    pub fn converge(&mut self, now_ms: u64, fx: &mut Effects) {
        // Steps already done first: the apps of the next step may launch in this same pass.
        self.advance_deployments(fx);
        let apps: Vec<PathId> = self.root.transitive_apps().into_keys().collect();
        let mut queue = BTreeMap::new();
        // Instances of apps no longer in the root are killed.
        let gone: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.is_active() && !i.kill_requested)
            .filter(|i| self.root.app(&PathId::parse(&i.app)).is_none())
            .map(|i| i.task_id.clone())
            .collect();
        for task in gone {
            self.kill(&task, fx);
        }
        for id in &apps {
            let Some(app) = self.root.app(id).cloned() else {
                continue;
            };
            let (count, held) = self.want(id);
            let config = self
                .app_meta
                .get(id)
                .map(|m| m.0.clone())
                .unwrap_or_default();
            let checks = !app.health_checks.is_empty();
            let active: Vec<Instance> = self.active(id).into_iter().cloned().collect();
            let (new, old): (Vec<&Instance>, Vec<&Instance>) = active
                .iter()
                .filter(|i| !i.kill_requested)
                .partition(|i| i.config == config || held);
            let total = active.len() as u32;
            let mut launches = 0u32;
            let mut kills: Vec<String> = Vec::new();
            if old.is_empty() {
                let live = new.len() as u32;
                if live < count {
                    launches = count - live;
                } else if live > count {
                    let mut victims = new.clone();
                    victims.sort_by_key(|i| (i.staged_at, i.task_id.clone()));
                    if app.kill_selection == KillSelection::YoungestFirst {
                        victims.reverse();
                    }
                    // Not-yet-running ones go first either way.
                    victims.sort_by_key(|i| i.is_running());
                    kills.extend(
                        victims
                            .iter()
                            .take((live - count) as usize)
                            .map(|i| i.task_id.clone()),
                    );
                }
            } else {
                let bounds = plan::restart_bounds(count, &app.upgrade_strategy);
                let ready_new = new
                    .iter()
                    .filter(|i| self.is_ready(i, &config, checks))
                    .count() as u32;
                let new_count = new.len() as u32;
                if new_count < count && total < bounds.max_capacity {
                    launches = (count - new_count).min(bounds.max_capacity - total);
                }
                let mut old_sorted = old.clone();
                old_sorted.sort_by_key(|i| (i.is_running(), i.staged_at, i.task_id.clone()));
                let mut old_left = old.len() as u32;
                for i in old_sorted {
                    let healthy_after = ready_new + old_left - 1;
                    let must = !i.is_running() || healthy_after >= bounds.min_healthy;
                    if must || old_left + new_count > count.max(bounds.max_capacity) {
                        kills.push(i.task_id.clone());
                        old_left -= 1;
                    }
                }
            }
            for task in kills {
                self.kill(&task, fx);
            }
            if launches > 0 {
                queue.insert(id.clone(), launches);
            }
        }
        // Work that was not waiting before: offers refused for a while are wanted again.
        let new_work = queue.keys().any(|id| !self.queue.contains_key(id));
        self.queue = queue;
        self.advance_deployments(fx);
        if (new_work && !self.suppressed) || (!self.queue.is_empty() && self.suppressed) {
            self.suppressed = false;
            self.revive(now_ms, fx);
        }
    }

    fn revive(&mut self, now_ms: u64, fx: &mut Effects) {
        self.last_revive_ms = now_ms;
        fx.calls.push(bare(CallType::Revive));
    }

    /// While instances wait and no offer came for `REVIVE_REPEAT_MS` since the last REVIVE,
    /// asks again, as Marathon repeats its revives: a REVIVE can be lost with a connection, and
    /// offers declined for long stay away until one arrives.
    pub fn repeat_revive(&mut self, now_ms: u64, fx: &mut Effects) {
        let quiet_since = self.last_revive_ms.max(self.last_offer_ms);
        if self.launch_ready && !self.queue.is_empty() && now_ms >= quiet_since + REVIVE_REPEAT_MS {
            self.revive(now_ms, fx);
        }
    }

    /// Moves each deployment past the steps that are done.
    fn advance_deployments(&mut self, fx: &mut Effects) {
        let ids: Vec<String> = self.deployments.keys().cloned().collect();
        for id in ids {
            while let Some(d) = self.deployments.get(&id) {
                let Some(step) = d.plan.steps.get(d.step) else {
                    break;
                };
                if !step.actions.iter().all(|a| self.action_done(a)) {
                    break;
                }
                let step_json = step.to_json();
                let next = d.step + 1;
                let total = d.plan.steps.len();
                self.env.emit(
                    Event::new("deployment_step")
                        .with("id", &id)
                        .with("step", next),
                );
                fx.event(
                    "deployment_step_success",
                    json!({"plan": self.plan_event_json(d), "currentStep": step_json}),
                    self.env.unix_ms(),
                );
                if next >= total {
                    let d = self.deployments.remove(&id);
                    self.counters.deployments_done += 1;
                    self.env.emit(Event::new("deployment_done").with("id", &id));
                    fx.store.push(StoreOp::Delete {
                        key: format!("{}/{id}", keys::DEPLOYMENTS),
                    });
                    if let Some(d) = d {
                        fx.event(
                            "deployment_success",
                            json!({"id": id, "plan": self.plan_event_json(&d)}),
                            self.env.unix_ms(),
                        );
                    }
                    break;
                }
                if let Some(d) = self.deployments.get_mut(&id) {
                    d.step = next;
                    fx.store.push(StoreOp::Put {
                        key: format!("{}/{id}", keys::DEPLOYMENTS),
                        data: d.to_storage_json().to_string().into_bytes(),
                    });
                }
            }
        }
    }

    fn action_done(&self, action: &Action) -> bool {
        let id = action.app();
        let active = self.active(id);
        match action {
            Action::Start { .. } => true,
            Action::Stop { .. } => active.is_empty(),
            Action::Scale { .. } | Action::Restart { .. } => {
                let Some(app) = self.root.app(id) else {
                    return true;
                };
                let config = self.app_meta.get(id).map(|m| m.0.as_str()).unwrap_or("");
                let checks = self.has_health_checks(id);
                let ready = active
                    .iter()
                    .filter(|i| self.is_ready(i, config, checks))
                    .count() as u32;
                ready == app.instances && active.len() as u32 == app.instances
            }
        }
    }

    // ------------------------------------------------------------ offers

    /// Matches offers against the launch queue. Returns, per offer, the instances to store
    /// and the call (an ACCEPT with LAUNCH, or a DECLINE) to send once they are stored.
    pub fn offers(&mut self, offers: &[v1::Offer], now_ms: u64) -> Vec<(Vec<StoreOp>, Call)> {
        let mut out = Vec::new();
        self.last_offer_ms = now_ms;
        if now_ms >= self.tokens.1 + self.tuning.launch_token_interval_ms {
            self.tokens = (self.tuning.launch_tokens, now_ms);
        }
        // Instances are spread over the offers of one event: each offer takes at most its
        // share of what an app needs (the rest waits for the next offers).
        let shares: BTreeMap<PathId, u32> = self
            .queue
            .iter()
            .map(|(id, need)| (id.clone(), need.div_ceil(offers.len().max(1) as u32)))
            .collect();
        for offer in offers {
            self.counters.offers_processed += 1;
            let mut free = Free::of(offer);
            let attributes = offer_attributes(offer);
            let mut infos = Vec::new();
            let mut ops = Vec::new();
            let apps: Vec<(PathId, u32)> =
                self.queue.iter().map(|(k, v)| (k.clone(), *v)).collect();
            for (id, mut need) in apps {
                let Some(app) = self.root.app(&id).cloned() else {
                    continue;
                };
                let mut share = shares.get(&id).copied().unwrap_or(need);
                if !self.launch_ready || self.backoff.get(&id).is_some_and(|b| now_ms < b.until_ms)
                {
                    continue;
                }
                let unix = self.env.unix_ms();
                self.offer_stats.entry(id.clone()).or_default().processed += 1;
                let mut used = false;
                while need > 0 && share > 0 && self.tokens.0 > 0 {
                    if let Some(roles) = &app.accepted_resource_roles {
                        if !roles.iter().any(|r| *r == free.role || r == "*") {
                            let stats = self.offer_stats.entry(id.clone()).or_default();
                            *stats.reasons.entry("UnfulfilledRole").or_default() += 1;
                            break;
                        }
                    }
                    if let Some(reason) = shortfall(&app, &free) {
                        let stats = self.offer_stats.entry(id.clone()).or_default();
                        *stats.reasons.entry(reason).or_default() += 1;
                        break;
                    }
                    // The app's placed instances matter only to its constraints.
                    let verdict = if app.constraints.is_empty() {
                        Ok(())
                    } else {
                        let name = id.to_string();
                        let placements: Vec<Placement<'_>> = self
                            .instances
                            .values()
                            .filter(|i| i.app == name && i.is_active())
                            .map(|i| Placement::new(&i.host, &i.attributes))
                            .collect();
                        let candidate = Placement::new(&offer.hostname, &attributes);
                        constraints::check(&app.constraints, &candidate, &placements)
                    };
                    if verdict.is_err() {
                        let stats = self.offer_stats.entry(id.clone()).or_default();
                        *stats.reasons.entry("UnfulfilledConstraint").or_default() += 1;
                        break;
                    }
                    let Some(ports) = free.take_ports(&host_ports(&app)) else {
                        let stats = self.offer_stats.entry(id.clone()).or_default();
                        *stats.reasons.entry("InsufficientPorts").or_default() += 1;
                        break;
                    };
                    free.cpus -= app.cpus;
                    free.mem -= app.mem;
                    free.disk -= app.disk;
                    free.gpus -= f64::from(app.gpus);
                    let task_id = format!("{}.{}", id.safe_path(), self.new_id());
                    let config = self
                        .app_meta
                        .get(&id)
                        .map(|m| m.0.clone())
                        .unwrap_or_default();
                    let instance = Instance {
                        task_id: task_id.clone(),
                        app: id.to_string(),
                        version: app.version.clone().unwrap_or_default(),
                        config,
                        agent_id: offer.agent_id.value.clone(),
                        host: offer.hostname.clone(),
                        address: Some(offer.agent_address())
                            .filter(|a| *a != offer.hostname)
                            .unwrap_or_default()
                            .to_string(),
                        attributes: attributes.clone(),
                        ports: ports.clone(),
                        ip_addresses: Vec::new(),
                        state: TaskState::TaskStaging,
                        staged_at: unix,
                        started_at: None,
                        healthy: None,
                        kill_requested: false,
                        launched_ms: now_ms,
                    };
                    infos.push(task_info(&app, &instance, offer, &free.role));
                    ops.push(instance_put(&instance));
                    self.env.emit(
                        Event::new("launch")
                            .with("app", &id)
                            .with("task", &task_id)
                            .with("agent", &offer.hostname),
                    );
                    self.instances.insert(task_id, instance);
                    self.counters.launched += 1;
                    need -= 1;
                    share -= 1;
                    self.tokens.0 -= 1;
                    used = true;
                }
                let stats = self.offer_stats.entry(id.clone()).or_default();
                if used {
                    stats.last_used_at = Some(unix);
                } else {
                    stats.unused += 1;
                    stats.last_unused_at = Some(unix);
                }
                if need == 0 {
                    self.queue.remove(&id);
                } else {
                    self.queue.insert(id.clone(), need);
                }
            }
            if infos.is_empty() {
                self.counters.offers_declined += 1;
                let idle = self.queue.is_empty();
                let mut call = bare(CallType::Decline);
                call.decline = Some(v1::Decline {
                    offer_ids: vec![offer.id.clone()],
                    filters: Some(v1::Filters {
                        refuse_seconds: Some(
                            if idle {
                                self.tuning.decline_idle_ms
                            } else {
                                self.tuning.decline_unfit_ms
                            } as f64
                                / 1000.0,
                        ),
                    }),
                });
                if idle {
                    self.suppressed = true;
                }
                out.push((Vec::new(), call));
            } else {
                let mut call = bare(CallType::Accept);
                call.accept = Some(v1::Accept {
                    offer_ids: vec![offer.id.clone()],
                    operations: vec![v1::Operation {
                        kind: "LAUNCH".into(),
                        launch: Some(v1::Launch { task_infos: infos }),
                    }],
                    filters: Some(v1::Filters {
                        refuse_seconds: Some(self.tuning.decline_unfit_ms as f64 / 1000.0),
                    }),
                });
                out.push((ops, call));
            }
        }
        out
    }

    // ------------------------------------------------------------ views

    /// An app in Marathon's shape: its definition with its `versionInfo`, and the parts
    /// `embed` asks for (`counts`, `deployments`, `tasks`, each after any of Marathon's
    /// prefixes `app.`, `apps.`, `group.apps.`). Marathon's list embeds counts and deployments
    /// always, one app also its tasks, a queue item and a group's apps nothing unless asked.
    /// `lastTaskFailure` is never embedded: drover keeps no failures, and Marathon leaves the
    /// key out when there is none.
    pub fn app_json(&self, app: &AppDefinition, embed: &BTreeSet<String>) -> Value {
        let id = &app.id;
        let wants = |part: &str| {
            embed.iter().any(|e| {
                ["app.", "apps.", "group.apps."]
                    .iter()
                    .any(|prefix| e.strip_prefix(prefix) == Some(part))
            })
        };
        let mut v = app.to_marathon_json(app.version.as_deref().unwrap_or(""));
        let (config, scaling) = self
            .app_meta
            .get(id)
            .cloned()
            .unwrap_or_else(|| (String::new(), String::new()));
        v["versionInfo"] = json!({"lastConfigChangeAt": config, "lastScalingAt": scaling});
        let instances = self.instances_of(id);
        if wants("counts") {
            let count = |f: fn(&Instance) -> bool| instances.iter().filter(|i| f(i)).count();
            v["tasksRunning"] = json!(count(Instance::is_running));
            v["tasksStaged"] = json!(count(|i| matches!(
                i.state,
                TaskState::TaskStaging | TaskState::TaskStarting
            )));
            v["tasksHealthy"] = json!(count(|i| i.healthy == Some(true)));
            v["tasksUnhealthy"] = json!(count(|i| i.healthy == Some(false)));
        }
        // Marathon's `tasks` embed brings the deployments too.
        if wants("deployments") || wants("tasks") {
            v["deployments"] = json!(self
                .deployments
                .values()
                .filter(|d| d.plan.affected_apps.contains(id))
                .map(|d| json!({"id": d.plan.id}))
                .collect::<Vec<_>>());
        }
        if wants("tasks") {
            v["tasks"] = json!(instances
                .iter()
                .map(|i| self.task_json(i))
                .collect::<Vec<_>>());
        }
        v
    }

    /// A deployment as Marathon's events carry it: its steps and the root group before
    /// (`original`) and after (`target`) it. drover keeps only the affected apps as they were,
    /// so `original` is the present root with those apps put back; `target` is the present root.
    fn plan_event_json(&self, d: &Deployment) -> Value {
        let mut original = self.root.clone();
        for id in &d.plan.affected_apps {
            original = match d.original.get(id) {
                Some(app) => {
                    let version = app.version.as_deref().unwrap_or(&d.plan.version);
                    original.put_app(app.clone(), version).unwrap_or(original)
                }
                None => original.remove_app(id, &d.plan.version),
            };
        }
        json!({
            "id": d.plan.id,
            "version": d.plan.version,
            "original": original.to_marathon_json(),
            "target": self.root.to_marathon_json(),
            "steps": d.plan.steps_json(),
        })
    }

    /// A task in Marathon's shape, with its health check results.
    pub fn task_json(&self, i: &Instance) -> Value {
        let mut v = i.to_marathon_json();
        if let Some(states) = self.health.get(&i.task_id) {
            v["healthCheckResults"] = json!(states
                .iter()
                .map(|s| s.to_json(format_version))
                .collect::<Vec<_>>());
        }
        v
    }

    /// `GET /v2/queue`.
    pub fn queue_json(&self, now_ms: u64) -> Value {
        let mut out = Vec::new();
        for (id, count) in &self.queue {
            let Some(app) = self.root.app(id) else {
                continue;
            };
            let backoff = self.backoff.get(id).cloned().unwrap_or_default();
            let left = backoff.until_ms.saturating_sub(now_ms);
            let stats = self.offer_stats.get(id).cloned().unwrap_or_default();
            let reasons: Vec<Value> = REASONS
                .iter()
                .map(|r| json!({"reason": r, "declined": stats.reasons.get(r).copied().unwrap_or(0), "processed": stats.processed}))
                .collect();
            out.push(json!({
                "count": count,
                "delay": {"timeLeftSeconds": left / 1000, "overdue": left == 0},
                "since": app.version,
                "app": self.app_json(app, &BTreeSet::new()),
                "processedOffersSummary": {
                    "processedOffersCount": stats.processed,
                    "unusedOffersCount": stats.unused,
                    "lastUnusedOfferAt": stats.last_unused_at.map(format_version),
                    "lastUsedOfferAt": stats.last_used_at.map(format_version),
                    "rejectSummaryLastOffers": reasons,
                    "rejectSummaryLaunchAttempt": reasons,
                },
            }));
        }
        json!({"queue": out})
    }

    /// `DELETE /v2/queue/{app}/delay`.
    pub fn reset_delay(&mut self, id: &PathId) -> bool {
        self.backoff.remove(id).is_some() || self.queue.contains_key(id)
    }

    /// `GET /v2/deployments`.
    pub fn deployments_json(&self) -> Value {
        json!(self
            .deployments
            .values()
            .map(|d| d.plan.to_marathon_json(d.step + 1))
            .collect::<Vec<_>>())
    }
}

/// Marathon's 409 for an app that running deployments hold.
fn locked(deployments: &[String]) -> ApiError {
    ApiError {
        status: 409,
        body: json!({
            "message": "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
            "deployments": deployments.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
        }),
    }
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

/// A group as stored: its own fields (its apps and subgroups are stored apart).
fn group_json(g: &Group) -> Value {
    json!({
        "id": g.id.to_string(),
        "dependencies": g.dependencies.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "version": g.version,
    })
}

pub fn stored_app_json(app: &AppDefinition, config: &str, scaling: &str) -> Value {
    json!({"app": app.to_storage_json(), "lastConfigChangeAt": config, "lastScalingAt": scaling})
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

/// The TaskInfo launching `instance` of `app`: command or Docker container, resources with the
/// instance's ports, and Marathon's environment.
fn task_info(
    app: &AppDefinition,
    instance: &Instance,
    offer: &v1::Offer,
    role: &str,
) -> v1::TaskInfo {
    let mut resources = vec![scalar("cpus", app.cpus, role), scalar("mem", app.mem, role)];
    if app.disk > 0.0 {
        resources.push(scalar("disk", app.disk, role));
    }
    if app.gpus > 0 {
        resources.push(scalar("gpus", f64::from(app.gpus), role));
    }
    if !instance.ports.is_empty() {
        resources.push(v1::Resource {
            name: "ports".into(),
            kind: "RANGES".into(),
            scalar: None,
            ranges: Some(v1::RangesValue {
                range: instance
                    .ports
                    .iter()
                    .map(|p| v1::RangeValue {
                        begin: u64::from(*p),
                        end: u64::from(*p),
                    })
                    .collect(),
            }),
            set: None,
            role: None,
            allocation_info: Some(v1::AllocationInfo { role: role.into() }),
        });
    }
    let mut env: BTreeMap<String, String> = app.env.clone();
    env.insert("HOST".into(), offer.hostname.clone());
    env.insert("MARATHON_APP_ID".into(), app.id.to_string());
    env.insert("MARATHON_APP_VERSION".into(), instance.version.clone());
    env.insert("MESOS_TASK_ID".into(), instance.task_id.clone());
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
    if !app.labels.is_empty() {
        env.insert(
            "MARATHON_APP_LABELS".into(),
            app.labels.keys().cloned().collect::<Vec<_>>().join(" "),
        );
    }
    let bridge_ports: Vec<u32> = if app.uses_port_mappings() {
        instance.ports.clone()
    } else {
        Vec::new()
    };
    for (n, port) in instance.ports.iter().enumerate() {
        env.insert(format!("PORT{n}"), port.to_string());
    }
    if let Some(first) = instance.ports.first() {
        env.insert("PORT".into(), first.to_string());
    }
    if !instance.ports.is_empty() {
        env.insert(
            "PORTS".into(),
            instance
                .ports
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let environment = Some(v1::Environment {
        variables: env
            .into_iter()
            .map(|(name, value)| v1::Variable { name, value })
            .collect(),
    });
    let command = match (&app.cmd, &app.args) {
        (Some(cmd), _) => v1::CommandInfo {
            value: Some(cmd.clone()),
            shell: Some(true),
            environment,
            user: app.user.clone(),
            uris: app
                .fetch
                .iter()
                .map(|f| json!({"value": f.uri, "extract": f.extract, "executable": f.executable, "cache": f.cache}))
                .collect(),
            arguments: Vec::new(),
        },
        (None, Some(args)) => v1::CommandInfo {
            value: None,
            shell: Some(false),
            arguments: args.clone(),
            environment,
            user: app.user.clone(),
            uris: Vec::new(),
        },
        (None, None) => v1::CommandInfo {
            shell: Some(false),
            environment,
            ..v1::CommandInfo::default()
        },
    };
    let container = app.container.as_ref().and_then(|c| {
        let docker = c.docker.as_ref()?;
        if c.kind != ContainerType::Docker {
            return None;
        }
        let network = match docker.network {
            Some(DockerNetwork::Bridge) => "BRIDGE",
            _ => "HOST",
        };
        let mut mapped = bridge_ports.iter();
        let mappings: Vec<Value> = docker
            .port_mappings
            .iter()
            .map(|m| {
                json!({"host_port": mapped.next().copied().unwrap_or(0), "container_port": m.container_port, "protocol": m.protocol})
            })
            .collect();
        Some(json!({
            "type": "DOCKER",
            "docker": {
                "image": docker.image,
                "network": network,
                "privileged": docker.privileged,
                "force_pull_image": docker.force_pull_image,
                "port_mappings": mappings,
                "parameters": docker.parameters.iter().map(|p| json!({"key": p.key, "value": p.value})).collect::<Vec<_>>(),
            },
        }))
    });
    let health_check = app.health_checks.iter().find_map(|h| {
        let port = || {
            h.port
                .or_else(|| instance.ports.get(h.port_index.unwrap_or(0) as usize).copied())
                .unwrap_or(0)
        };
        let (kind, spec) = match h.protocol {
            HealthProtocol::Command => ("COMMAND", json!({"command": {"value": h.command.clone()?}})),
            HealthProtocol::MesosHttp | HealthProtocol::MesosHttps => (
                "HTTP",
                json!({"http": {"port": port(), "path": h.path.clone().unwrap_or_else(|| "/".into())}}),
            ),
            HealthProtocol::MesosTcp => ("TCP", json!({"tcp": {"port": port()}})),
            _ => return None,
        };
        let mut out = json!({
            "type": kind,
            "delay_seconds": h.delay_seconds,
            "interval_seconds": h.interval_seconds,
            "timeout_seconds": h.timeout_seconds,
            "consecutive_failures": h.max_consecutive_failures,
            "grace_period_seconds": h.grace_period_seconds,
        });
        if let (Some(o), Value::Object(extra)) = (out.as_object_mut(), spec) {
            o.extend(extra);
        }
        Some(out)
    });
    let labels = (!app.labels.is_empty()).then(|| {
        json!({"labels": app.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()})
    });
    v1::TaskInfo {
        name: app.id.to_hostname(),
        task_id: Id::new(instance.task_id.clone()),
        agent_id: offer.agent_id.clone(),
        resources,
        command: Some(command),
        container,
        labels,
        health_check,
        kill_policy: app
            .task_kill_grace_period_seconds
            .map(|s| json!({"grace_period": {"nanoseconds": u64::from(s) * 1_000_000_000}})),
    }
}

fn scalar(name: &str, value: f64, role: &str) -> v1::Resource {
    v1::Resource {
        name: name.into(),
        kind: "SCALAR".into(),
        scalar: Some(v1::ScalarValue { value }),
        ranges: None,
        set: None,
        role: None,
        allocation_info: Some(v1::AllocationInfo { role: role.into() }),
    }
}

#[cfg(test)]
pub(crate) mod tests;
