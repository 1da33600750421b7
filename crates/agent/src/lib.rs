//! drover-agent: runs tasks and reports their status.
//!
//! - [`daemon`]: the agent itself, over the Env (registration, tasks, status, recovery, `/state`);
//! - [`config`]: its configuration (master locator, resources, recovery mode, timeouts);
//! - [`task`]: what a task's `TaskInfo` says to run (pure);
//! - [`checkpoint`]: what survives a restart, and the recovery decision per task (pure);
//! - [`status`]: the status update manager (per-task streams, retries, acknowledgements);
//! - [`containerizer`]: how tasks run: `sim` (simulated), `live::mesos` (a process group),
//!   `live::docker` (a container);
//! - [`health`]: Mesos health checks (parsing, the per-task tracker); the agent runs them;
//! - [`detector`]: finding the leading master (fixed, or through ZooKeeper);
//! - [`state`]: `/state` in Mesos' shape;
//! - [`files`]: Mesos' `/files/browse|read|download` over task sandboxes (live only in effect);
//! - [`live`]: what only a live agent does (guessing the machine's resources).

pub mod checkpoint;
pub mod config;
pub mod containerizer;
pub mod daemon;
pub mod detector;
pub mod files;
pub mod health;
pub mod journal;
pub mod live;
pub mod shell;
pub mod state;
pub mod status;
pub mod task;

pub use config::{AgentConfig, MasterLocator, RecoverMode};
pub use daemon::{run, AgentError};
