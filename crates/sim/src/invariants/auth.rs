//! `no_unauthenticated_change`: in a cluster that authenticates, a node that proved nothing
//! (an `intruder`) changes nothing.

use super::*;

/// The term an intruder's forged raft messages carry: no election of a run comes near it, so a
/// coord server that ever reports it followed a message no peer sent.
pub const FORGED_TERM: u64 = 1 << 40;

/// Fails on any of:
/// - an intruder's own report that an attempt succeeded (`intrusion outcome=succeeded`);
/// - a master admitting an agent that is not one of the cluster's agents (`agent_registered
///   agent=H`), or a framework named after an intruder (`framework_subscribed name=N`);
/// - a coord server at a term of [`FORGED_TERM`] or more (any event with a `term`).
#[derive(Default)]
pub(super) struct NoUnauthenticatedChange;

impl Invariant for NoUnauthenticatedChange {
    fn name(&self) -> &str {
        "no_unauthenticated_change"
    }

    fn observe(&mut self, line: &TraceLine, view: &ClusterView) -> Result<(), String> {
        let event = &line.event;
        let intruders = view.map.of_role("intruder");
        match view.map.role_of(&line.node) {
            Some("intruder")
                if event.name == "intrusion" && event.field("outcome") == Some("succeeded") =>
            {
                return Err(format!(
                    "{} got in: {} on {} succeeded",
                    line.node,
                    event.field("via").unwrap_or("?"),
                    event.field("target").unwrap_or("?"),
                ));
            }
            Some("master") if event.name == "agent_registered" => {
                let agent = event.field("agent").unwrap_or("");
                if view.map.role_of(agent) != Some("agent") {
                    return Err(format!(
                        "{} admitted an agent that is none of the cluster's: {agent:?}",
                        line.node
                    ));
                }
            }
            Some("master") if event.name == "framework_subscribed" => {
                let name = event.field("name").unwrap_or("");
                if let Some(intruder) = intruders.iter().find(|i| name.starts_with(**i)) {
                    return Err(format!(
                        "{} subscribed {intruder}'s framework {name:?}",
                        line.node
                    ));
                }
            }
            Some("coord") => {
                let term = event.field("term").and_then(|t| t.parse::<u64>().ok());
                if term.is_some_and(|t| t >= FORGED_TERM) {
                    return Err(format!(
                        "{} is at the forged term {FORGED_TERM} ({} event): it followed a raft message from a peer that proved nothing",
                        line.node, event.name
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ClusterView {
        crate::invariants::test_view(&[
            ("coord-1", "coord"),
            ("master-1", "master"),
            ("agent-1", "agent"),
            ("fw", "framework"),
            ("intruder", "intruder"),
        ])
    }

    fn judge(line: &str) -> Result<(), String> {
        let mut parts = line.splitn(3, ' ');
        let line = TraceLine {
            at_ms: parts.next().unwrap().parse().unwrap(),
            node: parts.next().unwrap().to_string(),
            event: drover_core::Event::parse(parts.next().unwrap()).unwrap(),
        };
        NoUnauthenticatedChange.observe(&line, &view())
    }

    #[test]
    fn what_the_cluster_does_for_its_own_nodes_passes() {
        for line in [
            "10 coord-1 leader term=3",
            "20 master-1 agent_registered agent=agent-1 tasks=0",
            "30 master-1 framework_subscribed name=fw",
            "40 intruder intrusion via=coord_peer target=coord-1 outcome=refused",
            "50 intruder intrusion via=scheduler_api target=scheduler-1 outcome=unreachable",
        ] {
            assert_eq!(judge(line), Ok(()), "{line}");
        }
    }

    #[test]
    fn each_way_in_is_caught() {
        for (line, says) in [
            (
                "40 intruder intrusion via=coord_client target=coord-1 outcome=succeeded",
                "intruder got in: coord_client on coord-1",
            ),
            (
                "20 master-1 agent_registered agent=intruder tasks=0",
                "master-1 admitted an agent that is none of the cluster's: \"intruder\"",
            ),
            (
                "30 master-1 framework_subscribed name=intruder-framework",
                "subscribed intruder's framework",
            ),
            (
                "10 coord-1 follower term=1099511627776",
                "coord-1 is at the forged term",
            ),
        ] {
            let error = judge(line).unwrap_err();
            assert!(error.contains(says), "{line}: {error}");
        }
    }
}
