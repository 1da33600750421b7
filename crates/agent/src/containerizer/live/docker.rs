//! The `docker` containerizer, through the Docker engine's API (bollard): a task is a container
//! with the task's image, command, environment, hostname, network (BRIDGE or HOST), port mappings,
//! cpu and memory limits and Marathon-style `parameters`, labelled with the agent and the task so
//! that the agent finds its containers again after a restart. As Mesos' docker containerizer
//! does, the container's output goes to `stdout` and `stderr` in the task's sandbox (the engine's
//! log followed while the container runs), where the agent's file endpoints serve it.

// Live only, and bollard's API is made of std HashMaps (never iterated here).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use drover_core::task::TaskState;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::containerizer::Exit;

mod tasks;

pub use tasks::{import_busybox_image, DockerTasks};

pub const AGENT_LABEL: &str = "drover.agent";
pub const TASK_LABEL: &str = "drover.task";
/// On a network an agent made: the agent that made it.
pub const NETWORK_LABEL: &str = "drover.network";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Bridge,
    Host,
}

/// A container port published on a host port (the offered ports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

pub struct DockerLaunch<'a> {
    pub task_id: &'a str,
    pub image: &'a str,
    /// Run as `sh -c <command>`; `None` runs the image's own command.
    pub command: Option<&'a str>,
    pub environment: &'a [(String, String)],
    pub hostname: Option<&'a str>,
    pub network: Network,
    pub ports: &'a [PortMapping],
    /// Marathon's `docker.parameters` (`docker run` options): `hostname`, `label`, `env`/`e`.
    pub parameters: &'a [(String, String)],
    pub cpus: f64,
    pub mem_mb: f64,
}

/// A container of this agent, found by its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub container: String,
    pub task_id: String,
    pub running: bool,
}

pub struct DockerContainerizer {
    docker: Docker,
    agent: String,
    /// The network BRIDGE tasks join (made when missing), so that containers of every agent on
    /// this engine reach each other.
    network: String,
    /// The resolver BRIDGE containers use: an address, or `gateway` (the tasks' network's
    /// gateway, where a DNS server listening on all of the host's addresses answers them).
    dns: Option<String>,
}

/// How long an ended container's last output may take to reach the sandbox before its end is
/// reported.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// The network BRIDGE tasks join unless the agent names another (`--docker-network`).
pub const DEFAULT_NETWORK: &str = "drover";

/// The local engine (`DOCKER_HOST` or the default socket), checked to answer (a clear error if
/// not).
pub async fn engine() -> Result<Docker, String> {
    let engine = Docker::connect_with_local_defaults()
        .map_err(|e| format!("docker: cannot reach the engine: {e}"))?;
    engine
        .ping()
        .await
        .map_err(|e| format!("docker: the engine does not answer: {e}"))?;
    Ok(engine)
}

impl DockerContainerizer {
    /// Connects to the local engine and checks that it answers (a clear error if not).
    pub async fn connect(agent: &str) -> Result<DockerContainerizer, String> {
        let docker = engine().await?;
        Ok(DockerContainerizer {
            docker,
            agent: agent.to_string(),
            network: DEFAULT_NETWORK.to_string(),
            dns: None,
        })
    }

    /// BRIDGE containers resolve names with `dns`: an address, or `gateway`.
    pub fn with_dns(mut self, dns: &str) -> DockerContainerizer {
        self.dns = Some(dns.to_string());
        self
    }

    /// The resolver address for a container on the network `network_id`.
    async fn resolver(&self, network_id: &str) -> Result<Option<String>, String> {
        let Some(dns) = &self.dns else {
            return Ok(None);
        };
        if dns != "gateway" {
            return Ok(Some(dns.clone()));
        }
        let network = self
            .docker
            .inspect_network(
                network_id,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map_err(|e| format!("docker network inspect {}: {e}", self.network))?;
        let gateway = network
            .ipam
            .and_then(|ipam| ipam.config)
            .into_iter()
            .flatten()
            .find_map(|config| config.gateway);
        gateway
            .map(Some)
            .ok_or_else(|| format!("the network {} has no gateway for DNS", self.network))
    }

    /// BRIDGE tasks join `network` instead of the default.
    pub fn on_network(mut self, network: &str) -> DockerContainerizer {
        self.network = network.to_string();
        self
    }

    /// The tasks' network, made unless it exists (a bridge other containers can attach to); its
    /// id. Engines before API 1.44 allow two networks of one name, and then refuse to start a
    /// container on either ("ambiguous"). Agents of one process (`drover up`) make it one at a
    /// time; agents of several processes may still make one each at once: the engine creates
    /// them one after the other, the oldest is kept, a later one is removed by its maker, and
    /// the keeper waits (a few seconds at most) until it is alone before using it.
    async fn ensure_network(&self) -> Result<String, String> {
        static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one_at_a_time = ONE_AT_A_TIME.lock().await;
        if let Some(id) = self.networks_named().await?.into_iter().next() {
            return Ok(id);
        }
        let request = bollard::models::NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".into()),
            attachable: Some(true),
            labels: Some([(NETWORK_LABEL.to_string(), self.agent.clone())].into()),
            ..Default::default()
        };
        let created = self.docker.create_network(request).await;
        let mut named = self.networks_named().await?;
        if let Ok(ours) = &created {
            if named.first() != Some(&ours.id) {
                let _ = self.docker.remove_network(&ours.id).await;
            }
        }
        for _ in 0..50 {
            if named.len() <= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            named = self.networks_named().await?;
        }
        match named.into_iter().next() {
            Some(id) => Ok(id),
            None => Err(format!(
                "docker network create {}: {}",
                self.network,
                created.err().map(|e| e.to_string()).unwrap_or_default()
            )),
        }
    }

    /// The ids of the networks named exactly like the tasks' network, oldest first.
    async fn networks_named(&self) -> Result<Vec<String>, String> {
        let filters: std::collections::HashMap<String, Vec<String>> =
            [("name".to_string(), vec![self.network.clone()])].into();
        let options = bollard::query_parameters::ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| format!("docker network ls: {e}"))?;
        // The engine's name filter matches parts of names too.
        let mut named: Vec<(String, String)> = listed
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(self.network.as_str()))
            .filter_map(|n| Some((sortable_time(n.created.as_deref().unwrap_or("")), n.id?)))
            .collect();
        named.sort();
        Ok(named.into_iter().map(|(_, id)| id).collect())
    }

    /// Whether the tasks' network exists.
    pub async fn network_exists(&self) -> bool {
        self.networks_named().await.is_ok_and(|ids| !ids.is_empty())
    }

    /// Removes the tasks' network (every network of its name) when no container is on it any
    /// more; else it stays.
    pub async fn remove_network(&self) {
        for id in self.networks_named().await.unwrap_or_default() {
            let _ = self.docker.remove_network(&id).await;
        }
    }

    /// The container's addresses on the tasks' network (none when it is not on it).
    pub async fn addresses(&self, container: &str) -> Vec<String> {
        let Ok(seen) = self.docker.inspect_container(container, None).await else {
            return Vec::new();
        };
        seen.network_settings
            .and_then(|s| s.networks)
            .and_then(|mut n| n.remove(&self.network))
            .and_then(|n| n.ip_address)
            .filter(|ip| !ip.is_empty())
            .into_iter()
            .collect()
    }

    /// Pulls `image` unless it is present; without a reachable registry that fails with a reason.
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let options = CreateImageOptionsBuilder::default()
            .from_image(image)
            .build();
        let mut pull = self.docker.create_image(Some(options), None, None);
        while let Some(step) = pull.next().await {
            step.map_err(|e| {
                format!("image {image} is not on this agent and could not be pulled: {e}")
            })?;
        }
        Ok(())
    }

    /// Creates and starts the task's container; returns its id.
    pub async fn launch(&self, launch: DockerLaunch<'_>) -> Result<String, String> {
        self.ensure_image(launch.image).await?;
        let (network_mode, resolver) = match launch.network {
            Network::Bridge => {
                let id = self.ensure_network().await?;
                let resolver = self.resolver(&id).await?;
                (id, resolver)
            }
            Network::Host => ("host".to_string(), None),
        };
        let mut env: Vec<String> = launch
            .environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut labels: std::collections::HashMap<String, String> = [
            (AGENT_LABEL.to_string(), self.agent.clone()),
            (TASK_LABEL.to_string(), launch.task_id.to_string()),
        ]
        .into_iter()
        .collect();
        let mut hostname = launch.hostname.map(str::to_string);
        for (key, value) in launch.parameters {
            match key.as_str() {
                "hostname" | "h" => hostname = Some(value.clone()),
                "env" | "e" => env.push(value.clone()),
                "label" | "l" => {
                    let (k, v) = value.split_once('=').unwrap_or((value.as_str(), ""));
                    labels.insert(k.to_string(), v.to_string());
                }
                other => {
                    return Err(format!(
                        "docker parameter {other:?} is not supported (hostname, env, label are)"
                    ))
                }
            }
        }
        let port_bindings = launch
            .ports
            .iter()
            .map(|p| {
                let binding = PortBinding {
                    host_ip: None,
                    host_port: Some(p.host_port.to_string()),
                };
                (
                    format!("{}/{}", p.container_port, p.protocol),
                    Some(vec![binding]),
                )
            })
            .collect();
        let host_config = HostConfig {
            network_mode: Some(network_mode),
            dns: resolver.map(|ip| vec![ip]),
            port_bindings: (launch.network == Network::Bridge && !launch.ports.is_empty())
                .then_some(port_bindings),
            nano_cpus: (launch.cpus > 0.0).then_some((launch.cpus * 1e9) as i64),
            memory: (launch.mem_mb > 0.0).then_some((launch.mem_mb * 1024.0 * 1024.0) as i64),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(launch.image.to_string()),
            cmd: launch
                .command
                .map(|c| vec!["sh".to_string(), "-c".to_string(), c.to_string()]),
            env: Some(env),
            hostname,
            labels: Some(labels),
            exposed_ports: Some(
                launch
                    .ports
                    .iter()
                    .map(|p| format!("{}/{}", p.container_port, p.protocol))
                    .collect(),
            ),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!(
            "drover-{}-{}",
            sanitize(&self.agent),
            sanitize(launch.task_id)
        );
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("docker create {name}: {e}"))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(format!("docker start {name}: {e}"));
        }
        Ok(created.id)
    }

    /// Waits for the container to end.
    pub async fn wait(&self, container: &str) -> Exit {
        let mut waiting = self.docker.wait_container(container, None);
        match waiting.next().await {
            Some(Ok(response)) if response.status_code == 0 => Exit {
                state: TaskState::TaskFinished,
                message: "Container exited with status 0".into(),
            },
            Some(Ok(response)) => Exit {
                state: TaskState::TaskFailed,
                message: format!("Container exited with status {}", response.status_code),
            },
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Exit {
                state: TaskState::TaskFailed,
                message: format!("Container exited with status {code}"),
            },
            Some(Err(e)) => Exit {
                state: TaskState::TaskFailed,
                message: format!("waiting for the container failed: {e}"),
            },
            None => Exit {
                state: TaskState::TaskFailed,
                message: "the container's wait ended without a status".into(),
            },
        }
    }

    /// Copies the container's output into `stdout` and `stderr` in `sandbox` until the container
    /// ends (the engine then closes the stream). The files are written anew from the container's
    /// start, so an agent that follows again after a restart repeats nothing.
    pub async fn follow_logs(&self, container: &str, sandbox: &Path) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("writing the sandbox {}: {e}", sandbox.display());
        tokio::fs::create_dir_all(sandbox).await.map_err(failed)?;
        let mut stdout = tokio::fs::File::create(sandbox.join("stdout"))
            .await
            .map_err(failed)?;
        let mut stderr = tokio::fs::File::create(sandbox.join("stderr"))
            .await
            .map_err(failed)?;
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(container, Some(options));
        while let Some(output) = logs.next().await {
            let (file, bytes) = match output.map_err(|e| format!("docker logs {container}: {e}"))? {
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    (&mut stdout, message)
                }
                LogOutput::StdErr { message } => (&mut stderr, message),
                LogOutput::StdIn { .. } => continue,
            };
            file.write_all(&bytes).await.map_err(failed)?;
            // Written through at once: the file endpoints read it while the task runs.
            file.flush().await.map_err(failed)?;
        }
        Ok(())
    }

    /// Stops the container (SIGTERM, SIGKILL after `grace`).
    pub async fn kill(&self, container: &str, grace: Duration) -> Exit {
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs().max(1) as i32)
            .build();
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) => Exit {
                state: TaskState::TaskKilled,
                message: "Container stopped".into(),
            },
            Err(e) => Exit {
                state: TaskState::TaskKilled,
                message: format!("stopping the container: {e}"),
            },
        }
    }

    /// Runs a health check command in `container` (`docker exec ... sh -c command`): `Ok` when
    /// it exits 0 within `timeout`. Docker cannot kill an exec'd process: one that outlives its
    /// timeout keeps running in the container until it ends.
    pub async fn exec_check(
        &self,
        container: &str,
        command: &str,
        environment: &[(String, String)],
        timeout: Duration,
    ) -> Result<(), String> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let run = async {
            let options = CreateExecOptions {
                cmd: Some(vec![
                    "sh".to_string(),
                    "-c".to_string(),
                    command.to_string(),
                ]),
                env: Some(
                    environment
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect(),
                ),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let exec = self
                .docker
                .create_exec(container, options)
                .await
                .map_err(|e| format!("docker exec: {e}"))?;
            let started = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| format!("docker exec: {e}"))?;
            if let StartExecResults::Attached { mut output, .. } = started {
                while output.next().await.is_some() {}
            }
            let inspected = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| format!("docker exec: {e}"))?;
            match inspected.exit_code {
                Some(0) => Ok(()),
                Some(code) => Err(format!("Command exited with status {code}")),
                None => Err("docker exec: the command has no exit code".to_string()),
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "Command timed out after {} ms",
                timeout.as_millis()
            )),
        }
    }

    pub async fn remove(&self, container: &str) -> Result<(), String> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        self.docker
            .remove_container(container, Some(options))
            .await
            .map_err(|e| format!("docker rm {container}: {e}"))
    }

    /// This agent's containers, running or not (after an agent restart: to adopt or clean up).
    pub async fn ours(&self) -> Result<Vec<Found>, String> {
        let filters: std::collections::HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{AGENT_LABEL}={}", self.agent)],
        )]
        .into_iter()
        .collect();
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("docker ps: {e}"))?;
        let mut found: Vec<Found> = listed
            .into_iter()
            .filter_map(|c| {
                let task_id = c.labels.as_ref()?.get(TASK_LABEL)?.clone();
                let running = c.state.map(|s| s.to_string() == "running").unwrap_or(false);
                Some(Found {
                    container: c.id?,
                    task_id,
                    running,
                })
            })
            .collect();
        found.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(found)
    }
}

/// An engine's RFC 3339 time (`2026-12-04T07:25:21.99Z`: Go drops the fraction's trailing
/// zeros) with its fraction padded to nine digits, so that the times of one engine order as text.
fn sortable_time(time: &str) -> String {
    let Some((seconds, rest)) = time.split_once('.') else {
        return time.to_string();
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("{seconds}.{digits:0<9}{}", &rest[digits.len()..])
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::sortable_time;

    #[test]
    fn engine_times_order_as_text_once_their_fractions_are_padded() {
        let earlier = sortable_time("2026-12-04T07:25:05.1234Z");
        let later = sortable_time("2026-12-04T07:25:05.12345Z");
        assert!(earlier < later, "{earlier} {later}");
        assert_eq!(
            sortable_time("2026-12-04T07:25:05.9Z"),
            "2026-12-04T07:25:05.900000000Z"
        );
        assert_eq!(
            sortable_time("2026-12-04T07:25:05Z"),
            "2026-12-04T07:25:05Z"
        );
    }
}
