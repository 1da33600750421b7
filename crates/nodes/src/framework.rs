//! A simulated framework on the master's v1 scheduler API (through drover's client), for the
//! master/agent scenarios: it keeps `SLOTS` tasks running, half long-lived (`sleep 100000`) and
//! half short (`sleep 20`, replaced under a new id when they finish), so status updates flow all
//! the time. It is partition aware and waits for an unreachable task rather than replacing it.
//!
//! Events for the invariants: `update task=T state=S uuid=U` for each status update received
//! (`uuid=-` when there is none, as for reconciliation), `subscribed`, `disconnected`.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_core::task::TaskState;
use drover_core::v1::{self, Call, CallType, EventType, FrameworkInfo, Id};
use drover_core::Event as NodeEvent;
use drover_master::client::{Driver, DriverEvent, Locator};
use drover_sim::Role;

const SLOTS: u32 = 4;
const CPUS: f64 = 0.5;
const MEM: f64 = 128.0;
/// After (re-)subscribing, launch nothing until reconciliation has had time to answer.
const RECONCILE_WAIT: Duration = Duration::from_secs(3);
const ID_FILE: &str = "framework_id";
/// The slots' tasks and the next generation of each, synced before every launch: a restarted
/// framework knows its tasks (and waits for an unreachable one) and never uses a task id twice
/// (Mesos lets a framework reuse an id only once the old task's terminal update is acknowledged,
/// which a framework that failed over cannot know).
const SLOTS_FILE: &str = "framework_slots";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Slots {
    tasks: BTreeMap<u32, (String, TaskState)>,
    generation: BTreeMap<u32, u32>,
}
/// A task not heard of this long after its launch is killed (and so reported, and replaced).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Implicit reconciliation every this many 5-second sweeps.
const RECONCILE_EVERY_SWEEPS: u64 = 6;

fn slot_command(slot: u32) -> &'static str {
    if slot.is_multiple_of(2) {
        "sleep 100000"
    } else {
        "sleep 20"
    }
}

/// `<node>-s<slot>-<generation>` → (slot, generation).
fn parse_task(node: &str, task: &str) -> Option<(u32, u32)> {
    let rest = task.strip_prefix(node)?.strip_prefix("-s")?;
    let (slot, generation) = rest.split_once('-')?;
    Some((slot.parse().ok()?, generation.parse().ok()?))
}

pub fn role() -> Role {
    Role::new("framework", None, |mut context| {
        Box::pin(async move {
            let env = context.env.clone();
            let locator = match crate::master::sim_zk(&context.cluster) {
                Some(zk) => Locator::Zk(zk),
                None => {
                    let masters = context.cluster.of_role("master");
                    let first = masters.first().ok_or("a framework needs a master")?;
                    Locator::Direct(first.to_string(), crate::master::PORT)
                }
            };
            let known_id = env
                .disk()
                .read(ID_FILE)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let info = FrameworkInfo {
                user: "root".into(),
                name: context.name.clone(),
                id: known_id.map(Id::new),
                failover_timeout: Some(604_800.0),
                capabilities: vec![v1::Capability {
                    kind: "PARTITION_AWARE".into(),
                }],
                principal: context
                    .cluster
                    .auth
                    .as_ref()
                    .map(|_| "framework".to_string()),
                ..FrameworkInfo::default()
            };
            let secret = context.cluster.auth.as_ref().map(|a| a.secret.as_str());
            let (driver, mut events) =
                Driver::start_authenticated(env.clone(), locator, info, secret);
            let node = context.name.clone();
            // Per slot: the current task id and its latest state.
            let saved: Slots = env
                .disk()
                .read(SLOTS_FILE)
                .await?
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let Slots {
                mut tasks,
                mut generation,
            } = saved;
            let mut launch_after = tokio::time::Instant::now() + RECONCILE_WAIT;
            // Tasks launched but not heard of since, and when (Marathon's task launch timeout:
            // a RunTask can be lost with its connection; killing the task makes the agent
            // report it LOST, and the slot is filled again).
            let mut staging: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
            let mut sweep = tokio::time::interval(Duration::from_secs(5));
            let mut sweeps = 0u64;
            loop {
                let event = tokio::select! {
                    biased;
                    _ = context.shutdown.requested() => return Ok(()),
                    event = events.recv() => match event { Some(e) => e, None => return Ok(()) },
                                        _ = sweep.tick() => {
                        let now = tokio::time::Instant::now();
                        // Implicit reconciliation now and then, as Marathon does: a status the
                        // master sent while the stream was down is learnt again.
                        sweeps += 1;
                        if sweeps.is_multiple_of(RECONCILE_EVERY_SWEEPS) {
                            let _ = driver.call(Driver::bare(CallType::Reconcile)).await;
                        }
                        for (task, since) in staging.iter_mut() {
                            if now >= *since + LAUNCH_TIMEOUT {
                                *since = now;
                                env.emit(NodeEvent::new("launch_timeout").with("task", task));
                                let mut kill = Driver::bare(CallType::Kill);
                                kill.kill = Some(v1::Kill { task_id: Id::new(task.clone()), agent_id: None });
                                let _ = driver.call(kill).await;
                            }
                        }
                        continue;
                    }
                };
                match event {
                    DriverEvent::Subscribed { framework_id, .. } => {
                        env.emit(NodeEvent::new("subscribed"));
                        env.disk()
                            .write(ID_FILE, framework_id.into_bytes().into())
                            .await?;
                        env.disk().sync(ID_FILE).await?;
                        launch_after = tokio::time::Instant::now() + RECONCILE_WAIT;
                        let _ = driver.call(Driver::bare(CallType::Reconcile)).await;
                    }
                    DriverEvent::Disconnected => env.emit(NodeEvent::new("disconnected")),
                    DriverEvent::Event(event) => match event.kind {
                        EventType::Update => {
                            let Some(status) = event.update.map(|u| u.status) else {
                                continue;
                            };
                            let task = status.task_id.value.clone();
                            if status.state != TaskState::TaskStaging {
                                staging.remove(&task);
                            }
                            env.emit(
                                NodeEvent::new("update")
                                    .with("task", &task)
                                    .with("state", drover_master::core::state_name(status.state))
                                    .with(
                                        "uuid",
                                        status.uuid.as_deref().map_or("-".into(), raw_uuid),
                                    ),
                            );
                            if let Some((slot, g)) = parse_task(&node, &task) {
                                let current = tasks.get(&slot).map(|(t, _)| t.clone());
                                if current.is_none() || current.as_deref() == Some(task.as_str()) {
                                    tasks.insert(slot, (task.clone(), status.state));
                                    let next = generation.entry(slot).or_default();
                                    *next = (*next).max(g + 1);
                                }
                            }
                            let _ = driver.acknowledge(&status).await;
                        }
                        EventType::Offers => {
                            let offers = event.offers.map(|o| o.offers).unwrap_or_default();
                            let ready = tokio::time::Instant::now() >= launch_after;
                            for offer in offers {
                                let mut call =
                                    launch_on(&node, &offer, &mut tasks, &mut generation, ready);
                                if call.accept.as_ref().is_none_or(|a| a.operations.is_empty()) {
                                    call = Driver::bare(CallType::Decline);
                                    call.decline = Some(v1::Decline {
                                        offer_ids: vec![offer.id.clone()],
                                        filters: Some(v1::Filters {
                                            refuse_seconds: Some(5.0),
                                        }),
                                    });
                                }
                                if call
                                    .accept
                                    .as_ref()
                                    .is_some_and(|a| !a.operations.is_empty())
                                {
                                    let slots = Slots {
                                        tasks: tasks.clone(),
                                        generation: generation.clone(),
                                    };
                                    let bytes = serde_json::to_vec(&slots)?;
                                    env.disk().write(SLOTS_FILE, bytes.into()).await?;
                                    env.disk().sync(SLOTS_FILE).await?;
                                }
                                let launched: Vec<String> = call
                                    .accept
                                    .iter()
                                    .flat_map(|a| a.operations.iter())
                                    .filter_map(|op| op.launch.as_ref())
                                    .flat_map(|l| {
                                        l.task_infos.iter().map(|t| t.task_id.value.clone())
                                    })
                                    .collect();
                                let _ = driver.call(call).await;
                                for task in launched {
                                    staging.insert(task, tokio::time::Instant::now());
                                }
                            }
                        }
                        _ => {}
                    },
                }
            }
        })
    })
}

/// Fills free slots from one offer; the call is an ACCEPT (with no operations when nothing fits).
fn launch_on(
    node: &str,
    offer: &v1::Offer,
    tasks: &mut BTreeMap<u32, (String, TaskState)>,
    generation: &mut BTreeMap<u32, u32>,
    ready: bool,
) -> Call {
    let mut cpus = 0.0;
    let mut mem = 0.0;
    for r in &offer.resources {
        match (r.name.as_str(), &r.scalar) {
            ("cpus", Some(s)) => cpus += s.value,
            ("mem", Some(s)) => mem += s.value,
            _ => {}
        }
    }
    let role = offer
        .allocation_info
        .as_ref()
        .map(|a| a.role.clone())
        .unwrap_or_else(|| "*".into());
    let mut infos = Vec::new();
    for slot in 0..SLOTS {
        if !ready || cpus < CPUS || mem < MEM {
            break;
        }
        // A slot needs a task when it has none, or its task ended; an unreachable one is
        // waited for (partition aware).
        // UNKNOWN: the master never heard of the task (its launch was lost); it is not coming.
        let needs = tasks
            .get(&slot)
            .is_none_or(|(_, state)| state.is_terminal() || *state == TaskState::TaskUnknown);
        if !needs {
            continue;
        }
        let g = generation.entry(slot).or_default();
        let task_id = format!("{node}-s{slot}-{g}");
        *g += 1;
        tasks.insert(slot, (task_id.clone(), TaskState::TaskStaging));
        cpus -= CPUS;
        mem -= MEM;
        let resources: drover_core::Resources =
            format!("cpus:{CPUS};mem:{MEM}").parse().unwrap_or_default();
        infos.push(v1::TaskInfo {
            name: task_id.clone(),
            task_id: Id::new(task_id),
            agent_id: offer.agent_id.clone(),
            resources: v1::to_mesos(&resources, Some(&role)),
            command: Some(v1::CommandInfo {
                value: Some(slot_command(slot).into()),
                shell: Some(true),
                ..v1::CommandInfo::default()
            }),
            container: None,
            labels: None,
            health_check: None,
            kill_policy: None,
        });
    }
    let mut call = Driver::bare(CallType::Accept);
    call.accept = Some(v1::Accept {
        offer_ids: vec![offer.id.clone()],
        operations: if infos.is_empty() {
            vec![]
        } else {
            vec![v1::Operation {
                kind: "LAUNCH".into(),
                launch: Some(v1::Launch { task_infos: infos }),
            }]
        },
        filters: Some(v1::Filters {
            refuse_seconds: Some(5.0),
        }),
    });
    call
}

/// The agent's uuid of an update (the v1 API carries it base64-encoded).
fn raw_uuid(encoded: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| encoded.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_name_slot_and_generation() {
        assert_eq!(parse_task("fw-1", "fw-1-s3-12"), Some((3, 12)));
        assert_eq!(parse_task("fw-1", "fw-2-s3-12"), None);
        assert_eq!(parse_task("fw-1", "fw-1-s3"), None);
    }
}
