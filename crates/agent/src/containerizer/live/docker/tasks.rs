//! The Docker containerizer as the agent's `Containerizer`: launching a task's container,
//! following it to its exit, killing and recovering it; and the busybox image the tests and
//! `drover up` import without a registry.

use super::*;

/// The Docker containerizer as the agent uses it: tasks with a `DOCKER` container.
pub struct DockerTasks {
    docker: std::sync::Arc<DockerContainerizer>,
}

impl DockerTasks {
    pub fn new(docker: DockerContainerizer) -> DockerTasks {
        DockerTasks {
            docker: std::sync::Arc::new(docker),
        }
    }
}

impl crate::containerizer::Containerizer for DockerTasks {
    fn kind(&self) -> crate::containerizer::Kind {
        crate::containerizer::Kind::Docker
    }

    fn launch(
        &self,
        spec: &crate::task::LaunchSpec,
    ) -> drover_core::env::BoxFuture<'static, Result<crate::containerizer::Launched, String>> {
        let docker = self.docker.clone();
        let spec = spec.clone();
        Box::pin(async move {
            let crate::task::Container::Docker(container) = &spec.container else {
                return Err("the docker containerizer runs DOCKER containers only".to_string());
            };
            let ports: Vec<PortMapping> = container
                .port_mappings
                .iter()
                .map(|m| PortMapping {
                    container_port: m.container_port,
                    host_port: m.host_port,
                    protocol: m.protocol.clone(),
                })
                .collect();
            let id = docker
                .launch(DockerLaunch {
                    task_id: &spec.task_id,
                    image: &container.image,
                    command: spec.command.as_deref(),
                    environment: &spec.environment,
                    hostname: None,
                    network: match container.network {
                        crate::task::DockerNetwork::Bridge => Network::Bridge,
                        crate::task::DockerNetwork::Host => Network::Host,
                    },
                    ports: &ports,
                    parameters: &container.parameters,
                    cpus: spec.cpus,
                    mem_mb: spec.mem_mb,
                })
                .await?;
            let ip_addresses = docker.addresses(&id).await;
            Ok(crate::containerizer::Launched {
                handle: crate::containerizer::Handle::Docker {
                    container: id.clone(),
                    ip_addresses,
                },
                running: Box::new(RunningContainer {
                    docker,
                    id,
                    sandbox: spec.sandbox.clone(),
                }),
            })
        })
    }

    fn recover(
        &self,
        spec: &crate::task::LaunchSpec,
        handle: Option<crate::containerizer::Handle>,
        _launched_ms: u64,
    ) -> drover_core::env::BoxFuture<'static, Result<crate::containerizer::Launched, String>> {
        let docker = self.docker.clone();
        let task_id = spec.task_id.clone();
        let sandbox = spec.sandbox.clone();
        Box::pin(async move {
            let id = match handle {
                Some(crate::containerizer::Handle::Docker { container, .. }) => container,
                Some(other) => {
                    return Err(format!("the docker containerizer cannot recover {other:?}"))
                }
                // Launched, but the agent stopped before it checkpointed the container: find
                // it by its labels.
                None => docker
                    .ours()
                    .await?
                    .into_iter()
                    .find(|f| f.task_id == task_id)
                    .map(|f| f.container)
                    .ok_or_else(|| {
                        "the agent stopped while it launched the task; no container was found"
                            .to_string()
                    })?,
            };
            let ip_addresses = docker.addresses(&id).await;
            Ok(crate::containerizer::Launched {
                handle: crate::containerizer::Handle::Docker {
                    container: id.clone(),
                    ip_addresses,
                },
                running: Box::new(RunningContainer {
                    docker,
                    id,
                    sandbox,
                }),
            })
        })
    }

    fn check_command(
        &self,
        _spec: &crate::task::LaunchSpec,
        handle: &crate::containerizer::Handle,
        command: &str,
        environment: &[(String, String)],
        timeout: Duration,
    ) -> drover_core::env::BoxFuture<'static, Result<(), String>> {
        let docker = self.docker.clone();
        let handle = handle.clone();
        let command = command.to_string();
        let environment = environment.to_vec();
        Box::pin(async move {
            match handle {
                crate::containerizer::Handle::Docker { container, .. } => {
                    docker
                        .exec_check(&container, &command, &environment, timeout)
                        .await
                }
                other => Err(format!("the docker containerizer cannot check {other:?}")),
            }
        })
    }

    fn cleanup(
        &self,
        handle: &crate::containerizer::Handle,
    ) -> drover_core::env::BoxFuture<'static, ()> {
        let docker = self.docker.clone();
        let handle = handle.clone();
        Box::pin(async move {
            if let crate::containerizer::Handle::Docker { container, .. } = handle {
                let _ = docker.remove(&container).await;
            }
        })
    }

    fn cleanup_orphans(&self, known_tasks: &[String]) -> drover_core::env::BoxFuture<'static, ()> {
        let docker = self.docker.clone();
        let known = known_tasks.to_vec();
        Box::pin(async move {
            let Ok(found) = docker.ours().await else {
                return;
            };
            for orphan in found.iter().filter(|f| !known.contains(&f.task_id)) {
                tracing::info!(task = %orphan.task_id, container = %orphan.container, "removing a container no task owns");
                let _ = docker.remove(&orphan.container).await;
            }
        })
    }
}

struct RunningContainer {
    docker: std::sync::Arc<DockerContainerizer>,
    id: String,
    /// Where the container's output goes, when the task has a sandbox.
    sandbox: Option<PathBuf>,
}

impl crate::containerizer::Running for RunningContainer {
    fn wait(
        self: Box<Self>,
        kill: crate::containerizer::KillSignal,
    ) -> drover_core::env::BoxFuture<'static, Exit> {
        Box::pin(async move {
            let run = async {
                tokio::select! {
                    biased;
                    grace = crate::containerizer::kill_requested(kill) => self.docker.kill(&self.id, grace).await,
                    exit = self.docker.wait(&self.id) => exit,
                }
            };
            let Some(sandbox) = &self.sandbox else {
                return run.await;
            };
            let follow = self.docker.follow_logs(&self.id, sandbox);
            tokio::pin!(run, follow);
            let logged = |result: Result<(), String>| {
                if let Err(e) = result {
                    tracing::warn!(container = %self.id, error = %e, "the container's output stopped reaching its sandbox");
                }
            };
            let exit = tokio::select! {
                biased;
                exit = &mut run => exit,
                result = &mut follow => {
                    logged(result);
                    return run.await;
                }
            };
            // The task's output is complete in its sandbox before its end is reported.
            match tokio::time::timeout(LOG_DRAIN, follow).await {
                Ok(result) => logged(result),
                Err(_) => {
                    tracing::warn!(container = %self.id, "the container's last output did not reach its sandbox in time")
                }
            }
            exit
        })
    }
}

/// Makes a tiny local image `tag` from Debian's static busybox (`/bin/busybox`, package
/// `busybox-static`) with `docker import`, unless the engine already has it: no registry is
/// reachable here, so tests (and `drover up`'s demo) build what they run. `Err` says what is
/// missing.
pub fn import_busybox_image(tag: &str) -> Result<(), String> {
    use std::process::Command;
    let present = Command::new("docker")
        .args(["image", "inspect", tag])
        .output()
        .map_err(|e| format!("docker CLI: {e}"))?;
    if present.status.success() {
        return Ok(());
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        return Err("no /bin/busybox (Debian package busybox-static)".into());
    }
    let root = std::env::temp_dir().join(format!(
        "drover-busybox-rootfs-{}-{}",
        std::process::id(),
        tag.replace([':', '/'], "_")
    ));
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| e.to_string())?;
    for tool in [
        "sh", "sleep", "echo", "cat", "env", "hostname", "true", "false", "test", "ls", "nslookup",
        "ping",
    ] {
        let link = bin.join(tool);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(|e| e.to_string())?;
        }
    }
    let script = format!("tar -C {} -c . | docker import - {tag}", root.display());
    let imported = Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&root);
    if !imported.status.success() {
        return Err(format!(
            "docker import: {}",
            String::from_utf8_lossy(&imported.stderr)
        ));
    }
    Ok(())
}
