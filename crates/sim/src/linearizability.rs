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

impl<'h> KeyProblem<'h> {
    fn new(history: &'h History, ids: &[usize]) -> Self {
        // Values are numbered from what reads returned. The register's value matters only to
        // reads, so every value that no read returned gets the one number `UNREAD`: writes of
        // such values become interchangeable, which the search exploits (see `twin_before`).
        let mut values: Vec<Option<&'h str>> = vec![None];
        let mut numbers: BTreeMap<&'h str, u32> = BTreeMap::new();
        for &id in ids {
            if let Some((
                _,
                OpResult::Read {
                    value: Some(value), ..
                },
            )) = history.operations[id].known_outcome()
            {
                numbers.entry(value).or_insert_with(|| {
                    values.push(Some(value));
                    u32::try_from(values.len() - 1).expect("fewer than 2^32 values per key")
                });
            }
        }
        let number = |value: &str| numbers.get(value).copied().unwrap_or(UNREAD);
        let mut members = Vec::new();
        let mut claims = Vec::new();
        // (time, returns after calls at the same time, member)
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        let mut completed = 0;
        for &id in ids {
            let operation = &history.operations[id];
            let outcome = operation.known_outcome();
            let claim = match (&operation.op, outcome.map(|(_, result)| result)) {
                (Op::Read { .. }, Some(OpResult::Read { value, version })) => Claim::Read {
                    value: value.as_deref().map(number),
                    version: *version,
                },
                (Op::Read { .. }, _) => continue,
                (Op::Write { value, .. }, result) => Claim::Write {
                    value: number(value),
                    version: match result {
                        Some(OpResult::Written { version }) => Some(*version),
                        _ => None,
                    },
                },
                (
                    Op::Cas {
                        expected_version,
                        value,
                        ..
                    },
                    result,
                ) => Claim::Cas {
                    expected_version: *expected_version,
                    value: number(value),
                    outcome: match result {
                        Some(OpResult::Written { version }) => {
                            CasOutcome::Succeeded { version: *version }
                        }
                        Some(_) => CasOutcome::Failed,
                        None => CasOutcome::Unknown,
                    },
                },
            };
            let member = members.len();
            members.push(id);
            claims.push(claim);
            events.push((operation.call_ms, false, member));
            if let Some((return_ms, _)) = outcome {
                events.push((return_ms, true, member));
                completed += 1;
            }
        }
        events.sort_unstable();

        let count = events.len() + 1;
        let mut entries = Vec::with_capacity(count);
        entries.push(Entry {
            member: usize::MAX,
            kind: EntryKind::Sentinel,
            previous: count - 1,
            next: 1 % count,
        });
        let mut return_entry_of = vec![None; members.len()];
        for (index, &(_, is_return, member)) in events.iter().enumerate() {
            let position = index + 1;
            if is_return {
                return_entry_of[member] = Some(position);
            }
            entries.push(Entry {
                member,
                kind: if is_return {
                    EntryKind::Return
                } else {
                    EntryKind::Call { return_entry: None }
                },
                previous: position - 1,
                next: (position + 1) % count,
            });
        }
        let mut stand_ins = StandIns {
            twin_before: vec![None; members.len()],
            call_entry: vec![0; members.len()],
            cas_by_expected: BTreeMap::new(),
            unknown_writes: Vec::new(),
            cas_slots: Bits::new(0),
            gap_reads: vec![Vec::new(); values.len()],
        };
        // A version that a write of known outcome reported is produced by that write, so
        // reads at it never need an operation of unknown outcome.
        let produced_by_known: BTreeSet<u64> = claims
            .iter()
            .filter_map(|claim| match *claim {
                Claim::Write {
                    version: Some(version),
                    ..
                }
                | Claim::Cas {
                    outcome: CasOutcome::Succeeded { version },
                    ..
                } => Some(version),
                _ => None,
            })
            .collect();
        for claim in &claims {
            if let Claim::Read {
                value: Some(value),
                version,
            } = *claim
            {
                if !produced_by_known.contains(&version) {
                    stand_ins.gap_reads[value as usize].push(version);
                }
            }
        }
        for versions in &mut stand_ins.gap_reads {
            versions.sort_unstable();
            versions.dedup();
        }
        let mut latest_with_claim: BTreeMap<Claim, usize> = BTreeMap::new();
        for (index, entry) in entries.iter_mut().enumerate() {
            let member = entry.member;
            let EntryKind::Call { return_entry } = &mut entry.kind else {
                continue;
            };
            *return_entry = return_entry_of[member];
            stand_ins.call_entry[member] = index;
            if return_entry.is_some() {
                continue;
            }
            stand_ins.twin_before[member] = latest_with_claim.insert(claims[member], member);
            match claims[member] {
                Claim::Cas {
                    expected_version, ..
                } => stand_ins
                    .cas_by_expected
                    .entry(expected_version)
                    .or_default()
                    .push(member),
                Claim::Write { .. } => stand_ins.unknown_writes.push(member),
                Claim::Read { .. } => {}
            }
        }
        let read_versions = claims
            .iter()
            .filter_map(|claim| match claim {
                Claim::Read { version, .. } => Some(*version),
                _ => None,
            })
            .collect();
        let (mut known, mut unknown) = (0, 0);
        let slots: Vec<Slot> = return_entry_of
            .iter()
            .map(|return_entry| {
                let (counter, slot): (&mut usize, fn(usize) -> Slot) = match return_entry {
                    Some(_) => (&mut known, Slot::Known),
                    None => (&mut unknown, Slot::Unknown),
                };
                *counter += 1;
                slot(*counter - 1)
            })
            .collect();
        stand_ins.cas_slots = Bits::new(unknown);
        for members in stand_ins.cas_by_expected.values() {
            for &member in members {
                if let Slot::Unknown(index) = slots[member] {
                    stand_ins.cas_slots.insert(index);
                }
            }
        }
        KeyProblem {
            members,
            claims,
            values,
            timeline: Timeline { entries },
            completed,
            stand_ins,
            read_versions,
            slots,
        }
    }

    /// The register with its value forgotten at a version no read reported: nothing can tell
    /// such values apart, and forgetting them lets the memo merge the states.
    fn canonical(&self, register: Register) -> Register {
        match register.value {
            Some(_) if !self.read_versions.contains(&register.version) => Register {
                value: Some(UNREAD),
                version: register.version,
            },
            _ => register,
        }
    }

    /// Whether another unplaced operation of unknown outcome, which could be placed now, should
    /// take the place of `member` (also of unknown outcome) in producing `next`.
    ///
    /// Each rule keeps at least one linearization if there is any. Rank the operations that can
    /// produce a version `g`: 0 for a cas (it can only ever take effect at one version); 1 for
    /// a write whose value no read reports at `g` or later, leaving out versions that writes of
    /// known outcome produce (it can stand anywhere no read looks); 2 for other writes. In a
    /// linearization that places `member` here, exchanging it with its stand-in (each taking
    /// the other's place, if the stand-in was placed later) gives another linearization that
    /// comes first in the order "lower rank, then earlier invocation, position by position";
    /// so the least linearization is never skipped.
    ///
    /// - A twin (same claim) invoked earlier.
    /// - A cas from the same version with the same effect (the same value, or any value at a
    ///   version no read reported): for a cas, one invoked earlier; for a write, any.
    /// - At a version no read reported, for a write of rank 1, another of rank 1 invoked
    ///   earlier; for a write of rank 2, any of rank 1.
    ///
    /// `first_return` is the index of the first return entry left in the timeline: an
    /// operation invoked before it can be placed now.
    fn stood_in_for(
        &self,
        member: usize,
        next: Register,
        placed: &Placed,
        first_return: usize,
    ) -> bool {
        let stand_ins = &self.stand_ins;
        let unplaced = |other: usize| !placed.contains(self.slots[other]);
        let available =
            |other: usize| unplaced(other) && stand_ins.call_entry[other] < first_return;
        if stand_ins.twin_before[member].is_some_and(unplaced) {
            return true;
        }
        let version_read = self.read_versions.contains(&next.version);
        let value = self.claims[member].written_value();
        let same_effect =
            |other: usize| !version_read || self.claims[other].written_value() == value;
        let cas_from_here = stand_ins
            .cas_by_expected
            .get(&(next.version - 1))
            .map_or(&[][..], Vec::as_slice);
        match self.claims[member] {
            Claim::Cas { .. } => cas_from_here
                .iter()
                .take_while(|&&cas| cas != member)
                .any(|&cas| available(cas) && same_effect(cas)),
            Claim::Write { .. } => {
                if cas_from_here
                    .iter()
                    .any(|&cas| available(cas) && same_effect(cas))
                {
                    return true;
                }
                if version_read {
                    return false;
                }
                let no_longer_read = |write: usize| {
                    self.claims[write]
                        .written_value()
                        .is_none_or(|value| stand_ins.demand(value, next.version - 1) == 0)
                };
                let rank_one_before = if no_longer_read(member) {
                    stand_ins.call_entry[member]
                } else {
                    usize::MAX
                };
                stand_ins
                    .unknown_writes
                    .iter()
                    .take_while(|&&write| stand_ins.call_entry[write] < rank_one_before)
                    .any(|&write| write != member && available(write) && no_longer_read(write))
            }
            Claim::Read { .. } => false,
        }
    }

    /// The memo's view of the operations of unknown outcome, in a configuration with
    /// `register` whose first return left is `first_return`.
    ///
    /// Compare-and-sets keep their identity: `spent` gets those placed and those from a version
    /// already left behind (they can never take effect again). Writes do not: those invoked
    /// before `first_return` and not placed are only counted, by value, into `pool` (sorted by
    /// bucket), because any of them can stand wherever another of the same value could — and
    /// writes whose value no read needs any more (see `gap_reads`), or beyond the number of
    /// versions that may still need it, share the bucket [`SPARE`]: they can only stand where
    /// no read looks. Writes invoked later are unplaced in every configuration with the same
    /// operations of known outcome placed (which fix `first_return`), so they need no mention.
    fn memo_view(
        &self,
        placed: &Placed,
        register: Register,
        first_return: usize,
        spent: &mut Bits,
        pool: &mut Vec<(u32, u32)>,
    ) {
        let stand_ins = &self.stand_ins;
        spent.words.clear();
        let placed_cas = placed.unknown.words.iter().zip(&stand_ins.cas_slots.words);
        spent
            .words
            .extend(placed_cas.map(|(placed, cas)| placed & cas));
        let left_behind = stand_ins.cas_by_expected.range(..register.version);
        for &member in left_behind.flat_map(|(_, members)| members) {
            if let Slot::Unknown(index) = self.slots[member] {
                spent.insert(index);
            }
        }
        pool.clear();
        let invoked = stand_ins
            .unknown_writes
            .iter()
            .take_while(|&&write| stand_ins.call_entry[write] < first_return);
        for &write in invoked {
            let (Slot::Unknown(index), Some(value)) =
                (self.slots[write], self.claims[write].written_value())
            else {
                continue;
            };
            if !placed.unknown.contains(index) {
                let needed = stand_ins.demand(value, register.version) > 0;
                pool.push((if needed { value } else { SPARE }, 1));
            }
        }
        pool.sort_unstable();
        pool.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        // Writes of a value beyond what reads can still need are spare as well.
        let mut excess = 0;
        for (bucket, count) in pool.iter_mut().filter(|(bucket, _)| *bucket != SPARE) {
            let demand = stand_ins.demand(*bucket, register.version);
            let demand = u32::try_from(demand).unwrap_or(u32::MAX);
            if *count > demand {
                excess += *count - demand;
                *count = demand;
            }
        }
        if excess > 0 {
            match pool.last_mut() {
                Some((SPARE, count)) => *count += excess,
                _ => pool.push((SPARE, excess)),
            }
        }
    }

    fn search(&self, budget: &mut u64) -> Search {
        let mut timeline = self.timeline.clone();
        let mut placed = Placed::new(&self.slots);
        let mut memo = Memo::default();
        // The memo's view of the operations of unknown outcome (see `memo_view`), kept here to
        // spare allocations.
        let mut spent = Bits::new(0);
        let mut pool = Vec::new();
        let mut pins = Pins::default();
        for entry in &timeline.entries {
            if let EntryKind::Call { return_entry } = entry.kind {
                pins.add(self.claims[entry.member].version_before(), return_entry);
            }
        }
        // Placed operations, each with the register before it and the member that wrote it.
        let mut stack: Vec<(usize, Register, Option<usize>)> = Vec::new();
        let mut register = Register::INITIAL;
        let mut writer: Option<usize> = None;
        let mut unplaced_completed = self.completed;
        let mut furthest: Option<Furthest> = None;
        // The first return entry left in the timeline, found when first needed after a change.
        let mut first_return: Option<usize> = None;
        let mut cursor = timeline.first();
        loop {
            if unplaced_completed == 0 {
                return Search::Linearizable;
            }
            if *budget == 0 {
                return Search::GaveUp;
            }
            *budget -= 1;
            let entry = timeline.entries[cursor];
            if let EntryKind::Call { return_entry } = entry.kind {
                let claim = self.claims[entry.member];
                let next = claim.apply(register).map(|next| self.canonical(next));
                let next = next.filter(|&next| {
                    return_entry.is_some() || {
                        let first_return =
                            *first_return.get_or_insert_with(|| timeline.first_return(cursor));
                        !self.stood_in_for(entry.member, next, &placed, first_return)
                    }
                });
                if let Some(next) = next {
                    let slot = self.slots[entry.member];
                    pins.remove(claim.version_before(), return_entry);
                    placed.insert(slot);
                    let passed = pins.lowest().filter(|&(version, _)| next.version > version);
                    if let Some((_, return_of_passed)) = passed {
                        // Placing this operation would leave another one behind for good.
                        Furthest::offer(
                            &mut furthest,
                            Furthest {
                                placed: self.completed - unplaced_completed
                                    + usize::from(return_entry.is_some()),
                                blocked: timeline.entries[return_of_passed].member,
                                register: next,
                                writer: Some(entry.member),
                            },
                        );
                    } else {
                        let first_return_now =
                            *first_return.get_or_insert_with(|| timeline.first_return(cursor));
                        timeline.lift(cursor);
                        let next_first_return = match return_entry {
                            Some(lifted) if lifted == first_return_now => {
                                timeline.first_return(timeline.entries[lifted].next)
                            }
                            _ => first_return_now,
                        };
                        self.memo_view(&placed, next, next_first_return, &mut spent, &mut pool);
                        if memo.first_visit(next, &placed.known, &spent, &pool) {
                            stack.push((cursor, register, writer));
                            if next.version != register.version {
                                writer = Some(entry.member);
                            }
                            register = next;
                            first_return = Some(next_first_return);
                            if return_entry.is_some() {
                                unplaced_completed -= 1;
                            }
                            cursor = timeline.first();
                            continue;
                        }
                        timeline.unlift(cursor);
                    }
                    placed.remove(slot);
                    pins.add(claim.version_before(), return_entry);
                }
                cursor = entry.next;
                continue;
            }
            // A return (or, defensively, the end of the list) reached before its operation was
            // placed: this order cannot work, undo the last placement.
            if entry.kind == EntryKind::Return {
                Furthest::offer(
                    &mut furthest,
                    Furthest {
                        placed: self.completed - unplaced_completed,
                        blocked: entry.member,
                        register,
                        writer,
                    },
                );
            }
            let Some((call, before, writer_before)) = stack.pop() else {
                return Search::Unexplained(furthest.expect("a return blocks a failed search"));
            };
            let undone = timeline.entries[call];
            let EntryKind::Call { return_entry } = undone.kind else {
                unreachable!("only invocations are placed");
            };
            timeline.unlift(call);
            first_return = None;
            placed.remove(self.slots[undone.member]);
            pins.add(self.claims[undone.member].version_before(), return_entry);
            if return_entry.is_some() {
                unplaced_completed += 1;
            }
            register = before;
            writer = writer_before;
            cursor = undone.next;
        }
    }

    /// The register in words, with the value its writer wrote (the search itself forgets
    /// values no read can see).
    fn describe_register(&self, history: &History, furthest: &Furthest) -> String {
        let version = furthest.register.version;
        let written =
            furthest.writer.and_then(
                |member| match &history.operations[self.members[member]].op {
                    Op::Write { value, .. } | Op::Cas { value, .. } => Some(value),
                    Op::Read { .. } => None,
                },
            );
        match (written, furthest.register.value) {
            (Some(value), _) => format!("{value:?} at version {version}"),
            (None, None) => format!("no value at version {version}"),
            (None, Some(number)) => match self.values[number as usize] {
                Some(value) => format!("{value:?} at version {version}"),
                None => format!("a value no read returned, at version {version}"),
            },
        }
    }

    fn explain(&self, history: &History, key: &str, furthest: &Furthest) -> String {
        let blocked = &history.operations[self.members[furthest.blocked]];
        format!(
            "no order of the operations on key {key:?} explains {}; the furthest the search got \
             placed {} of the {} operations with a known outcome, leaving the key at {}",
            blocked.describe(),
            furthest.placed,
            self.completed,
            self.describe_register(history, furthest),
        )
    }
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

#[cfg(test)]
mod tests;
