//! The seed story, live: `drover up` as a child process (coord, master, two agents and the
//! scheduler in one process, on free loopback ports), driven over HTTP like the seed's curl.
//!
//! - with Docker: `apps/basic.json` posted verbatim to `/v2/groups`; group2's tasks are staged
//!   only after both of group1's run; each app's two instances are on different agents; a PUT
//!   scales group2's app to 3;
//! - without Docker: the same groups with their containers taken out (the tasks are processes);
//! - the real `marathon` Python client (`tests/marathon/marathon_check.py`) against it.
//!
//! Each test stops its cluster with SIGINT (Ctrl-C) and checks that no task outlives it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::mesos_live::wait_until;
use crate::root;
use crate::wire_zk::{free_port, fresh_scratch, python, run_limited, skip_or_fail};

/// How long `drover up` may take to say it is ready (it waits for the agents and the framework).
const READY_SECS: u64 = 180;
/// How long the tasks of a deployment may take to run.
const RUNNING_SECS: u64 = 180;
/// The seed's image. No registry is reachable, so the Docker test makes a tiny local busybox
/// image under this tag (it only runs `sleep`), unless the engine already has one.
pub(crate) const SEED_IMAGE: &str = "ubuntu:16.04";
/// Where the scheduler still differs from Marathon in a way the `marathon` client notices
/// (the gaps `tests/marathon/marathon_check.py` knows): none today. Two found by this test were
/// fixed (task JSON with `agentId`; `True` in boolean query parameters); list a gap here only
/// while its fix is under way.
const KNOWN_SCHEDULER_GAPS: &[&str] = &[];

/// The seed's image, shared by the tests of this process: the first that needs it makes it
/// (from busybox) unless the engine has one; the last done with it removes it if it was made
/// here. Tests run in parallel: one must not remove it under another.
pub(crate) struct SeedImage;

static SEED_IMAGE_USERS: std::sync::Mutex<(usize, bool)> = std::sync::Mutex::new((0, false));

impl SeedImage {
    pub(crate) fn ensure() -> Result<SeedImage, String> {
        let mut users = SEED_IMAGE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        if users.0 == 0 {
            let had = Command::new("docker")
                .args(["image", "inspect", SEED_IMAGE])
                .output()
                .is_ok_and(|o| o.status.success());
            drover_agent::containerizer::live::docker::import_busybox_image(SEED_IMAGE)?;
            users.1 = !had;
        }
        users.0 += 1;
        Ok(SeedImage)
    }
}

impl Drop for SeedImage {
    fn drop(&mut self) {
        let mut users = SEED_IMAGE_USERS.lock().unwrap_or_else(|e| e.into_inner());
        users.0 -= 1;
        if users.0 == 0 && users.1 {
            let _ = Command::new("docker")
                .args(["image", "rm", SEED_IMAGE])
                .output();
            users.1 = false;
        }
    }
}

/// The Docker network of a test's cluster.
pub(crate) fn network_of(name: &str) -> String {
    format!("drover-test-{name}-{}", std::process::id())
}

/// `drover up` in its own process group, stopped (SIGINT, then SIGKILL) when dropped.
pub(crate) struct Up {
    child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) http_port: u16,
    pub(crate) master_port: u16,
    agent_ports: [u16; 2],
    name: String,
}

impl Up {
    /// Starts the cluster and waits for its banner. `Err` when `up` exits or never gets ready.
    pub(crate) fn start(name: &str, docker: bool) -> Result<Up, String> {
        Up::start_with(name, docker, &[])
    }

    /// `start`, with more arguments for `drover up`.
    pub(crate) fn start_with(name: &str, docker: bool, extra: &[&str]) -> Result<Up, String> {
        let dir = fresh_scratch(&format!("up-{name}"));
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let mut args: Vec<String> = [
            "up",
            "--coord-port",
            &ports[0].to_string(),
            "--master-port",
            &ports[1].to_string(),
            "--agent-ports",
            &format!("{},{}", ports[2], ports[3]),
            "--http-port",
            &ports[4].to_string(),
            "--work-dir",
            dir.join("work").to_str().unwrap_or_default(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !docker {
            args.push("--no-docker".into());
            // DNS's port 53 is the Docker test's (containers ask port 53 of their gateway).
            args.extend(["--dns-port".into(), "0".into()]);
        }
        // A network of the test's own, which `up` makes for the tasks and removes at the end.
        args.extend(["--docker-network".into(), network_of(name)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = File::create(dir.join("log")).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start drover up: {e}"))?;
        let mut up = Up {
            child: Some(child),
            dir,
            http_port: ports[4],
            master_port: ports[1],
            agent_ports: [ports[2], ports[3]],
            name: name.to_string(),
        };
        let ready = wait_until(READY_SECS, || {
            up.log().contains("the cluster is ready") || up.exited()
        });
        if !ready || up.exited() {
            return Err(format!("drover up did not get ready:\n{}", up.log()));
        }
        Ok(up)
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The last lines of the log, for failure messages.
    pub(crate) fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Value), String> {
        request(self.http_port, method, path, body)
            .map_err(|e| format!("{method} {path}: {e}\n{}", self.tail()))
    }

    /// The tasks of the cluster (`GET /v2/tasks`).
    fn tasks(&self) -> Vec<Value> {
        match self.request("GET", "/v2/tasks", None) {
            Ok((200, body)) => body["tasks"].as_array().cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Waits until `app` has exactly `count` tasks, all TASK_RUNNING; returns every task.
    pub(crate) fn wait_running(&self, apps: &[(&str, usize)]) -> Result<Vec<Value>, String> {
        let mut tasks = Vec::new();
        let ok = wait_until(RUNNING_SECS, || {
            tasks = self.tasks();
            apps.iter().all(|(app, count)| {
                let of_app: Vec<&Value> = tasks.iter().filter(|t| t["appId"] == *app).collect();
                of_app.len() == *count && of_app.iter().all(|t| t["state"] == "TASK_RUNNING")
            })
        });
        if ok {
            Ok(tasks)
        } else {
            Err(format!(
                "not running as {apps:?}: {}\nqueue: {:?}\n{}",
                serde_json::to_string_pretty(&tasks).unwrap_or_default(),
                self.request("GET", "/v2/queue", None).map(|r| r.1),
                self.tail()
            ))
        }
    }

    /// SIGINT, as Ctrl-C would send; SIGKILL to the group after 60 s. Returns the exit status
    /// (`None`: it had to be killed).
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "INT");
        let mut status = None;
        wait_until(60, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -KILL -- -{} 2>/dev/null", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// The containers the cluster's agents started and left (by the agent label drover puts
    /// on them).
    fn containers_left(&self) -> Vec<String> {
        let mut left = Vec::new();
        for (i, port) in self.agent_ports.into_iter().enumerate() {
            let listed = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=drover.agent=od1000-{i}:{port}"),
                ])
                .output();
            if let Ok(listed) = listed {
                left.extend(
                    String::from_utf8_lossy(&listed.stdout)
                        .split_whitespace()
                        .map(str::to_string),
                );
            }
        }
        left
    }

    /// The task processes still alive: the pids in the agents' task checkpoints.
    fn processes_left(&self) -> Vec<i64> {
        let mut left = Vec::new();
        for agent in ["od1000-0", "od1000-1"] {
            let journal = self.dir.join("work").join(agent).join("meta/agent/journal");
            let bytes = std::fs::read(&journal).unwrap_or_default();
            let (journal, _) = drover_agent::journal::Journal::replay(&bytes);
            for (_, data) in journal.under(drover_agent::checkpoint::TASKS_PREFIX) {
                let Ok(checkpoint) = serde_json::from_slice::<Value>(data) else {
                    continue;
                };
                let handle = &checkpoint["handle"];
                let Some(pid) = handle["pid"]
                    .as_i64()
                    .filter(|_| handle["kind"] == "process")
                else {
                    continue;
                };
                if alive(pid) {
                    left.push(pid);
                }
            }
        }
        left
    }

    /// Stops the cluster and checks that its tasks went with it; removes whatever was left.
    pub(crate) fn stop_and_check(mut self, docker: bool) -> Result<(), String> {
        let status = self.stop();
        let containers = if docker {
            self.containers_left()
        } else {
            Vec::new()
        };
        let processes = self.processes_left();
        for container in &containers {
            let _ = Command::new("docker")
                .args(["rm", "-f", container])
                .output();
        }
        for pid in &processes {
            signal_group(*pid);
        }
        if !status.is_some_and(|s| s.success()) {
            return Err(format!(
                "drover up did not stop cleanly on SIGINT ({status:?}):\n{}",
                self.tail()
            ));
        }
        if !containers.is_empty() || !processes.is_empty() {
            return Err(format!(
                "tasks outlived the cluster: containers {containers:?}, processes {processes:?}\n{}",
                self.tail()
            ));
        }
        if docker {
            let network = network_of(&self.name);
            let left = Command::new("docker")
                .args(["network", "inspect", &network])
                .output()
                .is_ok_and(|o| o.status.success());
            if left {
                let _ = Command::new("docker")
                    .args(["network", "rm", &network])
                    .output();
                return Err(format!("the tasks' network {network} outlived the cluster"));
            }
        }
        Ok(())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
            for container in self.containers_left() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", &container])
                    .output();
            }
            for pid in self.processes_left() {
                signal_group(pid);
            }
        }
    }
}

fn signal(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -{signal} {pid} 2>/dev/null")])
        .status();
}

fn signal_group(pid: i64) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -KILL -- -{pid} 2>/dev/null")])
        .status();
}

/// One HTTP/1.0 exchange with a JSON body on 127.0.0.1: the status and the JSON answer.
fn request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    http_json(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        method,
        path,
        body,
    )
}

/// One HTTP/1.0 exchange with a JSON body: the status and the JSON answer (`null` if none).
pub(crate) fn http_json(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, Value), String> {
    http_json_as(address, method, path, body, None)
}

/// [`http_json`] with HTTP Basic credentials (`user:password`) when given.
pub(crate) fn http_json_as(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    basic: Option<&str>,
) -> Result<(u16, Value), String> {
    let authorization = basic
        .and_then(|b| b.split_once(':'))
        .map(|(user, password)| {
            let value = drover_core::auth::authorization(user, password);
            format!("Authorization: {}\r\n", value.to_str().unwrap_or_default())
        })
        .unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\n{authorization}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
    let answer = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(answer).unwrap_or(Value::Null)))
}

/// Whether process `pid` runs (exists and is neither a zombie nor dead), from `/proc/PID/stat`.
pub(crate) fn alive(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.trim().to_string())
        .is_some_and(|s| !s.starts_with('Z') && !s.starts_with('X'))
}

/// The seed's app definition, as the repository has it.
pub(crate) fn seed_groups() -> String {
    std::fs::read_to_string(root().join("apps/basic.json")).expect("read apps/basic.json")
}

/// The seed's checks on the four running tasks: group2 staged after group1 ran, and each app's
/// instances on two agents.
fn check_order_and_spread(tasks: &[Value]) -> Result<(), String> {
    let of = |app: &str| -> Vec<&Value> { tasks.iter().filter(|t| t["appId"] == app).collect() };
    let group1 = of("/arm-demo/group1/ubuntu1");
    let group2 = of("/arm-demo/group2/ubuntu2");
    let time = |task: &Value, key: &str| -> Result<String, String> {
        task[key]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("task without {key}: {task}"))
    };
    // Marathon's timestamps are ISO 8601 in UTC with milliseconds, so they order as text.
    let mut group1_started = Vec::new();
    for task in &group1 {
        group1_started.push(time(task, "startedAt")?);
    }
    let last_group1_start = group1_started.iter().max().cloned().unwrap_or_default();
    for task in &group2 {
        let staged = time(task, "stagedAt")?;
        assert_eq!(
            staged.len(),
            last_group1_start.len(),
            "{staged} {last_group1_start}"
        );
        if staged < last_group1_start {
            return Err(format!(
                "group2's task {} was staged at {staged}, before group1's tasks ran ({group1_started:?})",
                task["id"]
            ));
        }
    }
    // What the seed's user looks at: each app's two instances on od1000-0 and od1000-1.
    for (app, tasks) in [("group1", &group1), ("group2", &group2)] {
        let hosts: std::collections::BTreeSet<&str> =
            tasks.iter().filter_map(|t| t["host"].as_str()).collect();
        let expected: std::collections::BTreeSet<&str> = ["od1000-0", "od1000-1"].into();
        if hosts != expected {
            return Err(format!(
                "{app}'s instances are not on od1000-0 and od1000-1: {hosts:?} ({tasks:?})"
            ));
        }
    }
    Ok(())
}

/// POST the groups, wait for the four tasks, check order and spread, scale group2 to 3.
fn seed_story(up: &Up, groups: &str) -> Result<(), String> {
    let (status, answer) = up.request("POST", "/v2/groups", Some(groups))?;
    if status != 201 {
        return Err(format!("POST /v2/groups: {status} {answer}"));
    }
    let tasks = up.wait_running(&[
        ("/arm-demo/group1/ubuntu1", 2),
        ("/arm-demo/group2/ubuntu2", 2),
    ])?;
    check_order_and_spread(&tasks)?;
    let (status, answer) = up.request(
        "PUT",
        "/v2/apps/arm-demo/group2/ubuntu2",
        Some(r#"{"instances":3}"#),
    )?;
    if status != 200 || !answer["deploymentId"].is_string() {
        return Err(format!("PUT instances 3: {status} {answer}"));
    }
    up.wait_running(&[
        ("/arm-demo/group1/ubuntu1", 2),
        ("/arm-demo/group2/ubuntu2", 3),
    ])?;
    Ok(())
}

/// The seed's last step: from inside an ubuntu2 container, `nslookup ubuntu1` and `nslookup
/// ubuntu1.weave.local` answer both ubuntu1 addresses (the ones `/v2/tasks` gives), in both orders
/// over twenty queries, and every container's address answers `ping`.
fn dns_story(up: &Up) -> Result<(), String> {
    if !up.log().contains("dns       udp") {
        return Err(format!("drover up runs no DNS:\n{}", up.tail()));
    }
    let (_, answer) = up.request("GET", "/v2/tasks", None)?;
    let tasks: Vec<Value> = answer["tasks"].as_array().cloned().unwrap_or_default();
    let addresses = |app: &str| -> Vec<String> {
        let mut ips: Vec<String> = tasks
            .iter()
            .filter(|t| t["appId"] == app)
            .filter_map(|t| {
                t["ipAddresses"][0]["ipAddress"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        ips.sort();
        ips
    };
    let ubuntu1 = addresses("/arm-demo/group1/ubuntu1");
    let ubuntu2 = addresses("/arm-demo/group2/ubuntu2");
    if ubuntu1.len() != 2 || ubuntu2.len() != 3 {
        return Err(format!(
            "ipAddresses: ubuntu1 {ubuntu1:?}, ubuntu2 {ubuntu2:?}"
        ));
    }
    let inside = tasks
        .iter()
        .find(|t| t["appId"] == "/arm-demo/group2/ubuntu2")
        .and_then(|t| t["id"].as_str())
        .ok_or("no ubuntu2 task")?;
    let listed = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=drover.task={inside}"),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let container = String::from_utf8_lossy(&listed.stdout).trim().to_string();
    let exec = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("docker")
            .args(["exec", &container])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "{args:?} in {container}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    for name in ["ubuntu1", "ubuntu1.weave.local"] {
        let mut orders = std::collections::BTreeSet::new();
        for _ in 0..20 {
            // A resolver asks again when an answer is lost (UDP): so does the test, twice.
            let said = exec(&["nslookup", name])
                .or_else(|_| exec(&["nslookup", name]))
                .or_else(|_| exec(&["nslookup", name]))?;
            // The answer's addresses come after its `Name:` line (the server's before it).
            let answered: Vec<String> = said
                .split_once("Name:")
                .map(|(_, answer)| answer)
                .unwrap_or("")
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect();
            let mut sorted = answered.clone();
            sorted.sort();
            if sorted != ubuntu1 {
                return Err(format!(
                    "nslookup {name} answered {answered:?}, not {ubuntu1:?}:\n{said}"
                ));
            }
            orders.insert(answered);
        }
        if orders.len() < 2 {
            return Err(format!(
                "twenty answers for {name} came in one order: {orders:?}"
            ));
        }
    }
    for ip in ubuntu1.iter().chain(&ubuntu2) {
        // Any of three echoes answered (ping's own rule for success).
        exec(&["ping", "-c", "3", "-W", "3", ip])?;
    }
    // Mesos-DNS' HTTP API says the same.
    let (status, hosts) = request(
        8123,
        "GET",
        "/v1/hosts/ubuntu1-group1-arm-demo.marathon.mesos",
        None,
    )?;
    let mut listed: Vec<String> = hosts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["ip"].as_str().map(str::to_string))
        .collect();
    listed.sort();
    if status != 200 || listed != ubuntu1 {
        return Err(format!("/v1/hosts: {status} {hosts}"));
    }
    // The master it follows is leader.mesos.
    let (_, leader) = request(8123, "GET", "/v1/hosts/leader.mesos", None)?;
    if leader[0]["ip"] != "127.0.0.1" {
        return Err(format!("/v1/hosts/leader.mesos: {leader}"));
    }
    Ok(())
}

#[test]
fn the_seed_groups_deploy_in_dependency_order_on_two_agents_with_docker() -> Result<(), String> {
    const TEST: &str = "the seed's apps/basic.json through drover up";
    let image = match SeedImage::ensure() {
        Ok(image) => image,
        Err(e) => return skip_or_fail(TEST, &[e]),
    };
    let up = Up::start("seed-docker", true)?;
    if !up.log().contains("processes and Docker containers") {
        let why = format!("a Docker engine answering drover up:\n{}", up.tail());
        drop(up);
        return skip_or_fail(TEST, &[why]);
    }
    let story = seed_story(&up, &seed_groups()).and_then(|()| dns_story(&up));
    let stopped = up.stop_and_check(true);
    drop(image);
    story?;
    stopped
}

#[test]
fn the_seed_groups_deploy_as_processes_without_docker() -> Result<(), String> {
    // The seed's groups with their containers taken out: the same story with `sleep` processes.
    let mut groups: Value = serde_json::from_str(&seed_groups()).map_err(|e| e.to_string())?;
    for group in groups["groups"].as_array_mut().ok_or("no groups")? {
        for app in group["apps"].as_array_mut().ok_or("no apps")? {
            app.as_object_mut().ok_or("app")?.remove("container");
        }
    }
    let up = Up::start("seed-processes", false)?;
    let story = seed_story(&up, &groups.to_string());
    // A process task sees what Mesos and Marathon give it, where it can reach its agent.
    let environment = story.as_ref().ok().map(|()| sandbox_environment(&up));
    let stopped = up.stop_and_check(false);
    story?;
    if let Some(environment) = environment {
        let environment = environment?;
        for expected in [
            // Marathon's HOST: the agent's host name.
            "HOST=od1000-",
            "MARATHON_APP_ID=/arm-demo/group1/ubuntu1",
            "PATH=",
        ] {
            if !environment.lines().any(|l| l.starts_with(expected)) {
                return Err(format!(
                    "a task's environment lacks {expected}:\n{environment}"
                ));
            }
        }
    }
    stopped
}

/// The environment of one of group1's running processes (from /proc).
fn sandbox_environment(up: &Up) -> Result<String, String> {
    let sandboxes = up.dir.join("work").join("od1000-0").join("sandboxes");
    let entries =
        std::fs::read_dir(&sandboxes).map_err(|e| format!("{}: {e}", sandboxes.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // `/proc/<pid>/environ` of a process whose working directory is a group1 sandbox.
    for proc_entry in std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let path = proc_entry.path();
        let Ok(cwd) = std::fs::read_link(path.join("cwd")) else {
            continue;
        };
        if cwd.starts_with(&sandboxes) && cwd.to_string_lossy().contains("group1") {
            let environ = std::fs::read(path.join("environ")).unwrap_or_default();
            return Ok(String::from_utf8_lossy(&environ).replace('\0', "\n"));
        }
    }
    Err(format!(
        "no process runs in a group1 sandbox of od1000-0 ({names:?})"
    ))
}

#[test]
fn the_marathon_python_client_drives_drover_up() -> Result<(), String> {
    const TEST: &str = "the marathon client against drover up";
    let mut import = Command::new(python());
    import.args(["-c", "import marathon"]);
    match run_limited(import, "marathon-import", 60) {
        Ok(r) if r.ok() => {}
        _ => {
            return skip_or_fail(
                TEST,
                &[format!(
                    "the marathon client for {} (pip install marathon==0.13.0)",
                    python()
                )],
            )
        }
    }
    let up = Up::start("marathon-client", false)?;
    let mut check = Command::new(python());
    check
        .arg(root().join("tests/marathon/marathon_check.py"))
        .arg(format!("http://127.0.0.1:{}", up.http_port))
        .args(["--timeout", "240"]);
    for gap in KNOWN_SCHEDULER_GAPS {
        check.args(["--tolerate", gap]);
    }
    let ran = run_limited(check, "marathon-check", 300)?;
    let outcome = if ran.ok() {
        println!("{}", ran.stdout);
        Ok(())
    } else {
        Err(format!(
            "{}\n--- drover up\n{}",
            ran.describe("marathon_check.py"),
            up.tail()
        ))
    };
    let stopped = up.stop_and_check(false);
    outcome?;
    stopped
}

#[test]
fn a_secure_cluster_answers_only_callers_with_its_credentials() -> Result<(), String> {
    let up = Up::start_with("secure", false, &["--secure"])?;
    let checked = (|| {
        let work = up.dir.join("work");
        let credentials = std::fs::read_to_string(work.join("auth/credentials"))
            .map_err(|e| format!("the credentials file: {e}"))?;
        let secret = credentials
            .lines()
            .find_map(|l| l.strip_prefix("operator "))
            .ok_or("no operator in the credentials file")?
            .to_string();
        let scheduler = std::net::SocketAddr::from(([127, 0, 0, 1], up.http_port));
        // Marathon's API: 401 without the operator's credentials or with a guess, 200 with them.
        for basic in [None, Some("operator:guess")] {
            let (status, _) = http_json_as(scheduler, "GET", "/v2/apps", None, basic)?;
            if status != 401 {
                return Err(format!("GET /v2/apps with {basic:?} answered {status}"));
            }
        }
        let operator = format!("operator:{secret}");
        let app = r#"{"id": "/secure/sleeper", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}"#;
        let (status, _) = http_json_as(scheduler, "POST", "/v2/apps", Some(app), Some(&operator))?;
        if status != 201 {
            return Err(format!("POST /v2/apps with credentials answered {status}"));
        }
        // The task runs: the scheduler proved itself to the master, the agents registered with
        // the secret, and the banner told the user how to call.
        let running = wait_until(READY_SECS, || {
            http_json_as(
                scheduler,
                "GET",
                "/v2/apps/secure/sleeper",
                None,
                Some(&operator),
            )
            .is_ok_and(|(_, app)| app["app"]["tasksRunning"] == 1)
        });
        if !running {
            return Err(format!("the app never ran:\n{}", up.tail()));
        }
        let master = std::net::SocketAddr::from(([127, 0, 0, 1], up.master_port));
        let (_, state) = http_json(master, "GET", "/master/state", None)?;
        let hosts: Vec<&str> = state["slaves"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["hostname"].as_str()).collect())
            .unwrap_or_default();
        if hosts != ["od1000-0", "od1000-1"] && hosts != ["od1000-1", "od1000-0"] {
            return Err(format!("/master/state lists agents {hosts:?}"));
        }
        if !up.log().contains("-u operator:") {
            return Err("the banner does not say how to call with the credentials".into());
        }
        Ok(())
    })();
    let stopped = up.stop_and_check(false);
    checked?;
    stopped
}
