//! `drover node`: one node of a scenario's cluster, run live with the same role code the
//! simulator runs (what `drover sim --live` starts in each container). The node's peers are
//! reached by their scenario names, which the live runner's Docker network resolves.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use drover_sim::cluster::{ClusterMap, Live, NodeContext, Shutdown};

#[derive(clap::Args)]
pub struct NodeArgs {
    /// The scenario whose cluster the node belongs to.
    scenario: PathBuf,
    /// The node's name in the scenario (`coord-1`, `master-2`, `agent-1`, ...).
    #[arg(long)]
    name: String,
    /// Where the node keeps its durable state (and an agent its tasks' sandboxes).
    #[arg(long, default_value = "/data/work")]
    work_dir: PathBuf,
    /// Offset the node's wall clock by the milliseconds this file holds, re-read every 100 ms
    /// (how the live runner does a scenario's `skew`).
    #[arg(long)]
    clock_offset_file: Option<PathBuf>,
    /// An agent also runs `DOCKER` tasks, on the engine at `DOCKER_HOST` or the local socket,
    /// labelling their containers `drover.agent=LABEL` (the live runner gives each run's agents
    /// their own, and removes what carries it).
    #[arg(long)]
    docker_label: Option<String>,
    /// The Docker network an agent's BRIDGE tasks join (made when missing).
    #[arg(long)]
    docker_network: Option<String>,
    /// `name address` lines for every node of the cluster: the node listens at its own address
    /// and reaches the others at theirs (nodes sharing one host, as `drover sim --live` runs them
    /// without Docker). Without it, names are the resolver's (the Docker network's, say).
    #[arg(long)]
    address_book: Option<PathBuf>,
}

pub async fn main(
    args: NodeArgs,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    if let Some(path) = &args.clock_offset_file {
        drover_core::env::live::follow_clock_offset(path.clone());
    }
    let scenario = drover_sim::load(&args.scenario).map_err(|e| anyhow::anyhow!("{e}"))?;
    let roles = crate::roles();
    let map = ClusterMap::plan(&scenario, &roles).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = map
        .nodes
        .iter()
        .find(|n| n.name == args.name)
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--name {:?}: the scenario's nodes are {}",
                args.name,
                map.names().join(", ")
            )
        })?;
    let role = roles
        .get(&spec.role)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no role {:?} in this build", spec.role))?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("create {}", args.work_dir.display()))?;
    let env = match &args.address_book {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--address-book {}", path.display()))?;
            let book = drover_core::env::live::AddressBook::parse(&text, &spec.name)
                .map_err(|e| anyhow::anyhow!("--address-book {}: {e}", path.display()))?;
            drover_core::env::live::env_with_book(&spec.name, &args.work_dir, book)
        }
        None => drover_core::env::live::env(&spec.name, &args.work_dir, None),
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let context = NodeContext {
        env,
        name: spec.name.clone(),
        role: spec.role.clone(),
        index: spec.index,
        cluster: Arc::new(map.clone()),
        resources: spec.resources.clone(),
        attributes: spec.attributes.clone(),
        names: spec.names.clone(),
        shutdown: Shutdown(stopping),
        live: Some(Live {
            dir: args.work_dir.join("tasks"),
            docker_label: args.docker_label.clone(),
            docker_network: args.docker_network.clone(),
        }),
    };
    tracing::info!(node = %spec.name, role = %spec.role, "node starting");
    let mut node = (role.start)(context);
    tokio::select! {
        biased;
        result = &mut node => return result.map_err(|e| anyhow::anyhow!("{e}")),
        _ = shutdown => {}
    }
    // A graceful stop: the role finishes what it does on shutdown.
    let _ = stop.send(true);
    match tokio::time::timeout(std::time::Duration::from_secs(10), node).await {
        Ok(result) => result.map_err(|e| anyhow::anyhow!("{e}")),
        Err(_) => Ok(()),
    }
}
