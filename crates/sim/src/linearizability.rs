//! A linearizability checker for histories of operations on a versioned key-value store: the
//! model a ZooKeeper-like store gives to znode data, one register per key holding a value and a
//! version.
//!
//! A [`History`] records, per client process, when each operation was invoked and when (and with
//! what result) it returned. [`check`] decides whether some total order of the operations exists
//! that respects real time (an operation that returned before another was invoked comes first)
//! and in which every result is what the register model would have answered.
//!
//! The search is Wing & Gong's: walk the invocations and returns in time order, try to place any
//! pending operation next, backtrack when an operation's return is reached before it could be
//! placed. Lowe's memoisation prunes it: a (set of placed operations, register state) pair seen
//! once is never explored again. Registers on different keys are independent, so the history is
//! split per key and each key is checked on its own (P-compositionality), which keeps the sets
//! small.
//!
//! Operations of unknown outcome are what makes the search hard: each may be placed at any
//! later point or left out, so a plain search tries every subset of them. Reductions specific
//! to this model, each of which keeps at least one linearization when there is any:
//!
//! - Versions only go up, and every known outcome except a failed compare-and-set pins the
//!   version just before it (a read saw it; a write reported the one after it). A state past a
//!   version some unplaced operation pins is a dead end, so an unknown write is placed only where
//!   the versions leave a gap for it.
//! - Values matter only where reads look: values no read returned share one number, and at a
//!   version no read reported the register's value is forgotten, so more states coincide.
//! - Unknown operations that could stand in for one another are placed in one canonical order
//!   (same claim: earlier invocation first; a compare-and-set before a write; a write whose value
//!   no read needs any more before one whose value some read still needs), and the memo counts
//!   the unknown writes left by value instead of naming them, with a configuration subsumed by
//!   an explored one that had at least as many left.
//!
//! Even so, proving that a long single-key history with many lost writes of a few repeated
//! values is *not* linearizable can take millions of steps; the step budget bounds it.
//!
//! Rules the checker follows, so that a verdict can be read next to a trace:
//!
//! - Times are simulated milliseconds. An operation that returns at `t` and one invoked at the same
//!   `t` are taken as concurrent: the millisecond clock cannot order them, so the checker assumes
//!   no order it cannot see. This can only hide a violation that hinges on the order within one
//!   millisecond, never invent one.
//! - An operation whose outcome the client never learned ([`OpResult::Unknown`], or never
//!   completed) may have taken effect at any point after its invocation, or not at all. It is
//!   placed only where that explains the other results; a read of unknown outcome constrains
//!   nothing and is left out.
//! - The search is bounded by a number of steps over all keys; past it the verdict is
//!   [`Verdict::GaveUp`] rather than a guess.
//! - A failure names the operation that the furthest-reaching partial order (the one placing the
//!   most operations of known outcome) could not explain — its return came before it could be
//!   placed, or the register went past the version it pins — with its process, result, call and
//!   return times, and the register's state at that point.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The client process that issued an operation.
pub type ProcessId = u64;

/// An operation on one key of the store.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// Reads the key's value and version.
    Read { key: String },
    /// Sets the key's value; the version goes up by one.
    Write { key: String, value: String },
    /// Sets the key's value only if its version is `expected_version`.
    Cas {
        key: String,
        expected_version: u64,
        value: String,
    },
}

impl Op {
    /// The key the operation reads or writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Read { key } | Op::Write { key, .. } | Op::Cas { key, .. } => key,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read { key } => write!(formatter, "read {key:?}"),
            Op::Write { key, value } => write!(formatter, "write {key:?} := {value:?}"),
            Op::Cas {
                key,
                expected_version,
                value,
            } => write!(
                formatter,
                "cas {key:?} from version {expected_version} := {value:?}"
            ),
        }
    }
}

/// What the client learned an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// A read saw this value (`None`: the key was never written) at this version.
    Read { value: Option<String>, version: u64 },
    /// A write or a successful compare-and-set left the key at this (new) version.
    Written { version: u64 },
    /// A compare-and-set found another version and changed nothing.
    CasFailed,
    /// The client never learned the outcome (timeout, crash).
    Unknown,
}

impl fmt::Display for OpResult {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Read {
                value: Some(value),
                version,
            } => write!(formatter, "{value:?} at version {version}"),
            OpResult::Read {
                value: None,
                version,
            } => write!(formatter, "no value at version {version}"),
            OpResult::Written { version } => write!(formatter, "written at version {version}"),
            OpResult::CasFailed => formatter.write_str("cas failed"),
            OpResult::Unknown => formatter.write_str("unknown"),
        }
    }
}

/// One recorded operation.
#[derive(Clone, Debug)]
struct Operation {
    process: ProcessId,
    op: Op,
    call_ms: u64,
    /// When it returned and with what; `None` while it has not.
    returned: Option<(u64, OpResult)>,
}

impl Operation {
    /// The return time and result, if the client learned the outcome.
    fn known_outcome(&self) -> Option<(u64, &OpResult)> {
        match &self.returned {
            Some((_, OpResult::Unknown)) | None => None,
            Some((time, result)) => Some((*time, result)),
        }
    }

    fn describe(&self) -> String {
        match self.known_outcome() {
            Some((return_ms, result)) => format!(
                "process {}'s {} returned {} (called at {} ms, returned at {} ms)",
                self.process, self.op, result, self.call_ms, return_ms
            ),
            None => format!(
                "process {}'s {} of unknown outcome (called at {} ms)",
                self.process, self.op, self.call_ms
            ),
        }
    }
}

/// Operations invoked and completed by client processes, in simulated milliseconds.
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    /// Records that `process` invoked `op` at `time`; returns the operation's id for
    /// [`History::complete`]. An operation never completed counts as [`OpResult::Unknown`].
    pub fn invoke(&mut self, process: ProcessId, time: u64, op: Op) -> usize {
        self.operations.push(Operation {
            process,
            op,
            call_ms: time,
            returned: None,
        });
        self.operations.len() - 1
    }

    /// Records that operation `id` returned `result` at `time`. A return at the same millisecond
    /// as another operation's invocation is concurrent with it (see the module notes).
    ///
    /// # Panics
    ///
    /// If `id` was not returned by [`History::invoke`], if the operation was already completed,
    /// or if `time` is before its invocation: each is a bug in whoever records the history.
    pub fn complete(&mut self, id: usize, time: u64, result: OpResult) {
        let count = self.operations.len();
        let operation = self
            .operations
            .get_mut(id)
            .unwrap_or_else(|| panic!("operation {id} was never invoked ({count} were)"));
        assert!(
            operation.returned.is_none(),
            "operation {id} ({}) completed twice",
            operation.op
        );
        assert!(
            time >= operation.call_ms,
            "operation {id} ({}) returned at {time} ms, before its call at {} ms",
            operation.op,
            operation.call_ms
        );
        operation.returned = Some((time, result));
    }

    /// The number of operations invoked.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// What [`check`] concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order of the operations on `key` explains their results.
    NotLinearizable {
        key: String,
        explanation: String,
    },
    /// The step budget ran out while checking `key`.
    GaveUp {
        key: String,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => formatter.write_str("linearizable"),
            Verdict::NotLinearizable { key, explanation } => {
                write!(formatter, "not linearizable on key {key:?}: {explanation}")
            }
            Verdict::GaveUp { key } => {
                write!(formatter, "gave up on key {key:?}: step budget exhausted")
            }
        }
    }
}

/// Checks the history key by key (in key order) with at most `max_steps` search steps in all.
/// Returns the first key found not linearizable, or the key being checked when the budget ran
/// out. A result that its operation cannot have at all (a write answered by a read's result) is
/// reported before any search.
pub fn check(history: &History, max_steps: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (id, operation) in history.operations.iter().enumerate() {
        if let Some((_, result)) = operation.known_outcome() {
            if !answers(&operation.op, result) {
                return Verdict::NotLinearizable {
                    key: operation.op.key().to_string(),
                    explanation: format!(
                        "{}, which is not a result that operation can have",
                        operation.describe()
                    ),
                };
            }
        }
        by_key.entry(operation.op.key()).or_default().push(id);
    }
    let mut budget = max_steps;
    for (key, ids) in by_key {
        let problem = KeyProblem::new(history, &ids);
        match problem.search(&mut budget) {
            Search::Linearizable => {}
            Search::GaveUp => {
                return Verdict::GaveUp {
                    key: key.to_string(),
                }
            }
            Search::Unexplained(furthest) => {
                return Verdict::NotLinearizable {
                    key: key.to_string(),
                    explanation: problem.explain(history, key, &furthest),
                }
            }
        }
    }
    Verdict::Linearizable
}

/// Whether `result` is the kind of answer `op` can get.
fn answers(op: &Op, result: &OpResult) -> bool {
    matches!(
        (op, result),
        (_, OpResult::Unknown)
            | (Op::Read { .. }, OpResult::Read { .. })
            | (Op::Write { .. }, OpResult::Written { .. })
            | (
                Op::Cas { .. },
                OpResult::Written { .. } | OpResult::CasFailed
            )
    )
}

/// The number shared by all values that no read returned.
const UNREAD: u32 = 0;

/// The bucket of writes of unknown outcome that no read can need any more.
const SPARE: u32 = u32::MAX;

/// One key's register as the search sees it; values are numbered per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Register {
    value: Option<u32>,
    version: u64,
}

impl Register {
    const INITIAL: Register = Register {
        value: None,
        version: 0,
    };

    fn written(self, value: u32) -> Register {
        Register {
            value: Some(value),
            version: self.version + 1,
        }
    }
}

/// What an operation on one key claims happened, with values numbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    Read {
        value: Option<u32>,
        version: u64,
    },
    /// `version`: the version reported, `None` when the outcome is unknown.
    Write {
        value: u32,
        version: Option<u64>,
    },
    Cas {
        expected_version: u64,
        value: u32,
        outcome: CasOutcome,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum CasOutcome {
    Succeeded {
        version: u64,
    },
    Failed,
    /// Placed only as a success: a failure changes nothing, the same as leaving it out.
    Unknown,
}

impl Claim {
    /// The value a write or cas would write.
    fn written_value(self) -> Option<u32> {
        match self {
            Claim::Write { value, .. } | Claim::Cas { value, .. } => Some(value),
            Claim::Read { .. } => None,
        }
    }

    /// The version the register must hold just before this operation, when its known outcome
    /// pins it: a read saw it, a write or successful cas reported the one after it. Versions
    /// only go up, so no unplaced operation can follow a state past its pinned version.
    fn version_before(self) -> Option<u64> {
        match self {
            Claim::Read { version, .. } => Some(version),
            Claim::Write {
                version: Some(version),
                ..
            }
            | Claim::Cas {
                outcome: CasOutcome::Succeeded { version },
                ..
            } => version.checked_sub(1),
            Claim::Write { version: None, .. } | Claim::Cas { .. } => None,
        }
    }

    /// The register after this operation, if the operation can take effect on `register` with
    /// the result it claims.
    fn apply(self, register: Register) -> Option<Register> {
        match self {
            Claim::Read { value, version } => {
                (register.value == value && register.version == version).then_some(register)
            }
            Claim::Write { value, version } => {
                let next = register.written(value);
                version
                    .is_none_or(|reported| reported == next.version)
                    .then_some(next)
            }
            Claim::Cas {
                expected_version,
                value,
                outcome,
            } => {
                let matches = register.version == expected_version;
                match outcome {
                    CasOutcome::Failed => (!matches).then_some(register),
                    CasOutcome::Succeeded { version } => {
                        let next = register.written(value);
                        (matches && next.version == version).then_some(next)
                    }
                    CasOutcome::Unknown => matches.then(|| register.written(value)),
                }
            }
        }
    }
}

/// The operations on one key, ready for the search.
struct KeyProblem<'h> {
    /// History ids of the operations that take part (reads of unknown outcome do not).
    members: Vec<usize>,
    claims: Vec<Claim>,
    /// Values by number; `None` for [`UNREAD`].
    values: Vec<Option<&'h str>>,
    timeline: Timeline,
    /// How many members have a known outcome: those the search must place.
    completed: usize,
    /// What lets the search skip a placement another operation could make as well.
    stand_ins: StandIns,
    /// The versions some read with a known outcome reported: the register's value matters only
    /// at those.
    read_versions: BTreeSet<u64>,
    /// Each member's place in the bitsets of placed operations.
    slots: Vec<Slot>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    member: usize,
    kind: EntryKind,
    previous: usize,
    next: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryKind {
    Sentinel,
    /// An invocation, with the entry of its return if the outcome is known.
    Call {
        return_entry: Option<usize>,
    },
    Return,
}

/// Operations of unknown outcome that could take one another's place, for
/// [`KeyProblem::stood_in_for`].
struct StandIns {
    /// For a member of unknown outcome, the latest member invoked before it with the very same
    /// claim and an unknown outcome too. Such twins are interchangeable, so the search places
    /// them in the order of their invocations: without this, a run with many lost writes would
    /// make it try every subset of them.
    twin_before: Vec<Option<usize>>,
    /// Each member's invocation entry in the timeline.
    call_entry: Vec<usize>,
    /// Members of unknown outcome that are compare-and-sets, by expected version, in invocation
    /// order.
    cas_by_expected: BTreeMap<u64, Vec<usize>>,
    /// Members of unknown outcome that are writes, in invocation order.
    unknown_writes: Vec<usize>,
    /// The slots of the members of unknown outcome that are compare-and-sets.
    cas_slots: Bits,
    /// For each value number, the versions at which a read reported it, in order, among those
    /// that no write of known outcome reported: only there can a read need a write of unknown
    /// outcome with that value.
    gap_reads: Vec<Vec<u64>>,
}

impl StandIns {
    /// How many versions above `version` may need a write of unknown outcome with `value`.
    fn demand(&self, value: u32, version: u64) -> usize {
        let versions = &self.gap_reads[value as usize];
        versions.len() - versions.partition_point(|&read| read <= version)
    }
}

/// Time-ordered invocations and returns as a circular doubly linked list; entry 0 is the
/// sentinel that starts and ends it. Placing an operation takes its entries out; they keep their
/// own links, so undoing placements in the reverse order puts them back (dancing links).
#[derive(Clone, Debug)]
struct Timeline {
    entries: Vec<Entry>,
}

impl Timeline {
    fn first(&self) -> usize {
        self.entries[0].next
    }

    /// The first return entry at or after `from` (the sentinel if there is none).
    fn first_return(&self, from: usize) -> usize {
        let mut at = from;
        while at != 0 && self.entries[at].kind != EntryKind::Return {
            at = self.entries[at].next;
        }
        if at == 0 {
            usize::MAX
        } else {
            at
        }
    }

    fn unlink(&mut self, index: usize) {
        let Entry { previous, next, .. } = self.entries[index];
        self.entries[previous].next = next;
        self.entries[next].previous = previous;
    }

    fn restore(&mut self, index: usize) {
        let Entry { previous, next, .. } = self.entries[index];
        self.entries[previous].next = index;
        self.entries[next].previous = index;
    }

    /// Places an operation: takes its invocation and its return (if any) out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let EntryKind::Call {
            return_entry: Some(return_entry),
        } = self.entries[call].kind
        {
            self.unlink(return_entry);
        }
    }

    /// Undoes the latest [`Timeline::lift`], which must have been of `call`.
    fn unlift(&mut self, call: usize) {
        if let EntryKind::Call {
            return_entry: Some(return_entry),
        } = self.entries[call].kind
        {
            self.restore(return_entry);
        }
        self.restore(call);
    }
}

/// The versions pinned by the operations not yet placed (see [`Claim::version_before`]), each
/// with the return entries of the operations that pin it. Versions never go down, so a state past
/// the lowest pinned version is a dead end, and the operation pinning it is what it cannot
/// explain.
#[derive(Default)]
struct Pins {
    by_version: BTreeMap<u64, BTreeSet<usize>>,
}

impl Pins {
    fn add(&mut self, version: Option<u64>, return_entry: Option<usize>) {
        if let (Some(version), Some(return_entry)) = (version, return_entry) {
            self.by_version
                .entry(version)
                .or_default()
                .insert(return_entry);
        }
    }

    fn remove(&mut self, version: Option<u64>, return_entry: Option<usize>) {
        if let (Some(version), Some(return_entry)) = (version, return_entry) {
            if let Some(entries) = self.by_version.get_mut(&version) {
                entries.remove(&return_entry);
                if entries.is_empty() {
                    self.by_version.remove(&version);
                }
            }
        }
    }

    /// The lowest pinned version, with the earliest return among the operations pinning it.
    fn lowest(&self) -> Option<(u64, usize)> {
        let (&version, entries) = self.by_version.first_key_value()?;
        Some((version, *entries.first()?))
    }
}

/// The furthest the search got before failing.
struct Furthest {
    /// Members with a known outcome placed.
    placed: usize,
    /// The member left unexplained there: its return was reached before it could be placed, or
    /// the register went past the version it pins.
    blocked: usize,
    /// The register after the operations placed.
    register: Register,
    /// The member that wrote the register's value, if any did.
    writer: Option<usize>,
}

impl Furthest {
    /// Keeps `candidate` if it placed more than the best so far (the first wins ties).
    fn offer(best: &mut Option<Furthest>, candidate: Furthest) {
        if best
            .as_ref()
            .is_none_or(|known| candidate.placed > known.placed)
        {
            *best = Some(candidate);
        }
    }
}

enum Search {
    Linearizable,
    Unexplained(Furthest),
    GaveUp,
}

/// Where a member's bit lives: operations of known and of unknown outcome are numbered apart.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Known(usize),
    Unknown(usize),
}

/// The members placed so far.
struct Placed {
    known: Bits,
    unknown: Bits,
}

impl Placed {
    fn new(slots: &[Slot]) -> Self {
        let known = slots
            .iter()
            .filter(|slot| matches!(slot, Slot::Known(_)))
            .count();
        Placed {
            known: Bits::new(known),
            unknown: Bits::new(slots.len() - known),
        }
    }

    fn insert(&mut self, slot: Slot) {
        match slot {
            Slot::Known(index) => self.known.insert(index),
            Slot::Unknown(index) => self.unknown.insert(index),
        }
    }

    fn remove(&mut self, slot: Slot) {
        match slot {
            Slot::Known(index) => self.known.remove(index),
            Slot::Unknown(index) => self.unknown.remove(index),
        }
    }

    fn contains(&self, slot: Slot) -> bool {
        match slot {
            Slot::Known(index) => self.known.contains(index),
            Slot::Unknown(index) => self.unknown.contains(index),
        }
    }
}

/// Spent compare-and-sets and the pool of writes, of unknown outcome.
type MemoView = (Vec<u64>, Vec<(u32, u32)>);

/// Lowe's memo of explored configurations, with subsumption over operations of unknown outcome.
///
/// A configuration is the register, the placed operations of known outcome, and the memo's view
/// of those of unknown outcome ([`KeyProblem::memo_view`]). Every configuration recorded is an
/// ancestor of the current one or was explored without success. Operations of unknown outcome
/// left unplaced only add options (they may always be left out), so a configuration with the
/// same register and the same placed operations of known outcome, which has spent at least the
/// compare-and-sets that an explored failure had spent and has no more writes left in any
/// bucket, fails as well. (An ancestor cannot subsume the current configuration: between them
/// only operations of unknown outcome were placed, and each raised the version.)
#[derive(Default)]
struct Memo {
    /// By register, by the placed operations of known outcome: the memo's view of those of
    /// unknown outcome (see [`KeyProblem::memo_view`]).
    explored: BTreeMap<Register, BTreeMap<Vec<u64>, Vec<MemoView>>>,
}

impl Memo {
    /// Records the configuration; false if it, or one that subsumes it, was recorded before.
    fn first_visit(
        &mut self,
        register: Register,
        known: &Bits,
        spent: &Bits,
        pool: &[(u32, u32)],
    ) -> bool {
        let by_known = self.explored.entry(register).or_default();
        let spent = spent.words();
        let Some(explored) = by_known.get_mut(known.words()) else {
            by_known.insert(
                known.words().to_vec(),
                vec![(spent.to_vec(), pool.to_vec())],
            );
            return true;
        };
        if explored.iter().any(|(spent_before, pool_before)| {
            is_subset(spent_before, spent) && covers(pool_before, pool)
        }) {
            return false;
        }
        explored.retain(|(spent_before, pool_before)| {
            !(is_subset(spent, spent_before) && covers(pool, pool_before))
        });
        explored.push((spent.to_vec(), pool.to_vec()));
        true
    }
}

/// Whether the pool `larger` holds at least as many writes as `smaller` in every bucket (both
/// sorted by bucket).
fn covers(larger: &[(u32, u32)], smaller: &[(u32, u32)]) -> bool {
    let mut larger = larger.iter().peekable();
    smaller.iter().all(|&(bucket, count)| {
        while larger.next_if(|&&(other, _)| other < bucket).is_some() {}
        larger
            .next_if(|&&(other, _)| other == bucket)
            .is_some_and(|&(_, available)| available >= count)
    })
}

fn is_subset(smaller: &[u64], larger: &[u64]) -> bool {
    smaller
        .iter()
        .zip(larger)
        .all(|(small, large)| small & !large == 0)
}

/// A fixed-size set of small numbers, one bit each.
struct Bits {
    words: Vec<u64>,
}

impl Bits {
    fn new(size: usize) -> Self {
        Bits {
            words: vec![0; size.div_ceil(64)],
        }
    }

    fn insert(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    fn remove(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }

    fn words(&self) -> &[u64] {
        &self.words
    }
}

mod search;

#[cfg(test)]
mod tests;
