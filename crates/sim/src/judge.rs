//! The verdict on a trace: `always` invariants, `eventually` and `never` expectations and the
//! timeline's `expect_status`, checked line by line as the trace grows. The simulator and the
//! live runner (`drover sim --live`) judge with the same [`Judge`].

use std::collections::BTreeMap;

use drover_core::Event;

use crate::cluster::{ClusterMap, Roles};
use crate::invariants::{self, ClusterView, Invariant, Pending};
use crate::scenario::{Action, Scenario, ScenarioError};
use crate::trace::CLIENT;
use crate::trace::{TraceLine, HARNESS};

/// Events worth a line in the readable timeline (besides the harness's own and the client's).
const NOTABLE: &[&str] = &["leader", "boot", "exit", "peer_up", "peer_down", "error"];

/// A `never` expectation: (index, pattern, node selector, after, by).
type Forbidden = (usize, Event, Option<String>, u64, u64);

/// A broken expectation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub at_ms: u64,
    pub check: String,
    pub message: String,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub scenario: String,
    pub seed: u64,
    pub failures: Vec<Failure>,
    /// The full trace, `<sim ms> <node> <event>` per line.
    pub trace: String,
    /// The readable timeline: the harness's actions and the notable events.
    pub timeline: Vec<String>,
    pub simulated_ms: u64,
    /// How many times an `always` invariant judged a trace line.
    pub checks: u64,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The harness's actions (faults, heals, requests) by kind, counted from the trace.
    pub fn harness_actions(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for line in self.trace.lines() {
            let mut words = line.split(' ');
            if let (Some(_), Some(HARNESS), Some(kind)) = (words.next(), words.next(), words.next())
            {
                *counts.entry(kind.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

/// Judges one run of a scenario.
pub struct Judge<'a> {
    scenario: &'a Scenario,
    /// The harness's view of the cluster (cuts, nodes down, leaders), which invariants read.
    pub view: ClusterView,
    always: Vec<Box<dyn Invariant>>,
    pending: Vec<Pending>,
    forbidden: Vec<Forbidden>,
    /// The port each HTTP step goes to, by timeline index.
    pub http_ports: BTreeMap<usize, u16>,
    pub failures: Vec<Failure>,
    /// The readable timeline: the harness's and the client's lines, notable events, failures.
    pub timeline: Vec<String>,
    /// Invariant checks made.
    pub checks: u64,
}

impl<'a> Judge<'a> {
    /// Checks every name and selector the scenario uses before anything runs.
    pub fn new(scenario: &'a Scenario, roles: &Roles) -> Result<Judge<'a>, ScenarioError> {
        let map = ClusterMap::plan(scenario, roles)?;
        let view = ClusterView::new(map.clone());
        let error = |path: String, message: String| ScenarioError {
            file: scenario.file.clone(),
            path,
            message,
        };
        let mut always: Vec<Box<dyn Invariant>> = Vec::new();
        for (i, name) in scenario.expect.always.iter().enumerate() {
            always.push(
                invariants::always(name).map_err(|m| error(format!("expect.always[{i}]"), m))?,
            );
        }
        let mut pending = Vec::new();
        for (index, e) in scenario.expect.eventually.iter().enumerate() {
            if let Some(node) = &e.node {
                view.check_selector(node)
                    .map_err(|m| error(format!("expect.eventually[{index}].node"), m))?;
            }
            pending.push(Pending {
                index,
                pattern: Event::parse(&e.event).unwrap_or_else(|| Event::new("unparsable")),
                node: e.node.clone(),
                after_ms: e.after.map_or(0, |d| d.as_millis() as u64),
                by_ms: e.by.as_millis() as u64,
                met_at: None,
            });
        }
        let mut forbidden = Vec::new();
        for (index, never) in scenario.expect.never.iter().enumerate() {
            if let Some(node) = &never.node {
                view.check_selector(node)
                    .map_err(|m| error(format!("expect.never[{index}].node"), m))?;
            }
            let pattern = Event::parse(&never.event).unwrap_or_else(|| Event::new("unparsable"));
            let after_ms = never.after.map_or(0, |d| d.as_millis() as u64);
            let by_ms = never.by.map_or(u64::MAX, |d| d.as_millis() as u64);
            forbidden.push((index, pattern, never.node.clone(), after_ms, by_ms));
        }
        let mut http_ports = BTreeMap::new();
        for (i, step) in scenario.timeline.iter().enumerate() {
            let path = format!("timeline[{i}]");
            for selector in selectors(&step.action) {
                view.check_selector(selector)
                    .map_err(|m| error(path.clone(), m))?;
            }
            if let Action::Http(http) = &step.action {
                let role = map.role_of(&http.node).and_then(|r| roles.get(r));
                let port = http.port.or(role.and_then(|r| r.http_port));
                let port = port.ok_or_else(|| {
                    error(
                        format!("{path}.node"),
                        format!(
                            "expected a node that serves HTTP (or a `port`), found {:?}",
                            http.node
                        ),
                    )
                })?;
                http_ports.insert(i, port);
            }
        }
        Ok(Judge {
            scenario,
            view,
            always,
            pending,
            forbidden,
            http_ports,
            failures: Vec::new(),
            timeline: Vec::new(),
            checks: 0,
        })
    }

    /// The cluster as planned.
    pub fn map(&self) -> &ClusterMap {
        &self.view.map
    }

    pub fn fail(&mut self, at_ms: u64, check: impl Into<String>, message: impl Into<String>) {
        self.failures.push(Failure {
            at_ms,
            check: check.into(),
            message: message.into(),
        });
    }

    /// Checks one new line of the trace.
    pub fn observe(&mut self, line: &TraceLine) {
        self.checks += self.always.len() as u64;
        self.view.observe(line);
        for invariant in &mut self.always {
            if let Err(message) = invariant.observe(line, &self.view) {
                self.failures.push(Failure {
                    at_ms: line.at_ms,
                    check: invariant.name().to_string(),
                    message,
                });
            }
        }
        for p in &mut self.pending {
            p.observe(line, &self.view);
        }
        for (index, pattern, node, after_ms, by_ms) in &self.forbidden {
            let in_window = (*after_ms..=*by_ms).contains(&line.at_ms);
            let node_ok = node.as_ref().is_none_or(|s| {
                self.view
                    .resolve(s, &[])
                    .is_ok_and(|n| n.contains(&line.node))
            });
            if in_window && node_ok && line.event.matches(pattern) {
                self.failures.push(Failure {
                    at_ms: line.at_ms,
                    check: format!("expect.never[{index}]"),
                    message: format!("{} recorded `{}`", line.node, line.event),
                });
            }
        }
        self.check_http(line);
        if line.node == HARNESS
            || line.node == CLIENT
            || NOTABLE.contains(&line.event.name.as_str())
        {
            self.timeline.push(line.to_string());
        }
    }

    /// Fails the `eventually` expectations whose deadline passed unmet.
    pub fn overdue(&mut self, now_ms: u64) {
        for p in &self.pending {
            if p.met_at.is_none() && now_ms > p.by_ms {
                self.failures.push(Failure {
                    at_ms: now_ms,
                    check: format!("expect.eventually[{}]", p.index),
                    message: format!("never saw {}", p.describe()),
                });
            }
        }
    }

    /// The next deadline of an unmet `eventually` (the moment just after it).
    pub fn next_deadline(&self) -> Option<u64> {
        self.pending
            .iter()
            .filter(|p| p.met_at.is_none())
            .map(|p| p.by_ms + 1)
            .min()
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The verdict once the run is over at `end_ms`: what only the whole run can tell
    /// (liveness, unmet expectations) is judged if nothing failed before.
    pub fn finish(mut self, seed: u64, end_ms: u64, trace: String) -> Outcome {
        if self.failures.is_empty() {
            for invariant in &mut self.always {
                if let Err(message) = invariant.finish() {
                    self.failures.push(Failure {
                        at_ms: end_ms,
                        check: invariant.name().to_string(),
                        message,
                    });
                }
            }
        }
        if self.failures.is_empty() {
            for p in self.pending.iter().filter(|p| p.met_at.is_none()) {
                self.failures.push(Failure {
                    at_ms: end_ms,
                    check: format!("expect.eventually[{}]", p.index),
                    message: format!("never saw {}", p.describe()),
                });
            }
        }
        for failure in &self.failures {
            self.timeline.push(format!(
                "{} FAILED {}: {}",
                failure.at_ms, failure.check, failure.message
            ));
        }
        Outcome {
            scenario: self.scenario.name.clone(),
            seed,
            failures: self.failures,
            trace,
            timeline: self.timeline,
            simulated_ms: end_ms,
            checks: self.checks,
        }
    }

    /// An HTTP answer with another status than the step expected is a failure.
    fn check_http(&mut self, line: &TraceLine) {
        if line.node != CLIENT || line.event.name != "http" {
            return;
        }
        let Some(index) = line
            .event
            .field("step")
            .and_then(|s| s.parse::<usize>().ok())
        else {
            return;
        };
        let Some(Action::Http(http)) = self.scenario.timeline.get(index).map(|s| &s.action) else {
            return;
        };
        if let Some(expected) = http.expect_status {
            let status = line.event.field("status").unwrap_or("none");
            if status != expected.to_string() {
                self.failures.push(Failure {
                    at_ms: line.at_ms,
                    check: format!("timeline[{index}].expect_status"),
                    message: format!(
                        "{} {} on {} answered {status}, expected {expected}",
                        http.method,
                        http.path,
                        line.event.field("node").unwrap_or("?")
                    ),
                });
            }
        }
    }
}

/// The node selectors an action names.
pub fn selectors(action: &Action) -> Vec<&str> {
    match action {
        Action::Partition { groups } | Action::Hold { groups } => {
            groups.iter().flatten().map(String::as_str).collect()
        }
        Action::PartitionOneway { from, to } => from.iter().chain(to).map(String::as_str).collect(),
        Action::Crash { node }
        | Action::Stop { node }
        | Action::Restart { node }
        | Action::Skew { node, .. }
        | Action::Pause { node, .. }
        | Action::Disk { node, .. } => vec![node.as_str()],
        Action::Http(http) => vec![http.node.as_str()],
        Action::Heal | Action::Release | Action::Latency { .. } | Action::Loss { .. } => vec![],
    }
}
