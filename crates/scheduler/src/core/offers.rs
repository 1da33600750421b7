//! Offer matching: the launch queue against offers (resources, ports, constraints, spread), and
//! the TaskInfo of each launch.

use super::*;

impl Scheduler {
    /// Matches offers against the launch queue. Returns, per offer, the instances to store
    /// and the call (an ACCEPT with LAUNCH, or a DECLINE) to send once they are stored.
    pub fn offers(&mut self, offers: &[v1::Offer], now_ms: u64) -> Vec<(Vec<StoreOp>, Call)> {
        let mut out = Vec::new();
        self.last_offer_ms = now_ms;
        if now_ms >= self.tokens.1 + self.tuning.launch_token_interval_ms {
            self.tokens = (self.tuning.launch_tokens, now_ms);
        }
        // Every agent offered now counts for the spread, with what it offers.
        let window = self.tuning.spread_window_ms;
        self.offered
            .retain(|_, seen| seen.at_ms.saturating_add(window) >= now_ms);
        for offer in offers {
            self.offered.insert(
                offer.agent_id.value.clone(),
                Offered {
                    at_ms: now_ms,
                    host: offer.hostname.clone(),
                    attributes: offer_attributes(offer),
                    free: Free::of(offer),
                },
            );
        }
        let mut spreads: BTreeMap<PathId, Spread> = BTreeMap::new();
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
                if !self.launch_ready || self.backoff.get(&id).is_some_and(|b| now_ms < b.until_ms)
                {
                    continue;
                }
                let unix = self.env.unix_ms();
                self.offer_stats.entry(id.clone()).or_default().processed += 1;
                let mut used = false;
                let spread = spreads
                    .entry(id.clone())
                    .or_insert_with(|| self.spread_of(&app, &id));
                let agent = &offer.agent_id.value;
                while need > 0 && self.tokens.0 > 0 && spread.may_take(agent, need) {
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
                    spread.took(agent);
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
            if let Some(seen) = self.offered.get_mut(&offer.agent_id.value) {
                seen.free = free;
            }
            // How long the master should keep what this offer leaves unused from us: long when
            // nothing waits and nothing was launched (a REVIVE brings offers back), until the
            // launch tokens refill when only they were missing, not at all while instances
            // wait after launches here (the rest of the agent may be wanted in the next
            // allocation), and a while otherwise.
            let idle = self.queue.is_empty();
            let refuse_ms = if idle && infos.is_empty() {
                self.tuning.decline_idle_ms
            } else if idle {
                self.tuning.decline_unfit_ms
            } else if self.tokens.0 == 0 {
                (self.tokens.1 + self.tuning.launch_token_interval_ms).saturating_sub(now_ms)
            } else if infos.is_empty() {
                self.tuning.decline_unfit_ms
            } else {
                0
            };
            let filters = Some(v1::Filters {
                refuse_seconds: Some(refuse_ms as f64 / 1000.0),
            });
            if infos.is_empty() {
                self.counters.offers_declined += 1;
                let mut call = bare(CallType::Decline);
                call.decline = Some(v1::Decline {
                    offer_ids: vec![offer.id.clone()],
                    filters,
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
                    filters,
                });
                out.push((ops, call));
            }
        }
        out
    }
}

/// Resources of one offer still free while it is being matched.
#[derive(Clone, Debug)]
pub(super) struct Free {
    cpus: f64,
    mem: f64,
    disk: f64,
    gpus: f64,
    ports: Vec<(u64, u64)>,
    role: String,
}

impl Free {
    pub(super) fn of(offer: &v1::Offer) -> Free {
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

    pub(super) fn port_count(&self) -> u64 {
        self.ports.iter().map(|(b, e)| e - b + 1).sum()
    }

    /// Takes `n` ports (the lowest free), or the fixed `wanted` ones when they are free.
    pub(super) fn take_ports(&mut self, wanted: &[u32]) -> Option<Vec<u32>> {
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

/// An agent that offered lately: when, its name and attributes, and what it had left after
/// this scheduler's launches.
#[derive(Clone, Debug)]
pub(super) struct Offered {
    at_ms: u64,
    host: String,
    attributes: BTreeMap<String, String>,
    free: Free,
}

/// How one app's instances stand on the agents that could take one more: an offer's agent
/// takes instances only while it has no more of them than an even share of what the app will
/// have there, so an app spreads over the agents that offer, whether their offers come
/// together or one by one (Marathon leaves spreading to constraints; the seed's apps run one
/// instance on each agent without any).
pub(super) struct Spread {
    on: BTreeMap<String, u32>,
    placed: u32,
}

impl Spread {
    /// Whether `agent` may take one more instance while `need` still wait.
    fn may_take(&self, agent: &str, need: u32) -> bool {
        let agents = self.on.len().max(1) as u32;
        let even = (self.placed + need).div_ceil(agents);
        self.on.get(agent).copied().unwrap_or(0) < even
    }

    fn took(&mut self, agent: &str) {
        *self.on.entry(agent.to_string()).or_default() += 1;
        self.placed += 1;
    }
}

impl Scheduler {
    /// The agents that offered within the spread window and could take one more instance of
    /// `app` by what they had left (role, resources, ports, constraints), each with the app's
    /// active instances on it.
    fn spread_of(&self, app: &AppDefinition, id: &PathId) -> Spread {
        let name = id.to_string();
        let active: Vec<&Instance> = self
            .instances
            .values()
            .filter(|i| i.app == name && i.is_active())
            .collect();
        let placements: Vec<Placement<'_>> = active
            .iter()
            .map(|i| Placement::new(&i.host, &i.attributes))
            .collect();
        let ports = host_ports(app);
        let mut on: BTreeMap<String, u32> = self
            .offered
            .iter()
            .filter(|(_, seen)| {
                let role_ok = app
                    .accepted_resource_roles
                    .as_ref()
                    .is_none_or(|roles| roles.iter().any(|r| *r == seen.free.role || r == "*"));
                role_ok
                    && shortfall(app, &seen.free).is_none()
                    && seen.free.clone().take_ports(&ports).is_some()
                    && constraints::check(
                        &app.constraints,
                        &Placement::new(&seen.host, &seen.attributes),
                        &placements,
                    )
                    .is_ok()
            })
            .map(|(agent, _)| (agent.clone(), 0))
            .collect();
        let mut placed = 0;
        for i in &active {
            if let Some(n) = on.get_mut(&i.agent_id) {
                *n += 1;
                placed += 1;
            }
        }
        Spread { on, placed }
    }
}

/// Marathon's reason when an offer lacks what one instance needs.
pub(super) fn shortfall(app: &AppDefinition, free: &Free) -> Option<&'static str> {
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
pub(super) fn host_ports(app: &AppDefinition) -> Vec<u32> {
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

pub(super) fn offer_attributes(offer: &v1::Offer) -> BTreeMap<String, String> {
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

/// The TaskInfo launching `instance` of `app`: command or Docker container, resources with the
/// instance's ports, and Marathon's environment.
pub(super) fn task_info(
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

pub(super) fn scalar(name: &str, value: f64, role: &str) -> v1::Resource {
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
