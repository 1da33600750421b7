//! The simulated agent role against a small master written here (a test driver, not the product's
//! master): the master publishes itself in coord as Mesos does, the agent finds it there,
//! registers, runs simulated tasks, is crashed and restarted while tasks run, re-registers with
//! them, and reports their ends at the times their commands say. The same seed gives the same
//! trace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use drover_coord::client::{Client, ClientConfig};
use drover_core::agent_proto::{AgentMessage, MasterMessage};
use drover_core::frame::{decode_message, encode_message, FrameCodec};
use drover_core::v1::MasterInfo;
use drover_core::{Env, Event};
use drover_sim::{NodeContext, Role};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_util::codec::Framed;

fn task(id: &str, command: &str, port: Option<u64>) -> serde_json::Value {
    let mut resources = vec![json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}})];
    if let Some(port) = port {
        resources.push(json!({"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}));
    }
    json!({"name": id, "task_id": {"value": id}, "agent_id": {"value": "A1"},
        "resources": resources, "command": {"value": command}})
}

/// The four tasks of the recovery test.
fn recovery_tasks() -> Vec<serde_json::Value> {
    [
        ("quick", "sleep 2", None),
        ("fails", "sleep 1; exit 2", None),
        ("long", "sleep 30", None),
        ("web", "python3 -m http.server $PORT0", Some(31000)),
    ]
    .into_iter()
    .map(|(id, command, port)| task(id, command, port))
    .collect()
}

/// Serves one agent connection: admits it as `A1`, gives a new agent `tasks()`, acknowledges every
/// update, pings every 15 s.
async fn serve_agent(
    env: Env,
    stream: drover_core::env::Stream,
    new_tasks: fn() -> Vec<serde_json::Value>,
) {
    let mut conn = Framed::new(stream, FrameCodec::default());
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    let mut seq = 0;
    loop {
        let frame = tokio::select! {
            biased;
            frame = conn.next() => frame,
            _ = ping.tick() => {
                seq += 1;
                let _ = conn.send(encode_message(&MasterMessage::Ping { seq }).unwrap()).await;
                continue;
            }
        };
        let Some(Ok(frame)) = frame else { return };
        let Ok(message) = decode_message::<AgentMessage>(&frame) else {
            return;
        };
        let mut replies = Vec::new();
        match message {
            AgentMessage::Register(registration) => {
                let tasks: Vec<&str> = registration
                    .tasks
                    .iter()
                    .filter_map(|t| t.task["task_id"]["value"].as_str())
                    .collect();
                env.emit(
                    Event::new("saw_register")
                        .with("agent", &registration.hostname)
                        .with("id", registration.agent_id.as_deref().unwrap_or("none"))
                        .with("tasks", tasks.join(",")),
                );
                replies.push(MasterMessage::Registered {
                    agent_id: "A1".into(),
                    master: env.node().to_string(),
                });
                if registration.agent_id.is_none() {
                    for task in new_tasks() {
                        replies.push(MasterMessage::RunTask {
                            framework_id: "F1".into(),
                            framework: json!({"name": "test"}).into(),
                            task: task.into(),
                        });
                    }
                }
            }
            AgentMessage::Update(update) => {
                let mut event = Event::new("saw_update").with("task", &update.task_id).with(
                    "state",
                    serde_json::to_value(update.state)
                        .unwrap()
                        .as_str()
                        .unwrap(),
                );
                if let Some(healthy) = update.healthy {
                    event = event.with("healthy", healthy);
                }
                env.emit(event);
                replies.push(MasterMessage::Acknowledge {
                    task_id: update.task_id,
                    uuid: update.uuid,
                });
            }
            // This master does not authenticate: an agent that offers to is told so.
            AgentMessage::Authenticate { .. } | AgentMessage::Proof { .. } => {
                replies.push(MasterMessage::AuthenticationFailed {
                    reason: "this master has no credentials".into(),
                });
            }
            AgentMessage::Pong { .. } => {}
        }
        for reply in replies {
            if conn.send(encode_message(&reply).unwrap()).await.is_err() {
                return;
            }
        }
    }
}

fn test_master() -> Role {
    master_role("test-master", recovery_tasks)
}

fn master_role(name: &'static str, tasks: fn() -> Vec<serde_json::Value>) -> Role {
    Role::new(name, Some(5050), move |context: NodeContext| {
        Box::pin(async move {
            let env = context.env.clone();
            let mut listener = env.bind(SocketAddr::from(([0, 0, 0, 0], 5050))).await?;
            let servers = context
                .cluster
                .of_role("coord")
                .iter()
                .map(|c| (c.to_string(), 2181))
                .collect();
            let client = Client::start(
                env.clone(),
                ClientConfig {
                    servers,
                    session_timeout: Duration::from_secs(6),
                    connect_timeout: Duration::from_secs(1),
                    auth: Vec::new(),
                    acl: vec![drover_coord::proto::Acl::open()],
                },
            );
            let info = serde_json::to_vec(&MasterInfo::new(&context.name, &context.name, 5050))?;
            loop {
                if client.wait_connected().await.is_ok()
                    && drover_coord::recipes::join(&client, "/mesos", &info)
                        .await
                        .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            env.emit(Event::new("published"));
            loop {
                let (stream, _) = listener.accept().await?;
                drover_core::env::spawn(serve_agent(env.clone(), stream, tasks));
            }
        })
    })
}

fn scenario() -> drover_sim::Scenario {
    let doc = json!({
        "name": "agent-sim", "seed": 5, "duration": "45s",
        "cluster": {
            "coord": 1,
            "agents": [{"name": "agent-a", "resources": "cpus:2;mem:1024;ports:[31000-31005]", "attributes": "rack:r1"}],
            "nodes": [{"role": "test-master", "count": 1}]
        },
        "timeline": [
            {"at": "6s", "do": "http", "node": "agent-a", "port": 31000, "method": "GET", "path": "/", "expect_status": 200},
            {"at": "7s", "do": "http", "node": "agent-a", "method": "GET", "path": "/state", "expect_status": 200},
            {"at": "10s", "do": "crash", "node": "agent-a"},
            {"at": "18s", "do": "restart", "node": "agent-a"},
            {"at": "25s", "do": "http", "node": "agent-a", "port": 31000, "method": "GET", "path": "/health", "expect_status": 200}
        ],
        "expect": {
            "eventually": [
                {"by": "8s", "node": "agent-a", "event": "agent_registered agent_id=A1"},
                {"by": "8s", "event": "saw_register agent=agent-a id=none"},
                {"by": "8s", "event": "saw_update task=quick state=TASK_FINISHED"},
                {"by": "8s", "event": "saw_update task=fails state=TASK_FAILED"},
                {"by": "8s", "event": "saw_update task=web state=TASK_RUNNING"},
                {"after": "18s", "by": "18s", "node": "agent-a", "event": "agent_recovered tasks=2"},
                {"after": "18s", "by": "22s", "event": "saw_register agent=agent-a id=A1 tasks=long,web"},
                {"after": "30s", "by": "36s", "event": "saw_update task=long state=TASK_FINISHED"}
            ],
            "never": [
                {"by": "30s", "event": "saw_update task=long state=TASK_FINISHED"},
                {"event": "saw_update task=web state=TASK_FINISHED"},
                {"event": "saw_update task=quick state=TASK_LOST"}
            ]
        }
    });
    drover_sim::scenario::parse(Path::new("agent-sim.json"), doc).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_simulated_agent_runs_tasks_and_recovers_them_after_a_crash() {
    let roles = drover_nodes::roles().with(test_master());
    let scenario = scenario();
    let outcome = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
    assert!(
        outcome.passed(),
        "{:?}\n{}",
        outcome.failures,
        outcome.trace
    );
    let again = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
    assert_eq!(
        outcome.trace, again.trace,
        "the same seed replays the same trace"
    );
}

/// Tasks with Mesos COMMAND health checks, as the simulated containerizer reads them.
fn checked_tasks() -> Vec<serde_json::Value> {
    let check = |command: &str, failures: u32| {
        json!({"type": "COMMAND", "command": {"value": command}, "delay_seconds": 1,
            "interval_seconds": 2, "timeout_seconds": 1, "consecutive_failures": failures,
            "grace_period_seconds": 0})
    };
    [
        ("ok", check("true", 3)),
        ("bad", check("exit 1", 2)),
        ("slow", check("sleep 5", 0)),
        ("curl", check("curl -f http://$HOST:$PORT0/", 3)),
    ]
    .into_iter()
    .map(|(id, check)| {
        let mut task = task(id, "sleep 100", None);
        task["health_check"] = check;
        task
    })
    .collect()
}

fn health_scenario() -> drover_sim::Scenario {
    let doc = json!({
        "name": "agent-health-sim", "seed": 9, "duration": "30s",
        "cluster": {
            "coord": 1,
            "agents": [{"name": "agent-a", "resources": "cpus:2;mem:1024;ports:[31000-31005]"}],
            "nodes": [{"role": "health-master", "count": 1}]
        },
        "timeline": [],
        "expect": {
            "eventually": [
                {"by": "12s", "event": "saw_update task=ok state=TASK_RUNNING healthy=true"},
                {"by": "12s", "event": "saw_update task=curl state=TASK_RUNNING healthy=true"},
                {"by": "12s", "event": "saw_update task=bad state=TASK_RUNNING healthy=false"},
                {"by": "15s", "event": "saw_update task=bad state=TASK_KILLED healthy=false"},
                {"by": "12s", "event": "saw_update task=slow state=TASK_RUNNING healthy=false"},
                {"by": "15s", "node": "agent-a", "event": "task_unhealthy_kill task=bad failures=2"}
            ],
            "never": [
                {"event": "saw_update task=ok state=TASK_RUNNING healthy=false"},
                {"event": "saw_update task=ok state=TASK_KILLED"},
                {"event": "saw_update task=slow state=TASK_KILLED"},
                {"event": "saw_update task=slow state=TASK_RUNNING healthy=true"}
            ]
        }
    });
    drover_sim::scenario::parse(Path::new("agent-health-sim.json"), doc)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_simulated_agent_runs_command_health_checks() {
    let roles = drover_nodes::roles().with(master_role("health-master", checked_tasks));
    let scenario = health_scenario();
    let outcome = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
    assert!(
        outcome.passed(),
        "{:?}\n{}",
        outcome.failures,
        outcome.trace
    );
    // Health changes are reported once each: one healthy update for `ok`.
    let healthy_ok = outcome
        .trace
        .lines()
        .filter(|l| l.contains("saw_update task=ok state=TASK_RUNNING healthy=true"))
        .count();
    assert_eq!(healthy_ok, 1, "{}", outcome.trace);
    let again = drover_sim::run(&scenario, &roles, scenario.seed).unwrap();
    assert_eq!(
        outcome.trace, again.trace,
        "the same seed replays the same trace"
    );
}
