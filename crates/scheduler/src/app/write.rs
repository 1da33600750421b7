//! Writing an app in Marathon's response shape (and in full, for storage).

use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::{Map, Value};

use super::*;

impl AppDefinition {
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

    pub(super) fn to_json(&self, version: Option<&str>, with_unknown: bool) -> Value {
        let shape = AppJson {
            id: self.id.to_string(),
            cmd: &self.cmd,
            args: &self.args,
            user: &self.user,
            env: &self.env,
            instances: self.instances,
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            gpus: self.gpus,
            executor: &self.executor,
            constraints: self.constraints.iter().map(Constraint::to_json).collect(),
            uris: self.fetch.iter().map(|f| f.uri.as_str()).collect(),
            fetch: &self.fetch,
            store_urls: &self.store_urls,
            backoff_seconds: self.backoff_seconds,
            backoff_factor: self.backoff_factor,
            max_launch_delay_seconds: self.max_launch_delay_seconds,
            container: &self.container,
            health_checks: &self.health_checks,
            readiness_checks: &self.readiness_checks,
            dependencies: self.dependencies.iter().map(PathId::to_string).collect(),
            upgrade_strategy: self.upgrade_strategy,
            labels: &self.labels,
            accepted_resource_roles: &self.accepted_resource_roles,
            version,
            task_kill_grace_period_seconds: self.task_kill_grace_period_seconds,
            unreachable_strategy: self.unreachable_strategy,
            kill_selection: self.kill_selection,
            ports: self.port_definitions.iter().map(|p| p.port).collect(),
            port_definitions: &self.port_definitions,
            require_ports: self.require_ports,
            version_info: version.filter(|_| !with_unknown).map(|v| VersionInfo {
                last_scaling_at: v,
                last_config_change_at: v,
            }),
        };
        let mut out = match serde_json::to_value(shape) {
            Ok(Value::Object(out)) => out,
            _ => Map::new(),
        };
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

/// An app in Marathon's shape: every field Marathon answers with, named as Marathon names it
/// (absent options are `null`, as Marathon writes them). The nested shapes are the model's own
/// types, serialized by their derives (`app.rs`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppJson<'a> {
    id: String,
    cmd: &'a Option<String>,
    args: &'a Option<Vec<String>>,
    user: &'a Option<String>,
    env: &'a BTreeMap<String, String>,
    instances: u32,
    cpus: f64,
    mem: f64,
    disk: f64,
    gpus: u32,
    executor: &'a str,
    constraints: Vec<Value>,
    /// The fetch list's URIs, as Marathon still answers them.
    uris: Vec<&'a str>,
    fetch: &'a [FetchUri],
    store_urls: &'a [String],
    backoff_seconds: u32,
    backoff_factor: f64,
    max_launch_delay_seconds: u32,
    container: &'a Option<Container>,
    health_checks: &'a [HealthCheck],
    readiness_checks: &'a [Value],
    dependencies: Vec<String>,
    upgrade_strategy: UpgradeStrategy,
    labels: &'a BTreeMap<String, String>,
    accepted_resource_roles: &'a Option<Vec<String>>,
    version: Option<&'a str>,
    task_kill_grace_period_seconds: Option<u32>,
    unreachable_strategy: UnreachableStrategy,
    kill_selection: KillSelection,
    /// The port definitions' numbers (Marathon's older form).
    ports: Vec<u32>,
    port_definitions: &'a [PortDefinition],
    require_ports: bool,
    /// Only in answers, not in storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<VersionInfo<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo<'a> {
    last_scaling_at: &'a str,
    last_config_change_at: &'a str,
}

/// Marathon's `"disabled"`, or the two timeouts.
impl Serialize for UnreachableStrategy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match *self {
            UnreachableStrategy::Disabled => serializer.serialize_str("disabled"),
            UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => {
                let mut s = serializer.serialize_struct("UnreachableStrategy", 2)?;
                s.serialize_field("inactiveAfterSeconds", &inactive_after_seconds)?;
                s.serialize_field("expungeAfterSeconds", &expunge_after_seconds)?;
                s.end()
            }
        }
    }
}

/// Marathon answers `portMappings: null` for a Docker container on the host network (or none)
/// without mappings, and the list otherwise.
impl Serialize for Docker {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct DockerJson<'a> {
            image: &'a str,
            network: Option<DockerNetwork>,
            port_mappings: Option<&'a [PortMapping]>,
            privileged: bool,
            parameters: &'a [Parameter],
            force_pull_image: bool,
        }
        let listed = !self.port_mappings.is_empty()
            || matches!(
                self.network,
                Some(DockerNetwork::Bridge | DockerNetwork::User)
            );
        DockerJson {
            image: &self.image,
            network: self.network,
            port_mappings: listed.then_some(&self.port_mappings[..]),
            privileged: self.privileged,
            parameters: &self.parameters,
            force_pull_image: self.force_pull_image,
        }
        .serialize(serializer)
    }
}

/// A health check's command in Marathon's shape: `{"value": "..."}`.
pub(super) fn command_value<S: Serializer>(
    command: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut s = serializer.serialize_struct("Command", 1)?;
    s.serialize_field("value", command)?;
    s.end()
}
