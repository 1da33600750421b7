//! Containerizers: how a task's command becomes something running.
//!
//! `live::process` runs it as a process (`sh -c`, its own process group); the Docker and the
//! simulated containerizers come next.

pub mod live;

use drover_core::task::TaskState;

/// How a task's process ended, as the task state Mesos reports for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub state: TaskState,
    pub message: String,
}
