//! Marathon's AppDefinition: the model here, its reading from request JSON in [`read`] and its
//! writing in Marathon's response shape in [`write`].
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

use serde::Serialize;
use serde_json::{Map, Value};

use crate::constraints::Constraint;
use crate::decode::{self, index_path, java_double, Ctx, Fields};
use crate::path::PathId;

mod read;
mod write;

pub(crate) use read::decode_app;

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

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FetchUri {
    pub uri: String,
    pub extract: bool,
    pub executable: bool,
    pub cache: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortDefinition {
    /// The service port; 0 until one is assigned.
    pub port: u32,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerType {
    Docker,
    Mesos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DockerNetwork {
    Bridge,
    Host,
    None,
    User,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: ContainerType,
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u32>,
    pub service_port: u32,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "write::command_value"
    )]
    pub command: Option<String>,
    pub grace_period_seconds: u32,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub max_consecutive_failures: u32,
    pub delay_seconds: u32,
    pub ignore_http1xx: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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
    use serde_json::json;

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
