//! Mesos' operator API event stream (`POST /api/v1` `{"type": "SUBSCRIBE"}`): the SUBSCRIBED
//! event with the state (agents, frameworks, tasks; after a failover also the `recovered_agents`
//! that have not re-registered yet), then TASK_ADDED, TASK_UPDATED, AGENT_ADDED (after the
//! TASK_ADDEDs of the tasks a re-registering agent brings), AGENT_REMOVED (unreachable),
//! FRAMEWORK_ADDED as they happen, and HEARTBEAT. What follows the cluster without polling it
//! (drover's DNS) reads this. A subscriber that does not keep up is dropped; it subscribes again
//! and starts from a fresh SUBSCRIBED.

use serde_json::{json, Value as Json};
use tokio::sync::mpsc::error::TrySendError;

use super::{state_name, Master, StreamSender, TaskStatus};

impl Master {
    /// A new subscriber: its stream starts with SUBSCRIBED.
    pub fn operator_subscribe(&mut self, tx: StreamSender) {
        let subscribed = json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "get_state": self.operator_state(),
                "heartbeat_interval_seconds": self.tuning.heartbeat_interval_ms as f64 / 1000.0,
            }
        });
        if tx.try_send(encode(&subscribed)).is_ok() {
            self.operators.push(tx);
        }
    }

    /// GET_STATE's answer: the agents, frameworks and tasks.
    pub fn operator_state(&self) -> Json {
        let tasks: Vec<Json> = self.tasks.keys().map(|k| self.operator_task(k)).collect();
        let agents: Vec<Json> = self
            .agents
            .keys()
            .map(|id| self.operator_agent(id))
            .collect();
        let frameworks: Vec<Json> = self
            .frameworks
            .keys()
            .map(|id| self.operator_framework(id))
            .collect();
        // Admitted by an earlier leader, not back yet (Mesos' `recovered_agents`).
        let recovered: Vec<Json> = self
            .registry
            .iter()
            .filter(|(id, e)| e.state == "admitted" && !self.agents.contains_key(*id))
            .map(|(id, e)| json!({"id": {"value": id}, "hostname": e.hostname}))
            .collect();
        json!({
            "get_tasks": {"tasks": tasks},
            "get_agents": {"agents": agents, "recovered_agents": recovered},
            "get_frameworks": {"frameworks": frameworks},
        })
    }

    pub(super) fn operator_event(&mut self, event: Json) {
        if self.operators.is_empty() {
            return;
        }
        let bytes = encode(&event);
        self.operators.retain(|tx| {
            !matches!(
                tx.try_send(bytes.clone()),
                Err(TrySendError::Full(_) | TrySendError::Closed(_))
            )
        });
    }

    pub(super) fn operator_heartbeat(&mut self) {
        self.operator_event(json!({"type": "HEARTBEAT"}));
    }

    pub(super) fn operator_task_added(&mut self, key: &(String, String)) {
        if self.operators.is_empty() {
            return;
        }
        let task = self.operator_task(key);
        self.operator_event(json!({"type": "TASK_ADDED", "task_added": {"task": task}}));
    }

    pub(super) fn operator_task_updated(&mut self, key: &(String, String), status: &TaskStatus) {
        if self.operators.is_empty() {
            return;
        }
        let state = self.tasks.get(key).map(|t| t.state).unwrap_or(status.state);
        self.operator_event(json!({
            "type": "TASK_UPDATED",
            "task_updated": {
                "framework_id": {"value": key.0},
                "status": status,
                "state": state_name(state),
            }
        }));
    }

    pub(super) fn operator_agent_added(&mut self, id: &str) {
        if self.operators.is_empty() {
            return;
        }
        let agent = self.operator_agent(id);
        self.operator_event(json!({"type": "AGENT_ADDED", "agent_added": {"agent": agent}}));
    }

    pub(super) fn operator_agent_removed(&mut self, id: &str) {
        self.operator_event(json!({
            "type": "AGENT_REMOVED",
            "agent_removed": {"agent_id": {"value": id}}
        }));
    }

    pub(super) fn operator_framework_added(&mut self, id: &str) {
        if self.operators.is_empty() {
            return;
        }
        let framework = self.operator_framework(id);
        self.operator_event(json!({
            "type": "FRAMEWORK_ADDED",
            "framework_added": {"framework": framework}
        }));
    }

    /// A task in the v1 operator API's shape.
    fn operator_task(&self, key: &(String, String)) -> Json {
        let Some(task) = self.tasks.get(key) else {
            return Json::Null;
        };
        let mut out = json!({
            "name": task.name,
            "task_id": {"value": key.1},
            "framework_id": {"value": key.0},
            "agent_id": {"value": task.agent_id},
            "state": state_name(task.state),
            "resources": drover_core::v1::to_mesos(&task.resources, None),
            "statuses": task.last_status.iter().collect::<Vec<_>>(),
        });
        if let Some(container) = task.info.get("container") {
            out["container"] = container.clone();
        }
        out
    }

    fn operator_agent(&self, id: &str) -> Json {
        let Some(agent) = self.agents.get(id) else {
            return Json::Null;
        };
        json!({
            "agent_info": {
                "id": {"value": id},
                "hostname": agent.hostname,
                "port": agent.port,
            },
            "active": agent.conn.is_some(),
            "pid": format!("slave(1)@{}:{}", agent.address, agent.port),
        })
    }

    fn operator_framework(&self, id: &str) -> Json {
        let Some(framework) = self.frameworks.get(id) else {
            return Json::Null;
        };
        json!({
            "framework_info": framework.info,
            "active": framework.stream.is_some(),
        })
    }
}

fn encode(event: &Json) -> bytes::Bytes {
    drover_core::recordio::encode(&serde_json::to_vec(event).unwrap_or_default())
}
