//! The names drover's DNS serves, built from what runs: WeaveDNS' names (a container that set its
//! host name to `NAME.weave.local` is `NAME.weave.local`, and `NAME`) and Mesos-DNS' names
//! (`APP-GROUPS.FRAMEWORK.mesos`, `_APP-GROUPS._tcp.FRAMEWORK.mesos` SRV, `leader.mesos`,
//! `master.mesos`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Weave's domain.
pub const WEAVE_DOMAIN: &str = "weave.local";
/// Mesos-DNS' domain.
pub const MESOS_DOMAIN: &str = "mesos";

/// A running task, as DNS sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    /// Its name: for Marathon's tasks the app id (`/arm-demo/group1/ubuntu1`).
    pub name: String,
    /// The framework's name (`marathon`).
    pub framework: String,
    /// The host name its container set (`ubuntu1.weave.local`), if any.
    pub hostname: Option<String>,
    /// Its container's addresses (none for a process task).
    pub addresses: Vec<Ipv4Addr>,
    /// The agent's address.
    pub agent: Option<Ipv4Addr>,
    /// Its host ports.
    pub ports: Vec<u16>,
}

/// A service record's target and port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Service {
    pub target: String,
    pub port: u16,
}

/// Every name with its records. Names are lower case, without the final dot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    pub a: BTreeMap<String, Vec<Ipv4Addr>>,
    pub srv: BTreeMap<String, Vec<Service>>,
    /// Whether it comes from a master's state: until then (a DNS just started) there is nothing
    /// to say, not a list of names that do not exist.
    pub synced: bool,
}

/// `/arm-demo/group1/ubuntu1` → `ubuntu1-group1-arm-demo`: Mesos-DNS' name for a Marathon app
/// (its path, innermost first), kept to what a DNS label may hold.
pub fn mesos_name(name: &str) -> String {
    let parts: Vec<String> = name
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(label)
        .filter(|p| !p.is_empty())
        .collect();
    let joined = parts.join("-");
    let mut joined: String = joined.chars().take(63).collect();
    while joined.ends_with('-') {
        joined.pop();
    }
    joined
}

/// A DNS label from text: lower case letters, digits and `-`; anything else becomes `-`.
fn label(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_string()
}

impl Zone {
    /// The names of `tasks`, of the leading master (`leader`) and of every master.
    pub fn build(tasks: &[Task], leader: Option<Ipv4Addr>, masters: &[Ipv4Addr]) -> Zone {
        let mut zone = Zone {
            synced: true,
            ..Zone::default()
        };
        if let Some(leader) = leader {
            zone.add_a(&format!("leader.{MESOS_DOMAIN}"), leader);
        }
        for master in masters {
            zone.add_a(&format!("master.{MESOS_DOMAIN}"), *master);
        }
        for task in tasks {
            // The task's own addresses where it has them, else its agent's (Mesos-DNS' order
            // of IP sources: the container's network, then the host).
            let own: Vec<Ipv4Addr> = if task.addresses.is_empty() {
                task.agent.into_iter().collect()
            } else {
                task.addresses.clone()
            };
            if let Some(hostname) = &task.hostname {
                let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
                if let Some(bare) = hostname.strip_suffix(&format!(".{WEAVE_DOMAIN}")) {
                    for ip in &task.addresses {
                        zone.add_a(&hostname, *ip);
                        zone.add_a(bare, *ip);
                    }
                }
            }
            let name = mesos_name(&task.name);
            let framework = label(&task.framework);
            if name.is_empty() || framework.is_empty() {
                continue;
            }
            let service = format!("{name}.{framework}.{MESOS_DOMAIN}");
            for ip in &own {
                zone.add_a(&service, *ip);
            }
            // SRV: the task's host ports, on a name of the task's own that is its agent.
            if let (Some(agent), false) = (task.agent, task.ports.is_empty()) {
                let unique = label(task.id.rsplit('.').next().unwrap_or(&task.id));
                let unique: String = unique.chars().take(8).collect();
                let target = format!("{name}-{unique}.{framework}.slave.{MESOS_DOMAIN}");
                zone.add_a(&target, agent);
                for port in &task.ports {
                    let srv = format!("_{name}._tcp.{framework}.{MESOS_DOMAIN}");
                    let entry = zone.srv.entry(srv).or_default();
                    let record = Service {
                        target: target.clone(),
                        port: *port,
                    };
                    if !entry.contains(&record) {
                        entry.push(record);
                    }
                }
            }
        }
        zone
    }

    fn add_a(&mut self, name: &str, ip: Ipv4Addr) {
        let entry = self.a.entry(name.to_string()).or_default();
        if !entry.contains(&ip) {
            entry.push(ip);
        }
    }

    /// Whether drover answers for `name` (its domains, and bare names, which Weave answers).
    pub fn is_ours(name: &str) -> bool {
        name == MESOS_DOMAIN
            || name.ends_with(&format!(".{MESOS_DOMAIN}"))
            || name == WEAVE_DOMAIN
            || name.ends_with(&format!(".{WEAVE_DOMAIN}"))
            || !name.contains('.')
    }

    /// Whether `name` has any record.
    pub fn knows(&self, name: &str) -> bool {
        self.a.contains_key(name) || self.srv.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn seed_tasks() -> Vec<Task> {
        let task = |id: &str, app: &str, host: &str, address: &str, agent: &str| Task {
            id: id.into(),
            name: app.into(),
            framework: "marathon".into(),
            hostname: Some(host.into()),
            addresses: vec![ip(address)],
            agent: Some(ip(agent)),
            ports: vec![],
        };
        vec![
            task(
                "arm-demo_group1_ubuntu1.6aa27ac3-8546",
                "/arm-demo/group1/ubuntu1",
                "ubuntu1.weave.local",
                "10.32.0.2",
                "192.168.1.10",
            ),
            task(
                "arm-demo_group1_ubuntu1.9f1c2d3e-1111",
                "/arm-demo/group1/ubuntu1",
                "ubuntu1.weave.local",
                "10.32.0.3",
                "192.168.1.11",
            ),
            task(
                "arm-demo_group2_ubuntu2.0a0b0c0d-2222",
                "/arm-demo/group2/ubuntu2",
                "ubuntu2.weave.local",
                "10.32.0.4",
                "192.168.1.10",
            ),
        ]
    }

    #[test]
    fn the_seed_apps_get_weave_and_mesos_dns_names() {
        let zone = Zone::build(&seed_tasks(), Some(ip("192.168.1.5")), &[ip("192.168.1.5")]);
        let both = vec![ip("10.32.0.2"), ip("10.32.0.3")];
        assert_eq!(zone.a["ubuntu1.weave.local"], both);
        assert_eq!(zone.a["ubuntu1"], both);
        assert_eq!(zone.a["ubuntu1-group1-arm-demo.marathon.mesos"], both);
        assert_eq!(zone.a["ubuntu2"], vec![ip("10.32.0.4")]);
        assert_eq!(zone.a["leader.mesos"], vec![ip("192.168.1.5")]);
        assert_eq!(zone.a["master.mesos"], vec![ip("192.168.1.5")]);
        // No ports, no SRV.
        assert!(zone.srv.is_empty());
    }

    #[test]
    fn tasks_with_ports_get_srv_records_on_their_agents() {
        let tasks = vec![Task {
            id: "web.1234abcd-5678".into(),
            name: "/prod/Web_Server".into(),
            framework: "marathon".into(),
            hostname: None,
            addresses: vec![],
            agent: Some(ip("192.168.1.10")),
            ports: vec![31005, 31006],
        }];
        let zone = Zone::build(&tasks, None, &[]);
        // A process task: its agent's address.
        assert_eq!(
            zone.a["web-server-prod.marathon.mesos"],
            vec![ip("192.168.1.10")]
        );
        let srv = &zone.srv["_web-server-prod._tcp.marathon.mesos"];
        let target = "web-server-prod-1234abcd.marathon.slave.mesos";
        assert_eq!(
            srv,
            &vec![
                Service {
                    target: target.into(),
                    port: 31005
                },
                Service {
                    target: target.into(),
                    port: 31006
                }
            ]
        );
        assert_eq!(zone.a[target], vec![ip("192.168.1.10")]);
        assert!(!zone.knows("leader.mesos"));
    }

    #[test]
    fn names_are_labels() {
        assert_eq!(
            mesos_name("/arm-demo/group1/ubuntu1"),
            "ubuntu1-group1-arm-demo"
        );
        assert_eq!(mesos_name("//a//B.c_d/"), "b-c-d-a");
        assert_eq!(mesos_name("/"), "");
        assert_eq!(mesos_name(&format!("/{}", "x".repeat(80))).len(), 63);
        assert!(Zone::is_ours("ubuntu1"));
        assert!(Zone::is_ours("x.marathon.mesos"));
        assert!(Zone::is_ours("ubuntu1.weave.local"));
        assert!(!Zone::is_ours("example.com"));
    }
}
