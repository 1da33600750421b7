//! Writing an app in Marathon's response shape (and in full, for storage).

use serde_json::{json, Map, Value};

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
    pub(super) fn to_json(&self) -> Value {
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
    pub(super) fn to_json(&self) -> Value {
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
    pub(super) fn to_json(&self) -> Value {
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
    pub(super) fn to_json(&self) -> Value {
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
    pub(super) fn to_json(&self) -> Value {
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
