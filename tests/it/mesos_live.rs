//! drover master and agents as live processes on loopback, driven by a real Mesos framework
//! library (pymesos 0.3.15, `tests/mesos/pymesos_check.py`): one coord, two masters, two agents.
//! The framework subscribes by `HOST:PORT` (of the master that does not lead, so it follows the
//! 307), by `zk://` through coord, and again by `zk://` after the leading master is killed with
//! SIGKILL.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use crate::coord_live::DroverCoord;
use crate::root;
use crate::wire_zk::{free_port, fresh_scratch, python, required, run_limited, skip_or_fail};

/// A `drover` daemon on loopback, killed (its whole process group) when dropped.
pub struct Daemon {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    pub fn start(name: &str, port: u16, dir: PathBuf, args: &[String]) -> Daemon {
        std::fs::create_dir_all(&dir).expect("create a work dir");
        let log = File::create(dir.join("log")).expect("create a log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        let child = command.spawn().expect("start drover");
        let daemon = Daemon {
            name: name.to_string(),
            port,
            dir,
            child: Some(child),
        };
        let up = (0..300).any(|_| {
            let up = TcpStream::connect(("127.0.0.1", port)).is_ok();
            if !up {
                std::thread::sleep(Duration::from_millis(100));
            }
            up
        });
        assert!(up, "{name} did not listen on {port}: {}", daemon.log());
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// SIGKILL to the daemon's process group.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -KILL -- -{} 2>/dev/null", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bare HTTP/1.0 GET on loopback: (status, headers and body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// [`http_get`] proving `principal` with `secret` (HTTP Basic).
pub fn http_get_as(port: u16, path: &str, principal: &str, secret: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let authorization = drover_core::auth::authorization(principal, secret);
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\n\r\n",
        authorization.to_str().ok()?
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// Polls `check` every 200 ms for up to `secs` seconds.
pub fn wait_until(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    (0..secs * 5).any(|_| {
        let ok = check();
        if !ok {
            std::thread::sleep(Duration::from_millis(200));
        }
        ok
    })
}

/// Agent `i` of a test (`od1000-<i>`, processes only) under `dir`, following `master`.
fn start_agent(dir: &std::path::Path, i: usize, master: &str) -> Daemon {
    start_agent_with(dir, i, master, &[])
}

/// [`start_agent`] with more flags.
fn start_agent_with(dir: &std::path::Path, i: usize, master: &str, extra: &[&str]) -> Daemon {
    let port = free_port();
    let work = dir.join(format!("agent-{i}"));
    // A host name of its own, reached at --ip, as in Mesos.
    let hostname = format!("od1000-{i}");
    let args: Vec<String> = [
        "agent",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--hostname",
        &hostname,
        "--master",
        master,
        "--resources",
        "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
        "--containerizers",
        "mesos",
        "--work-dir",
        work.to_str().unwrap_or_default(),
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    Daemon::start(&format!("agent-{i}"), port, work, &args)
}

/// The cluster of the test.
struct Cluster {
    _coord: DroverCoord,
    zk: String,
    masters: Vec<Daemon>,
    _agents: Vec<Daemon>,
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        let coord = DroverCoord::start(&format!("mesos-{name}"), 1);
        let zk = format!("zk://{}/drover/mesos", coord.hosts());
        let dir = fresh_scratch(&format!("mesos-{name}"));
        let masters: Vec<Daemon> = (1..=2)
            .map(|i| {
                let port = free_port();
                let args: Vec<String> = [
                    "master",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--zk",
                    &zk,
                    "--quorum",
                    "1",
                    "--work-dir",
                    dir.join(format!("master-{i}")).to_str().unwrap_or_default(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                Daemon::start(
                    &format!("master-{i}"),
                    port,
                    dir.join(format!("master-{i}")),
                    &args,
                )
            })
            .collect();
        let agents: Vec<Daemon> = (1..=2).map(|i| start_agent(&dir, i, &zk)).collect();
        let cluster = Cluster {
            _coord: coord,
            zk,
            masters,
            _agents: agents,
        };
        let leader = cluster.leader();
        assert!(leader.is_some(), "no master leads: {}", cluster.logs());
        let registered = wait_until(60, || {
            cluster
                .leader()
                .and_then(|i| http_get(cluster.masters[i].port, "/master/state"))
                .is_some_and(|(_, text)| text.contains("\"activated_slaves\":2"))
        });
        assert!(
            registered,
            "the agents did not register: {}",
            cluster.logs()
        );
        // The master shows each agent by its host name, and reaches it at its address.
        let state = cluster
            .leader()
            .and_then(|i| http_get(cluster.masters[i].port, "/master/state"))
            .and_then(|(_, text)| {
                text.split_once("\r\n\r\n")
                    .map(|(_, body)| body.to_string())
            })
            .unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        let mut seen: Vec<(String, String)> = state["slaves"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let pid = a["pid"].as_str().unwrap_or("");
                let address = pid.split(['@', ':']).nth(1).unwrap_or("").to_string();
                (a["hostname"].as_str().unwrap_or("").to_string(), address)
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [("od1000-1", "127.0.0.1"), ("od1000-2", "127.0.0.1")]
                .map(|(h, a)| (h.to_string(), a.to_string()))
                .to_vec(),
            "{state}"
        );
        cluster
    }

    /// The index of the leading master (the one whose `/metrics/snapshot` says elected).
    fn leader(&self) -> Option<usize> {
        let mut found = None;
        wait_until(60, || {
            found = self.masters.iter().position(|m| {
                m.child.is_some()
                    && http_get(m.port, "/metrics/snapshot")
                        .is_some_and(|(_, text)| text.contains("\"master/elected\":1"))
            });
            found.is_some()
        });
        found
    }

    fn logs(&self) -> String {
        self.masters
            .iter()
            .chain(&self._agents)
            .map(|d| format!("--- {}\n{}", d.name, tail(&d.log(), 3000)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

fn pymesos_missing() -> Option<String> {
    let mut cmd = Command::new(python());
    cmd.args(["-c", "import pymesos, http_parser.parser"]);
    match run_limited(cmd, "pymesos-check", 60) {
        Ok(r) if r.ok() => None,
        Ok(r) => Some(format!("pymesos: {}", r.stderr.trim())),
        Err(e) => Some(format!("python3: {e}")),
    }
}

fn run_pymesos(master: &str) -> Result<(), String> {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/mesos/pymesos_check.py"))
        .arg(master)
        .args(["--agents", "2", "--timeout", "90"]);
    let ran = run_limited(cmd, "pymesos", 150)?;
    if ran.ok() {
        println!("{}", ran.stdout);
        // The offers named each agent by its host name and its address.
        for agent in ["od1000-1 at 127.0.0.1", "od1000-2 at 127.0.0.1"] {
            if !ran.stdout.contains(agent) {
                return Err(format!("no offer from {agent}:\n{}", ran.stdout));
            }
        }
        Ok(())
    } else {
        Err(ran.describe(&format!("pymesos_check.py {master}")))
    }
}

#[test]
fn a_pymesos_framework_runs_tasks_on_live_masters_and_agents() -> Result<(), String> {
    if let Some(missing) = pymesos_missing() {
        return skip_or_fail("pymesos framework against drover", &[missing]);
    }
    let _ = required();
    let mut cluster = Cluster::start("pymesos");
    let leader = cluster.leader().ok_or("no leading master")?;
    let follower = 1 - leader;
    // By HOST:PORT of the master that does not lead: pymesos follows its 307 to the leader.
    let direct = format!("127.0.0.1:{}", cluster.masters[follower].port);
    run_pymesos(&direct).map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    // By zk:// through coord.
    run_pymesos(&cluster.zk).map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    // The leader dies with SIGKILL; the other master takes over, the agents re-register.
    cluster.masters[leader].kill();
    let new_leader = cluster
        .leader()
        .ok_or_else(|| format!("no new leader: {}", cluster.logs()))?;
    assert_eq!(new_leader, follower);
    let back = wait_until(60, || {
        http_get(cluster.masters[follower].port, "/master/state")
            .is_some_and(|(_, text)| text.contains("\"activated_slaves\":2"))
    });
    assert!(back, "agents did not re-register: {}", cluster.logs());
    run_pymesos(&cluster.zk).map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    Ok(())
}

/// A master with `--credentials` and every `--authenticate-http-*` switch, two agents, and the
/// principals `ops` and `dev`: a credentials file in Mesos' JSON form.
pub struct SecuredMaster {
    pub master: Daemon,
    _agents: Vec<Daemon>,
    dir: std::path::PathBuf,
}

pub const PRINCIPALS: [(&str, &str); 2] = [("ops", "s3cret-ops"), ("dev", "s3cret-dev")];
/// The agents' principal (in the master's credentials too).
const AGENT_PRINCIPAL: (&str, &str) = ("agent", "s3cret-agent");

impl SecuredMaster {
    pub fn start(name: &str) -> SecuredMaster {
        let dir = fresh_scratch(&format!("mesos-{name}"));
        std::fs::create_dir_all(&dir).expect("scratch");
        let credentials = dir.join("credentials.json");
        let entries: Vec<serde_json::Value> = PRINCIPALS
            .iter()
            .chain([&AGENT_PRINCIPAL])
            .map(|(p, s)| serde_json::json!({"principal": p, "secret": s}))
            .collect();
        std::fs::write(
            &credentials,
            serde_json::json!({ "credentials": entries }).to_string(),
        )
        .expect("write the credentials");
        let port = free_port();
        let args: Vec<String> = [
            "master",
            "--ip",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--work-dir",
            dir.join("master").to_str().unwrap_or_default(),
            "--credentials",
            credentials.to_str().unwrap_or_default(),
            "--authenticate-http-frameworks",
            "--authenticate-http-readonly",
            "--authenticate-http-readwrite",
            "--authenticate-agents",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let master = Daemon::start("master", port, dir.join("master"), &args);
        let master_address = format!("127.0.0.1:{port}");
        // Mesos' text form of an agent's --credential.
        let credential = dir.join("agent-credential");
        let (agent, agent_secret) = AGENT_PRINCIPAL;
        std::fs::write(&credential, format!("{agent} {agent_secret}\n")).expect("credential");
        let agents = (1..=2)
            .map(|i| {
                let path = credential.to_str().unwrap_or_default();
                start_agent_with(&dir, i, &master_address, &["--credential", path])
            })
            .collect();
        let (principal, secret) = PRINCIPALS[0];
        let registered = wait_until(60, || {
            http_get_as(port, "/master/state", principal, secret)
                .is_some_and(|(_, text)| text.contains("\"activated_slaves\":2"))
        });
        assert!(registered, "the agents did not register: {}", master.log());
        SecuredMaster {
            master,
            _agents: agents,
            dir,
        }
    }
}

/// A master with `--authenticate-agents` admits the agents that prove the agents' secret (the
/// two of [`SecuredMaster`]), and neither one with a wrong secret nor one without a credential:
/// both keep trying, both say why in their logs, and the master's state never lists them.
#[test]
fn a_master_that_authenticates_agents_admits_only_those_with_the_secret() {
    let secured = SecuredMaster::start("agent-auth");
    let port = secured.master.port;
    let master = format!("127.0.0.1:{port}");
    let wrong = secured.dir.join("wrong-credential");
    std::fs::write(
        &wrong,
        serde_json::json!({"principal": AGENT_PRINCIPAL.0, "secret": "guessed"}).to_string(),
    )
    .expect("credential");
    let guesser = start_agent_with(
        &secured.dir,
        3,
        &master,
        &["--credential", wrong.to_str().unwrap_or_default()],
    );
    let stranger = start_agent(&secured.dir, 4, &master);
    let refused = wait_until(90, || {
        guesser
            .log()
            .contains("the master did not accept this agent's credential")
            && stranger
                .log()
                .contains("the master requires this agent to authenticate")
    });
    assert!(
        refused,
        "--- guesser\n{}\n--- stranger\n{}",
        tail(&guesser.log(), 2000),
        tail(&stranger.log(), 2000)
    );
    assert!(
        secured
            .master
            .log()
            .contains("an agent did not authenticate"),
        "{}",
        tail(&secured.master.log(), 3000)
    );
    let (principal, secret) = PRINCIPALS[0];
    let (status, text) = http_get_as(port, "/master/state", principal, secret).expect("state");
    assert_eq!(status, 200);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let state: serde_json::Value = serde_json::from_str(body).expect("state JSON");
    let mut hosts: Vec<&str> = state["slaves"]
        .as_array()
        .expect("slaves")
        .iter()
        .filter_map(|a| a["hostname"].as_str())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["od1000-1", "od1000-2"], "{text}");
}

#[test]
fn a_master_that_authenticates_serves_only_proven_principals() -> Result<(), String> {
    if let Some(missing) = pymesos_missing() {
        return skip_or_fail("authenticated pymesos against drover", &[missing]);
    }
    let secured = SecuredMaster::start("auth");
    let master = format!("127.0.0.1:{}", secured.master.port);
    let ((principal, secret), (other, other_secret)) = (PRINCIPALS[0], PRINCIPALS[1]);
    let run = |script: &str, args: &[&str]| -> Result<(), String> {
        let mut cmd = Command::new(python());
        cmd.arg(root().join("tests/mesos").join(script))
            .arg(&master)
            .args(args);
        let ran = run_limited(cmd, script, 150)?;
        if !ran.ok() {
            return Err(format!(
                "{}\n--- master\n{}",
                ran.describe(script),
                tail(&secured.master.log(), 3000)
            ));
        }
        println!("{}", ran.stdout);
        Ok(())
    };
    // The negatives (and pymesos without, or with a wrong, secret), with the standard library.
    run(
        "auth_check.py",
        &[
            "--principal",
            principal,
            "--secret",
            secret,
            "--other-principal",
            other,
            "--other-secret",
            other_secret,
        ],
    )?;
    // A framework that proves its principal runs its tasks as on an open master.
    run(
        "pymesos_check.py",
        &[
            "--agents",
            "2",
            "--timeout",
            "90",
            "--principal",
            other,
            "--secret",
            other_secret,
        ],
    )
}

#[test]
fn the_master_answers_bad_requests_and_keeps_serving() {
    let dir = fresh_scratch("mesos-bad");
    let port = free_port();
    let args: Vec<String> = [
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--work-dir",
        dir.to_str().unwrap_or_default(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let master = Daemon::start("master", port, dir.clone(), &args);
    let post = |body: &str, extra: &str| -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "POST /api/v1/scheduler HTTP/1.0\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("write");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    };
    let answer = post("{\"type\": \"LAUNCH_ALL\"}", "");
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    assert!(
        answer.contains("at `type`: unknown variant `LAUNCH_ALL`"),
        "{answer}"
    );
    let answer = post("{not json", "");
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
    let answer = post(
        "{\"type\": \"DECLINE\", \"framework_id\": {\"value\": \"nope\"}, \"decline\": {\"offer_ids\": []}}",
        "Mesos-Stream-Id: x\r\n",
    );
    assert!(answer.starts_with("HTTP/1.0 403"), "{answer}");
    // Garbage where an agent's frame is expected: that connection closes, the master serves on.
    let mut raw = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    raw.write_all(&[0, 0, 0, 5, 9, 9, 9, 9, 9]).expect("write");
    let mut rest = Vec::new();
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = raw.read_to_end(&mut rest);
    let (status, text) = http_get(port, "/version").expect("the master still serves");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"version\":\"1.11.0\""), "{text}");
    let (status, _) = http_get(port, "/health").expect("health");
    assert_eq!(status, 200);
    drop(master);
}

/// What the Docker test's agent leaves on the engine, removed when the test ends, however it ends:
/// its containers (named after it; the agent is killed), then its tasks' network.
struct DockerLeftovers {
    agent_port: u16,
    network: String,
}

impl Drop for DockerLeftovers {
    fn drop(&mut self) {
        let port = self.agent_port;
        let _ = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("docker ps -aq --filter name=drover-127.0.0.1_{port}- | xargs -r docker rm -f >/dev/null"),
            ])
            .status();
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

/// A container task through a live master and agent (Docker containerizer, the real engine, a
/// busybox image imported here since no registry is reachable), driven by drover's own v1
/// client: the task sees `PORT0` and finishes; one whose image cannot be pulled fails with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_task_runs_through_master_and_agent() -> Result<(), String> {
    use drover_core::task::TaskState;
    use drover_core::v1::{self, CallType, EventType, FrameworkInfo, Id};
    use drover_master::client::{Driver, DriverEvent, Locator};

    const IMAGE: &str = "drover-test-busybox:1";
    if let Err(e) = drover_agent::containerizer::live::docker::import_busybox_image(IMAGE) {
        return skip_or_fail("docker task through the agent", &[e]);
    }
    let dir = fresh_scratch("mesos-docker");
    let master_port = free_port();
    let master_args: Vec<String> = [
        "master",
        "--ip",
        "127.0.0.1",
        "--port",
        &master_port.to_string(),
        "--work-dir",
        dir.join("master").to_str().unwrap_or_default(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let master = Daemon::start("master", master_port, dir.join("master"), &master_args);
    let agent_port = free_port();
    // The tasks' network, the test's own: the agent makes it, the test removes it.
    let network = format!("drover-test-mesos-{}", std::process::id());
    let _left = DockerLeftovers {
        agent_port,
        network: network.clone(),
    };
    let agent_args: Vec<String> = [
        "agent",
        "--ip",
        "127.0.0.1",
        "--port",
        &agent_port.to_string(),
        "--hostname",
        "127.0.0.1",
        "--master",
        &format!("127.0.0.1:{master_port}"),
        "--resources",
        "cpus:2;mem:1024;disk:1000;ports:[31000-31010]",
        "--containerizers",
        "mesos,docker",
        "--docker-network",
        &network,
        "--work-dir",
        dir.join("agent").to_str().unwrap_or_default(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = match std::panic::catch_unwind(|| {
        Daemon::start("agent", agent_port, dir.join("agent"), &agent_args)
    }) {
        Ok(agent) => agent,
        Err(_) => {
            return skip_or_fail(
                "docker task through the agent",
                &["an agent with the docker containerizer (is the engine up?)".into()],
            )
        }
    };
    let env = drover_core::env::live::env("test-framework", dir.join("framework"), Some(7));
    let info = FrameworkInfo {
        user: "root".into(),
        name: "drover-docker-check".into(),
        ..FrameworkInfo::default()
    };
    let locator: Locator = format!("127.0.0.1:{master_port}").parse()?;
    let (driver, mut events) = Driver::start(env, locator, info);
    let docker_task = |id: &str, image: &str, command: &str, offer: &v1::Offer| {
        let resources: drover_core::Resources = "cpus:0.1;mem:32;ports:[31005-31005]"
            .parse()
            .expect("resources");
        v1::TaskInfo {
            name: id.into(),
            task_id: Id::new(id),
            agent_id: offer.agent_id.clone(),
            resources: v1::to_mesos(&resources, Some("*")),
            command: Some(v1::CommandInfo {
                value: Some(command.into()),
                shell: Some(true),
                ..v1::CommandInfo::default()
            }),
            container: Some(serde_json::json!({
                "type": "DOCKER",
                "docker": {"image": image, "network": "BRIDGE",
                           "port_mappings": [{"host_port": 31005, "container_port": 8080, "protocol": "tcp"}]}
            })),
            labels: None,
            health_check: None,
            kill_policy: None,
        }
    };
    let mut launched = false;
    let mut addresses: Vec<String> = Vec::new();
    let mut seen: std::collections::BTreeMap<String, Vec<(TaskState, String)>> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen
        .get("ok")
        .is_none_or(|s| !s.iter().any(|(st, _)| st.is_terminal()))
        || seen
            .get("nopull")
            .is_none_or(|s| !s.iter().any(|(st, _)| st.is_terminal()))
    {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| {
                format!(
                    "timed out; seen {seen:?}\n{}\n{}",
                    master.log(),
                    agent.log()
                )
            })?
            .ok_or("the driver stopped")?;
        let DriverEvent::Event(event) = event else {
            continue;
        };
        match event.kind {
            EventType::Offers if !launched => {
                let offer = event
                    .offers
                    .and_then(|o| o.offers.into_iter().next())
                    .ok_or("empty offers")?;
                let mut call = Driver::bare(CallType::Accept);
                call.accept = Some(v1::Accept {
                    offer_ids: vec![offer.id.clone()],
                    operations: vec![v1::Operation {
                        kind: "LAUNCH".into(),
                        launch: Some(v1::Launch {
                            task_infos: vec![
                                docker_task(
                                    "ok",
                                    IMAGE,
                                    // Alive for a moment: a container that has already exited
                                    // has no address left to report.
                                    "test \"$PORT0\" = 31005 && test \"$PORT\" = 31005 && sleep 2",
                                    &offer,
                                ),
                                v1::TaskInfo {
                                    resources: v1::to_mesos(
                                        &"cpus:0.1;mem:32".parse().expect("r"),
                                        Some("*"),
                                    ),
                                    container: Some(
                                        serde_json::json!({"type": "DOCKER", "docker": {"image": "drover-no-such-image:1"}}),
                                    ),
                                    ..docker_task("nopull", IMAGE, "true", &offer)
                                },
                            ],
                        }),
                    }],
                    filters: None,
                });
                driver.call(call).await.map_err(|e| e.to_string())?;
                launched = true;
            }
            EventType::Update => {
                let status = event.update.ok_or("update without status")?.status;
                if status.state == TaskState::TaskRunning {
                    addresses.extend(
                        status
                            .container_status
                            .as_ref()
                            .map(|c| c.addresses())
                            .unwrap_or_default(),
                    );
                }
                seen.entry(status.task_id.value.clone())
                    .or_default()
                    .push((status.state, status.message.clone().unwrap_or_default()));
                driver
                    .acknowledge(&status)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
    let ok: Vec<TaskState> = seen["ok"].iter().map(|(s, _)| *s).collect();
    assert_eq!(
        ok,
        vec![TaskState::TaskRunning, TaskState::TaskFinished],
        "{seen:?}"
    );
    let (state, message) = seen["nopull"]
        .last()
        .cloned()
        .unwrap_or((TaskState::TaskStaging, String::new()));
    assert_eq!(state, TaskState::TaskFailed, "{seen:?}");
    assert!(message.contains("drover-no-such-image:1"), "{message}");
    // The running container's address on the agent's network came with its TASK_RUNNING.
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert!(
        addresses[0].parse::<std::net::Ipv4Addr>().is_ok(),
        "{addresses:?}"
    );
    drop(agent);
    drop(master);
    Ok(())
}

#[test]
fn marathon_with_http_credentials_runs_apps_on_a_master_that_authenticates() -> Result<(), String> {
    const TEST: &str = "the marathon client against a scheduler with --http-credentials";
    let mut import = Command::new(python());
    import.args(["-c", "import marathon"]);
    if !run_limited(import, "marathon-import", 60).is_ok_and(|r| r.ok()) {
        return skip_or_fail(
            TEST,
            &[format!(
                "the marathon client for {} (pip install marathon==0.13.0)",
                python()
            )],
        );
    }
    let secured = SecuredMaster::start("marathon-auth");
    let coord = DroverCoord::start("marathon-auth", 1);
    let dir = fresh_scratch("marathon-auth");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (principal, secret) = PRINCIPALS[0];
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, format!("{secret}\n")).map_err(|e| e.to_string())?;
    // Two schedulers: the one that does not lead forwards the caller's credentials.
    let schedulers: Vec<Daemon> = (1..=2)
        .map(|i| {
            let port = free_port();
            let args: Vec<String> = [
                "scheduler",
                "--master",
                &format!("127.0.0.1:{}", secured.master.port),
                "--zk",
                &format!("zk://{principal}:{secret}@{}/marathon-auth", coord.hosts()),
                "--ip",
                "127.0.0.1",
                "--http-port",
                &port.to_string(),
                "--http-credentials",
                &format!("{principal}:{secret}"),
                "--mesos-authentication-principal",
                principal,
                "--mesos-authentication-secret-file",
                secret_file.to_str().unwrap_or_default(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Daemon::start(
                &format!("scheduler-{i}"),
                port,
                dir.join(format!("scheduler-{i}")),
                &args,
            )
        })
        .collect();
    let logs = || {
        schedulers
            .iter()
            .chain([&secured.master])
            .map(|d| format!("--- {}\n{}", d.name, tail(&d.log(), 3000)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The leader: its /v2/info says elected, with its framework registered at the master.
    let mut leader = None;
    wait_until(90, || {
        leader = schedulers.iter().position(|s| {
            http_get_as(s.port, "/v2/info", principal, secret).is_some_and(|(status, text)| {
                status == 200
                    && text.contains("\"elected\":true")
                    && text.contains(&format!("127.0.0.1:{}", s.port))
                    && !text.contains("\"frameworkId\":null")
            })
        });
        leader.is_some()
    });
    let leader = leader.ok_or_else(|| format!("no scheduler leads:\n{}", logs()))?;
    let mut check = Command::new(python());
    check
        .arg(root().join("tests/marathon/auth_check.py"))
        .arg(format!("http://127.0.0.1:{}", schedulers[leader].port))
        .arg(format!("http://127.0.0.1:{}", schedulers[1 - leader].port))
        .args(["--username", principal, "--password", secret]);
    let ran = run_limited(check, "marathon-auth-check", 240)?;
    if !ran.ok() {
        return Err(format!("{}\n{}", ran.describe("auth_check.py"), logs()));
    }
    println!("{}", ran.stdout);
    // The schedulers' state in coord, created through zk://USER:PASSWORD@, is theirs alone
    // (Marathon's CREATOR_ALL): kazoo without the digest is refused, with it reads.
    let script = r#"
import sys
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
hosts, creds = sys.argv[1], sys.argv[2]
anon = KazooClient(hosts=hosts); anon.start(timeout=30)
try:
    anon.get_children("/marathon-auth")
    print("FAIL: read without the digest")
    sys.exit(1)
except NoAuthError:
    print("ok: NoAuth without the digest")
owner = KazooClient(hosts=hosts, auth_data=[("digest", creds)]); owner.start(timeout=30)
acls, _ = owner.get_acls("/marathon-auth")
print("ok: children %s, ACL %s" % (sorted(owner.get_children("/marathon-auth")),
      [(a.perms, a.id.scheme, a.id.id.split(":")[0]) for a in acls]))
assert [(a.perms, a.id.scheme) for a in acls] == [(31, "digest")], acls
for c in (anon, owner):
    c.stop(); c.close()
"#;
    let mut kazoo = Command::new(python());
    kazoo
        .args(["-c", script, &coord.hosts()])
        .arg(format!("{principal}:{secret}"));
    let ran = run_limited(kazoo, "kazoo-acl", 90)?;
    if !ran.ok() {
        return Err(format!(
            "{}\n{}",
            ran.describe("the kazoo ACL check"),
            logs()
        ));
    }
    println!("{}", ran.stdout);
    Ok(())
}
