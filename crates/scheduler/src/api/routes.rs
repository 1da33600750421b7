//! Marathon's `/v2` routes: which call a method and path make, and what each does to the
//! scheduler's state (run on the core task, as an [`ApiFn`]).

use super::*;

type ApiFn = crate::daemon::ApiFn;

fn run(
    f: impl FnOnce(&mut Scheduler, &mut Effects, u64) -> Reply + Send + 'static,
) -> Result<ApiFn, Reply> {
    Ok(Box::new(f))
}

fn not_found(path: &str) -> Result<ApiFn, Reply> {
    Err(Reply::json(
        404,
        json!({"message": format!("The requested resource {path} could not be found")}),
    ))
}

/// The closure that answers a request.
pub(super) fn route(
    method: &Method,
    path: &str,
    query: &Params,
    body: &Bytes,
) -> Result<ApiFn, Reply> {
    let q = query.clone();
    let body = body.clone();
    let force = flag(query, "force");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (&Method::DELETE, ["v2", "leader"]) => run(|_, _, _| Reply::json(200, json!({}))),
        (&Method::GET, ["metrics"]) => run(|s, _, _| metrics(s)),
        (&Method::GET, ["v2", "apps"]) => run(move |s, _, _| list_apps(s, &q)),
        (&Method::POST, ["v2", "apps"]) => run(move |s, fx, _| create_app(s, fx, &body, force)),
        (&Method::GET, ["v2", "groups"]) => run(move |s, _, _| get_group(s, &PathId::root(), &q)),
        (&Method::POST, ["v2", "groups"]) => {
            run(move |s, fx, _| change_group(s, fx, &PathId::root(), &body, &q, UpdateMode::Create))
        }
        (&Method::PUT, ["v2", "groups"]) => {
            run(move |s, fx, _| change_group(s, fx, &PathId::root(), &body, &q, UpdateMode::Update))
        }
        (&Method::DELETE, ["v2", "groups"]) => {
            run(move |s, fx, _| delete_group(s, fx, &PathId::root(), force))
        }
        (&Method::GET, ["v2", "deployments"]) => {
            run(|s, _, _| Reply::json(200, s.deployments_json()))
        }
        (&Method::DELETE, ["v2", "deployments", id]) => {
            let id = id.to_string();
            run(move |s, fx, _| match s.delete_deployment(&id, force, fx) {
                Ok(Some((deployment, version))) => {
                    Reply::json(200, json!({"deploymentId": deployment, "version": version}))
                }
                Ok(None) => Reply::json(202, Value::Null),
                Err(e) => Reply::error(e),
            })
        }
        (&Method::GET, ["v2", "tasks"]) => run(move |s, _, _| list_tasks(s, &q)),
        (&Method::POST, ["v2", "tasks", "delete"]) => {
            let scale = flag(query, "scale");
            run(move |s, fx, _| delete_tasks(s, fx, &body, scale))
        }
        (&Method::GET, ["v2", "queue"]) => run(|s, _, now| Reply::json(200, s.queue_json(now))),
        (&Method::DELETE, ["v2", "queue", rest @ .., "delay"]) if !rest.is_empty() => {
            let id = PathId::from_segments(rest.iter().copied());
            run(move |s, _, _| {
                if s.reset_delay(&id) {
                    Reply::json(204, Value::Null)
                } else {
                    Reply::json(404, json!({"message": format!("App {id} does not exist")}))
                }
            })
        }
        (_, ["v2", "apps", rest @ ..]) => app_route(method, rest, query, body),
        (_, ["v2", "groups", rest @ ..]) => group_route(method, rest, query, body),
        _ => not_found(path),
    }
}

fn app_route(method: &Method, rest: &[&str], query: &Params, body: Bytes) -> Result<ApiFn, Reply> {
    let q = query.clone();
    let force = flag(query, "force");
    let scale = flag(query, "scale");
    // `/v2/apps/a/b/tasks/TASK`, `/v2/apps/a/b/versions/V`, `/v2/apps/a/b/restart`, ...
    let split = rest
        .iter()
        .rposition(|s| matches!(*s, "tasks" | "versions" | "restart"));
    let (app, tail): (&[&str], &[&str]) = match split {
        Some(i) if i > 0 && rest.len() - i <= 2 => (&rest[..i], &rest[i..]),
        _ => (rest, &[]),
    };
    let id = PathId::from_segments(app.iter().copied());
    match (method, tail) {
        (&Method::GET, []) => run(move |s, _, _| match s.root.app(&id) {
            Some(app) => {
                let embed = embeds(&q, &["app.tasks", "app.counts", "app.deployments"]);
                Reply::json(200, json!({"app": s.app_json(app, &embed)}))
            }
            None => app_missing(&id),
        }),
        (&Method::PUT, []) | (&Method::PATCH, []) => {
            // `partialUpdate=false` replaces the whole definition (PATCH is always partial).
            let partial =
                *method == Method::PATCH || param(query, "partialUpdate") != Some("false");
            run(move |s, fx, _| update_app(s, fx, &id, &body, force, partial))
        }
        (&Method::DELETE, []) => run(move |s, fx, _| {
            if s.root.app(&id).is_none() {
                return app_missing(&id);
            }
            let version = format_version(s.unix_ms());
            let mut target = s.root.remove_app(&id, &version);
            target.version = Some(version);
            deployed(s.deploy(target, force, fx))
        }),
        (&Method::POST, ["restart"]) => run(move |s, fx, _| match s.restart_app(&id, force, fx) {
            Ok((d, v)) => Reply::json(200, json!({"deploymentId": d, "version": v})),
            Err(e) => Reply::error(e),
        }),
        (&Method::GET, ["tasks"]) => run(move |s, _, _| {
            if s.root.app(&id).is_none() {
                return app_missing(&id);
            }
            let tasks: Vec<Value> = s
                .instances_of(&id)
                .iter()
                .map(|i| i.to_marathon_json())
                .collect();
            Reply::json(200, json!({"tasks": tasks}))
        }),
        (&Method::DELETE, ["tasks"]) => {
            let host = crate::api::param(&q, "host").map(str::to_string);
            run(move |s, fx, _| {
                if s.root.app(&id).is_none() {
                    return app_missing(&id);
                }
                let tasks: Vec<String> = s
                    .instances_of(&id)
                    .iter()
                    .filter(|i| host.as_ref().is_none_or(|h| *h == i.host))
                    .map(|i| i.task_id.clone())
                    .collect();
                kill_tasks(s, fx, &tasks, scale)
            })
        }
        (&Method::DELETE, ["tasks", task]) => {
            let task = task.to_string();
            run(move |s, fx, _| {
                if s.root.app(&id).is_none() {
                    return app_missing(&id);
                }
                let Some(i) = s.instances.get(&task).filter(|i| i.app == id.to_string()) else {
                    return Reply::json(
                        404,
                        json!({"message": format!("Task '{task}' does not exist")}),
                    );
                };
                let json = i.to_marathon_json();
                let reply = kill_tasks(s, fx, std::slice::from_ref(&task), scale);
                if scale {
                    reply
                } else {
                    Reply::json(200, json!({"task": json}))
                }
            })
        }
        (&Method::GET, ["versions"]) => run(move |s, _, _| match s.root.app(&id) {
            Some(_) => {
                let mut v = s.versions.get(&id).cloned().unwrap_or_default();
                v.reverse();
                Reply::json(200, json!({"versions": v}))
            }
            None => app_missing(&id),
        }),
        (&Method::GET, ["versions", version]) => {
            let version = version.to_string();
            run(move |s, _, _| match s.root.app(&id) {
                Some(app) if app.version.as_deref() == Some(version.as_str()) => {
                    Reply::json(200, app.to_marathon_json(&version))
                }
                Some(_) if s.versions.get(&id).is_some_and(|v| v.contains(&version)) => Reply {
                    // Read from the store by `handle`, outside the core task.
                    status: 200,
                    headers: vec![(STORED_VERSION, version.clone())],
                    body: Value::Null,
                },
                _ => Reply::json(
                    404,
                    json!({"message": format!("App '{id}' does not exist in version {version}")}),
                ),
            })
        }
        _ => Err(Reply::json(
            405,
            json!({"message": "HTTP 405 Method Not Allowed"}),
        )),
    }
}

fn group_route(
    method: &Method,
    rest: &[&str],
    query: &Params,
    body: Bytes,
) -> Result<ApiFn, Reply> {
    let q = query.clone();
    let force = flag(query, "force");
    let (group, versions) = match rest.last() {
        Some(&"versions") => (&rest[..rest.len() - 1], true),
        _ => (rest, false),
    };
    let id = PathId::from_segments(group.iter().copied());
    match (method, versions) {
        (&Method::GET, true) => run(move |s, _, _| match s.root.group(&id) {
            Some(g) => Reply::json(200, json!([g.version])),
            None => group_missing(&id),
        }),
        (&Method::GET, false) => run(move |s, _, _| get_group(s, &id, &q)),
        (&Method::POST, false) => {
            run(move |s, fx, _| change_group(s, fx, &id, &body, &q, UpdateMode::Create))
        }
        (&Method::PUT, false) | (&Method::PATCH, false) => {
            run(move |s, fx, _| change_group(s, fx, &id, &body, &q, UpdateMode::Update))
        }
        (&Method::DELETE, false) => run(move |s, fx, _| delete_group(s, fx, &id, force)),
        _ => Err(Reply::json(
            405,
            json!({"message": "HTTP 405 Method Not Allowed"}),
        )),
    }
}

fn app_missing(id: &PathId) -> Reply {
    Reply::json(
        404,
        json!({"message": format!("App '{id}' does not exist")}),
    )
}

fn group_missing(id: &PathId) -> Reply {
    Reply::json(
        404,
        json!({"message": format!("Group '{id}' does not exist")}),
    )
}

fn deployed(result: Result<(String, String), ApiError>) -> Reply {
    match result {
        Ok((deployment, version)) => {
            Reply::json(200, json!({"version": version, "deploymentId": deployment}))
        }
        Err(e) => Reply::error(e),
    }
}

/// The answer to a change that started a deployment: 201 with `Location` when it created
/// something at `created`, else 200; both name the deployment in `Marathon-Deployment-Id`.
fn change_reply(deployment: String, version: String, created: Option<String>) -> Reply {
    let body = json!({"version": version, "deploymentId": deployment});
    let mut headers = vec![("marathon-deployment-id", deployment)];
    let status = match created {
        Some(location) => {
            headers.insert(0, ("location", location));
            201
        }
        None => 200,
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The `embed` parameters of a request, with the parts Marathon embeds in any case.
fn embeds(q: &Params, always: &[&str]) -> BTreeSet<String> {
    q.iter()
        .filter(|(k, _)| k == "embed")
        .map(|(_, v)| v.clone())
        .chain(always.iter().map(|e| e.to_string()))
        .collect()
}

fn list_apps(s: &Scheduler, q: &Params) -> Reply {
    // Marathon's list always counts and names the deployments.
    let embed = embeds(q, &["apps.counts", "apps.deployments"]);
    let cmd = param(q, "cmd");
    let id = param(q, "id");
    let label = param(q, "label");
    let apps: Vec<Value> = s
        .root
        .transitive_apps()
        .values()
        .filter(|a| cmd.is_none_or(|c| a.cmd.as_deref().is_some_and(|x| x.contains(c))))
        .filter(|a| id.is_none_or(|i| a.id.to_string().contains(i)))
        .filter(|a| label.is_none_or(|l| label_matches(a, l)))
        .map(|a| s.app_json(a, &embed))
        .collect();
    Reply::json(200, json!({"apps": apps}))
}

/// Marathon's label selector: `key`, `key==value`, `key!=value`, several joined by `,`.
fn label_matches(app: &AppDefinition, selector: &str) -> bool {
    selector.split(',').all(|term| {
        let term = term.trim();
        if let Some((k, v)) = term.split_once("!=") {
            app.labels.get(k.trim()).is_some_and(|x| x != v.trim())
        } else if let Some((k, v)) = term.split_once("==") {
            app.labels.get(k.trim()).is_some_and(|x| x == v.trim())
        } else {
            app.labels.contains_key(term)
        }
    })
}

fn create_app(s: &mut Scheduler, fx: &mut Effects, body: &[u8], force: bool) -> Reply {
    let app = match validation::parse_app(body) {
        Ok(app) => app,
        Err(e) => return Reply::error(e),
    };
    if s.root.app(&app.id).is_some() {
        return Reply::json(
            409,
            json!({"message": format!("An app with id [{}] already exists.", app.id)}),
        );
    }
    let version = format_version(s.unix_ms());
    let mut target = match s.root.put_app(app.clone(), &version) {
        Ok(t) => t,
        Err(e) => return Reply::error(e),
    };
    target.version = Some(version);
    let id = app.id.clone();
    match s.deploy(target, force, fx) {
        Ok((deployment, _)) => {
            // As Marathon's: the new app with its counts, tasks and deployment.
            let embed = embeds(&Vec::new(), &["app.counts", "app.tasks", "app.deployments"]);
            let Some(app) = s.root.app(&id) else {
                return Reply::json(500, json!({"message": "app vanished"}));
            };
            let mut json = s.app_json(app, &embed);
            json["deployments"] = json!([{"id": deployment}]);
            Reply {
                status: 201,
                headers: vec![
                    ("location", format!("/v2/apps{id}")),
                    ("marathon-deployment-id", deployment),
                ],
                body: json,
            }
        }
        Err(e) => Reply::error(e),
    }
}

fn update_app(
    s: &mut Scheduler,
    fx: &mut Effects,
    id: &PathId,
    body: &[u8],
    force: bool,
    partial: bool,
) -> Reply {
    let existing = s.root.app(id).cloned();
    let base = if partial { existing.as_ref() } else { None };
    let app = match validation::apply_app_update(base, id, body) {
        Ok(app) => app,
        Err(e) => return Reply::error(e),
    };
    let version = format_version(s.unix_ms());
    let mut target = match s.root.put_app(app, &version) {
        Ok(t) => t,
        Err(e) => return Reply::error(e),
    };
    target.version = Some(version);
    match s.deploy(target, force, fx) {
        Ok((deployment, version)) => {
            let created = existing.is_none().then(|| format!("/v2/apps{id}"));
            change_reply(deployment, version, created)
        }
        Err(e) => Reply::error(e),
    }
}

fn get_group(s: &Scheduler, id: &PathId, q: &Params) -> Reply {
    match s.root.group(id) {
        Some(g) => {
            let mut json = g.to_marathon_json();
            // A group's apps carry counts, tasks or deployments only when `embed` asks
            // (`group.apps.counts`, ...), as Marathon's.
            enrich_group(s, &mut json, &embeds(q, &[]));
            Reply::json(200, json)
        }
        None => group_missing(id),
    }
}

/// Puts each app of a group's JSON in its API shape (its `versionInfo`, the parts `embed` asks
/// for).
fn enrich_group(s: &Scheduler, json: &mut Value, embed: &BTreeSet<String>) {
    if let Some(apps) = json.get_mut("apps").and_then(Value::as_array_mut) {
        for app in apps {
            let Some(id) = app.get("id").and_then(Value::as_str).map(PathId::parse) else {
                continue;
            };
            if let Some(def) = s.root.app(&id) {
                *app = s.app_json(def, embed);
            }
        }
    }
    if let Some(groups) = json.get_mut("groups").and_then(Value::as_array_mut) {
        for g in groups {
            enrich_group(s, g, embed);
        }
    }
}

fn change_group(
    s: &mut Scheduler,
    fx: &mut Effects,
    base: &PathId,
    body: &[u8],
    q: &Params,
    mode: UpdateMode,
) -> Reply {
    let update: GroupUpdate = match crate::group::parse_group(body, base) {
        Ok(u) => u,
        Err(e) => return Reply::error(e),
    };
    let version = format_version(s.unix_ms());
    let target = match update.kind() {
        UpdateKind::Revert(v) => {
            let effective = update.effective_id(base);
            match s.group_at_version(&effective, &v) {
                Some(g) => s.root.put_group(g, &version),
                None => {
                    return Reply::json(
                        404,
                        json!({"message": format!("Group '{effective}' does not exist in version {v}")}),
                    )
                }
            }
        }
        _ => match s.root.apply_update(base, &update, mode, &version) {
            Ok(t) => t,
            Err(e) => return Reply::error(e),
        },
    };
    let mut target = target;
    target.version = Some(version.clone());
    if flag(q, "dryRun") {
        let plan = crate::plan::DeploymentPlan::new(String::new(), version, &s.root, &target);
        return Reply::json(200, json!({"steps": plan.steps_json()}));
    }
    let effective = update.effective_id(base);
    match s.deploy(target, flag(q, "force"), fx) {
        Ok((deployment, version)) => {
            let created = (mode == UpdateMode::Create).then(|| format!("/v2/groups{effective}"));
            change_reply(deployment, version, created)
        }
        Err(e) => Reply::error(e),
    }
}

fn delete_group(s: &mut Scheduler, fx: &mut Effects, id: &PathId, force: bool) -> Reply {
    if s.root.group(id).is_none() {
        return group_missing(id);
    }
    let version = format_version(s.unix_ms());
    let mut target = s.root.remove_group(id, &version);
    target.version = Some(version);
    deployed(s.deploy(target, force, fx))
}

fn list_tasks(s: &Scheduler, q: &Params) -> Reply {
    let status = param(q, "status");
    let tasks: Vec<Value> = s
        .instances
        .values()
        .filter(|i| match status {
            Some("running") => i.state == TaskState::TaskRunning,
            Some("staging") => matches!(i.state, TaskState::TaskStaging | TaskState::TaskStarting),
            Some("unreachable") => i.state == TaskState::TaskUnreachable,
            _ => true,
        })
        .map(|i| s.task_json(i))
        .collect();
    Reply::json(200, json!({"tasks": tasks}))
}

fn delete_tasks(s: &mut Scheduler, fx: &mut Effects, body: &[u8], scale: bool) -> Reply {
    let ids: Vec<String> = match serde_json::from_slice::<Value>(body) {
        Ok(v) => match v.get("ids").and_then(Value::as_array) {
            Some(ids) => ids
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            None => {
                return Reply::error(ApiError::json_type_errors(&[(
                    "/ids".into(),
                    "error.path.missing".into(),
                )]))
            }
        },
        Err(e) => return Reply::error(ApiError::invalid_json(e)),
    };
    let known: Vec<String> = ids
        .into_iter()
        .filter(|t| s.instances.contains_key(t))
        .collect();
    kill_tasks(s, fx, &known, scale)
}

/// Kills tasks; with `scale`, lowers their apps' `instances` by as many (a deployment).
fn kill_tasks(s: &mut Scheduler, fx: &mut Effects, tasks: &[String], scale: bool) -> Reply {
    let killed: Vec<Value> = tasks
        .iter()
        .filter_map(|t| s.instances.get(t))
        .map(|i| i.to_marathon_json())
        .collect();
    let mut per_app: std::collections::BTreeMap<PathId, u32> = Default::default();
    for t in tasks {
        if let Some(i) = s.instances.get(t) {
            if i.is_active() && !i.kill_requested {
                *per_app.entry(PathId::parse(&i.app)).or_default() += 1;
            }
        }
    }
    for t in tasks {
        s.kill(t, fx);
    }
    if !scale {
        return Reply::json(200, json!({"tasks": killed}));
    }
    let version = format_version(s.unix_ms());
    let mut target = s.root.clone();
    for (id, n) in per_app {
        if let Some(app) = target.app(&id) {
            let mut app = app.clone();
            app.instances = app.instances.saturating_sub(n);
            target = match target.put_app(app, &version) {
                Ok(t) => t,
                Err(e) => return Reply::error(e),
            };
        }
    }
    target.version = Some(version);
    deployed(s.deploy(target, true, fx))
}

/// `GET /metrics`: Prometheus text.
fn metrics(s: &Scheduler) -> Reply {
    let c = &s.counters;
    let apps = s.root.transitive_apps().len();
    let running = s.instances.values().filter(|i| i.is_running()).count();
    let staged = s
        .instances
        .values()
        .filter(|i| matches!(i.state, TaskState::TaskStaging | TaskState::TaskStarting))
        .count();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    metric(
        "marathon_apps_active_gauge",
        "gauge",
        "Apps defined",
        apps.to_string(),
    );
    metric(
        "marathon_instances_running_gauge",
        "gauge",
        "Instances running",
        running.to_string(),
    );
    metric(
        "marathon_instances_staged_gauge",
        "gauge",
        "Instances staged",
        staged.to_string(),
    );
    metric(
        "marathon_instances_launched_counter",
        "counter",
        "Instances launched",
        c.launched.to_string(),
    );
    metric(
        "marathon_instances_killed_counter",
        "counter",
        "Kills requested",
        c.killed.to_string(),
    );
    metric(
        "marathon_mesos_offers_incoming_counter",
        "counter",
        "Offers received",
        c.offers_processed.to_string(),
    );
    metric(
        "marathon_mesos_offers_declined_counter",
        "counter",
        "Offers declined",
        c.offers_declined.to_string(),
    );
    metric(
        "marathon_mesos_task_updates_counter",
        "counter",
        "Status updates received",
        c.updates.to_string(),
    );
    metric(
        "marathon_deployments_active_gauge",
        "gauge",
        "Deployments running",
        s.deployments.len().to_string(),
    );
    metric(
        "marathon_deployments_counter",
        "counter",
        "Deployments started",
        c.deployments_started.to_string(),
    );
    metric(
        "marathon_deployments_success_counter",
        "counter",
        "Deployments finished",
        c.deployments_done.to_string(),
    );
    metric(
        "marathon_launch_queue_gauge",
        "gauge",
        "Instances waiting for an offer",
        s.queue.values().sum::<u32>().to_string(),
    );
    Reply {
        status: 200,
        headers: vec![("content-type", "text/plain; version=0.0.4".into())],
        body: Value::String(out),
    }
}
