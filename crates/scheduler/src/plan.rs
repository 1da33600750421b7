//! Deployment plans: the steps from the current apps to the target apps, in Marathon's order;
//! and the launch backoff and rolling-restart arithmetic.
//!
//! A plan is, as Marathon builds it:
//!
//! 1. one step stopping every app that the target no longer has (`StopApplication`);
//! 2. one step starting every new app at 0 instances (`StartApplication`);
//! 3. one step per dependency layer, lowest first, for every app that is new or changed:
//!    `ScaleApplication` to the target count for new apps and for changes of `instances` only,
//!    `RestartApplication` for any other change of the definition.
//!
//! An app's layer is the length of the longest dependency chain starting at it, counting the
//! app itself (Marathon's "longest path" grouping): apps without dependencies are layer 1,
//! apps depending only on them layer 2, and so on. So with `apps/basic.json`,
//! `/arm-demo/group1/ubuntu1` is scaled in a step before `/arm-demo/group2/ubuntu2`. Empty
//! steps are left out. A plan with no step changes nothing. The layering is total even on a
//! graph with a cycle (it ignores the edge closing it), though validation refuses those first.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::app::{AppDefinition, UpgradeStrategy};
use crate::group::Group;
use crate::path::PathId;

/// One thing a step does to one app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the app with 0 instances.
    Start { app: PathId },
    /// Change the number of instances.
    Scale { app: PathId, to: u32 },
    /// Replace all instances with the new definition (honouring `upgradeStrategy`).
    Restart { app: PathId },
    /// Kill all instances and forget the app.
    Stop { app: PathId },
}

impl Action {
    /// Marathon's action name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Start { .. } => "StartApplication",
            Action::Scale { .. } => "ScaleApplication",
            Action::Restart { .. } => "RestartApplication",
            Action::Stop { .. } => "StopApplication",
        }
    }

    pub fn app(&self) -> &PathId {
        match self {
            Action::Start { app }
            | Action::Scale { app, .. }
            | Action::Restart { app }
            | Action::Stop { app } => app,
        }
    }

    /// `{"action": "ScaleApplication", "app": "/x"}`.
    pub fn to_json(&self) -> Value {
        json!({"action": self.name(), "app": self.app().to_string()})
    }
}

/// Actions that run together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub actions: Vec<Action>,
}

impl Step {
    pub fn to_json(&self) -> Value {
        json!({"actions": self.actions.iter().map(Action::to_json).collect::<Vec<_>>()})
    }
}

/// A deployment: its id and version (given by the caller: drover draws ids from the node's
/// seeded RNG and versions from its Env clock), the apps it touches and its steps.
#[derive(Clone, Debug, PartialEq)]
pub struct DeploymentPlan {
    pub id: String,
    pub version: String,
    pub affected_apps: BTreeSet<PathId>,
    pub steps: Vec<Step>,
}

impl DeploymentPlan {
    /// The plan from one root group to another.
    pub fn new(id: String, version: String, original: &Group, target: &Group) -> DeploymentPlan {
        let current: BTreeMap<PathId, AppDefinition> = original
            .transitive_apps()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        let wanted: BTreeMap<PathId, AppDefinition> = target
            .transitive_apps()
            .into_iter()
            .map(|(k, v)| (k, v.clone()))
            .collect();
        DeploymentPlan::from_apps(id, version, &current, &wanted, &target.dependency_graph())
    }

    /// The plan from the current apps to the target apps, `target_dependencies` being each
    /// target app's effective dependencies ([`Group::dependency_graph`]).
    pub fn from_apps(
        id: String,
        version: String,
        current: &BTreeMap<PathId, AppDefinition>,
        target: &BTreeMap<PathId, AppDefinition>,
        target_dependencies: &BTreeMap<PathId, BTreeSet<PathId>>,
    ) -> DeploymentPlan {
        let mut steps = Vec::new();
        let removed: Vec<&PathId> = current
            .keys()
            .filter(|id| !target.contains_key(*id))
            .collect();
        steps.push(Step {
            actions: removed
                .iter()
                .map(|id| Action::Stop { app: (*id).clone() })
                .collect(),
        });
        steps.push(Step {
            actions: target
                .keys()
                .filter(|id| !current.contains_key(*id))
                .map(|id| Action::Start { app: id.clone() })
                .collect(),
        });

        let changed: BTreeSet<PathId> = target
            .iter()
            .filter(|(id, app)| match current.get(*id) {
                None => true,
                Some(old) => old.is_upgrade(app) || old.instances != app.instances,
            })
            .map(|(id, _)| id.clone())
            .collect();

        let all: BTreeSet<PathId> = target.keys().cloned().collect();
        let layers = dependency_layers(&all, target_dependencies);
        let mut by_layer: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
        for id in &changed {
            let Some(app) = target.get(id) else { continue };
            let action = match current.get(id) {
                Some(old) if old.is_upgrade(app) => Action::Restart { app: id.clone() },
                _ => Action::Scale {
                    app: id.clone(),
                    to: app.instances,
                },
            };
            by_layer
                .entry(layers.get(id).copied().unwrap_or(1))
                .or_default()
                .push(action);
        }
        steps.extend(by_layer.into_values().map(|actions| Step { actions }));
        steps.retain(|s| !s.actions.is_empty());

        let mut affected_apps = changed;
        affected_apps.extend(removed.into_iter().cloned());
        DeploymentPlan {
            id,
            version,
            affected_apps,
            steps,
        }
    }

    /// True when the plan does nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// True when both plans touch a common app (Marathon then answers 409 unless forced).
    pub fn conflicts_with(&self, other: &DeploymentPlan) -> bool {
        !self.affected_apps.is_disjoint(&other.affected_apps)
    }

    /// `{"steps": [...]}`, what a dry run answers.
    pub fn steps_json(&self) -> Value {
        Value::Array(self.steps.iter().map(Step::to_json).collect())
    }

    /// The entry of `GET /v2/deployments`; `current_step` counts from 1 as Marathon's does.
    pub fn to_marathon_json(&self, current_step: usize) -> Value {
        let current_actions: Vec<Value> = current_step
            .checked_sub(1)
            .and_then(|i| self.steps.get(i))
            .map(|s| {
                s.actions
                    .iter()
                    .map(|a| {
                        json!({"action": a.name(), "app": a.app().to_string(), "readinessCheckResults": []})
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": self.id,
            "version": self.version,
            "affectedApps": self.affected_apps.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "affectedPods": [],
            "steps": self.steps_json(),
            "currentActions": current_actions,
            "currentStep": current_step,
            "totalSteps": self.steps.len(),
        })
    }
}

/// Each app's layer: 1 + the longest chain of dependencies (among `apps`) below it.
/// Iterative and total: an edge that would close a cycle is ignored.
pub fn dependency_layers(
    apps: &BTreeSet<PathId>,
    dependencies: &BTreeMap<PathId, BTreeSet<PathId>>,
) -> BTreeMap<PathId, usize> {
    let deps_of = |id: &PathId| -> Vec<&PathId> {
        dependencies
            .get(id)
            .map(|d| d.iter().filter(|x| apps.contains(*x)).collect())
            .unwrap_or_default()
    };
    let mut layer: BTreeMap<PathId, usize> = BTreeMap::new();
    let mut active: BTreeSet<&PathId> = BTreeSet::new();
    for start in apps {
        if layer.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&PathId, Vec<&PathId>)> = vec![(start, deps_of(start))];
        active.insert(start);
        while let Some((node, pending)) = stack.last_mut() {
            let node: &PathId = node;
            if let Some(next) = pending.pop() {
                if !layer.contains_key(next) && !active.contains(next) {
                    active.insert(next);
                    stack.push((next, deps_of(next)));
                }
                continue;
            }
            let below = deps_of(node)
                .iter()
                .filter_map(|d| layer.get(*d))
                .max()
                .copied()
                .unwrap_or(0);
            layer.insert(node.clone(), below + 1);
            active.remove(node);
            stack.pop();
        }
    }
    layer
}

/// Delay before the next launch of an app whose tasks failed `failures` times in a row:
/// `backoffSeconds × backoffFactor^(failures−1)`, at most `maxLaunchDelaySeconds`; no delay
/// before the first failure. In milliseconds.
pub fn launch_delay_ms(app: &AppDefinition, failures: u32) -> u64 {
    backoff_ms(
        app.backoff_seconds,
        app.backoff_factor,
        app.max_launch_delay_seconds,
        failures,
    )
}

/// [`launch_delay_ms`] on plain numbers.
pub fn backoff_ms(backoff_seconds: u32, factor: f64, max_delay_seconds: u32, failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    let cap = f64::from(max_delay_seconds) * 1000.0;
    let exponent = i32::try_from(failures - 1).unwrap_or(i32::MAX);
    let factor = if factor.is_finite() && factor >= 1.0 {
        factor
    } else {
        1.0
    };
    let delay = f64::from(backoff_seconds) * 1000.0 * factor.powi(exponent);
    let delay = if delay.is_finite() {
        delay.min(cap)
    } else {
        cap
    };
    delay.round() as u64
}

/// Bounds of a rolling restart of `instances` instances: keep at least `min_healthy` healthy,
/// never run more than `max_capacity` in all (Marathon: ⌈n × minimumHealthCapacity⌉ and
/// ⌊n × (1 + maximumOverCapacity)⌋; at least one extra when both would block progress).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartBounds {
    pub min_healthy: u32,
    pub max_capacity: u32,
}

pub fn restart_bounds(instances: u32, strategy: &UpgradeStrategy) -> RestartBounds {
    let n = f64::from(instances);
    let clamp = |x: f64| {
        if x.is_finite() {
            x.clamp(0.0, 1.0)
        } else {
            1.0
        }
    };
    let min_healthy = (n * clamp(strategy.minimum_health_capacity)).ceil() as u32;
    let mut max_capacity = (n * (1.0 + clamp(strategy.maximum_over_capacity))).floor() as u32;
    if min_healthy >= instances && max_capacity <= instances && instances > 0 {
        max_capacity = instances + 1; // otherwise nothing could ever be replaced
    }
    RestartBounds {
        min_healthy: min_healthy.min(instances),
        max_capacity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::parse_group;
    use crate::group::UpdateMode;
    use crate::validation::parse_app;
    use proptest::prelude::*;

    const BASIC: &str = include_str!("../../../apps/basic.json");

    fn p(s: &str) -> PathId {
        PathId::parse(s)
    }

    fn basic() -> Group {
        let update = parse_group(BASIC.as_bytes(), &PathId::root()).unwrap();
        Group::root()
            .apply_update(&PathId::root(), &update, UpdateMode::Create, "v1")
            .unwrap()
    }

    #[test]
    fn basic_json_starts_group1_before_group2() {
        let target = basic();
        let plan = DeploymentPlan::new("d1".into(), "v1".into(), &Group::root(), &target);
        let u1 = p("/arm-demo/group1/ubuntu1");
        let u2 = p("/arm-demo/group2/ubuntu2");
        assert_eq!(
            plan.steps,
            vec![
                Step {
                    actions: vec![
                        Action::Start { app: u1.clone() },
                        Action::Start { app: u2.clone() }
                    ]
                },
                Step {
                    actions: vec![Action::Scale {
                        app: u1.clone(),
                        to: 2
                    }]
                },
                Step {
                    actions: vec![Action::Scale {
                        app: u2.clone(),
                        to: 2
                    }]
                },
            ]
        );
        assert_eq!(plan.affected_apps, BTreeSet::from([u1, u2]));
        assert_eq!(
            plan.to_marathon_json(2),
            json!({
                "id": "d1", "version": "v1",
                "affectedApps": ["/arm-demo/group1/ubuntu1", "/arm-demo/group2/ubuntu2"],
                "affectedPods": [],
                "steps": [
                    {"actions": [{"action": "StartApplication", "app": "/arm-demo/group1/ubuntu1"},
                                 {"action": "StartApplication", "app": "/arm-demo/group2/ubuntu2"}]},
                    {"actions": [{"action": "ScaleApplication", "app": "/arm-demo/group1/ubuntu1"}]},
                    {"actions": [{"action": "ScaleApplication", "app": "/arm-demo/group2/ubuntu2"}]},
                ],
                "currentActions": [{"action": "ScaleApplication", "app": "/arm-demo/group1/ubuntu1",
                                    "readinessCheckResults": []}],
                "currentStep": 2,
                "totalSteps": 3,
            })
        );
        // Applying the same thing again: nothing to do.
        let same = DeploymentPlan::new("d2".into(), "v2".into(), &target, &target);
        assert!(same.is_empty());
        assert!(same.affected_apps.is_empty());
    }

    #[test]
    fn stop_scale_restart() {
        let original = basic();
        // remove group2, scale ubuntu1, add a new app depending on ubuntu1
        let mut target = original.remove_group(&p("/arm-demo/group2"), "v2");
        let u1 = p("/arm-demo/group1/ubuntu1");
        let mut app = target.app(&u1).unwrap().clone();
        app.instances = 5;
        target = target.put_app(app.clone(), "v2").unwrap();
        let web =
            parse_app(br#"{"id":"/web","cmd":"x","dependencies":["/arm-demo/group1"]}"#).unwrap();
        target = target.put_app(web, "v2").unwrap();
        let plan = DeploymentPlan::new("d".into(), "v2".into(), &original, &target);
        assert_eq!(
            plan.steps,
            vec![
                Step {
                    actions: vec![Action::Stop {
                        app: p("/arm-demo/group2/ubuntu2")
                    }]
                },
                Step {
                    actions: vec![Action::Start { app: p("/web") }]
                },
                Step {
                    actions: vec![Action::Scale {
                        app: u1.clone(),
                        to: 5
                    }]
                },
                Step {
                    actions: vec![Action::Scale {
                        app: p("/web"),
                        to: 1
                    }]
                },
            ]
        );
        // a changed command restarts
        app.cmd = Some("sleep 1".into());
        let changed = target.put_app(app, "v3").unwrap();
        let plan = DeploymentPlan::new("d".into(), "v3".into(), &target, &changed);
        assert_eq!(
            plan.steps,
            vec![Step {
                actions: vec![Action::Restart { app: u1.clone() }]
            }]
        );
        assert!(plan.conflicts_with(&DeploymentPlan {
            id: "x".into(),
            version: "v".into(),
            affected_apps: BTreeSet::from([u1]),
            steps: vec![],
        }));
    }

    #[test]
    fn layers() {
        let apps: BTreeSet<PathId> = ["/a", "/b", "/c", "/d"].into_iter().map(p).collect();
        let deps = BTreeMap::from([
            (p("/a"), BTreeSet::from([p("/b"), p("/c")])),
            (p("/b"), BTreeSet::from([p("/c")])),
            (p("/c"), BTreeSet::new()),
            (p("/d"), BTreeSet::from([p("/gone")])),
        ]);
        let l = dependency_layers(&apps, &deps);
        assert_eq!(
            (l[&p("/a")], l[&p("/b")], l[&p("/c")], l[&p("/d")]),
            (3, 2, 1, 1)
        );
        // a cycle does not hang or panic
        let cyc = BTreeMap::from([
            (p("/a"), BTreeSet::from([p("/b")])),
            (p("/b"), BTreeSet::from([p("/a")])),
        ]);
        let l = dependency_layers(&apps, &cyc);
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn backoff() {
        assert_eq!(backoff_ms(1, 1.15, 3600, 0), 0);
        assert_eq!(backoff_ms(1, 1.15, 3600, 1), 1000);
        assert_eq!(backoff_ms(1, 1.15, 3600, 2), 1150);
        assert_eq!(backoff_ms(1, 1.15, 3600, 3), 1322); // 1.15² is 1.32249999… in binary
        assert_eq!(backoff_ms(1, 1.15, 3600, 20), 14_232);
        assert_eq!(backoff_ms(1, 1.15, 3600, 100), 3_600_000);
        assert_eq!(backoff_ms(1, 1.15, 3600, 1000), 3_600_000);
        assert_eq!(backoff_ms(1, 1.15, 3600, u32::MAX), 3_600_000);
        assert_eq!(backoff_ms(0, 2.0, 3600, 5), 0);
        let app = parse_app(br#"{"id":"/a","cmd":"x","backoffSeconds":2,"backoffFactor":2,"maxLaunchDelaySeconds":10}"#)
            .unwrap();
        assert_eq!(launch_delay_ms(&app, 3), 8000);
        assert_eq!(launch_delay_ms(&app, 4), 10000);
    }

    #[test]
    fn restart() {
        let s = |min, over| UpgradeStrategy {
            minimum_health_capacity: min,
            maximum_over_capacity: over,
        };
        assert_eq!(
            restart_bounds(4, &s(1.0, 1.0)),
            RestartBounds {
                min_healthy: 4,
                max_capacity: 8
            }
        );
        assert_eq!(
            restart_bounds(4, &s(0.5, 0.0)),
            RestartBounds {
                min_healthy: 2,
                max_capacity: 4
            }
        );
        assert_eq!(
            restart_bounds(3, &s(0.5, 0.5)),
            RestartBounds {
                min_healthy: 2,
                max_capacity: 4
            }
        );
        assert_eq!(
            restart_bounds(2, &s(1.0, 0.0)),
            RestartBounds {
                min_healthy: 2,
                max_capacity: 3
            }
        );
        assert_eq!(
            restart_bounds(0, &s(1.0, 1.0)),
            RestartBounds {
                min_healthy: 0,
                max_capacity: 0
            }
        );
    }

    proptest! {
        #[test]
        fn backoff_is_monotonic_and_capped(b in 0u32..100, f in 1.0f64..3.0, max in 0u32..10_000, n in 0u32..200) {
            let d = backoff_ms(b, f, max, n);
            prop_assert!(d <= u64::from(max) * 1000);
            prop_assert!(backoff_ms(b, f, max, n + 1) >= d);
        }

        #[test]
        fn layers_respect_dependencies(edges in proptest::collection::vec((0usize..8, 0usize..8), 0..20)) {
            // Random DAG (edges only from higher to lower index): every app is in a higher
            // layer than each of its dependencies.
            let ids: Vec<PathId> = (0..8).map(|i| PathId::parse(&format!("/a{i}"))).collect();
            let mut deps: BTreeMap<PathId, BTreeSet<PathId>> = BTreeMap::new();
            for (x, y) in edges {
                if x > y {
                    deps.entry(ids[x].clone()).or_default().insert(ids[y].clone());
                }
            }
            let all: BTreeSet<PathId> = ids.iter().cloned().collect();
            let layers = dependency_layers(&all, &deps);
            for (app, ds) in &deps {
                for d in ds {
                    prop_assert!(layers[app] > layers[d]);
                }
            }
        }
    }
}
