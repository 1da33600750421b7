//! coord's invariants: the clients' register operations are linearizable, and no write coord
//! acknowledged is ever lost.

use super::*;

/// The clients' register operations (`call`/`ret` events, see the `coord-writer` workload) form a
/// linearizable history. Checked once the run is over; every operation still open then has an
/// unknown outcome.
#[derive(Default)]
pub(super) struct Linearizable {
    history: crate::linearizability::History,
    open: BTreeMap<(String, String), usize>,
    processes: BTreeMap<String, u64>,
}

/// How many search steps the check may take before it gives up (a give-up fails the run).
pub(super) const LINEARIZABILITY_STEPS: u64 = 20_000_000;

impl Invariant for Linearizable {
    fn name(&self) -> &str {
        "linearizable"
    }

    fn observe(&mut self, line: &TraceLine, _view: &ClusterView) -> Result<(), String> {
        use crate::linearizability::{Op, OpResult};
        let event = &line.event;
        let (Some(n), true) = (
            event.field("n"),
            event.name == "call" || event.name == "ret",
        ) else {
            return Ok(());
        };
        let field = |key: &str| {
            event
                .field(key)
                .ok_or_else(|| format!("{} `{event}` has no `{key}`", line.node))
        };
        let number = |key: &str| {
            field(key)?
                .parse::<u64>()
                .map_err(|_| format!("{} `{event}`: `{key}` is not a number", line.node))
        };
        let slot = (line.node.clone(), n.to_string());
        if event.name == "call" {
            let key = field("key")?.to_string();
            let op = match field("op")? {
                "read" => Op::Read { key },
                "write" => Op::Write {
                    key,
                    value: field("value")?.to_string(),
                },
                "cas" => Op::Cas {
                    key,
                    expected_version: number("expect")?,
                    value: field("value")?.to_string(),
                },
                other => {
                    return Err(format!(
                        "{} called an unknown operation {other:?}",
                        line.node
                    ))
                }
            };
            let next = self.processes.len() as u64;
            let process = *self.processes.entry(line.node.clone()).or_insert(next);
            let id = self.history.invoke(process, line.at_ms, op);
            self.open.insert(slot, id);
            return Ok(());
        }
        let Some(id) = self.open.remove(&slot) else {
            return Err(format!(
                "{} returned `{event}` for a call it never made",
                line.node
            ));
        };
        let result = match field("result")? {
            "read" => {
                let value = field("value")?;
                OpResult::Read {
                    value: (value != "-").then(|| value.to_string()),
                    version: number("version")?,
                }
            }
            "written" => OpResult::Written {
                version: number("version")?,
            },
            "cas-failed" => OpResult::CasFailed,
            // A failed read changed nothing, and a write without an answer may or may not have
            // happened: both can be placed anywhere after their call, or nowhere.
            "unknown" | "error" => OpResult::Unknown,
            other => {
                return Err(format!(
                    "{} returned an unknown result {other:?}",
                    line.node
                ))
            }
        };
        self.history.complete(id, line.at_ms, result);
        Ok(())
    }

    fn finish(&mut self) -> Result<(), String> {
        use crate::linearizability::{check, Verdict};
        match check(&self.history, LINEARIZABILITY_STEPS) {
            Verdict::Linearizable => Ok(()),
            Verdict::NotLinearizable { key, explanation } => {
                Err(format!("key {key}: {explanation}"))
            }
            Verdict::GaveUp { key } => Err(format!(
                "key {key}: the check gave up after {LINEARIZABILITY_STEPS} steps"
            )),
        }
    }
}

/// A read that begins after a write of the same key was acknowledged sees that write or a later
/// one (`call`/`ret` events of the simulated clients). Weaker than `linearizable`, but checked as
/// the run goes, and it names the lost write.
#[derive(Default)]
pub(super) struct AckedWritesSurvive {
    /// Open calls: (node, n) → (key, call time, is a read).
    open: BTreeMap<(String, String), (String, u64, bool)>,
    /// Per key: the highest acknowledged version, when, and to whom.
    acked: BTreeMap<String, (u64, u64, String)>,
}

impl Invariant for AckedWritesSurvive {
    fn name(&self) -> &str {
        "acked_writes_survive"
    }

    fn observe(&mut self, line: &TraceLine, _view: &ClusterView) -> Result<(), String> {
        let event = &line.event;
        let Some(n) = event.field("n") else {
            return Ok(());
        };
        let slot = (line.node.clone(), n.to_string());
        if event.name == "call" {
            let key = event.field("key").unwrap_or_default().to_string();
            self.open
                .insert(slot, (key, line.at_ms, event.field("op") == Some("read")));
            return Ok(());
        }
        if event.name != "ret" {
            return Ok(());
        }
        let Some((key, called_ms, is_read)) = self.open.remove(&slot) else {
            return Ok(());
        };
        let Some(version) = event.field("version").and_then(|v| v.parse::<u64>().ok()) else {
            return Ok(());
        };
        match (is_read, self.acked.get(&key)) {
            (true, Some((acked, acked_ms, to))) if called_ms > *acked_ms && version < *acked => Err(format!(
                "{} read {key} at version {version} (called at {called_ms} ms), but version {acked} was acknowledged to {to} at {acked_ms} ms",
                line.node
            )),
            (false, known) if known.is_none_or(|(acked, _, _)| version > *acked) => {
                self.acked.insert(key, (version, line.at_ms, line.node.clone()));
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
