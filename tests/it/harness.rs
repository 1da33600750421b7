//! The harness checked with small nodes defined here (test code, not product roles): invariants
//! catch what they claim to catch, faults do what they say, bad scenarios are refused.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use drover_core::Event;
use drover_sim::{Outcome, Role, Roles};
use serde_json::{json, Value};

/// `claimant`s all claim term 1; `ranked` nodes claim term = their index, 100 ms × index in.
/// `disk` nodes report what their disk holds at boot, then write one synced and one unsynced file.
/// `failing` nodes return an error after one second.
fn test_roles() -> Roles {
    let claim = |same_term: bool| {
        move |context: drover_sim::NodeContext| -> drover_sim::cluster::NodeFuture {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(context.index))).await;
                let term = if same_term { 1 } else { context.index };
                context.env.emit(Event::new("leader").with("term", term));
                std::future::pending::<()>().await;
                Ok(())
            })
        }
    };
    Roles::new()
        .with(Role::new("scheduler", Some(8080), |context| {
            // A stand-in that acknowledges every change with a deployment: `/v2/apps/keep`'s
            // deployment finishes 100 ms later, `/v2/apps/lose`'s never does.
            Box::pin(async move {
                let env = context.env.clone();
                let http = env
                    .bind(std::net::SocketAddr::from(([0, 0, 0, 0], 8080)))
                    .await?;
                let answer = move |id: &'static str, done: bool| {
                    let env = env.clone();
                    move || async move {
                        if done {
                            drover_core::env::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                env.emit(Event::new("deployment_done").with("id", id));
                            });
                        }
                        axum::Json(json!({"deploymentId": id, "version": "v"}))
                    }
                };
                let router = axum::Router::new()
                    .route("/v2/apps/keep", axum::routing::put(answer("d-kept", true)))
                    .route("/v2/apps/lose", axum::routing::put(answer("d-lost", false)));
                let mut shutdown = context.shutdown.clone();
                drover_core::http::serve(http, router, async move { shutdown.requested().await })
                    .await?;
                Ok(())
            })
        }))
        .with(Role::new("claimant", None, claim(true)))
        .with(Role::new("ranked", None, claim(false)))
        .with(Role::new("disk", None, |context| {
            Box::pin(async move {
                let disk = context.env.disk();
                let show = |v: Option<Bytes>| {
                    v.map_or("none".to_string(), |b| {
                        String::from_utf8_lossy(&b).into_owned()
                    })
                };
                let synced = show(disk.read("synced").await?);
                let unsynced = show(disk.read("unsynced").await?);
                context.env.emit(
                    Event::new("disk")
                        .with("synced", synced)
                        .with("unsynced", unsynced),
                );
                disk.write("synced", Bytes::from_static(b"kept")).await?;
                disk.sync("synced").await?;
                disk.write("unsynced", Bytes::from_static(b"pending"))
                    .await?;
                let mut shutdown = context.shutdown.clone();
                shutdown.requested().await;
                Ok(())
            })
        }))
        .with(Role::new("ticker", None, |context| {
            // `tick n=N` every second of the node's own timers.
            Box::pin(async move {
                let mut interval = tokio::time::interval(Duration::from_secs(1));
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                for n in 0.. {
                    interval.tick().await;
                    context.env.emit(Event::new("tick").with("n", n));
                }
                Ok(())
            })
        }))
        .with(Role::new("logger", None, |context| {
            // Reports its files at boot, then appends one synced and one unsynced record to
            // `log`, writes `meta` twice (both synced), and touches its disk every 100 ms.
            Box::pin(async move {
                let disk = context.env.disk();
                let show = |v: Option<Bytes>| {
                    v.map_or("none".to_string(), |b| {
                        String::from_utf8_lossy(&b).into_owned()
                    })
                };
                let log = show(disk.read("log").await?);
                let meta = show(disk.read("meta").await?);
                context
                    .env
                    .emit(Event::new("boot").with("log", log).with("meta", meta));
                disk.append("log", Bytes::from_static(b"a")).await?;
                disk.sync("log").await?;
                disk.append("log", Bytes::from_static(b"bcde")).await?;
                for value in [&b"v1"[..], &b"v2"[..]] {
                    disk.write("meta", Bytes::from_static(value)).await?;
                    disk.sync("meta").await?;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    disk.read("meta").await?;
                }
            })
        }))
        .with(Role::new("stale-reader", None, |context| {
            // A register history no store can give: a completed write, then a read that misses it.
            Box::pin(async move {
                let env = context.env;
                env.emit(
                    Event::new("call")
                        .with("n", 1)
                        .with("key", "k")
                        .with("op", "write")
                        .with("value", "new"),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                env.emit(
                    Event::new("ret")
                        .with("n", 1)
                        .with("result", "written")
                        .with("version", 1),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                env.emit(
                    Event::new("call")
                        .with("n", 2)
                        .with("key", "k")
                        .with("op", "read"),
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                env.emit(
                    Event::new("ret")
                        .with("n", 2)
                        .with("result", "read")
                        .with("value", "-")
                        .with("version", 0),
                );
                std::future::pending::<()>().await;
                Ok(())
            })
        }))
        .with(Role::new("fragile", None, |context| {
            // Claims term 1 at its first boot if it is the first node, and at any later boot: so
            // restarting any other node makes two leaders of term 1.
            Box::pin(async move {
                let disk = context.env.disk();
                let boots = disk.read("boots").await?.map_or(0, |b| b.len()) + 1;
                disk.write("boots", Bytes::from(vec![b'x'; boots])).await?;
                disk.sync("boots").await?;
                if context.index == 1 || boots > 1 {
                    context.env.emit(Event::new("leader").with("term", 1));
                }
                std::future::pending::<()>().await;
                Ok(())
            })
        }))
        .with(Role::new("failing", None, |_| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err("gave up".into())
            })
        }))
}

fn scenario(cluster: Value, timeline: Value, expect: Value) -> drover_sim::Scenario {
    let doc = json!({"name": "t", "duration": "5s", "cluster": cluster, "timeline": timeline, "expect": expect});
    drover_sim::scenario::parse(Path::new("test.json"), doc).unwrap_or_else(|e| panic!("{e}"))
}

fn run(cluster: Value, timeline: Value, expect: Value) -> Outcome {
    drover_sim::run(&scenario(cluster, timeline, expect), &test_roles(), 3)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn nodes(role: &str, count: u32) -> Value {
    json!({"nodes": [{"role": role, "count": count}]})
}

#[test]
fn one_leader_catches_two_leaders_in_a_term() {
    let outcome = run(
        nodes("claimant", 2),
        json!([]),
        json!({"always": ["one_leader:claimant"]}),
    );
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    let failure = &outcome.failures[0];
    assert_eq!(failure.check, "one_leader:claimant");
    assert_eq!(
        failure.message,
        "two leaders of role claimant in term 1: claimant-1 and claimant-2"
    );
    assert_eq!(failure.at_ms, 200);
}

#[test]
fn leader_selector_follows_the_highest_term() {
    let outcome = run(
        nodes("ranked", 3),
        json!([{"at": "1s", "do": "crash", "node": "leader:ranked"}]),
        json!({"always": ["one_leader:ranked"]}),
    );
    assert!(outcome.passed(), "{:?}", outcome.failures);
    assert!(
        outcome.trace.contains("\n1000 sim crash node=ranked-3\n"),
        "{}",
        outcome.trace
    );
}

#[test]
fn a_crash_loses_unsynced_writes_and_a_stop_does_not() {
    let outcome = run(
        json!({"nodes": [{"role": "disk", "name": "crashy"}, {"role": "disk", "name": "stoppy"}]}),
        json!([
            {"at": "1s", "do": "crash", "node": "crashy"},
            {"at": "1s", "do": "stop", "node": "stoppy"},
            {"at": "2s", "do": "restart", "node": "*"}
        ]),
        json!({"eventually": [
            {"after": "2s", "by": "2s", "node": "crashy", "event": "disk synced=kept unsynced=none"},
            {"after": "2s", "by": "2s", "node": "stoppy", "event": "disk synced=kept unsynced=pending"}
        ]}),
    );
    assert!(
        outcome.passed(),
        "{:?}\n{}",
        outcome.failures,
        outcome.trace
    );
    assert!(
        outcome
            .trace
            .starts_with("0 crashy disk synced=none unsynced=none\n"),
        "{}",
        outcome.trace
    );
}

#[test]
fn a_node_error_fails_the_run() {
    let outcome = run(nodes("failing", 1), json!([]), json!({}));
    assert_eq!(outcome.failures[0].check, "node");
    assert!(
        outcome.failures[0].message.contains("gave up"),
        "{:?}",
        outcome.failures
    );
}

#[test]
fn an_unmet_eventually_fails_at_its_deadline() {
    let outcome = run(
        nodes("ranked", 1),
        json!([]),
        json!({"eventually": [{"by": "3s", "event": "leader term=9"}]}),
    );
    assert_eq!(outcome.failures[0].check, "expect.eventually[0]");
    assert_eq!(outcome.failures[0].at_ms, 3001);
}

#[test]
fn scenarios_naming_what_does_not_exist_are_refused() {
    let refuse = |cluster: Value, timeline: Value, expect: Value, path: &str, part: &str| {
        let err =
            drover_sim::run(&scenario(cluster, timeline, expect), &test_roles(), 1).unwrap_err();
        assert_eq!(err.path, path, "{err}");
        assert!(err.message.contains(part), "{err}");
    };
    refuse(
        nodes("ghost", 1),
        json!([]),
        json!({}),
        "cluster.nodes[0]",
        "role `ghost` cannot run in this build",
    );
    refuse(
        nodes("ranked", 1),
        json!([]),
        json!({"always": ["no_fun"]}),
        "expect.always[0]",
        "unknown invariant",
    );
    refuse(
        nodes("ranked", 1),
        json!([{"at": "1s", "do": "crash", "node": "ranked-9"}]),
        json!({}),
        "timeline[0]",
        "expected a node name",
    );
    refuse(
        nodes("ranked", 1),
        json!([{"at": "1s", "do": "crash", "node": "leader:coord"}]),
        json!({}),
        "timeline[0]",
        "no node has role `coord`",
    );
    refuse(
        nodes("ranked", 1),
        json!([{"at": "1s", "do": "http", "node": "ranked-1", "method": "GET", "path": "/"}]),
        json!({}),
        "timeline[0].node",
        "serves HTTP",
    );
    refuse(
        json!({"nodes": [{"role": "ranked", "name": "a"}, {"role": "ranked", "name": "a"}]}),
        json!([]),
        json!({}),
        "cluster.nodes[1]",
        "already used",
    );
}

#[test]
fn linearizable_catches_a_read_that_misses_a_completed_write() {
    let outcome = run(
        nodes("stale-reader", 1),
        json!([]),
        json!({"always": ["linearizable"]}),
    );
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    assert_eq!(outcome.failures[0].check, "linearizable");
    assert!(
        outcome.failures[0].message.starts_with("key k: "),
        "{}",
        outcome.failures[0].message
    );
}

#[test]
fn never_fails_on_a_forbidden_event_in_its_window() {
    let expect = |after: &str| json!({"never": [{"after": after, "node": "role:ranked", "event": "leader term=2"}]});
    let outcome = run(nodes("ranked", 2), json!([]), expect("100ms"));
    assert_eq!(outcome.failures[0].check, "expect.never[0]");
    assert_eq!(
        outcome.failures[0].message,
        "ranked-2 recorded `leader term=2`"
    );
    assert!(run(nodes("ranked", 2), json!([]), expect("300ms")).passed());
}

#[test]
fn acked_writes_survive_names_the_lost_write() {
    let outcome = run(
        nodes("stale-reader", 1),
        json!([]),
        json!({"always": ["acked_writes_survive"]}),
    );
    assert_eq!(outcome.failures.len(), 1, "{:?}", outcome.failures);
    assert_eq!(
        outcome.failures[0].message,
        "stale-reader-1 read k at version 0 (called at 10 ms), but version 1 was acknowledged to stale-reader-1 at 5 ms"
    );
}

#[test]
fn acked_changes_survive_names_the_acknowledged_change_never_carried_out() {
    let change = |path: &str| json!([{"at": "1s", "do": "http", "node": "scheduler-1", "method": "PUT", "path": path}]);
    let expect = json!({"always": ["acked_changes_survive"]});
    let kept = run(
        nodes("scheduler", 1),
        change("/v2/apps/keep"),
        expect.clone(),
    );
    assert!(kept.passed(), "{:?}", kept.failures);
    let lost = run(nodes("scheduler", 1), change("/v2/apps/lose"), expect);
    assert_eq!(lost.failures.len(), 1, "{:?}", lost.failures);
    assert_eq!(lost.failures[0].check, "acked_changes_survive");
    assert!(
        lost.failures[0]
            .message
            .starts_with("PUT /v2/apps/lose on scheduler-1 (200) was acknowledged at 1")
            && lost.failures[0]
                .message
                .contains("deployment d-lost, which no scheduler ever finished"),
        "{}",
        lost.failures[0].message
    );
}

#[test]
fn a_random_schedule_that_breaks_an_invariant_shrinks_to_a_replayable_scenario() {
    use drover_sim::explore::{failed_check, random_faults, shrink, to_json, with_faults};
    let roles = test_roles();
    let base = scenario(
        nodes("fragile", 4),
        json!([]),
        json!({"always": ["one_leader:fragile"]}),
    );
    let map = drover_sim::cluster::ClusterMap::plan(&base, &roles).unwrap();
    let (seed, faults) = (1..100)
        .map(|seed| (seed, random_faults(&base, &map, seed)))
        .find(|(seed, faults)| {
            let outcome = drover_sim::run(&with_faults(&base, faults), &roles, *seed).unwrap();
            failed_check(&outcome).as_deref() == Some("one_leader:fragile")
        })
        .expect("some schedule restarts a node");
    let (minimal, _) = shrink(&base, faults, &roles, seed, "one_leader:fragile").unwrap();
    let kinds: Vec<&str> = minimal
        .timeline
        .iter()
        .map(|s| match s.action {
            drover_sim::scenario::Action::Restart { .. } => "restart",
            drover_sim::scenario::Action::Crash { .. }
            | drover_sim::scenario::Action::Stop { .. } => "down",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, vec!["down", "restart"], "{:?}", minimal.timeline);
    // The file it becomes loads and fails the same way.
    let mut document = to_json(&minimal);
    document["seed"] = json!(seed);
    let replayed = drover_sim::scenario::parse(Path::new("minimal.json"), document).unwrap();
    let outcome = drover_sim::run(&replayed, &roles, replayed.seed).unwrap();
    assert_eq!(
        failed_check(&outcome).as_deref(),
        Some("one_leader:fragile")
    );
}

#[test]
fn a_paused_node_runs_nothing_then_its_late_timers_fire() {
    let outcome = run(
        nodes("ticker", 1),
        json!([{"at": "1500ms", "do": "pause", "node": "ticker-1", "for": "2s"}]),
        json!({
            // the tick due at 2 s comes when the pause ends, 1.5 s late
            "eventually": [{"after": "3500ms", "by": "3500ms", "node": "ticker-1", "event": "tick n=2"}],
            "never": [{"after": "1501ms", "by": "3499ms", "node": "ticker-1", "event": "tick"}]
        }),
    );
    assert!(
        outcome.passed(),
        "{:?}\n{}",
        outcome.failures,
        outcome.trace
    );
}

#[test]
fn disk_faults_tear_a_record_lose_a_synced_write_and_fail_the_node() {
    let outcome = run(
        json!({"nodes": [{"role": "logger", "name": "torn"}, {"role": "logger", "name": "liar"},
                         {"role": "logger", "name": "broken"}]}),
        json!([
            {"at": "1s", "do": "disk", "node": "torn", "fault": "torn"},
            {"at": "1s", "do": "disk", "node": "liar", "fault": "lose_synced"},
            {"at": "1s", "do": "disk", "node": "broken", "fault": "fail"},
            {"at": "2s", "do": "crash", "node": "torn"},
            {"at": "2s", "do": "crash", "node": "liar"},
            {"at": "3s", "do": "restart", "node": "torn"},
            {"at": "3s", "do": "restart", "node": "liar"}
        ]),
        json!({"eventually": [
            // half of the unsynced `bcde` survived the crash
            {"after": "3s", "by": "3s", "node": "torn", "event": "boot log=abc meta=v2"},
            // the second synced write of `meta` is gone although its sync returned
            {"after": "3s", "by": "3s", "node": "liar", "event": "boot log=a meta=v1"},
            // a node whose disk fails stops (a crash, not a failed run)
            {"by": "2s", "event": "crash node=broken cause=disk_error"}
        ]}),
    );
    assert!(
        outcome.passed(),
        "{:?}\n{}",
        outcome.failures,
        outcome.trace
    );
}

/// The secured scenario passes with the real roles; the same cluster without `auth` lets the
/// intruder in, and `no_unauthenticated_change` says so (so the passing run is not vacuous).
#[test]
fn no_unauthenticated_change_holds_with_auth_and_catches_the_intruder_without() {
    let file = crate::root().join("scenarios/auth-intruders-change-nothing-through-failovers.json");
    let secured = drover_sim::load(&file).unwrap();
    let roles = drover_nodes::roles();
    let outcome = drover_sim::run(&secured, &roles, secured.seed).unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    let refused = outcome
        .trace
        .lines()
        .filter(|l| l.contains(" intruder intrusion ") && l.contains("outcome=refused"))
        .count();
    assert!(
        refused > 50,
        "the intruder hardly tried: {refused} refusals"
    );

    let mut open = secured.clone();
    open.cluster.auth = None;
    open.expect.eventually.clear();
    let outcome = drover_sim::run(&open, &roles, open.seed).unwrap();
    let failure = outcome
        .failures
        .iter()
        .find(|f| f.check == "no_unauthenticated_change")
        .unwrap_or_else(|| panic!("the open cluster passed: {:?}", outcome.failures));
    assert!(
        failure.message.contains("forged term"),
        "{}",
        failure.message
    );
}
