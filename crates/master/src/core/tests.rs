use super::*;
use drover_core::v1::EventType;

struct World {
    master: Master,
    stream: mpsc::Receiver<Bytes>,
    agent: mpsc::UnboundedReceiver<MasterMessage>,
    framework: String,
    agent_id: String,
}

fn call(json: serde_json::Value) -> Call {
    serde_json::from_value(json).expect("a valid call")
}

/// The records sent on a stream so far, each decoded as `T`.
fn records<T: serde::de::DeserializeOwned>(rx: &mut mpsc::Receiver<Bytes>) -> Vec<T> {
    let mut decoder = drover_core::recordio::Decoder::default();
    while let Ok(bytes) = rx.try_recv() {
        decoder.feed(&bytes);
    }
    let mut out = Vec::new();
    while let Ok(Some(record)) = decoder.next_record() {
        out.push(serde_json::from_slice(&record).expect("a record"));
    }
    out
}

fn events(rx: &mut mpsc::Receiver<Bytes>) -> Vec<Event> {
    records(rx)
}

fn messages(rx: &mut mpsc::UnboundedReceiver<MasterMessage>) -> Vec<MasterMessage> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(m);
    }
    out
}

fn registration(agent_id: Option<String>, tasks: Vec<TaskReport>) -> Registration {
    Registration {
        agent_id,
        hostname: "a1".into(),
        port: 5051,
        address: None,
        resources: "cpus:2;mem:1024".into(),
        attributes: "rack:r1".into(),
        tasks,
    }
}

/// A master with one agent and one subscribed framework (partition aware or not).
fn world(partition_aware: bool) -> World {
    let dir = std::env::temp_dir().join(format!("drover-master-core-{}", std::process::id()));
    let env = drover_core::env::live::env("m", dir, Some(3));
    let info = MasterInfo::new("m1", "127.0.0.1", 5050);
    let mut master = Master::new(env, Tuning::default(), info, BTreeMap::new(), 0);
    let (agent_tx, agent) = mpsc::unbounded_channel();
    let reg = registration(None, vec![]);
    let agent_id = master.admit_id(&reg);
    master
        .agent_registered(1, &agent_id, &reg, agent_tx, 0)
        .expect("registered");
    let (tx, stream) = mpsc::channel(64);
    let capabilities = if partition_aware {
        serde_json::json!([{"type": "PARTITION_AWARE"}])
    } else {
        serde_json::json!([])
    };
    let subscribe = call(
        serde_json::json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "u", "name": "f", "capabilities": capabilities}}}),
    );
    let (framework, _) = master.subscribe(&subscribe, tx, 0).expect("subscribed");
    let mut w = World {
        master,
        stream,
        agent,
        framework,
        agent_id,
    };
    assert_eq!(messages(&mut w.agent).len(), 1, "Registered");
    assert_eq!(events(&mut w.stream)[0].kind, EventType::Subscribed);
    w
}

fn launch(w: &mut World, task: &str) {
    w.master.allocate(1000);
    let offers = events(&mut w.stream);
    let offer = offers[0].offers.as_ref().expect("offers").offers[0].clone();
    let accept = call(
        serde_json::json!({"type": "ACCEPT", "framework_id": {"value": w.framework},
        "accept": {"offer_ids": [offer.id], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": task, "task_id": {"value": task}, "agent_id": offer.agent_id,
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}}],
            "command": {"value": "sleep 100"}}]}}]}}),
    );
    let framework = w.framework.clone();
    w.master.call(&framework, accept, 1000).expect("accepted");
}

fn update(w: &mut World, task: &str, uuid: &str, state: TaskState) {
    w.master.agent_update(
        1,
        StatusUpdate {
            task_id: task.into(),
            framework_id: w.framework.clone(),
            uuid: uuid.into(),
            state,
            message: None,
            reason: None,
            timestamp_ms: 5,
            healthy: None,
            ip_addresses: Vec::new(),
        },
    );
}

#[test]
fn updates_are_forwarded_until_acknowledged_and_acks_reach_the_agent() {
    let mut w = world(false);
    launch(&mut w, "t1");
    assert!(matches!(
        &messages(&mut w.agent)[..],
        [MasterMessage::RunTask { .. }]
    ));
    update(&mut w, "t1", "u1", TaskState::TaskRunning);
    update(&mut w, "t1", "u1", TaskState::TaskRunning); // the agent's retry
    let got = events(&mut w.stream);
    assert_eq!(
        got.len(),
        2,
        "each copy forwarded until acknowledged: {got:?}"
    );
    assert_eq!(got[0], got[1]);
    let status = got[0].update.as_ref().expect("update").status.clone();
    assert_eq!(status.uuid.as_deref(), Some(b64("u1").as_str()));
    let ack = call(
        serde_json::json!({"type": "ACKNOWLEDGE", "framework_id": {"value": w.framework},
        "acknowledge": {"agent_id": {"value": w.agent_id}, "task_id": {"value": "t1"}, "uuid": status.uuid}}),
    );
    let framework = w.framework.clone();
    w.master.call(&framework, ack.clone(), 2000).expect("ack");
    assert_eq!(
        messages(&mut w.agent),
        vec![MasterMessage::Acknowledge {
            task_id: "t1".into(),
            uuid: "u1".into()
        }]
    );
    // A retry that crossed the ack is acknowledged by the master, not sent again.
    update(&mut w, "t1", "u1", TaskState::TaskRunning);
    assert!(events(&mut w.stream).is_empty());
    assert_eq!(messages(&mut w.agent).len(), 1);
    // A duplicate ack is accepted and ignored (pymesos acks duplicates again).
    w.master.call(&framework, ack, 2000).expect("duplicate ack");
    assert!(messages(&mut w.agent).is_empty());
}

#[test]
fn health_and_addresses_reach_the_framework_reconciliation_and_state() {
    let mut w = world(false);
    launch(&mut w, "t1");
    messages(&mut w.agent);
    w.master.agent_update(
        1,
        StatusUpdate {
            task_id: "t1".into(),
            framework_id: w.framework.clone(),
            uuid: "u1".into(),
            state: TaskState::TaskRunning,
            message: None,
            reason: Some("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED".into()),
            timestamp_ms: 5,
            healthy: Some(false),
            ip_addresses: vec!["172.18.0.7".into()],
        },
    );
    let got = events(&mut w.stream);
    let status = &got[0].update.as_ref().expect("update").status;
    assert_eq!(status.healthy, Some(false));
    let json = serde_json::to_value(&got[0]).unwrap();
    assert_eq!(json["update"]["status"]["healthy"], false);
    // The container's address, in Mesos' shape.
    let addresses = serde_json::json!({"network_infos": [{"ip_addresses": [
        {"protocol": "IPv4", "ip_address": "172.18.0.7"}]}]});
    assert_eq!(json["update"]["status"]["container_status"], addresses);
    let reconcile = call(
        serde_json::json!({"type": "RECONCILE", "framework_id": {"value": w.framework},
        "reconcile": {"tasks": []}}),
    );
    let framework = w.framework.clone();
    w.master
        .call(&framework, reconcile, 2000)
        .expect("reconcile");
    let got = events(&mut w.stream);
    let status = &got[0].update.as_ref().expect("update").status;
    assert_eq!(status.reason.as_deref(), Some("REASON_RECONCILIATION"));
    assert_eq!(status.healthy, Some(false));
    assert_eq!(
        status.container_status.as_ref().map(|c| c.addresses()),
        Some(vec!["172.18.0.7".to_string()])
    );
    let task = w
        .master
        .tasks
        .get(&(framework.clone(), "t1".to_string()))
        .unwrap();
    assert_eq!(task_json("t1", task)["statuses"][0]["healthy"], false);
    assert_eq!(
        task_json("t1", task)["statuses"][0]["container_status"],
        addresses
    );
    // A later status: the state shows when it started (the first RUNNING) and the latest.
    w.master.agent_update(
        1,
        StatusUpdate {
            task_id: "t1".into(),
            framework_id: framework.clone(),
            uuid: "u2".into(),
            state: TaskState::TaskRunning,
            message: None,
            reason: Some("REASON_TASK_HEALTH_CHECK_STATUS_UPDATED".into()),
            timestamp_ms: 9000,
            healthy: Some(true),
            ip_addresses: vec!["172.18.0.7".into()],
        },
    );
    let task = w.master.tasks.get(&(framework, "t1".to_string())).unwrap();
    let statuses = task_json("t1", task)["statuses"].clone();
    assert_eq!(statuses.as_array().map(Vec::len), Some(2), "{statuses}");
    assert_eq!(statuses[0]["timestamp"], 0.005);
    assert_eq!(statuses[1]["healthy"], true);
}

/// The operator API's records, as JSON.
fn operator_events(rx: &mut mpsc::Receiver<Bytes>) -> Vec<serde_json::Value> {
    records(rx)
}

#[test]
fn an_operator_subscriber_gets_the_state_then_every_change() {
    let mut w = world(false);
    let (tx, mut rx) = mpsc::channel(64);
    w.master.operator_subscribe(tx);
    let got = operator_events(&mut rx);
    assert_eq!(got[0]["type"], "SUBSCRIBED");
    let state = &got[0]["subscribed"]["get_state"];
    assert_eq!(
        state["get_agents"]["agents"][0]["agent_info"]["hostname"],
        "a1"
    );
    assert_eq!(
        state["get_frameworks"]["frameworks"][0]["framework_info"]["id"]["value"],
        w.framework.as_str()
    );
    launch(&mut w, "t1");
    let got = operator_events(&mut rx);
    assert_eq!(got[0]["type"], "TASK_ADDED");
    assert_eq!(got[0]["task_added"]["task"]["task_id"]["value"], "t1");
    assert_eq!(got[0]["task_added"]["task"]["state"], "TASK_STAGING");
    w.master.agent_update(
        1,
        StatusUpdate {
            task_id: "t1".into(),
            framework_id: w.framework.clone(),
            uuid: "u1".into(),
            state: TaskState::TaskRunning,
            message: None,
            reason: None,
            timestamp_ms: 5,
            healthy: None,
            ip_addresses: vec!["172.18.0.9".into()],
        },
    );
    let got = operator_events(&mut rx);
    assert_eq!(got.len(), 1, "{got:?}");
    let updated = &got[0]["task_updated"];
    assert_eq!(got[0]["type"], "TASK_UPDATED");
    assert_eq!(updated["state"], "TASK_RUNNING");
    assert_eq!(
        updated["status"]["container_status"]["network_infos"][0]["ip_addresses"][0]["ip_address"],
        "172.18.0.9"
    );
    // A new subscriber sees the task's address in its state.
    let (tx, mut again) = mpsc::channel(64);
    w.master.operator_subscribe(tx);
    let got = operator_events(&mut again);
    let task = &got[0]["subscribed"]["get_state"]["get_tasks"]["tasks"][0];
    assert_eq!(task["state"], "TASK_RUNNING");
    assert_eq!(
        task["statuses"][0]["container_status"]["network_infos"][0]["ip_addresses"][0]
            ["ip_address"],
        "172.18.0.9"
    );
    // A subscriber that went away is dropped; heartbeats reach the others.
    drop(rx);
    w.master.heartbeat();
    assert_eq!(operator_events(&mut again)[0]["type"], "HEARTBEAT");
    assert_eq!(w.master.operators.len(), 1);
}

#[test]
fn an_accept_of_a_stale_offer_drops_its_tasks() {
    let mut w = world(true);
    let accept = call(
        serde_json::json!({"type": "ACCEPT", "framework_id": {"value": w.framework},
        "accept": {"offer_ids": [{"value": "gone"}], "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "t", "task_id": {"value": "t"}, "agent_id": {"value": w.agent_id},
            "command": {"value": "true"}}]}}]}}),
    );
    let framework = w.framework.clone();
    w.master.call(&framework, accept, 0).expect("answered 202");
    let got = events(&mut w.stream);
    let status = &got[0].update.as_ref().expect("update").status;
    assert_eq!(status.state, TaskState::TaskDropped);
    assert_eq!(status.reason.as_deref(), Some("REASON_INVALID_OFFERS"));
    assert!(messages(&mut w.agent).is_empty());
}

#[test]
fn an_unreachable_agent_comes_back_without_its_tasks_being_killed() {
    let mut w = world(true);
    launch(&mut w, "t1");
    update(&mut w, "t1", "u1", TaskState::TaskRunning);
    events(&mut w.stream);
    messages(&mut w.agent);
    let (otx, mut operator) = mpsc::channel(64);
    w.master.operator_subscribe(otx);
    operator_events(&mut operator);
    for _ in 0..6 {
        w.master.ping_agents(); // never answered
    }
    let kinds = |rx: &mut mpsc::Receiver<Bytes>| -> Vec<String> {
        operator_events(rx)
            .iter()
            .map(|e| {
                let state = e["task_updated"]["state"].as_str().unwrap_or("");
                format!("{} {state}", e["type"].as_str().unwrap_or("?"))
                    .trim()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        kinds(&mut operator),
        vec!["AGENT_REMOVED", "TASK_UPDATED TASK_UNREACHABLE"]
    );
    let got = events(&mut w.stream);
    assert_eq!(
        got.last()
            .and_then(|e| e.update.as_ref())
            .map(|u| u.status.state),
        Some(TaskState::TaskUnreachable)
    );
    let report = TaskReport {
        framework_id: w.framework.clone(),
        framework: serde_json::json!({"user": "u", "name": "f"}),
        task: serde_json::json!({"name": "t1", "task_id": {"value": "t1"}, "agent_id": {"value": w.agent_id},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}}]}),
        state: TaskState::TaskRunning,
        ip_addresses: Vec::new(),
    };
    let (tx, mut agent) = mpsc::unbounded_channel();
    let id = w.agent_id.clone();
    w.master
        .agent_registered(
            2,
            &id,
            &registration(Some(id.clone()), vec![report]),
            tx,
            9000,
        )
        .expect("re-registered");
    let sent = messages(&mut agent);
    assert!(
        sent.iter()
            .all(|m| !matches!(m, MasterMessage::KillTask { .. })),
        "{sent:?}"
    );
    // Followers see the task running again, then the agent back.
    assert_eq!(
        kinds(&mut operator),
        vec!["TASK_UPDATED TASK_RUNNING", "AGENT_ADDED"]
    );
    let got = events(&mut w.stream);
    let status = &got
        .last()
        .and_then(|e| e.update.as_ref())
        .expect("update")
        .status;
    assert_eq!(
        (status.state, status.uuid.as_ref()),
        (TaskState::TaskRunning, None)
    );
    // The task's resources count again: the agent has 1 of 2 cpus left to offer.
    w.master.allocate(10_000);
    let offers = events(&mut w.stream);
    let offered = &offers[0].offers.as_ref().expect("offers").offers[0];
    let cpus: f64 = offered
        .resources
        .iter()
        .filter(|r| r.name == "cpus")
        .filter_map(|r| r.scalar.as_ref())
        .map(|s| s.value)
        .sum();
    assert_eq!(cpus, 1.0);
}

#[test]
fn a_new_master_names_agents_not_back_yet_and_learns_container_addresses_from_them() {
    let dir = std::env::temp_dir().join(format!("drover-master-core-r-{}", std::process::id()));
    let env = drover_core::env::live::env("m", dir, Some(4));
    let info = MasterInfo::new("m2", "127.0.0.1", 5050);
    let registry = BTreeMap::from([(
        "S1".to_string(),
        RegistryEntry {
            hostname: "a1".into(),
            state: "admitted".into(),
        },
    )]);
    let mut master = Master::new(env, Tuning::default(), info, registry, 0);
    let (otx, mut operator) = mpsc::channel(64);
    master.operator_subscribe(otx);
    let subscribed = &operator_events(&mut operator)[0];
    assert_eq!(
        subscribed["subscribed"]["get_state"]["get_agents"]["recovered_agents"],
        serde_json::json!([{"id": {"value": "S1"}, "hostname": "a1"}])
    );
    let report = TaskReport {
        framework_id: "F1".into(),
        framework: serde_json::json!({"user": "u", "name": "marathon", "id": {"value": "F1"}}),
        task: serde_json::json!({"name": "t1", "task_id": {"value": "t1"}, "agent_id": {"value": "S1"},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}}]}),
        state: TaskState::TaskRunning,
        ip_addresses: vec!["10.0.3.2".into()],
    };
    let (tx, _agent) = mpsc::unbounded_channel();
    master
        .agent_registered(
            1,
            "S1",
            &registration(Some("S1".into()), vec![report]),
            tx,
            10,
        )
        .expect("re-registered");
    let got = operator_events(&mut operator);
    let kinds: Vec<&str> = got.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, vec!["FRAMEWORK_ADDED", "TASK_ADDED", "AGENT_ADDED"]);
    assert_eq!(
        got[1]["task_added"]["task"]["statuses"][0]["container_status"]["network_infos"][0]
            ["ip_addresses"][0]["ip_address"],
        "10.0.3.2"
    );
    // Back: no longer a recovered agent.
    let state = master.operator_state();
    assert_eq!(
        state["get_agents"]["recovered_agents"],
        serde_json::json!([])
    );
}

#[test]
fn reconciliation_answers_known_and_unknown_tasks() {
    let mut w = world(false);
    launch(&mut w, "t1");
    events(&mut w.stream);
    let framework = w.framework.clone();
    let explicit = call(
        serde_json::json!({"type": "RECONCILE", "framework_id": {"value": framework},
        "reconcile": {"tasks": [{"task_id": {"value": "t1"}}, {"task_id": {"value": "nope"}}]}}),
    );
    w.master.call(&framework, explicit, 0).expect("reconcile");
    let states: Vec<(String, TaskState)> = events(&mut w.stream)
        .into_iter()
        .filter_map(|e| e.update)
        .map(|u| (u.status.task_id.value, u.status.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("t1".into(), TaskState::TaskStaging),
            ("nope".into(), TaskState::TaskLost)
        ]
    );
    let implicit = call(
        serde_json::json!({"type": "RECONCILE", "framework_id": {"value": framework}, "reconcile": {}}),
    );
    w.master.call(&framework, implicit, 0).expect("reconcile");
    assert_eq!(events(&mut w.stream).len(), 1);
}

#[test]
fn updates_of_a_removed_framework_are_acknowledged_by_the_master() {
    let mut w = world(false);
    launch(&mut w, "t1");
    messages(&mut w.agent);
    let framework = w.framework.clone();
    w.master.teardown(&framework, "test");
    assert!(matches!(
        &messages(&mut w.agent)[..],
        [MasterMessage::ShutdownFramework { .. }]
    ));
    update(&mut w, "t1", "u9", TaskState::TaskKilled);
    assert_eq!(
        messages(&mut w.agent),
        vec![MasterMessage::Acknowledge {
            task_id: "t1".into(),
            uuid: "u9".into()
        }]
    );
}

#[test]
fn ids_do_not_repeat_when_the_same_master_leads_again() {
    let dir = std::env::temp_dir().join(format!("drover-master-ids-{}", std::process::id()));
    let env = drover_core::env::live::env("m", dir, Some(3));
    let info = MasterInfo::new("m1", "127.0.0.1", 5050);
    let reg = registration(None, vec![]);
    let mut first = Master::new(
        env.clone(),
        Tuning::default(),
        info.clone(),
        BTreeMap::new(),
        0,
    );
    let mut again = Master::new(env, Tuning::default(), info, BTreeMap::new(), 0);
    assert_ne!(first.admit_id(&reg), again.admit_id(&reg));
}

#[test]
fn calls_need_the_current_stream() {
    let w = world(false);
    let decline = call(
        serde_json::json!({"type": "DECLINE", "framework_id": {"value": w.framework}, "decline": {}}),
    );
    assert_eq!(
        w.master.check_stream(&decline, None).unwrap_err().status,
        400
    );
    assert_eq!(
        w.master
            .check_stream(&decline, Some("old"))
            .unwrap_err()
            .status,
        400
    );
    let stranger =
        call(serde_json::json!({"type": "DECLINE", "framework_id": {"value": "x"}, "decline": {}}));
    assert_eq!(
        w.master
            .check_stream(&stranger, Some("s"))
            .unwrap_err()
            .status,
        403
    );
}

#[test]
fn a_framework_keeps_its_principal_over_failovers_even_none() {
    // World's framework subscribed without a principal: nobody may take it over with one.
    let mut w = world(false);
    let resubscribe = |principal: Option<&str>| {
        let mut info = serde_json::json!({"user": "u", "name": "f", "id": {"value": w.framework}});
        if let Some(principal) = principal {
            info["principal"] = serde_json::json!(principal);
        }
        call(
            serde_json::json!({"type": "SUBSCRIBE", "framework_id": {"value": w.framework},
            "subscribe": {"framework_info": info}}),
        )
    };
    let (tx, _stream) = mpsc::channel(64);
    let error = w
        .master
        .subscribe(&resubscribe(Some("mallory")), tx, 10)
        .unwrap_err();
    assert_eq!(error.status, 403, "{}", error.message);
    assert!(error.message.contains("principal is not allowed"));
    // The framework itself (no principal) fails over as before.
    let (tx, _stream) = mpsc::channel(64);
    let (id, _) = w.master.subscribe(&resubscribe(None), tx, 20).unwrap();
    assert_eq!(id, w.framework);
}
