//! Scenario files: a cluster, a timeline of actions and faults, and what must hold.
//!
//! Loading is strict. A file that is not what the schema says is refused with the file, the JSON
//! path and what was expected there; unknown fields are errors, never ignored.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// A scenario, validated.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// The file it came from (`body_file` paths are relative to its folder).
    pub file: PathBuf,
    pub seed: u64,
    pub duration: Duration,
    pub cluster: Cluster,
    pub timeline: Vec<Step>,
    pub expect: Expect,
    /// What differs, or cannot be done, when the scenario runs against real daemons
    /// (`drover sim --live` prints it with the verdict).
    pub live: Option<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    #[serde(default)]
    pub coord: u32,
    #[serde(default)]
    pub masters: u32,
    #[serde(default)]
    pub schedulers: u32,
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
    /// Nodes of any registered role: `{"role": "probe", "count": 3}` or `{"role": .., "name": ..}`.
    #[serde(default)]
    pub nodes: Vec<NodeGroup>,
    #[serde(default)]
    pub network: Network,
    /// Every node authenticates: coord's peers, agents to the master, frameworks and the
    /// scheduler to the master, the scheduler's API, the master's and scheduler's znodes. Absent:
    /// nothing does (as the daemons' defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ClusterAuth>,
}

/// A secured cluster: one secret, every principal's (`agent`, `framework`, `marathon`, `mesos`,
/// `operator`), and coord's peer secret. The harness's `http` steps send `operator`'s.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterAuth {
    pub secret: String,
}

impl ClusterAuth {
    /// The principals every secured node knows, with the secret.
    pub fn credentials(&self) -> drover_core::auth::Credentials {
        let lines: Vec<String> = ["agent", "framework", "marathon", "operator"]
            .iter()
            .map(|principal| format!("{principal} {}", self.secret))
            .collect();
        drover_core::auth::Credentials::parse(&lines.join("\n")).unwrap_or_default()
    }

    /// A principal's credential.
    pub fn credential(&self, principal: &str) -> drover_core::auth::Credential {
        drover_core::auth::Credential {
            principal: principal.to_string(),
            secret: self.secret.clone(),
        }
    }

    /// The operator's credential alone (the scheduler's `--http-credentials`).
    pub fn operator_credentials(&self) -> drover_core::auth::Credentials {
        drover_core::auth::Credentials::pair(&format!("operator:{}", self.secret))
            .unwrap_or_default()
    }

    /// What the harness's HTTP steps send.
    pub fn operator_authorization(&self) -> http::HeaderValue {
        drover_core::auth::authorization("operator", &self.secret)
    }
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    pub name: String,
    #[serde(default)]
    pub resources: Option<drover_core::Resources>,
    #[serde(default)]
    pub attributes: Option<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    pub role: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub count: Option<u32>,
    /// The names its nodes ask for, when they are resolvers (`dns_answer` events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Each message's one-way latency is drawn from this range.
    #[serde(default = "default_latency")]
    pub latency_ms: [u64; 2],
    /// Probability that sending a message breaks its link until the next one gets through.
    #[serde(default)]
    pub loss: f64,
}

fn default_latency() -> [u64; 2] {
    [1, 5]
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_ms: default_latency(),
            loss: 0.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// What the harness does at a point of the timeline. Node lists hold selectors: a node name,
/// `leader:<role>`, `role:<role>`, `agent-of:<task>` (the agent that last launched the task),
/// or `*` (every node not named elsewhere in the action).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Cut every link between nodes of different groups (both ways).
    Partition {
        groups: Vec<Vec<String>>,
    },
    /// Cut only the direction `from` → `to`.
    PartitionOneway {
        from: Vec<String>,
        to: Vec<String>,
    },
    /// Repair every link and deliver everything held.
    Heal,
    /// Delay (without loss) everything between nodes of different groups until `release`.
    Hold {
        groups: Vec<Vec<String>>,
    },
    Release,
    /// kill -9: the node stops at once and loses what it had not synced.
    Crash {
        node: String,
    },
    /// A graceful stop: the node is asked to shut down and exits by itself.
    Stop {
        node: String,
    },
    /// Starts a crashed or stopped node again.
    Restart {
        node: String,
    },
    /// The node runs nothing for `for_ms` (a stopped VM, a long GC pause), then resumes with all
    /// its timers late; the network keeps delivering to it meanwhile.
    Pause {
        node: String,
        for_ms: u64,
    },
    /// A fault of the node's disk, through the Disk seam.
    Disk {
        node: String,
        fault: DiskFault,
    },
    /// Makes a node's wall clock jump (forward or backward); monotonic time does not jump.
    Skew {
        node: String,
        by_ms: i64,
    },
    /// Sets the maximum one-way latency of every link.
    Latency {
        max_ms: u64,
    },
    /// Sets the message loss rate of every link.
    Loss {
        rate: f64,
    },
    /// An HTTP request from the harness's client host to a node.
    Http(HttpAction),
}

#[derive(Clone, Debug, PartialEq)]
pub struct HttpAction {
    pub node: String,
    pub port: Option<u16>,
    pub method: String,
    pub path: String,
    pub body: Option<String>,
    pub expect_status: Option<u16>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Invariants checked on every event of the run.
    #[serde(default)]
    pub always: Vec<String>,
    #[serde(default)]
    pub eventually: Vec<Eventually>,
    /// Events that must not happen (within the window, if one is given).
    #[serde(default)]
    pub never: Vec<Never>,
}

/// An event that must not be recorded (by the selected nodes, within the window).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Never {
    #[serde(default, deserialize_with = "optional_duration")]
    pub after: Option<Duration>,
    #[serde(default, deserialize_with = "optional_duration")]
    pub by: Option<Duration>,
    #[serde(default)]
    pub node: Option<String>,
    pub event: String,
}

/// An event that must have happened by a deadline.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eventually {
    #[serde(deserialize_with = "duration")]
    pub by: Duration,
    /// Only events at or after this time count.
    #[serde(default, deserialize_with = "optional_duration")]
    pub after: Option<Duration>,
    /// A selector for the node that must record it (any node if absent).
    #[serde(default)]
    pub node: Option<String>,
    /// The event: `name key=value ...`; fields not named may have any value.
    pub event: String,
}

/// A scenario that cannot be used: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// A JSON path like `timeline[2].node`, or empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: at `{}`: {}",
                self.file.display(),
                self.path,
                self.message
            )
        }
    }
}

impl std::error::Error for ScenarioError {}

/// Parses `5s`, `250ms`, `2m`, `1h`, `1.5s`; with `signed`, a leading `+` or `-`.
pub fn parse_duration_ms(text: &str, signed: bool) -> Result<i64, String> {
    let expected = || {
        if signed {
            format!("a signed duration like `+3s` or `-250ms`, found {text:?}")
        } else {
            format!("a duration like `5s`, `250ms` or `2m`, found {text:?}")
        }
    };
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) if signed => (-1.0, rest),
        _ => (
            1.0,
            text.strip_prefix('+').filter(|_| signed).unwrap_or(text),
        ),
    };
    let split = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(expected)?;
    let (number, unit) = rest.split_at(split);
    let value: f64 = number.parse().map_err(|_| expected())?;
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(expected()),
    };
    let ms = value * scale;
    if !ms.is_finite() || ms > 1e15 || ms.fract() != 0.0 {
        return Err(format!(
            "{text:?} is not a whole number of milliseconds below 10^15"
        ));
    }
    Ok((sign * ms) as i64)
}

fn duration<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    let ms = parse_duration_ms(&text, false).map_err(serde::de::Error::custom)?;
    Ok(Duration::from_millis(ms as u64))
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

fn signed_ms<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration_ms(&text, true).map_err(serde::de::Error::custom)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    /// What the scenario shows and where it came from (for readers; the runner ignores it).
    #[serde(default)]
    #[allow(dead_code, reason = "documentation inside the file")]
    about: Option<String>,
    /// What differs live (see [`Scenario::live`]).
    #[serde(default)]
    live: Option<String>,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(deserialize_with = "duration")]
    duration: Duration,
    cluster: Cluster,
    #[serde(default)]
    timeline: Vec<Value>,
    #[serde(default)]
    expect: Expect,
}

fn default_seed() -> u64 {
    1
}

// One struct per action, so each is checked field by field with unknown fields refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupsStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    groups: Vec<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OnewayStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    from: Vec<String>,
    to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BareStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    node: String,
}

/// How long a sync takes on a `slow` disk.
pub const SLOW_SYNC_MS: u64 = 40;

/// What a `disk` step does to a node's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFault {
    /// At the node's next crash, its last append that was not synced survives half written
    /// (a torn record).
    Torn,
    /// At the node's next crash, its last synced write is lost too (fsync lied).
    LoseSynced,
    /// Every disk operation fails with an I/O error until `ok`.
    Fail,
    /// Every sync takes [`SLOW_SYNC_MS`] until `ok` (a loaded or failing-slow disk): what it
    /// makes durable is durable only at the end.
    Slow,
    /// The disk works again (and nothing is armed).
    Ok,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    node: String,
    #[serde(rename = "for", deserialize_with = "duration")]
    for_: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    node: String,
    fault: DiskFault,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkewStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    node: String,
    #[serde(deserialize_with = "signed_ms")]
    by: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    max_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LossStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    rate: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpStep {
    #[serde(deserialize_with = "duration")]
    at: Duration,
    node: String,
    #[serde(default)]
    port: Option<u16>,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    body_file: Option<String>,
    #[serde(default)]
    expect_status: Option<u16>,
}

const ACTIONS: &str =
    "partition, heal, hold, release, crash, stop, restart, pause, skew, disk, latency, loss, http";

/// Reads and validates a scenario file.
pub fn load(file: &Path) -> Result<Scenario, ScenarioError> {
    let error = |path: &str, message: String| ScenarioError {
        file: file.to_path_buf(),
        path: path.to_string(),
        message,
    };
    let text = std::fs::read_to_string(file).map_err(|e| error("", format!("cannot read: {e}")))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| error("", format!("not JSON: {e}")))?;
    parse(file, value)
}

fn typed<T: DeserializeOwned>(file: &Path, prefix: &str, value: Value) -> Result<T, ScenarioError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_string(),
            (false, _) if inner.starts_with('[') => format!("{prefix}{inner}"),
            (false, _) => format!("{prefix}.{inner}"),
        };
        ScenarioError {
            file: file.to_path_buf(),
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Validates a parsed scenario document (`file` names it in errors and anchors `body_file`).
pub fn parse(file: &Path, value: Value) -> Result<Scenario, ScenarioError> {
    let error = |path: String, message: String| ScenarioError {
        file: file.to_path_buf(),
        path,
        message,
    };
    if !value.is_object() {
        return Err(error(
            String::new(),
            "expected a JSON object describing a scenario".into(),
        ));
    }
    let raw: RawScenario = typed(file, "", value)?;
    if raw.duration.is_zero() {
        return Err(error(
            "duration".into(),
            "expected a positive duration".into(),
        ));
    }
    let [low, high] = raw.cluster.network.latency_ms;
    if low > high {
        return Err(error(
            "cluster.network.latency_ms".into(),
            format!("expected [min, max], found [{low}, {high}]"),
        ));
    }
    if !(0.0..=1.0).contains(&raw.cluster.network.loss) {
        return Err(error(
            "cluster.network.loss".into(),
            "expected a probability from 0 to 1".into(),
        ));
    }
    let mut timeline = Vec::with_capacity(raw.timeline.len());
    for (index, step) in raw.timeline.into_iter().enumerate() {
        let path = format!("timeline[{index}]");
        let Value::Object(mut fields) = step else {
            return Err(error(path, "expected an object with `at` and `do`".into()));
        };
        let kind = match fields.remove("do") {
            Some(Value::String(kind)) => kind,
            Some(other) => {
                return Err(error(
                    format!("{path}.do"),
                    format!("expected one of {ACTIONS}, found {other}"),
                ))
            }
            None => {
                return Err(error(
                    format!("{path}.do"),
                    format!("missing; expected one of {ACTIONS}"),
                ))
            }
        };
        let fields = Value::Object(fields);
        let step = match kind.as_str() {
            "partition" if fields.get("groups").is_some() => {
                let s: GroupsStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::Partition { groups: s.groups },
                }
            }
            "partition" => {
                let s: OnewayStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::PartitionOneway {
                        from: s.from,
                        to: s.to,
                    },
                }
            }
            "hold" => {
                let s: GroupsStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::Hold { groups: s.groups },
                }
            }
            "heal" | "release" => {
                let s: BareStep = typed(file, &path, fields)?;
                let action = if kind == "heal" {
                    Action::Heal
                } else {
                    Action::Release
                };
                Step { at: s.at, action }
            }
            "crash" | "stop" | "restart" => {
                let s: NodeStep = typed(file, &path, fields)?;
                let node = s.node;
                let action = match kind.as_str() {
                    "crash" => Action::Crash { node },
                    "stop" => Action::Stop { node },
                    _ => Action::Restart { node },
                };
                Step { at: s.at, action }
            }
            "pause" => {
                let s: PauseStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::Pause {
                        node: s.node,
                        for_ms: s.for_.as_millis() as u64,
                    },
                }
            }
            "disk" => {
                let s: DiskStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::Disk {
                        node: s.node,
                        fault: s.fault,
                    },
                }
            }
            "skew" => {
                let s: SkewStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::Skew {
                        node: s.node,
                        by_ms: s.by,
                    },
                }
            }
            "latency" => {
                let s: LatencyStep = typed(file, &path, fields)?;
                Step {
                    at: s.at,
                    action: Action::Latency { max_ms: s.max_ms },
                }
            }
            "loss" => {
                let s: LossStep = typed(file, &path, fields)?;
                if !(0.0..=1.0).contains(&s.rate) {
                    return Err(error(
                        format!("{path}.rate"),
                        "expected a probability from 0 to 1".into(),
                    ));
                }
                Step {
                    at: s.at,
                    action: Action::Loss { rate: s.rate },
                }
            }
            "http" => {
                let s: HttpStep = typed(file, &path, fields)?;
                let body = match (s.body, s.body_file) {
                    (Some(_), Some(_)) => {
                        return Err(error(
                            path,
                            "expected `body` or `body_file`, not both".into(),
                        ))
                    }
                    (Some(Value::String(text)), None) => Some(text),
                    (Some(json), None) => Some(json.to_string()),
                    (None, Some(relative)) => {
                        let base = file.parent().unwrap_or(Path::new("."));
                        let read = std::fs::read_to_string(base.join(&relative));
                        Some(read.map_err(|e| {
                            error(
                                format!("{path}.body_file"),
                                format!("cannot read {relative:?}: {e}"),
                            )
                        })?)
                    }
                    (None, None) => None,
                };
                let method = s.method.to_ascii_uppercase();
                if !matches!(
                    method.as_str(),
                    "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD"
                ) {
                    return Err(error(
                        format!("{path}.method"),
                        format!("expected an HTTP method, found {:?}", s.method),
                    ));
                }
                if !s.path.starts_with('/') {
                    return Err(error(
                        format!("{path}.path"),
                        format!("expected a path starting with `/`, found {:?}", s.path),
                    ));
                }
                let action = HttpAction {
                    node: s.node,
                    port: s.port,
                    method,
                    path: s.path,
                    body,
                    expect_status: s.expect_status,
                };
                Step {
                    at: s.at,
                    action: Action::Http(action),
                }
            }
            other => {
                return Err(error(
                    format!("{path}.do"),
                    format!("expected one of {ACTIONS}, found {other:?}"),
                ))
            }
        };
        if step.at > raw.duration {
            return Err(error(
                format!("{path}.at"),
                "expected a time within the scenario's duration".into(),
            ));
        }
        timeline.push(step);
    }
    for (index, eventually) in raw.expect.eventually.iter().enumerate() {
        if drover_core::Event::parse(&eventually.event).is_none() {
            return Err(error(
                format!("expect.eventually[{index}].event"),
                format!(
                    "expected `name key=value ...`, found {:?}",
                    eventually.event
                ),
            ));
        }
        if eventually.by > raw.duration {
            return Err(error(
                format!("expect.eventually[{index}].by"),
                "expected a time within the scenario's duration".into(),
            ));
        }
    }
    for (index, never) in raw.expect.never.iter().enumerate() {
        if drover_core::Event::parse(&never.event).is_none() {
            return Err(error(
                format!("expect.never[{index}].event"),
                format!("expected `name key=value ...`, found {:?}", never.event),
            ));
        }
    }
    Ok(Scenario {
        name: raw.name,
        file: file.to_path_buf(),
        seed: raw.seed,
        duration: raw.duration,
        cluster: raw.cluster,
        timeline,
        expect: raw.expect,
        live: raw.live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn error_of(value: Value) -> ScenarioError {
        parse(Path::new("s.json"), value).unwrap_err()
    }

    fn check(value: Value, path: &str, message_part: &str) {
        let err = error_of(value);
        assert_eq!(err.path, path, "{err}");
        assert!(err.message.contains(message_part), "{err}");
    }

    #[test]
    fn a_wrong_type_names_the_field_and_what_was_expected() {
        let err = error_of(json!({"name": 3, "cluster": {}}));
        assert_eq!(
            err.to_string(),
            "s.json: at `name`: invalid type: integer `3`, expected a string"
        );
    }

    #[test]
    fn errors_point_into_the_document() {
        let base = json!({"name": "x", "duration": "10s", "cluster": {}});
        let with = |key: &str, value: Value| {
            let mut doc = base.clone();
            doc[key] = value;
            doc
        };
        check(
            with("duration", json!("10 parsecs")),
            "duration",
            "a duration like `5s`",
        );
        check(
            with(
                "cluster",
                json!({"agents": [{"name": "a", "resources": "cpus:x"}]}),
            ),
            "cluster.agents[0].resources",
            "column 6",
        );
        check(
            with("cluster", json!({"mastres": 3})),
            "cluster.mastres",
            "unknown field `mastres`",
        );
        check(
            with("timeline", json!([{"at": "1s", "do": "explode"}])),
            "timeline[0].do",
            "expected one of partition",
        );
        check(
            with("timeline", json!([{"at": "1s", "do": "crash"}])),
            "timeline[0]",
            "missing field `node`",
        );
        check(
            with(
                "timeline",
                json!([{"at": "1s", "do": "crash", "node": "a", "x": 1}]),
            ),
            "timeline[0].x",
            "unknown field `x`",
        );
        check(
            with(
                "timeline",
                json!([{"at": "1s", "do": "skew", "node": "a", "by": "3 sec"}]),
            ),
            "timeline[0].by",
            "signed duration",
        );
        check(
            with("timeline", json!([{"at": "20s", "do": "heal"}])),
            "timeline[0].at",
            "within the scenario's duration",
        );
        check(
            with(
                "expect",
                json!({"eventually": [{"by": "5s", "event": "a b"}]}),
            ),
            "expect.eventually[0].event",
            "name key=value",
        );
        check(json!([]), "", "expected a JSON object");
    }

    #[test]
    fn actions_parse() {
        let doc = json!({
            "name": "x", "duration": "1m", "cluster": {"nodes": [{"role": "probe", "count": 2}]},
            "timeline": [
                {"at": "1s", "do": "partition", "groups": [["probe-1"], ["*"]]},
                {"at": "2s", "do": "partition", "from": ["probe-1"], "to": ["probe-2"]},
                {"at": "3s", "do": "skew", "node": "probe-2", "by": "-1.5s"},
                {"at": "4s", "do": "http", "node": "probe-1", "method": "get", "path": "/health", "expect_status": 200}
            ]
        });
        let scenario = parse(Path::new("s.json"), doc).unwrap();
        assert_eq!(scenario.duration, Duration::from_secs(60));
        assert_eq!(
            scenario.timeline[2].action,
            Action::Skew {
                node: "probe-2".into(),
                by_ms: -1500
            }
        );
        assert!(matches!(&scenario.timeline[3].action, Action::Http(h) if h.method == "GET"));
    }
}
