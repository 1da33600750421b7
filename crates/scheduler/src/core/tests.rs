use super::*;
use crate::group::parse_group;
use crate::group::UpdateMode;

const BASIC: &str = include_str!("../../../../apps/basic.json");

fn scheduler() -> Scheduler {
    let dir = std::env::temp_dir().join(format!("drover-sched-core-{}", std::process::id()));
    let env = drover_core::env::live::env("s", dir, Some(7));
    let mut s = Scheduler::new(env, Tuning::default(), Loaded::default(), 0);
    s.launch_ready = true;
    s
}

fn deploy_basic(s: &mut Scheduler) -> Effects {
    let update = parse_group(BASIC.as_bytes(), &PathId::root()).expect("basic.json parses");
    let target = s
        .root
        .apply_update(
            &PathId::root(),
            &update,
            UpdateMode::Create,
            "2026-01-01T00:00:00.000Z",
        )
        .expect("applies");
    let mut fx = Effects::default();
    s.deploy(target, false, &mut fx).expect("deploys");
    s.converge(0, &mut fx);
    fx
}

/// An offer of agent `od1000-N` (also the API tests').
pub(crate) fn offer(n: u32, cpus: f64) -> v1::Offer {
    serde_json::from_value(json!({
        "id": {"value": format!("o{n}")},
        "framework_id": {"value": "f"},
        "agent_id": {"value": format!("a{n}")},
        "hostname": format!("od1000-{n}"),
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 4096.0}},
            {"name": "disk", "type": "SCALAR", "scalar": {"value": 100000.0}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31010}]}}
        ]
    }))
    .expect("an offer")
}

fn running(s: &mut Scheduler, task: &str) -> Effects {
    let status: v1::TaskStatus =
        serde_json::from_value(json!({"task_id": {"value": task}, "state": "TASK_RUNNING"}))
            .expect("a status");
    let mut fx = Effects::default();
    s.update(&status, 0, &mut fx);
    s.converge(0, &mut fx);
    fx
}

fn launched(decisions: &[(Vec<StoreOp>, Call)]) -> Vec<(String, String)> {
    decisions
        .iter()
        .filter_map(|(_, c)| c.accept.as_ref())
        .flat_map(|a| a.operations.iter())
        .filter_map(|o| o.launch.as_ref())
        .flat_map(|l| l.task_infos.iter())
        .map(|t| (t.task_id.value.clone(), t.agent_id.value.clone()))
        .collect()
}

#[test]
fn dependencies_hold_back_the_later_step_until_the_earlier_one_runs() {
    let mut s = scheduler();
    let fx = deploy_basic(&mut s);
    // The deployment is stored with the apps and groups.
    assert!(fx
        .store
        .iter()
        .any(|op| matches!(op, StoreOp::Put { key, .. } if key.starts_with("deployments/"))));
    assert!(fx.store.iter().any(
        |op| matches!(op, StoreOp::Put { key, .. } if key == "apps/_arm-demo_group1_ubuntu1")
    ));
    let group1 = PathId::parse("/arm-demo/group1/ubuntu1");
    let group2 = PathId::parse("/arm-demo/group2/ubuntu2");
    assert_eq!(s.queue.get(&group1), Some(&2));
    assert_eq!(s.queue.get(&group2), None, "group2 waits for group1");

    let decisions = s.offers(&[offer(0, 4.0), offer(1, 4.0)], 0);
    let tasks = launched(&decisions);
    assert_eq!(tasks.len(), 2);
    assert!(tasks
        .iter()
        .all(|(t, _)| t.starts_with("arm-demo_group1_ubuntu1.")));
    assert_ne!(tasks[0].1, tasks[1].1, "spread over the two offers");
    // Every launched instance is in the store operations of its ACCEPT.
    for (ops, call) in &decisions {
        let ids: Vec<&str> = call
            .accept
            .iter()
            .flat_map(|a| a.operations.iter())
            .filter_map(|o| o.launch.as_ref())
            .flat_map(|l| l.task_infos.iter())
            .map(|t| t.task_id.value.as_str())
            .collect();
        for id in ids {
            assert!(ops.iter().any(
                |op| matches!(op, StoreOp::Put { key, .. } if key == &format!("instances/{id}"))
            ));
        }
    }
    running(&mut s, &tasks[0].0);
    assert_eq!(s.queue.get(&group2), None, "one of two is not enough");
    running(&mut s, &tasks[1].0);
    assert_eq!(s.queue.get(&group2), Some(&2));
    let tasks2 = launched(&s.offers(&[offer(0, 4.0), offer(1, 4.0)], 0));
    assert_eq!(tasks2.len(), 2);
    running(&mut s, &tasks2[0].0);
    let fx = running(&mut s, &tasks2[1].0);
    assert!(s.deployments.is_empty(), "the deployment is done");
    assert!(fx.events.iter().any(|(k, _)| k == "deployment_success"));
}

#[test]
fn a_locked_app_is_a_409_unless_forced_and_scale_down_kills_the_youngest() {
    let mut s = scheduler();
    deploy_basic(&mut s);
    let id = PathId::parse("/arm-demo/group1/ubuntu1");
    let mut app = s.root.app(&id).cloned().expect("the app");
    app.instances = 1;
    let target = s
        .root
        .put_app(app.clone(), "2026-01-01T00:00:01.000Z")
        .expect("puts");
    let mut fx = Effects::default();
    let err = s
        .deploy(target.clone(), false, &mut fx)
        .expect_err("locked");
    assert_eq!(err.status, 409);
    assert!(err.body["deployments"]
        .as_array()
        .is_some_and(|d| d.len() == 1));

    // Forced: the old deployment is cancelled, the new one scales to 1.
    let tasks = launched(&s.offers(&[offer(0, 4.0), offer(1, 4.0)], 0));
    s.instances
        .get_mut(&tasks[0].0)
        .expect("instance")
        .staged_at = 5; // the oldest
    running(&mut s, &tasks[0].0);
    running(&mut s, &tasks[1].0);
    let mut fx = Effects::default();
    s.deploy(target, true, &mut fx).expect("forced");
    s.converge(0, &mut fx);
    let killed: Vec<String> = fx
        .calls
        .iter()
        .filter_map(|c| c.kill.as_ref())
        .map(|k| k.task_id.value.clone())
        .collect();
    assert_eq!(killed, vec![tasks[1].0.clone()]);
}

#[test]
fn a_failed_task_is_replaced_after_the_launch_backoff() {
    let mut s = scheduler();
    deploy_basic(&mut s);
    let tasks = launched(&s.offers(&[offer(0, 4.0)], 1_000));
    assert_eq!(tasks.len(), 2);
    let failed: v1::TaskStatus =
        serde_json::from_value(json!({"task_id": {"value": tasks[0].0}, "state": "TASK_FAILED"}))
            .expect("a status");
    let mut fx = Effects::default();
    s.update(&failed, 1_000, &mut fx);
    s.converge(1_000, &mut fx);
    assert!(fx.store.contains(&StoreOp::Delete {
        key: format!("instances/{}", tasks[0].0)
    }));
    let id = PathId::parse("/arm-demo/group1/ubuntu1");
    assert_eq!(s.queue.get(&id), Some(&1));
    assert!(
        launched(&s.offers(&[offer(1, 4.0)], 1_500)).is_empty(),
        "backoff: 1 s"
    );
    assert_eq!(launched(&s.offers(&[offer(1, 4.0)], 2_000)).len(), 1);
}

#[test]
fn an_offer_too_small_is_declined_and_the_queue_says_why() {
    let mut s = scheduler();
    deploy_basic(&mut s);
    let decisions = s.offers(&[offer(0, 0.1)], 0);
    assert!(decisions[0].1.decline.is_some());
    let queue = s.queue_json(0);
    let reasons = &queue["queue"][0]["processedOffersSummary"]["rejectSummaryLastOffers"];
    let cpus = reasons
        .as_array()
        .expect("reasons")
        .iter()
        .find(|r| r["reason"] == "InsufficientCpus")
        .expect("the cpus reason");
    assert_eq!(cpus["declined"], 1);
}

#[test]
fn the_stored_state_rebuilds_the_same_root_and_deployment() {
    let mut s = scheduler();
    let fx = deploy_basic(&mut s);
    let mut groups = Vec::new();
    let mut apps = Vec::new();
    let mut deployments = BTreeMap::new();
    for op in &fx.store {
        if let StoreOp::Put { key, data } = op {
            let value: Value = serde_json::from_slice(data).expect("json");
            let (dir, name) = key.split_once('/').expect("a dir");
            match dir {
                keys::GROUPS => groups.push((keys::decode(name).expect("an id"), value)),
                keys::APPS => apps.push((keys::decode(name).expect("an id"), value)),
                keys::DEPLOYMENTS => {
                    deployments.insert(
                        name.to_string(),
                        Deployment::from_storage_json(&value).expect("a deployment"),
                    );
                }
                _ => {}
            }
        }
    }
    let (root, _) = rebuild_root(&groups, &apps).expect("rebuilds");
    assert_eq!(root.transitive_apps(), s.root.transitive_apps());
    assert_eq!(root.dependency_graph(), s.root.dependency_graph());
    assert_eq!(deployments.len(), 1);
    let original = s.deployments.values().next().expect("one");
    let stored = deployments.values().next().expect("one");
    assert_eq!(stored.plan, original.plan);
    assert_eq!(stored.step, original.step);
}

#[test]
fn a_unique_hostname_constraint_keeps_the_third_instance_waiting_and_counts_the_decline() {
    let mut s = scheduler();
    let app = crate::validation::parse_app(
        br#"{"id": "/uniq", "cmd": "sleep 100", "instances": 3, "cpus": 0.1, "mem": 16,
             "constraints": [["hostname", "UNIQUE"]]}"#,
    )
    .expect("parses");
    let target = s
        .root
        .put_app(app, "2026-01-01T00:00:00.000Z")
        .expect("puts");
    let mut fx = Effects::default();
    s.deploy(target, false, &mut fx).expect("deploys");
    s.converge(0, &mut fx);
    let first = launched(&s.offers(&[offer(0, 4.0), offer(1, 4.0)], 0));
    assert_eq!(first.len(), 2);
    assert_ne!(first[0].1, first[1].1);
    let again = s.offers(&[offer(0, 4.0)], 0);
    assert!(
        launched(&again).is_empty(),
        "no second instance on od1000-0"
    );
    assert!(again[0].1.decline.is_some());
    let queue = s.queue_json(0);
    let entry = &queue["queue"][0];
    assert_eq!(entry["count"], 1);
    let declined = entry["processedOffersSummary"]["rejectSummaryLastOffers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["reason"] == "UnfulfilledConstraint")
        .and_then(|r| r["declined"].as_u64());
    assert!(declined.is_some_and(|n| n > 0), "{entry}");
}

#[test]
fn an_unknown_running_task_is_killed() {
    let mut s = scheduler();
    let fx = running(&mut s, "stranger.1");
    assert!(fx.calls.iter().any(|c| c
        .kill
        .as_ref()
        .is_some_and(|k| k.task_id.value == "stranger.1")));
}

fn refuse_seconds(call: &Call) -> Option<f64> {
    let filters = match (&call.accept, &call.decline) {
        (Some(accept), _) => accept.filters.as_ref(),
        (_, Some(decline)) => decline.filters.as_ref(),
        _ => None,
    };
    filters.and_then(|f| f.refuse_seconds)
}

#[test]
fn what_an_offer_leaves_is_refused_only_as_long_as_nothing_here_could_use_it() {
    let mut s = scheduler();
    deploy_basic(&mut s);
    // Two offers in one event share the two instances; the first leaves one waiting for the
    // second, so its agent's leftovers are wanted back in the very next allocation.
    let decisions = s.offers(&[offer(0, 4.0), offer(1, 4.0)], 100);
    assert_eq!(launched(&decisions).len(), 2);
    assert_eq!(refuse_seconds(&decisions[0].1), Some(0.0));
    // Nothing waits after the second: its leftovers are refused as an unfit offer's.
    assert_eq!(refuse_seconds(&decisions[1].1), Some(5.0));

    // Out of launch tokens: refused until they refill, not for the unfit offers' 5 s.
    let mut s = scheduler();
    s.tuning.launch_tokens = 1;
    s.tokens = (1, 0);
    deploy_basic(&mut s);
    let decisions = s.offers(&[offer(0, 4.0)], 300);
    assert_eq!(launched(&decisions).len(), 1);
    assert_eq!(refuse_seconds(&decisions[0].1), Some(0.7));
    let decisions = s.offers(&[offer(1, 4.0)], 600);
    assert!(decisions[0].1.decline.is_some());
    assert_eq!(refuse_seconds(&decisions[0].1), Some(0.4));
    let decisions = s.offers(&[offer(1, 4.0)], 1000);
    assert_eq!(launched(&decisions).len(), 1, "the tokens refilled");
}

#[test]
fn an_app_spreads_over_the_agents_that_offer_even_when_their_offers_come_one_by_one() {
    let mut s = scheduler();
    deploy_basic(&mut s);
    let group2 = PathId::parse("/arm-demo/group2/ubuntu2");
    let tasks = launched(&s.offers(&[offer(0, 4.0), offer(1, 4.0)], 0));
    for (task, _) in &tasks {
        running(&mut s, task);
    }
    assert_eq!(s.queue.get(&group2), Some(&2));
    // The first agent's leftovers come back alone: one instance there, the other is kept for
    // the second agent, which offered a moment ago.
    let alone = launched(&s.offers(&[offer(0, 4.0)], 1_000));
    assert_eq!(alone.len(), 1, "{alone:?}");
    assert_eq!(alone[0].1, "a0");
    let again = s.offers(&[offer(0, 4.0)], 1_100);
    assert!(launched(&again).is_empty() && again[0].1.decline.is_some());
    let other = launched(&s.offers(&[offer(1, 4.0)], 1_200));
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].1, "a1");

    // An agent that has no room for an instance, or stopped offering for longer than the
    // window, holds nothing back.
    let mut s = scheduler();
    deploy_basic(&mut s);
    let _ = s.offers(&[offer(1, 0.1)], 0);
    assert_eq!(
        launched(&s.offers(&[offer(0, 4.0)], 100)).len(),
        2,
        "a1 is too small"
    );
    let window = Tuning::default().spread_window_ms;
    for (at, placed) in [(window, 1), (window + 1, 2)] {
        let mut s = scheduler();
        let declined = s.offers(&[offer(1, 4.0)], 0);
        assert!(declined[0].1.decline.is_some(), "nothing to launch yet");
        deploy_basic(&mut s);
        assert_eq!(
            launched(&s.offers(&[offer(0, 4.0)], at)).len(),
            placed,
            "at {at}"
        );
    }
}
