//! The search for one key: a depth-first walk over the orders its operations may have taken
//! effect in, with the pruning (stand-ins, pins, twins, memo) that keeps it tractable, and the
//! explanation of the furthest point reached when no order fits.

use super::*;

impl<'h> KeyProblem<'h> {
    pub(super) fn new(history: &'h History, ids: &[usize]) -> Self {
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

    pub(super) fn search(&self, budget: &mut u64) -> Search {
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

    pub(super) fn explain(&self, history: &History, key: &str, furthest: &Furthest) -> String {
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
