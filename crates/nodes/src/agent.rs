//! `drover agent`: the Mesos-like agent, live or simulated.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use drover_agent::config::{AgentConfig, MasterLocator, RecoverMode, SIM_DEFAULT_RESOURCES};
use drover_agent::containerizer::live::docker::{DockerContainerizer, DockerTasks};
use drover_agent::containerizer::live::mesos::MesosContainerizer;
use drover_agent::containerizer::sim::SimContainerizer;
use drover_agent::containerizer::Containerizer;
use drover_core::Resources;
use drover_sim::Role;

use crate::coord::CLIENT_PORT;
use drover_coord::url::ZkUrl;

/// The agent's HTTP port, and the master's (where agents connect).
pub const AGENT_PORT: u16 = drover_agent::config::DEFAULT_PORT;
pub const MASTER_PORT: u16 = 5050;
/// Where masters publish themselves in coord.
pub const MASTER_ZK_PATH: &str = "/mesos";

#[derive(Args)]
pub struct AgentArgs {
    /// The address the agent's HTTP API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    ip: IpAddr,
    #[arg(long, default_value_t = AGENT_PORT)]
    port: u16,
    /// The name the master and tasks know this agent by (default: the machine's host name).
    #[arg(long)]
    hostname: Option<String>,
    /// The master: `zk://HOST:PORT[,HOST:PORT...]/PATH` (follow the leader) or `HOST:PORT`.
    #[arg(long)]
    master: String,
    /// Checkpoints (`meta/`) and task sandboxes (`sandboxes/`) live here.
    #[arg(long, default_value = "drover-agent")]
    work_dir: PathBuf,
    /// Mesos' text form, e.g. `cpus:4;mem:8192;disk:100000;ports:[31000-32000]` (default: this
    /// machine's CPUs and memory, `disk:10000;ports:[31000-32000]`).
    #[arg(long)]
    resources: Option<String>,
    /// Mesos' text form, e.g. `rack:r1;zone:a`.
    #[arg(long, default_value = "")]
    attributes: String,
    /// Which containerizers run tasks: `mesos` (processes), `docker`, or `sim` (no process at all:
    /// a task's `sleep N` is a timer and it answers HTTP on its first port, as in the simulator;
    /// the mock driver of a control-plane benchmark, like Nomad C1M's).
    #[arg(long, default_value = "mesos", value_delimiter = ',')]
    containerizers: Vec<String>,
    /// The Docker network BRIDGE tasks join, made when missing, so that the containers of every
    /// agent on this engine reach each other; their addresses are the tasks' `ipAddresses`.
    #[arg(long, default_value = drover_agent::containerizer::live::docker::DEFAULT_NETWORK)]
    docker_network: String,
    /// The resolver of BRIDGE containers: an address, or `gateway` (the network's gateway, where
    /// `drover dns` answers when it listens on every address). Default: Docker's.
    #[arg(long)]
    docker_dns: Option<String>,
    /// What a restarted agent does with the tasks it finds: `reconnect` (re-adopt them) or
    /// `cleanup` (kill them).
    #[arg(long, default_value = "reconnect")]
    recover: String,
    /// No ping from the master for this long: look for the master again.
    #[arg(long, default_value_t = 75_000)]
    ping_timeout_ms: u64,
    /// The principal and secret this agent proves to the master before it registers (Mesos'
    /// `--credential`): JSON `{"principal": .., "secret": ..}` or a `principal secret` line.
    #[arg(long)]
    credential: Option<PathBuf>,
}

pub async fn main(
    args: AgentArgs,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let master: MasterLocator = args.master.parse().map_err(anyhow::Error::msg)?;
    let recover: RecoverMode = args.recover.parse().map_err(anyhow::Error::msg)?;
    let resources_text = args
        .resources
        .clone()
        .unwrap_or_else(drover_agent::live::detect_resources);
    let resources: Resources = resources_text
        .parse()
        .with_context(|| format!("--resources {resources_text:?}"))?;
    drover_agent::config::attributes_json(&args.attributes)
        .map_err(|e| anyhow::anyhow!("--attributes: {e}"))?;
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(drover_agent::live::hostname);
    let meta = args.work_dir.join("meta");
    std::fs::create_dir_all(&meta)
        .with_context(|| format!("create the work dir {}", meta.display()))?;

    let env = drover_core::env::live::env(&hostname, &meta, None);
    let mut containerizers: Vec<Arc<dyn Containerizer>> = Vec::new();
    for name in &args.containerizers {
        match name.trim() {
            "sim" => containerizers.push(Arc::new(SimContainerizer::new(env.clone()))),
            "mesos" => containerizers.push(Arc::new(MesosContainerizer::new(&args.work_dir))),
            "docker" => {
                let label = format!("{hostname}:{}", args.port);
                let docker = DockerContainerizer::connect(&label)
                    .await
                    .map_err(|e| anyhow::anyhow!("--containerizers asks for docker, but {e}"))?
                    .on_network(&args.docker_network);
                let docker = match &args.docker_dns {
                    Some(dns) => docker.with_dns(dns),
                    None => docker,
                };
                containerizers.push(Arc::new(DockerTasks::new(docker)));
            }
            other => {
                anyhow::bail!("--containerizers: expected mesos, docker or sim, found {other:?}")
            }
        }
    }

    let mut config = AgentConfig::new(&hostname, master, resources);
    config.ip = args.ip;
    config.port = args.port;
    config.attributes = args.attributes.clone();
    config.recover = recover;
    config.ping_timeout = Duration::from_millis(args.ping_timeout_ms);
    config.credential = match &args.credential {
        Some(path) => Some(drover_core::auth::Credential::load(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    tracing::info!(%hostname, port = args.port, master = %config.master, resources = %config.resources, "agent starting");
    drover_agent::run(env, config, containerizers, shutdown)
        .await
        .context("agent")
}

/// How a simulated agent finds its master: through coord when the cluster has coord nodes, else
/// the first master directly.
pub fn sim_master_locator(coords: &[&str], masters: &[&str]) -> Option<MasterLocator> {
    if !coords.is_empty() {
        let hosts: Vec<String> = coords
            .iter()
            .map(|c| format!("{c}:{CLIENT_PORT}"))
            .collect();
        return Some(MasterLocator::Zk(ZkUrl {
            hosts: hosts.join(","),
            path: MASTER_ZK_PATH.to_string(),
            credentials: None,
        }));
    }
    masters.first().map(|m| MasterLocator::Direct {
        host: m.to_string(),
        port: MASTER_PORT,
    })
}

/// The agent role in simulation: the sim containerizer, the scenario's resources and attributes.
pub fn role() -> Role {
    Role::new("agent", Some(AGENT_PORT), |mut context| {
        Box::pin(async move {
            let master = sim_master_locator(
                &context.cluster.of_role("coord"),
                &context.cluster.of_role("master"),
            )
            .ok_or("an agent needs a coord or a master node in the cluster")?;
            let resources = match context.resources.clone() {
                Some(resources) => resources,
                None => SIM_DEFAULT_RESOURCES.parse()?,
            };
            let mut config = AgentConfig::new(&context.name, master, resources);
            config.attributes = context.attributes.clone().unwrap_or_default();
            config.credential = context.cluster.auth.as_ref().map(|a| a.credential("agent"));
            let mut containerizers: Vec<Arc<dyn Containerizer>> = Vec::new();
            match &context.live {
                // Live (`drover node`), tasks are real processes under the node's directory,
                // and real containers when the node reaches a Docker engine.
                Some(live) => {
                    containerizers.push(Arc::new(MesosContainerizer::new(&live.dir)));
                    if let Some(label) = &live.docker_label {
                        let mut docker = DockerContainerizer::connect(label).await?;
                        if let Some(network) = &live.docker_network {
                            docker = docker.on_network(network);
                        }
                        containerizers.push(Arc::new(DockerTasks::new(docker)));
                    }
                }
                None => containerizers.push(Arc::new(SimContainerizer::new(context.env.clone()))),
            }
            drover_agent::run(context.env.clone(), config, containerizers, async move {
                context.shutdown.requested().await
            })
            .await?;
            Ok(())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_agents_find_the_master_through_coord_when_there_is_one() {
        assert_eq!(
            sim_master_locator(&["coord-1", "coord-2"], &["master-1"]),
            Some(MasterLocator::Zk(
                "zk://coord-1:2181,coord-2:2181/mesos".parse().unwrap()
            ))
        );
        assert_eq!(
            sim_master_locator(&[], &["master-1", "master-2"]),
            Some(MasterLocator::Direct {
                host: "master-1".into(),
                port: 5050
            })
        );
        assert_eq!(sim_master_locator(&[], &[]), None);
    }
}
