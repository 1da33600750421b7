//! The cluster a scenario describes: which nodes exist, what role each plays, and the registry of
//! roles that can be started (`drover-nodes` registers the real ones).

use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use drover_core::{Env, Resources};
use tokio::sync::watch;

use crate::scenario::{Scenario, ScenarioError};

/// What a node's main future returns; an error fails the run.
pub type NodeResult = Result<(), Box<dyn Error>>;
pub type NodeFuture = Pin<Box<dyn Future<Output = NodeResult>>>;

/// Everything a node gets when it starts.
pub struct NodeContext {
    pub env: Env,
    pub name: String,
    pub role: String,
    /// 1-based position among the nodes of its role.
    pub index: u32,
    pub cluster: Arc<ClusterMap>,
    pub resources: Option<Resources>,
    pub attributes: Option<String>,
    /// The names a `resolver` asks for (the scenario's `names` of its node group).
    pub names: Vec<String>,
    pub shutdown: Shutdown,
    /// How a node run live (`drover node`, what `drover sim --live` starts) differs; `None` in
    /// the simulator. A role that must differ live (the agent runs real tasks) looks here.
    pub live: Option<Live>,
}

/// What a node run live has that a simulated one does not.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Where it keeps its files (an agent its tasks' sandboxes).
    pub dir: std::path::PathBuf,
    /// An agent runs `DOCKER` tasks on the engine it reaches, labelling their containers with
    /// this (unique to the run, so a run finds and removes only its own); `None`: no Docker tasks.
    pub docker_label: Option<String>,
    /// The Docker network those tasks join (the agent's default when `None`).
    pub docker_network: Option<String>,
}

/// Resolves when the node is asked to stop gracefully.
#[derive(Clone)]
pub struct Shutdown(pub watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown that never comes (for nodes run outside a scenario).
    pub fn never() -> Self {
        let (sender, receiver) = watch::channel(false);
        std::mem::forget(sender);
        Shutdown(receiver)
    }

    pub async fn requested(&mut self) {
        // A dropped sender means the harness is gone: stop too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A role that can be started in a simulation.
#[derive(Clone)]
pub struct Role {
    pub name: String,
    /// The port its HTTP API listens on, for `http` actions.
    pub http_port: Option<u16>,
    pub start: Arc<dyn Fn(NodeContext) -> NodeFuture + Send + Sync>,
}

impl Role {
    pub fn new(
        name: &str,
        http_port: Option<u16>,
        start: impl Fn(NodeContext) -> NodeFuture + Send + Sync + 'static,
    ) -> Self {
        Role {
            name: name.to_string(),
            http_port,
            start: Arc::new(start),
        }
    }
}

/// The roles a simulation can start, by name.
#[derive(Clone, Default)]
pub struct Roles(BTreeMap<String, Role>);

impl Roles {
    pub fn new() -> Self {
        Roles::default()
    }

    pub fn with(mut self, role: Role) -> Self {
        self.0.insert(role.name.clone(), role);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.0.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// One node of the cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub role: String,
    pub index: u32,
    pub resources: Option<Resources>,
    pub attributes: Option<String>,
    /// What a node that asks for names (a `resolver`) asks for.
    pub names: Vec<String>,
}

/// Every node of the cluster, in declaration order.
#[derive(Clone, Debug, Default)]
pub struct ClusterMap {
    pub nodes: Vec<NodeSpec>,
    /// The scenario's `cluster.auth`: whether (and with what secret) its nodes authenticate.
    pub auth: Option<crate::scenario::ClusterAuth>,
}

impl ClusterMap {
    pub fn of_role(&self, role: &str) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.name.as_str())
            .collect()
    }

    pub fn role_of(&self, node: &str) -> Option<&str> {
        self.nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.role.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// Lays out the scenario's cluster and checks that every role is registered and every name is
    /// unique and usable as a host name.
    pub fn plan(scenario: &Scenario, roles: &Roles) -> Result<ClusterMap, ScenarioError> {
        let error = |path: String, message: String| ScenarioError {
            file: scenario.file.clone(),
            path,
            message,
        };
        let cluster = &scenario.cluster;
        let mut nodes: Vec<(String, NodeSpec)> = Vec::new();
        let counted = |path: String,
                       role: &str,
                       count: u32,
                       names: &[String],
                       nodes: &mut Vec<(String, NodeSpec)>| {
            for index in 1..=count {
                let spec = NodeSpec {
                    name: format!("{role}-{index}"),
                    role: role.to_string(),
                    index,
                    resources: None,
                    attributes: None,
                    names: names.to_vec(),
                };
                nodes.push((path.clone(), spec));
            }
        };
        counted(
            "cluster.coord".into(),
            "coord",
            cluster.coord,
            &[],
            &mut nodes,
        );
        counted(
            "cluster.masters".into(),
            "master",
            cluster.masters,
            &[],
            &mut nodes,
        );
        counted(
            "cluster.schedulers".into(),
            "scheduler",
            cluster.schedulers,
            &[],
            &mut nodes,
        );
        for (i, agent) in cluster.agents.iter().enumerate() {
            let spec = NodeSpec {
                name: agent.name.clone(),
                role: "agent".into(),
                index: i as u32 + 1,
                resources: agent.resources.clone(),
                attributes: agent.attributes.clone(),
                names: Vec::new(),
            };
            nodes.push((format!("cluster.agents[{i}]"), spec));
        }
        for (i, group) in cluster.nodes.iter().enumerate() {
            let path = format!("cluster.nodes[{i}]");
            match (&group.name, group.count) {
                (Some(name), None) => {
                    let index =
                        nodes.iter().filter(|(_, n)| n.role == group.role).count() as u32 + 1;
                    let spec = NodeSpec {
                        name: name.clone(),
                        role: group.role.clone(),
                        index,
                        resources: None,
                        attributes: None,
                        names: group.names.clone(),
                    };
                    nodes.push((path, spec));
                }
                (None, Some(count)) => counted(path, &group.role, count, &group.names, &mut nodes),
                _ => return Err(error(path, "expected either `name` or `count`".into())),
            }
        }
        let mut seen = BTreeMap::new();
        for (path, node) in &nodes {
            if roles.get(&node.role).is_none() {
                let known = roles.names().join(", ");
                return Err(error(
                    path.clone(),
                    format!(
                        "role `{}` cannot run in this build; expected one of: {known}",
                        node.role
                    ),
                ));
            }
            let valid = !node.name.is_empty()
                && node.name.len() <= 63
                && node
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !node.name.starts_with('-')
                && !matches!(
                    node.name.as_str(),
                    crate::trace::HARNESS | crate::trace::CLIENT
                );
            if !valid {
                return Err(error(path.clone(), format!("expected a host name (letters, digits, `-`; not `sim` or `client`), found {:?}", node.name)));
            }
            if let Some(first) = seen.insert(node.name.clone(), path.clone()) {
                return Err(error(
                    path.clone(),
                    format!("node name {:?} is already used at `{first}`", node.name),
                ));
            }
        }
        Ok(ClusterMap {
            nodes: nodes.into_iter().map(|(_, n)| n).collect(),
            auth: cluster.auth.clone(),
        })
    }
}
