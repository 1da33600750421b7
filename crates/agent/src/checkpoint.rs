//! What the agent keeps on its Disk so that a restarted agent knows its tasks, and the pure
//! decision of what to do with each of them at recovery.
//!
//! What is kept, by path (entries of the agent's [`crate::journal`], the one file `agent/journal`;
//! agents before it wrote each path as a file of its own, which a new agent takes over):
//! - `agent/id`: the agent id the master gave (JSON);
//! - `agent/streams/<escaped task id>`: one task's status update stream (JSON), until its
//!   terminal update is acknowledged (`agent/status`, all streams in one, is what agents wrote
//!   before that: moved to per-stream entries at recovery);
//! - `agent/tasks/<escaped task id>`: one [`TaskCheckpoint`] per task not ended-and-acknowledged.
//!
//! Every change is synced before the agent acts on it: a task's checkpoint before it is launched,
//! the status streams before an update is sent (the agent's core groups the changes of the inputs
//! it handled into one append and one sync).

use drover_core::task::TaskState;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::containerizer::{Handle, Kind};

pub const AGENT_ID_PATH: &str = "agent/id";
/// Every task's status update stream in one file, as agents before per-stream files wrote it
/// (read once at recovery, then replaced by `STREAMS_PREFIX` files).
pub const STATUS_PATH: &str = "agent/status";
pub const TASKS_PREFIX: &str = "agent/tasks/";
pub const STREAMS_PREFIX: &str = "agent/streams/";

/// The Disk path of a task's checkpoint: task ids may hold any character, the path only
/// `[A-Za-z0-9_-.]` (others, and a leading `.`, written `%XX`).
pub fn task_path(task_id: &str) -> String {
    encoded_path(TASKS_PREFIX, task_id)
}

/// The Disk path of a task's status update stream (encoded as [`task_path`]).
pub fn stream_path(task_id: &str) -> String {
    encoded_path(STREAMS_PREFIX, task_id)
}

fn encoded_path(prefix: &str, task_id: &str) -> String {
    let mut path = String::from(prefix);
    for (i, byte) in task_id.bytes().enumerate() {
        let plain =
            byte.is_ascii_alphanumeric() || b"-_".contains(&byte) || (byte == b'.' && i > 0);
        if plain {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    if task_id.is_empty() {
        path.push('%');
    }
    path
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIdentity {
    pub agent_id: String,
}

/// One task as the agent checkpoints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    pub task_id: String,
    pub framework_id: String,
    /// The framework's `FrameworkInfo` JSON, as the master sent it.
    #[serde(default)]
    pub framework: Json,
    /// The task's `TaskInfo` JSON.
    pub task: Json,
    pub containerizer: Kind,
    /// Set once the containerizer started the task.
    #[serde(default)]
    pub handle: Option<Handle>,
    /// The latest state the agent reported.
    pub state: TaskState,
    /// When the agent launched it (its wall clock).
    pub launched_ms: u64,
}

impl TaskCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<TaskCheckpoint, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("task checkpoint: {e}"))
    }
}

/// How a restarted agent treats what it finds (`--recover`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoverMode {
    /// Re-adopt running tasks and report the end of those that ended meanwhile (Mesos' default).
    #[default]
    Reconnect,
    /// Kill every task found; each ends TASK_KILLED (drover keeps serving afterwards, unlike
    /// Mesos' agent, which exits after its cleanup).
    Cleanup,
}

impl std::str::FromStr for RecoverMode {
    type Err = String;

    fn from_str(text: &str) -> Result<RecoverMode, String> {
        match text {
            "reconnect" => Ok(RecoverMode::Reconnect),
            "cleanup" => Ok(RecoverMode::Cleanup),
            other => Err(format!(
                "--recover: expected reconnect or cleanup, found {other:?}"
            )),
        }
    }
}

/// What to do with a checkpointed task at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Ended and acknowledged; only its checkpoint was left: remove it.
    Forget,
    /// Ended; its terminal update waits for an acknowledgement (it is resent after registering).
    AwaitAck,
    /// Re-attach to it (`handle` may be unknown: the agent stopped mid-launch) and watch it.
    Adopt,
    /// Re-attach to it and kill it (`--recover=cleanup`).
    AdoptAndKill,
    /// It cannot be recovered: it fails with this message.
    Fail(String),
}

/// The decision for one task. `stream_latest` is the latest state in its status stream (`None`
/// when the stream has ended: everything was acknowledged); `available` says whether the task's
/// containerizer is enabled in this incarnation.
pub fn decide(
    checkpoint: &TaskCheckpoint,
    stream_latest: Option<TaskState>,
    mode: RecoverMode,
    available: bool,
) -> Recovery {
    // The streams are checkpointed before the task's file, so they may know a later state.
    let ended = checkpoint.state.is_terminal() || stream_latest.is_some_and(TaskState::is_terminal);
    if ended {
        return match stream_latest {
            Some(_) => Recovery::AwaitAck,
            None => Recovery::Forget,
        };
    }
    if !available {
        return Recovery::Fail(format!(
            "the {} containerizer is not enabled on this agent any more",
            checkpoint.containerizer.name()
        ));
    }
    match mode {
        RecoverMode::Reconnect => Recovery::Adopt,
        RecoverMode::Cleanup => Recovery::AdoptAndKill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checkpoint(state: TaskState) -> TaskCheckpoint {
        TaskCheckpoint {
            task_id: "web.1".into(),
            framework_id: "f1".into(),
            framework: json!({"name": "marathon"}),
            task: json!({"task_id": {"value": "web.1"}}),
            containerizer: Kind::Mesos,
            handle: Some(Handle::Process {
                pid: 42,
                start_ticks: Some(7),
            }),
            state,
            launched_ms: 1000,
        }
    }

    #[test]
    fn checkpoints_round_trip_and_bad_ones_are_errors() {
        for handle in [
            None,
            Some(Handle::Docker {
                container: "abc".into(),
                ip_addresses: vec!["172.18.0.5".into()],
            }),
            Some(Handle::Sim {
                start_ms: 5,
                ip_addresses: Vec::new(),
            }),
            Some(Handle::Sim {
                start_ms: 5,
                ip_addresses: vec!["10.0.3.2".into()],
            }),
        ] {
            let mut original = checkpoint(TaskState::TaskRunning);
            original.handle = handle;
            assert_eq!(
                TaskCheckpoint::decode(&original.encode()).unwrap(),
                original
            );
        }
        let text = String::from_utf8(checkpoint(TaskState::TaskRunning).encode()).unwrap();
        assert!(
            text.contains(r#""handle":{"kind":"process","pid":42,"start_ticks":7}"#),
            "{text}"
        );
        assert!(text.contains(r#""state":"TASK_RUNNING""#), "{text}");
        let err = TaskCheckpoint::decode(b"{\"task_id\":1}").unwrap_err();
        assert!(err.starts_with("task checkpoint: invalid type"), "{err}");
    }

    #[test]
    fn task_paths_are_plain_and_distinct() {
        assert_eq!(task_path("web.1"), "agent/tasks/web.1");
        assert_eq!(task_path("a/b c"), "agent/tasks/a%2Fb%20c");
        assert_eq!(task_path(".."), "agent/tasks/%2E.");
        assert_ne!(task_path("a%2F"), task_path("a/"));
        assert_eq!(task_path(""), "agent/tasks/%");
    }

    #[test]
    fn recovery_decisions() {
        use TaskState::*;
        let running = checkpoint(TaskRunning);
        let reconnect = RecoverMode::Reconnect;
        assert_eq!(decide(&running, None, reconnect, true), Recovery::Adopt);
        assert_eq!(
            decide(&running, Some(TaskRunning), reconnect, true),
            Recovery::Adopt
        );
        assert_eq!(
            decide(&running, None, RecoverMode::Cleanup, true),
            Recovery::AdoptAndKill
        );
        // The stream already holds the end: it is not run again.
        assert_eq!(
            decide(&running, Some(TaskFinished), reconnect, true),
            Recovery::AwaitAck
        );
        assert_eq!(
            decide(&checkpoint(TaskFailed), Some(TaskFailed), reconnect, true),
            Recovery::AwaitAck
        );
        assert_eq!(
            decide(&checkpoint(TaskKilled), None, reconnect, true),
            Recovery::Forget
        );
        assert!(matches!(
            decide(&checkpoint(TaskStaging), None, reconnect, false),
            Recovery::Fail(m) if m.contains("mesos containerizer is not enabled")
        ));
        assert_eq!("cleanup".parse(), Ok(RecoverMode::Cleanup));
        assert!("restart".parse::<RecoverMode>().is_err());
    }
}
