//! A live agent (process containerizer, temporary work dir) against a tiny master written here: a
//! TCP listener on 127.0.0.1 that speaks the agent protocol's frames. It registers the agent, runs
//! tasks that fail, get killed and finish, and restarts the agent while a task runs: the new agent
//! re-registers with the task and reports its end (re-adoption).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_agent::containerizer::live::mesos::MesosContainerizer;
use drover_agent::containerizer::Containerizer;
use drover_agent::{AgentConfig, AgentError, MasterLocator};
use drover_core::agent_proto::{AgentMessage, MasterMessage, Registration, StatusUpdate};
use drover_core::frame::{decode_message, encode_message, FrameCodec};
use drover_core::task::TaskState;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(30);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-agent-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    dir
}

struct Agent {
    stop: oneshot::Sender<()>,
    running: JoinHandle<Result<(), AgentError>>,
}

impl Agent {
    fn start(work_dir: &Path, master_port: u16) -> Agent {
        // Seeded from the clock: each incarnation draws its own update uuids.
        let env = drover_core::env::live::env("agent-live-test", work_dir.join("meta"), None);
        let master = MasterLocator::Direct {
            host: "127.0.0.1".into(),
            port: master_port,
        };
        let mut config = AgentConfig::new(
            "127.0.0.1",
            master,
            "cpus:2;mem:1024;ports:[31000-31010]".parse().unwrap(),
        );
        config.ip = "127.0.0.1".parse().unwrap();
        config.port = 0;
        config.attributes = "rack:r1".into();
        let containerizers: Vec<Arc<dyn Containerizer>> =
            vec![Arc::new(MesosContainerizer::new(work_dir))];
        let (stop, stopped) = oneshot::channel::<()>();
        let running =
            drover_core::env::spawn(drover_agent::run(env, config, containerizers, async {
                let _ = stopped.await;
            }));
        Agent { stop, running }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.running.await.unwrap().unwrap();
    }
}

/// The test's master: one agent connection.
struct Master {
    conn: Framed<TcpStream, FrameCodec>,
    /// Updates seen (by uuid): a resent one is acknowledged again and skipped, as a master does.
    seen: Vec<String>,
}

impl Master {
    async fn accept(listener: &TcpListener, seen: Vec<String>) -> Master {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("the agent connects")
            .unwrap();
        Master {
            conn: Framed::new(stream, FrameCodec::default()),
            seen,
        }
    }

    async fn send(&mut self, message: MasterMessage) {
        self.conn
            .send(encode_message(&message).unwrap())
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> AgentMessage {
        let frame: Bytes = tokio::time::timeout(WAIT, self.conn.next())
            .await
            .expect("a message from the agent")
            .expect("the connection is open")
            .unwrap();
        decode_message(&frame).unwrap()
    }

    async fn registration(&mut self) -> Registration {
        match self.recv().await {
            AgentMessage::Register(registration) => registration,
            other => panic!("expected Register, got {other:?}"),
        }
    }

    /// The next status update, which must be `state` of `task`; acknowledged.
    async fn update(&mut self, task: &str, state: TaskState) -> StatusUpdate {
        let update = loop {
            match self.recv().await {
                AgentMessage::Update(update) if self.seen.contains(&update.uuid) => {
                    self.send(MasterMessage::Acknowledge {
                        task_id: update.task_id.clone(),
                        uuid: update.uuid.clone(),
                    })
                    .await;
                }
                AgentMessage::Update(update) => break update,
                AgentMessage::Pong { .. } => continue,
                other => panic!("expected an update, got {other:?}"),
            }
        };
        self.seen.push(update.uuid.clone());
        assert_eq!(
            (update.task_id.as_str(), update.state),
            (task, state),
            "{update:?}"
        );
        self.send(MasterMessage::Acknowledge {
            task_id: update.task_id.clone(),
            uuid: update.uuid.clone(),
        })
        .await;
        update
    }

    async fn run(&mut self, task_id: &str, command: &str) {
        self.run_checked(task_id, command, None).await;
    }

    async fn run_checked(
        &mut self,
        task_id: &str,
        command: &str,
        health_check: Option<serde_json::Value>,
    ) {
        let mut task = json!({
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": "agent-1"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31003, "end": 31003}]}}
            ],
            "command": {"value": command},
            "kill_policy": {"grace_period": {"nanoseconds": 500_000_000u64}}
        });
        if let Some(check) = health_check {
            task["health_check"] = check;
        }
        self.send(MasterMessage::RunTask {
            framework_id: "fw-1".into(),
            framework: json!({"name": "test-framework", "user": "root"}).into(),
            task: task.into(),
        })
        .await;
    }
}

async fn get_state(port: u16) -> serde_json::Value {
    let env = drover_core::env::live::env("state-client", std::env::temp_dir(), Some(1));
    let request = http::Request::get("/state").body(Bytes::new()).unwrap();
    let response = drover_core::http::request(&env, "127.0.0.1", port, request, WAIT)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_slice(response.body()).unwrap()
}

#[tokio::test]
async fn a_live_agent_runs_kills_and_re_adopts_tasks() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_test_writer()
        .try_init();
    let work_dir = scratch("agent");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let agent = Agent::start(&work_dir, port);

    let mut master = Master::accept(&listener, Vec::new()).await;
    let registration = master.registration().await;
    assert_eq!(registration.agent_id, None);
    assert_eq!(registration.hostname, "127.0.0.1");
    assert_eq!(registration.attributes, "rack:r1");
    assert!(
        registration.resources.contains("cpus:2"),
        "{registration:?}"
    );
    master
        .send(MasterMessage::Registered {
            agent_id: "agent-1".into(),
            master: "test-master".into(),
        })
        .await;
    master.send(MasterMessage::Ping { seq: 1 }).await;
    assert_eq!(master.recv().await, AgentMessage::Pong { seq: 1 });

    // A task that fails: RUNNING, then FAILED with its exit status; the environment has PORT0.
    master
        .run("fails", "test \"$PORT0\" = 31003 && sleep 1; exit 3")
        .await;
    master.update("fails", TaskState::TaskRunning).await;
    let failed = master.update("fails", TaskState::TaskFailed).await;
    assert_eq!(failed.framework_id, "fw-1");
    assert_eq!(
        failed.message.as_deref(),
        Some("Command exited with status 3")
    );

    // A task that is killed.
    master.run("sleeper", "sleep 1000").await;
    master.update("sleeper", TaskState::TaskRunning).await;
    let state = get_state(registration.port).await;
    assert_eq!(state["id"], "agent-1");
    assert_eq!(state["attributes"], json!({"rack": "r1"}));
    assert_eq!(state["master_hostname"], "127.0.0.1");
    let running = &state["frameworks"][0]["executors"][0]["tasks"][0];
    assert_eq!(
        (running["id"].as_str(), running["state"].as_str()),
        (Some("sleeper"), Some("TASK_RUNNING")),
        "{state}"
    );
    master
        .send(MasterMessage::KillTask {
            framework_id: "fw-1".into(),
            task_id: "sleeper".into(),
        })
        .await;
    master.update("sleeper", TaskState::TaskKilled).await;

    // Killing a task the agent does not know reports it lost.
    master
        .send(MasterMessage::KillTask {
            framework_id: "fw-1".into(),
            task_id: "nobody".into(),
        })
        .await;
    master.update("nobody", TaskState::TaskLost).await;

    // A task that outlives its agent: the next agent re-registers with it and reports its end
    // (the RUNNING update may come again first, if the agent stopped before it saw the ack).
    master.run("survivor", "sleep 4").await;
    master.update("survivor", TaskState::TaskRunning).await;
    agent.stop().await;
    let agent = Agent::start(&work_dir, port);
    let mut master = Master::accept(&listener, master.seen).await;
    let registration = master.registration().await;
    assert_eq!(registration.agent_id.as_deref(), Some("agent-1"));
    let tasks: Vec<(String, TaskState)> = registration
        .tasks
        .iter()
        .map(|t| {
            (
                t.task["task_id"]["value"].as_str().unwrap().to_string(),
                t.state,
            )
        })
        .collect();
    assert_eq!(
        tasks,
        vec![("survivor".to_string(), TaskState::TaskRunning)]
    );
    assert_eq!(registration.tasks[0].framework_id, "fw-1");
    assert_eq!(registration.tasks[0].framework["name"], "test-framework");
    master
        .send(MasterMessage::Registered {
            agent_id: "agent-1".into(),
            master: "test-master".into(),
        })
        .await;
    let finished = master.update("survivor", TaskState::TaskFinished).await;
    assert_eq!(
        finished.message.as_deref(),
        Some("Command exited with status 0")
    );
    let state = get_state(registration.port).await;
    let completed = &state["frameworks"][0]["completed_executors"][0]["completed_tasks"][0];
    assert_eq!(completed["state"], "TASK_FINISHED", "{state}");
    agent.stop().await;
    let _ = std::fs::remove_dir_all(work_dir);
}

#[tokio::test]
async fn a_live_agent_runs_command_health_checks_and_kills_unhealthy_tasks() {
    let work_dir = scratch("health");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let agent = Agent::start(&work_dir, port);
    let mut master = Master::accept(&listener, Vec::new()).await;
    master.registration().await;
    master
        .send(MasterMessage::Registered {
            agent_id: "agent-1".into(),
            master: "test-master".into(),
        })
        .await;

    // A passing check (run in the sandbox, with the task's environment): one update says
    // healthy, with Mesos' reason; repeats of the same health are not reported.
    let passing = json!({"type": "COMMAND",
        "command": {"value": "test \"$PORT0\" = 31003 && test \"$PWD\" = \"$MESOS_SANDBOX\""},
        "delay_seconds": 0, "interval_seconds": 0.2, "timeout_seconds": 5,
        "consecutive_failures": 2, "grace_period_seconds": 0});
    master
        .run_checked("healthy", "sleep 1000", Some(passing))
        .await;
    let running = master.update("healthy", TaskState::TaskRunning).await;
    assert_eq!(running.healthy, None);
    let health = master.update("healthy", TaskState::TaskRunning).await;
    assert_eq!(health.healthy, Some(true), "{health:?}");
    assert_eq!(
        health.reason.as_deref(),
        Some("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED")
    );
    master
        .send(MasterMessage::KillTask {
            framework_id: "fw-1".into(),
            task_id: "healthy".into(),
        })
        .await;
    let killed = master.update("healthy", TaskState::TaskKilled).await;
    assert_eq!(killed.healthy, None, "a kill by the framework: {killed:?}");

    // A failing check with consecutive_failures 2: unhealthy at the first failure, unhealthy
    // again at the second (Mesos reports the failure that kills), then killed, the terminal
    // update saying healthy: false.
    let failing = json!({"type": "COMMAND", "command": {"value": "false"},
        "delay_seconds": 0, "interval_seconds": 0.2, "timeout_seconds": 5,
        "consecutive_failures": 2, "grace_period_seconds": 0});
    master
        .run_checked("unhealthy", "sleep 1000", Some(failing))
        .await;
    master.update("unhealthy", TaskState::TaskRunning).await;
    let health = master.update("unhealthy", TaskState::TaskRunning).await;
    assert_eq!(health.healthy, Some(false), "{health:?}");
    assert_eq!(
        health.message.as_deref(),
        Some("Health check failed: Command exited with status 1")
    );
    let last = master.update("unhealthy", TaskState::TaskRunning).await;
    assert_eq!(last.healthy, Some(false), "{last:?}");
    let killed = master.update("unhealthy", TaskState::TaskKilled).await;
    assert_eq!(killed.healthy, Some(false), "{killed:?}");
    assert!(
        killed
            .message
            .as_deref()
            .is_some_and(|m| m.contains("2 consecutive failed health checks")),
        "{killed:?}"
    );
    agent.stop().await;
    let _ = std::fs::remove_dir_all(work_dir);
}

/// An agent of this version starts on the checkpoint files an agent before the journal wrote (its
/// id, a task checkpoint, the task's status stream): it takes them over, re-registers with the
/// task, resends its unacknowledged update, and leaves only `agent/journal` behind.
#[tokio::test]
async fn an_agent_takes_over_the_checkpoint_files_an_older_agent_wrote() {
    use drover_agent::checkpoint::{stream_path, task_path, TaskCheckpoint, TASKS_PREFIX};
    use drover_agent::containerizer::Kind;
    use drover_agent::journal::Journal;
    use drover_agent::status::StatusUpdateManager;

    let work_dir = scratch("older-files");
    let meta = work_dir.join("meta");
    let write = |path: &str, bytes: &[u8]| {
        let file = meta.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, bytes).unwrap();
    };
    write("agent/id", br#"{"agent_id":"agent-old"}"#);
    let checkpoint = TaskCheckpoint {
        task_id: "done".into(),
        framework_id: "fw-1".into(),
        framework: json!({"name": "old-framework", "user": "root"}),
        task: json!({"name": "done", "task_id": {"value": "done"}, "command": {"value": "true"}}),
        containerizer: Kind::Mesos,
        handle: None,
        state: TaskState::TaskFinished,
        launched_ms: 1,
    };
    write(&task_path("done"), &checkpoint.encode());
    let mut manager = StatusUpdateManager::default();
    let finished = StatusUpdate {
        task_id: "done".into(),
        framework_id: "fw-1".into(),
        uuid: "u-finished".into(),
        state: TaskState::TaskFinished,
        message: Some("Command exited with status 0".into()),
        reason: None,
        timestamp_ms: 1,
        healthy: None,
        ip_addresses: Vec::new(),
    };
    manager.update(finished, 1);
    write(
        &stream_path("done"),
        &manager.stream_snapshot("done").unwrap(),
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let agent = Agent::start(&work_dir, port);
    let mut master = Master::accept(&listener, Vec::new()).await;
    let registration = master.registration().await;
    assert_eq!(registration.agent_id.as_deref(), Some("agent-old"));
    assert_eq!(registration.tasks.len(), 1, "{registration:?}");
    assert_eq!(registration.tasks[0].state, TaskState::TaskFinished);
    master
        .send(MasterMessage::Registered {
            agent_id: "agent-old".into(),
            master: "test-master".into(),
        })
        .await;
    let resent = master.update("done", TaskState::TaskFinished).await;
    assert_eq!(resent.uuid, "u-finished");
    // Frames are handled in order: once the pong is back, so is the acknowledgement.
    master.send(MasterMessage::Ping { seq: 7 }).await;
    assert_eq!(master.recv().await, AgentMessage::Pong { seq: 7 });
    agent.stop().await;

    assert!(!meta.join("agent/id").exists());
    assert!(!meta.join(task_path("done")).exists());
    assert!(!meta.join(stream_path("done")).exists());
    let (journal, _) = Journal::replay(&std::fs::read(meta.join("agent/journal")).unwrap());
    assert!(journal
        .get("agent/id")
        .is_some_and(|id| id.ends_with(br#""agent-old"}"#)));
    assert_eq!(
        journal.under(TASKS_PREFIX).count(),
        0,
        "the acknowledged task is gone"
    );

    // The next agent: the same id, no task.
    let agent = Agent::start(&work_dir, port);
    let mut master = Master::accept(&listener, master.seen).await;
    let registration = master.registration().await;
    assert_eq!(registration.agent_id.as_deref(), Some("agent-old"));
    assert!(registration.tasks.is_empty(), "{registration:?}");
    agent.stop().await;
    let _ = std::fs::remove_dir_all(work_dir);
}
