//! Containerizers: how a task's command becomes something running, and how the agent finds it
//! again after a restart.
//!
//! Three implementations: `mesos` (`live::mesos`, a process: `sh -c` in its own process group),
//! `docker` (`live::docker`, a container through the engine's API) and `sim` ([`sim`], a simulated
//! process inside the simulator). The agent holds them as `Arc<dyn Containerizer>` and never names the
//! live ones, so the same agent code runs live and simulated.

pub mod live;
pub mod sim;

use std::path::PathBuf;
use std::time::Duration;

use drover_core::env::BoxFuture;
use drover_core::task::TaskState;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::task::LaunchSpec;

/// How a task's process ended, as the task state Mesos reports for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub state: TaskState,
    pub message: String,
}

/// Which containerizer runs a task (checkpointed with the task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Mesos,
    Docker,
    Sim,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mesos => "mesos",
            Kind::Docker => "docker",
            Kind::Sim => "sim",
        }
    }
}

/// What identifies a started task to its containerizer, checkpointed so that a restarted agent
/// finds the task again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Handle {
    /// A process group led by `pid`; `start_ticks` (the kernel's start time of the process) tells
    /// a re-used pid from the task's.
    Process {
        pid: i32,
        #[serde(default)]
        start_ticks: Option<u64>,
    },
    Docker {
        container: String,
        /// The container's addresses on its network (what `network_infos` reports).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ip_addresses: Vec<String>,
    },
    /// A simulated process that started at `start_ms` (the agent's wall clock); a simulated
    /// container on a network of its own has an address there.
    Sim {
        start_ms: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ip_addresses: Vec<String>,
    },
}

impl Handle {
    /// The task's own addresses, when it has some (a container on a network of its own).
    pub fn ip_addresses(&self) -> &[String] {
        match self {
            Handle::Docker { ip_addresses, .. } | Handle::Sim { ip_addresses, .. } => ip_addresses,
            Handle::Process { .. } => &[],
        }
    }
}

/// Asks a running task to stop, with a grace period between SIGTERM and SIGKILL.
pub type KillSignal = oneshot::Receiver<Duration>;

/// Resolves with the grace period when a kill is asked for; never when the asker is gone.
pub async fn kill_requested(kill: KillSignal) -> Duration {
    match kill.await {
        Ok(grace) => grace,
        Err(_) => std::future::pending().await,
    }
}

/// A started task.
pub trait Running: Send {
    /// Waits until the task ends on its own, or kills it when `kill` fires; says how it ended.
    fn wait(self: Box<Self>, kill: KillSignal) -> BoxFuture<'static, Exit>;
}

pub struct Launched {
    pub handle: Handle,
    pub running: Box<dyn Running>,
}

pub trait Containerizer: Send + Sync + 'static {
    fn kind(&self) -> Kind;

    /// The directory on this machine that holds a task's files (its sandbox: `stdout`, `stderr`,
    /// what the task writes), when this containerizer gives it one. A simulated process has
    /// none; the agent then serves no files of it.
    fn sandbox(&self, _task_id: &str) -> Option<PathBuf> {
        None
    }

    /// Starts a task. An error is the reason the launch failed (the task fails with it).
    fn launch(&self, spec: &LaunchSpec) -> BoxFuture<'static, Result<Launched, String>>;

    /// Re-attaches to a task an earlier incarnation of the agent started. `handle` is `None`
    /// when the agent stopped before it learned it; a containerizer that can find its tasks by
    /// other means (Docker labels) tries, the others fail with the reason.
    fn recover(
        &self,
        spec: &LaunchSpec,
        handle: Option<Handle>,
        launched_ms: u64,
    ) -> BoxFuture<'static, Result<Launched, String>>;

    /// Removes what an ended task leaves behind (a container), once its end is checkpointed.
    fn cleanup(&self, _handle: &Handle) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    /// Runs a COMMAND health check next to a running task: `sh -c command` with the task's
    /// environment plus `environment`, where the task runs (its sandbox, its container). `Ok` when
    /// it exits with status 0 within `timeout`; `Err` says why not.
    fn check_command(
        &self,
        _spec: &LaunchSpec,
        _handle: &Handle,
        _command: &str,
        _environment: &[(String, String)],
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        let kind = self.kind().name();
        Box::pin(async move {
            Err(format!(
                "the {kind} containerizer cannot run command health checks"
            ))
        })
    }

    /// At recovery: stops what runs under this agent that no checkpointed task names.
    fn cleanup_orphans(&self, _known_tasks: &[String]) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
