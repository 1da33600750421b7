//! Random fault schedules, and shrinking a failing schedule to a minimal scenario.
//!
//! A schedule is drawn from a seed: a few faults (partitions, one-way cuts, crashes and stops with
//! their restarts, clock jumps, held messages, loss and latency bursts, paused nodes, torn writes
//! at a crash, failing disks, session-expiry storms) in the first 60% of the run,
//! then everything healed and restarted at 70%, so the cluster has time to settle. Only the
//! scenario's `always` invariants judge a random run. When one fails, [`shrink`] removes faults
//! while the same invariant still fails, and [`to_json`] writes what is left as a scenario file
//! that `drover sim` replays.

use std::time::Duration;

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::cluster::{ClusterMap, Roles};
use crate::run::{run, Outcome};
use crate::scenario::{Action, DiskFault, Expect, Scenario, ScenarioError, Step};

/// One fault and the steps that undo it (they are kept or removed together when shrinking).
pub type Fault = Vec<Step>;

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Some of the nodes (at least one, not all), for one side of a partition or hold.
fn random_group(rng: &mut ChaCha8Rng, nodes: &[String]) -> Vec<String> {
    let size = rng.random_range(1..nodes.len());
    nodes.choose_multiple(rng, size).cloned().collect()
}

/// Draws a fault schedule for `scenario`'s cluster from `seed`.
pub fn random_faults(scenario: &Scenario, map: &ClusterMap, seed: u64) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17);
    let end = scenario.duration.as_millis() as u64;
    let (from, until) = (end / 10, end * 6 / 10);
    let nodes: Vec<String> = map.names().iter().map(|n| n.to_string()).collect();
    if nodes.len() < 2 || until <= from {
        return Vec::new();
    }
    let count = rng.random_range(1..=6);
    let base_latency = scenario.cluster.network.latency_ms[1];
    let base_loss = scenario.cluster.network.loss;
    let mut faults = Vec::new();
    for _ in 0..count {
        let start = rng.random_range(from..until);
        let lasting = rng.random_range(500..8_000u64);
        let stop = (start + lasting).min(until);
        let node = nodes.choose(&mut rng).cloned().unwrap_or_default();
        let kind = rng.random_range(0..12u32);
        let fault = match kind {
            8..=11 => other_fault(kind, &mut rng, map, &node, start, stop, until),
            0 | 1 => {
                let group = random_group(&mut rng, &nodes);
                vec![
                    Step {
                        at: at(start),
                        action: Action::Partition {
                            groups: vec![group, vec!["*".into()]],
                        },
                    },
                    Step {
                        at: at(stop),
                        action: Action::Heal,
                    },
                ]
            }
            2 => {
                let other = nodes
                    .iter()
                    .filter(|n| **n != node)
                    .cloned()
                    .collect::<Vec<_>>();
                let to = other.choose(&mut rng).cloned().unwrap_or_default();
                vec![
                    Step {
                        at: at(start),
                        action: Action::PartitionOneway {
                            from: vec![node],
                            to: vec![to],
                        },
                    },
                    Step {
                        at: at(stop),
                        action: Action::Heal,
                    },
                ]
            }
            3..=5 => {
                // Crashes twice as often as graceful stops; a restart follows either.
                let down = if kind == 5 {
                    Action::Stop { node: node.clone() }
                } else {
                    Action::Crash { node: node.clone() }
                };
                vec![
                    Step {
                        at: at(start),
                        action: down,
                    },
                    Step {
                        at: at(stop),
                        action: Action::Restart { node },
                    },
                ]
            }
            6 => {
                let by_ms = rng.random_range(-5_000..5_000i64);
                vec![Step {
                    at: at(start),
                    action: Action::Skew { node, by_ms },
                }]
            }
            _ => match rng.random_range(0..3u32) {
                0 => {
                    let group = random_group(&mut rng, &nodes);
                    vec![
                        Step {
                            at: at(start),
                            action: Action::Hold {
                                groups: vec![group, vec!["*".into()]],
                            },
                        },
                        Step {
                            at: at(stop.min(start + 3_000)),
                            action: Action::Release,
                        },
                    ]
                }
                1 => vec![
                    Step {
                        at: at(start),
                        action: Action::Loss {
                            rate: rng.random_range(0.01..0.05),
                        },
                    },
                    Step {
                        at: at(stop),
                        action: Action::Loss { rate: base_loss },
                    },
                ],
                _ => vec![
                    Step {
                        at: at(start),
                        action: Action::Latency {
                            max_ms: rng.random_range(20..200),
                        },
                    },
                    Step {
                        at: at(stop),
                        action: Action::Latency {
                            max_ms: base_latency,
                        },
                    },
                ],
            },
        };
        faults.push(fault);
    }
    faults
}

/// The faults beyond the network's and the process's basic ones: a paused node, a torn write at
/// a crash, a failing disk, and a session-expiry storm (every node of a role cut off from coord
/// for longer than a session lives, so all their sessions expire at once).
fn other_fault(
    kind: u32,
    rng: &mut ChaCha8Rng,
    map: &ClusterMap,
    node: &str,
    start: u64,
    stop: u64,
    until: u64,
) -> Fault {
    let node = node.to_string();
    let step = |ms: u64, action: Action| Step { at: at(ms), action };
    match kind {
        8 => vec![step(
            start,
            Action::Pause {
                node,
                for_ms: rng.random_range(500..8_000u64),
            },
        )],
        9 => vec![
            step(
                start,
                Action::Disk {
                    node: node.clone(),
                    fault: DiskFault::Torn,
                },
            ),
            step(stop, Action::Crash { node: node.clone() }),
            step((stop + 1_000).min(until), Action::Restart { node }),
        ],
        10 => vec![
            step(
                start,
                Action::Disk {
                    node: node.clone(),
                    fault: DiskFault::Fail,
                },
            ),
            step(
                stop,
                Action::Disk {
                    node: node.clone(),
                    fault: DiskFault::Ok,
                },
            ),
            step((stop + 1_000).min(until), Action::Restart { node }),
        ],
        _ => {
            // Nodes are planned role by role, so neighbours share a role.
            let roles: Vec<&str> = {
                let mut roles: Vec<&str> = map
                    .nodes
                    .iter()
                    .map(|n| n.role.as_str())
                    .filter(|r| *r != "coord")
                    .collect();
                roles.dedup();
                roles
            };
            match (roles.choose(rng), map.of_role("coord").is_empty()) {
                (Some(role), false) => {
                    // Longer than the longest session timeout the roles negotiate (20 s).
                    let end = (start + 25_000).min(until.max(start + 1));
                    vec![
                        step(
                            start,
                            Action::Partition {
                                groups: vec![
                                    vec![format!("role:{role}")],
                                    vec!["role:coord".into()],
                                ],
                            },
                        ),
                        step(end, Action::Heal),
                    ]
                }
                _ => vec![step(
                    start,
                    Action::Pause {
                        node,
                        for_ms: rng.random_range(500..8_000u64),
                    },
                )],
            }
        }
    }
}

/// The scenario with `faults` in its timeline instead of its own faults (its HTTP requests stay),
/// then a full heal at 70%, judged by its `always` invariants only.
pub fn with_faults(scenario: &Scenario, faults: &[Fault]) -> Scenario {
    let settle = at(scenario.duration.as_millis() as u64 * 7 / 10);
    // The scenario's own requests stay (a deployment to disturb); its own faults give way.
    let mut timeline: Vec<Step> = scenario
        .timeline
        .iter()
        .filter_map(|s| match &s.action {
            // Under random faults an answer may rightly be 503 or none: the request stays as
            // workload, its expected status goes.
            Action::Http(http) => Some(Step {
                at: s.at,
                action: Action::Http(crate::scenario::HttpAction {
                    expect_status: None,
                    ..http.clone()
                }),
            }),
            _ => None,
        })
        .collect();
    timeline.extend(faults.iter().flatten().cloned());
    timeline.push(Step {
        at: settle,
        action: Action::Heal,
    });
    timeline.push(Step {
        at: settle,
        action: Action::Restart { node: "*".into() },
    });
    timeline.sort_by_key(|s| s.at);
    let mut out = scenario.clone();
    out.timeline = timeline;
    out.expect = Expect {
        always: scenario.expect.always.clone(),
        eventually: Vec::new(),
        never: Vec::new(),
    };
    out
}

/// The first failed check of a run, if any.
pub fn failed_check(outcome: &Outcome) -> Option<String> {
    outcome.failures.first().map(|f| f.check.clone())
}

/// Removes faults, then single steps, while `check` still fails with `seed`. Returns the smallest
/// failing scenario found and how many runs it took.
pub fn shrink(
    scenario: &Scenario,
    faults: Vec<Fault>,
    roles: &Roles,
    seed: u64,
    check: &str,
) -> Result<(Scenario, usize), ScenarioError> {
    let mut runs = 0;
    let mut still_fails = |candidate: &Scenario| -> Result<bool, ScenarioError> {
        runs += 1;
        Ok(failed_check(&run(candidate, roles, seed)?).as_deref() == Some(check))
    };
    let mut kept = faults;
    let mut changed = true;
    while changed {
        changed = false;
        let mut i = 0;
        while i < kept.len() {
            let mut fewer = kept.clone();
            fewer.remove(i);
            if still_fails(&with_faults(scenario, &fewer))? {
                kept = fewer;
                changed = true;
            } else {
                i += 1;
            }
        }
    }
    // Then single steps (an undo that is not needed for the failure, say).
    let mut best = with_faults(scenario, &kept);
    let mut i = 0;
    while i < best.timeline.len() {
        let mut candidate = best.clone();
        candidate.timeline.remove(i);
        if still_fails(&candidate)? {
            best = candidate;
        } else {
            i += 1;
        }
    }
    Ok((best, runs))
}

fn duration_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn action_json(step: &Step) -> Value {
    let at = duration_text(step.at);
    match &step.action {
        Action::Partition { groups } => json!({"at": at, "do": "partition", "groups": groups}),
        Action::PartitionOneway { from, to } => {
            json!({"at": at, "do": "partition", "from": from, "to": to})
        }
        Action::Heal => json!({"at": at, "do": "heal"}),
        Action::Hold { groups } => json!({"at": at, "do": "hold", "groups": groups}),
        Action::Release => json!({"at": at, "do": "release"}),
        Action::Crash { node } => json!({"at": at, "do": "crash", "node": node}),
        Action::Stop { node } => json!({"at": at, "do": "stop", "node": node}),
        Action::Restart { node } => json!({"at": at, "do": "restart", "node": node}),
        Action::Skew { node, by_ms } => {
            json!({"at": at, "do": "skew", "node": node, "by": format!("{by_ms:+}ms")})
        }
        Action::Pause { node, for_ms } => {
            json!({"at": at, "do": "pause", "node": node, "for": format!("{for_ms}ms")})
        }
        Action::Disk { node, fault } => {
            json!({"at": at, "do": "disk", "node": node, "fault": fault})
        }
        Action::Latency { max_ms } => json!({"at": at, "do": "latency", "max_ms": max_ms}),
        Action::Loss { rate } => json!({"at": at, "do": "loss", "rate": rate}),
        Action::Http(h) => {
            let mut v =
                json!({"at": at, "do": "http", "node": h.node, "method": h.method, "path": h.path});
            if let Some(port) = h.port {
                v["port"] = json!(port);
            }
            if let Some(body) = &h.body {
                v["body"] = json!(body);
            }
            if let Some(status) = h.expect_status {
                v["expect_status"] = json!(status);
            }
            v
        }
    }
}

/// A scenario as a file `drover sim` loads again (its `eventually`/`never` expectations too).
pub fn to_json(scenario: &Scenario) -> Value {
    let optional = |d: Option<Duration>| d.map(duration_text);
    let eventually: Vec<Value> = scenario
        .expect
        .eventually
        .iter()
        .map(|e| {
            let mut v = json!({"by": duration_text(e.by), "event": e.event});
            if let Some(after) = optional(e.after) {
                v["after"] = json!(after);
            }
            if let Some(node) = &e.node {
                v["node"] = json!(node);
            }
            v
        })
        .collect();
    let never: Vec<Value> = scenario
        .expect
        .never
        .iter()
        .map(|n| {
            let mut v = json!({"event": n.event});
            for (key, value) in [("after", optional(n.after)), ("by", optional(n.by))] {
                if let Some(value) = value {
                    v[key] = json!(value);
                }
            }
            if let Some(node) = &n.node {
                v["node"] = json!(node);
            }
            v
        })
        .collect();
    json!({
        "name": scenario.name,
        "seed": scenario.seed,
        "duration": duration_text(scenario.duration),
        "cluster": scenario.cluster,
        "timeline": scenario.timeline.iter().map(action_json).collect::<Vec<_>>(),
        "expect": {"always": scenario.expect.always, "eventually": eventually, "never": never},
    })
}
