//! Reading an app from request JSON: Marathon's fields, types, defaults and rules (see the
//! parent module's documentation).

use super::*;

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
