//! A run's trace read into what its report draws: lanes, fault bands, leaderships, HTTP steps,
//! event marks and failures. Pure: text in, a [`Model`] out.

use std::collections::BTreeMap;

use drover_core::Event;
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};

use crate::run::Failure;
use crate::trace::CLIENT;
use crate::trace::HARNESS;

/// The whole picture of one run.
#[derive(Debug, Serialize)]
pub struct Model {
    /// Where the time axis ends (simulated ms).
    pub end_ms: u64,
    pub lanes: Vec<Lane>,
    /// Every parsed trace line, in trace order.
    pub marks: Vec<Mark>,
    pub bands: Vec<Band>,
    pub leaders: Vec<Leadership>,
    pub http: Vec<HttpStep>,
    pub failures: Vec<FailureMark>,
    /// Lines that were not `<ms> <node> <event>` (none in a simulator's trace).
    pub unparsed: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneKind {
    /// The harness's own actions (node `sim`).
    Harness,
    /// The HTTP steps and their answers (node `client`).
    Client,
    /// Who leads a role, term by term.
    Leaders,
    Node,
}

#[derive(Debug, Serialize)]
pub struct Lane {
    pub name: String,
    pub role: String,
    pub kind: LaneKind,
    /// Sub-rows, for lanes whose intervals overlap (leaderships, HTTP steps).
    pub rows: usize,
}

/// What an event is about; the report colours and filters by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Fault,
    Http,
    Election,
    Agent,
    Task,
    Deploy,
    Node,
    Dns,
    Other,
}

/// One trace line on its lane; serialized as `[at_ms, lane, category, text]` to keep big traces
/// small. `text` is the line without its time and node.
#[derive(Debug)]
pub struct Mark {
    pub at_ms: u64,
    pub lane: usize,
    pub category: Category,
    pub text: String,
}

impl Serialize for Mark {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(4)?;
        tuple.serialize_element(&self.at_ms)?;
        tuple.serialize_element(&self.lane)?;
        tuple.serialize_element(&self.category)?;
        tuple.serialize_element(&self.text)?;
        tuple.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BandKind {
    Partition,
    /// A one-way partition.
    Cut,
    Hold,
    Crash,
    Stop,
    Pause,
    Skew,
    Disk,
    Loss,
    Latency,
}

/// A fault that lasts: on one node's lane, or on the whole network (`lane` is `None`).
#[derive(Debug, Serialize)]
pub struct Band {
    pub lane: Option<usize>,
    pub kind: BandKind,
    pub from_ms: u64,
    pub to_ms: u64,
    pub label: String,
    /// The trace line that began it, and the one that ended it (none: it lasted to the end).
    pub line: String,
    pub end: Option<String>,
}

/// One node leading one term of its role.
#[derive(Debug, Serialize)]
pub struct Leadership {
    pub lane: usize,
    pub row: usize,
    pub role: String,
    pub node: String,
    pub term: Option<String>,
    pub from_ms: u64,
    pub to_ms: u64,
    pub line: String,
    pub end: Option<String>,
}

/// A timeline HTTP request, from the harness sending it to the client recording its answer.
#[derive(Debug, Serialize)]
pub struct HttpStep {
    pub row: usize,
    pub step: String,
    pub node: String,
    pub from_ms: u64,
    pub to_ms: u64,
    /// The answer's status, `none` when the request failed, `pending` with no answer by the end.
    pub status: String,
    /// The request's line, then the answer's.
    pub lines: Vec<String>,
    /// The step's `expect_status` failed.
    pub failed: bool,
}

/// A failed check, where it happened.
#[derive(Debug, Serialize)]
pub struct FailureMark {
    pub at_ms: u64,
    pub check: String,
    pub message: String,
    /// The nodes its message names, first named first; the first is where it is marked.
    pub nodes: Vec<String>,
    pub lane: Option<usize>,
}

/// The events worth a mark besides the harness's and the client's, by category (names separated
/// by spaces). Anything else is `Other` (hidden at first, like `Dns`).
const CATEGORIES: &[(Category, &str)] = &[
    (
        Category::Election,
        "leader deposed lost_leader follower raft expire session_lost disconnected \
         registry_write_failed store_failed",
    ),
    (
        Category::Agent,
        "agent_registered agent_unreachable agent_disconnected agent_recovered agent_refused \
         master_detected master_lost master_recovered framework_subscribed \
         framework_disconnected framework_removed framework_leader_changed \
         framework_stream_silent subscribed",
    ),
    (
        Category::Task,
        "task_launch task_launched task_state task_killing task_recovered task_unhealthy_kill \
         task launch launch_timeout kill kill_retry kill_unknown health_kill",
    ),
    (
        Category::Deploy,
        "deployment deployment_step deployment_done deployment_canceled app_target",
    ),
    (Category::Node, "boot start exit error peer_up peer_down"),
    (Category::Dns, "dns_answer dns_timeout dns_zone"),
];

fn category(node: &str, event: &str) -> Category {
    if node == HARNESS {
        return if event == "http" {
            Category::Http
        } else {
            Category::Fault
        };
    }
    if node == CLIENT && event == "http" {
        return Category::Http;
    }
    CATEGORIES
        .iter()
        .find(|(_, names)| names.split_whitespace().any(|name| name == event))
        .map_or(Category::Other, |(category, _)| *category)
}

/// A trace line taken apart.
struct Line<'a> {
    at_ms: u64,
    node: &'a str,
    /// The line without its time and node.
    text: &'a str,
    event: Event,
    whole: &'a str,
}

fn parse(whole: &str) -> Option<Line<'_>> {
    let (at, rest) = whole.split_once(' ')?;
    let at_ms = at.parse().ok()?;
    let (node, text) = rest.split_once(' ')?;
    if node.is_empty() || text.is_empty() {
        return None;
    }
    // Event::parse refuses a word without `=`; the report keeps such lines, with the fields it
    // can read.
    let event = Event::parse(text).unwrap_or_else(|| {
        let mut words = text.split_whitespace();
        let mut event = Event::new(words.next().unwrap_or_default());
        event.fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        event
    });
    Some(Line {
        at_ms,
        node,
        text,
        event,
        whole,
    })
}

/// A node's role when the cluster plan does not say: its name without a trailing `-<n>`.
fn role_from_name(node: &str) -> String {
    match node.rsplit_once('-') {
        Some((base, n)) if !base.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
            base.to_string()
        }
        _ => node.to_string(),
    }
}

/// Places an interval in the first row free at `from_ms`; `rows` holds each row's end.
fn place(rows: &mut Vec<u64>, from_ms: u64, to_ms: u64) -> usize {
    match rows.iter().position(|end| *end <= from_ms) {
        Some(row) => {
            rows[row] = to_ms;
            row
        }
        None => {
            rows.push(to_ms);
            rows.len() - 1
        }
    }
}

/// The names in `message` that are whole words of it (a name's neighbours are not name
/// characters), in the order they first appear.
pub fn mentioned<'a>(message: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let mut found: Vec<(usize, &str)> = Vec::new();
    for name in names {
        if name.is_empty() {
            continue;
        }
        let first = message.match_indices(name).find(|(at, _)| {
            let before = message[..*at].chars().next_back();
            let after = message[at + name.len()..].chars().next();
            !before.is_some_and(is_name_char) && !after.is_some_and(is_name_char)
        });
        if let Some((at, _)) = first {
            found.push((at, name));
        }
    }
    found.sort();
    found.into_iter().map(|(_, n)| n.to_string()).collect()
}

/// The open intervals while the trace is read.
#[derive(Default)]
struct Open {
    /// Partitions and one-way cuts (ended by `heal`).
    cuts: Vec<usize>,
    /// Held links (ended by `release`).
    holds: Vec<usize>,
    /// Crashed or stopped nodes (ended by `restart`).
    down: BTreeMap<String, usize>,
    /// A disk fault per node, and whether a crash consumes it (a torn or lost write is armed
    /// for the next crash; a failing disk fails until `ok`).
    disk: BTreeMap<String, (usize, bool)>,
    /// A node's clock offset so far and its band.
    skew: BTreeMap<String, (i64, Option<usize>)>,
    loss: Option<usize>,
    latency: Option<usize>,
    /// Leaderships by node.
    leading: BTreeMap<String, usize>,
    /// HTTP steps sent and not answered, by (step, node), oldest first.
    http: BTreeMap<(String, String), Vec<usize>>,
}

/// Builds the model. `nodes` is the cluster's plan, (name, role) in its order, so a node that
/// recorded nothing still has a lane; `end_ms` is where the run ended (the last line's or
/// failure's time if later).
pub fn build(trace: &str, nodes: &[(String, String)], failures: &[Failure], end_ms: u64) -> Model {
    let mut lines = Vec::new();
    let mut unparsed = 0;
    for text in trace.lines().filter(|l| !l.trim().is_empty()) {
        match parse(text) {
            Some(line) => lines.push(line),
            None => unparsed += 1,
        }
    }
    let last_ms = lines
        .iter()
        .map(|l| l.at_ms)
        .chain(failures.iter().map(|f| f.at_ms));
    let end_ms = last_ms.max().unwrap_or(0).max(end_ms);

    let roles: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_str()))
        .collect();
    let role_of = |node: &str| {
        roles
            .get(node)
            .map_or_else(|| role_from_name(node), |r| r.to_string())
    };
    // Lane order: the harness, the HTTP client, who leads each role, then the nodes as planned
    // and those only the trace names (harness events name nodes too) as they appear.
    let mut node_names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    let mut leader_roles: Vec<String> = Vec::new();
    let mut any_http = false;
    for line in &lines {
        let mut named = vec![line.node];
        if line.node == HARNESS {
            for key in ["node", "groups", "from", "to"] {
                if let Some(value) = line.event.field(key) {
                    named.extend(value.split(['|', ',']));
                }
            }
        }
        for node in named {
            let synthetic = node == HARNESS || node == CLIENT;
            if !synthetic && !node.is_empty() && !node_names.iter().any(|n| n == node) {
                node_names.push(node.to_string());
            }
        }
        if line.event.name == "leader" && line.node != HARNESS {
            let role = role_of(line.node);
            if !leader_roles.contains(&role) {
                leader_roles.push(role);
            }
        }
        any_http |= line.event.name == "http";
    }
    let mut lanes = vec![Lane {
        name: HARNESS.to_string(),
        role: "harness".to_string(),
        kind: LaneKind::Harness,
        rows: 1,
    }];
    if any_http {
        lanes.push(Lane {
            name: CLIENT.to_string(),
            role: "http".to_string(),
            kind: LaneKind::Client,
            rows: 1,
        });
    }
    for role in &leader_roles {
        lanes.push(Lane {
            name: format!("leader:{role}"),
            role: role.clone(),
            kind: LaneKind::Leaders,
            rows: 1,
        });
    }
    for name in &node_names {
        lanes.push(Lane {
            name: name.clone(),
            role: role_of(name),
            kind: LaneKind::Node,
            rows: 1,
        });
    }
    let lane_of: BTreeMap<String, usize> = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| (l.name.clone(), i))
        .collect();
    let lane = |name: &str| lane_of.get(name).copied();

    let mut model = Model {
        end_ms,
        lanes,
        marks: Vec::with_capacity(lines.len()),
        bands: Vec::new(),
        leaders: Vec::new(),
        http: Vec::new(),
        failures: Vec::new(),
        unparsed,
    };
    let mut open = Open::default();
    for line in &lines {
        let Some(at_lane) = lane(line.node) else {
            continue;
        };
        model.marks.push(Mark {
            at_ms: line.at_ms,
            lane: at_lane,
            category: category(line.node, &line.event.name),
            text: line.text.to_string(),
        });
        if line.node == HARNESS {
            harness_line(&mut model, &mut open, &lane, line);
        } else if line.node == CLIENT && line.event.name == "http" {
            let key = (
                line.event.field("step").unwrap_or_default().to_string(),
                line.event.field("node").unwrap_or_default().to_string(),
            );
            let waiting = open.http.get_mut(&key).filter(|w| !w.is_empty());
            if let Some(index) = waiting.map(|w| w.remove(0)) {
                let step = &mut model.http[index];
                step.to_ms = line.at_ms;
                step.status = line.event.field("status").unwrap_or("none").to_string();
                step.lines.push(line.whole.to_string());
            }
        } else {
            leadership_line(&mut model, &mut open, &role_of, line);
        }
    }
    // What is still open lasts to the end.
    for band in &mut model.bands {
        band.to_ms = band.to_ms.min(end_ms);
    }
    for leadership in &mut model.leaders {
        leadership.to_ms = leadership.to_ms.min(end_ms);
    }
    for step in &mut model.http {
        step.to_ms = step.to_ms.min(end_ms);
    }
    // Rows, once every interval is known.
    let mut http_rows = Vec::new();
    for step in &mut model.http {
        step.row = place(
            &mut http_rows,
            step.from_ms,
            step.to_ms.max(step.from_ms + 1),
        );
    }
    let mut leader_rows: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for leadership in &mut model.leaders {
        let rows = leader_rows.entry(leadership.lane).or_default();
        leadership.row = place(
            rows,
            leadership.from_ms,
            leadership.to_ms.max(leadership.from_ms + 1),
        );
    }
    if let Some(client) = lane(CLIENT) {
        model.lanes[client].rows = http_rows.len().max(1);
    }
    for (index, rows) in leader_rows {
        model.lanes[index].rows = rows.len().max(1);
    }
    for failure in failures {
        if let Some(step) = failure
            .check
            .strip_prefix("timeline[")
            .and_then(|rest| rest.strip_suffix("].expect_status"))
        {
            for http in model.http.iter_mut().filter(|h| h.step == step) {
                http.failed = true;
            }
        }
    }
    let node_lanes: Vec<&str> = model
        .lanes
        .iter()
        .filter(|l| l.kind == LaneKind::Node)
        .map(|l| l.name.as_str())
        .collect();
    let failure_marks: Vec<FailureMark> = failures
        .iter()
        .map(|failure| {
            let nodes = mentioned(&failure.message, node_lanes.iter().copied());
            FailureMark {
                at_ms: failure.at_ms,
                check: failure.check.clone(),
                message: failure.message.clone(),
                lane: nodes.first().and_then(|n| lane(n)),
                nodes,
            }
        })
        .collect();
    model.failures = failure_marks;
    model
}

/// Opens a band; it stays open (`to_ms` at its maximum) until closed.
fn open_band(
    model: &mut Model,
    lane: Option<usize>,
    kind: BandKind,
    line: &Line<'_>,
    label: String,
) -> usize {
    model.bands.push(Band {
        lane,
        kind,
        from_ms: line.at_ms,
        to_ms: u64::MAX,
        label,
        line: line.whole.to_string(),
        end: None,
    });
    model.bands.len() - 1
}

fn close_band(model: &mut Model, index: usize, line: &Line<'_>) {
    let band = &mut model.bands[index];
    if band.to_ms == u64::MAX {
        band.to_ms = line.at_ms;
        band.end = Some(line.whole.to_string());
    }
}

/// Follows one of the harness's lines: the faults it begins and ends.
fn harness_line(
    model: &mut Model,
    open: &mut Open,
    lane: &dyn Fn(&str) -> Option<usize>,
    line: &Line<'_>,
) {
    let event = &line.event;
    let node = event.field("node").unwrap_or_default().to_string();
    match event.name.as_str() {
        "partition" | "hold" => {
            let (kind, label, nodes): (BandKind, String, Vec<&str>) = match (
                event.field("groups"),
                event.field("from"),
                event.field("to"),
            ) {
                (Some(groups), _, _) => {
                    let kind = if event.name == "hold" {
                        BandKind::Hold
                    } else {
                        BandKind::Partition
                    };
                    let label = format!("{} {}", event.name, groups.replace('|', " | "));
                    (kind, label, groups.split(['|', ',']).collect())
                }
                (None, Some(from), Some(to)) => (
                    BandKind::Cut,
                    format!("one-way cut {from} → {to}"),
                    from.split(',').chain(to.split(',')).collect(),
                ),
                _ => return,
            };
            for name in nodes {
                let Some(at_lane) = lane(name) else {
                    continue;
                };
                let band = open_band(model, Some(at_lane), kind, line, label.clone());
                if kind == BandKind::Hold {
                    open.holds.push(band);
                } else {
                    open.cuts.push(band);
                }
            }
        }
        "heal" => {
            for band in std::mem::take(&mut open.cuts) {
                close_band(model, band, line);
            }
        }
        "release" => {
            for band in std::mem::take(&mut open.holds) {
                close_band(model, band, line);
            }
        }
        "crash" | "stop" => {
            if let Some(band) = open.down.remove(&node) {
                close_band(model, band, line);
            }
            if let Some(leading) = open.leading.remove(&node) {
                end_leadership(model, leading, line);
            }
            if event.name == "crash" {
                if let Some((band, true)) = open.disk.get(&node).copied() {
                    close_band(model, band, line);
                    open.disk.remove(&node);
                }
            }
            let (kind, mut label) = if event.name == "crash" {
                (BandKind::Crash, "crashed".to_string())
            } else {
                (BandKind::Stop, "stopped".to_string())
            };
            if let Some(cause) = event.field("cause") {
                label.push_str(&format!(" ({cause})"));
            }
            if let Some(at_lane) = lane(&node) {
                let band = open_band(model, Some(at_lane), kind, line, label);
                open.down.insert(node, band);
            }
        }
        "restart" => {
            if let Some(band) = open.down.remove(&node) {
                close_band(model, band, line);
            }
        }
        "pause" => {
            let for_ms: u64 = event
                .field("for_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if let Some(at_lane) = lane(&node) {
                let label = format!("paused {for_ms} ms");
                let band = open_band(model, Some(at_lane), BandKind::Pause, line, label);
                model.bands[band].to_ms = line.at_ms.saturating_add(for_ms);
            }
        }
        "skew" => {
            let by_ms: i64 = event
                .field("by_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (total_ms, band) = open.skew.remove(&node).unwrap_or((0, None));
            if let Some(band) = band {
                close_band(model, band, line);
            }
            let total_ms = total_ms.saturating_add(by_ms);
            let band = match lane(&node) {
                Some(at_lane) if total_ms != 0 => {
                    let label = format!("clock {total_ms:+} ms");
                    Some(open_band(model, Some(at_lane), BandKind::Skew, line, label))
                }
                _ => None,
            };
            open.skew.insert(node, (total_ms, band));
        }
        "disk" => {
            let fault = event.field("fault").unwrap_or_default();
            if let Some((band, _)) = open.disk.remove(&node) {
                close_band(model, band, line);
            }
            let (label, at_crash) = match fault {
                "ok" => return,
                "fail" => ("disk fails".to_string(), false),
                other => (format!("disk: {other} at the next crash"), true),
            };
            if let Some(at_lane) = lane(&node) {
                let band = open_band(model, Some(at_lane), BandKind::Disk, line, label);
                open.disk.insert(node, (band, at_crash));
            }
        }
        "loss" | "latency" => {
            let (slot, kind) = if event.name == "loss" {
                (&mut open.loss, BandKind::Loss)
            } else {
                (&mut open.latency, BandKind::Latency)
            };
            if let Some(band) = slot.take() {
                close_band(model, band, line);
            }
            let rate = event.field("rate").and_then(|r| r.parse::<f64>().ok());
            let label = match (kind, rate, event.field("max_ms")) {
                (BandKind::Loss, Some(rate), _) if rate > 0.0 => {
                    let percent = rate * 100.0;
                    if (percent - percent.round()).abs() < 0.05 {
                        format!("loss {percent:.0}%")
                    } else {
                        format!("loss {percent:.1}%")
                    }
                }
                (BandKind::Latency, _, Some(max_ms)) => format!("latency ≤ {max_ms} ms"),
                _ => return,
            };
            *slot = Some(open_band(model, None, kind, line, label));
        }
        "http" => {
            let step = event.field("step").unwrap_or_default().to_string();
            model.http.push(HttpStep {
                row: 0,
                step: step.clone(),
                node: node.clone(),
                from_ms: line.at_ms,
                to_ms: u64::MAX,
                status: "pending".to_string(),
                lines: vec![line.whole.to_string()],
                failed: false,
            });
            open.http
                .entry((step, node))
                .or_default()
                .push(model.http.len() - 1);
        }
        _ => {}
    }
}

fn end_leadership(model: &mut Model, index: usize, line: &Line<'_>) {
    let leadership = &mut model.leaders[index];
    leadership.to_ms = line.at_ms;
    leadership.end = Some(line.whole.to_string());
}

/// Follows a node's line: `leader term=N` begins a leadership; `deposed`, `lost_leader`,
/// `follower` and `exit` end the node's (as do its crash and stop, in [`harness_line`]).
fn leadership_line(
    model: &mut Model,
    open: &mut Open,
    role_of: &dyn Fn(&str) -> String,
    line: &Line<'_>,
) {
    match line.event.name.as_str() {
        "leader" => {
            if let Some(previous) = open.leading.remove(line.node) {
                end_leadership(model, previous, line);
            }
            let role = role_of(line.node);
            let Some(lane) = model
                .lanes
                .iter()
                .position(|l| l.kind == LaneKind::Leaders && l.role == role)
            else {
                return;
            };
            model.leaders.push(Leadership {
                lane,
                row: 0,
                role,
                node: line.node.to_string(),
                term: line.event.field("term").map(str::to_string),
                from_ms: line.at_ms,
                to_ms: u64::MAX,
                line: line.whole.to_string(),
                end: None,
            });
            open.leading
                .insert(line.node.to_string(), model.leaders.len() - 1);
        }
        "deposed" | "lost_leader" | "follower" | "exit" => {
            if let Some(leading) = open.leading.remove(line.node) {
                end_leadership(model, leading, line);
            }
        }
        _ => {}
    }
}
