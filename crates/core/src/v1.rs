//! The Mesos v1 scheduler HTTP API's messages in protobuf's JSON mapping (field names as in
//! `mesos/v1/scheduler/scheduler.proto` and `mesos/v1/mesos.proto`, enums as their names), and the
//! conversions between Mesos' `Resource` lists and drover's [`Resources`].
//!
//! Decoding is lenient where frameworks differ (unknown fields are ignored, optional fields
//! default) and strict where it matters (a call's `type` must name a known call, a resource must
//! be well formed); every error is a value with the path and what was expected.
//!
//! Shared vocabulary: the master serves these, the agent reads `TaskInfo`, the scheduler's client
//! sends and receives them.

use std::collections::BTreeSet;

use crate::resources::{Ranges, Resources, Scalar, Value, ANY_ROLE};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// `{"value": "..."}`, Mesos' id wrapper.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    pub value: String,
}

impl Id {
    pub fn new(value: impl Into<String>) -> Id {
        Id {
            value: value.into(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
    /// The old single role (deprecated in Mesos, still sent by many frameworks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webui_url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
}

impl FrameworkInfo {
    /// The role the framework's resources are allocated to (drover gives a framework one role).
    pub fn effective_role(&self) -> String {
        self.roles
            .first()
            .cloned()
            .or_else(|| self.role.clone())
            .unwrap_or_else(|| ANY_ROLE.to_string())
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c.kind == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

/// A Mesos `Resource`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<ScalarValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<RangesValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<SetValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalarValue {
    pub value: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangesValue {
    #[serde(default)]
    pub range: Vec<RangeValue>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeValue {
    pub begin: u64,
    pub end: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetValue {
    #[serde(default)]
    pub item: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AllocationInfo {
    pub role: String,
}

/// Mesos' resource list for drover's resources, allocated to `allocation_role`.
pub fn to_mesos(resources: &Resources, allocation_role: Option<&str>) -> Vec<Resource> {
    resources
        .iter()
        .map(|(name, role, value)| {
            let mut resource = Resource {
                name: name.to_string(),
                kind: String::new(),
                scalar: None,
                ranges: None,
                set: None,
                role: Some(role.to_string()),
                allocation_info: allocation_role.map(|r| AllocationInfo {
                    role: r.to_string(),
                }),
            };
            match value {
                Value::Scalar(s) => {
                    resource.kind = "SCALAR".into();
                    resource.scalar = Some(ScalarValue { value: s.as_f64() });
                }
                Value::Ranges(r) => {
                    resource.kind = "RANGES".into();
                    resource.ranges = Some(RangesValue {
                        range: r
                            .iter()
                            .map(|(begin, end)| RangeValue { begin, end })
                            .collect(),
                    });
                }
                Value::Set(items) => {
                    resource.kind = "SET".into();
                    resource.set = Some(SetValue {
                        item: items.iter().cloned().collect(),
                    });
                }
            }
            resource
        })
        .collect()
}

/// drover's resources for a Mesos resource list; the error names the resource and what is wrong.
pub fn from_mesos(list: &[Resource]) -> Result<Resources, String> {
    let mut out = Resources::new();
    for (i, resource) in list.iter().enumerate() {
        let at = format!("resources[{i}] ({})", resource.name);
        let role = resource.role.as_deref().unwrap_or(ANY_ROLE);
        let value = match (
            resource.kind.as_str(),
            &resource.scalar,
            &resource.ranges,
            &resource.set,
        ) {
            ("SCALAR", Some(s), _, _) => {
                Value::Scalar(Scalar::from_f64(s.value).ok_or_else(|| {
                    format!(
                        "{at}: expected a non-negative finite scalar, found {}",
                        s.value
                    )
                })?)
            }
            ("RANGES", _, Some(r), _) => {
                if let Some(bad) = r.range.iter().find(|r| r.begin > r.end) {
                    return Err(format!(
                        "{at}: range {}-{} ends before it begins",
                        bad.begin, bad.end
                    ));
                }
                Value::Ranges(Ranges::new(r.range.iter().map(|r| (r.begin, r.end))))
            }
            ("SET", _, _, Some(s)) => Value::Set(s.item.iter().cloned().collect::<BTreeSet<_>>()),
            (kind, _, _, _) => {
                return Err(format!(
                    "{at}: expected type SCALAR, RANGES or SET with its value, found {kind:?}"
                ))
            }
        };
        out.push(&resource.name, role, value);
    }
    Ok(out)
}

/// A call from a scheduler.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Call {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<Id>,
    #[serde(rename = "type")]
    pub kind: CallType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revive: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<Acknowledge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    Subscribe,
    Teardown,
    Accept,
    Decline,
    Revive,
    Suppress,
    Kill,
    Acknowledge,
    Reconcile,
    Message,
    Request,
    Shutdown,
    AcceptInverseOffers,
    DeclineInverseOffers,
    AcknowledgeOperationStatus,
    ReconcileOperations,
    UpdateFramework,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Subscribe {
    pub framework_info: FrameworkInfo,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Accept {
    #[serde(default)]
    pub offer_ids: Vec<Id>,
    #[serde(default)]
    pub operations: Vec<Operation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Launch {
    #[serde(default)]
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: Id,
    pub agent_id: Id,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    /// Container, labels, health checks, discovery...: passed to the agent as they came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<Json>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CommandInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Environment {
    #[serde(default)]
    pub variables: Vec<Variable>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Variable {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Decline {
    #[serde(default)]
    pub offer_ids: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Kill {
    pub task_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Acknowledge {
    pub agent_id: Id,
    pub task_id: Id,
    /// Base64 of the status update's UUID.
    pub uuid: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Reconcile {
    #[serde(default)]
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ReconcileTask {
    pub task_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

/// Decodes a call, with the JSON path of what is wrong.
pub fn decode_call(body: &[u8]) -> Result<Call, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("Failed to parse body into Call: {inner}")
        } else {
            format!("Failed to parse body into Call: at `{path}`: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_convert_both_ways() {
        let resources: Resources = "cpus:1.5;mem(web):128;ports:[31000-31005];zones:{a,b}"
            .parse()
            .unwrap();
        let mesos = to_mesos(&resources, Some("web"));
        let json = serde_json::to_value(&mesos[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.5}, "role": "*", "allocation_info": {"role": "web"}})
        );
        assert_eq!(from_mesos(&mesos), Ok(resources));
    }

    #[test]
    fn a_pymesos_style_subscribe_decodes() {
        let body = br#"{"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "root", "name": "t", "hostname": "h", "capabilities": [{"type": "PARTITION_AWARE"}], "extra": 1}}}"#;
        let call = decode_call(body).unwrap();
        assert_eq!(call.kind, CallType::Subscribe);
        let info = call.subscribe.unwrap().framework_info;
        assert_eq!(info.effective_role(), "*");
        assert!(info.has_capability("PARTITION_AWARE"));
    }

    #[test]
    fn bad_calls_say_where() {
        let err = decode_call(br#"{"type": "LAUNCH_ALL"}"#).unwrap_err();
        assert!(
            err.starts_with(
                "Failed to parse body into Call: at `type`: unknown variant `LAUNCH_ALL`"
            ),
            "{err}"
        );
        let err = from_mesos(&[Resource {
            name: "cpus".into(),
            kind: "SCALAR".into(),
            scalar: None,
            ranges: None,
            set: None,
            role: None,
            allocation_info: None,
        }])
        .unwrap_err();
        assert_eq!(err, "resources[0] (cpus): expected type SCALAR, RANGES or SET with its value, found \"SCALAR\"");
    }
}

/// An event to a scheduler (one RecordIO record on its subscription stream).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<Offers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescind: Option<Rescind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorMessage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    Subscribed,
    Offers,
    InverseOffers,
    Rescind,
    RescindInverseOffer,
    Update,
    UpdateOperationStatus,
    Message,
    Failure,
    Error,
    Heartbeat,
}

impl Event {
    fn of(kind: EventType) -> Event {
        Event {
            kind,
            subscribed: None,
            offers: None,
            rescind: None,
            update: None,
            failure: None,
            error: None,
        }
    }

    pub fn heartbeat() -> Event {
        Event::of(EventType::Heartbeat)
    }

    pub fn subscribed(subscribed: Subscribed) -> Event {
        Event {
            subscribed: Some(subscribed),
            ..Event::of(EventType::Subscribed)
        }
    }

    pub fn offers(offers: Vec<Offer>) -> Event {
        Event {
            offers: Some(Offers { offers }),
            ..Event::of(EventType::Offers)
        }
    }

    pub fn rescind(offer_id: Id) -> Event {
        Event {
            rescind: Some(Rescind { offer_id }),
            ..Event::of(EventType::Rescind)
        }
    }

    pub fn update(status: TaskStatus) -> Event {
        Event {
            update: Some(Update { status }),
            ..Event::of(EventType::Update)
        }
    }

    pub fn error(message: impl Into<String>) -> Event {
        Event {
            error: Some(ErrorMessage {
                message: message.into(),
            }),
            ..Event::of(EventType::Error)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Subscribed {
    pub framework_id: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_info: Option<Json>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Offers {
    #[serde(default)]
    pub offers: Vec<Offer>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Offer {
    pub id: Id,
    pub framework_id: Id,
    pub agent_id: Id,
    pub hostname: String,
    #[serde(default)]
    pub resources: Vec<Resource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<Json>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
    /// Where the agent is reached: its host name, its address and its port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Url>,
}

/// Mesos' `URL`, as an offer carries the agent's: `{"scheme": "http", "address": {"hostname":
/// "od1000-0", "ip": "10.0.0.5", "port": 5051}, "path": "/slave(1)"}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Url {
    pub scheme: String,
    pub address: Address,
    #[serde(default)]
    pub path: String,
}

impl Offer {
    /// Where the agent's tasks are reached: the offer's address, else its host name.
    pub fn agent_address(&self) -> &str {
        self.url
            .as_ref()
            .map(|u| u.address.ip.as_str())
            .filter(|ip| !ip.is_empty())
            .unwrap_or(&self.hostname)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Rescind {
    pub offer_id: Id,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Update {
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct TaskStatus {
    pub task_id: Id,
    pub state: crate::task::TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// Base64 of the update's uuid; absent for reconciliation answers, which need no ack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// The task's container's addresses, when it has its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
}

impl TaskStatus {
    /// A status the master makes itself (`SOURCE_MASTER`) with `reason`; the rest is left out
    /// (set what applies with struct update syntax).
    pub fn from_master(task_id: Id, state: crate::task::TaskState, reason: &str) -> TaskStatus {
        TaskStatus {
            task_id,
            state,
            message: None,
            source: Some("SOURCE_MASTER".into()),
            reason: Some(reason.into()),
            agent_id: None,
            timestamp: None,
            uuid: None,
            healthy: None,
            container_status: None,
        }
    }

    /// [`TaskStatus::from_master`] of the task on `agent_id`, stamped `unix_ms`, with `message`
    /// when there is one to say.
    pub fn from_master_at(
        task_id: Id,
        agent_id: Option<Id>,
        state: crate::task::TaskState,
        reason: &str,
        message: Option<&str>,
        unix_ms: u64,
    ) -> TaskStatus {
        TaskStatus {
            message: message.map(str::to_string),
            agent_id,
            timestamp: Some(unix_ms as f64 / 1000.0),
            ..TaskStatus::from_master(task_id, state, reason)
        }
    }
}

/// Mesos' `ContainerStatus`: `{"network_infos": [{"ip_addresses": [{"protocol": "IPv4",
/// "ip_address": "172.18.0.5"}]}]}`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ContainerStatus {
    #[serde(default)]
    pub network_infos: Vec<NetworkInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct NetworkInfo {
    #[serde(default)]
    pub ip_addresses: Vec<IpAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct IpAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

impl ContainerStatus {
    /// One network with these addresses; `None` for none.
    pub fn with_addresses(addresses: &[String]) -> Option<ContainerStatus> {
        if addresses.is_empty() {
            return None;
        }
        let ip_addresses = addresses
            .iter()
            .map(|ip| IpAddress {
                protocol: Some(if ip.contains(':') { "IPv6" } else { "IPv4" }.into()),
                ip_address: Some(ip.clone()),
            })
            .collect();
        Some(ContainerStatus {
            network_infos: vec![NetworkInfo {
                ip_addresses,
                name: None,
            }],
        })
    }

    /// Every address of every network.
    pub fn addresses(&self) -> Vec<String> {
        self.network_infos
            .iter()
            .flat_map(|n| n.ip_addresses.iter())
            .filter_map(|a| a.ip_address.clone())
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Failure {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ErrorMessage {
    pub message: String,
}

#[cfg(test)]
mod event_tests {
    use super::*;
    use crate::task::TaskState;

    #[test]
    fn events_serialize_in_protobuf_json() {
        let status = TaskStatus {
            task_id: Id::new("t1"),
            state: TaskState::TaskRunning,
            message: None,
            source: Some("SOURCE_EXECUTOR".into()),
            reason: None,
            agent_id: Some(Id::new("a1")),
            timestamp: Some(1.5),
            uuid: Some("AAEC".into()),
            healthy: None,
            container_status: None,
        };
        let json = serde_json::to_value(Event::update(status)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "UPDATE", "update": {"status": {"task_id": {"value": "t1"}, "state": "TASK_RUNNING",
                "source": "SOURCE_EXECUTOR", "agent_id": {"value": "a1"}, "timestamp": 1.5, "uuid": "AAEC"}}})
        );
        assert_eq!(
            serde_json::to_value(Event::heartbeat()).unwrap(),
            serde_json::json!({"type": "HEARTBEAT"})
        );
    }
}

/// Mesos' `MasterInfo`, as the leading master publishes it in ZooKeeper (`json.info_NNNNNNNNNN`)
/// and in `SUBSCRIBED`. Tools find the leader's HTTP endpoint in `address`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct MasterInfo {
    pub id: String,
    /// IPv4 address as a number in network byte order (Mesos' legacy field).
    #[serde(default)]
    pub ip: u32,
    pub port: u16,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub pid: String,
    pub address: Address,
    #[serde(default)]
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Address {
    #[serde(default)]
    pub hostname: String,
    pub ip: String,
    pub port: u16,
}

impl MasterInfo {
    /// A master reachable at `host:port` (`host` a name or an IPv4 address).
    pub fn new(id: &str, host: &str, port: u16) -> MasterInfo {
        let ip = host.parse::<std::net::Ipv4Addr>().ok();
        MasterInfo {
            id: id.to_string(),
            ip: ip.map(|ip| u32::from_le_bytes(ip.octets())).unwrap_or(0),
            port,
            hostname: host.to_string(),
            pid: format!("master@{host}:{port}"),
            address: Address {
                hostname: host.to_string(),
                ip: ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| host.to_string()),
                port,
            },
            version: MESOS_VERSION.to_string(),
        }
    }

    /// Where to connect: the address' host name when there is one, else its IP.
    pub fn endpoint(&self) -> (String, u16) {
        let host = if self.address.hostname.is_empty() {
            self.address.ip.clone()
        } else {
            self.address.hostname.clone()
        };
        (host, self.address.port)
    }

    pub fn decode(bytes: &[u8]) -> Result<MasterInfo, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("MasterInfo JSON: {e}"))
    }
}

/// The Mesos version whose API drover's master speaks (reported by `/version` and `MasterInfo`).
pub const MESOS_VERSION: &str = "1.11.0";

#[cfg(test)]
mod master_info_tests {
    use super::*;

    #[test]
    fn master_info_has_mesos_fields() {
        let info = MasterInfo::new("m1", "127.0.0.1", 5050);
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["address"]["ip"], "127.0.0.1");
        assert_eq!(json["address"]["port"], 5050);
        assert_eq!(json["ip"], 16777343);
        assert_eq!(info.endpoint(), ("127.0.0.1".to_string(), 5050));
        let back = MasterInfo::decode(&serde_json::to_vec(&info).unwrap()).unwrap();
        assert_eq!(back, info);
        assert!(MasterInfo::decode(b"{}").is_err());
    }
}
