//! A task's sandbox read through the master, live on loopback: a master and an agent in this
//! process (the agent's real process containerizer, and Docker when the engine answers), a v1
//! framework that launches a task, then the UI's calls through the master's proxy
//! (`/agent/<id>/state`, `/agent/<id>/files/browse|read|download`) until the task's output
//! shows. Everything made (work dirs, processes, containers) is removed at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_agent::containerizer::live::docker::{DockerContainerizer, DockerTasks, AGENT_LABEL};
use drover_agent::containerizer::live::mesos::MesosContainerizer;
use drover_agent::containerizer::Containerizer;
use drover_agent::{AgentConfig, AgentError, MasterLocator};
use drover_core::task::TaskState;
use drover_core::v1::{self, CallType, EventType, FrameworkInfo, Id};
use drover_master::client::{Driver, DriverEvent, Locator};
use drover_master::core::Tuning;
use drover_master::daemon;
use serde_json::{json, Value as Json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const REQUIRE_ENV: &str = "DROVER_REQUIRE_WIRE_TESTS";
const IMAGE: &str = "drover-test-busybox:1";

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A master, an agent with `containerizers` (whose work dir is `agent` in `dir`) and a
/// framework, on loopback; `dir` is removed when the cluster goes.
struct Cluster {
    dir: PathBuf,
    env: drover_core::Env,
    master_port: u16,
    stop_master: Option<oneshot::Sender<()>>,
    master: Option<JoinHandle<std::io::Result<()>>>,
    stop_agent: Option<oneshot::Sender<()>>,
    agent: Option<JoinHandle<Result<(), AgentError>>>,
    driver: Driver,
    events: mpsc::Receiver<DriverEvent>,
}

impl Cluster {
    async fn start(dir: PathBuf, containerizers: Vec<Arc<dyn Containerizer>>) -> Cluster {
        let master_port = free_port();
        let env = drover_core::env::live::env("files-test", dir.join("client"), Some(1));
        let config = daemon::Config {
            bind: ([127, 0, 0, 1], master_port).into(),
            hostname: "127.0.0.1".into(),
            port: master_port,
            zk: None,
            tuning: Tuning::default(),
            auth: daemon::Auth::default(),
        };
        let master_env = drover_core::env::live::env("master", dir.join("master"), Some(2));
        let (stop_master, stopped) = oneshot::channel::<()>();
        let master = drover_core::env::spawn(daemon::serve(master_env, config, async move {
            let _ = stopped.await;
        }));

        let locator = MasterLocator::Direct {
            host: "127.0.0.1".into(),
            port: master_port,
        };
        let mut config = AgentConfig::new(
            "127.0.0.1",
            locator,
            "cpus:2;mem:1024;ports:[31000-31010]".parse().unwrap(),
        );
        config.ip = "127.0.0.1".parse().unwrap();
        config.port = 0;
        config.registration_backoff = Duration::from_millis(100);
        let agent_env = drover_core::env::live::env("agent", dir.join("agent").join("meta"), None);
        let (stop_agent, stopped) = oneshot::channel::<()>();
        let agent = drover_core::env::spawn(drover_agent::run(
            agent_env,
            config,
            containerizers,
            async {
                let _ = stopped.await;
            },
        ));

        let info = FrameworkInfo {
            user: "root".into(),
            name: "files-test".into(),
            ..FrameworkInfo::default()
        };
        let locator = Locator::Direct("127.0.0.1".into(), master_port);
        let (driver, events) = Driver::start(env.clone(), locator, info);
        Cluster {
            dir,
            env,
            master_port,
            stop_master: Some(stop_master),
            master: Some(master),
            stop_agent: Some(stop_agent),
            agent: Some(agent),
            driver,
            events,
        }
    }

    fn agent_work_dir(&self) -> PathBuf {
        agent_work_dir(&self.dir)
    }

    async fn event(&mut self) -> v1::Event {
        loop {
            match tokio::time::timeout(WAIT, self.events.recv()).await {
                Ok(Some(DriverEvent::Event(event))) => return *event,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the framework's driver stopped"),
                Err(_) => panic!("no event from the master within {WAIT:?}"),
            }
        }
    }

    /// Launches `task` (its `task_id`, `agent_id` and resources are filled in) on the first
    /// offer; the agent's id.
    async fn launch(&mut self, task_id: &str, mut task: Json) -> String {
        let offer = loop {
            let event = self.event().await;
            if let Some(offer) = event.offers.and_then(|o| o.offers.into_iter().next()) {
                break offer;
            }
        };
        let role = offer
            .allocation_info
            .as_ref()
            .map_or("*".to_string(), |a| a.role.clone());
        let resources: drover_core::Resources = "cpus:0.1;mem:32".parse().unwrap();
        task["name"] = json!(task_id);
        task["task_id"] = json!({"value": task_id});
        task["agent_id"] = json!({"value": offer.agent_id.value});
        task["resources"] = serde_json::to_value(v1::to_mesos(&resources, Some(&role))).unwrap();
        let info: v1::TaskInfo = serde_json::from_value(task).unwrap();
        let mut call = Driver::bare(CallType::Accept);
        call.accept = Some(v1::Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![v1::Operation {
                kind: "LAUNCH".into(),
                launch: Some(v1::Launch {
                    task_infos: vec![info],
                }),
            }],
            filters: None,
        });
        self.driver.call(call).await.expect("ACCEPT is accepted");
        offer.agent_id.value
    }

    /// Waits for the task to reach `state` (acknowledging every update).
    async fn reaches(&mut self, task_id: &str, state: TaskState) {
        loop {
            let event = self.event().await;
            let Some(update) = event.update.filter(|_| event.kind == EventType::Update) else {
                continue;
            };
            let status = update.status;
            let _ = self.driver.acknowledge(&status).await;
            if status.task_id.value != task_id {
                continue;
            }
            if status.state == state {
                return;
            }
            assert!(
                !status.state.is_terminal(),
                "{task_id} ended as {:?} ({:?}), not {state:?}",
                status.state,
                status.message
            );
        }
    }

    async fn kill(&mut self, task_id: &str, agent_id: &str) {
        let mut call = Driver::bare(CallType::Kill);
        call.kill = Some(v1::Kill {
            task_id: Id::new(task_id),
            agent_id: Some(Id::new(agent_id)),
        });
        self.driver.call(call).await.expect("KILL is accepted");
        self.reaches(task_id, TaskState::TaskKilled).await;
    }

    /// GETs `path` from the master: status and body.
    async fn get(&self, path: &str) -> (u16, Bytes) {
        let request = http::Request::get(path).body(Bytes::new()).unwrap();
        let response =
            drover_core::http::request(&self.env, "127.0.0.1", self.master_port, request, WAIT)
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (response.status().as_u16(), response.into_body())
    }

    /// GETs `path` from the master, which must answer `status` with a body that `says` so.
    async fn refused(&self, path: String, status: u16, says: &str) {
        let (got, body) = self.get(&path).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got, status, "GET {path}: {body}");
        assert!(body.contains(says), "GET {path}: {body}");
    }

    async fn get_json(&self, path: &str) -> Json {
        let (status, body) = self.get(path).await;
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn stop_agent(&mut self) {
        if let Some(stop) = self.stop_agent.take() {
            let _ = stop.send(());
        }
        if let Some(agent) = self.agent.take() {
            agent.await.unwrap().unwrap();
        }
    }

    async fn stop(mut self) {
        self.stop_agent().await;
        if let Some(stop) = self.stop_master.take() {
            let _ = stop.send(());
        }
        if let Some(master) = self.master.take() {
            let _ = master.await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn agent_work_dir(dir: &Path) -> PathBuf {
    dir.join("agent")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-files-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch folder");
    dir
}

/// A query value, percent-encoded.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The sandbox `directory` the agent's `/state` (through the master) gives the task.
async fn directory(cluster: &Cluster, agent_id: &str, task_id: &str) -> String {
    let state = cluster.get_json(&format!("/agent/{agent_id}/state")).await;
    assert_eq!(state["id"], agent_id);
    let frameworks = state["frameworks"].as_array().cloned().unwrap_or_default();
    frameworks
        .iter()
        .flat_map(|f| {
            let running = f["executors"].as_array().cloned().unwrap_or_default();
            let ended = f["completed_executors"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            running.into_iter().chain(ended)
        })
        .find(|e| e["id"] == task_id)
        .and_then(|e| e["directory"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no executor directory for {task_id} in {state}"))
}

/// Reads a whole file through the master once it has at least `expected`'s length.
async fn read_through_master(cluster: &Cluster, agent_id: &str, path: &str, expected: &str) {
    let base = format!("/agent/{agent_id}/files/read?path={}", encode(path));
    let mut size = 0;
    for _ in 0..150 {
        // The web UI's first question: the size (offset -1).
        let answer = cluster.get_json(&format!("{base}&offset=-1")).await;
        assert_eq!(answer["data"], "");
        size = answer["offset"].as_u64().unwrap();
        if size >= expected.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(size, expected.len() as u64, "{path}");
    let answer = cluster
        .get_json(&format!("{base}&offset=0&length={size}"))
        .await;
    assert_eq!(answer, json!({"data": expected, "offset": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_tasks_stdout_is_read_through_the_master() {
    let dir = scratch("process");
    let mesos = MesosContainerizer::new(agent_work_dir(&dir));
    let mut cluster = Cluster::start(dir, vec![Arc::new(mesos)]).await;
    let task = "hello-task";
    let command = "echo hello from the sandbox; echo oops >&2; exec sleep 60";
    let agent_id = cluster
        .launch(task, json!({"command": {"value": command}}))
        .await;
    cluster.reaches(task, TaskState::TaskRunning).await;

    let sandbox = directory(&cluster, &agent_id, task).await;
    assert!(Path::new(&sandbox).is_absolute(), "{sandbox}");
    assert!(
        Path::new(&sandbox).starts_with(cluster.agent_work_dir()),
        "{sandbox}"
    );
    let browse = format!("/agent/{agent_id}/files/browse?path={}", encode(&sandbox));
    let entries = cluster.get_json(&browse).await;
    let paths: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(
        paths.contains(&format!("{sandbox}/stdout").as_str()),
        "{entries}"
    );
    assert!(paths.contains(&format!("{sandbox}/stderr").as_str()));
    let stdout =
        &entries.as_array().unwrap()[paths.iter().position(|p| p.ends_with("/stdout")).unwrap()];
    assert!(
        stdout["mode"].as_str().unwrap().starts_with("-rw"),
        "{stdout}"
    );

    let stdout_path = format!("{sandbox}/stdout");
    read_through_master(
        &cluster,
        &agent_id,
        &stdout_path,
        "hello from the sandbox\n",
    )
    .await;
    read_through_master(&cluster, &agent_id, &format!("{sandbox}/stderr"), "oops\n").await;
    let page = cluster
        .get_json(&format!(
            "/agent/{agent_id}/files/read?path={}&offset=6&length=4",
            encode(&stdout_path)
        ))
        .await;
    assert_eq!(page, json!({"data": "from", "offset": 6}));
    // Mesos' virtual path of the same sandbox.
    let virtual_path = format!(
        "/frameworks/{}/executors/{task}/runs/latest/stdout",
        cluster.driver.framework_id().unwrap()
    );
    let answer = cluster
        .get_json(&format!(
            "/agent/{agent_id}/files/read?path={}&offset=0",
            encode(&virtual_path)
        ))
        .await;
    assert_eq!(answer["data"], "hello from the sandbox\n");
    let (status, body) = cluster
        .get(&format!(
            "/agent/{agent_id}/files/download?path={}",
            encode(&stdout_path)
        ))
        .await;
    assert_eq!((status, &body[..]), (200, &b"hello from the sandbox\n"[..]));

    // Refusals, each with its status and a sentence.
    let read = format!("/agent/{agent_id}/files/read");
    cluster
        .refused(
            format!(
                "{read}?path={}&offset=0",
                encode(&format!("{sandbox}/../x"))
            ),
            403,
            "'..' is not allowed",
        )
        .await;
    cluster
        .refused(
            format!("{read}?path=/etc/passwd&offset=0"),
            404,
            "not in the sandbox",
        )
        .await;
    cluster
        .refused(
            format!(
                "{read}?path={}&offset=0",
                encode(&format!("{sandbox}/none"))
            ),
            404,
            "does not exist",
        )
        .await;
    cluster
        .refused(format!("{read}?offset=0"), 400, "Expecting 'path=value'")
        .await;
    cluster
        .refused(
            format!("{read}?path={}&offset=ten", encode(&stdout_path)),
            400,
            "Failed to parse offset",
        )
        .await;
    cluster
        .refused(
            "/agent/no-such-agent/files/browse?path=/".into(),
            404,
            "No agent no-such-agent",
        )
        .await;

    // An ended task's sandbox stays readable.
    cluster.kill(task, &agent_id).await;
    assert_eq!(directory(&cluster, &agent_id, task).await, sandbox);
    read_through_master(
        &cluster,
        &agent_id,
        &stdout_path,
        "hello from the sandbox\n",
    )
    .await;

    // An agent that does not answer any more.
    cluster.stop_agent().await;
    cluster
        .refused(
            format!("{read}?path={}&offset=0", encode(&stdout_path)),
            502,
            "is unreachable",
        )
        .await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_tasks_stdout_is_read_through_the_master() {
    let label = format!("test-files-docker-{}", std::process::id());
    let docker = match DockerContainerizer::connect(&label).await {
        Ok(docker) => docker,
        Err(e) if !required() => {
            return println!("skipped: {e} (set {REQUIRE_ENV}=1 to make this a failure)")
        }
        Err(e) => panic!("{REQUIRE_ENV} is set: {e}"),
    };
    if let Err(e) = drover_agent::containerizer::live::docker::import_busybox_image(IMAGE) {
        assert!(!required(), "{REQUIRE_ENV} is set: {e}");
        return println!("skipped: {e} (set {REQUIRE_ENV}=1 to make this a failure)");
    }
    let _containers = Containers(label);
    let dir = scratch("docker");
    let containerizers: Vec<Arc<dyn Containerizer>> = vec![
        Arc::new(MesosContainerizer::new(agent_work_dir(&dir))),
        Arc::new(DockerTasks::new(docker)),
    ];
    let mut cluster = Cluster::start(dir, containerizers).await;
    let task = "container-task";
    let command = "echo hello from a container; echo oops >&2";
    let container = json!({"type": "DOCKER", "docker": {"image": IMAGE, "network": "HOST"}});
    let agent_id = cluster
        .launch(
            task,
            json!({"command": {"value": command}, "container": container}),
        )
        .await;
    cluster.reaches(task, TaskState::TaskFinished).await;
    let sandbox = directory(&cluster, &agent_id, task).await;
    assert!(
        Path::new(&sandbox).starts_with(cluster.agent_work_dir()),
        "{sandbox}"
    );
    read_through_master(
        &cluster,
        &agent_id,
        &format!("{sandbox}/stdout"),
        "hello from a container\n",
    )
    .await;
    read_through_master(&cluster, &agent_id, &format!("{sandbox}/stderr"), "oops\n").await;
    cluster.stop().await;
}

/// Removes the containers of the test's agent (its label) when dropped, also after a failure.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let filter = format!("label={AGENT_LABEL}={}", self.0);
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(listed) = listed {
            for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}
