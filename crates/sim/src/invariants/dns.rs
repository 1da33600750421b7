//! The DNS invariants: what resolvers heard (`dns_answer` events of `resolver` nodes) judged
//! against the tasks the trace says run.
//!
//! A task is reached at its container's address under its container's host name: the agent's
//! `task_state state=TASK_RUNNING ip=I hostname=H` event (`H.weave.local` answers as `H` too).
//! Whether it runs is what the leading master knows (its `task_update task=T state=S` events):
//! a DNS that follows the master can know no more, so a task whose end no master has heard of
//! is still running as far as DNS is concerned. Nor can a DNS know anything while it is cut off
//! from the masters, held, paused or down: answers it gives then and for [`GRACE_MS`] after are
//! not judged. A DNS keeps what it learned through a master failover, but one that first synced
//! with the current leading master (it restarted since, or while no master led) learns from that
//! master alone, which knows an agent's tasks only once the agent has re-registered with it: until
//! then those tasks are not asked of that DNS.

use std::collections::BTreeMap;

use super::{ClusterView, Invariant};
use crate::trace::{TraceLine, HARNESS};

/// How soon after the master learns that a task runs or ended every answer must say so.
pub const LAG_MS: u64 = 5_000;
/// How long after it could not hear the masters a DNS has to catch up (a stream found silent,
/// opened again after a backoff of up to 5 s).
pub const GRACE_MS: u64 = 15_000;

/// What the trace says of the tasks with addresses, of the masters' knowledge and of when each
/// DNS could not hear.
#[derive(Default)]
struct Truth {
    /// Task → its address and host name.
    reached: BTreeMap<String, (String, Option<String>)>,
    /// Address → the latest task that had it.
    by_ip: BTreeMap<String, String>,
    /// Task → whether it runs as the master knows it, and since when.
    master: BTreeMap<String, (bool, u64)>,
    /// DNS node → until when it is not judged.
    blind_until: BTreeMap<String, u64>,
    /// Until when no DNS is judged (a hold or a paused master).
    all_blind_until: u64,
    holding: bool,
    /// When the current leading master was elected (the latest `leader` event of a master), the
    /// first such time, and the master that leads now (none after it is deposed or stopped).
    elected_ms: u64,
    first_elected_ms: Option<u64>,
    leader: Option<String>,
    /// DNS node → when the leadership its current incarnation first synced with began (`None`:
    /// restarted while no master led, and none has since). A DNS not here has run since the start.
    synced_with: BTreeMap<String, Option<u64>>,
    /// Task → the agent node it runs on.
    agent_of: BTreeMap<String, String>,
    /// Agent host name → when it last (re-)registered with a master.
    registered: BTreeMap<String, u64>,
}

/// One answer a resolver heard.
struct Heard<'a> {
    name: &'a str,
    server: &'a str,
    rcode: &'a str,
    ips: Vec<&'a str>,
    /// When the query left.
    asked_ms: u64,
}

impl Truth {
    fn observe(&mut self, line: &TraceLine, view: &ClusterView) {
        let at = line.at_ms;
        let event = &line.event;
        let role = view.map.role_of(&line.node);
        if line.node == HARNESS {
            match event.name.as_str() {
                "hold" => self.holding = true,
                "release" => {
                    self.holding = false;
                    self.all_blind_until = self.all_blind_until.max(at + GRACE_MS);
                }
                "restart" => {
                    let node = event.field("node").unwrap_or("");
                    if view.map.role_of(node) == Some("dns") {
                        let leadership = self.leader.is_some().then_some(self.elected_ms);
                        self.synced_with.insert(node.to_string(), leadership);
                    }
                }
                "crash" | "stop" if self.leader.as_deref() == event.field("node") => {
                    self.leader = None;
                }
                "pause" => {
                    let node = event.field("node").unwrap_or("");
                    let for_ms = event
                        .field("for_ms")
                        .and_then(|f| f.parse::<u64>().ok())
                        .unwrap_or(0);
                    let until = at + for_ms + GRACE_MS;
                    match view.map.role_of(node) {
                        Some("dns") => {
                            let blind = self.blind_until.entry(node.to_string()).or_default();
                            *blind = (*blind).max(until);
                        }
                        Some("master") => self.all_blind_until = self.all_blind_until.max(until),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if self.holding {
            self.all_blind_until = self.all_blind_until.max(at + GRACE_MS);
        }
        let masters = view.map.of_role("master");
        for server in view.map.of_role("dns") {
            let cut = masters.iter().any(|m| {
                view.cuts.contains_key(&(m.to_string(), server.to_string()))
                    || view.cuts.contains_key(&(server.to_string(), m.to_string()))
            });
            if cut || view.down.contains(server) {
                let blind = self.blind_until.entry(server.to_string()).or_default();
                *blind = (*blind).max(at + GRACE_MS);
            }
        }
        match (role, event.name.as_str()) {
            (Some("agent"), "task_state") => {
                let (Some(task), Some(ip)) = (event.field("task"), event.field("ip")) else {
                    return;
                };
                if event.field("state") != Some("TASK_RUNNING") {
                    return;
                }
                let hostname = event.field("hostname").map(str::to_string);
                for ip in ip.split(',') {
                    self.by_ip.insert(ip.to_string(), task.to_string());
                }
                let first = ip.split(',').next().unwrap_or(ip).to_string();
                self.reached.insert(task.to_string(), (first, hostname));
                self.agent_of.insert(task.to_string(), line.node.clone());
            }
            (Some("master"), "leader") => {
                self.elected_ms = at;
                self.first_elected_ms.get_or_insert(at);
                self.leader = Some(line.node.clone());
                for synced in self.synced_with.values_mut() {
                    synced.get_or_insert(at);
                }
            }
            (Some("master"), "deposed") if self.leader.as_deref() == Some(line.node.as_str()) => {
                self.leader = None;
            }
            (Some("master"), "agent_registered") => {
                if let Some(agent) = event.field("agent") {
                    self.registered.insert(agent.to_string(), at);
                }
            }
            (Some("master"), "task_update") => {
                let (Some(task), Some(state)) = (event.field("task"), event.field("state")) else {
                    return;
                };
                let running = state == "TASK_RUNNING";
                match self.master.get(task) {
                    Some((was, _)) if *was == running => {}
                    _ => {
                        self.master.insert(task.to_string(), (running, at));
                    }
                }
            }
            _ => {}
        }
    }

    /// Since when `server` could know that `task` runs, which the master has known `since`: a DNS
    /// that first synced with the current leadership learns a task from before it only when its
    /// agent has re-registered with that master (`None` until then).
    fn knowable_since(&self, server: &str, task: &str, since: u64) -> Option<u64> {
        let synced = match self.synced_with.get(server) {
            Some(synced) => (*synced)?,
            None => self.first_elected_ms?,
        };
        if synced < self.elected_ms || since >= self.elected_ms {
            return Some(since);
        }
        let agent = self.agent_of.get(task)?;
        let registered = self.registered.get(agent).copied()?;
        (registered >= self.elected_ms).then_some(since.max(registered))
    }

    /// The answer `line` reports, when it is one a resolver heard and the DNS could know.
    fn heard<'a>(&self, line: &'a TraceLine, view: &ClusterView) -> Option<Heard<'a>> {
        if line.event.name != "dns_answer" || view.map.role_of(&line.node) != Some("resolver") {
            return None;
        }
        let event = &line.event;
        let rtt = event.field("rtt_ms")?.parse::<u64>().ok()?;
        let heard = Heard {
            name: event.field("name")?,
            server: event.field("server")?,
            rcode: event.field("rcode")?,
            ips: match event.field("ips")? {
                "-" => Vec::new(),
                ips => ips.split(',').collect(),
            },
            asked_ms: line.at_ms.saturating_sub(rtt),
        };
        let blind = self
            .blind_until
            .get(heard.server)
            .copied()
            .unwrap_or(0)
            .max(self.all_blind_until);
        (heard.asked_ms > blind && line.at_ms > blind).then_some(heard)
    }
}

/// Whether a container with host name `hostname` answers to `name` (Weave's rule: the full
/// name, and the bare one for `NAME.weave.local`).
fn answers_to(hostname: &str, name: &str) -> bool {
    let hostname = hostname.trim_end_matches('.').to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    hostname == name || hostname.strip_suffix(".weave.local") == Some(name.as_str())
}

/// `dns_fresh`: no answer names an address no task has, an address of a task under another
/// name, or a task the master saw end more than [`LAG_MS`] before the query.
#[derive(Default)]
pub struct Fresh {
    truth: Truth,
}

impl Invariant for Fresh {
    fn name(&self) -> &str {
        "dns_fresh"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        self.truth.observe(line, view);
        let Some(heard) = self.truth.heard(line, view) else {
            return Ok(());
        };
        for ip in &heard.ips {
            let said = || {
                format!(
                    "{} heard {} -> {ip} from {} (asked at {} ms)",
                    line.node, heard.name, heard.server, heard.asked_ms
                )
            };
            let Some(task) = self.truth.by_ip.get(*ip) else {
                return Err(format!("{}, an address no task has had", said()));
            };
            let hostname = self.truth.reached.get(task).and_then(|(_, h)| h.as_deref());
            if !hostname.is_some_and(|h| answers_to(h, heard.name)) {
                return Err(format!(
                    "{}, the address of task {task}, whose host name is {}",
                    said(),
                    hostname.unwrap_or("not set")
                ));
            }
            if let Some((false, since)) = self.truth.master.get(task) {
                if heard.asked_ms > since + LAG_MS {
                    return Err(format!(
                        "{}: task {task} had ended {} ms before, as the master knew at {since} ms",
                        said(),
                        heard.asked_ms - since
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `dns_complete`: every answer (NOERROR or NXDOMAIN) to a name has the address of every task
/// of that name the master has known to run for more than [`LAG_MS`].
#[derive(Default)]
pub struct Complete {
    truth: Truth,
}

impl Invariant for Complete {
    fn name(&self) -> &str {
        "dns_complete"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        self.truth.observe(line, view);
        let Some(heard) = self.truth.heard(line, view) else {
            return Ok(());
        };
        if !matches!(heard.rcode, "NOERROR" | "NXDOMAIN") {
            return Ok(());
        }
        for (task, (ip, hostname)) in &self.truth.reached {
            let named = hostname
                .as_deref()
                .is_some_and(|h| answers_to(h, heard.name));
            let current = self.truth.by_ip.get(ip) == Some(task);
            let Some((true, since)) = self.truth.master.get(task) else {
                continue;
            };
            let Some(since) = self.truth.knowable_since(heard.server, task, *since) else {
                continue;
            };
            if named
                && current
                && heard.asked_ms > since + LAG_MS
                && !heard.ips.contains(&ip.as_str())
            {
                return Err(format!(
                    "{} heard {} {} -> {} from {} (asked at {} ms) without task {task} at {ip}, \
                     running as the master knew since {since} ms",
                    line.node,
                    heard.name,
                    heard.rcode,
                    if heard.ips.is_empty() {
                        "-".to_string()
                    } else {
                        heard.ips.join(",")
                    },
                    heard.server,
                    heard.asked_ms
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        crate::invariants::test_view(&[
            ("master-1", "master"),
            ("od1000-0", "agent"),
            ("dns-1", "dns"),
            ("resolver-1", "resolver"),
        ])
    }

    /// Feeds `<ms> <node> <event>` lines; the first violation, if any.
    fn judge(
        invariant: &mut dyn Invariant,
        view: &ClusterView,
        lines: &[&str],
    ) -> Result<(), String> {
        for text in lines {
            let mut parts = text.splitn(3, ' ');
            let line = TraceLine {
                at_ms: parts.next().unwrap().parse().unwrap(),
                node: parts.next().unwrap().to_string(),
                event: drover_core::Event::parse(parts.next().unwrap()).unwrap(),
            };
            invariant.observe(&line, view)?;
        }
        Ok(())
    }

    const RUNS: &[&str] = &[
        "500 master-1 leader term=0",
        "1000 od1000-0 task_state task=t1 state=TASK_RUNNING uuid=u1 ip=10.0.7.2 hostname=ubuntu1.weave.local",
        "1005 master-1 task_update task=t1 state=TASK_RUNNING",
        "2000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu1 server=dns-1",
        "3000 resolver-1 dns_answer rcode=NOERROR ips=10.0.7.2 rtt_ms=5 name=ubuntu1.weave.local server=dns-1",
    ];

    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        RUNS.iter().chain(extra).copied().collect()
    }

    #[test]
    fn a_running_task_must_be_answered_once_the_master_has_known_it_a_while() {
        let view = view();
        assert_eq!(judge(&mut Complete::default(), &view, RUNS), Ok(()));
        let late = with(&[
            "7000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu1 server=dns-1",
        ]);
        let error = judge(&mut Complete::default(), &view, &late).unwrap_err();
        assert!(error.contains("without task t1 at 10.0.7.2"), "{error}");
        // SERVFAIL (not synced yet) and other names say nothing about it.
        let unsure = with(&[
            "7000 resolver-1 dns_answer rcode=SERVFAIL ips=- rtt_ms=5 name=ubuntu1 server=dns-1",
            "7000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu2 server=dns-1",
        ]);
        assert_eq!(judge(&mut Complete::default(), &view, &unsure), Ok(()));
        // A DNS paused (or cut off from the masters) could not know.
        let paused = with(&[
            "6000 sim pause node=dns-1 for_ms=1000",
            "7000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu1 server=dns-1",
            "23000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu1 server=dns-1",
        ]);
        let error = judge(&mut Complete::default(), &view, &paused).unwrap_err();
        assert!(error.contains("asked at 22995 ms"), "{error}");
    }

    #[test]
    fn a_dns_started_after_the_masters_election_owes_only_what_agents_told_that_master() {
        let view = view();
        const ELECTED: &str = "10000 master-1 leader term=1";
        const RESTART: &str = "11000 sim restart node=dns-1";
        const AT_20: &str =
            "20000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu1 server=dns-1";
        const AT_30: &str =
            "30000 resolver-1 dns_answer rcode=NXDOMAIN ips=- rtt_ms=5 name=ubuntu1 server=dns-1";
        // A DNS that ran through the failover keeps the task.
        assert!(judge(&mut Complete::default(), &view, &with(&[ELECTED, AT_20])).is_err());
        // One restarted after the election cannot know it until the agent re-registers ...
        let restarted = with(&[ELECTED, RESTART, AT_20]);
        assert_eq!(judge(&mut Complete::default(), &view, &restarted), Ok(()));
        // ... and must know it a while after.
        let back = with(&[
            ELECTED,
            RESTART,
            "21000 master-1 agent_registered agent=od1000-0 tasks=1",
            AT_30,
        ]);
        let error = judge(&mut Complete::default(), &view, &back).unwrap_err();
        assert!(error.contains("without task t1"), "{error}");
        // Restarted while no master led (the old one deposed, the new one not yet elected): the
        // same.
        let leaderless = with(&[
            "8000 master-1 deposed",
            "9000 sim restart node=dns-1",
            ELECTED,
            AT_20,
        ]);
        assert_eq!(judge(&mut Complete::default(), &view, &leaderless), Ok(()));
    }

    #[test]
    fn an_ended_task_must_leave_the_answers() {
        let view = view();
        let ended = with(&[
            "8000 master-1 task_update task=t1 state=TASK_KILLED",
            "12000 resolver-1 dns_answer rcode=NOERROR ips=10.0.7.2 rtt_ms=5 name=ubuntu1 server=dns-1",
        ]);
        assert_eq!(judge(&mut Fresh::default(), &view, &ended), Ok(()));
        let stale = with(&[
            "8000 master-1 task_update task=t1 state=TASK_KILLED",
            "14000 resolver-1 dns_answer rcode=NOERROR ips=10.0.7.2 rtt_ms=5 name=ubuntu1 server=dns-1",
        ]);
        let error = judge(&mut Fresh::default(), &view, &stale).unwrap_err();
        assert!(
            error.contains("task t1 had ended 5995 ms before"),
            "{error}"
        );
        // Back (an agent that re-registered): named again.
        let back = with(&[
            "8000 master-1 task_update task=t1 state=TASK_UNREACHABLE",
            "9000 master-1 task_update task=t1 state=TASK_RUNNING",
            "14000 resolver-1 dns_answer rcode=NOERROR ips=10.0.7.2 rtt_ms=5 name=ubuntu1 server=dns-1",
        ]);
        assert_eq!(judge(&mut Fresh::default(), &view, &back), Ok(()));
    }

    #[test]
    fn an_answer_names_only_addresses_of_tasks_of_that_name() {
        let view = view();
        let unknown = with(&["4000 resolver-1 dns_answer rcode=NOERROR ips=10.9.9.9 rtt_ms=5 name=ubuntu1 server=dns-1"]);
        let error = judge(&mut Fresh::default(), &view, &unknown).unwrap_err();
        assert!(error.contains("an address no task has had"), "{error}");
        let other = with(&["4000 resolver-1 dns_answer rcode=NOERROR ips=10.0.7.2 rtt_ms=5 name=ubuntu2 server=dns-1"]);
        let error = judge(&mut Fresh::default(), &view, &other).unwrap_err();
        assert!(
            error.contains("whose host name is ubuntu1.weave.local"),
            "{error}"
        );
    }

    #[test]
    fn weave_names_answer_bare_and_full() {
        assert!(answers_to("ubuntu1.weave.local", "ubuntu1"));
        assert!(answers_to("ubuntu1.weave.local", "UBUNTU1.weave.local."));
        assert!(!answers_to("ubuntu1.weave.local", "ubuntu2"));
        assert!(answers_to("web", "web"));
        assert!(!answers_to("web.example.com", "web"));
    }
}
