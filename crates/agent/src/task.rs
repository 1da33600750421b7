//! What the agent reads from a task's `TaskInfo` JSON, before anything runs: the command line, the
//! environment (`HOST`, `PORT0..`, the command's variables), the ports, cpus and memory, the
//! container (plain command or Docker) and the kill grace period. Pure code: a bad task is an
//! error value that says what is wrong, never a panic.

use std::path::PathBuf;
use std::time::Duration;

use drover_core::v1::{self, TaskInfo};
use drover_core::Resources;
use serde::Deserialize;
use serde_json::Value as Json;

use crate::health::HealthCheckSpec;

/// How long a killed task has between SIGTERM and SIGKILL unless its `kill_policy` says.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(3);

/// The most `PORTn` variables a task gets (a task holding a huge range gets the first ones).
pub const MAX_PORT_VARIABLES: usize = 1000;

/// Everything a containerizer needs to start a task.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchSpec {
    pub task_id: String,
    pub name: String,
    pub framework_id: String,
    /// The shell command line (`sh -c`); `None` when the task has no command (a Docker image's
    /// own command runs).
    pub command: Option<String>,
    pub environment: Vec<(String, String)>,
    /// The task's host ports, in the order its resources list them (`PORT0` first).
    pub ports: Vec<u16>,
    pub resources: Resources,
    pub cpus: f64,
    pub mem_mb: f64,
    pub container: Container,
    pub kill_grace: Duration,
    /// The task's Mesos health check, run by the agent while the task runs.
    pub health_check: Option<HealthCheckSpec>,
    /// Where the task's files go (`stdout`, `stderr`), set by the agent before a launch or a
    /// recovery; `None` when it has no sandbox (simulated).
    pub sandbox: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Container {
    /// A plain command (Mesos' `MESOS` container type, or no container).
    Command,
    Docker(DockerSpec),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DockerSpec {
    pub image: String,
    pub network: DockerNetwork,
    pub port_mappings: Vec<PortMapping>,
    /// `docker run` options as Marathon passes them (`key`, `value`).
    pub parameters: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerNetwork {
    Bridge,
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

/// The task id of a task's JSON, if it has one (to report a task whose JSON is otherwise bad).
pub fn task_id_of(task: &Json) -> Option<&str> {
    task.pointer("/task_id/value").and_then(Json::as_str)
}

/// The host name a Docker task's container sets (Marathon's `hostname` parameter, as
/// `--hostname` of `docker run`), if any.
pub fn container_hostname(task: &Json) -> Option<String> {
    task.pointer("/container/docker/parameters")?
        .as_array()?
        .iter()
        .rev()
        .find(|p| matches!(p["key"].as_str(), Some("hostname" | "h")))
        .and_then(|p| p["value"].as_str())
        .map(str::to_string)
}

/// Reads a `TaskInfo` as the master forwarded it. `hostname` is the agent's (`HOST`).
pub fn parse_task(task: &Json, framework_id: &str, hostname: &str) -> Result<LaunchSpec, String> {
    let info: TaskInfo = serde_path_to_error::deserialize(task.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("TaskInfo: {inner}")
        } else {
            format!("TaskInfo at `{path}`: {inner}")
        }
    })?;
    if info.task_id.value.is_empty() {
        return Err("TaskInfo at `task_id.value`: expected a non-empty task id".into());
    }
    let resources = v1::from_mesos(&info.resources).map_err(|e| format!("TaskInfo {e}"))?;
    let ports = task_ports(&info.resources)?;
    let command = command_line(info.command.as_ref())?;
    let container = match &info.container {
        None => Container::Command,
        Some(json) => parse_container(json, &ports)?,
    };
    if command.is_none() && container == Container::Command {
        return Err(
            "TaskInfo: expected `command.value` (a task without a container needs a command)"
                .into(),
        );
    }
    let environment = task_environment(&info, framework_id, hostname, &ports);
    let health_check = info
        .health_check
        .as_ref()
        .map(crate::health::parse)
        .transpose()
        .map_err(|e| format!("TaskInfo {e}"))?;
    Ok(LaunchSpec {
        task_id: info.task_id.value.clone(),
        name: info.name.clone(),
        framework_id: framework_id.to_string(),
        command,
        environment,
        ports,
        cpus: resources.scalar("cpus").as_f64(),
        mem_mb: resources.scalar("mem").as_f64(),
        resources,
        container,
        kill_grace: kill_grace(info.kill_policy.as_ref()),
        health_check,
        sandbox: None,
    })
}

/// The command line to give `sh -c`: the value itself for a shell command, else the value and the
/// arguments as shell words.
fn command_line(command: Option<&v1::CommandInfo>) -> Result<Option<String>, String> {
    let Some(command) = command else {
        return Ok(None);
    };
    if command.shell.unwrap_or(true) {
        return Ok(command.value.clone().filter(|v| !v.trim().is_empty()));
    }
    // Not a shell command: `value` is the program and `arguments` its argv (argv[0] included, as
    // Mesos has it). Run it through `exec` with every word quoted.
    let Some(program) = command.value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let mut words = vec![crate::shell::quote(program)];
    words.extend(
        command
            .arguments
            .iter()
            .skip(1)
            .map(|a| crate::shell::quote(a)),
    );
    Ok(Some(format!("exec {}", words.join(" "))))
}

/// The task's ports in the order its `ports` resources list them.
pub fn task_ports(resources: &[v1::Resource]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (i, resource) in resources.iter().enumerate() {
        if resource.name != "ports" {
            continue;
        }
        let Some(ranges) = &resource.ranges else {
            return Err(format!(
                "TaskInfo at `resources[{i}]`: expected the ports as RANGES"
            ));
        };
        for range in &ranges.range {
            if range.begin > range.end || range.end > u64::from(u16::MAX) {
                return Err(format!(
                    "TaskInfo at `resources[{i}]`: port range {}-{} is not within 0-65535",
                    range.begin, range.end
                ));
            }
            for port in range.begin..=range.end {
                if ports.len() == MAX_PORT_VARIABLES {
                    return Ok(ports);
                }
                ports.push(port as u16);
            }
        }
    }
    Ok(ports)
}

/// The task's environment: what Mesos and Marathon give every task, then the command's own
/// variables (which win on a clash).
pub fn task_environment(
    info: &TaskInfo,
    framework_id: &str,
    hostname: &str,
    ports: &[u16],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("MESOS_TASK_ID".into(), info.task_id.value.clone()),
        ("MESOS_FRAMEWORK_ID".into(), framework_id.to_string()),
        ("HOST".into(), hostname.to_string()),
    ];
    for (i, port) in ports.iter().enumerate() {
        env.push((format!("PORT{i}"), port.to_string()));
    }
    if let Some(first) = ports.first() {
        env.push(("PORT".into(), first.to_string()));
        let all: Vec<String> = ports.iter().map(u16::to_string).collect();
        env.push(("PORTS".into(), all.join(",")));
    }
    let variables = info
        .command
        .as_ref()
        .and_then(|c| c.environment.as_ref())
        .map(|e| e.variables.as_slice())
        .unwrap_or_default();
    for variable in variables {
        match env.iter_mut().find(|(k, _)| *k == variable.name) {
            Some(slot) => slot.1 = variable.value.clone(),
            None => env.push((variable.name.clone(), variable.value.clone())),
        }
    }
    env
}

#[derive(Deserialize)]
struct ContainerJson {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    docker: Option<DockerJson>,
}

#[derive(Deserialize)]
struct DockerJson {
    image: String,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    port_mappings: Vec<PortMappingJson>,
    #[serde(default)]
    parameters: Vec<ParameterJson>,
}

#[derive(Deserialize)]
struct PortMappingJson {
    #[serde(default)]
    host_port: Option<u64>,
    container_port: u64,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize)]
struct ParameterJson {
    key: String,
    #[serde(default)]
    value: String,
}

/// Reads `container`: `{"type":"DOCKER","docker":{...}}` or `{"type":"MESOS"}`. Port mappings
/// without a host port take the task's ports not mapped yet, in order.
pub fn parse_container(json: &Json, ports: &[u16]) -> Result<Container, String> {
    let container: ContainerJson = serde_json::from_value(json.clone())
        .map_err(|e| format!("TaskInfo at `container`: {e}"))?;
    match (container.kind.as_deref(), container.docker) {
        (Some("DOCKER"), Some(docker)) | (None, Some(docker)) => {
            if docker.image.trim().is_empty() {
                return Err("TaskInfo at `container.docker.image`: expected an image".into());
            }
            let network = match docker.network.as_deref().unwrap_or("HOST") {
                "BRIDGE" => DockerNetwork::Bridge,
                "HOST" => DockerNetwork::Host,
                other => {
                    return Err(format!(
                        "TaskInfo at `container.docker.network`: expected BRIDGE or HOST, found {other:?}"
                    ))
                }
            };
            let mut unused = ports.iter().copied().filter(|p| {
                !docker
                    .port_mappings
                    .iter()
                    .any(|m| m.host_port == Some(u64::from(*p)))
            });
            let mut port_mappings = Vec::new();
            for (i, mapping) in docker.port_mappings.iter().enumerate() {
                let at = format!("TaskInfo at `container.docker.port_mappings[{i}]`");
                let container_port = u16::try_from(mapping.container_port).map_err(|_| {
                    format!(
                        "{at}: container_port {} is not a port",
                        mapping.container_port
                    )
                })?;
                let host_port = match mapping.host_port.filter(|p| *p != 0) {
                    Some(p) => u16::try_from(p)
                        .map_err(|_| format!("{at}: host_port {p} is not a port"))?,
                    None => unused.next().ok_or_else(|| {
                        format!("{at}: no host_port, and the task has no port resource left for it")
                    })?,
                };
                if !ports.is_empty() && !ports.contains(&host_port) {
                    return Err(format!(
                        "{at}: host_port {host_port} is not among the task's ports"
                    ));
                }
                let protocols = mapping
                    .protocol
                    .as_deref()
                    .unwrap_or("tcp")
                    .to_ascii_lowercase();
                for protocol in protocols
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                {
                    if protocol != "tcp" && protocol != "udp" {
                        return Err(format!("{at}: protocol {protocol:?} is not tcp or udp"));
                    }
                    port_mappings.push(PortMapping {
                        host_port,
                        container_port,
                        protocol: protocol.to_string(),
                    });
                }
            }
            Ok(Container::Docker(DockerSpec {
                image: docker.image,
                network,
                port_mappings,
                parameters: docker
                    .parameters
                    .into_iter()
                    .map(|p| (p.key, p.value))
                    .collect(),
            }))
        }
        (Some("DOCKER"), None) => {
            Err("TaskInfo at `container.docker`: a DOCKER container needs `docker.image`".into())
        }
        (Some("MESOS"), _) | (None, None) => Ok(Container::Command),
        (Some(other), _) => Err(format!(
            "TaskInfo at `container.type`: expected DOCKER or MESOS, found {other:?}"
        )),
    }
}

/// The kill grace period from `kill_policy.grace_period.nanoseconds`.
fn kill_grace(policy: Option<&Json>) -> Duration {
    policy
        .and_then(|p| p.pointer("/grace_period/nanoseconds"))
        .and_then(Json::as_u64)
        .map(Duration::from_nanos)
        .unwrap_or(DEFAULT_KILL_GRACE)
}

/// What a simulated task does, read from its shell command: `sleep N` statements add up, `exit N`
/// (or `true`/`false`) sets how it ends; a command with anything else runs until killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimProgram {
    /// How long it runs before it ends.
    pub run_ms: u64,
    /// Its exit code when it ends on its own; `None` runs until killed.
    pub exit_code: Option<i32>,
}

impl SimProgram {
    /// Runs until killed.
    pub const FOREVER: SimProgram = SimProgram {
        run_ms: 0,
        exit_code: None,
    };

    pub fn parse(command: Option<&str>) -> SimProgram {
        let Some(command) = command else {
            return SimProgram::FOREVER;
        };
        let mut run_ms: u64 = 0;
        let mut status = 0;
        let statements = command
            .split([';', '\n'])
            .flat_map(|s| s.split("&&"))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        for statement in statements {
            let words: Vec<&str> = statement.split_whitespace().collect();
            match words.as_slice() {
                ["sleep", n] => match parse_seconds(n) {
                    Some(ms) => {
                        run_ms = run_ms.saturating_add(ms);
                        status = 0;
                    }
                    None => return SimProgram::FOREVER,
                },
                ["exit"] => {
                    return SimProgram {
                        run_ms,
                        exit_code: Some(status),
                    }
                }
                ["exit", n] => {
                    return match n.parse::<i32>() {
                        Ok(code) => SimProgram {
                            run_ms,
                            exit_code: Some(code & 0xff),
                        },
                        Err(_) => SimProgram::FOREVER,
                    }
                }
                ["true"] | [":"] => status = 0,
                ["false"] => status = 1,
                _ => return SimProgram::FOREVER,
            }
        }
        SimProgram {
            run_ms,
            exit_code: Some(status),
        }
    }
}

/// `5`, `0.5`, `2s`, `1m` as milliseconds.
fn parse_seconds(text: &str) -> Option<u64> {
    let (number, unit_ms) = match text.as_bytes().last()? {
        b's' => (&text[..text.len() - 1], 1000.0),
        b'm' => (&text[..text.len() - 1], 60_000.0),
        b'h' => (&text[..text.len() - 1], 3_600_000.0),
        _ => (text, 1000.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * unit_ms).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(extra: Json) -> Json {
        let mut base = json!({
            "name": "web",
            "task_id": {"value": "web.1"},
            "agent_id": {"value": "a1"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
                {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31005, "end": 31005}, {"begin": 31001, "end": 31002}]}}
            ],
            "command": {"value": "python3 -m http.server $PORT0", "environment": {"variables": [
                {"name": "MARATHON_APP_ID", "value": "/web"}, {"name": "HOST", "value": "override"}]}}
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn var<'a>(spec: &'a LaunchSpec, name: &str) -> Option<&'a str> {
        spec.environment
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn ports_and_environment_follow_the_resources_order() {
        let spec = parse_task(&task(json!({})), "f1", "node-1").unwrap();
        assert_eq!(spec.ports, vec![31005, 31001, 31002]);
        assert_eq!(var(&spec, "PORT0"), Some("31005"));
        assert_eq!(var(&spec, "PORT2"), Some("31002"));
        assert_eq!(var(&spec, "PORT"), Some("31005"));
        assert_eq!(var(&spec, "PORTS"), Some("31005,31001,31002"));
        assert_eq!(var(&spec, "MESOS_TASK_ID"), Some("web.1"));
        assert_eq!(var(&spec, "MARATHON_APP_ID"), Some("/web"));
        // The command's own variables win.
        assert_eq!(var(&spec, "HOST"), Some("override"));
        assert_eq!(spec.cpus, 0.5);
        assert_eq!(spec.mem_mb, 64.0);
        assert_eq!(spec.container, Container::Command);
        assert_eq!(spec.kill_grace, DEFAULT_KILL_GRACE);
        let plain = parse_task(&task(json!({"command": {"value": "true"}})), "f1", "n").unwrap();
        assert_eq!(var(&plain, "HOST"), Some("n"));
    }

    #[test]
    fn bad_tasks_are_clear_errors() {
        let err = parse_task(&json!({"name": "x"}), "f", "h").unwrap_err();
        assert_eq!(err, "TaskInfo: missing field `task_id`");
        let err = parse_task(&task(json!({"task_id": {"value": 5}})), "f", "h").unwrap_err();
        assert!(
            err.starts_with("TaskInfo at `task_id.value`: invalid type"),
            "{err}"
        );
        let err = parse_task(&task(json!({"command": null})), "f", "h").unwrap_err();
        assert!(err.contains("needs a command"), "{err}");
        let err = parse_task(
            &task(json!({"resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 70000, "end": 70001}]}}]})),
            "f",
            "h",
        )
        .unwrap_err();
        assert!(err.contains("not within 0-65535"), "{err}");
        let err = parse_task(
            &task(json!({"container": {"type": "DOCKER", "docker": {"image": "x", "network": "USER"}}})),
            "f",
            "h",
        )
        .unwrap_err();
        assert!(
            err.contains("expected BRIDGE or HOST, found \"USER\""),
            "{err}"
        );
        let err = parse_task(&task(json!({"container": {"type": "APPC"}})), "f", "h").unwrap_err();
        assert!(err.contains("expected DOCKER or MESOS"), "{err}");
        assert_eq!(task_id_of(&task(json!({}))), Some("web.1"));
    }

    #[test]
    fn docker_container_maps_offered_ports() {
        let container = json!({"type": "DOCKER", "docker": {"image": "busybox", "network": "BRIDGE",
            "port_mappings": [{"container_port": 80}, {"host_port": 31005, "container_port": 53, "protocol": "udp,tcp"}],
            "parameters": [{"key": "hostname", "value": "ubuntu1.weave.local"}]}});
        let spec = parse_task(
            &task(json!({"container": container, "command": null})),
            "f",
            "h",
        )
        .unwrap();
        let Container::Docker(docker) = &spec.container else {
            panic!("not docker")
        };
        assert_eq!(spec.command, None);
        assert_eq!(docker.network, DockerNetwork::Bridge);
        let mappings: Vec<(u16, u16, &str)> = docker
            .port_mappings
            .iter()
            .map(|m| (m.host_port, m.container_port, m.protocol.as_str()))
            .collect();
        assert_eq!(
            mappings,
            vec![(31001, 80, "tcp"), (31005, 53, "udp"), (31005, 53, "tcp")]
        );
        assert_eq!(
            docker.parameters,
            vec![("hostname".to_string(), "ubuntu1.weave.local".to_string())]
        );
        let stray = json!({"type": "DOCKER", "docker": {"image": "b", "port_mappings": [{"host_port": 1, "container_port": 80}]}});
        let err = parse_task(&task(json!({"container": stray})), "f", "h").unwrap_err();
        assert!(
            err.contains("host_port 1 is not among the task's ports"),
            "{err}"
        );
    }

    #[test]
    fn non_shell_commands_are_quoted_and_grace_is_read() {
        let spec = parse_task(
            &task(json!({"command": {"shell": false, "value": "/bin/echo", "arguments": ["echo", "it's", "$HOME"]},
                "kill_policy": {"grace_period": {"nanoseconds": 5_000_000_000u64}}})),
            "f",
            "h",
        )
        .unwrap();
        assert_eq!(
            spec.command.as_deref(),
            Some(r#"exec '/bin/echo' 'it'\''s' '$HOME'"#)
        );
        assert_eq!(spec.kill_grace, Duration::from_secs(5));
    }

    #[test]
    fn sim_programs() {
        let p = |c: &str| SimProgram::parse(Some(c));
        assert_eq!(
            p("sleep 5"),
            SimProgram {
                run_ms: 5000,
                exit_code: Some(0)
            }
        );
        assert_eq!(
            p("sleep 1; exit 3"),
            SimProgram {
                run_ms: 1000,
                exit_code: Some(3)
            }
        );
        assert_eq!(
            p("sleep 0.5 && sleep 2s; false"),
            SimProgram {
                run_ms: 2500,
                exit_code: Some(1)
            }
        );
        assert_eq!(
            p("exit 0"),
            SimProgram {
                run_ms: 0,
                exit_code: Some(0)
            }
        );
        assert_eq!(p("python3 -m http.server $PORT0"), SimProgram::FOREVER);
        assert_eq!(p("sleep forever"), SimProgram::FOREVER);
        assert_eq!(p("sleep 1; exit x"), SimProgram::FOREVER);
        assert_eq!(SimProgram::parse(None), SimProgram::FOREVER);
    }
}
