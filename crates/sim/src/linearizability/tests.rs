use super::*;
use proptest::prelude::*;

const STEPS: u64 = 1_000_000;

fn read(key: &str) -> Op {
    Op::Read {
        key: key.to_string(),
    }
}

fn write(key: &str, value: &str) -> Op {
    Op::Write {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn cas(key: &str, expected_version: u64, value: &str) -> Op {
    Op::Cas {
        key: key.to_string(),
        expected_version,
        value: value.to_string(),
    }
}

fn saw(value: Option<&str>, version: u64) -> OpResult {
    OpResult::Read {
        value: value.map(str::to_string),
        version,
    }
}

fn written(version: u64) -> OpResult {
    OpResult::Written { version }
}

/// Records one operation that ran from `call` to `returned`.
fn record(
    history: &mut History,
    process: ProcessId,
    call: u64,
    returned: u64,
    op: Op,
    result: OpResult,
) -> usize {
    let id = history.invoke(process, call, op);
    history.complete(id, returned, result);
    id
}

fn explanation(verdict: Verdict) -> (String, String) {
    match verdict {
        Verdict::NotLinearizable { key, explanation } => (key, explanation),
        other => panic!("expected not linearizable, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_eq!(check(&History::new(), STEPS), Verdict::Linearizable);
}

#[test]
fn sequential_history_is_linearizable() {
    let mut history = History::new();
    record(&mut history, 1, 0, 1, read("a"), saw(None, 0));
    record(&mut history, 1, 2, 3, write("a", "x"), written(1));
    record(&mut history, 2, 4, 5, read("a"), saw(Some("x"), 1));
    record(&mut history, 2, 6, 7, cas("a", 1, "y"), written(2));
    record(&mut history, 1, 8, 9, cas("a", 1, "z"), OpResult::CasFailed);
    record(&mut history, 1, 10, 11, read("a"), saw(Some("y"), 2));
    assert_eq!(history.len(), 6);
    assert_eq!(check(&history, STEPS), Verdict::Linearizable);
}

#[test]
fn stale_read_after_completed_write_is_not_linearizable() {
    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(1));
    record(&mut history, 1, 20, 30, write("a", "y"), written(2));
    record(&mut history, 2, 40, 50, read("a"), saw(Some("x"), 1));
    let (key, explanation) = explanation(check(&history, STEPS));
    assert_eq!(key, "a");
    assert!(
        explanation.contains(
            "process 2's read \"a\" returned \"x\" at version 1 \
             (called at 40 ms, returned at 50 ms)"
        ),
        "{explanation}"
    );
    assert!(
        explanation.contains("leaving the key at \"y\" at version 2"),
        "{explanation}"
    );
}

#[test]
fn concurrent_write_and_read_may_see_either_value() {
    for seen in [saw(None, 0), saw(Some("x"), 1)] {
        let mut history = History::new();
        record(&mut history, 1, 0, 10, write("a", "x"), written(1));
        record(&mut history, 2, 5, 15, read("a"), seen.clone());
        assert_eq!(check(&history, STEPS), Verdict::Linearizable, "{seen}");
    }
}

#[test]
fn read_cannot_see_a_value_before_its_write_was_invoked() {
    let mut history = History::new();
    record(&mut history, 2, 0, 5, read("a"), saw(Some("x"), 1));
    record(&mut history, 1, 10, 20, write("a", "x"), written(1));
    let (_, explanation) = explanation(check(&history, STEPS));
    assert!(explanation.contains("process 2's read"), "{explanation}");
}

#[test]
fn return_and_invocation_in_the_same_millisecond_are_concurrent() {
    // The read returns at 10 ms, the write is invoked at 10 ms: the read may come after it.
    let mut history = History::new();
    record(&mut history, 2, 0, 10, read("a"), saw(Some("x"), 1));
    record(&mut history, 1, 10, 20, write("a", "x"), written(1));
    assert_eq!(check(&history, STEPS), Verdict::Linearizable);
}

#[test]
fn cas_reporting_success_from_a_version_that_never_existed_is_not_linearizable() {
    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(1));
    record(&mut history, 2, 20, 30, cas("a", 7, "y"), written(2));
    let (key, explanation) = explanation(check(&history, STEPS));
    assert_eq!(key, "a");
    assert!(
        explanation.contains(
            "process 2's cas \"a\" from version 7 := \"y\" returned written at version 2"
        ),
        "{explanation}"
    );
}

#[test]
fn failed_cas_needs_another_version() {
    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(1));
    record(
        &mut history,
        2,
        20,
        30,
        cas("a", 0, "y"),
        OpResult::CasFailed,
    );
    assert_eq!(check(&history, STEPS), Verdict::Linearizable);

    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(1));
    record(
        &mut history,
        2,
        20,
        30,
        cas("a", 1, "y"),
        OpResult::CasFailed,
    );
    explanation(check(&history, STEPS));
}

#[test]
fn write_reporting_a_skipped_version_is_not_linearizable() {
    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(2));
    explanation(check(&history, STEPS));
}

#[test]
fn unknown_write_may_or_may_not_appear() {
    for (seen, also_later) in [
        (saw(None, 0), saw(None, 0)),
        (saw(Some("x"), 1), saw(Some("x"), 1)),
        (saw(None, 0), saw(Some("x"), 1)),
    ] {
        let mut history = History::new();
        let lost = history.invoke(1, 0, write("a", "x"));
        history.complete(lost, 10, OpResult::Unknown);
        record(&mut history, 2, 20, 30, read("a"), seen.clone());
        record(&mut history, 2, 40, 50, read("a"), also_later.clone());
        assert_eq!(
            check(&history, STEPS),
            Verdict::Linearizable,
            "{seen}, then {also_later}"
        );
    }
}

#[test]
fn unknown_write_cannot_take_effect_before_its_invocation() {
    let mut history = History::new();
    record(&mut history, 2, 0, 10, read("a"), saw(Some("x"), 1));
    history.invoke(1, 20, write("a", "x"));
    explanation(check(&history, STEPS));
}

#[test]
fn unknown_write_takes_effect_at_most_once() {
    let mut history = History::new();
    history.invoke(1, 0, write("a", "x"));
    record(&mut history, 2, 20, 30, read("a"), saw(Some("x"), 1));
    record(&mut history, 2, 40, 50, read("a"), saw(Some("x"), 2));
    explanation(check(&history, STEPS));
}

#[test]
fn lost_operations_fill_version_gaps_at_most_once_each() {
    let lost = |history: &mut History| {
        history.invoke(7, 0, write("a", "lost write"));
        history.invoke(8, 0, cas("a", 1, "lost cas"));
    };
    for (seen, linearizable) in [
        (vec![saw(Some("lost cas"), 2)], true),
        (vec![saw(Some("lost write"), 2)], true),
        (
            vec![saw(Some("lost write"), 2), saw(Some("lost cas"), 3)],
            false,
        ),
        (
            vec![saw(Some("lost cas"), 2), saw(Some("lost write"), 3)],
            true,
        ),
        (
            vec![saw(Some("lost write"), 2), saw(Some("lost write"), 3)],
            false,
        ),
        (vec![saw(Some("lost write"), 3)], true),
        (vec![saw(Some("lost write"), 4)], false),
    ] {
        let mut history = History::new();
        lost(&mut history);
        record(&mut history, 1, 10, 20, write("a", "x"), written(1));
        for (index, result) in seen.iter().enumerate() {
            let at = 30 + 10 * index as u64;
            record(&mut history, 2, at, at + 5, read("a"), result.clone());
        }
        let verdict = check(&history, STEPS);
        assert_eq!(
            verdict == Verdict::Linearizable,
            linearizable,
            "{seen:?}: {verdict}"
        );
    }
}

#[test]
fn never_completed_operation_counts_as_unknown() {
    let mut history = History::new();
    history.invoke(1, 0, cas("a", 0, "x"));
    history.invoke(3, 0, read("a"));
    record(&mut history, 2, 20, 30, read("a"), saw(Some("x"), 1));
    assert_eq!(check(&history, STEPS), Verdict::Linearizable);
}

#[test]
fn two_successful_cas_from_the_same_expected_version_are_not_linearizable() {
    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(1));
    record(&mut history, 2, 20, 40, cas("a", 1, "y"), written(2));
    record(&mut history, 3, 25, 45, cas("a", 1, "z"), written(2));
    let (key, explanation) = explanation(check(&history, STEPS));
    assert_eq!(key, "a");
    assert!(
        explanation.contains("cas \"a\" from version 1"),
        "{explanation}"
    );
}

#[test]
fn result_of_the_wrong_kind_is_not_linearizable() {
    let mut history = History::new();
    record(&mut history, 4, 3, 8, write("b", "x"), OpResult::CasFailed);
    let (key, explanation) = explanation(check(&history, STEPS));
    assert_eq!(key, "b");
    assert!(
        explanation.contains("process 4's write \"b\" := \"x\" returned cas failed"),
        "{explanation}"
    );
}

#[test]
fn keys_are_checked_independently() {
    // Each key is fine alone; interleaving them in time must not make the checker mix them.
    let mut history = History::new();
    record(&mut history, 1, 0, 10, write("a", "x"), written(1));
    record(&mut history, 2, 5, 15, write("b", "x"), written(1));
    record(&mut history, 1, 20, 30, read("b"), saw(Some("x"), 1));
    record(&mut history, 2, 20, 30, read("a"), saw(Some("x"), 1));
    record(&mut history, 1, 40, 50, cas("b", 1, "y"), written(2));
    record(&mut history, 2, 60, 70, read("a"), saw(Some("x"), 1));
    assert_eq!(check(&history, STEPS), Verdict::Linearizable);

    // A stale read on b is blamed on b, whatever a did.
    record(&mut history, 3, 80, 90, read("b"), saw(Some("x"), 1));
    let (key, explanation) = explanation(check(&history, STEPS));
    assert_eq!(key, "b");
    assert!(
        explanation.contains("process 3's read \"b\""),
        "{explanation}"
    );
}

#[test]
fn exhausted_step_budget_gives_up() {
    let mut history = History::new();
    for process in 0..6 {
        record(
            &mut history,
            process,
            0,
            100,
            write("a", "x"),
            OpResult::Unknown,
        );
    }
    record(&mut history, 9, 200, 210, read("a"), saw(Some("x"), 6));
    assert_eq!(
        check(&history, 3),
        Verdict::GaveUp {
            key: "a".to_string()
        }
    );
    assert_eq!(check(&history, STEPS), Verdict::Linearizable);
}

#[test]
#[should_panic(expected = "completed twice")]
fn completing_twice_is_a_recording_bug() {
    let mut history = History::new();
    let id = record(&mut history, 1, 0, 10, read("a"), saw(None, 0));
    history.complete(id, 11, saw(None, 0));
}

/// What happens to one generated operation's outcome.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Completed,
    /// Took effect, but the client never learned it.
    LostAfterEffect,
    /// Never took effect, and the client learned nothing.
    LostWithoutEffect,
}

/// One operation of a generated sequential execution.
#[derive(Clone, Copy, Debug)]
struct Step {
    process: usize,
    key: usize,
    /// 0 read, 1 write, 2 cas.
    kind: u8,
    value: u8,
    /// Which version a cas expects: 0 or 1 the current one, 2 the next, 3 the previous.
    cas_choice: u8,
    gap_ms: u64,
    call_delay_ms: u64,
    return_delay_ms: u64,
    fate: Fate,
}

/// What values generated writes carry.
#[derive(Clone, Copy, Debug)]
enum Values {
    /// Four values, written again and again: reads are ambiguous about which write they saw.
    FewShared,
    /// A fresh value per write, as a test client would write to tell its writes apart.
    Unique,
}

/// Plays `steps` one at a time against a plain model of the store (so the execution is
/// linearizable by construction), each at its own instant, then stretches every operation
/// into a call before and a return after that instant. A process runs one operation at a
/// time.
fn build(steps: &[Step], values: Values) -> History {
    let mut history = History::new();
    let mut store: BTreeMap<String, (Option<String>, u64)> = BTreeMap::new();
    let mut free_from_ms = [0u64; PROCESSES];
    let mut instant_ms = 0u64;
    for step in steps {
        let key = format!("k{}", step.key);
        let free_ms = free_from_ms[step.process];
        instant_ms = (instant_ms + step.gap_ms).max(free_ms);
        let call_ms = instant_ms.saturating_sub(step.call_delay_ms).max(free_ms);
        let return_ms = instant_ms + step.return_delay_ms;
        free_from_ms[step.process] = return_ms + 1;

        let (value, version) = store.entry(key.clone()).or_default();
        let new_value = match values {
            Values::FewShared => format!("v{}", step.value),
            Values::Unique => format!("v{}", history.len()),
        };
        let takes_effect = !matches!(step.fate, Fate::LostWithoutEffect);
        let (op, result) = match step.kind {
            0 => (
                Op::Read { key },
                OpResult::Read {
                    value: value.clone(),
                    version: *version,
                },
            ),
            1 => {
                if takes_effect {
                    *value = Some(new_value.clone());
                    *version += 1;
                }
                let result = OpResult::Written { version: *version };
                (
                    Op::Write {
                        key,
                        value: new_value,
                    },
                    result,
                )
            }
            _ => {
                let expected_version = match step.cas_choice {
                    0 | 1 => *version,
                    2 => *version + 1,
                    _ => version.saturating_sub(1),
                };
                let result = if expected_version != *version {
                    OpResult::CasFailed
                } else {
                    if takes_effect {
                        *value = Some(new_value.clone());
                        *version += 1;
                    }
                    OpResult::Written { version: *version }
                };
                (
                    Op::Cas {
                        key,
                        expected_version,
                        value: new_value,
                    },
                    result,
                )
            }
        };
        let id = history.invoke(step.process as ProcessId, call_ms, op);
        match step.fate {
            Fate::Completed => history.complete(id, return_ms, result),
            Fate::LostAfterEffect => {}
            Fate::LostWithoutEffect => history.complete(id, return_ms, OpResult::Unknown),
        }
    }
    history
}

/// Draws a fate from `draw` in 0..100: `lost_percent` of them lost, half of those after
/// taking effect.
fn fate_from(draw: u8, lost_percent: u8) -> Fate {
    match draw {
        _ if draw >= lost_percent => Fate::Completed,
        _ if draw.is_multiple_of(2) => Fate::LostWithoutEffect,
        _ => Fate::LostAfterEffect,
    }
}

const PROCESSES: usize = 5;

fn step(keys: usize, lost_percent: u8) -> impl Strategy<Value = Step> {
    (
        0..PROCESSES,
        0..keys,
        0..3u8,
        0..4u8,
        0..4u8,
        0..4u64,
        0..12u64,
        0..12u64,
        0..100u8,
    )
        .prop_map(
            move |(
                process,
                key,
                kind,
                value,
                cas_choice,
                gap_ms,
                call_delay_ms,
                return_delay_ms,
                fate,
            )| Step {
                process,
                key,
                kind,
                value,
                cas_choice,
                gap_ms,
                call_delay_ms,
                return_delay_ms,
                fate: fate_from(fate, lost_percent),
            },
        )
}

/// The ids of the reads that completed, in invocation order.
fn completed_reads(history: &History) -> Vec<usize> {
    let reads = history
        .operations
        .iter()
        .enumerate()
        .filter(|(_, operation)| {
            matches!(operation.known_outcome(), Some((_, OpResult::Read { .. })))
        });
    reads.map(|(id, _)| id).collect()
}

/// Makes read `id` report a value no operation ever wrote; returns its key.
fn corrupt_read(history: &mut History, id: usize) -> String {
    let operation = &mut history.operations[id];
    let Some((return_ms, OpResult::Read { version, .. })) = operation.returned.clone() else {
        panic!("operation {id} is not a completed read");
    };
    operation.returned = Some((
        return_ms,
        OpResult::Read {
            value: Some("never written".to_string()),
            version,
        },
    ));
    operation.op.key().to_string()
}

proptest! {
    #[test]
    fn sequential_executions_with_overlapping_calls_are_linearizable(
        steps in proptest::collection::vec(step(3, 20), 0..120),
        unique_values in any::<bool>(),
    ) {
        let values = if unique_values { Values::Unique } else { Values::FewShared };
        let history = build(&steps, values);
        prop_assert_eq!(check(&history, STEPS), Verdict::Linearizable);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_not_linearizable(
        steps in proptest::collection::vec(step(3, 10), 1..80),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut history = build(&steps, Values::FewShared);
        let reads = completed_reads(&history);
        prop_assume!(!reads.is_empty());
        let key = corrupt_read(&mut history, reads[pick.index(reads.len())]);
        match check(&history, STEPS) {
            Verdict::NotLinearizable { key: failed, explanation } => {
                prop_assert_eq!(failed, key);
                prop_assert!(explanation.contains("process"), "{}", explanation);
            }
            other => prop_assert!(false, "expected not linearizable, got {:?}", other),
        }
    }
}

/// Decides linearizability the slow, obvious way: try every order (and, for operations of
/// unknown outcome, every choice of leaving them out) that real time allows, remembering
/// only the (placed operations, store) pairs that led nowhere.
fn linearizable_by_brute_force(history: &History) -> bool {
    type Store = BTreeMap<String, (Option<String>, u64)>;
    fn explore(
        operations: &[Operation],
        placed: &mut Vec<bool>,
        store: &mut Store,
        failed: &mut BTreeSet<(Vec<bool>, Store)>,
    ) -> bool {
        let unexplained = operations
            .iter()
            .zip(placed.iter())
            .any(|(operation, &done)| !done && operation.known_outcome().is_some());
        if !unexplained {
            return true;
        }
        if failed.contains(&(placed.clone(), store.clone())) {
            return false;
        }
        for candidate in 0..operations.len() {
            let operation = &operations[candidate];
            let must_wait = operations.iter().enumerate().any(|(other, earlier)| {
                !placed[other]
                    && earlier
                        .known_outcome()
                        .is_some_and(|(return_ms, _)| return_ms < operation.call_ms)
            });
            if placed[candidate] || must_wait {
                continue;
            }
            let key = operation.op.key().to_string();
            let before = store.get(&key).cloned().unwrap_or_default();
            let (after, answer) = match &operation.op {
                Op::Read { .. } => (
                    before.clone(),
                    OpResult::Read {
                        value: before.0.clone(),
                        version: before.1,
                    },
                ),
                Op::Write { value, .. } => (
                    (Some(value.clone()), before.1 + 1),
                    OpResult::Written {
                        version: before.1 + 1,
                    },
                ),
                Op::Cas {
                    expected_version,
                    value,
                    ..
                } if *expected_version == before.1 => (
                    (Some(value.clone()), before.1 + 1),
                    OpResult::Written {
                        version: before.1 + 1,
                    },
                ),
                Op::Cas { .. } => (before.clone(), OpResult::CasFailed),
            };
            if operation
                .known_outcome()
                .is_some_and(|(_, result)| *result != answer)
            {
                continue;
            }
            placed[candidate] = true;
            store.insert(key.clone(), after);
            let found = explore(operations, placed, store, failed);
            store.insert(key, before);
            placed[candidate] = false;
            if found {
                return true;
            }
        }
        failed.insert((placed.clone(), store.clone()));
        false
    }
    let mut placed = vec![false; history.len()];
    let mut failed = BTreeSet::new();
    explore(
        &history.operations,
        &mut placed,
        &mut BTreeMap::new(),
        &mut failed,
    )
}

/// A small history with arbitrary (mostly inconsistent) results.
fn arbitrary_history() -> impl Strategy<Value = History> {
    let operation = (
        0..2usize,
        0..3u8,
        0..2u8,
        0..3u64,
        0..20u64,
        0..10u64,
        0..6u8,
        0..3u8,
        0..4u64,
    );
    proptest::collection::vec(operation, 0..7).prop_map(|operations| {
        let mut history = History::new();
        for (process, draws) in operations.into_iter().enumerate() {
            let (key, kind, value, expected_version, call_ms, duration_ms, outcome, seen, version) =
                draws;
            let key = format!("k{key}");
            let value = format!("v{value}");
            let op = match kind {
                0 => Op::Read { key },
                1 => Op::Write { key, value },
                _ => Op::Cas {
                    key,
                    expected_version,
                    value,
                },
            };
            let result = match (&op, outcome) {
                (_, 0) => OpResult::Unknown,
                (Op::Read { .. }, _) => OpResult::Read {
                    value: (seen > 0).then(|| format!("v{}", seen - 1)),
                    version,
                },
                (Op::Cas { .. }, 1) => OpResult::CasFailed,
                _ => OpResult::Written { version },
            };
            let id = history.invoke(process as ProcessId, call_ms, op);
            if outcome != 5 {
                history.complete(id, call_ms + duration_ms, result);
            }
        }
        history
    })
}

/// Changes one result a little, into something that may or may not still be linearizable.
fn nudge(result: &OpResult, how: u8) -> OpResult {
    match (result, how % 3) {
        (OpResult::Read { value, version }, 0) => OpResult::Read {
            value: value.clone(),
            version: version + 1,
        },
        (OpResult::Read { value, version }, 1) => OpResult::Read {
            value: value.clone(),
            version: version.saturating_sub(1),
        },
        (OpResult::Read { version, .. }, _) => OpResult::Read {
            value: Some(format!("v{}", how % 4)),
            version: *version,
        },
        (OpResult::Written { version }, 0) => OpResult::Written {
            version: version + 1,
        },
        (OpResult::Written { version }, 1) => OpResult::Written {
            version: version.saturating_sub(1),
        },
        (OpResult::Written { .. }, _) => OpResult::CasFailed,
        (OpResult::CasFailed, _) => OpResult::Written {
            version: u64::from(how % 4),
        },
        (OpResult::Unknown, _) => OpResult::Unknown,
    }
}

proptest! {
    #[test]
    fn agrees_with_brute_force_on_nudged_executions_with_lost_operations(
        steps in proptest::collection::vec(step(1, 50), 0..12),
        unique_values in any::<bool>(),
        nudged in any::<prop::sample::Index>(),
        how in 0..12u8,
    ) {
        let values = if unique_values { Values::Unique } else { Values::FewShared };
        let mut history = build(&steps, values);
        if how < 9 && !history.is_empty() {
            let id = nudged.index(history.len());
            let operation = &mut history.operations[id];
            if let Some((return_ms, result)) = operation.returned.take() {
                operation.returned = Some((return_ms, nudge(&result, how)));
            }
        }
        let expected = linearizable_by_brute_force(&history);
        let verdict = check(&history, STEPS);
        prop_assert_eq!(verdict == Verdict::Linearizable, expected, "{}", verdict);
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories(history in arbitrary_history()) {
        let expected = linearizable_by_brute_force(&history);
        let verdict = check(&history, STEPS);
        prop_assert_eq!(verdict == Verdict::Linearizable, expected, "{}", verdict);
    }
}

/// Generates the steps of a sequential execution from a seeded generator.
fn seeded_steps(seed: u64, count: usize, keys: usize) -> Vec<Step> {
    use rand::{Rng, SeedableRng};
    let mut random = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| Step {
            process: random.random_range(0..PROCESSES),
            key: random.random_range(0..keys),
            kind: random.random_range(0..3),
            value: random.random_range(0..4),
            cas_choice: random.random_range(0..4),
            gap_ms: random.random_range(0..4),
            call_delay_ms: random.random_range(0..12),
            return_delay_ms: random.random_range(0..12),
            fate: fate_from(random.random_range(0..100), 10),
        })
        .collect()
}

/// Scale: thousands of operations (the checker's speed is measured by the sim benches, not
/// here: simulated crates read no clock).
#[test]
fn checks_thousands_of_operations_from_concurrent_clients() {
    for (operations, keys) in [(2000, 20), (2000, 1), (5000, 20)] {
        let mut history = build(&seeded_steps(7, operations, keys), Values::FewShared);
        let verdict = check(&history, 10 * STEPS);
        assert_eq!(verdict, Verdict::Linearizable);

        // The same with the last read corrupted: the search must exhaust its key's orders.
        let reads = completed_reads(&history);
        let last = *reads.last().expect("thousands of operations hold a read");
        corrupt_read(&mut history, last);
        let verdict = check(&history, 10 * STEPS);
        assert!(
            matches!(verdict, Verdict::NotLinearizable { .. }),
            "{verdict}"
        );
    }
}
