//! The cluster as the leading master's operator event stream tells it, and the zone of its running
//! tasks. A `SUBSCRIBED` record replaces everything (a new stream, after a failover or a restart
//! of either side, starts with one), except the tasks of agents the new master has not heard from
//! again yet (its `recovered_agents`): those stay named until their agent re-registers (its
//! tasks come back as TASK_ADDED before its AGENT_ADDED) or is removed. `TASK_ADDED`,
//! `TASK_UPDATED`, `AGENT_ADDED`, `AGENT_REMOVED` and `FRAMEWORK_ADDED` change it. While no
//! stream is open the last zone stays: a master failover does not make running tasks vanish from
//! DNS. Agents and masters reached by name are looked up through the Env (the resolver live, the
//! simulated network's hosts simulated).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use drover_core::Env;
use serde_json::Value as Json;
use tokio::sync::watch;

use drover_master::client::OperatorRecord;

use crate::zone::{Task, Zone};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TaskView {
    name: String,
    framework_id: String,
    agent_id: String,
    state: String,
    hostname: Option<String>,
    addresses: Vec<Ipv4Addr>,
    ports: Vec<u16>,
    /// Known from an earlier stream only: its agent has not re-registered with this master yet.
    carried: bool,
}

/// What the stream has said so far.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Agent id → the host its pid names (an address or a name).
    agents: BTreeMap<String, String>,
    /// Framework id → name.
    frameworks: BTreeMap<String, String>,
    /// Task id → the task.
    tasks: BTreeMap<String, TaskView>,
    /// The leading master's host, as the stream was reached.
    leader: Option<String>,
    /// Every master's host (the leader's among them).
    masters: Vec<String>,
    /// Host → its IPv4 address (`None`: it has none, or the lookup failed).
    addresses: BTreeMap<String, Option<Ipv4Addr>>,
    /// Whether a master's state has arrived.
    subscribed: bool,
}

impl View {
    /// Applies one record of the stream; `true` when the zone may have changed.
    pub fn apply(&mut self, record: &Json) -> bool {
        match record["type"].as_str() {
            Some("SUBSCRIBED") => {
                let state = &record["subscribed"]["get_state"];
                let recovered: BTreeSet<&str> = array(&state["get_agents"]["recovered_agents"])
                    .iter()
                    .filter_map(|a| a["id"]["value"].as_str())
                    .collect();
                let old = std::mem::take(self);
                self.leader = old.leader;
                self.masters = old.masters;
                self.addresses = old.addresses;
                self.subscribed = true;
                for (id, mut task) in old.tasks {
                    if recovered.contains(task.agent_id.as_str()) {
                        task.carried = true;
                        if let Some(host) = old.agents.get(&task.agent_id) {
                            self.agents.insert(task.agent_id.clone(), host.clone());
                        }
                        if let Some(name) = old.frameworks.get(&task.framework_id) {
                            self.frameworks
                                .insert(task.framework_id.clone(), name.clone());
                        }
                        self.tasks.insert(id, task);
                    }
                }
                for agent in array(&state["get_agents"]["agents"]) {
                    self.add_agent(agent);
                }
                for framework in array(&state["get_frameworks"]["frameworks"]) {
                    self.add_framework(framework);
                }
                for task in array(&state["get_tasks"]["tasks"]) {
                    self.add_task(task);
                }
                true
            }
            Some("TASK_ADDED") => {
                self.add_task(&record["task_added"]["task"]);
                true
            }
            Some("TASK_UPDATED") => {
                let update = &record["task_updated"];
                let status = &update["status"];
                let Some(id) = status["task_id"]["value"].as_str() else {
                    return false;
                };
                let Some(task) = self.tasks.get_mut(id) else {
                    return false;
                };
                if let Some(state) = update["state"].as_str().or(status["state"].as_str()) {
                    task.state = state.to_string();
                }
                let addresses = addresses(status);
                if !addresses.is_empty() {
                    task.addresses = addresses;
                }
                if is_terminal(&task.state) {
                    self.tasks.remove(id);
                }
                true
            }
            Some("AGENT_ADDED") => {
                let agent = &record["agent_added"]["agent"];
                // Its tasks came just before it; what was carried and did not come is gone.
                if let Some(id) = agent["agent_info"]["id"]["value"].as_str() {
                    self.tasks.retain(|_, t| !(t.carried && t.agent_id == id));
                }
                self.add_agent(agent);
                true
            }
            Some("AGENT_REMOVED") => {
                let Some(id) = record["agent_removed"]["agent_id"]["value"].as_str() else {
                    return false;
                };
                self.tasks.retain(|_, t| !(t.carried && t.agent_id == id));
                true
            }
            Some("FRAMEWORK_ADDED") => {
                self.add_framework(&record["framework_added"]["framework"]);
                true
            }
            _ => false,
        }
    }

    /// The stream is on the master at `leader`, one of `masters` (every master contending):
    /// `leader.mesos` and `master.mesos`.
    pub fn set_masters(&mut self, leader: &str, masters: &[String]) -> bool {
        let changed = self.leader.as_deref() != Some(leader) || self.masters != masters;
        self.leader = Some(leader.to_string());
        self.masters = masters.to_vec();
        changed
    }

    /// The hosts (agents', the masters') whose addresses are not known yet.
    pub fn unresolved(&self) -> Vec<String> {
        let mut hosts: BTreeSet<&String> = self.agents.values().collect();
        hosts.extend(self.leader.iter());
        hosts.extend(self.masters.iter());
        hosts
            .into_iter()
            .filter(|h| !self.addresses.contains_key(*h))
            .cloned()
            .collect()
    }

    /// What a lookup of `host` gave (its first IPv4 address, if any).
    pub fn resolved(&mut self, host: &str, ips: &[IpAddr]) {
        let v4 = ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        self.addresses.insert(host.to_string(), v4);
    }

    fn address(&self, host: &str) -> Option<Ipv4Addr> {
        host.parse()
            .ok()
            .or_else(|| self.addresses.get(host).copied().flatten())
    }

    fn add_agent(&mut self, agent: &Json) {
        let Some(id) = agent["agent_info"]["id"]["value"].as_str() else {
            return;
        };
        // `slave(1)@10.0.0.5:5051`
        let host = agent["pid"]
            .as_str()
            .and_then(|pid| pid.rsplit_once('@'))
            .and_then(|(_, at)| at.rsplit_once(':'))
            .map(|(host, _)| host.to_string());
        match host {
            Some(host) => {
                // A host that came back may have an address now.
                if self.addresses.get(&host) == Some(&None) {
                    self.addresses.remove(&host);
                }
                self.agents.insert(id.to_string(), host);
            }
            None => {
                self.agents.remove(id);
            }
        }
    }
    fn add_framework(&mut self, framework: &Json) {
        let info = &framework["framework_info"];
        if let (Some(id), Some(name)) = (info["id"]["value"].as_str(), info["name"].as_str()) {
            self.frameworks.insert(id.to_string(), name.to_string());
        }
    }

    fn add_task(&mut self, task: &Json) {
        let Some(id) = task["task_id"]["value"].as_str() else {
            return;
        };
        let state = task["state"].as_str().unwrap_or("TASK_STAGING").to_string();
        if is_terminal(&state) {
            self.tasks.remove(id);
            return;
        }
        let hostname = array(&task["container"]["docker"]["parameters"])
            .iter()
            .find(|p| matches!(p["key"].as_str(), Some("hostname" | "h")))
            .and_then(|p| p["value"].as_str())
            .map(str::to_string);
        let addresses = array(&task["statuses"])
            .last()
            .map(addresses)
            .unwrap_or_default();
        let mut ports = Vec::new();
        for resource in array(&task["resources"]) {
            if resource["name"] == "ports" {
                for range in array(&resource["ranges"]["range"]) {
                    let (Some(begin), Some(end)) = (range["begin"].as_u64(), range["end"].as_u64())
                    else {
                        continue;
                    };
                    ports.extend(
                        (begin..=end.min(begin + 64)).filter_map(|p| u16::try_from(p).ok()),
                    );
                }
            }
        }
        self.tasks.insert(
            id.to_string(),
            TaskView {
                name: task["name"].as_str().unwrap_or(id).to_string(),
                framework_id: task["framework_id"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                agent_id: task["agent_id"]["value"].as_str().unwrap_or("").to_string(),
                state,
                hostname,
                addresses,
                ports,
                carried: false,
            },
        );
    }

    /// The zone of the running tasks.
    pub fn zone(&self) -> Zone {
        let tasks: Vec<Task> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.state == "TASK_RUNNING")
            .map(|(id, t)| {
                let framework = self
                    .frameworks
                    .get(&t.framework_id)
                    .cloned()
                    .unwrap_or_default();
                let name = if framework == "marathon" {
                    marathon_name(&t.name, id)
                } else {
                    t.name.clone()
                };
                (id, t, framework, name)
            })
            .map(|(id, t, framework, name)| Task {
                id: id.clone(),
                name,
                framework,
                hostname: t.hostname.clone(),
                addresses: t.addresses.clone(),
                agent: self.agents.get(&t.agent_id).and_then(|h| self.address(h)),
                ports: t.ports.clone(),
            })
            .collect();
        let leader = self.leader.as_deref().and_then(|h| self.address(h));
        let mut masters: Vec<Ipv4Addr> = leader.into_iter().collect();
        for ip in self.masters.iter().filter_map(|h| self.address(h)) {
            if !masters.contains(&ip) {
                masters.push(ip);
            }
        }
        Zone {
            synced: self.subscribed,
            ..Zone::build(&tasks, leader, &masters)
        }
    }
}

/// Marathon's task ids are `APP_PATH.UUID` (`arm-demo_group1_ubuntu1.6aa27ac3-...`): the app's
/// path is the id's part before the last `.`, with `_` for `/` (app ids have no `_`).
fn marathon_name(name: &str, id: &str) -> String {
    match id.rsplit_once('.') {
        Some((path, _)) if !path.is_empty() => format!("/{}", path.replace('_', "/")),
        _ => name.to_string(),
    }
}

fn array(value: &Json) -> &[Json] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn addresses(status: &Json) -> Vec<Ipv4Addr> {
    array(&status["container_status"]["network_infos"])
        .iter()
        .flat_map(|n| array(&n["ip_addresses"]))
        .filter_map(|a| a["ip_address"].as_str()?.parse().ok())
        .collect()
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_LOST"
            | "TASK_ERROR"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
    )
}

/// Follows `records` (the operator stream) into `zone`, publishing each change; ends with the
/// stream.
pub async fn follow(
    mut records: tokio::sync::mpsc::Receiver<OperatorRecord>,
    zone: watch::Sender<Arc<Zone>>,
    env: Env,
) {
    let mut view = View::default();
    while let Some(record) = records.recv().await {
        let mut changed = match &record {
            OperatorRecord::Opened { host, masters, .. } => view.set_masters(host, masters),
            OperatorRecord::Record(record) => view.apply(record),
        };
        for host in view.unresolved() {
            let ips = env.lookup(&host).await.unwrap_or_default();
            view.resolved(&host, &ips);
            changed = true;
        }
        if changed {
            let next = view.zone();
            if **zone.borrow() != next {
                env.emit(
                    drover_core::Event::new("dns_zone")
                        .with("names", next.a.len() + next.srv.len())
                        .with("synced", next.synced),
                );
                let _ = zone.send(Arc::new(next));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, state: &str, ip: Option<&str>) -> Json {
        let statuses = match ip {
            Some(ip) => json!([{"task_id": {"value": id}, "state": state,
                "container_status": {"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]}}]),
            None => json!([]),
        };
        json!({
            "name": "arm-demo.group1.ubuntu1", "task_id": {"value": id},
            "framework_id": {"value": "F1"}, "agent_id": {"value": "S1"}, "state": state,
            "resources": [{"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31000}]}}],
            "statuses": statuses,
            "container": {"type": "DOCKER", "docker": {"image": "ubuntu:16.04", "network": "BRIDGE",
                "parameters": [{"key": "hostname", "value": "ubuntu1.weave.local"}]}},
        })
    }

    fn subscribed(tasks: Vec<Json>) -> Json {
        json!({"type": "SUBSCRIBED", "subscribed": {"get_state": {
            "get_agents": {"agents": [{"agent_info": {"id": {"value": "S1"}, "hostname": "od1000-0"},
                "pid": "slave(1)@192.168.1.10:5051"}]},
            "get_frameworks": {"frameworks": [{"framework_info": {"id": {"value": "F1"}, "name": "marathon"}}]},
            "get_tasks": {"tasks": tasks},
        }}})
    }

    fn updated(id: &str, state: &str, ip: Option<&str>) -> Json {
        let mut status = json!({"task_id": {"value": id}, "state": state});
        if let Some(ip) = ip {
            status["container_status"] =
                json!({"network_infos": [{"ip_addresses": [{"ip_address": ip}]}]});
        }
        json!({"type": "TASK_UPDATED", "task_updated": {"framework_id": {"value": "F1"},
            "status": status, "state": state}})
    }

    #[test]
    fn running_tasks_are_named_and_ended_ones_go() {
        let a = "arm-demo_group1_ubuntu1.aaaa";
        let b = "arm-demo_group1_ubuntu1.bbbb";
        let mut view = View::default();
        assert!(view.apply(&subscribed(vec![task(
            a,
            "TASK_RUNNING",
            Some("10.32.0.2")
        )])));
        assert_eq!(
            view.zone().a["ubuntu1"],
            vec!["10.32.0.2".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            view.zone().a["ubuntu1-group1-arm-demo.marathon.mesos"].len(),
            1
        );
        // SRV on the agent's address.
        let zone = view.zone();
        let srv = &zone.srv["_ubuntu1-group1-arm-demo._tcp.marathon.mesos"];
        assert_eq!(srv[0].port, 31000);
        assert_eq!(
            zone.a[&srv[0].target],
            vec!["192.168.1.10".parse::<Ipv4Addr>().unwrap()]
        );
        // A new one: staging is not yet a name; running with its address is.
        view.apply(
            &json!({"type": "TASK_ADDED", "task_added": {"task": task(b, "TASK_STAGING", None)}}),
        );
        assert_eq!(view.zone().a["ubuntu1"].len(), 1);
        view.apply(&updated(b, "TASK_RUNNING", Some("10.32.0.3")));
        assert_eq!(view.zone().a["ubuntu1"].len(), 2);
        // The first ends: gone from the names at once.
        view.apply(&updated(a, "TASK_KILLED", None));
        assert_eq!(
            view.zone().a["ubuntu1"],
            vec!["10.32.0.3".parse::<Ipv4Addr>().unwrap()]
        );
        // The master it follows is leader.mesos.
        let masters = vec!["192.168.1.5".to_string(), "192.168.1.6".to_string()];
        assert!(view.set_masters("192.168.1.5", &masters));
        assert_eq!(
            view.zone().a["leader.mesos"],
            vec!["192.168.1.5".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            view.zone().a["master.mesos"],
            vec![
                "192.168.1.5".parse::<Ipv4Addr>().unwrap(),
                "192.168.1.6".parse().unwrap()
            ]
        );
        assert!(!view.set_masters("192.168.1.5", &masters));
        // A new stream's state replaces everything but the leader.
        view.apply(&subscribed(vec![]));
        assert_eq!(view.zone().a.len(), 2, "{:?}", view.zone());
        // Noise changes nothing.
        assert!(!view.apply(&json!({"type": "HEARTBEAT"})));
        assert!(!view.apply(&json!("garbage")));
        assert!(!view.apply(&updated("nobody", "TASK_RUNNING", None)));
    }

    #[test]
    fn a_new_master_keeps_the_tasks_of_agents_not_back_yet() {
        let a = "arm-demo_group1_ubuntu1.aaaa";
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut view = View::default();
        view.apply(&subscribed(vec![task(
            a,
            "TASK_RUNNING",
            Some("10.32.0.2"),
        )]));
        // A failover: the new master knows S1 from its registry only.
        let mut failover = subscribed(vec![]);
        failover["subscribed"]["get_state"]["get_agents"] = json!({"agents": [], "recovered_agents": [{"id": {"value": "S1"}, "hostname": "od1000-0"}]});
        view.apply(&failover);
        assert_eq!(view.zone().a["ubuntu1"], vec![ip("10.32.0.2")]);
        let agent = json!({"type": "AGENT_ADDED", "agent_added": {"agent": {
            "agent_info": {"id": {"value": "S1"}}, "pid": "slave(1)@192.168.1.10:5051"}}});
        // S1 re-registers with the task: still named, and no longer carried.
        view.apply(&json!({"type": "TASK_ADDED", "task_added": {"task": task(a, "TASK_RUNNING", Some("10.32.0.2"))}}));
        view.apply(&agent);
        assert_eq!(view.zone().a["ubuntu1"], vec![ip("10.32.0.2")]);
        view.apply(&failover);
        assert!(view.zone().a.contains_key("ubuntu1"));
        // S1 re-registers without it: the task ended while nobody watched.
        view.apply(&agent);
        assert!(!view.zone().a.contains_key("ubuntu1"), "{:?}", view.zone());
        // An agent that never comes back is removed, and its carried tasks with it.
        view.apply(&subscribed(vec![task(
            a,
            "TASK_RUNNING",
            Some("10.32.0.2"),
        )]));
        view.apply(&failover);
        assert!(view.zone().a.contains_key("ubuntu1"));
        view.apply(
            &json!({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": "S1"}}}),
        );
        assert!(!view.zone().a.contains_key("ubuntu1"));
    }

    #[test]
    fn hosts_named_by_name_are_looked_up() {
        let mut state = subscribed(vec![task("web.1234abcd", "TASK_RUNNING", None)]);
        state["subscribed"]["get_state"]["get_agents"]["agents"][0]["pid"] =
            json!("slave(1)@od1000-0:5051");
        let mut view = View::default();
        view.apply(&state);
        view.set_masters("master-1", &["master-1".to_string()]);
        assert_eq!(view.unresolved(), vec!["master-1", "od1000-0"]);
        let zone = view.zone();
        assert!(!zone.knows("leader.mesos"));
        assert!(zone.srv.is_empty(), "no agent address, no SRV: {zone:?}");
        view.resolved("od1000-0", &["192.168.0.4".parse().unwrap()]);
        view.resolved("master-1", &["::1".parse().unwrap()]);
        assert!(view.unresolved().is_empty());
        let zone = view.zone();
        assert_eq!(
            zone.a["web.marathon.mesos"],
            vec!["192.168.0.4".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(
            !zone.knows("leader.mesos"),
            "no IPv4 address for the master"
        );
    }

    #[test]
    fn marathon_task_ids_give_the_app_path() {
        assert_eq!(
            marathon_name("x", "arm-demo_group1_ubuntu1.6aa27ac3-8546"),
            "/arm-demo/group1/ubuntu1"
        );
        assert_eq!(marathon_name("web", "plain"), "web");
    }
}
