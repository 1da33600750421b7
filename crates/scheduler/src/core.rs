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
mod instances;
mod offers;
mod views;

use views::group_json;
pub use views::stored_app_json;

#[cfg(test)]
pub(crate) mod tests;
