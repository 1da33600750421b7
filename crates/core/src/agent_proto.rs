//! The agent ↔ master protocol: drover's own (Mesos' is internal too).
//!
//! An agent opens one TCP connection to the leading master's port (the same port as the master's
//! HTTP API: the master tells the two apart by the first byte, since a frame starts with its
//! big-endian length and HTTP with an ASCII method) and keeps it. Both directions carry
//! [`crate::frame`] frames of JSON messages in the versioned envelope. The connection is the
//! session: when it breaks, the agent registers again (with its id, so the master knows it).
//!
//! Tasks travel as the JSON the framework sent (a Mesos v1 `TaskInfo`), so the agent sees the
//! same fields a Mesos executor would.

use serde::{Deserialize, Serialize};

use crate::task::TaskState;

/// Agent to master.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// First message on a connection. `agent_id` is `None` for a new agent, or the id a master
    /// gave it before (re-registration: `tasks` lists what it runs).
    Register(Registration),
    /// A task's status changed. Sent again until the master acknowledges its `uuid`.
    Update(StatusUpdate),
    /// Answers [`MasterMessage::Ping`].
    Pong { seq: u64 },
    /// Before `Register`, from an agent with a credential (Mesos' `--credential`): the master
    /// answers with a [`MasterMessage::Challenge`].
    Authenticate { principal: String },
    /// The answer to the challenge: `HMAC-SHA256(secret, AGENT_CONTEXT || 0 || nonce)`, base64.
    Proof { answer: String },
}

/// What an agent's proof is bound to (see [`crate::auth::challenge`]).
pub const AGENT_CONTEXT: &str = "drover-agent-link";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub agent_id: Option<String>,
    pub hostname: String,
    /// The agent's own HTTP port (`/state`).
    pub port: u16,
    /// The address the agent is reached at (its `--ip`) when that is not its host name: the
    /// host name is what users and constraints see, the address what probes connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Resources in Mesos' text form (`cpus:4;mem:8192;ports:[31000-32000]`).
    pub resources: String,
    /// Attributes in Mesos' text form (`rack:r1;zone:a`).
    #[serde(default)]
    pub attributes: String,
    /// Every task the agent knows that has not ended acknowledged.
    #[serde(default)]
    pub tasks: Vec<TaskReport>,
}

/// A task as an agent reports it on re-registration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskReport {
    pub framework_id: String,
    /// The framework's `FrameworkInfo` JSON as the master sent it with the task.
    #[serde(default)]
    pub framework: serde_json::Value,
    /// The task's `TaskInfo` JSON.
    pub task: serde_json::Value,
    /// The latest state the agent saw (acknowledged or not).
    pub state: TaskState,
    /// Its container's addresses, when it has some (a new leading master learns them here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
}

/// One status update of a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub task_id: String,
    pub framework_id: String,
    /// Unique per update; acknowledgements name it.
    pub uuid: String,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the agent saw the change (ms since the epoch, the agent's clock).
    pub timestamp_ms: u64,
    /// The task's health, when it has a health check the agent runs (Mesos' `TaskStatus.healthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The task's own addresses (a container's on its network): Mesos'
    /// `container_status.network_infos`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
}

/// Master to agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MasterMessage {
    /// The agent is (re-)admitted under `agent_id`.
    Registered { agent_id: String, master: String },
    /// The master will not admit this agent (for example: it was marked gone); the agent stops.
    Refused { reason: String },
    /// Run a task (a Mesos v1 `TaskInfo`) for a framework (its `FrameworkInfo`). Shared: the
    /// master keeps the task's JSON and sends one framework's JSON with each of its launches.
    RunTask {
        framework_id: String,
        framework: std::sync::Arc<serde_json::Value>,
        task: std::sync::Arc<serde_json::Value>,
    },
    /// Kill a task; its terminal update follows through the status stream.
    KillTask {
        framework_id: String,
        task_id: String,
    },
    /// The framework is gone: kill all its tasks.
    ShutdownFramework { framework_id: String },
    /// The framework acknowledged an update.
    Acknowledge { task_id: String, uuid: String },
    /// Health check; the agent answers with [`AgentMessage::Pong`].
    Ping { seq: u64 },
    /// A fresh nonce (base64) the agent must prove its secret on.
    Challenge { nonce: String },
    /// The proof held: the connection is the principal's; `Register` may follow.
    Authenticated { principal: String },
    /// The agent did not authenticate (no credential where the master requires one, an unknown
    /// principal or a wrong proof); the connection is closed and the agent may try again.
    AuthenticationFailed { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_message, encode_message};

    #[test]
    fn messages_round_trip_through_frames() {
        let message = AgentMessage::Update(StatusUpdate {
            task_id: "t1".into(),
            framework_id: "f1".into(),
            uuid: "u1".into(),
            state: TaskState::TaskRunning,
            message: None,
            reason: None,
            timestamp_ms: 5,
            healthy: Some(true),
            ip_addresses: vec!["172.18.0.2".into()],
        });
        let frame = encode_message(&message).unwrap();
        assert_eq!(decode_message::<AgentMessage>(&frame).unwrap(), message);
        let err = decode_message::<MasterMessage>(b"\x01{\"type\":\"boom\"}").unwrap_err();
        assert!(err.to_string().contains("unknown variant `boom`"), "{err}");
    }
}
