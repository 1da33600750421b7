//! The keys of every `/v2` answer, against Marathon 1.x's documented shapes (its REST API
//! RAML types, examples and event bus page) and the `marathon` Python client's models
//! (0.13.0), which raise on a key they do not take. A key outside a set here fails: add one
//! only with the Marathon documentation (and the client model) that has it.

use super::*;
use crate::core::{Loaded, Tuning};
use drover_master::client::Locator;

/// An app's keys beyond [`APP_ALWAYS`] and its [`APP_EMBEDS`]: Marathon's `App` type and
/// `AppInfo` additions, and the legacy keys Marathon 1.x still writes (`ports`, `uris`,
/// `storeUrls`, in `APP_ALWAYS`); each one the client's `MarathonApp` takes.
const APP_MORE: &[&str] = &["ipAddress", "residency", "secrets", "networks", "role"];
/// What every app answer has.
const APP_ALWAYS: &[&str] = &[
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
    "versionInfo",
    "taskKillGracePeriodSeconds",
    "unreachableStrategy",
    "killSelection",
    "ports",
    "portDefinitions",
    "requirePorts",
];
const COUNTS: &[&str] = &[
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
];
/// `embed`ded parts of an app: the [`COUNTS`] and these.
const EMBEDS_MORE: &[&str] = &[
    "deployments",
    "tasks",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
];
/// A task's keys beyond [`TASK_ALWAYS`].
const TASK_MORE: &[&str] = &["localVolumes", "region", "zone", "role"];
const TASK_ALWAYS: &[&str] = &[
    "id",
    "appId",
    "host",
    "slaveId",
    "ports",
    "servicePorts",
    "ipAddresses",
    "stagedAt",
    "startedAt",
    "version",
    "state",
    "healthCheckResults",
];
const IP_ADDRESS: &[&str] = &["ipAddress", "protocol"];
const HEALTH_RESULT: &[&str] = &[
    "alive",
    "consecutiveFailures",
    "firstSuccess",
    "lastFailure",
    "lastSuccess",
    "lastFailureCause",
    "taskId",
    "instanceId",
];
const HEALTH_CHECK: &[&str] = &[
    "protocol",
    "command",
    "path",
    "port",
    "portIndex",
    "gracePeriodSeconds",
    "intervalSeconds",
    "timeoutSeconds",
    "maxConsecutiveFailures",
    "delaySeconds",
    "ignoreHttp1xx",
];
const VERSION_INFO: &[&str] = &["lastScalingAt", "lastConfigChangeAt"];
const UPGRADE_STRATEGY: &[&str] = &["minimumHealthCapacity", "maximumOverCapacity"];
const UNREACHABLE_STRATEGY: &[&str] = &["inactiveAfterSeconds", "expungeAfterSeconds"];
const PORT_DEFINITION: &[&str] = &["port", "protocol", "name", "labels"];
const FETCH: &[&str] = &["uri", "extract", "executable", "cache", "destPath"];
const READINESS_CHECK: &[&str] = &[
    "name",
    "protocol",
    "path",
    "portName",
    "intervalSeconds",
    "timeoutSeconds",
    "httpStatusCodesForReady",
    "preserveLastResponse",
];
const CONTAINER: &[&str] = &["type", "docker", "volumes", "portMappings"];
const DOCKER: &[&str] = &[
    "image",
    "network",
    "portMappings",
    "privileged",
    "parameters",
    "forcePullImage",
];
const PORT_MAPPING: &[&str] = &[
    "containerPort",
    "hostPort",
    "servicePort",
    "protocol",
    "name",
    "labels",
];
const VOLUME: &[&str] = &[
    "containerPath",
    "hostPath",
    "mode",
    "persistent",
    "external",
];
const PARAMETER: &[&str] = &["key", "value"];
const ID_ONLY: &[&str] = &["id"];
const GROUP: &[&str] = &["id", "apps", "groups", "pods", "dependencies", "version"];
const DEPLOYMENT: &[&str] = &[
    "id",
    "version",
    "affectedApps",
    "affectedPods",
    "steps",
    "currentActions",
    "currentStep",
    "totalSteps",
];
const STEP: &[&str] = &["actions"];
const ACTION: &[&str] = &["action", "app"];
const CURRENT_ACTION: &[&str] = &["action", "app", "readinessCheckResults"];
const QUEUE_ITEM: &[&str] = &[
    "count",
    "delay",
    "since",
    "processedOffersSummary",
    "lastUnusedOffers",
    "app",
];
const QUEUE_ITEM_ALWAYS: &[&str] = &["count", "delay", "since", "processedOffersSummary", "app"];
const DELAY: &[&str] = &["timeLeftSeconds", "overdue"];
const OFFERS_SUMMARY: &[&str] = &[
    "processedOffersCount",
    "unusedOffersCount",
    "lastUnusedOfferAt",
    "lastUsedOfferAt",
    "rejectSummaryLastOffers",
    "rejectSummaryLaunchAttempt",
];
const DECLINED: &[&str] = &["reason", "declined", "processed"];
const RESULT: &[&str] = &["deploymentId", "version"];
const ERROR: &[&str] = &["message", "details"];
const PLAN: &[&str] = &["id", "version", "original", "target", "steps"];
const INFO: &[&str] = &[
    "name",
    "version",
    "buildref",
    "elected",
    "leader",
    "frameworkId",
    "marathon_config",
    "zookeeper_config",
    "event_subscriber",
    "http_config",
];
/// The client's `MarathonConfig` (Marathon's documented `marathon_config` keys are a part).
const MARATHON_CONFIG: &[&str] = &[
    "checkpoint",
    "executor",
    "failover_timeout",
    "features",
    "framework_name",
    "ha",
    "hostname",
    "leader_proxy_connection_timeout_ms",
    "leader_proxy_read_timeout_ms",
    "local_port_min",
    "local_port_max",
    "maintenance_mode",
    "master",
    "mesos_leader_ui_url",
    "mesos_role",
    "mesos_user",
    "new_group_enforce_role",
    "webui_url",
    "reconciliation_initial_delay",
    "reconciliation_interval",
    "task_launch_timeout",
    "task_reservation_timeout",
    "marathon_store_timeout",
    "access_control_allow_origin",
    "decline_offer_duration",
    "default_network_name",
    "env_vars_prefix",
    "launch_token",
    "launch_token_refresh_interval",
    "max_instances_per_offer",
    "mesos_bridge_name",
    "mesos_heartbeat_failure_threshold",
    "mesos_heartbeat_interval",
    "min_revive_offers_interval",
    "offer_matching_timeout",
    "on_elected_prepare_timeout",
    "revive_offers_for_new_apps",
    "revive_offers_repetitions",
    "scale_apps_initial_delay",
    "scale_apps_interval",
    "store_cache",
    "task_launch_confirm_timeout",
    "task_lost_expunge_initial_delay",
    "task_lost_expunge_interval",
];
const ZOOKEEPER_CONFIG: &[&str] = &[
    "zk",
    "zk_future_timeout",
    "zk_hosts",
    "zk_max_versions",
    "zk_path",
    "zk_session_timeout",
    "zk_state",
    "zk_timeout",
    "zk_connection_timeout",
    "zk_compression",
    "zk_compression_threshold",
    "zk_max_node_size",
];
const HTTP_CONFIG: &[&str] = &["assets_path", "http_port", "https_port"];

/// The keys of each event type (besides `eventType` and `timestamp`), from Marathon's
/// event bus documentation and event classes.
fn event_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "status_update_event" => &[
            "slaveId",
            "taskId",
            "taskStatus",
            "message",
            "appId",
            "host",
            "ipAddresses",
            "ports",
            "version",
        ],
        "health_status_changed_event" => &["appId", "instanceId", "version", "alive"],
        "unhealthy_instance_kill_event" => &[
            "appId",
            "taskId",
            "instanceId",
            "version",
            "reason",
            "host",
            "slaveId",
        ],
        "group_change_success" => &["groupId", "version"],
        "deployment_success" | "deployment_failed" => &["id", "plan"],
        "deployment_info" | "deployment_step_success" | "deployment_step_failure" => {
            &["plan", "currentStep"]
        }
        _ => return None,
    })
}

/// `v` is an object whose keys are among `allowed` and include `always`.
fn keys(v: &Value, what: &str, allowed: &[&str], always: &[&str]) {
    let Some(object) = v.as_object() else {
        panic!("{what}: expected an object, got {v}");
    };
    for k in object.keys() {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: `{k}` is not a key of Marathon's shape (or the marathon client's model): {v}"
        );
    }
    for k in always {
        assert!(object.contains_key(*k), "{what}: `{k}` is missing: {v}");
    }
}

fn each<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, got {v}"))
}

fn check_task(t: &Value, what: &str) {
    keys(t, what, &[TASK_ALWAYS, TASK_MORE].concat(), TASK_ALWAYS);
    for ip in each(&t["ipAddresses"], what) {
        keys(ip, what, IP_ADDRESS, IP_ADDRESS);
    }
    for r in each(&t["healthCheckResults"], what) {
        keys(r, what, HEALTH_RESULT, &["alive", "taskId", "instanceId"]);
    }
}

/// An app definition (and the `embed`ded parts it has), with everything nested in it.
fn check_app(app: &Value, what: &str, always: &[&str]) {
    let what = &format!("{what} {}", app["id"]);
    let allowed = [APP_ALWAYS, APP_MORE, COUNTS, EMBEDS_MORE].concat();
    keys(app, what, &allowed, &[APP_ALWAYS, always].concat());
    keys(&app["versionInfo"], what, VERSION_INFO, VERSION_INFO);
    keys(
        &app["upgradeStrategy"],
        what,
        UPGRADE_STRATEGY,
        UPGRADE_STRATEGY,
    );
    if app["unreachableStrategy"] != "disabled" {
        keys(
            &app["unreachableStrategy"],
            what,
            UNREACHABLE_STRATEGY,
            UNREACHABLE_STRATEGY,
        );
    }
    for p in each(&app["portDefinitions"], what) {
        keys(p, what, PORT_DEFINITION, &["port", "protocol"]);
    }
    for f in each(&app["fetch"], what) {
        keys(f, what, FETCH, &["uri"]);
    }
    for h in each(&app["healthChecks"], what) {
        keys(h, what, HEALTH_CHECK, &["protocol"]);
    }
    for r in each(&app["readinessChecks"], what) {
        keys(r, what, READINESS_CHECK, &[]);
    }
    if !app["container"].is_null() {
        let c = &app["container"];
        keys(c, what, CONTAINER, &["type", "volumes"]);
        for v in each(&c["volumes"], what) {
            keys(v, what, VOLUME, &["containerPath"]);
        }
        if let Some(docker) = c.get("docker") {
            keys(docker, what, DOCKER, &["image"]);
            for p in docker["parameters"].as_array().into_iter().flatten() {
                keys(p, what, PARAMETER, PARAMETER);
            }
            for m in docker["portMappings"].as_array().into_iter().flatten() {
                keys(m, what, PORT_MAPPING, &["containerPort"]);
            }
        }
    }
    for d in app["deployments"].as_array().into_iter().flatten() {
        keys(d, what, ID_ONLY, ID_ONLY);
    }
    for t in app["tasks"].as_array().into_iter().flatten() {
        check_task(t, what);
    }
}

/// A group; its apps are definitions with the parts in `always`.
fn check_group(g: &Value, what: &str, always: &[&str]) {
    keys(g, what, GROUP, GROUP);
    for app in each(&g["apps"], what) {
        check_app(app, what, always);
        for k in COUNTS.iter().chain(EMBEDS_MORE) {
            assert!(
                always.contains(k) || app.get(*k).is_none(),
                "{what}: `{k}` was not asked for: {app}"
            );
        }
    }
    for sub in each(&g["groups"], what) {
        check_group(sub, what, always);
    }
}

fn check_deployment(d: &Value, what: &str) {
    keys(d, what, DEPLOYMENT, DEPLOYMENT);
    for step in each(&d["steps"], what) {
        keys(step, what, STEP, STEP);
        for a in each(&step["actions"], what) {
            keys(a, what, ACTION, ACTION);
        }
    }
    for a in each(&d["currentActions"], what) {
        keys(a, what, CURRENT_ACTION, CURRENT_ACTION);
    }
}

fn check_result(r: &Reply, what: &str) {
    assert!(
        (200..300).contains(&r.status),
        "{what}: {} {}",
        r.status,
        r.body
    );
    keys(&r.body, what, RESULT, RESULT);
}

fn check_error(r: &Reply, what: &str, status: u16) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
    // A 409 for a locked app names the deployments, as Marathon's does.
    let allowed = [ERROR, &["deployments"]].concat();
    keys(&r.body, what, &allowed, &["message"]);
}

fn check_events(fx: &Effects) {
    for (kind, payload) in &fx.events {
        let what = format!("event {kind}");
        let Some(own) = event_keys(kind) else {
            panic!("{what}: not an event type this test knows: {payload}");
        };
        keys(
            payload,
            &what,
            &[own, &["eventType", "timestamp"]].concat(),
            &[own, &["eventType", "timestamp"]].concat(),
        );
        assert_eq!(payload["eventType"], json!(kind));
        if let Some(plan) = payload.get("plan") {
            keys(plan, &what, PLAN, PLAN);
            check_group(&plan["original"], &what, &[]);
            check_group(&plan["target"], &what, &[]);
            for step in each(&plan["steps"], &what) {
                keys(step, &what, STEP, STEP);
            }
        }
        if let Some(step) = payload.get("currentStep") {
            keys(step, &what, STEP, STEP);
            for a in each(&step["actions"], &what) {
                keys(a, &what, ACTION, ACTION);
            }
        }
    }
}

fn scheduler() -> Scheduler {
    let dir = std::env::temp_dir().join(format!("drover-sched-api-{}", std::process::id()));
    let env = drover_core::env::live::env("s", dir, Some(7));
    let mut s = Scheduler::new(env, Tuning::default(), Loaded::default(), 0);
    s.launch_ready = true;
    s
}

/// Answers `method path` (with its query) as the API does on the leader.
fn call(s: &mut Scheduler, fx: &mut Effects, method: Method, target: &str, body: &str) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query: Params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    match route(&method, path, &query, &Bytes::from(body.to_string())) {
        Ok(f) => f(s, fx, 0),
        Err(reply) => reply,
    }
}

fn offer(n: u32) -> drover_core::v1::Offer {
    crate::core::tests::offer(n, 4.0)
}

fn set_running(s: &mut Scheduler, fx: &mut Effects, task: &str) {
    let status: drover_core::v1::TaskStatus = serde_json::from_value(json!({
        "task_id": {"value": task}, "state": "TASK_RUNNING",
        "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": "10.0.0.7"}]}]}
    }))
    .expect("a status");
    s.update(&status, 0, fx);
    s.converge(0, fx);
}

const WEB: &str = r#"{
    "id": "/shapes/web", "cmd": "sleep 1000", "instances": 2, "cpus": 0.1, "mem": 16,
    "healthChecks": [{"protocol": "TCP",
                      "maxConsecutiveFailures": 1}],
    "readinessChecks": [{"name": "ready", "path": "/", "stray": 1}],
    "labels": {"team": "x"}, "tty": true, "check": {"exec": {}}, "linuxInfo": {},
    "resourceLimits": {}, "fetch": [{"uri": "http://x/a.tgz"}]
}"#;

const DB: &str = r#"{
    "id": "/shapes/data/db", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16,
    "container": {"type": "DOCKER",
                  "docker": {"image": "busybox", "network": "BRIDGE",
                             "parameters": [{"key": "hostname", "value": "db"}],
                             "portMappings": [{"containerPort": 80, "name": "http"}]},
                  "volumes": [{"containerPath": "/d", "hostPath": "/tmp", "mode": "RW",
                               "stray": 1}]}
}"#;

/// Waiting forever: no offer is this big.
const BIG: &str = r#"{"id": "/shapes/big", "cmd": "sleep 1", "cpus": 1000, "mem": 16}"#;

#[test]
fn every_v2_answer_has_marathons_keys_and_no_other() {
    let mut s = scheduler();
    let mut fx = Effects::default();

    // Creations: the app, and the deployment of each.
    let created = call(&mut s, &mut fx, Method::POST, "/v2/apps", WEB);
    assert_eq!(created.status, 201, "{}", created.body);
    check_app(
        &created.body,
        "POST /v2/apps",
        &[COUNTS, &["deployments", "tasks"]].concat(),
    );
    let group = format!(r#"{{"id": "/shapes/data", "apps": [{DB}]}}"#);
    let reply = call(&mut s, &mut fx, Method::POST, "/v2/groups", &group);
    check_result(&reply, "POST /v2/groups");
    let reply = call(
        &mut s,
        &mut fx,
        Method::PUT,
        "/v2/groups/shapes/data?dryRun=true",
        &group,
    );
    keys(&reply.body, "dry run", &["steps"], &["steps"]);

    // Running deployments.
    let reply = call(&mut s, &mut fx, Method::GET, "/v2/deployments", "");
    let deployments = each(&reply.body, "GET /v2/deployments");
    assert!(!deployments.is_empty());
    for d in deployments {
        check_deployment(d, "GET /v2/deployments");
    }

    // Tasks: launched, running (with an address), health-checked.
    s.converge(0, &mut fx);
    s.offers(&[offer(0), offer(1)], 0);
    let tasks: Vec<String> = s.instances.keys().cloned().collect();
    assert_eq!(tasks.len(), 3, "every instance launched");
    for t in &tasks {
        set_running(&mut s, &mut fx, t);
    }
    let web = tasks
        .iter()
        .find(|t| s.instances[*t].app == "/shapes/web")
        .cloned()
        .expect("a web task");
    s.health_result(&web, 0, Ok(()), 1, &mut fx);

    // The queue: an app no offer fits.
    let reply = call(&mut s, &mut fx, Method::POST, "/v2/apps", BIG);
    assert_eq!(reply.status, 201, "{}", reply.body);
    s.converge(0, &mut fx);
    s.offers(&[offer(2)], 0);
    let reply = call(&mut s, &mut fx, Method::GET, "/v2/queue", "");
    keys(&reply.body, "GET /v2/queue", &["queue"], &["queue"]);
    let queue = each(&reply.body["queue"], "GET /v2/queue");
    assert!(!queue.is_empty());
    for item in queue {
        keys(item, "queue item", QUEUE_ITEM, QUEUE_ITEM_ALWAYS);
        keys(&item["delay"], "queue delay", DELAY, DELAY);
        let summary = &item["processedOffersSummary"];
        keys(
            summary,
            "queue summary",
            OFFERS_SUMMARY,
            &["processedOffersCount", "unusedOffersCount"],
        );
        for r in each(&summary["rejectSummaryLastOffers"], "queue summary") {
            keys(r, "queue summary", DECLINED, DECLINED);
        }
        check_app(&item["app"], "queue item", &[]);
        for k in COUNTS.iter().chain(EMBEDS_MORE) {
            assert!(item["app"].get(*k).is_none(), "queue app with `{k}`");
        }
    }

    // Apps, with and without embeds.
    for (target, always) in [
        ("/v2/apps", [COUNTS, &["deployments"]].concat()),
        (
            "/v2/apps?embed=apps.tasks&embed=apps.lastTaskFailure",
            [COUNTS, &["deployments", "tasks"]].concat(),
        ),
        (
            "/v2/apps?embed=apps.counts&embed=apps.deployments",
            [COUNTS, &["deployments"]].concat(),
        ),
    ] {
        let reply = call(&mut s, &mut fx, Method::GET, target, "");
        keys(&reply.body, target, &["apps"], &["apps"]);
        let apps = each(&reply.body["apps"], target);
        assert_eq!(apps.len(), 3);
        for app in apps {
            check_app(app, target, &always);
        }
    }
    let reply = call(&mut s, &mut fx, Method::GET, "/v2/apps/shapes/web", "");
    keys(&reply.body, "GET /v2/apps/ID", &["app"], &["app"]);
    check_app(
        &reply.body["app"],
        "GET /v2/apps/ID",
        &[COUNTS, &["deployments", "tasks"]].concat(),
    );
    let app = &reply.body["app"];
    assert!(app.get("tty").is_none() && app.get("check").is_none());
    assert!(app["readinessChecks"][0].get("stray").is_none());
    let version = app["version"].as_str().expect("a version").to_string();
    let reply = call(
        &mut s,
        &mut fx,
        Method::GET,
        "/v2/apps/shapes/web/tasks",
        "",
    );
    keys(&reply.body, "GET /v2/apps/ID/tasks", &["tasks"], &["tasks"]);
    for t in each(&reply.body["tasks"], "GET /v2/apps/ID/tasks") {
        check_task(t, "GET /v2/apps/ID/tasks");
    }
    let reply = call(
        &mut s,
        &mut fx,
        Method::GET,
        "/v2/apps/shapes/web/versions",
        "",
    );
    keys(&reply.body, "versions", &["versions"], &["versions"]);
    let target = format!("/v2/apps/shapes/web/versions/{version}");
    let reply = call(&mut s, &mut fx, Method::GET, &target, "");
    check_app(&reply.body, "GET /v2/apps/ID/versions/V", &[]);

    // Tasks of every app.
    let reply = call(&mut s, &mut fx, Method::GET, "/v2/tasks", "");
    keys(&reply.body, "GET /v2/tasks", &["tasks"], &["tasks"]);
    let listed = each(&reply.body["tasks"], "GET /v2/tasks");
    assert_eq!(listed.len(), 3);
    for t in listed {
        check_task(t, "GET /v2/tasks");
    }
    assert!(listed
        .iter()
        .any(|t| !each(&t["healthCheckResults"], "task").is_empty()
            && !each(&t["ipAddresses"], "task").is_empty()));

    // Groups: their apps carry only what `embed` asks for.
    for (target, always) in [
        ("/v2/groups", Vec::new()),
        ("/v2/groups/shapes", Vec::new()),
        ("/v2/groups?embed=group.apps.counts", COUNTS.to_vec()),
        (
            "/v2/groups?embed=group.apps.tasks",
            vec!["tasks", "deployments"],
        ),
    ] {
        let reply = call(&mut s, &mut fx, Method::GET, target, "");
        check_group(&reply.body, target, &always);
    }

    // Changes: each answers with its deployment.
    let replies = [
        call(
            &mut s,
            &mut fx,
            Method::PUT,
            "/v2/apps/shapes/web?force=true",
            r#"{"instances": 3}"#,
        ),
        call(
            &mut s,
            &mut fx,
            Method::POST,
            "/v2/apps/shapes/data/db/restart?force=true",
            "",
        ),
    ];
    for reply in &replies {
        check_result(reply, "PUT or restart");
    }
    let reply = call(
        &mut s,
        &mut fx,
        Method::DELETE,
        &format!("/v2/apps/shapes/web/tasks/{web}"),
        "",
    );
    keys(&reply.body, "kill", &["task"], &["task"]);
    check_task(&reply.body["task"], "kill");
    let other = tasks
        .iter()
        .find(|t| **t != web && s.instances[*t].app == "/shapes/web")
        .cloned()
        .expect("another web task");
    let reply = call(
        &mut s,
        &mut fx,
        Method::DELETE,
        &format!("/v2/apps/shapes/web/tasks/{other}?scale=true&force=true"),
        "",
    );
    check_result(&reply, "kill with scale");
    let reply = call(
        &mut s,
        &mut fx,
        Method::POST,
        "/v2/tasks/delete",
        &format!(r#"{{"ids": ["{web}"]}}"#),
    );
    keys(&reply.body, "POST /v2/tasks/delete", &["tasks"], &["tasks"]);

    // Errors.
    let reply = call(&mut s, &mut fx, Method::GET, "/v2/apps/nothing", "");
    check_error(&reply, "missing app", 404);
    let reply = call(&mut s, &mut fx, Method::POST, "/v2/apps", "{");
    check_error(&reply, "bad JSON", 400);
    let reply = call(
        &mut s,
        &mut fx,
        Method::POST,
        "/v2/apps",
        r#"{"id": "/x", "cmd": "x", "cpus": -1}"#,
    );
    check_error(&reply, "invalid app", 422);
    for d in each(&reply.body["details"], "invalid app") {
        keys(d, "invalid app", &["path", "errors"], &["path", "errors"]);
    }
    let reply = call(
        &mut s,
        &mut fx,
        Method::PUT,
        "/v2/apps/shapes/big",
        r#"{"instances": 2}"#,
    );
    check_error(&reply, "locked app", 409);

    // A deployment to its end; and the deletions.
    let reply = call(
        &mut s,
        &mut fx,
        Method::DELETE,
        "/v2/apps/shapes/big?force=true",
        "",
    );
    check_result(&reply, "DELETE /v2/apps/ID");
    let reply = call(
        &mut s,
        &mut fx,
        Method::DELETE,
        "/v2/groups/shapes?force=true",
        "",
    );
    check_result(&reply, "DELETE /v2/groups/ID");
    for t in s.instances.keys().cloned().collect::<Vec<_>>() {
        let status: drover_core::v1::TaskStatus =
            serde_json::from_value(json!({"task_id": {"value": t}, "state": "TASK_KILLED"}))
                .expect("a status");
        s.update(&status, 0, &mut fx);
    }
    s.converge(0, &mut fx);

    check_events(&fx);
    let kinds: BTreeSet<&str> = fx.events.iter().map(|(k, _)| k.as_str()).collect();
    for kind in [
        "status_update_event",
        "health_status_changed_event",
        "group_change_success",
        "deployment_info",
        "deployment_step_success",
        "deployment_success",
        "deployment_failed",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
}

#[test]
fn an_unhealthy_kill_event_has_marathons_keys() {
    let mut s = scheduler();
    let mut fx = Effects::default();
    let reply = call(&mut s, &mut fx, Method::POST, "/v2/apps", WEB);
    assert_eq!(reply.status, 201, "{}", reply.body);
    s.converge(0, &mut fx);
    s.offers(&[offer(0), offer(1)], 0);
    let task = s.instances.keys().next().cloned().expect("a task");
    set_running(&mut s, &mut fx, &task);
    // Past the grace period, a failure after one is too many (`maxConsecutiveFailures` 1).
    for at in [3_600_000, 3_700_000] {
        s.health_result(&task, 0, Err("refused".into()), at, &mut fx);
    }
    assert!(
        fx.events
            .iter()
            .any(|(k, _)| k == "unhealthy_instance_kill_event"),
        "{:?}",
        fx.events
    );
    check_events(&fx);
}

#[test]
fn info_has_marathons_keys() {
    let config = crate::daemon::Config {
        bind: "127.0.0.1:8080".parse().expect("an address"),
        hostname: "h".into(),
        port: 8080,
        master: Locator::Direct("m".into(), 5050),
        zk: "zk://z:2181/drover".parse().expect("a zk url"),
        framework_name: "marathon".into(),
        tuning: Tuning::default(),
        http_auth: None,
        mesos_auth: None,
    };
    let info = info_json(
        &config,
        Some("h:8080".into()),
        "h:8080",
        json!("f-1"),
        Some("m:5050"),
    );
    assert_eq!(
        info["marathon_config"]["mesos_leader_ui_url"],
        "http://m:5050/"
    );
    keys(&info, "GET /v2/info", INFO, INFO);
    keys(
        &info["marathon_config"],
        "marathon_config",
        MARATHON_CONFIG,
        &["master", "framework_name", "hostname", "ha", "checkpoint"],
    );
    keys(
        &info["zookeeper_config"],
        "zookeeper_config",
        ZOOKEEPER_CONFIG,
        &["zk"],
    );
    keys(
        &info["http_config"],
        "http_config",
        HTTP_CONFIG,
        &["http_port"],
    );
    assert!(info["event_subscriber"].is_null());
}
