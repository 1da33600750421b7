//! Marathon's AppDefinition: the model, its reading from request JSON and its writing in
//! Marathon's response shape.
//!
//! # Reading
//!
//! Field names, types and defaults are Marathon's (`docs/docs/rest-api/.../types/app.raml`):
//! `instances` 1, `cpus` 1.0, `mem` 128.0, `disk` 0, `gpus` 0, `executor` `""`,
//! `backoffSeconds` 1, `backoffFactor` 1.15, `maxLaunchDelaySeconds` 3600,
//! `upgradeStrategy` {1.0, 1.0}, `killSelection` `YOUNGEST_FIRST`, health checks 300/60/20/3,
//! and, when neither `ports` nor `portDefinitions` is given and the app is not on a Docker
//! `BRIDGE`/`USER` network, one port definition with port 0 (a service port to be assigned,
//! see [`crate::group::assign_service_ports`]). `uris` become `fetch` entries (archives are
//! extracted); the response carries both, as Marathon's does.
//!
//! **Types are strict, as Marathon's Play JSON readers are.** A JSON string where a number is
//! expected is a type error, not a number: `"cpus": ".25"` (as in the legacy
//! `apps/legacy-www.json`) is refused with HTTP 422
//! `{"message":"Invalid JSON","details":[{"path":"/cpus","errors":["error.expected.jsnumber"]}]}`
//! — what Marathon 1.5+ answers (Marathon 1.4 and older sent the same body with a 400).
//! Coercing `".25"` to 0.25 would make drover accept documents Marathon refuses, and a scheduler
//! silently reading `"4"` or `"1e3"` is how resources go wrong; the error names the field, so
//! the fix is obvious. All type errors of a document are reported together, each with its path
//! in Marathon's syntax (`/cpus`, `/container/docker/image`, `/apps(0)/cpus` — keys after `/`,
//! array indices in parentheses). JSON `null` reads as absent.
//!
//! **Unknown fields are kept, not refused** (Marathon ignores fields it does not know).
//! Fields Marathon defines but drover does not model (`networks`, `ipAddress`, `residency`,
//! `secrets`, `role`, ...) are kept verbatim in [`AppDefinition::passthrough`] and written back
//! in responses. Any other top-level field is kept in [`AppDefinition::unknown`]: stored with
//! the app (so nothing a client sent is lost, and a later drover can give it meaning) but not
//! echoed in responses, because Marathon's responses never contain them and strict clients
//! (the Python `marathon` package builds objects from response keys) would trip on them.
//! Fields that only appear in responses (`versionInfo`, `tasksRunning`, `deployments`, ...)
//! are dropped, so a GET body can be PUT back. Unknown fields inside nested objects are dropped.
//!
//! Values out of range (`"instances": -1`, `"cpus": 0`) are rule violations, reported with
//! Marathon's Accord messages (`got 0.0, expected 0.001 or more`) as
//! `{"message":"Object is not valid","details":[...]}`; see [`crate::validation`].

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::constraints::Constraint;
use crate::decode::{self, index_path, java_double, Ctx, Fields};
use crate::path::PathId;

/// Default `backoffSeconds`.
pub const DEFAULT_BACKOFF_SECONDS: u32 = 1;
/// Default `backoffFactor`.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 1.15;
/// Default `maxLaunchDelaySeconds`.
pub const DEFAULT_MAX_LAUNCH_DELAY_SECONDS: u32 = 3600;

/// Marathon fields drover keeps and echoes without modelling them. Only fields the `marathon`
/// client's app model takes: an app it reads with another key raises. Marathon's later `tty`,
/// `check`, `resourceLimits` and `linuxInfo` are such keys, so they are kept like unknown
/// fields (stored, not echoed).
const PASSTHROUGH: &[&str] = &["ipAddress", "residency", "secrets", "networks", "role"];

/// Response-only fields, dropped when a response is sent back as a request.
const RESPONSE_ONLY: &[&str] = &[
    "versionInfo",
    "tasksStaged",
    "tasksRunning",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
    "counts",
];

/// An app, as Marathon models it (after defaults and normalisation: the id and the
/// dependencies are absolute).
#[derive(Clone, Debug, PartialEq)]
pub struct AppDefinition {
    pub id: PathId,
    pub cmd: Option<String>,
    pub args: Option<Vec<String>>,
    pub user: Option<String>,
    pub env: BTreeMap<String, String>,
    pub instances: u32,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    pub executor: String,
    pub constraints: Vec<Constraint>,
    pub fetch: Vec<FetchUri>,
    pub store_urls: Vec<String>,
    pub port_definitions: Vec<PortDefinition>,
    pub require_ports: bool,
    pub backoff_seconds: u32,
    pub backoff_factor: f64,
    pub max_launch_delay_seconds: u32,
    pub container: Option<Container>,
    pub health_checks: Vec<HealthCheck>,
    /// Accepted and kept as given (drover does not run readiness checks yet).
    pub readiness_checks: Vec<Value>,
    pub dependencies: Vec<PathId>,
    pub upgrade_strategy: UpgradeStrategy,
    pub labels: BTreeMap<String, String>,
    pub accepted_resource_roles: Option<Vec<String>>,
    /// ISO-8601 version (set by the scheduler when the definition is stored).
    pub version: Option<String>,
    pub kill_selection: KillSelection,
    pub unreachable_strategy: UnreachableStrategy,
    pub task_kill_grace_period_seconds: Option<u32>,
    /// Marathon fields drover does not model: kept and echoed.
    pub passthrough: BTreeMap<String, Value>,
    /// Fields Marathon does not know: kept in storage, not echoed.
    pub unknown: BTreeMap<String, Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FetchUri {
    pub uri: String,
    pub extract: bool,
    pub executable: bool,
    pub cache: bool,
    pub dest_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PortDefinition {
    /// The service port; 0 until one is assigned.
    pub port: u32,
    pub protocol: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerType {
    Docker,
    Mesos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerNetwork {
    Bridge,
    Host,
    None,
    User,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub kind: ContainerType,
    pub docker: Option<Docker>,
    /// Accepted and kept as given.
    pub volumes: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Docker {
    pub image: String,
    pub network: Option<DockerNetwork>,
    pub port_mappings: Vec<PortMapping>,
    pub privileged: bool,
    pub parameters: Vec<Parameter>,
    pub force_pull_image: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PortMapping {
    pub container_port: u32,
    pub host_port: Option<u32>,
    pub service_port: u32,
    pub protocol: String,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameter {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Command,
    MesosHttp,
    MesosHttps,
    MesosTcp,
}

impl HealthProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthProtocol::Http => "HTTP",
            HealthProtocol::Https => "HTTPS",
            HealthProtocol::Tcp => "TCP",
            HealthProtocol::Command => "COMMAND",
            HealthProtocol::MesosHttp => "MESOS_HTTP",
            HealthProtocol::MesosHttps => "MESOS_HTTPS",
            HealthProtocol::MesosTcp => "MESOS_TCP",
        }
    }

    fn is_http(self) -> bool {
        matches!(
            self,
            HealthProtocol::Http
                | HealthProtocol::Https
                | HealthProtocol::MesosHttp
                | HealthProtocol::MesosHttps
        )
    }
}

const HEALTH_PROTOCOLS: &[(&str, HealthProtocol)] = &[
    ("HTTP", HealthProtocol::Http),
    ("HTTPS", HealthProtocol::Https),
    ("TCP", HealthProtocol::Tcp),
    ("COMMAND", HealthProtocol::Command),
    ("MESOS_HTTP", HealthProtocol::MesosHttp),
    ("MESOS_HTTPS", HealthProtocol::MesosHttps),
    ("MESOS_TCP", HealthProtocol::MesosTcp),
];

#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    pub path: Option<String>,
    pub port_index: Option<u32>,
    pub port: Option<u32>,
    pub command: Option<String>,
    pub grace_period_seconds: u32,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub max_consecutive_failures: u32,
    pub delay_seconds: u32,
    pub ignore_http1xx: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpgradeStrategy {
    pub minimum_health_capacity: f64,
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnreachableStrategy {
    Disabled,
    Enabled {
        inactive_after_seconds: u64,
        expunge_after_seconds: u64,
    },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

impl AppDefinition {
    /// An app with Marathon's defaults and the given id and command.
    pub fn new(id: PathId, cmd: Option<String>) -> AppDefinition {
        AppDefinition {
            id,
            cmd,
            args: None,
            user: None,
            env: BTreeMap::new(),
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            gpus: 0,
            executor: String::new(),
            constraints: Vec::new(),
            fetch: Vec::new(),
            store_urls: Vec::new(),
            port_definitions: vec![PortDefinition::random()],
            require_ports: false,
            backoff_seconds: DEFAULT_BACKOFF_SECONDS,
            backoff_factor: DEFAULT_BACKOFF_FACTOR,
            max_launch_delay_seconds: DEFAULT_MAX_LAUNCH_DELAY_SECONDS,
            container: None,
            health_checks: Vec::new(),
            readiness_checks: Vec::new(),
            dependencies: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            labels: BTreeMap::new(),
            accepted_resource_roles: None,
            version: None,
            kill_selection: KillSelection::default(),
            unreachable_strategy: UnreachableStrategy::default(),
            task_kill_grace_period_seconds: None,
            passthrough: BTreeMap::new(),
            unknown: BTreeMap::new(),
        }
    }

    /// The Docker network, if the app runs in a Docker container with one.
    pub fn docker_network(&self) -> Option<DockerNetwork> {
        self.container.as_ref()?.docker.as_ref()?.network
    }

    /// True when the app's ports come from container port mappings (Docker BRIDGE/USER).
    pub fn uses_port_mappings(&self) -> bool {
        matches!(
            self.docker_network(),
            Some(DockerNetwork::Bridge | DockerNetwork::User)
        )
    }

    pub fn port_mappings(&self) -> &[PortMapping] {
        match self.container.as_ref().and_then(|c| c.docker.as_ref()) {
            Some(d) => &d.port_mappings,
            None => &[],
        }
    }

    /// How many ports each task gets (what `portIndex` may address).
    pub fn port_count(&self) -> usize {
        if self.uses_port_mappings() {
            self.port_mappings().len()
        } else {
            self.port_definitions.len()
        }
    }

    /// The service ports, in port-index order.
    pub fn service_ports(&self) -> Vec<u32> {
        if self.uses_port_mappings() {
            self.port_mappings()
                .iter()
                .map(|m| m.service_port)
                .collect()
        } else {
            self.port_definitions.iter().map(|p| p.port).collect()
        }
    }

    /// True when `to` changes what running tasks are (anything but `instances` and the
    /// version): Marathon's `isUpgrade`, which makes a deployment restart the app.
    pub fn is_upgrade(&self, to: &AppDefinition) -> bool {
        let mut a = self.clone();
        let mut b = to.clone();
        a.instances = 0;
        b.instances = 0;
        a.version = None;
        b.version = None;
        a != b
    }

    /// True when only `instances` differs.
    pub fn is_only_scale_change(&self, to: &AppDefinition) -> bool {
        !self.is_upgrade(to) && self.instances != to.instances
    }

    /// The app in Marathon's response shape, defaults filled, with `version` (ISO-8601) as its
    /// version. Unknown fields are left out; passthrough fields are included.
    pub fn to_marathon_json(&self, version: &str) -> Value {
        self.to_json(Some(version), false)
    }

    /// The app with everything it holds (own version, unknown fields), for storage;
    /// [`AppDefinition::from_storage_json`] reads it back.
    pub fn to_storage_json(&self) -> Value {
        self.to_json(self.version.as_deref(), true)
    }

    fn to_json(&self, version: Option<&str>, with_unknown: bool) -> Value {
        let mut out = Map::new();
        let opt_str = |s: &Option<String>| s.as_ref().map_or(Value::Null, |s| json!(s));
        out.insert("id".into(), json!(self.id.to_string()));
        out.insert("cmd".into(), opt_str(&self.cmd));
        out.insert(
            "args".into(),
            self.args.as_ref().map_or(Value::Null, |a| json!(a)),
        );
        out.insert("user".into(), opt_str(&self.user));
        out.insert("env".into(), json!(self.env));
        out.insert("instances".into(), json!(self.instances));
        out.insert("cpus".into(), json!(self.cpus));
        out.insert("mem".into(), json!(self.mem));
        out.insert("disk".into(), json!(self.disk));
        out.insert("gpus".into(), json!(self.gpus));
        out.insert("executor".into(), json!(self.executor));
        out.insert(
            "constraints".into(),
            Value::Array(self.constraints.iter().map(Constraint::to_json).collect()),
        );
        out.insert(
            "uris".into(),
            Value::Array(self.fetch.iter().map(|f| json!(f.uri)).collect()),
        );
        out.insert(
            "fetch".into(),
            Value::Array(self.fetch.iter().map(FetchUri::to_json).collect()),
        );
        out.insert("storeUrls".into(), json!(self.store_urls));
        out.insert("backoffSeconds".into(), json!(self.backoff_seconds));
        out.insert("backoffFactor".into(), json!(self.backoff_factor));
        out.insert(
            "maxLaunchDelaySeconds".into(),
            json!(self.max_launch_delay_seconds),
        );
        out.insert(
            "container".into(),
            self.container
                .as_ref()
                .map_or(Value::Null, Container::to_json),
        );
        out.insert(
            "healthChecks".into(),
            Value::Array(
                self.health_checks
                    .iter()
                    .map(HealthCheck::to_json)
                    .collect(),
            ),
        );
        out.insert(
            "readinessChecks".into(),
            Value::Array(self.readiness_checks.clone()),
        );
        out.insert(
            "dependencies".into(),
            Value::Array(
                self.dependencies
                    .iter()
                    .map(|d| json!(d.to_string()))
                    .collect(),
            ),
        );
        out.insert(
            "upgradeStrategy".into(),
            json!({
                "minimumHealthCapacity": self.upgrade_strategy.minimum_health_capacity,
                "maximumOverCapacity": self.upgrade_strategy.maximum_over_capacity,
            }),
        );
        out.insert("labels".into(), json!(self.labels));
        out.insert(
            "acceptedResourceRoles".into(),
            self.accepted_resource_roles
                .as_ref()
                .map_or(Value::Null, |r| json!(r)),
        );
        out.insert("version".into(), version.map_or(Value::Null, |v| json!(v)));
        out.insert(
            "taskKillGracePeriodSeconds".into(),
            self.task_kill_grace_period_seconds
                .map_or(Value::Null, |s| json!(s)),
        );
        out.insert(
            "unreachableStrategy".into(),
            match self.unreachable_strategy {
                UnreachableStrategy::Disabled => json!("disabled"),
                UnreachableStrategy::Enabled {
                    inactive_after_seconds,
                    expunge_after_seconds,
                } => {
                    json!({
                        "inactiveAfterSeconds": inactive_after_seconds,
                        "expungeAfterSeconds": expunge_after_seconds,
                    })
                }
            },
        );
        out.insert(
            "killSelection".into(),
            json!(match self.kill_selection {
                KillSelection::YoungestFirst => "YOUNGEST_FIRST",
                KillSelection::OldestFirst => "OLDEST_FIRST",
            }),
        );
        out.insert(
            "ports".into(),
            Value::Array(
                self.port_definitions
                    .iter()
                    .map(|p| json!(p.port))
                    .collect(),
            ),
        );
        out.insert(
            "portDefinitions".into(),
            Value::Array(
                self.port_definitions
                    .iter()
                    .map(PortDefinition::to_json)
                    .collect(),
            ),
        );
        out.insert("requirePorts".into(), json!(self.require_ports));
        if let Some(version) = version {
            if !with_unknown {
                out.insert(
                    "versionInfo".into(),
                    json!({"lastScalingAt": version, "lastConfigChangeAt": version}),
                );
            }
        }
        for (k, v) in &self.passthrough {
            out.insert(k.clone(), v.clone());
        }
        if with_unknown {
            for (k, v) in &self.unknown {
                out.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Value::Object(out)
    }
}

impl PortDefinition {
    /// Port 0 over TCP: "give me a port".
    pub fn random() -> PortDefinition {
        PortDefinition {
            port: 0,
            protocol: "tcp".into(),
            name: None,
            labels: BTreeMap::new(),
        }
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("port".into(), json!(self.port));
        out.insert("protocol".into(), json!(self.protocol));
        if let Some(name) = &self.name {
            out.insert("name".into(), json!(name));
        }
        out.insert("labels".into(), json!(self.labels));
        Value::Object(out)
    }
}

impl FetchUri {
    /// A fetch entry for a legacy `uris` item: archives are extracted.
    pub fn from_uri(uri: &str) -> FetchUri {
        const ARCHIVES: [&str; 7] = [
            ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
        ];
        FetchUri {
            uri: uri.to_string(),
            extract: ARCHIVES.iter().any(|ext| uri.ends_with(ext)),
            executable: false,
            cache: false,
            dest_path: None,
        }
    }

    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("uri".into(), json!(self.uri));
        out.insert("extract".into(), json!(self.extract));
        out.insert("executable".into(), json!(self.executable));
        out.insert("cache".into(), json!(self.cache));
        if let Some(dest) = &self.dest_path {
            out.insert("destPath".into(), json!(dest));
        }
        Value::Object(out)
    }
}

impl Container {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert(
            "type".into(),
            json!(match self.kind {
                ContainerType::Docker => "DOCKER",
                ContainerType::Mesos => "MESOS",
            }),
        );
        out.insert("volumes".into(), Value::Array(self.volumes.clone()));
        if let Some(docker) = &self.docker {
            let network = docker.network.map(|n| match n {
                DockerNetwork::Bridge => "BRIDGE",
                DockerNetwork::Host => "HOST",
                DockerNetwork::None => "NONE",
                DockerNetwork::User => "USER",
            });
            let mappings = if docker.port_mappings.is_empty()
                && !matches!(
                    docker.network,
                    Some(DockerNetwork::Bridge | DockerNetwork::User)
                ) {
                Value::Null
            } else {
                Value::Array(
                    docker
                        .port_mappings
                        .iter()
                        .map(PortMapping::to_json)
                        .collect(),
                )
            };
            out.insert(
                "docker".into(),
                json!({
                    "image": docker.image,
                    "network": network,
                    "portMappings": mappings,
                    "privileged": docker.privileged,
                    "parameters": docker
                        .parameters
                        .iter()
                        .map(|p| json!({"key": p.key, "value": p.value}))
                        .collect::<Vec<_>>(),
                    "forcePullImage": docker.force_pull_image,
                }),
            );
        }
        Value::Object(out)
    }
}

impl PortMapping {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("containerPort".into(), json!(self.container_port));
        if let Some(host) = self.host_port {
            out.insert("hostPort".into(), json!(host));
        }
        out.insert("servicePort".into(), json!(self.service_port));
        out.insert("protocol".into(), json!(self.protocol));
        if let Some(name) = &self.name {
            out.insert("name".into(), json!(name));
        }
        out.insert("labels".into(), json!(self.labels));
        Value::Object(out)
    }
}

impl HealthCheck {
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("protocol".into(), json!(self.protocol.as_str()));
        if let Some(path) = &self.path {
            out.insert("path".into(), json!(path));
        }
        if let Some(i) = self.port_index {
            out.insert("portIndex".into(), json!(i));
        }
        if let Some(p) = self.port {
            out.insert("port".into(), json!(p));
        }
        if let Some(c) = &self.command {
            out.insert("command".into(), json!({"value": c}));
        }
        out.insert(
            "gracePeriodSeconds".into(),
            json!(self.grace_period_seconds),
        );
        out.insert("intervalSeconds".into(), json!(self.interval_seconds));
        out.insert("timeoutSeconds".into(), json!(self.timeout_seconds));
        out.insert(
            "maxConsecutiveFailures".into(),
            json!(self.max_consecutive_failures),
        );
        out.insert("delaySeconds".into(), json!(self.delay_seconds));
        out.insert("ignoreHttp1xx".into(), json!(self.ignore_http1xx));
        Value::Object(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Known top-level fields (everything else is passthrough, response-only or unknown).
const KNOWN: &[&str] = &[
    "id",
    "cmd",
    "args",
    "user",
    "env",
    "instances",
    "cpus",
    "mem",
    "disk",
    "gpus",
    "executor",
    "constraints",
    "uris",
    "fetch",
    "storeUrls",
    "ports",
    "portDefinitions",
    "requirePorts",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "container",
    "healthChecks",
    "readinessChecks",
    "dependencies",
    "upgradeStrategy",
    "labels",
    "acceptedResourceRoles",
    "version",
    "killSelection",
    "unreachableStrategy",
    "taskKillGracePeriodSeconds",
];

/// The keys of a readiness check (Marathon's and the `marathon` client's).
const READINESS_CHECK_KEYS: &[&str] = &[
    "name",
    "protocol",
    "path",
    "portName",
    "intervalSeconds",
    "timeoutSeconds",
    "httpStatusCodesForReady",
    "preserveLastResponse",
];

/// The keys of an app's volume the `marathon` client's model takes (Marathon's secret volumes'
/// `secret` it does not).
const VOLUME_KEYS: &[&str] = &[
    "containerPath",
    "hostPath",
    "mode",
    "persistent",
    "external",
];

/// `item` with only `keys` (unknown fields inside nested objects are dropped).
fn known_keys(item: &Value, keys: &[&str]) -> Value {
    match item {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Accord's "got X, expected N or more" for integers.
fn int_min(ctx: &mut Ctx, path: &str, got: i64, min: i64) -> bool {
    if got < min {
        ctx.violation(path, format!("got {got}, expected {min} or more"));
        false
    } else {
        true
    }
}

/// A non-negative int32 field: `None` when absent or wrong (the error is recorded).
fn non_negative(f: &Fields<'_>, key: &str, ctx: &mut Ctx) -> Option<u32> {
    let v = f.i32(key, ctx)?;
    if int_min(ctx, &f.at(key), v, 0) {
        u32::try_from(v).ok()
    } else {
        None
    }
}

fn port_number(v: i64, path: &str, ctx: &mut Ctx) -> Option<u32> {
    if (0..=65535).contains(&v) {
        u32::try_from(v).ok()
    } else {
        ctx.violation(path, format!("got {v}, expected between 0 and 65535"));
        None
    }
}

fn protocol(f: &Fields<'_>, ctx: &mut Ctx) -> String {
    match f.string("protocol", ctx) {
        None => "tcp".into(),
        Some(p) if ["tcp", "udp", "udp,tcp", "tcp,udp"].contains(&p.as_str()) => p,
        Some(_) => {
            ctx.violation(
                &f.at("protocol"),
                "Invalid protocol. Only 'udp', 'tcp' and 'udp,tcp' are allowed.",
            );
            "tcp".into()
        }
    }
}

/// Reads one app at `path` (`""` for a document, `/apps(0)` inside a group). Relative ids are
/// resolved against `base`; with `nested`, the app must be a direct child of `base`.
pub(crate) fn decode_app(
    value: &Value,
    path: &str,
    base: &PathId,
    nested: bool,
    ctx: &mut Ctx,
) -> Option<AppDefinition> {
    let obj = decode::as_object(value, path, ctx)?;
    let f = Fields::new(obj, path);
    let errors_before = ctx.json.len();

    // id
    let raw_id = f.required_string("id", ctx);
    let id = raw_id.as_deref().map(|raw| {
        let parsed = PathId::parse(raw);
        let resolved = parsed.resolve(base);
        let at = f.at("id");
        if let Err(msg) = parsed.validate() {
            ctx.violation(&at, msg);
        } else if resolved.is_root() {
            ctx.violation(&at, crate::path::EMPTY_PATH);
        } else if let Err(msg) = resolved.check_not_reserved() {
            ctx.violation(&at, msg);
        } else if nested && resolved.parent() != *base {
            ctx.violation(&at, format!("Identifier is not child of '{base}'"));
        }
        resolved
    });
    let mut app = AppDefinition::new(id.clone().unwrap_or_else(PathId::root), None);

    if let Some(cmd) = f.string("cmd", ctx) {
        if cmd.is_empty() {
            ctx.type_error(&f.at("cmd"), decode::MIN_LENGTH);
        }
        app.cmd = Some(cmd);
    }
    app.args = f.strings("args", ctx);
    app.user = f.string("user", ctx);
    app.env = f.string_map("env", ctx).unwrap_or_default();
    app.labels = f.string_map("labels", ctx).unwrap_or_default();
    if let Some(n) = non_negative(&f, "instances", ctx) {
        app.instances = n;
    }
    for (key, min, slot) in [
        ("cpus", 0.001, &mut app.cpus),
        ("mem", 0.0, &mut app.mem),
        ("disk", 0.0, &mut app.disk),
    ] {
        if let Some(x) = f.f64(key, ctx) {
            if x < min || !x.is_finite() {
                ctx.violation(
                    &f.at(key),
                    format!(
                        "got {}, expected {} or more",
                        java_double(x),
                        java_double(min)
                    ),
                );
            }
            *slot = x;
        }
    }
    if let Some(n) = non_negative(&f, "gpus", ctx) {
        app.gpus = n;
    }
    if let Some(executor) = f.string("executor", ctx) {
        if !valid_executor(&executor) {
            ctx.violation(
                &f.at("executor"),
                "must fully match regular expression '^(//cmd)|(/?[^/]+(/[^/]+)*)|$'",
            );
        }
        app.executor = executor;
    }
    if let Some(items) = f.array("constraints", ctx) {
        app.constraints = decode_constraints(items, &f.at("constraints"), ctx);
    }

    // fetch / uris
    let uris = f.strings("uris", ctx);
    if let Some(items) = f.array("fetch", ctx) {
        for (i, item) in items.iter().enumerate() {
            if let Some(fetch) = decode_fetch(item, &index_path(&f.at("fetch"), i), ctx) {
                app.fetch.push(fetch);
            }
        }
        let same: Vec<&str> = app.fetch.iter().map(|f| f.uri.as_str()).collect();
        let conflicting = uris.as_ref().is_some_and(|u| {
            !u.is_empty() && u.iter().map(String::as_str).collect::<Vec<_>>() != same
        });
        if conflicting && !app.fetch.is_empty() {
            ctx.violation(&f.at("uris"), "may not be set in conjunction with fetch");
        }
    } else if let Some(uris) = uris {
        app.fetch = uris.iter().map(|u| FetchUri::from_uri(u)).collect();
    }
    if let Some(urls) = f.strings("storeUrls", ctx) {
        app.store_urls = urls;
    }

    if let Some(b) = f.bool("requirePorts", ctx) {
        app.require_ports = b;
    }
    if let Some(n) = non_negative(&f, "backoffSeconds", ctx) {
        app.backoff_seconds = n;
    }
    if let Some(x) = f.f64("backoffFactor", ctx) {
        if x < 1.0 || !x.is_finite() {
            ctx.violation(
                &f.at("backoffFactor"),
                format!("got {}, expected 1.0 or more", java_double(x)),
            );
        }
        app.backoff_factor = x;
    }
    if let Some(n) = non_negative(&f, "maxLaunchDelaySeconds", ctx) {
        app.max_launch_delay_seconds = n;
    }
    if let Some(n) = non_negative(&f, "taskKillGracePeriodSeconds", ctx) {
        app.task_kill_grace_period_seconds = Some(n);
    }

    // container
    let mut container_level_mappings = None;
    if let Some(obj) = f.object("container", ctx) {
        let (container, mappings) = decode_container(obj, &f.at("container"), ctx);
        app.container = container;
        container_level_mappings = mappings;
    }
    if let (Some(mappings), Some(docker)) = (
        container_level_mappings,
        app.container.as_mut().and_then(|c| c.docker.as_mut()),
    ) {
        if docker.port_mappings.is_empty() {
            docker.port_mappings = mappings;
        }
    }
    if app.uses_port_mappings() {
        let bridge = app.docker_network() == Some(DockerNetwork::Bridge);
        if let Some(docker) = app.container.as_mut().and_then(|c| c.docker.as_mut()) {
            for m in &mut docker.port_mappings {
                if bridge && m.host_port.is_none() {
                    m.host_port = Some(0);
                }
            }
        }
    }

    // ports / portDefinitions
    let ports = f.array("ports", ctx);
    let definitions = f.array("portDefinitions", ctx);
    let given_ports = ports.filter(|p| !p.is_empty());
    match (given_ports, definitions) {
        (Some(p), Some(d)) if !d.is_empty() => {
            // A response sent back carries both; that is fine when they agree.
            let numbers: Vec<Option<i64>> = d
                .iter()
                .map(|x| x.get("port").and_then(Value::as_i64).or(Some(0)))
                .collect();
            let given: Vec<Option<i64>> = p.iter().map(Value::as_i64).collect();
            if numbers != given {
                ctx.violation(path, "cannot specify both ports and port definitions");
            }
            let at = f.at("portDefinitions");
            app.port_definitions = d
                .iter()
                .enumerate()
                .filter_map(|(i, item)| decode_port_definition(item, &index_path(&at, i), ctx))
                .collect();
        }
        (Some(p), _) => {
            let at = f.at("ports");
            app.port_definitions = p
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let path = index_path(&at, i);
                    let n = decode::as_i32(item, &path, ctx)?;
                    let port = port_number(n, &path, ctx)?;
                    Some(PortDefinition {
                        port,
                        ..PortDefinition::random()
                    })
                })
                .collect();
        }
        (None, Some(d)) => {
            let at = f.at("portDefinitions");
            app.port_definitions = d
                .iter()
                .enumerate()
                .filter_map(|(i, item)| decode_port_definition(item, &index_path(&at, i), ctx))
                .collect();
        }
        (None, None) => {
            app.port_definitions = if ports.is_some() || app.uses_port_mappings() {
                Vec::new()
            } else {
                vec![PortDefinition::random()]
            };
        }
    }

    // health checks
    if let Some(items) = f.array("healthChecks", ctx) {
        let at = f.at("healthChecks");
        for (i, item) in items.iter().enumerate() {
            if let Some(hc) = decode_health_check(item, &index_path(&at, i), ctx) {
                app.health_checks.push(hc);
            }
        }
    }
    if let Some(items) = f.array("readinessChecks", ctx) {
        let at = f.at("readinessChecks");
        for (i, item) in items.iter().enumerate() {
            if decode::as_object(item, &index_path(&at, i), ctx).is_some() {
                app.readiness_checks
                    .push(known_keys(item, READINESS_CHECK_KEYS));
            }
        }
    }

    // dependencies, resolved against the app's group
    if let Some(deps) = f.strings("dependencies", ctx) {
        let group = app.id.parent();
        let at = f.at("dependencies");
        for (i, dep) in deps.iter().enumerate() {
            let parsed = PathId::parse(dep);
            if let Err(msg) = parsed.validate() {
                ctx.violation(&index_path(&at, i), msg);
                continue;
            }
            let resolved = parsed.resolve(&group);
            if !app.dependencies.contains(&resolved) {
                app.dependencies.push(resolved);
            }
        }
    }

    if let Some(obj) = f.object("upgradeStrategy", ctx) {
        let u = Fields::new(obj, &f.at("upgradeStrategy"));
        for (key, slot) in [
            (
                "minimumHealthCapacity",
                &mut app.upgrade_strategy.minimum_health_capacity,
            ),
            (
                "maximumOverCapacity",
                &mut app.upgrade_strategy.maximum_over_capacity,
            ),
        ] {
            if let Some(x) = u.f64(key, ctx) {
                if !(0.0..=1.0).contains(&x) {
                    ctx.violation(
                        &u.at(key),
                        format!("got {}, expected between 0.0 and 1.0", java_double(x)),
                    );
                }
                *slot = x;
            }
        }
    }
    app.accepted_resource_roles = f.strings("acceptedResourceRoles", ctx);
    app.version = f.string("version", ctx);
    if let Some(k) = f.enumeration(
        "killSelection",
        &[
            ("YOUNGEST_FIRST", KillSelection::YoungestFirst),
            ("OLDEST_FIRST", KillSelection::OldestFirst),
        ],
        ctx,
    ) {
        app.kill_selection = k;
    }
    if let Some(v) = f.get("unreachableStrategy") {
        let at = f.at("unreachableStrategy");
        match v {
            Value::String(s) if s == "disabled" => {
                app.unreachable_strategy = UnreachableStrategy::Disabled
            }
            Value::String(_) => ctx.type_error(&at, decode::UNKNOWN_ENUM),
            _ => {
                if let Some(obj) = decode::as_object(v, &at, ctx) {
                    let u = Fields::new(obj, &at);
                    let read = |key: &str, ctx: &mut Ctx| {
                        let n = u.i64(key, ctx)?;
                        if int_min(ctx, &u.at(key), n, 0) {
                            u64::try_from(n).ok()
                        } else {
                            None
                        }
                    };
                    let inactive = read("inactiveAfterSeconds", ctx).unwrap_or(0);
                    let expunge = read("expungeAfterSeconds", ctx).unwrap_or(0);
                    if inactive > expunge {
                        ctx.violation(
                            &u.at("inactiveAfterSeconds"),
                            format!("got {inactive}, expected {expunge} or less"),
                        );
                    }
                    app.unreachable_strategy = UnreachableStrategy::Enabled {
                        inactive_after_seconds: inactive,
                        expunge_after_seconds: expunge,
                    };
                }
            }
        }
    }

    // the rest
    for (k, v) in obj {
        if KNOWN.contains(&k.as_str()) || RESPONSE_ONLY.contains(&k.as_str()) {
            continue;
        }
        if PASSTHROUGH.contains(&k.as_str()) {
            if !v.is_null() {
                app.passthrough.insert(k.clone(), v.clone());
            }
        } else {
            app.unknown.insert(k.clone(), v.clone());
        }
    }

    if id.is_none() || ctx.json.len() > errors_before {
        return None;
    }
    Some(app)
}

fn valid_executor(executor: &str) -> bool {
    if executor.is_empty() || executor == "//cmd" {
        return true;
    }
    let body = executor.strip_prefix('/').unwrap_or(executor);
    !body.is_empty() && body.split('/').all(|s| !s.is_empty())
}

fn decode_constraints(items: &[Value], path: &str, ctx: &mut Ctx) -> Vec<Constraint> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = index_path(path, i);
        let Some(parts) = decode::as_array(item, &at, ctx) else {
            continue;
        };
        let mut strings = Vec::with_capacity(parts.len());
        let mut ok = true;
        for (j, part) in parts.iter().enumerate() {
            match decode::as_string(part, &index_path(&at, j), ctx) {
                Some(s) => strings.push(s),
                None => ok = false,
            }
        }
        if !ok {
            continue;
        }
        match Constraint::from_parts(&strings) {
            Ok(c) => out.push(c),
            Err(msg) => ctx.violation(&at, msg),
        }
    }
    out
}

fn decode_fetch(value: &Value, path: &str, ctx: &mut Ctx) -> Option<FetchUri> {
    let obj = decode::as_object(value, path, ctx)?;
    let f = Fields::new(obj, path);
    let uri = f.required_string("uri", ctx);
    let extract = f.bool("extract", ctx).unwrap_or(true);
    let executable = f.bool("executable", ctx).unwrap_or(false);
    let cache = f.bool("cache", ctx).unwrap_or(false);
    let dest_path = f.string("destPath", ctx);
    Some(FetchUri {
        uri: uri?,
        extract,
        executable,
        cache,
        dest_path,
    })
}

fn decode_port_definition(value: &Value, path: &str, ctx: &mut Ctx) -> Option<PortDefinition> {
    let obj = decode::as_object(value, path, ctx)?;
    let f = Fields::new(obj, path);
    let port = match f.i32("port", ctx) {
        Some(n) => port_number(n, &f.at("port"), ctx).unwrap_or(0),
        None => 0,
    };
    let protocol = protocol(&f, ctx);
    let name = f.string("name", ctx);
    let labels = f.string_map("labels", ctx).unwrap_or_default();
    Some(PortDefinition {
        port,
        protocol,
        name,
        labels,
    })
}

fn decode_port_mapping(value: &Value, path: &str, ctx: &mut Ctx) -> Option<PortMapping> {
    let obj = decode::as_object(value, path, ctx)?;
    let f = Fields::new(obj, path);
    let port = |key: &str, ctx: &mut Ctx| {
        f.i32(key, ctx)
            .and_then(|n| port_number(n, &f.at(key), ctx))
    };
    let container_port = port("containerPort", ctx).unwrap_or(0);
    let host_port = port("hostPort", ctx);
    let service_port = port("servicePort", ctx).unwrap_or(0);
    let protocol = protocol(&f, ctx);
    let name = f.string("name", ctx);
    let labels = f.string_map("labels", ctx).unwrap_or_default();
    Some(PortMapping {
        container_port,
        host_port,
        service_port,
        protocol,
        name,
        labels,
    })
}

/// The container and, separately, Marathon 1.5's container-level `portMappings`.
fn decode_container(
    obj: &Map<String, Value>,
    path: &str,
    ctx: &mut Ctx,
) -> (Option<Container>, Option<Vec<PortMapping>>) {
    let f = Fields::new(obj, path);
    let kind = f
        .enumeration(
            "type",
            &[
                ("DOCKER", ContainerType::Docker),
                ("MESOS", ContainerType::Mesos),
            ],
            ctx,
        )
        .unwrap_or(ContainerType::Docker);
    let docker = f.object("docker", ctx).and_then(|d| {
        let at = f.at("docker");
        let d = Fields::new(d, &at);
        let image = d.required_string("image", ctx);
        if image.as_deref() == Some("") {
            ctx.type_error(&d.at("image"), decode::MIN_LENGTH);
        }
        let network = d.enumeration(
            "network",
            &[
                ("BRIDGE", DockerNetwork::Bridge),
                ("HOST", DockerNetwork::Host),
                ("NONE", DockerNetwork::None),
                ("USER", DockerNetwork::User),
            ],
            ctx,
        );
        let port_mappings = d
            .array("portMappings", ctx)
            .map(|items| {
                let at = d.at("portMappings");
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| decode_port_mapping(item, &index_path(&at, i), ctx))
                    .collect()
            })
            .unwrap_or_default();
        let privileged = d.bool("privileged", ctx).unwrap_or(false);
        let force_pull_image = d.bool("forcePullImage", ctx).unwrap_or(false);
        let parameters = d
            .array("parameters", ctx)
            .map(|items| {
                let at = d.at("parameters");
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let p = index_path(&at, i);
                        let obj = decode::as_object(item, &p, ctx)?;
                        let pf = Fields::new(obj, &p);
                        let key = pf.required_string("key", ctx);
                        let value = pf.required_string("value", ctx);
                        Some(Parameter {
                            key: key?,
                            value: value?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Docker {
            image: image?,
            network,
            port_mappings,
            privileged,
            parameters,
            force_pull_image,
        })
    });
    let volumes = f
        .array("volumes", ctx)
        .map(|items| {
            let at = f.at("volumes");
            items
                .iter()
                .enumerate()
                .filter(|(i, item)| decode::as_object(item, &index_path(&at, *i), ctx).is_some())
                .map(|(_, item)| known_keys(item, VOLUME_KEYS))
                .collect()
        })
        .unwrap_or_default();
    let mappings = f.array("portMappings", ctx).map(|items| {
        let at = f.at("portMappings");
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| decode_port_mapping(item, &index_path(&at, i), ctx))
            .collect()
    });
    if kind == ContainerType::Docker && docker.is_none() && f.get("docker").is_none() {
        ctx.violation(&f.at("docker"), "must not be empty");
    }
    (
        Some(Container {
            kind,
            docker,
            volumes,
        }),
        mappings,
    )
}

fn decode_health_check(value: &Value, path: &str, ctx: &mut Ctx) -> Option<HealthCheck> {
    let obj = decode::as_object(value, path, ctx)?;
    let f = Fields::new(obj, path);
    let protocol = f
        .enumeration("protocol", HEALTH_PROTOCOLS, ctx)
        .unwrap_or(HealthProtocol::Http);
    let hc_path = f
        .string("path", ctx)
        .or_else(|| protocol.is_http().then(|| "/".to_string()));
    let mut port_index = non_negative(&f, "portIndex", ctx);
    let port = f
        .i32("port", ctx)
        .and_then(|n| port_number(n, &f.at("port"), ctx));
    let command = f.object("command", ctx).and_then(|c| {
        let cf = Fields::new(c, &f.at("command"));
        cf.required_string("value", ctx)
    });
    let with_default =
        |key: &str, default: u32, ctx: &mut Ctx| non_negative(&f, key, ctx).unwrap_or(default);
    let grace_period_seconds = with_default("gracePeriodSeconds", 300, ctx);
    let interval_seconds = with_default("intervalSeconds", 60, ctx);
    let timeout_seconds = with_default("timeoutSeconds", 20, ctx);
    let max_consecutive_failures = with_default("maxConsecutiveFailures", 3, ctx);
    let delay_seconds = with_default("delaySeconds", 15, ctx);
    let ignore_http1xx = f.bool("ignoreHttp1xx", ctx).unwrap_or(false);
    if protocol == HealthProtocol::Command {
        if command.is_none() {
            ctx.violation(
                &f.at("command"),
                "command must be set for COMMAND health checks",
            );
        }
    } else if port_index.is_none() && port.is_none() {
        port_index = Some(0);
    }
    if port_index.is_some() && port.is_some() {
        ctx.violation(
            path,
            "Health check must specify either portIndex or port, not both",
        );
    }
    Some(HealthCheck {
        protocol,
        path: hc_path,
        port_index,
        port,
        command,
        grace_period_seconds,
        interval_seconds,
        timeout_seconds,
        max_consecutive_failures,
        delay_seconds,
        ignore_http1xx,
    })
}

/// Formats unix milliseconds as Marathon's version timestamps: `2016-05-24T14:58:06.563Z`.
/// Pure (the caller passes its Env's wall clock).
pub fn format_version(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let millis = unix_ms % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Ctx;

    fn read(v: Value) -> (Option<AppDefinition>, Ctx) {
        let mut ctx = Ctx::default();
        let app = decode_app(&v, "", &PathId::root(), false, &mut ctx);
        (app, ctx)
    }

    #[test]
    fn defaults() {
        let (app, ctx) = read(json!({"id": "x", "cmd": "sleep 1"}));
        assert!(ctx.json.is_empty() && ctx.violations.is_empty(), "{ctx:?}");
        let app = app.unwrap();
        assert_eq!(app.id, PathId::parse("/x"));
        assert_eq!(app.instances, 1);
        assert_eq!(app.cpus, 1.0);
        assert_eq!(app.mem, 128.0);
        assert_eq!(app.disk, 0.0);
        assert_eq!(app.backoff_seconds, 1);
        assert_eq!(app.backoff_factor, 1.15);
        assert_eq!(app.max_launch_delay_seconds, 3600);
        assert_eq!(app.port_definitions, vec![PortDefinition::random()]);
        assert_eq!(app.upgrade_strategy, UpgradeStrategy::default());
        assert_eq!(app.kill_selection, KillSelection::YoungestFirst);
    }

    #[test]
    fn response_shape() {
        let (app, _) = read(json!({
            "id": "/web", "cmd": "python -m http.server $PORT0", "instances": 2,
            "uris": ["http://x/a.tgz"], "constraints": [["hostname", "unique"]],
            "healthChecks": [{"protocol": "HTTP"}],
            "networks": [{"mode": "host"}], "zzz": 1, "tasksRunning": 3,
        }));
        let app = app.unwrap();
        assert_eq!(app.unknown.len(), 1);
        let out = app.to_marathon_json("2024-01-01T00:00:00.000Z");
        assert_eq!(out["version"], json!("2024-01-01T00:00:00.000Z"));
        assert_eq!(out["uris"], json!(["http://x/a.tgz"]));
        assert_eq!(out["fetch"][0]["extract"], json!(true));
        assert_eq!(out["constraints"], json!([["hostname", "UNIQUE"]]));
        assert_eq!(out["healthChecks"][0]["path"], json!("/"));
        assert_eq!(out["healthChecks"][0]["portIndex"], json!(0));
        assert_eq!(out["healthChecks"][0]["gracePeriodSeconds"], json!(300));
        assert_eq!(out["ports"], json!([0]));
        assert_eq!(out["networks"], json!([{"mode": "host"}]));
        assert!(out.get("zzz").is_none());
        assert!(out.get("tasksRunning").is_none());
        assert_eq!(out["cmd"], json!("python -m http.server $PORT0"));
        assert_eq!(out["args"], Value::Null);

        // storage round trip keeps unknown fields
        let stored = app.to_storage_json();
        assert_eq!(stored["zzz"], json!(1));
        let back = AppDefinition::from_storage_json(&stored).unwrap();
        assert_eq!(back, app);
        // a response sent back reads as the same app (but for unknowns, not echoed)
        let mut echoed = AppDefinition::from_storage_json(&out).unwrap();
        echoed.version = None;
        echoed.unknown = app.unknown.clone();
        assert_eq!(echoed, app);
    }

    #[test]
    fn docker_bridge_has_no_default_port() {
        let (app, ctx) = read(json!({
            "id": "/u", "cmd": "sleep 1",
            "container": {"type": "DOCKER", "docker": {"image": "ubuntu:16.04", "network": "BRIDGE",
              "portMappings": [{"containerPort": 80}]}}
        }));
        assert!(ctx.json.is_empty() && ctx.violations.is_empty(), "{ctx:?}");
        let app = app.unwrap();
        assert!(app.port_definitions.is_empty());
        assert_eq!(app.port_mappings()[0].host_port, Some(0));
        assert_eq!(app.port_count(), 1);
    }

    #[test]
    fn type_errors_everywhere() {
        let (app, ctx) = read(json!({
            "id": 3, "cmd": ["x"], "instances": 1.5, "env": {"A": 1},
            "container": {"docker": {"image": 7, "network": "BRIDGEX"}},
            "healthChecks": [{"protocol": "SMTP"}],
        }));
        assert!(app.is_none());
        let paths: Vec<&str> = ctx.json.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/id",
                "/cmd",
                "/env/A",
                "/instances",
                "/container/docker/image",
                "/container/docker/network",
                "/healthChecks(0)/protocol",
            ]
        );
    }

    #[test]
    fn upgrade_detection() {
        let (a, _) = read(json!({"id": "/a", "cmd": "x", "instances": 1}));
        let a = a.unwrap();
        let mut b = a.clone();
        b.instances = 5;
        b.version = Some("v".into());
        assert!(!a.is_upgrade(&b));
        assert!(a.is_only_scale_change(&b));
        b.cmd = Some("y".into());
        assert!(a.is_upgrade(&b));
    }

    #[test]
    fn versions() {
        assert_eq!(format_version(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_version(1_464_101_886_563),
            "2016-05-24T14:58:06.563Z"
        );
        assert_eq!(format_version(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
